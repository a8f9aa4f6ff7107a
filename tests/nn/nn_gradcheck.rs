//! Every layer, cell and stack of rewind-nn checked against central finite differences in f64:
//! gradients with respect to parameters (gradcheck_module) and inputs (gradcheck).

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{gradcheck, Tape, Tensor, Var};
use rewind::nn::loss::{bce_with_logits, cross_entropy, mse_loss, nll_loss};
use rewind::nn::{
    gradcheck_module, Cell, Dropout, Embedding, Gru, GruCell, Linear, Lstm, LstmCell, Module,
    Nonlinearity, RecurrentConfig, Rnn, RnnCell, Run, StackState, StandardCell, State,
};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uniform(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, rng)
}

/// Σ y ⊙ R for a fixed random R: a scalar whose gradient reaches every element of y differently.
fn project<'t>(y: Var<'t, f64>, seed: u64) -> Var<'t, f64> {
    let r = uniform(&y.shape(), &mut rng(seed));
    (y * y.tape().constant(r)).sum()
}

#[track_caller]
fn ok<M: Module<f64>>(model: &mut M, loss: impl for<'t> Fn(&'t Tape<f64>, &M) -> Var<'t, f64>) {
    if let Err(e) = gradcheck_module(model, loss) {
        let name = model.params()[e.input].0.clone();
        panic!("parameter {name}: {e}");
    }
}

#[test]
fn linear_gradients() {
    let mut r = rng(1);
    let mut layer = Linear::<f64>::init(4, 3, &mut r);
    let x = uniform(&[2, 5, 4], &mut r);
    ok(&mut layer, |t, l| {
        project(l.forward(t, t.constant(x.clone())), 7)
    });
    let layer = Linear::<f64>::init(4, 3, &mut r).without_bias();
    gradcheck(|t, v| project(layer.forward(t, v[0]), 8), &[x]).unwrap();
}

#[test]
fn embedding_gradients_skip_the_padding_row() {
    let mut r = rng(2);
    let mut emb = Embedding::<f64>::init(6, 3, &mut r);
    let idx = [1, 0, 4, 4, 0, 5];
    ok(&mut emb, |t, e| project(e.forward(t, &idx, &[2, 3]), 9));
    // With row 0 as padding, its gradient is zero by definition (so finite differences, which
    // see the row's value in the output, do not apply to it); every other row is unchanged.
    let tape = Tape::new();
    let full = project(emb.forward(&tape, &idx, &[2, 3]), 9).backward()[&emb.weight].clone();
    let padded = Embedding {
        padding_idx: Some(0),
        ..emb
    };
    let g = project(padded.forward(&tape, &idx, &[2, 3]), 9).backward();
    assert!(g[&padded.weight].data()[..3].iter().all(|&v| v == 0.0));
    assert_eq!(&g[&padded.weight].data()[3..], &full.data()[3..]);
}

#[test]
fn dropout_gradients_with_a_fixed_mask() {
    let x = uniform(&[4, 5], &mut rng(3));
    // A fresh, identically seeded dropout per evaluation: the same mask every time.
    gradcheck(
        |t, v| project(Dropout::new(0.4, 11).forward(t, v[0]), 10),
        &[x],
    )
    .unwrap();
}

#[test]
fn loss_gradients() {
    let mut r = rng(4);
    let logits = uniform(&[5, 4], &mut r);
    let targets = [0, 3, -100, 2, 1];
    gradcheck(
        |_, v| cross_entropy(v[0], &targets),
        std::slice::from_ref(&logits),
    )
    .unwrap();
    gradcheck(
        |_, v| nll_loss(v[0].log_softmax(1), &targets),
        std::slice::from_ref(&logits),
    )
    .unwrap();
    let target = uniform(&[5, 4], &mut r);
    gradcheck(
        |t, v| mse_loss(v[0], t.constant(target.clone())),
        std::slice::from_ref(&logits),
    )
    .unwrap();
    let probs = Tensor::uniform(&[5, 4], 0.0, 1.0, &mut r);
    let mut wide = logits.clone();
    wide.data_mut().iter_mut().for_each(|x| *x *= 4.0);
    gradcheck(
        |t, v| bce_with_logits(v[0], t.constant(probs.clone())),
        &[wide],
    )
    .unwrap();
}

