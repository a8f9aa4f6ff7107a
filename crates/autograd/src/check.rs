//! The shape-check layer: every shape misuse panics here, at the caller's line, naming the op and
//! both shapes.
//!
//! Each function is `#[track_caller]`, as is every public op that calls it, so the panic location
//! is the line of user code that misused the op.

use std::fmt;

use smallvec::SmallVec;

use crate::shape::{broadcast_shape, checked_numel, Axis, Shape};

/// The element count of a shape a tensor is to be made with. A shape whose dimensions multiply
/// past `usize::MAX` would wrap into a small count that the kernels then trust (see
/// [`checked_numel`]), so it panics here instead.
#[track_caller]
pub(crate) fn numel(op: &str, shape: &[usize]) -> usize {
    match checked_numel(shape) {
        Some(n) => n,
        None => {
            panic!("{op}: shape {shape:?} is too large: its dimensions multiply past usize::MAX")
        }
    }
}

/// A shape an op computed from its operands, which must be able to be a tensor's too.
#[track_caller]
fn result_fits(op: &str, out: &[usize], operands: fmt::Arguments<'_>) {
    if checked_numel(out).is_none() {
        panic!(
            "{op}: the result's shape {out:?} is too large (its dimensions multiply past \
             usize::MAX): {operands}"
        );
    }
}

/// The broadcast shape of two operands of an element-wise op.
#[track_caller]
pub(crate) fn broadcast(op: &str, lhs: &[usize], rhs: &[usize]) -> Shape {
    let Some(out) = broadcast_shape(lhs, rhs) else {
        panic!("{op}: shapes cannot be broadcast together: lhs {lhs:?} vs rhs {rhs:?}");
    };
    // [2³², 1, 0] and [1, 2³², 0] are both valid; what they broadcast to is not.
    result_fits(op, &out, format_args!("lhs {lhs:?} vs rhs {rhs:?}"));
    out
}

/// An axis resolved against a shape.
#[track_caller]
pub(crate) fn axis(op: &str, shape: &[usize], axis: impl Axis + std::fmt::Debug) -> usize {
    match axis.resolve(shape.len()) {
        Some(a) => a,
        None => panic!("{op}: axis {axis:?} out of range for shape {shape:?}"),
    }
}

/// An axis at which an op inserts a new one (`unsqueeze`, `stack`): one of the ndim + 1 gaps,
/// `0..=ndim`, or `-ndim - 1..=-1` counted from the end (-1 is after the last axis).
#[track_caller]
pub(crate) fn new_axis(op: &str, shape: &[usize], axis: impl Axis + std::fmt::Debug) -> usize {
    match axis.resolve(shape.len() + 1) {
        Some(a) => a,
        None => panic!(
            "{op}: axis {axis:?} out of range for inserting an axis into shape {shape:?} \
             (expected {}..={})",
            -(shape.len() as i128) - 1,
            shape.len()
        ),
    }
}

/// The output shape of `lhs · rhs` under PyTorch's matmul rules: a 1-D lhs is a row and a 1-D
/// rhs a column, each removed from the result again; the axes before the last two are batch
/// axes, and they broadcast.
#[track_caller]
pub(crate) fn matmul_broadcast(lhs: &[usize], rhs: &[usize]) -> Shape {
    if lhs.is_empty() || rhs.is_empty() {
        panic!("matmul: operands must be at least 1-D: lhs {lhs:?} vs rhs {rhs:?}");
    }
    // The inner size is lhs's last axis and rhs's first of its last two (its only one if 1-D).
    if lhs[lhs.len() - 1] != rhs[rhs.len().saturating_sub(2)] {
        panic!("matmul: inner dimensions differ: lhs {lhs:?} vs rhs {rhs:?}");
    }
    let batch = |s: &[usize]| s.len().saturating_sub(2);
    let Some(mut out) = broadcast_shape(&lhs[..batch(lhs)], &rhs[..batch(rhs)]) else {
        panic!("matmul: batch dimensions cannot be broadcast together: lhs {lhs:?} vs rhs {rhs:?}");
    };
    if lhs.len() >= 2 {
        out.push(lhs[lhs.len() - 2]);
    }
    if rhs.len() >= 2 {
        out.push(rhs[rhs.len() - 1]);
    }
    result_fits("matmul", &out, format_args!("lhs {lhs:?} vs rhs {rhs:?}"));
    out
}

