//! Gradient clipping: by global L2 norm, and by value.

use std::fmt;

use rewind_autograd::{Float, Grads};

/// The global L2 norm of all gradients: √(Σ over parameters of ‖g‖²), accumulated in f64.
pub fn grad_norm<F: Float>(grads: &Grads<F>) -> f64 {
    grads
        .iter()
        .map(|(_, g)| {
            g.data()
                .iter()
                .map(|&x| x.to_f64() * x.to_f64())
                .sum::<f64>()
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales every gradient by `min(1, max_norm / (total + 1e-6))`, as `torch.nn.utils.clip_grad_norm_`,
/// and returns `total`, the global norm before clipping. A non-finite norm is returned as is
/// (and, as in PyTorch, turns the gradients to NaN); use [`clip_grad_norm_finite`] to refuse it.
pub fn clip_grad_norm<F: Float>(grads: &mut Grads<F>, max_norm: f64) -> f64 {
    let total = grad_norm(grads);
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    // Multiplying by 1 changes nothing, so an unclipped step skips the pass. A NaN coefficient
    // (from a NaN norm) fails `< 1.0` but must still poison the gradients, as PyTorch's does.
    if coef < 1.0 || coef.is_nan() {
        let c = F::from_f64(coef);
        for (_, g) in grads.iter_mut() {
            g.data_mut().iter_mut().for_each(|x| *x *= c);
        }
    }
    total
}

/// [`clip_grad_norm`] that fails, leaving the gradients untouched, when the norm is NaN or
/// infinite (PyTorch's `error_if_nonfinite=True`).
pub fn clip_grad_norm_finite<F: Float>(
    grads: &mut Grads<F>,
    max_norm: f64,
) -> Result<f64, NonFiniteNorm> {
    let total = grad_norm(grads);
    if !total.is_finite() {
        return Err(NonFiniteNorm(total));
    }
    Ok(clip_grad_norm(grads, max_norm))
}

/// The gradients' global norm was NaN or infinite: the step diverged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFiniteNorm(pub f64);

impl fmt::Display for NonFiniteNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the total gradient norm is {}: training diverged (try a lower learning rate or clipping)",
            self.0
        )
    }
}

impl std::error::Error for NonFiniteNorm {}

/// Clamps every gradient element to [-clip_value, clip_value] (`torch.nn.utils.clip_grad_value_`;
/// min-char-rnn and char-rnn use 5).
pub fn clip_grad_value<F: Float>(grads: &mut Grads<F>, clip_value: f64) {
    let (lo, hi) = (F::from_f64(-clip_value), F::from_f64(clip_value));
    for (_, g) in grads.iter_mut() {
        for x in g.data_mut() {
            // Written so that NaN passes through, as torch.clamp does.
            if *x < lo {
                *x = lo;
            } else if *x > hi {
                *x = hi;
            }
        }
    }
}
