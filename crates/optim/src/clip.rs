//! Gradient clipping: by global p-norm (L2 by default, any p > 0, the max norm, and PyTorch's 0,
//! -inf and finite negative p), and by value.

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

/// The global norm of all gradients as torch's `clip_grad_norm_` takes it: the p-norm of the
/// vector of each gradient's own p-norm, accumulated in f64. For p > 0 that is the p-norm of
/// every element as one vector, (Σ |g|^p)^(1/p), and max |g| for p = ∞; for p = -∞ it is
/// min |g| (either is NaN if any element is NaN). For a finite p < 0 it is
/// `(Σ_g ‖g‖_p^p)^(1/p)` taken as torch takes it, gradient by gradient; a zero element makes
/// `|0|^p` infinite, so its gradient's norm is 0 and so is the total. For p = 0 it is not the
/// count of nonzero elements: the 0 "norm" of the per-gradient counts counts the gradients with
/// a nonzero element (NaN counts as nonzero). p = 2 is [`grad_norm`]. With no gradients, 0.
///
/// Panics, at the caller's line, on p < 0 over a gradient with no elements, whose norm torch
/// refuses to take, and on a finite p > 0 (other than 1 and 2) whose `|g|^p` overflows f64
/// while every element is finite.
#[track_caller]
fn p_norm<F: Float>(grads: &Grads<F>, p: f64) -> f64 {
    let elements = || {
        grads
            .iter()
            .flat_map(|(_, g)| g.data())
            .map(|x| x.to_f64().abs())
    };
    if p < 0.0 {
        if let Some((_, g)) = grads.iter().find(|(_, g)| g.data().is_empty()) {
            panic!(
                "clip_grad_norm: the {p} norm of an empty gradient (shape {:?}) is undefined, as in PyTorch",
                g.shape()
            );
        }
        if grads.is_empty() {
            return 0.0;
        }
    }
    if p == 2.0 {
        grad_norm(grads)
    } else if p == f64::INFINITY {
        // f64::max drops NaN; a NaN gradient must give a NaN norm, as torch's does.
        elements().fold(0.0, |m, x| if x > m || x.is_nan() { x } else { m })
    } else if p == f64::NEG_INFINITY {
        // As for ∞: f64::min would drop NaN.
        elements().fold(
            f64::INFINITY,
            |m, x| if x < m || x.is_nan() { x } else { m },
        )
    } else if p < 0.0 {
        let norm_of = |data: &[F]| {
            let sum: f64 = data.iter().map(|x| x.to_f64().abs().powf(p)).sum();
            sum.powf(1.0 / p)
        };
        let sum: f64 = grads.iter().map(|(_, g)| norm_of(g.data()).powf(p)).sum();
        sum.powf(1.0 / p)
    } else if p == 0.0 {
        let nonzero = grads
            .iter()
            .filter(|(_, g)| g.data().iter().any(|x| x.to_f64() != 0.0))
            .count();
        nonzero as f64
    } else if p == 1.0 {
        elements().fold(0.0, |sum, x| sum + x)
    } else {
        let total = elements().fold(0.0, |sum, x| sum + x.powf(p)).powf(1.0 / p);
        let largest = elements().fold(0.0, f64::max);
        // torch's sum overflows too, returns inf and clips every gradient to 0: a garbage norm
        // (the true one is at most largest·n^(1/p)), so refused rather than matched.
        assert!(
            !(total == f64::INFINITY && largest.is_finite()),
            "clip_grad_norm: the {p}-norm of these gradients overflows f64 (|g|^{p} is infinite \
             for |g| = {largest}), though every element is finite; PyTorch returns inf and zeroes \
             every gradient. Use norm_type f64::INFINITY for the largest |g|"
        );
        total
    }
}

/// Scales every gradient by `min(1, max_norm / (total + 1e-6))`, as `torch.nn.utils.clip_grad_norm_`,
/// and returns `total`, the global L2 norm before clipping. A non-finite norm is returned as is
/// (and, as in PyTorch, turns the gradients to NaN); use [`clip_grad_norm_finite`] to refuse it,
/// and [`clip_grad_norm_with`] for another norm.
///
/// Panics if `max_norm` is negative or NaN.
#[track_caller]
pub fn clip_grad_norm<F: Float>(grads: &mut Grads<F>, max_norm: f64) -> f64 {
    check_max_norm(max_norm);
    let total = grad_norm(grads);
    scale_to(grads, max_norm, total);
    total
}

