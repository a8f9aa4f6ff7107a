//! Computing with plain tensors, off any tape: `+ - * /` (NumPy broadcasting, a scalar on
//! either side), comparisons giving masks, `max`/`min` and their indices along an axis, `topk`
//! and `allclose`, with PyTorch's meanings. For greedy decoding, finite differences and checks,
//! where nothing needs a gradient.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::check;
use crate::float::Float;
use crate::kernels::elementwise;
use crate::shape::split_at_axis;
use crate::tensor::Tensor;

/// The right-hand side of a comparison: a tensor (broadcast with the left) or a scalar.
pub trait Operand<F: Float> {
    /// This operand as a tensor (a scalar as a 0-d one).
    fn into_tensor(self) -> Tensor<F>;
}

impl<F: Float> Operand<F> for Tensor<F> {
    fn into_tensor(self) -> Tensor<F> {
        self
    }
}

impl<F: Float> Operand<F> for &Tensor<F> {
    fn into_tensor(self) -> Tensor<F> {
        self.clone()
    }
}

impl<F: Float> Operand<F> for F {
    fn into_tensor(self) -> Tensor<F> {
        Tensor::scalar(self)
    }
}

/// `f(a, b)` element by element over the broadcast shape, or a panic at the caller's line
/// naming `op` and both shapes.
#[track_caller]
fn zip<F: Float>(op: &str, a: &Tensor<F>, b: &Tensor<F>, f: impl Fn(F, F) -> F) -> Tensor<F> {
    let out = check::broadcast(op, a.shape(), b.shape());
    elementwise::binary(a, b, &out, f)
}

fn flag<F: Float>(yes: bool) -> F {
    if yes {
        F::ONE
    } else {
        F::ZERO
    }
}

/// Whether `v` beats `best` as a lane's maximum (`larger`) or minimum: a NaN beats any number
/// and stays, as in PyTorch; a tie keeps the first.
fn beats<F: Float>(v: F, best: F, larger: bool) -> bool {
    if best.is_nan() {
        return false;
    }
    v.is_nan() || if larger { v > best } else { v < best }
}

