//! 04 · An RNN unrolled by hand, with backpropagation through time written out beside the tape.
//!
//! The network, in the course's notation (column vectors, h_0 = 0):
//! ```text
//! h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),   o_t = W_hy h_t,   L = Σ_t L_t,   L_t = ½‖o_t − y_t‖²
//! ```
//! It is recorded as a plain `for` loop over t, and `backward` on L is BPTT: nothing is written
//! for it. By hand, with a_t the pre-activation and ∂⁺h_k/∂θ step k's own derivative (h_{k-1}
//! held fixed):
//! ```text
//! ∂L/∂θ = Σ_t ∂L_t/∂h_t ∂h_t/∂θ = Σ_t Σ_{k≤t} ∂L_t/∂h_t (Π_{j=k+1..t} ∂h_j/∂h_{j-1}) ∂⁺h_k/∂θ,
//!         ∂h_j/∂h_{j-1} = diag(1 − h_j²) W_hh
//! ```
//! Grouped by k instead of t, the double sum is one pass backward in time:
//! ```text
//! ∂L/∂h_t = W_hyᵀ (o_t − y_t) + W_hhᵀ δ_{t+1},   δ_t = ∂L/∂a_t = (1 − h_t²) ⊙ ∂L/∂h_t
//! ∂L/∂W_hh = Σ_t δ_t h_{t-1}ᵀ   ∂L/∂W_xh = Σ_t δ_t x_tᵀ   ∂L/∂b = Σ_t δ_t
//! ∂L/∂W_hy = Σ_t (o_t − y_t) h_tᵀ
//! ```
//! Both are computed below in plain loops and asserted equal to the tape's gradients to 1e-12.
//! Builds on `03-linear-model.rs`. Next: `05-lstm-stack.rs`, the library's recurrent layers.
//!
//! Run: `cargo run --example 04-rnn-by-hand`

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::prelude::*;

const T: usize = 8;
const X: usize = 3;
const H: usize = 5;
const Y: usize = 2;

