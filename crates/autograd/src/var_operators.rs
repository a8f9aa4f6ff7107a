//! Operators on `Var`: `+ - * /` between values (broadcasting as NumPy does; backward sums each
//! side over the axes it was broadcast along), with a scalar on either side, and unary `-`.
//!
//! d(a + b) = da + db; d(a - b) = da - db; d(a·b) = b·da + a·db; d(a/b) = da/b - (a/b²)·db.
//!
//! A scalar on the left (`2.0 * x`) works for f32 and f64, the two `Float` types, but not in code
//! generic over `F: Float`: Rust's orphan rule refuses `impl<F: Float> Mul<Var<F>> for F` (E0210:
//! the uncovered `F` comes before the first local type), so each type has its own impl and a
//! generic `F` is not known to have one. Generic code puts the scalar on the right (`x * s`,
//! `x + s`), or writes `x.rsub(s)` for `s - x` and `x.rdiv(s)` for `s / x`.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::check;
use crate::float::Float;
use crate::primitives::Pointwise;
use crate::tape::Var;

impl<'t, F: Float> Var<'t, F> {
    /// Records `op` over `self` and `rhs`, which must broadcast together.
    #[track_caller]
    fn binary(self, name: &str, rhs: Self, op: fn(usize, usize) -> Pointwise<F>) -> Self {
        self.tape().assert_owns(name, rhs);
        check::broadcast(name, &self.shape(), &rhs.shape());
        self.tape()
            .record(op(self.index(), rhs.index()), &[self.index(), rhs.index()])
    }
}

macro_rules! var_op {
    ($trait:ident, $method:ident, $op:ident) => {
        impl<'t, F: Float> $trait for Var<'t, F> {
            type Output = Var<'t, F>;

            #[track_caller]
            fn $method(self, rhs: Self) -> Self {
                self.binary(stringify!($method), rhs, Pointwise::$op)
            }
        }
    };
}

var_op!(Add, add, Add);
var_op!(Sub, sub, Sub);
var_op!(Mul, mul, Mul);
var_op!(Div, div, Div);

impl<'t, F: Float> Neg for Var<'t, F> {
    type Output = Var<'t, F>;

    #[track_caller]
    fn neg(self) -> Self {
        self.affine(-F::ONE, F::ZERO)
    }
}

impl<'t, F: Float> Add<F> for Var<'t, F> {
    type Output = Var<'t, F>;

    #[track_caller]
    fn add(self, s: F) -> Self {
        self.affine(F::ONE, s)
    }
}

impl<'t, F: Float> Sub<F> for Var<'t, F> {
    type Output = Var<'t, F>;

    #[track_caller]
    fn sub(self, s: F) -> Self {
        self.affine(F::ONE, -s)
    }
}

impl<'t, F: Float> Mul<F> for Var<'t, F> {
    type Output = Var<'t, F>;

    #[track_caller]
    fn mul(self, s: F) -> Self {
        self.affine(s, F::ZERO)
    }
}

impl<'t, F: Float> Div<F> for Var<'t, F> {
    type Output = Var<'t, F>;

    #[track_caller]
    fn div(self, s: F) -> Self {
        self.affine(F::ONE / s, F::ZERO)
    }
}

impl<'t, F: Float> Var<'t, F> {
    /// `s - self`, for code generic over [`Float`], where `s - x` cannot be written (Rust allows
    /// a scalar on the left only for the concrete f32 and f64). `z.rsub(1.0)` is a GRU's 1 - z.
    #[track_caller]
    pub fn rsub(self, s: F) -> Self {
        self.affine(-F::ONE, s)
    }

    /// `s / self` = s·self⁻¹, for code generic over [`Float`] (see [`rsub`](Var::rsub)).
    #[track_caller]
    pub fn rdiv(self, s: F) -> Self {
        self.powf(-F::ONE).affine(s, F::ZERO)
    }
}

// A scalar on the left needs one impl per concrete type (see the module's doc).
macro_rules! scalar_lhs {
    ($t:ty) => {
        impl<'t> Add<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;

            #[track_caller]
            fn add(self, v: Var<'t, $t>) -> Var<'t, $t> {
                v.affine(1.0, self)
            }
        }

        impl<'t> Sub<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;

            #[track_caller]
            fn sub(self, v: Var<'t, $t>) -> Var<'t, $t> {
                v.affine(-1.0, self)
            }
        }

        impl<'t> Mul<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;

            #[track_caller]
            fn mul(self, v: Var<'t, $t>) -> Var<'t, $t> {
                v.affine(self, 0.0)
            }
        }

        /// `s / v` = s·v⁻¹.
        impl<'t> Div<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;

            #[track_caller]
            fn div(self, v: Var<'t, $t>) -> Var<'t, $t> {
                v.powf(-1.0).affine(self, 0.0)
            }
        }
    };
}

scalar_lhs!(f32);
scalar_lhs!(f64);
