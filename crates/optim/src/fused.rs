//! The element-wise steps torch's CPU kernels round once: fused multiply-add and lerp.
//!
//! torch's CPU kernels are compiled with FMA (its AVX2 and AVX-512 builds, on which the golden
//! data were made), and the compiler fuses `self + alpha·other` (`add` with `alpha`),
//! `self + value·t1·t2` (`addcmul`) and the weighted sum inside `lerp` into one rounding, in the
//! vectorised and the scalar loop alike. Rounding the product separately instead moves an f32
//! result by an ulp now and then; over 100 steps that alone put f32 runs 4e-7 of a tensor's
//! largest value away from torch's.

use rewind_autograd::Float;

/// `a·b + c` rounded once.
#[inline(always)]
pub(crate) fn mul_add<F: Float>(a: F, b: F, c: F) -> F {
    let (a, b, c) = (a.to_f64(), b.to_f64(), c.to_f64());
    if size_of::<F>() == size_of::<f32>() {
        // The product of two f32 is exact in f64, so this is one f64 rounding of the exact sum
        // then one to f32: it differs from a single rounding only when the f64 sum lands exactly
        // halfway between two f32 (about once in 2^29), and unlike `f32::mul_add` it needs no
        // libm call, so the loop stays vectorised.
        F::from_f64(a * b + c)
    } else {
        F::from_f64(a.mul_add(b, c))
    }
}

/// `torch.lerp(start, end, weight)` for one weight, `start + weight·(end - start)`: with a small
/// weight (|w| < 0.5) `fma(w, end - start, start)`, else `fma(w - 1, end - start, end)`, so that
/// the result is exact at both ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lerp<F> {
    coef: F,
    from_end: bool,
}

impl<F: Float> Lerp<F> {
    pub(crate) fn new(weight: F) -> Self {
        if weight.abs() < F::from_f64(0.5) {
            Lerp {
                coef: weight,
                from_end: false,
            }
        } else {
            Lerp {
                coef: weight - F::ONE,
                from_end: true,
            }
        }
    }

    /// The point `weight` of the way from `start` to `end`.
    #[inline(always)]
    pub(crate) fn at(self, start: F, end: F) -> F {
        let base = if self.from_end { end } else { start };
        mul_add(self.coef, end - start, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_add_rounds_once() {
        // (1 + 2^-12)² = 1 + 2^-11 + 2^-24: the last term is lost when the product is rounded
        // to f32 first, and kept (as the tie-breaking bit) by a single rounding.
        let a = 1.0 + 2f32.powi(-12);
        let c = -1.0 - 2f32.powi(-11);
        assert_eq!(a * a + c, 0.0);
        assert_eq!(mul_add(a, a, c), 2f32.powi(-24));
        let a = 1.0 + 2f64.powi(-27);
        let c = -1.0 - 2f64.powi(-26);
        assert_eq!(mul_add(a, a, c), 2f64.powi(-54));
    }

    #[test]
    fn lerp_is_exact_at_both_ends() {
        let (start, end) = (0.1f32, 0.7f32);
        assert_eq!(Lerp::new(0.0).at(start, end), start);
        assert_eq!(Lerp::new(1.0).at(start, end), end);
        assert_eq!(
            Lerp::new(0.25).at(start, end),
            mul_add(0.25, end - start, start)
        );
        assert_eq!(
            Lerp::new(0.75).at(start, end),
            mul_add(-0.25, end - start, end)
        );
    }
}