impl<F: Float> Tensor<F> {
    /// Entries `start .. start + len` along `axis` (negative counts from the end), the other axes
    /// whole: `torch.narrow` on a plain tensor, as a copy. One shard's lanes of a carried state
    /// `[L, lanes, H]` are `state.narrow(1, first, n)`.
    #[track_caller]
    pub fn narrow(
        &self,
        axis: impl crate::Axis + std::fmt::Debug,
        start: usize,
        len: usize,
    ) -> Self {
        let a = check::axis("narrow", self.shape(), axis);
        check::narrow(self.shape(), a, start, len);
        let (outer, size, inner) = split_at_axis(self.shape(), a);
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let from = (o * size + start) * inner;
            out.extend_from_slice(&self.data()[from..from + len * inner]);
        }
        let mut shape = self.shape().to_vec();
        shape[a] = len;
        Tensor::from_vec(out, &shape).expect("the narrowed shape holds the entries copied")
    }

    /// `parts` joined along `axis` (negative counts from the end): `torch.cat` on plain tensors.
    /// Panics, at the caller's line, unless they agree on every other axis.
    #[track_caller]
    pub fn concat(parts: &[Tensor<F>], axis: impl crate::Axis + std::fmt::Debug) -> Self {
        let Some(first) = parts.first() else {
            panic!("concat: needs at least one input");
        };
        let a = check::axis("concat", first.shape(), axis);
        let shapes: Vec<&[usize]> = parts.iter().map(|t| t.shape()).collect();
        let shape = check::concat(&shapes, a);
        let (outer, _, inner) = split_at_axis(&shape, a);
        let mut out = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for t in parts {
                let block = t.shape()[a] * inner;
                out.extend_from_slice(&t.data()[o * block..(o + 1) * block]);
            }
        }
        Tensor::from_vec(out, &shape).expect("the joined shape holds every part")
    }

    /// 1 where `self > other` and 0 elsewhere (a mask for `masked_fill` and `where_cond`),
    /// `other` a tensor broadcast with `self` or a scalar. NaN compares false.
    #[track_caller]
    pub fn gt(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("gt", self, &other.into_tensor(), |a, b| flag(a > b))
    }

    /// 1 where `self ≥ other`, else 0 (see [`gt`](Tensor::gt)).
    #[track_caller]
    pub fn ge(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("ge", self, &other.into_tensor(), |a, b| flag(a >= b))
    }

    /// 1 where `self < other`, else 0 (see [`gt`](Tensor::gt)).
    #[track_caller]
    pub fn lt(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("lt", self, &other.into_tensor(), |a, b| flag(a < b))
    }

    /// 1 where `self ≤ other`, else 0 (see [`gt`](Tensor::gt)).
    #[track_caller]
    pub fn le(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("le", self, &other.into_tensor(), |a, b| flag(a <= b))
    }

    /// 1 where `self == other` element by element, else 0 (PyTorch's `eq`; `==` on tensors
    /// compares whole tensors).
    #[track_caller]
    pub fn eq_elem(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("eq", self, &other.into_tensor(), |a, b| flag(a == b))
    }

    /// 1 where `self != other` element by element, else 0; NaN differs from everything.
    #[track_caller]
    pub fn ne_elem(&self, other: impl Operand<F>) -> Tensor<F> {
        zip("ne", self, &other.into_tensor(), |a, b| flag(a != b))
    }

    /// Whether `|self - other| ≤ atol + rtol·|other|` everywhere, the two broadcast together, as
    /// `torch.allclose` with its defaults (rtol 1e-5, atol 1e-8): a NaN is close to nothing, an
    /// infinity only to itself.
    #[track_caller]
    pub fn allclose(&self, other: &Tensor<F>) -> bool {
        self.allclose_with(other, 1e-5, 1e-8)
    }

    /// [`allclose`](Tensor::allclose) with tolerances of your choice.
    #[track_caller]
    pub fn allclose_with(&self, other: &Tensor<F>, rtol: f64, atol: f64) -> bool {
        let close = zip("allclose", self, other, |a, b| {
            let (a, b) = (a.to_f64(), b.to_f64());
            flag(
                a == b
                    || (a.is_finite() && b.is_finite() && (a - b).abs() <= atol + rtol * b.abs()),
            )
        });
        close.data().iter().all(|&c| c == F::ONE)
    }

    /// The largest element; NaN if any is NaN (as PyTorch). Panics on an empty tensor.
    #[track_caller]
    pub fn max(&self) -> F {
        self.extreme("max", true)
    }

    /// The smallest element; NaN if any is NaN (as PyTorch). Panics on an empty tensor.
    #[track_caller]
    pub fn min(&self) -> F {
        self.extreme("min", false)
    }

    #[track_caller]
    fn extreme(&self, op: &str, larger: bool) -> F {
        let Some(&first) = self.data().first() else {
            panic!("{op}: the tensor of shape {:?} is empty", self.shape());
        };
        self.data().iter().fold(
            first,
            |best, &v| if beats(v, best, larger) { v } else { best },
        )
    }

    /// The maximum along `axis` (negative counts from the end) and the index of the first
    /// maximum of each lane, as `torch.max(x, dim)`: values of the shape with `axis` removed (of
    /// size 1 when `keepdim`) and the indices in the same row-major order. A NaN is the maximum
    /// of its lane.
    #[track_caller]
    pub fn max_axis(
        &self,
        axis: impl crate::Axis + std::fmt::Debug,
        keepdim: bool,
    ) -> (Tensor<F>, Vec<usize>) {
        self.extremes("max_axis", axis, keepdim, true)
    }

    /// The minimum along `axis` and the index of the first minimum of each lane (see
    /// [`max_axis`](Tensor::max_axis)).
    #[track_caller]
    pub fn min_axis(
        &self,
        axis: impl crate::Axis + std::fmt::Debug,
        keepdim: bool,
    ) -> (Tensor<F>, Vec<usize>) {
        self.extremes("min_axis", axis, keepdim, false)
    }

    /// The index of the first maximum along `axis` for each lane, as `torch.argmax(x, dim)`, in
    /// row-major order of the other axes: a greedy decoder's choice per row is `argmax(-1)`.
    #[track_caller]
    pub fn argmax(&self, axis: impl crate::Axis + std::fmt::Debug) -> Vec<usize> {
        self.extremes("argmax", axis, false, true).1
    }

    /// The index of the first minimum along `axis` for each lane (see [`argmax`](Tensor::argmax)).
    #[track_caller]
    pub fn argmin(&self, axis: impl crate::Axis + std::fmt::Debug) -> Vec<usize> {
        self.extremes("argmin", axis, false, false).1
    }

    #[track_caller]
    fn extremes(
        &self,
        op: &str,
        axis: impl crate::Axis + std::fmt::Debug,
        keepdim: bool,
        larger: bool,
    ) -> (Tensor<F>, Vec<usize>) {
        let a = check::axis(op, self.shape(), axis);
        if self.shape()[a] == 0 {
            panic!("{op}: axis {a} of shape {:?} is empty", self.shape());
        }
        let (outer, len, inner) = split_at_axis(self.shape(), a);
        let x = self.data();
        let mut values = Vec::with_capacity(outer * inner);
        let mut indices = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * len + j) * inner + i];
                let best = (1..len).fold(0, |b, j| if beats(at(j), at(b), larger) { j } else { b });
                values.push(at(best));
                indices.push(best);
            }
        }
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[a] = 1;
        } else {
            shape.remove(a);
        }
        let values = Tensor::from_vec(values, &shape).expect("one value per lane");
        (values, indices)
    }

    /// The `k` largest elements along `axis` of each lane, largest first, and their indices, as
    /// `torch.topk(x, k, dim)`: both of the input's shape with `axis` of size k, the indices in
    /// the same row-major order. A NaN counts as the largest; equal values keep their order.
    #[track_caller]
    pub fn topk(
        &self,
        k: usize,
        axis: impl crate::Axis + std::fmt::Debug,
    ) -> (Tensor<F>, Vec<usize>) {
        let a = check::axis("topk", self.shape(), axis);
        let len = self.shape()[a];
        if k > len {
            panic!(
                "topk: k = {k} exceeds the {len} elements along axis {a} of shape {:?}",
                self.shape()
            );
        }
        let (outer, _, inner) = split_at_axis(self.shape(), a);
        let x = self.data();
        let mut shape = self.shape().to_vec();
        shape[a] = k;
        let mut values = vec![F::ZERO; outer * k * inner];
        let mut indices = vec![0; outer * k * inner];
        let mut order: Vec<usize> = Vec::with_capacity(len);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * len + j) * inner + i];
                order.clear();
                order.extend(0..len);
                order.sort_by(|&p, &q| {
                    let (u, v) = (at(p), at(q));
                    match (u.is_nan(), v.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Less,
                        (false, true) => std::cmp::Ordering::Greater,
                        (false, false) => v.partial_cmp(&u).expect("neither is NaN"),
                    }
                });
                for (r, &j) in order[..k].iter().enumerate() {
                    let dst = (o * k + r) * inner + i;
                    values[dst] = at(j);
                    indices[dst] = j;
                }
            }
        }
        let values = Tensor::from_vec(values, &shape).expect("k values per lane");
        (values, indices)
    }
}

