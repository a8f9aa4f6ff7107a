//! `Run::keep_states` keeps ∂L/∂h_t as a total derivative: every path from h_t to the loss, through
//! the output at t and through every later step. The reference is the same network unrolled by
//! hand, one sequence at a time: the cell's equations written out in plain ops (no fused cell, no
//! masks), a loop over that sequence's own steps, and `retain_grad` on each h_t.
//!
//! Past a sequence's length the state is frozen (PyTorch's semantics) and the output is zero. The
//! reference writes each frozen step as an identity copy of the state before it, so the state at
//! such a step reaches the loss only through the final state h_n, and its kept gradient is the one
//! reaching h_n.
//!
//! The loss weighs everything the stack returns, so that every path is live:
//! `L = Σ A ⊙ output + Σ S ⊙ h_n (+ Σ R ⊙ c_n)`, with A, S, R fixed random tensors.

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{concat, Grads, Tape, Tensor, Var};
use rewind::nn::{
    GruCell, LstmCell, Module, Recurrent, RecurrentConfig, RnnCell, Run, StackState, StandardCell,
    State,
};

const T: usize = 5;
const B: usize = 3;
const IN: usize = 3;
const H: usize = 4;

/// No lengths; lengths that mask nothing; ragged lengths, unsorted, one of them 1.
const LENGTHS: [Option<[usize; B]>; 3] = [None, Some([T, T, T]), Some([3, T, 1])];

fn uniform(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// A cell's equations for one sequence, in plain ops: `x` is [1, in], the state [1, H].
trait Unrolled: StandardCell<f64> {
    fn unrolled<'t>(
        &self,
        tape: &'t Tape<f64>,
        x: Var<'t, f64>,
        s: State<'t, f64>,
    ) -> State<'t, f64>;
}

/// x W_ihᵀ + b_ih and h W_hhᵀ + b_hh, [1, G·H] each.
fn projections<'t, C: StandardCell<f64>>(
    cell: &C,
    tape: &'t Tape<f64>,
    x: Var<'t, f64>,
    h: Var<'t, f64>,
) -> (Var<'t, f64>, Var<'t, f64>) {
    let p = |p| tape.param(p);
    (
        x.matmul(p(cell.weight_ih()).t()) + p(cell.bias_ih().expect("biases")),
        h.matmul(p(cell.weight_hh()).t()) + p(cell.bias_hh().expect("biases")),
    )
}

fn gate(v: Var<'_, f64>, k: usize) -> Var<'_, f64> {
    v.narrow(1, k * H, H)
}

impl Unrolled for RnnCell<f64> {
    fn unrolled<'t>(
        &self,
        tape: &'t Tape<f64>,
        x: Var<'t, f64>,
        s: State<'t, f64>,
    ) -> State<'t, f64> {
        let (xp, hp) = projections(self, tape, x, s.h);
        State {
            h: (xp + hp).tanh(),
            c: None,
        }
    }
}

impl Unrolled for LstmCell<f64> {
    fn unrolled<'t>(
        &self,
        tape: &'t Tape<f64>,
        x: Var<'t, f64>,
        s: State<'t, f64>,
    ) -> State<'t, f64> {
        let (xp, hp) = projections(self, tape, x, s.h);
        let gates = xp + hp;
        let (i, f) = (gate(gates, 0).sigmoid(), gate(gates, 1).sigmoid());
        let (g, o) = (gate(gates, 2).tanh(), gate(gates, 3).sigmoid());
        let c = f * s.c.expect("an LSTM state carries c") + i * g;
        State {
            h: o * c.tanh(),
            c: Some(c),
        }
    }
}

impl Unrolled for GruCell<f64> {
    fn unrolled<'t>(
        &self,
        tape: &'t Tape<f64>,
        x: Var<'t, f64>,
        s: State<'t, f64>,
    ) -> State<'t, f64> {
        let (xp, hp) = projections(self, tape, x, s.h);
        let r = (gate(xp, 0) + gate(hp, 0)).sigmoid();
        let z = (gate(xp, 1) + gate(hp, 1)).sigmoid();
        let n = (gate(xp, 2) + r * gate(hp, 2)).tanh();
        State {
            h: (1.0 - z) * n + z * s.h,
            c: None,
        }
    }
}