fn check_cell<C: StandardCell<f64>>(mut cell: C, has_c: bool, seed: u64) {
    let mut r = rng(seed);
    let (x, h, c) = (
        uniform(&[3, 4], &mut r),
        uniform(&[3, 2], &mut r),
        uniform(&[3, 2], &mut r),
    );
    fn run<'t, C: StandardCell<f64>>(
        t: &'t Tape<f64>,
        cell: &C,
        has_c: bool,
        v: [Var<'t, f64>; 3],
    ) -> Var<'t, f64> {
        let s = cell.forward(
            t,
            v[0],
            State {
                h: v[1],
                c: has_c.then_some(v[2]),
            },
        );
        let out = project(s.h, 12);
        match s.c {
            Some(c) => out + project(c, 13),
            None => out,
        }
    }
    ok(&mut cell, |t, cell| {
        let v = [&x, &h, &c].map(|v| t.constant(v.clone()));
        run(t, cell, has_c, v)
    });
    gradcheck(|t, v| run(t, &cell, has_c, [v[0], v[1], v[2]]), &[x, h, c]).unwrap();
}

#[test]
fn cell_gradients() {
    let mut r = rng(5);
    check_cell(
        RnnCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r),
        false,
        20,
    );
    check_cell(
        RnnCell::<f64>::init(4, 2, Nonlinearity::Relu, &mut r),
        false,
        21,
    );
    check_cell(
        LstmCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r),
        true,
        22,
    );
    check_cell(
        GruCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r),
        false,
        23,
    );
}

#[test]
fn two_layer_bidirectional_lstm_with_variable_lengths() {
    let mut r = rng(6);
    let config = RecurrentConfig::new(3, 2).num_layers(2).bidirectional(true);
    let mut lstm = Lstm::<f64>::init(config, &mut r);
    let x = uniform(&[5, 3, 3], &mut r);
    let (h0, c0) = (uniform(&[4, 3, 2], &mut r), uniform(&[4, 3, 2], &mut r));
    let lengths = [5, 2, 4];
    fn loss<'t>(
        t: &'t Tape<f64>,
        m: &Lstm<f64>,
        lengths: &[usize],
        v: [Var<'t, f64>; 3],
    ) -> Var<'t, f64> {
        let init = StackState {
            h: v[1],
            c: Some(v[2]),
        };
        let out = m.forward(t, v[0], Some(init), Some(lengths));
        project(out.output, 30) + project(out.state.h, 31) + project(out.state.c.unwrap(), 32)
    }
    ok(&mut lstm, |t, m| {
        let v = [&x, &h0, &c0].map(|v| t.constant(v.clone()));
        loss(t, m, &lengths, v)
    });
    gradcheck(
        |t, v| loss(t, &lstm, &lengths, [v[0], v[1], v[2]]),
        &[x, h0, c0],
    )
    .unwrap();
}

#[test]
fn rnn_and_gru_stacks_bidirectional_batch_first_with_lengths() {
    let mut r = rng(7);
    let x = uniform(&[3, 4, 3], &mut r); // batch-first [B, T, in]
    let lengths = [4, 1, 3];
    let config = RecurrentConfig::new(3, 2)
        .num_layers(2)
        .bidirectional(true)
        .batch_first(true);
    let mut rnn = Rnn::<f64>::init(config.nonlinearity(Nonlinearity::Tanh), &mut r);
    ok(&mut rnn, |t, m| {
        let out = m.forward(t, t.constant(x.clone()), None, Some(&lengths));
        project(out.output, 40) + project(out.state.h, 41)
    });
    let mut gru = Gru::<f64>::init(config, &mut r);
    ok(&mut gru, |t, m| {
        let out = m.forward(t, t.constant(x.clone()), None, Some(&lengths));
        project(out.output, 42) + project(out.state.h, 43)
    });
    gradcheck(
        |t, v| project(gru.forward(t, v[0], None, Some(&lengths)).output, 44),
        &[x],
    )
    .unwrap();
}