macro_rules! tensor_op {
    ($trait:ident, $method:ident, $name:literal, $f:expr) => {
        impl<F: Float> $trait<&Tensor<F>> for &Tensor<F> {
            type Output = Tensor<F>;

            #[track_caller]
            fn $method(self, other: &Tensor<F>) -> Tensor<F> {
                zip($name, self, other, $f)
            }
        }

        impl<F: Float> $trait<Tensor<F>> for Tensor<F> {
            type Output = Tensor<F>;

            #[track_caller]
            fn $method(self, other: Tensor<F>) -> Tensor<F> {
                zip($name, &self, &other, $f)
            }
        }

        impl<F: Float> $trait<&Tensor<F>> for Tensor<F> {
            type Output = Tensor<F>;

            #[track_caller]
            fn $method(self, other: &Tensor<F>) -> Tensor<F> {
                zip($name, &self, other, $f)
            }
        }

        impl<F: Float> $trait<Tensor<F>> for &Tensor<F> {
            type Output = Tensor<F>;

            #[track_caller]
            fn $method(self, other: Tensor<F>) -> Tensor<F> {
                zip($name, self, &other, $f)
            }
        }

        impl<F: Float> $trait<F> for &Tensor<F> {
            type Output = Tensor<F>;

            fn $method(self, s: F) -> Tensor<F> {
                let f = $f;
                self.map(|a| f(a, s))
            }
        }

        impl<F: Float> $trait<F> for Tensor<F> {
            type Output = Tensor<F>;

            fn $method(self, s: F) -> Tensor<F> {
                let f = $f;
                self.map(|a| f(a, s))
            }
        }
    };
}

tensor_op!(Add, add, "add", |a: F, b: F| a + b);
tensor_op!(Sub, sub, "sub", |a: F, b: F| a - b);
tensor_op!(Mul, mul, "mul", |a: F, b: F| a * b);
tensor_op!(Div, div, "div", |a: F, b: F| a / b);

// A scalar on the left, one impl per concrete type (Rust's orphan rule refuses a generic one).
macro_rules! scalar_lhs {
    ($t:ty) => {
        scalar_lhs!($t, Add, add, |s: $t, a: $t| s + a);
        scalar_lhs!($t, Sub, sub, |s: $t, a: $t| s - a);
        scalar_lhs!($t, Mul, mul, |s: $t, a: $t| s * a);
        scalar_lhs!($t, Div, div, |s: $t, a: $t| s / a);
    };
    ($t:ty, $trait:ident, $method:ident, $f:expr) => {
        impl $trait<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;

            fn $method(self, t: &Tensor<$t>) -> Tensor<$t> {
                let f = $f;
                t.map(|a| f(self, a))
            }
        }

        impl $trait<Tensor<$t>> for $t {
            type Output = Tensor<$t>;

            fn $method(self, t: Tensor<$t>) -> Tensor<$t> {
                let f = $f;
                t.map(|a| f(self, a))
            }
        }
    };
}

scalar_lhs!(f32);
scalar_lhs!(f64);

impl<F: Float> Neg for &Tensor<F> {
    type Output = Tensor<F>;

    fn neg(self) -> Tensor<F> {
        self.map(|a| -a)
    }
}

impl<F: Float> Neg for Tensor<F> {
    type Output = Tensor<F>;

    fn neg(self) -> Tensor<F> {
        self.map(|a| -a)
    }
}
