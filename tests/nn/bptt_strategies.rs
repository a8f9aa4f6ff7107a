//! BPTT strategies as options of a stack's run: checkpointed segments equal full BPTT and hold
//! far less; scaling the gradient into each state (randomized truncation) is unbiased, and with
//! π = 1 it is full BPTT exactly.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{Float, Grads, Tape, Tensor};
use rewind::nn::{
    GruCell, LstmCell, Module, Recurrent, RecurrentConfig, RnnCell, Run, StandardCell,
};

fn uniform<F: Float>(shape: &[usize], seed: u64) -> Tensor<F> {
    Tensor::uniform(
        shape,
        F::from_f64(-1.0),
        F::from_f64(1.0),
        &mut StdRng::seed_from_u64(seed),
    )
}

/// Gradients of Σ output ⊙ R + Σ h_n ⊙ S for a 2-layer bidirectional stack.
fn grads<C: StandardCell<F> + 'static, F: Float>(
    model: &Recurrent<C, F>,
    steps: usize,
    run: &Run<'_, F>,
) -> Grads<F> {
    let tape = Tape::new();
    let x = tape.constant(uniform(&[steps, 3, 4], 1));
    let out = model.forward_with(&tape, x, None, run);
    let r = tape.constant(uniform(&out.output.shape(), 2));
    let s = tape.constant(uniform(&out.state.h.shape(), 3));
    ((out.output * r).sum() + (out.state.h * s).sum()).backward()
}

fn max_rel_diff<C: StandardCell<F>, F: Float>(
    model: &Recurrent<C, F>,
    a: &Grads<F>,
    b: &Grads<F>,
) -> f64 {
    let mut worst: f64 = 0.0;
    for (_, p) in model.params() {
        let (x, y) = (a[p].data(), b[p].data());
        let scale = y.iter().fold(0f64, |m, v| m.max(v.to_f64().abs()));
        for (u, v) in x.iter().zip(y) {
            worst = worst.max((u.to_f64() - v.to_f64()).abs() / scale);
        }
    }
    worst
}

fn checkpointed_equals_full<C: StandardCell<F> + 'static, F: Float>(tolerance: f64) {
    let config = RecurrentConfig::new(4, 5).num_layers(2).bidirectional(true);
    let model = Recurrent::<C, F>::init(config, &mut StdRng::seed_from_u64(4));
    let lengths = [23, 9, 17];
    let full = grads(
        &model,
        23,
        &Run {
            lengths: Some(&lengths),
            ..Run::default()
        },
    );
    for k in [1, 4, 5, 23, 40] {
        let run = Run {
            lengths: Some(&lengths),
            checkpoint_every: Some(k),
            ..Run::default()
        };
        let ckpt = grads(&model, 23, &run);
        let diff = max_rel_diff(&model, &ckpt, &full);
        assert!(
            diff <= tolerance,
            "{} k={k}: differs from full BPTT by {diff:e}",
            std::any::type_name::<C>()
        );
    }
}

#[test]
fn checkpointed_bptt_equals_full_for_every_cell() {
    checkpointed_equals_full::<RnnCell<f64>, f64>(1e-12);
    checkpointed_equals_full::<LstmCell<f64>, f64>(1e-12);
    checkpointed_equals_full::<GruCell<f64>, f64>(1e-12);
    checkpointed_equals_full::<RnnCell<f32>, f32>(1e-6);
    checkpointed_equals_full::<LstmCell<f32>, f32>(1e-6);
    checkpointed_equals_full::<GruCell<f32>, f32>(1e-6);
}

/// Both sides hold the input and the layer's output, which bound the ratio at this size: 6.9
/// (8.32 MB against 1.21) since the segments write their rows straight into the output; 4.85
/// (against 1.72) while the output was held twice, as the segments' outputs and their
/// concatenation.
#[test]
fn checkpointed_bptt_holds_six_times_less_at_a_thousand_steps() {
    let model = Recurrent::<LstmCell<f32>, f32>::new(
        RecurrentConfig::new(8, 32),
        &mut StdRng::seed_from_u64(5),
    );
    let peak = |run: &Run<'_, f32>| {
        let tape = Tape::new();
        let x = tape.constant(uniform(&[1000, 4, 8], 6));
        let out = model.forward_with(&tape, x, None, run);
        out.output.sum().backward();
        tape.stats().peak_bytes
    };
    let full = peak(&Run::default());
    let ckpt = peak(&Run {
        checkpoint_every: Some(32),
        ..Run::default()
    });
    let ratio = full as f64 / ckpt as f64;
    println!(
        "T = 1000 peak tape bytes: full {full}, checkpointed every 32 {ckpt} ({ratio:.1}x less)"
    );
    assert!(
        ratio >= 6.0,
        "full {full} bytes vs checkpointed {ckpt}: less than 6x apart"
    );
}

#[test]
fn grad_scale_of_one_is_full_bptt_exactly() {
    let model = Recurrent::<LstmCell<f64>, f64>::init(
        RecurrentConfig::new(4, 5).num_layers(2),
        &mut StdRng::seed_from_u64(7),
    );
    let ones = vec![1.0; 12];
    let full = grads(&model, 12, &Run::default());
    let scaled = grads(
        &model,
        12,
        &Run {
            grad_scale: Some(&ones),
            ..Run::default()
        },
    );
    for (_, p) in model.params() {
        assert_eq!(full[p].data(), scaled[p].data());
    }
}