/// The fixed inputs of one case: x [T, B, in] (time-major), the initial states and the loss
/// weights A [T, B, D·H], S and R [D·L, B, H].
struct Data {
    x: Tensor<f64>,
    h_0: Tensor<f64>,
    c_0: Tensor<f64>,
    a: Tensor<f64>,
    s: Tensor<f64>,
    r: Tensor<f64>,
}

impl Data {
    fn new(config: &RecurrentConfig) -> Self {
        let d = if config.bidirectional { 2 } else { 1 };
        let states = [d * config.num_layers, B, H];
        Data {
            x: uniform(&[T, B, IN], 11),
            h_0: uniform(&states, 12),
            c_0: uniform(&states, 13),
            a: uniform(&[T, B, d * H], 14),
            s: uniform(&states, 15),
            r: uniform(&states, 16),
        }
    }
}

/// Row `b` of `t`'s slice `i` along the first axis ([I, B, N] → [1, N]).
fn row(t: &Tensor<f64>, i: usize, b: usize) -> Tensor<f64> {
    let n = t.shape()[2];
    let start = (i * B + b) * n;
    Tensor::from_vec(t.data()[start..start + n].to_vec(), &[1, n]).unwrap()
}

/// What a run gives: the loss, the kept gradients ∂L/∂h_t laid out [T, B, H], and every
/// parameter's gradient by name.
struct Gradients {
    loss: f64,
    kept: Vec<f64>,
    params: Vec<(String, Vec<f64>)>,
}

fn param_grads<C: StandardCell<f64>>(
    model: &Recurrent<C, f64>,
    grads: &Grads<f64>,
) -> Vec<(String, Vec<f64>)> {
    model
        .params()
        .into_iter()
        .map(|(name, p)| (name, grads[p].data().to_vec()))
        .collect()
}

/// The stack itself, with `keep_states`.
fn by_library<C: StandardCell<f64>>(
    model: &Recurrent<C, f64>,
    data: &Data,
    lengths: Option<&[usize]>,
) -> Gradients {
    let tape = Tape::new();
    let batch_first = model.config().batch_first;
    let x = tape.constant(data.x.clone());
    let x = if batch_first { x.transpose(0, 1) } else { x };
    let initial = StackState {
        h: tape.constant(data.h_0.clone()),
        c: (C::GATES == 4).then(|| tape.constant(data.c_0.clone())),
    };
    let run = Run {
        lengths,
        keep_states: true,
        ..Run::default()
    };
    let out = model.forward_with(&tape, x, Some(initial), &run);
    let output = if batch_first {
        out.output.transpose(0, 1)
    } else {
        out.output
    };
    let mut loss = (output * tape.constant(data.a.clone())).sum()
        + (out.state.h * tape.constant(data.s.clone())).sum();
    if let Some(c) = out.state.c {
        loss = loss + (c * tape.constant(data.r.clone())).sum();
    }
    let grads = loss.backward();
    assert_eq!(
        out.states.len(),
        T,
        "{}: one kept state per step",
        std::any::type_name::<C>()
    );
    Gradients {
        loss: loss.item(),
        kept: out
            .states
            .iter()
            .flat_map(|&h| grads[h].data().to_vec())
            .collect(),
        params: param_grads(model, &grads),
    }
}

/// One direction of one layer over one sequence: h at each step (time order) and the final state.
fn unroll<'t, C: Unrolled>(
    cell: &C,
    tape: &'t Tape<f64>,
    input: &[Var<'t, f64>],
    mut state: State<'t, f64>,
    reverse: bool,
) -> (Vec<Var<'t, f64>>, State<'t, f64>) {
    let n = input.len();
    let mut hs = vec![None; n];
    for k in 0..n {
        let t = if reverse { n - 1 - k } else { k };
        state = cell.unrolled(tape, input[t], state);
        hs[t] = Some(state.h);
    }
    (hs.into_iter().map(Option::unwrap).collect(), state)
}