#[test]
fn learned_initial_state_gets_gradients() {
    let mut r = rng(8);
    let config = RecurrentConfig::new(3, 2)
        .learn_initial_state(true)
        .bidirectional(true);
    let mut lstm = Lstm::<f64>::init(config, &mut r);
    let names: Vec<String> = lstm.params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"h_0".to_string()) && names.contains(&"c_0".to_string()));
    let x = uniform(&[4, 2, 3], &mut r);
    ok(&mut lstm, |t, m| {
        let out = m.forward(t, t.constant(x.clone()), None, None);
        project(out.output, 50) + project(out.state.c.unwrap(), 51)
    });
}

/// An LSTM with a projection (`proj_size(2)`, H = 3): two bidirectional layers over variable
/// lengths, from a learned initial state (h_0 [4, 2], c_0 [4, 3]), in checkpointed segments of
/// 3 steps; then a standalone projected cell, with respect to its parameters and to x, h [B, P]
/// and c [B, H].
#[test]
fn projected_lstm_gradients() {
    let mut r = rng(9);
    let config = RecurrentConfig::new(3, 3)
        .num_layers(2)
        .bidirectional(true)
        .proj_size(2)
        .learn_initial_state(true);
    let mut lstm = Lstm::<f64>::init(config, &mut r);
    let x = uniform(&[4, 3, 3], &mut r);
    let lengths = [4, 2, 3];
    ok(&mut lstm, |t, m| {
        let run = Run {
            lengths: Some(&lengths),
            checkpoint_every: Some(3),
            ..Run::default()
        };
        let out = m.forward_with(t, t.constant(x.clone()), None, &run);
        project(out.output, 60) + project(out.state.h, 61) + project(out.state.c.unwrap(), 62)
    });

    let mut cell = LstmCell::<f64>::init_projected(4, 3, 2, &mut r);
    let (x, h, c) = (
        uniform(&[2, 4], &mut r),
        uniform(&[2, 2], &mut r),
        uniform(&[2, 3], &mut r),
    );
    fn run<'t>(t: &'t Tape<f64>, cell: &LstmCell<f64>, v: [Var<'t, f64>; 3]) -> Var<'t, f64> {
        let s = cell.forward(t, v[0], (v[1], v[2]));
        project(s.h, 63) + project(s.c.unwrap(), 64)
    }
    ok(&mut cell, |t, cell| {
        let v = [&x, &h, &c].map(|v| t.constant(v.clone()));
        run(t, cell, v)
    });
    gradcheck(|t, v| run(t, &cell, [v[0], v[1], v[2]]), &[x, h, c]).unwrap();
}

/// The built-in cells on unbatched input (x [4], h [2], c [2], as `torch.nn.GRUCell(x, h)`
/// takes them): gradients with respect to x, h and c, and the LSTM cell's parameters.
#[test]
fn unbatched_cell_gradients() {
    let mut r = rng(10);
    let (x, h, c) = (
        uniform(&[4], &mut r),
        uniform(&[2], &mut r),
        uniform(&[2], &mut r),
    );
    let rnn = RnnCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r);
    gradcheck(
        |t, v| project(rnn.forward(t, v[0], v[1]).h, 70),
        &[x.clone(), h.clone()],
    )
    .unwrap();
    let gru = GruCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r);
    gradcheck(
        |t, v| project(gru.forward(t, v[0], v[1]).h, 71),
        &[x.clone(), h.clone()],
    )
    .unwrap();
    let mut lstm = LstmCell::<f64>::init(4, 2, Nonlinearity::Tanh, &mut r);
    fn run<'t>(t: &'t Tape<f64>, cell: &LstmCell<f64>, v: [Var<'t, f64>; 3]) -> Var<'t, f64> {
        let s = cell.forward(t, v[0], (v[1], v[2]));
        project(s.h, 72) + project(s.c.unwrap(), 73)
    }
    ok(&mut lstm, |t, cell| {
        let v = [&x, &h, &c].map(|v| t.constant(v.clone()));
        run(t, cell, v)
    });
    gradcheck(|t, v| run(t, &lstm, [v[0], v[1], v[2]]), &[x, h, c]).unwrap();
}
