//! Shapes: the `Shape` type, axis arguments, and broadcasting arithmetic.

use smallvec::SmallVec;

/// The dimensions of a tensor, outermost first. Up to four dimensions live inline.
///
/// Every tensor's shape was checked when the tensor was made: its nonzero dimensions multiply to
/// at most `usize::MAX`. So any product of its dimensions fits, and strides, counts and offsets
/// inside one tensor are computed with plain arithmetic, which cannot wrap.
pub type Shape = SmallVec<[usize; 4]>;

/// Number of elements of a tensor with this shape (1 for a 0-d tensor).
///
/// Panics, rather than wrap, when no tensor can have the shape: when its nonzero dimensions
/// multiply past `usize::MAX`.
#[track_caller]
pub fn numel(shape: &[usize]) -> usize {
    match checked_numel(shape) {
        Some(n) => n,
        None => {
            panic!("numel: shape {shape:?} is too large: its dimensions multiply past usize::MAX")
        }
    }
}

/// Number of elements of a tensor with this shape, or `None` when no tensor can have it: when
/// its nonzero dimensions multiply past `usize::MAX`.
///
/// A zero-sized axis makes the count 0 but does not excuse the others: a kernel that works along
/// one axis multiplies the rest, so [0, 2³², 2³²] is refused as [2³², 2³²] is. That is what makes
/// every product of a valid shape's dimensions fit.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// An axis argument: a `usize`, or a signed integer where -1 is the last axis, as in PyTorch.
///
/// Every op that takes an axis takes one of these. An op that inserts an axis (`unsqueeze`,
/// `stack`) resolves it against ndim + 1 positions, so there -1 puts the new axis after the last.
pub trait Axis: Copy {
    /// The axis as an index into a shape of `ndim` dimensions, or `None` when out of range:
    /// `0..ndim`, or `-ndim..=-1` counted from the end.
    fn resolve(self, ndim: usize) -> Option<usize>;
}

impl Axis for usize {
    fn resolve(self, ndim: usize) -> Option<usize> {
        (self < ndim).then_some(self)
    }
}

impl Axis for isize {
    fn resolve(self, ndim: usize) -> Option<usize> {
        let n = ndim as isize;
        let a = if self < 0 { self + n } else { self };
        (0..n).contains(&a).then_some(a as usize)
    }
}

impl Axis for i32 {
    fn resolve(self, ndim: usize) -> Option<usize> {
        (self as isize).resolve(ndim)
    }
}

impl Axis for i64 {
    fn resolve(self, ndim: usize) -> Option<usize> {
        // An i64 beyond isize's range is out of range of any shape.
        isize::try_from(self).ok()?.resolve(ndim)
    }
}

/// The shape both operands broadcast to under NumPy rules, or `None` if they do not.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Shape> {
    let n = a.len().max(b.len());
    let mut out = Shape::with_capacity(n);
    for i in 0..n {
        let da = dim_from_end(a, n - 1 - i);
        let db = dim_from_end(b, n - 1 - i);
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    Some(out)
}

fn dim_from_end(shape: &[usize], from_end: usize) -> usize {
    if from_end < shape.len() {
        shape[shape.len() - 1 - from_end]
    } else {
        1
    }
}

/// Strides that read a tensor of shape `input` as if it had shape `out` (which it broadcasts
/// to): contiguous strides, with 0 on every broadcast axis. (`step` is a product of `input`'s
/// dimensions, a tensor's shape: it fits.)
pub(crate) fn broadcast_strides(input: &[usize], out: &[usize]) -> Shape {
    let offset = out.len() - input.len();
    let mut strides: Shape = smallvec::smallvec![0; out.len()];
    let mut step = 1;
    for i in (0..input.len()).rev() {
        if input[i] != 1 {
            strides[offset + i] = step;
        }
        step *= input[i];
    }
    strides
}

/// True when `perm` swaps the last two axes and keeps the others: a transpose a matmul can read
/// by stride.
pub(crate) fn swaps_last_two(perm: &[usize]) -> bool {
    let n = perm.len();
    n >= 2 && perm[n - 2] == n - 1 && perm[n - 1] == n - 2 && (0..n - 2).all(|d| perm[d] == d)
}

/// Splits a shape around `axis` into (outer, len, inner) element counts, so that element
/// (o, j, i) sits at `(o * len + j) * inner + i`. For a tensor's shape, every such position is
/// below its element count and cannot wrap.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

/// Calls `f(out_index, offsets)` for every element of `out`, in row-major order, where
/// `offsets[k]` is that element's position in operand k read with `strides[k]`.
///
/// The offsets cannot wrap: with `out` non-empty, each operand is a non-empty tensor whose buffer
/// holds at most `isize::MAX` elements, and an offset, even one axis past its end on the way to
/// the next element, stays below twice that.
pub(crate) fn for_each_broadcast<const N: usize>(
    out: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N]),
) {
    let total = numel(out);
    if total == 0 {
        return;
    }
    let nd = out.len();
    if nd == 0 {
        f(0, [0; N]);
        return;
    }
    let inner = out[nd - 1];
    let inner_strides: [usize; N] = std::array::from_fn(|k| strides[k][nd - 1]);
    let mut index: Shape = smallvec::smallvec![0; nd];
    let mut base = [0usize; N];
    let mut i = 0;
    while i < total {
        let mut off = base;
        for _ in 0..inner {
            f(i, off);
            i += 1;
            for k in 0..N {
                off[k] += inner_strides[k];
            }
        }
        // Advance the odometer over the outer axes, moving each operand's base offset with it.
        for d in (0..nd - 1).rev() {
            index[d] += 1;
            for k in 0..N {
                base[k] += strides[k][d];
            }
            if index[d] < out[d] {
                break;
            }
            for k in 0..N {
                base[k] -= strides[k][d] * out[d];
            }
            index[d] = 0;
        }
    }
}
