//! Gradient-flow diagnostics: the norm of ∂L/∂h_t at every step, each parameter's gradient norm,
//! and the spectral radius of the recurrent weights, whose powers decide whether gradients
//! vanish (below 1) or explode (above 1).

use rewind_autograd::{Float, Grads, Tensor, Var};

use crate::module::Module;
use crate::standard_cells::StandardCell;

/// ‖∂L/∂h_t‖ for each kept state (`Run { keep_states: true }`), in time order: how much gradient
/// flows back to each step. A state the loss does not depend on gives 0.
pub fn grad_norms_through_time<F: Float>(grads: &Grads<F>, states: &[Var<'_, F>]) -> Vec<f64> {
    states
        .iter()
        .map(|&h| grads.wrt(h).map_or(0.0, l2_norm))
        .collect()
}

/// Each parameter's gradient L2 norm, by name, in the model's order (0 for a parameter without
/// a gradient).
pub fn param_grad_norms<F: Float>(model: &dyn Module<F>, grads: &Grads<F>) -> Vec<(String, f64)> {
    model
        .params()
        .into_iter()
        .map(|(name, p)| (name, grads.get(p).map_or(0.0, l2_norm)))
        .collect()
}

fn l2_norm<F: Float>(t: &Tensor<F>) -> f64 {
    t.data()
        .iter()
        .map(|x| x.to_f64() * x.to_f64())
        .sum::<f64>()
        .sqrt()
}

/// The spectral radius (largest |eigenvalue|) of a square matrix by power iteration, from the
/// growth rate of ‖Wᵏv‖ (Gelfand's formula), which converges also when the dominant eigenvalues
/// are a complex pair.
#[track_caller]
pub fn spectral_radius<F: Float>(w: &Tensor<F>, iterations: usize) -> f64 {
    let n = w.shape()[0];
    assert!(
        w.ndim() == 2 && w.shape()[1] == n,
        "spectral_radius: needs a square matrix, got {:?}",
        w.shape()
    );
    let a: Vec<f64> = w.data().iter().map(|x| x.to_f64()).collect();
    // A fixed, generic start vector (not an eigenvector of any structured matrix).
    let mut v: Vec<f64> = (0..n)
        .map(|i| 1.0 + (i as f64 * 0.618_034).fract())
        .collect();
    normalize(&mut v);
    let burn_in = iterations / 2;
    let mut log_growth = 0.0;
    for k in 0..iterations {
        let next: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * v[j]).sum())
            .collect();
        v = next;
        let norm = normalize(&mut v);
        if norm == 0.0 {
            return 0.0;
        }
        if k >= burn_in {
            log_growth += norm.ln();
        }
    }
    (log_growth / (iterations - burn_in) as f64).exp()
}

fn normalize(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

/// The spectral radius of each gate's block of a cell's W_hh ([H, H] each; one block for a vanilla
/// RNN, i f g o for an LSTM, r z n for a GRU).
///
/// Panics for a cell with a projection (`proj_size`), whose blocks are [H, P], not square.
#[track_caller]
pub fn recurrent_spectral_radii<C: StandardCell<F>, F: Float>(
    cell: &C,
    iterations: usize,
) -> Vec<f64> {
    assert!(
        cell.weight_hr().is_none(),
        "recurrent_spectral_radii: a projected cell's W_hh blocks are [H, P], not square"
    );
    let w = cell.weight_hh().value();
    let h = w.shape()[1];
    (0..C::GATES)
        .map(|g| {
            let block = w.data()[g * h * h..(g + 1) * h * h].to_vec();
            spectral_radius(
                &Tensor::from_vec(block, &[h, h]).expect("an H×H block"),
                iterations,
            )
        })
        .collect()
}