/// The output shape of `op(a) · op(b)` for 2-D or batched 3-D operands, where `op` transposes the
/// last two axes when the flag is set.
#[track_caller]
pub(crate) fn matmul(lhs: &[usize], ta: bool, rhs: &[usize], tb: bool) -> Shape {
    let shown = |s: &[usize], t: bool| -> Shape {
        let mut s = Shape::from_slice(s);
        let n = s.len();
        if t && n >= 2 {
            s.swap(n - 2, n - 1);
        }
        s
    };
    let (l, r) = (shown(lhs, ta), shown(rhs, tb));
    if !(2..=3).contains(&l.len()) || !(2..=3).contains(&r.len()) {
        panic!("matmul: operands must be 2-D or 3-D: lhs {l:?} vs rhs {r:?}");
    }
    let (m, k1) = (l[l.len() - 2], l[l.len() - 1]);
    let (k2, n) = (r[r.len() - 2], r[r.len() - 1]);
    if k1 != k2 {
        panic!("matmul: inner dimensions differ: lhs {l:?} vs rhs {r:?}");
    }
    let out = match (l.len(), r.len()) {
        (2, 2) => Shape::from_slice(&[m, n]),
        (3, 3) if l[0] != r[0] => panic!("matmul: batch sizes differ: lhs {l:?} vs rhs {r:?}"),
        (3, _) => Shape::from_slice(&[l[0], m, n]),
        _ => Shape::from_slice(&[r[0], m, n]),
    };
    // With k = 0, [m, 0]·[0, n] holds no elements on either side, yet m·n can overflow.
    result_fits("matmul", &out, format_args!("lhs {l:?} vs rhs {r:?}"));
    out
}

/// A shape that broadcasts to `to` without growing it (`broadcast_to`, `expand`).
#[track_caller]
pub(crate) fn broadcast_to(op: &str, from: &[usize], to: &[usize]) {
    numel(op, to);
    if broadcast_shape(from, to).as_deref() != Some(to) {
        panic!("{op}: shape {from:?} cannot be broadcast to {to:?}");
    }
}

/// The shape `expand` asks for with `sizes`, -1 resolved to the size of the axis it keeps; -1
/// is refused in a new leading axis, which has no size to keep, as in PyTorch.
#[track_caller]
pub(crate) fn expand_sizes(from: &[usize], sizes: &[isize]) -> Shape {
    let Some(lead) = sizes.len().checked_sub(from.len()) else {
        panic!(
            "expand: {} sizes cannot broadcast shape {from:?}, which has {} axes",
            sizes.len(),
            from.len()
        );
    };
    // A loop, not a closure: a panic inside a closure would not point at the caller's line.
    let mut shape = Shape::with_capacity(sizes.len());
    for (d, &size) in sizes.iter().enumerate() {
        shape.push(match (size, d.checked_sub(lead)) {
            (-1, Some(kept)) => from[kept],
            (-1, None) => panic!(
                "expand: -1 is not allowed in the new leading axis {d}: sizes {sizes:?} for shape {from:?}"
            ),
            _ => match usize::try_from(size) {
                Ok(size) => size,
                Err(_) => panic!(
                    "expand: size {size} at axis {d} is neither a size nor -1: sizes {sizes:?} for shape {from:?}"
                ),
            },
        });
    }
    shape
}

/// A value that must broadcast to `out` without growing it (the addend of `addmm`).
#[track_caller]
pub(crate) fn broadcasts_to(op: &str, shape: &[usize], out: &[usize]) {
    if broadcast_shape(shape, out).as_deref() != Some(out) {
        panic!("{op}: the addend {shape:?} does not broadcast to the product's shape {out:?}");
    }
}

/// Gates [B, n·H] of a recurrent cell and its state [B, H].
#[track_caller]
pub(crate) fn gates(op: &str, gates: &[usize], n: usize, state: &[usize]) {
    let width = state.get(1).and_then(|&h| h.checked_mul(n));
    if state.len() != 2 || gates.len() != 2 || Some(gates[1]) != width || gates[0] != state[0] {
        panic!("{op}: expected gates [B, {n}·H] and a state [B, H]: gates {gates:?} vs state {state:?}");
    }
}

/// Two shapes that must be equal.
#[track_caller]
pub(crate) fn same(op: &str, lhs: &[usize], rhs: &[usize]) {
    if lhs != rhs {
        panic!("{op}: shapes differ: lhs {lhs:?} vs rhs {rhs:?}");
    }
}

/// A new shape with as many elements as the old one.
#[track_caller]
pub(crate) fn reshape(from: &[usize], to: &[usize]) {
    let (n_to, n_from) = (numel("reshape", to), numel("reshape", from));
    if n_from != n_to {
        panic!("reshape: cannot view {from:?} ({n_from} elements) as {to:?} ({n_to} elements)");
    }
}

/// A permutation of the axes of `shape` (negative ones counting from the end), resolved.
#[track_caller]
pub(crate) fn permutation<A: Axis + fmt::Debug>(shape: &[usize], perm: &[A]) -> Shape {
    let mut seen: SmallVec<[bool; 8]> = smallvec::smallvec![false; shape.len()];
    let resolved: Option<Shape> = perm
        .iter()
        .map(|&p| p.resolve(shape.len()))
        .collect::<Option<Shape>>()
        .filter(|r| r.iter().all(|&p| !std::mem::replace(&mut seen[p], true)));
    match resolved {
        Some(r) if r.len() == shape.len() => r,
        _ => {
            panic!(
                "permute: {perm:?} is not a permutation of the {} axes of shape {shape:?}",
                shape.len()
            );
        }
    }
}

