//! Backpropagation through time emerges from generic backprop: the tape's gradients for a
//! vanilla RNN with a linear readout equal the textbook recursion of shared/REFERENCE.md,
//! implemented here by hand with plain loops and no tape.
//!
//! ```text
//! ∂L/∂h_T = W_qhᵀ ∂L/∂o_T
//! ∂L/∂h_t = W_hhᵀ ∂L/∂h_{t+1} + W_qhᵀ ∂L/∂o_t          (t < T)
//! ∂L/∂W_qh = Σ_t ∂L/∂o_t h_tᵀ   ∂L/∂W_hx = Σ_t ∂L/∂h_t x_tᵀ   ∂L/∂W_hh = Σ_t ∂L/∂h_t h_{t-1}ᵀ
//! ```

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Param, Tape, Tensor};
use rewind::nn::{Linear, Module, RecurrentConfig, Rnn};

const T: usize = 7;
const IN: usize = 3;
const H: usize = 4;
const Q: usize = 2;

type Matrix = Vec<Vec<f64>>;

fn to_matrix(t: &Tensor<f64>) -> Matrix {
    let cols = t.shape()[1];
    t.data().chunks(cols).map(|r| r.to_vec()).collect()
}

/// M·v
fn mv(m: &Matrix, v: &[f64]) -> Vec<f64> {
    m.iter()
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// Mᵀ·v
fn mtv(m: &Matrix, v: &[f64]) -> Vec<f64> {
    (0..m[0].len())
        .map(|j| m.iter().zip(v).map(|(row, vi)| row[j] * vi).sum())
        .collect()
}

/// acc += u vᵀ
fn add_outer(acc: &mut Matrix, u: &[f64], v: &[f64]) {
    for (row, ui) in acc.iter_mut().zip(u) {
        for (a, vj) in row.iter_mut().zip(v) {
            *a += ui * vj;
        }
    }
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn zeros(r: usize, c: usize) -> Matrix {
    vec![vec![0.0; c]; r]
}

fn assert_close(tape: &Tensor<f64>, hand: &Matrix, what: &str) {
    for (a, b) in tape.data().iter().zip(hand.iter().flatten()) {
        assert!(
            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
            "{what}: tape {a} vs hand {b}"
        );
    }
}

fn data(seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Tensor::<f64>::uniform(&[T, IN], -1.0, 1.0, &mut rng);
    let y = Tensor::<f64>::uniform(&[T, Q], -1.0, 1.0, &mut rng);
    (to_matrix(&x), to_matrix(&y))
}

/// The model of REFERENCE.md exactly: h_t = W_hx x_t + W_hh h_{t-1}, o_t = W_qh h_t,
/// L = (1/T) Σ_t ½‖o_t - y_t‖², written with generic ops.
#[test]
fn linear_rnn_gradients_equal_the_textbook_recursion() {
    let mut rng = StdRng::seed_from_u64(1);
    let w_hx = Param::named(
        "W_hx",
        Tensor::<f64>::uniform(&[H, IN], -0.5, 0.5, &mut rng),
    );
    let w_hh = Param::named("W_hh", Tensor::<f64>::uniform(&[H, H], -0.5, 0.5, &mut rng));
    let w_qh = Param::named("W_qh", Tensor::<f64>::uniform(&[Q, H], -0.5, 0.5, &mut rng));
    let (x, y) = data(2);

    let tape = Tape::new();
    let (hx, hh, qh) = (tape.param(&w_hx), tape.param(&w_hh), tape.param(&w_qh));
    let row = |v: &[f64]| tape.constant(Tensor::from_vec(v.to_vec(), &[1, v.len()]).unwrap());
    let mut h = tape.constant(Tensor::zeros(&[1, H]));
    let mut loss = tape.constant(Tensor::scalar(0.0));
    for t in 0..T {
        h = row(&x[t]).matmul(hx.t()) + h.matmul(hh.t());
        let o = h.matmul(qh.t());
        loss = loss + (o - row(&y[t])).powf(2.0).sum() * (0.5 / T as f64);
    }
    let grads = loss.backward();

    let (m_hx, m_hh, m_qh) = (
        to_matrix(&w_hx.value()),
        to_matrix(&w_hh.value()),
        to_matrix(&w_qh.value()),
    );
    let mut hs = vec![vec![0.0; H]]; // hs[t + 1] = h_t, hs[0] = h_0 = 0
    for t in 0..T {
        hs.push(add(&mv(&m_hx, &x[t]), &mv(&m_hh, &hs[t])));
    }
    let d_o: Vec<Vec<f64>> = (0..T)
        .map(|t| {
            mv(&m_qh, &hs[t + 1])
                .iter()
                .zip(&y[t])
                .map(|(o, y)| (o - y) / T as f64)
                .collect()
        })
        .collect();
    let (mut g_hx, mut g_hh, mut g_qh) = (zeros(H, IN), zeros(H, H), zeros(Q, H));
    let mut d_h_next = vec![0.0; H];
    for t in (0..T).rev() {
        let d_h = add(&mtv(&m_hh, &d_h_next), &mtv(&m_qh, &d_o[t]));
        add_outer(&mut g_qh, &d_o[t], &hs[t + 1]);
        add_outer(&mut g_hx, &d_h, &x[t]);
        add_outer(&mut g_hh, &d_h, &hs[t]);
        d_h_next = d_h;
    }
    assert_close(&grads[&w_qh], &g_qh, "W_qh");
    assert_close(&grads[&w_hx], &g_hx, "W_hx");
    assert_close(&grads[&w_hh], &g_hh, "W_hh");
}

/// The same recursion through the library's `Rnn` layer (tanh, with biases) and a `Linear`
/// readout: the tanh adds the factor (1 - h_t²) to each step, δ_t = (1 - h_t²) ⊙ ∂L/∂h_t.
#[test]
fn rnn_layer_gradients_equal_the_textbook_recursion_with_tanh() {
    let mut rng = StdRng::seed_from_u64(3);
    let rnn = Rnn::<f64>::init(RecurrentConfig::new(IN, H), &mut rng);
    let readout = Linear::<f64>::init(H, Q, &mut rng).without_bias();
    let (x, y) = data(4);

    let tape = Tape::new();
    let xs = Tensor::from_vec(x.concat(), &[T, 1, IN]).unwrap();
    let ys = Tensor::from_vec(y.concat(), &[T, 1, Q]).unwrap();
    let out = rnn.forward(&tape, tape.constant(xs), None, None);
    let o = readout.forward(&tape, out.output);
    let loss = (o - tape.constant(ys)).powf(2.0).sum() * (0.5 / T as f64);
    let grads = loss.backward();

    let p = |name: &str| rnn.params().into_iter().find(|(n, _)| n == name).unwrap().1;
    let (m_hx, m_hh, m_qh) = (
        to_matrix(&p("weight_ih_l0").value()),
        to_matrix(&p("weight_hh_l0").value()),
        to_matrix(&readout.weight.value()),
    );
    let (b_ih, b_hh) = (
        p("bias_ih_l0").value().data().to_vec(),
        p("bias_hh_l0").value().data().to_vec(),
    );
    let mut hs = vec![vec![0.0; H]];
    for t in 0..T {
        let pre = add(
            &add(&mv(&m_hx, &x[t]), &b_ih),
            &add(&mv(&m_hh, &hs[t]), &b_hh),
        );
        hs.push(pre.iter().map(|a| a.tanh()).collect());
    }
    let (mut g_hx, mut g_hh, mut g_qh, mut g_b) =
        (zeros(H, IN), zeros(H, H), zeros(Q, H), zeros(1, H));
    let mut delta_next = vec![0.0; H];
    for t in (0..T).rev() {
        let d_o: Vec<f64> = mv(&m_qh, &hs[t + 1])
            .iter()
            .zip(&y[t])
            .map(|(o, y)| (o - y) / T as f64)
            .collect();
        let d_h = add(&mtv(&m_hh, &delta_next), &mtv(&m_qh, &d_o));
        let delta: Vec<f64> = d_h
            .iter()
            .zip(&hs[t + 1])
            .map(|(d, h)| d * (1.0 - h * h))
            .collect();
        add_outer(&mut g_qh, &d_o, &hs[t + 1]);
        add_outer(&mut g_hx, &delta, &x[t]);
        add_outer(&mut g_hh, &delta, &hs[t]);
        add_outer(&mut g_b, &[1.0], &delta);
        delta_next = delta;
    }
    assert_close(&grads[&readout.weight], &g_qh, "W_qh");
    assert_close(&grads[p("weight_ih_l0")], &g_hx, "W_hx");
    assert_close(&grads[p("weight_hh_l0")], &g_hh, "W_hh");
    assert_close(&grads[p("bias_ih_l0")], &g_b, "b_ih");
    assert_close(&grads[p("bias_hh_l0")], &g_b, "b_hh");
}
