//! The `Float` trait: the element types a tensor can hold (f32 and f64).

use std::fmt::{Debug, Display, LowerExp};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub(crate) mod f32_activation;

use f32_activation as act;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type of [`Tensor`](crate::Tensor): `f32` (the default everywhere) or `f64` (for exact
/// gradient checks). The trait is sealed: the kernels are written for these two types.
pub trait Float:
    sealed::Sealed
    + crate::recycle::Recycle
    + Copy
    + Default
    + Debug
    + Display
    + LowerExp
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The name PyTorch gives this type (`float32`, `float64`).
    const DTYPE: &'static str;

    /// Converts from f64, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 exactly.
    fn to_f64(self) -> f64;
    /// Converts from a count or index.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// self^p.
    fn powf(self, p: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger of the two; NaN if either is NaN.
    fn max(self, other: Self) -> Self;
    /// True unless infinite or NaN.
    fn is_finite(self) -> bool;
    /// True for NaN.
    fn is_nan(self) -> bool;
    /// Negative infinity.
    fn neg_infinity() -> Self;

    /// The logistic function 1 / (1 + e^-x), computed without overflow for large |x|.
    fn sigmoid(self) -> Self {
        if self >= Self::ZERO {
            Self::ONE / (Self::ONE + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::ONE + e)
        }
    }
}

macro_rules! impl_float {
    ($t:ty, $dtype:literal, { $($fast:tt)* }) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const DTYPE: &'static str = $dtype;

            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            $($fast)*
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn max(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else {
                    <$t>::max(self, other)
                }
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
        }
    };
}

// f32's exp, tanh and σ are the bodies of the vectorised slice kernels, element and slice alike,
// so a value does not depend on which path computed it; f64 keeps libm's, the reference for
// gradient checks.
impl_float!(f32, "float32", {
    fn exp(self) -> Self {
        act::exp(self)
    }
    fn tanh(self) -> Self {
        act::tanh(self)
    }
    fn sigmoid(self) -> Self {
        act::sigmoid(self)
    }
});
impl_float!(f64, "float64", {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
});