/// [`clip_grad_norm`] that fails, leaving the gradients untouched, when the norm is NaN or
/// infinite (PyTorch's `error_if_nonfinite=True`).
#[track_caller]
pub fn clip_grad_norm_finite<F: Float>(
    grads: &mut Grads<F>,
    max_norm: f64,
) -> Result<f64, NonFiniteNorm> {
    clip_grad_norm_with(grads, ClipOptions::new(max_norm).error_if_nonfinite(true))
}

/// The arguments of `torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type,
/// error_if_nonfinite)`, for [`clip_grad_norm_with`]. [`ClipOptions::new`] takes PyTorch's
/// defaults: the L2 norm, no error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipOptions {
    /// The largest norm the gradients may have after clipping (≥ 0).
    pub max_norm: f64,
    /// p of the p-norm: any p > 0, `f64::INFINITY` for the largest absolute element, and
    /// PyTorch's 0 (the number of gradients with a nonzero element), `f64::NEG_INFINITY` (the
    /// smallest absolute element) and finite p < 0; see [`clip_grad_norm_with`].
    pub norm_type: f64,
    /// Refuse a NaN or infinite norm with [`NonFiniteNorm`] instead of scaling by it.
    pub error_if_nonfinite: bool,
}

impl ClipOptions {
    /// Clip to `max_norm` in L2, with no error on a non-finite norm.
    pub fn new(max_norm: f64) -> Self {
        ClipOptions {
            max_norm,
            norm_type: 2.0,
            error_if_nonfinite: false,
        }
    }

    /// Measures with the p-norm, p = `norm_type` (any number but NaN, or ±`f64::INFINITY`).
    pub fn norm_type(mut self, norm_type: f64) -> Self {
        self.norm_type = norm_type;
        self
    }

    /// Whether a NaN or infinite norm is an error.
    pub fn error_if_nonfinite(mut self, error: bool) -> Self {
        self.error_if_nonfinite = error;
        self
    }
}

/// Clips all gradients together by their global p-norm, as `torch.nn.utils.clip_grad_norm_`:
/// `total = (Σ over every element of every gradient of |g|^p)^(1/p)` (`max |g|` for p = ∞),
/// accumulated in f64 whatever `F` is; then every gradient is multiplied by
/// `min(1, max_norm / (total + 1e-6))`. Returns `total`, the norm before clipping.
///
/// PyTorch takes the norm of the gradients' own norms, which for the norm types it allows
/// beyond these gives: `min |g|` over every element for p = -∞; for a finite p < 0,
/// `(Σ_g ‖g‖_p^p)^(1/p)` with `‖g‖_p = (Σ |x|^p)^(1/p)`, taken gradient by gradient as torch
/// does (a zero element makes `|0|^p` infinite, so the total is 0 and nothing is clipped, and an
/// element so small that `|x|^p` overflows counts as a zero, in torch too); and for p = 0 the
/// number of gradients with a nonzero element (NaN counts), not of nonzero elements. Those are
/// torch's totals here too.
///
/// A NaN or infinite `total` is an error ([`NonFiniteNorm`], gradients untouched) when
/// `error_if_nonfinite` is set; otherwise it is returned, and scaling by it makes the gradients
/// NaN (a NaN norm) or zero and NaN where they were infinite (an infinite one), as in PyTorch.
///
/// A large finite p whose `Σ |g|^p` overflows f64 though every element is finite (p = 10^4
/// with an element of 5) gives torch an infinite norm, with which it zeroes every gradient
/// silently; that norm is wrong (the true one lies between max |g| and n^(1/p)·max |g|), so it
/// is refused here with a panic, which names `f64::INFINITY` as the norm type meant. (torch sums
/// float32 gradients in float32, which overflows already near p = 64 for |g| = 4; the f64 sum
/// here does not.)
///
/// Panics if `norm_type` is NaN, on that overflow, if `max_norm` is negative or NaN, and for a
/// p < 0 over a gradient with no elements, whose norm PyTorch refuses too.
#[track_caller]
pub fn clip_grad_norm_with<F: Float>(
    grads: &mut Grads<F>,
    options: ClipOptions,
) -> Result<f64, NonFiniteNorm> {
    let p = options.norm_type;
    assert!(
        !p.is_nan(),
        "clip_grad_norm: norm_type must be a number or ±inf, got {p}"
    );
    check_max_norm(options.max_norm);
    let total = p_norm(grads, p);
    if options.error_if_nonfinite && !total.is_finite() {
        return Err(NonFiniteNorm(total));
    }
    scale_to(grads, options.max_norm, total);
    Ok(total)
}