/// The same network unrolled by hand, sequence by sequence, each over its own length.
fn by_hand<C: Unrolled>(
    model: &Recurrent<C, f64>,
    data: &Data,
    lengths: Option<&[usize]>,
) -> Gradients {
    let config = model.config();
    let d = if config.bidirectional { 2 } else { 1 };
    let tape = Tape::new();
    let mut loss = tape.constant(Tensor::scalar(0.0));
    // kept[b][t]: the node that is h_t of sequence b in the last layer's forward direction.
    let mut kept = Vec::new();
    for b in 0..B {
        let len = lengths.map_or(T, |l| l[b]);
        let mut input: Vec<Var<'_, f64>> = (0..len)
            .map(|t| tape.constant(row(&data.x, t, b)))
            .collect();
        for layer in 0..config.num_layers {
            let mut outputs = vec![Vec::new(); len];
            for direction in 0..d {
                let index = layer * d + direction;
                let start = State {
                    h: tape.constant(row(&data.h_0, index, b)),
                    c: (C::GATES == 4).then(|| tape.constant(row(&data.c_0, index, b))),
                };
                let cell = model.cell(layer, direction);
                let (hs, mut last) = unroll(cell, &tape, &input, start, direction == 1);
                if direction == 0 && layer + 1 == config.num_layers {
                    let mut states: Vec<Var<'_, f64>> =
                        hs.iter().map(|h| h.retain_grad()).collect();
                    // Frozen past the length: the state at each step is a copy of the one before.
                    for _ in len..T {
                        last.h = last.h.affine(1.0, 0.0).retain_grad();
                        states.push(last.h);
                    }
                    kept.push(states);
                }
                for (t, h) in hs.into_iter().enumerate() {
                    outputs[t].push(h);
                }
                loss = loss + (last.h * tape.constant(row(&data.s, index, b))).sum();
                if let Some(c) = last.c {
                    loss = loss + (c * tape.constant(row(&data.r, index, b))).sum();
                }
            }
            input = outputs.iter().map(|hs| concat(hs, 1)).collect();
        }
        for (t, out) in input.iter().enumerate() {
            loss = loss + (*out * tape.constant(row(&data.a, t, b))).sum();
        }
    }
    let grads = loss.backward();
    let mut flat = Vec::with_capacity(T * B * H);
    for t in 0..T {
        for states in &kept {
            flat.extend_from_slice(grads[states[t]].data());
        }
    }
    Gradients {
        loss: loss.item(),
        kept: flat,
        params: param_grads(model, &grads),
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            "{what}: element {i} is {a}, expected {b}"
        );
    }
}

/// The step, sequence and unit of element `i` of the kept gradients' [T, B, H] layout.
fn where_in_kept(i: usize) -> String {
    format!("t={} b={} j={}", i / (B * H), i / H % B, i % H)
}

#[track_caller]
fn assert_same_gradients(what: &str, got: &Gradients, expected: &Gradients) {
    assert_close(&format!("{what}: loss"), &[got.loss], &[expected.loss]);
    assert_eq!(got.kept.len(), expected.kept.len(), "{what}: kept states");
    for (i, (a, b)) in got.kept.iter().zip(&expected.kept).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            "{what}: kept ∂L/∂h_t at {} is {a}, expected {b}",
            where_in_kept(i)
        );
    }
    for ((name, a), (_, b)) in got.params.iter().zip(&expected.params) {
        assert_close(&format!("{what}: ∂L/∂{name}"), a, b);
    }
}

/// One layer; two layers; bidirectional; two bidirectional layers batch-first.
fn configs() -> [RecurrentConfig; 4] {
    let one = RecurrentConfig::new(IN, H);
    [
        one,
        one.num_layers(2),
        one.bidirectional(true),
        one.num_layers(2).bidirectional(true).batch_first(true),
    ]
}