fn main() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut draw =
        |rows: usize, cols: usize| Tensor::<f64>::uniform(&[rows, cols], -0.6, 0.6, &mut rng);
    let [w_hh, w_xh, b, w_hy] =
        [(H, H), (H, X), (H, 1), (Y, H)].map(|(r, c)| Param::new(draw(r, c)));
    let (xs, ys) = (rows(&draw(T, X)), rows(&draw(T, Y)));
    let zeros = |r: usize, c: usize| vec![vec![0.0; c]; r];
    let norm = |v: &[f64]| dot(v, v).sqrt();

    // The tape: the loop over time, as the equations read.
    let tape = Tape::<f64>::new();
    let column = |v: &[f64]| tape.constant(Tensor::from_vec(v.to_vec(), &[v.len(), 1]).unwrap());
    let [p_hh, p_xh, p_b, p_hy] = [&w_hh, &w_xh, &b, &w_hy].map(|p| tape.param(p));
    let mut h = column(&[0.0; H]);
    let (mut loss, mut h_vars) = (tape.constant(Tensor::scalar(0.0)), Vec::new());
    for t in 0..T {
        // retain_grad keeps ∂L/∂h_t, which backward otherwise frees once it has passed it on.
        let a = p_hh.matmul(h) + p_xh.matmul(column(&xs[t])) + p_b;
        h = a.tanh().retain_grad();
        loss = loss + (p_hy.matmul(h) - column(&ys[t])).powf(2.0).sum() * 0.5;
        h_vars.push(h);
    }
    let grads = loss.backward();
    println!("L = {:.6}; {} nodes on the tape", loss.item(), tape.len());

    // By hand: the forward pass again, h[t] = h_t with h[0] = h_0 = 0.
    let [whh, wxh, bias, why] = [&w_hh, &w_xh, &b, &w_hy].map(|p| rows(&p.value()));
    let mut h = vec![vec![0.0; H]];
    for t in 0..T {
        let a: Vec<f64> = (0..H)
            .map(|i| dot(&whh[i], &h[t]) + dot(&wxh[i], &xs[t]) + bias[i][0])
            .collect();
        h.push(a.iter().map(|a| a.tanh()).collect());
    }
    let err: Vec<Vec<f64>> = (0..T)
        .map(|t| (0..Y).map(|i| dot(&why[i], &h[t + 1]) - ys[t][i]).collect())
        .collect();
    let back_through_tanh = |k: usize, v: &[f64]| -> Vec<f64> {
        (0..H).map(|i| v[i] * (1.0 - h[k][i] * h[k][i])).collect()
    };

    // (a) The double sum, term by term: each L_t sends its ∂L_t/∂h_t back to every h_k, k ≤ t.
    let mut double_sum = zeros(H, H);
    for t in 1..=T {
        let mut v = mtv(&why, &err[t - 1]); // ∂L_t/∂h_t
        for k in (1..=t).rev() {
            let delta = back_through_tanh(k, &v); // ∂L_t/∂a_k
            add_outer(&mut double_sum, &delta, &h[k - 1]); // · ∂⁺h_k/∂W_hh
            v = mtv(&whh, &delta); // ∂L_t/∂h_{k-1}: one more factor of the product
        }
    }

    // (b) The recursion: one pass from t = T down to 1.
    let (mut g_hh, mut g_xh, mut g_b, mut g_hy) =
        (zeros(H, H), zeros(H, X), zeros(H, 1), zeros(Y, H));
    let mut from_later = vec![0.0; H]; // W_hhᵀ δ_{t+1}, zero past the end
    println!("  t   ‖∂L_t/∂h_t‖   ‖∂L/∂h_t‖   (the second adds every later loss)");
    for t in (1..=T).rev() {
        let own = mtv(&why, &err[t - 1]);
        let d_h: Vec<f64> = own.iter().zip(&from_later).map(|(a, b)| a + b).collect();
        println!("  {t}   {:>11.6}   {:>9.6}", norm(&own), norm(&d_h));
        assert_close(&format!("∂L/∂h_{t}"), &grads[h_vars[t - 1]], &d_h);
        let delta = back_through_tanh(t, &d_h);
        add_outer(&mut g_hh, &delta, &h[t - 1]);
        add_outer(&mut g_xh, &delta, &xs[t - 1]);
        add_outer(&mut g_b, &delta, &[1.0]);
        add_outer(&mut g_hy, &err[t - 1], &h[t]);
        from_later = mtv(&whh, &delta);
    }
    assert_close("∂L/∂W_hh, double sum", &grads[&w_hh], &double_sum.concat());
    assert_close("∂L/∂W_hh, recursion", &grads[&w_hh], &g_hh.concat());
    assert_close("∂L/∂W_xh", &grads[&w_xh], &g_xh.concat());
    assert_close("∂L/∂b", &grads[&b], &g_b.concat());
    assert_close("∂L/∂W_hy", &grads[&w_hy], &g_hy.concat());
    println!("every ∂L/∂h_t and ∂L/∂θ: tape = hand to 1e-12, checked");
}

fn rows(t: &Tensor<f64>) -> Vec<Vec<f64>> {
    t.data().chunks(t.shape()[1]).map(<[f64]>::to_vec).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mᵀ v
fn mtv(m: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    (0..m[0].len())
        .map(|j| m.iter().zip(v).map(|(row, vi)| row[j] * vi).sum())
        .collect()
}

/// acc += u vᵀ
fn add_outer(acc: &mut [Vec<f64>], u: &[f64], v: &[f64]) {
    for (row, ui) in acc.iter_mut().zip(u) {
        row.iter_mut().zip(v).for_each(|(a, vj)| *a += ui * vj);
    }
}

fn assert_close(what: &str, tape: &Tensor<f64>, hand: &[f64]) {
    assert_eq!(tape.numel(), hand.len(), "{what}");
    for (a, b) in tape.data().iter().zip(hand) {
        let close = (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(close, "{what}: tape {a} vs hand {b}");
    }
}