#[track_caller]
fn check_max_norm(max_norm: f64) {
    assert!(
        max_norm >= 0.0,
        "clip_grad_norm: max_norm must be non-negative, got {max_norm}"
    );
}

/// Multiplies every gradient by `min(1, max_norm / (total + 1e-6))`.
fn scale_to<F: Float>(grads: &mut Grads<F>, max_norm: f64, total: f64) {
    // Multiplying by 1 changes nothing, so an unclipped step skips the pass. A NaN coefficient
    // (from a NaN norm) must poison the gradients, as torch.clamp keeps it NaN; `f64::min`
    // would turn it into 1.
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 || coef.is_nan() {
        let c = F::from_f64(coef);
        for (_, g) in grads.iter_mut() {
            g.data_mut().iter_mut().for_each(|x| *x *= c);
        }
    }
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
/// min-char-rnn and char-rnn use 5). NaN elements stay NaN, as with `torch.clamp`.
///
/// Panics if `clip_value` is negative or NaN.
#[track_caller]
pub fn clip_grad_value<F: Float>(grads: &mut Grads<F>, clip_value: f64) {
    assert!(
        clip_value >= 0.0,
        "clip_grad_value: clip_value must be non-negative, got {clip_value}"
    );
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

#[cfg(test)]
mod tests {
    use rewind_autograd::rand::{rngs::StdRng, Rng, SeedableRng};
    use rewind_autograd::{Float, Grads, Param, Tape, Tensor};

    use super::*;

    /// Gradients equal to `values`, split over parameters of the given sizes: the gradient of
    /// Σ p ⊙ G with respect to p is G.
    fn grads_of<F: Float>(values: &[f64], sizes: &[usize]) -> Grads<F> {
        let mut rest = values;
        let params: Vec<(Param<F>, Tensor<F>)> = sizes
            .iter()
            .map(|&n| {
                let (head, tail) = rest.split_at(n);
                rest = tail;
                let g = head.iter().map(|&x| F::from_f64(x)).collect();
                (
                    Param::named("p", Tensor::full(&[n], F::ZERO)),
                    Tensor::from_vec(g, &[n]).unwrap(),
                )
            })
            .collect();
        let tape = Tape::new();
        let mut loss = tape.constant(Tensor::scalar(F::ZERO));
        for (p, g) in &params {
            loss = loss + (tape.param(p) * tape.constant(g.clone())).sum();
        }
        loss.backward()
    }

    /// 10^6 f32 gradients (seed 7, magnitudes spread over four decades, in two parameters): the
    /// norm, and the norm after clipping to 1, are within 1e-6 of the f64 figures (the norm is
    /// 2e-11 off). Summed in f32 the squares come out 2.1e-4 low: once the running sum is large,
    /// every addition rounds off part of the small square it adds.
    #[test]
    fn f32_norm_of_a_million_gradients_matches_f64() {
        let mut rng = StdRng::seed_from_u64(7);
        let values: Vec<f64> = (0..1_000_000)
            .map(|_| rng.random_range(-1.0..1.0) * 10f64.powf(rng.random_range(-2.0..2.0)))
            .collect();
        let sizes = [600_000, 400_000];
        let mut single = grads_of::<f32>(&values, &sizes);
        let double = grads_of::<f64>(&values, &sizes);
        let want = grad_norm(&double);
        let total = clip_grad_norm(&mut single, 1.0);
        let err = (total - want).abs() / want;
        println!("f32 norm {total}, f64 norm {want}: {err:.2e} relative");
        assert!(
            err <= 1e-6,
            "f32 norm {total} vs f64 {want}: {err:e} relative"
        );
        let clipped = grad_norm(&single);
        assert!(
            (clipped - 1.0).abs() <= 1e-6,
            "norm after clipping to 1: {clipped}"
        );
    }
}
