//! Element-wise kernels with NumPy broadcasting, and the sums over broadcast axes that their
//! gradients need.

use crate::float::Float;
use crate::kernels::sum;
use crate::recycle;
use crate::shape::{broadcast_strides, for_each_broadcast, Shape};
use crate::tensor::zeroed;
use crate::tensor::Tensor;

/// `f(a, b)` element by element, with `a` and `b` broadcast to `out`.
pub(crate) fn binary<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    out: &[usize],
    f: impl Fn(F, F) -> F,
) -> Tensor<F> {
    let (x, y) = (a.data(), b.data());
    let data = if a.shape() == b.shape() {
        let mut data = recycle::with_capacity(x.len());
        data.extend(x.iter().zip(y).map(|(&p, &q)| f(p, q)));
        data
    } else if b.numel() == 1 {
        let q = y[0];
        let mut data = recycle::with_capacity(x.len());
        data.extend(x.iter().map(|&p| f(p, q)));
        data
    } else if a.shape() == out && is_trailing(b.shape(), out) {
        // A bias-like operand repeated over the leading axes: one pass over whole rows.
        let mut data = recycle::with_capacity(x.len());
        // (`max(1)`: an empty operand repeated is an empty result, and x is empty too.)
        for row in x.chunks_exact(y.len().max(1)) {
            data.extend(row.iter().zip(y).map(|(&p, &q)| f(p, q)));
        }
        data
    } else {
        let mut data = zeroed(crate::shape::numel(out));
        let (sa, sb) = (
            broadcast_strides(a.shape(), out),
            broadcast_strides(b.shape(), out),
        );
        for_each_broadcast(out, [&sa, &sb], |i, [ia, ib]| data[i] = f(x[ia], y[ib]));
        data
    };
    Tensor::new_unchecked(Shape::from_slice(out), data)
}

/// `a` broadcast to `out`, as a new buffer.
pub(crate) fn expand<F: Float>(a: &Tensor<F>, out: &[usize]) -> Vec<F> {
    let x = a.data();
    if a.shape() == out {
        recycle::copied(x)
    } else if is_trailing(a.shape(), out) && !x.is_empty() {
        let n = crate::shape::numel(out);
        let mut data = recycle::with_capacity(n);
        while data.len() < n {
            data.extend_from_slice(x);
        }
        data
    } else {
        let mut data = zeroed(crate::shape::numel(out));
        let s = broadcast_strides(a.shape(), out);
        for_each_broadcast(out, [&s], |i, [ia]| data[i] = x[ia]);
        data
    }
}

/// `dst += Σ f(i, g[i])` where `dst` has shape `dst_shape`, which broadcasts to `out`, the shape of
/// `g`; the sum runs over the broadcast axes. `f` also receives the output index `i`, so it can
/// read the other operand. Sums over broadcast axes accumulate in f64.
pub(crate) fn accumulate_reduced<F: Float>(
    dst: &mut [F],
    dst_shape: &[usize],
    out: &[usize],
    g: &[F],
    f: impl Fn(usize, F) -> F + Sync,
) {
    if dst_shape == out {
        for (i, (d, &gi)) in dst.iter_mut().zip(g).enumerate() {
            *d += f(i, gi);
        }
    } else if is_trailing(dst_shape, out) && !dst.is_empty() {
        sum::add_rows(g, dst, f);
    } else {
        let s = broadcast_strides(dst_shape, out);
        let mut acc = vec![0.0f64; dst.len()];
        for_each_broadcast(out, [&s], |i, [id]| acc[id] += f(i, g[i]).to_f64());
        for (d, a) in dst.iter_mut().zip(acc) {
            *d = F::from_f64(d.to_f64() + a);
        }
    }
}

/// The position in `operand` (of shape `shape`, broadcast to `out`) of every output element.
pub(crate) fn broadcast_index(shape: &[usize], out: &[usize]) -> Option<Vec<usize>> {
    if shape == out {
        return None;
    }
    let s = broadcast_strides(shape, out);
    let mut idx = vec![0; crate::shape::numel(out)];
    for_each_broadcast(out, [&s], |i, [o]| idx[i] = o);
    Some(idx)
}

/// True when `shape` is `out` with some leading axes removed or set to 1: each element is reused
/// for every index of those leading axes, and the rest lines up with `out`'s trailing axes.
fn is_trailing(shape: &[usize], out: &[usize]) -> bool {
    let first = shape.iter().position(|&d| d != 1).unwrap_or(shape.len());
    let rest = &shape[first..];
    rest.len() <= out.len() && out[out.len() - rest.len()..] == *rest
}