/// A range `start..start + len` inside axis `axis` of `shape`.
#[track_caller]
pub(crate) fn narrow(shape: &[usize], axis: usize, start: usize, len: usize) {
    if start.checked_add(len).is_none_or(|end| end > shape[axis]) {
        // In u128, so that an end past usize::MAX shows as asked rather than wrapped.
        panic!(
            "narrow: range {start}..{} out of bounds along axis {axis} of shape {shape:?}",
            start as u128 + len as u128
        );
    }
}

/// Shapes that agree everywhere but along `axis`, for concat.
#[track_caller]
pub(crate) fn concat(shapes: &[&[usize]], axis: usize) -> Shape {
    let Some(first) = shapes.first() else {
        panic!("concat: needs at least one input");
    };
    let mut out = Shape::from_slice(first);
    for s in &shapes[1..] {
        let agrees = s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
        if !agrees {
            panic!("concat: shapes differ outside axis {axis}: {first:?} vs {s:?}");
        }
        out[axis] = match out[axis].checked_add(s[axis]) {
            Some(n) => n,
            None => {
                panic!("concat: the sizes along axis {axis} add past usize::MAX: {out:?} and {s:?}")
            }
        };
    }
    result_fits(
        "concat",
        &out,
        format_args!("joining {} inputs along axis {axis}", shapes.len()),
    );
    out
}

/// Indices into axis `axis` of `shape` (rows, along the first).
#[track_caller]
pub(crate) fn indices(op: &str, shape: &[usize], axis: usize, indices: &[usize]) {
    let what = |n: usize| match axis {
        0 => format!("{n} rows of shape {shape:?}"),
        _ => format!("{n} entries along axis {axis} of shape {shape:?}"),
    };
    if let Some(&bad) = indices.iter().find(|&&i| i >= shape[axis]) {
        panic!("{op}: index {bad} out of range for {}", what(shape[axis]));
    }
    let mut out = Shape::from_slice(shape);
    out[axis] = indices.len();
    result_fits(op, &out, format_args!("{}", what(indices.len())));
}

/// The class axis of logits [C] (one unbatched sample: axis 0), [N, C] or [N, C, d1, ...]
/// (axis 1); 0-d logits have none. `targets` is shown beside them.
#[track_caller]
pub(crate) fn class_axis(op: &str, logits: &[usize], targets: &[usize]) -> usize {
    match logits.len() {
        0 => panic!(
            "{op}: expected logits [C], [N, C] or [N, C, d1, ...]: logits {logits:?} vs targets {targets:?}"
        ),
        1 => 0,
        _ => 1,
    }
}

/// Class weights [C] for logits [C], [N, C] or [N, C, d1, ...].
#[track_caller]
pub(crate) fn class_weights(op: &str, logits: &[usize], weight: &[usize]) {
    let axis = logits.len().min(2) - 1;
    if weight != [logits[axis]] {
        panic!("{op}: expected class weights [C]: logits {logits:?} vs weight {weight:?}");
    }
}

/// Probability targets of the logits' shape, one per logit; returns the class axis.
#[track_caller]
pub(crate) fn prob_targets(op: &str, logits: &[usize], targets: &[usize]) -> usize {
    let axis = class_axis(op, logits, targets);
    if targets != logits {
        panic!(
            "{op}: expected probability targets of the logits' shape: logits {logits:?} vs targets {targets:?}"
        );
    }
    axis
}

/// Logits [C], [N, C] or [N, C, d1, ...] against one integer target per position (the logits'
/// shape without C, flattened: 1 unbatched, N, or N·d1·...), each a class in 0..C or the ignore
/// index. Returns the class axis.
#[track_caller]
pub(crate) fn class_targets(
    op: &str,
    logits: &[usize],
    targets: &[i64],
    ignore_index: i64,
) -> usize {
    let axis = class_axis(op, logits, &[targets.len()]);
    let positions: Shape = (0..logits.len())
        .filter(|&d| d != axis)
        .map(|d| logits[d])
        .collect();
    if checked_numel(&positions) != Some(targets.len()) {
        let form = match logits.len() {
            1 => "unbatched logits [C] and one target",
            2 => "logits [N, C] and N targets",
            _ => "logits [N, C, d1, ...] and N·d1·... targets",
        };
        panic!(
            "{op}: expected {form}: logits {logits:?} vs targets [{}]",
            targets.len()
        );
    }
    let classes = i64::try_from(logits[axis]).unwrap_or(i64::MAX);
    if let Some((i, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t != ignore_index && !(0..classes).contains(&t))
    {
        let at = match logits.len() {
            1 => String::new(),
            2 => format!(" at row {i}"),
            _ => format!(" at {:?}", unravel(i, &positions)),
        };
        panic!("{op}: target {t}{at} out of range for {classes} classes (logits {logits:?})");
    }
    axis
}

/// The index into `shape` of the `i`-th element in row-major order.
fn unravel(mut i: usize, shape: &[usize]) -> Shape {
    let mut index: Shape = smallvec::smallvec![0; shape.len()];
    for (slot, &size) in index.iter_mut().zip(shape).rev() {
        *slot = i % size;
        i /= size;
    }
    index
}