fn kept_gradients_equal_the_hand_unrolled_network<C: Unrolled>() {
    for (seed, config) in configs().into_iter().enumerate() {
        let model = Recurrent::<C, f64>::init(config, &mut StdRng::seed_from_u64(seed as u64));
        let data = Data::new(&config);
        for lengths in LENGTHS {
            let lengths = lengths.as_ref().map(|l| &l[..]);
            let what = format!(
                "{} layers={} bidirectional={} batch_first={} lengths={lengths:?}",
                std::any::type_name::<C>(),
                config.num_layers,
                config.bidirectional,
                config.batch_first
            );
            let got = by_library(&model, &data, lengths);
            let expected = by_hand(&model, &data, lengths);
            assert_same_gradients(&what, &got, &expected);
        }
    }
}

#[test]
fn rnn_kept_gradients_equal_the_hand_unrolled_network() {
    kept_gradients_equal_the_hand_unrolled_network::<RnnCell<f64>>();
}

#[test]
fn lstm_kept_gradients_equal_the_hand_unrolled_network() {
    kept_gradients_equal_the_hand_unrolled_network::<LstmCell<f64>>();
}

#[test]
fn gru_kept_gradients_equal_the_hand_unrolled_network() {
    kept_gradients_equal_the_hand_unrolled_network::<GruCell<f64>>();
}

fn lengths_that_mask_nothing_change_nothing<C: StandardCell<f64>>() {
    for (seed, config) in configs().into_iter().enumerate() {
        let model = Recurrent::<C, f64>::init(config, &mut StdRng::seed_from_u64(seed as u64));
        let data = Data::new(&config);
        let without = by_library(&model, &data, None);
        let with = by_library(&model, &data, Some(&[T; B]));
        let what = format!(
            "{} {config:?}: lengths [T; B] against none",
            std::any::type_name::<C>()
        );
        assert_same_gradients(&what, &with, &without);
    }
}

/// `lengths = [T, T, T]` masks nothing, so it must not change a single kept gradient.
#[test]
fn lengths_that_mask_nothing_keep_the_gradients_of_no_lengths() {
    lengths_that_mask_nothing_change_nothing::<RnnCell<f64>>();
    lengths_that_mask_nothing_change_nothing::<LstmCell<f64>>();
    lengths_that_mask_nothing_change_nothing::<GruCell<f64>>();
}

/// The convention, directly: past a sequence's length its state is frozen and its output is
/// zero, so ∂L/∂h_t there is the gradient reaching the final state, which for
/// `L = … + Σ S ⊙ h_n` is S's row; at the last valid step the output's path adds to it.
#[test]
fn kept_gradient_past_a_length_is_the_one_reaching_the_final_state() {
    let config = RecurrentConfig::new(IN, H);
    let model = Recurrent::<LstmCell<f64>, f64>::init(config, &mut StdRng::seed_from_u64(7));
    let data = Data::new(&config);
    let lengths = [3, T, 1];
    let got = by_library(&model, &data, Some(&lengths));
    let kept = |t: usize, b: usize| &got.kept[(t * B + b) * H..][..H];
    for (b, &len) in lengths.iter().enumerate() {
        let s = row(&data.s, 0, b);
        for t in len..T {
            assert_close(&format!("t={t} b={b}"), kept(t, b), s.data());
        }
        let last = kept(len - 1, b);
        assert!(
            last.iter().zip(s.data()).any(|(g, s)| (g - s).abs() > 1e-3),
            "b={b}: the last valid step's gradient {last:?} is missing its output's path"
        );
    }
}

/// Checkpointed segments recompute their states during backward, so no node on the tape is h_t
/// with all its paths: the combination is refused rather than answered partially.
#[test]
#[should_panic(expected = "keep_states")]
fn keep_states_refuses_checkpointed_segments() {
    let model = Recurrent::<RnnCell<f64>, f64>::init(
        RecurrentConfig::new(IN, H),
        &mut StdRng::seed_from_u64(8),
    );
    let tape = Tape::new();
    let run = Run {
        keep_states: true,
        checkpoint_every: Some(2),
        ..Run::default()
    };
    model.forward_with(&tape, tape.constant(uniform(&[T, B, IN], 9)), None, &run);
}