/// Tallec & Ollivier: ξ_k ∈ {0, 1/π} with P(1/π) = π on the gradient into each state. The mean
/// of 2,000 estimates of a fixed projection of the gradient lies within 3 standard errors of the
/// full gradient's.
#[test]
fn randomized_truncation_is_unbiased() {
    let model = Recurrent::<RnnCell<f64>, f64>::init(
        RecurrentConfig::new(4, 5),
        &mut StdRng::seed_from_u64(8),
    );
    let steps = 10;
    let pi = 0.6;
    let direction: Vec<Tensor<f64>> = model
        .params()
        .iter()
        .enumerate()
        .map(|(i, (_, p))| uniform(&p.shape(), 100 + i as u64))
        .collect();
    let project = |g: &Grads<f64>| -> f64 {
        model
            .params()
            .iter()
            .zip(&direction)
            .map(|((_, p), d)| {
                g[*p]
                    .data()
                    .iter()
                    .zip(d.data())
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .sum()
    };
    let full = project(&grads(&model, steps, &Run::default()));
    let mut rng = StdRng::seed_from_u64(9);
    let samples: Vec<f64> = (0..2000)
        .map(|_| {
            let xi: Vec<f64> = (0..steps)
                .map(|_| {
                    if rng.random::<f64>() < pi {
                        1.0 / pi
                    } else {
                        0.0
                    }
                })
                .collect();
            project(&grads(
                &model,
                steps,
                &Run {
                    grad_scale: Some(&xi),
                    ..Run::default()
                },
            ))
        })
        .collect();
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let sd = (samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let se = sd / n.sqrt();
    println!("randomized truncation, π = {pi}: mean {mean:.6} vs full {full:.6}, SE {se:.6} ({:.2} SE apart)", (mean - full).abs() / se);
    assert!(sd > 0.0, "the estimates must vary");
    assert!(
        (mean - full).abs() <= 3.0 * se,
        "mean {mean} vs full {full}: {} standard errors",
        (mean - full).abs() / se
    );
}

#[test]
fn spectral_radius_of_known_matrices() {
    use rewind::nn::spectral_radius;
    let diag = Tensor::<f64>::from_vec(vec![0.5, 0.0, 0.0, -2.0], &[2, 2]).unwrap();
    assert!((spectral_radius(&diag, 200) - 2.0).abs() < 1e-6);
    // 0.9 × a rotation by 1 radian: eigenvalues 0.9·e^{±i}, a complex pair of modulus 0.9.
    let (c, s) = (0.9 * 1f64.cos(), 0.9 * 1f64.sin());
    let rotation = Tensor::<f64>::from_vec(vec![c, -s, s, c], &[2, 2]).unwrap();
    assert!((spectral_radius(&rotation, 400) - 0.9).abs() < 1e-6);
}

/// With W_hh = a·I, zero input and biases, a positive h_0 and relu (the identity on positive
/// states), L = Σ h_T gives ∂L/∂h_t = a^(T-1-t)·1 exactly: the powers of W_hh in the recursion.
#[test]
fn gradient_norms_through_time_follow_powers_of_w_hh() {
    use rewind::nn::{grad_norms_through_time, param_grad_norms, Nonlinearity, Rnn, StackState};
    let config = RecurrentConfig::new(1, 2).nonlinearity(Nonlinearity::Relu);
    let rnn = Rnn::<f64>::init(config, &mut StdRng::seed_from_u64(10));
    for (name, p) in rnn.params() {
        let value = match name.as_str() {
            "weight_hh_l0" => Tensor::from_vec(vec![0.5, 0.0, 0.0, 0.5], &[2, 2]).unwrap(),
            _ => Tensor::zeros(&p.shape()),
        };
        p.set(value);
    }
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[6, 1, 1]));
    let h0 = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 1, 2]).unwrap());
    let run = Run {
        keep_states: true,
        ..Run::default()
    };
    let out = rnn.forward_with(&tape, x, Some(StackState { h: h0, c: None }), &run);
    let grads = out.state.h.sum().backward();
    let norms = grad_norms_through_time(&grads, &out.states);
    for (t, n) in norms.iter().enumerate() {
        let expected = 2f64.sqrt() * 0.5f64.powi(5 - t as i32);
        assert!((n - expected).abs() < 1e-12, "step {t}: {n} vs {expected}");
    }
    let by_name = param_grad_norms(&rnn, &grads);
    assert_eq!(by_name[1].0, "weight_hh_l0");
    assert!(by_name[1].1 > 0.0);
}

/// Randomness inside a checkpointed function replays identically when it comes from a captured
/// seed: the dropout mask of the recomputation is the mask of the forward pass.
#[test]
fn dropout_inside_a_checkpoint_replays_its_mask() {
    use rewind::nn::Dropout;
    let x = uniform::<f64>(&[6, 5], 20);
    let w = uniform::<f64>(&[5, 5], 21);
    let reference = {
        let tape = Tape::new();
        let (xv, wv) = (tape.var(x.clone()), tape.var(w.clone()));
        let y = Dropout::new(0.5, 77).forward(&tape, xv.matmul(wv).tanh());
        let g = (y * y).sum().backward();
        (g[xv].clone(), g[wv].clone())
    };
    let tape = Tape::new();
    let (xv, wv) = (tape.var(x), tape.var(w));
    let y = tape.checkpoint(&[xv, wv], |t, v| {
        vec![Dropout::new(0.5, 77).forward(t, v[0].matmul(v[1]).tanh())]
    })[0];
    let g = (y * y).sum().backward();
    assert_eq!(g[xv].data(), reference.0.data());
    assert_eq!(g[wv].data(), reference.1.data());
}
