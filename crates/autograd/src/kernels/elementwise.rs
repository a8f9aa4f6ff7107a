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
        let (sa, sb) = (
            broadcast_strides(a.shape(), out),
            broadcast_strides(b.shape(), out),
        );
        match rows_of(out, [&sa[..], &sb[..]]) {
            // Both operands' rows run along the last axis (a [B, 1, A] query against [B, W, A]
            // keys): whole rows at a time, each output element written once.
            Some((inner, outer, [ra, rb])) => {
                let mut data = recycle::with_capacity(crate::shape::numel(out));
                for_each_broadcast(outer, [ra, rb], |_, [ia, ib]| {
                    let (p, q) = (&x[ia..ia + inner], &y[ib..ib + inner]);
                    data.extend(p.iter().zip(q).map(|(&p, &q)| f(p, q)));
                });
                data
            }
            None => {
                let mut data = zeroed(crate::shape::numel(out));
                for_each_broadcast(out, [&sa, &sb], |i, [ia, ib]| data[i] = f(x[ia], y[ib]));
                data
            }
        }
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
        let s = broadcast_strides(a.shape(), out);
        match rows_of(out, [&s[..]]) {
            Some((inner, outer, [ra])) => {
                let mut data = recycle::with_capacity(crate::shape::numel(out));
                for_each_broadcast(outer, [ra], |_, [ia]| {
                    data.extend_from_slice(&x[ia..ia + inner])
                });
                data
            }
            None => {
                let mut data = zeroed(crate::shape::numel(out));
                for_each_broadcast(out, [&s], |i, [ia]| data[i] = x[ia]);
                data
            }
        }
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
        // Row by row where `dst`'s rows run along the last axis: the same sums in the same order.
        match rows_of(out, [&s[..]]) {
            Some((inner, outer, [rd])) => for_each_broadcast(outer, [rd], |r, [id]| {
                let first = r * inner;
                let rows = acc[id..id + inner].iter_mut().zip(&g[first..first + inner]);
                for (i, (a, &gi)) in (first..).zip(rows) {
                    *a += f(i, gi).to_f64();
                }
            }),
            None => for_each_broadcast(out, [&s], |i, [id]| acc[id] += f(i, g[i]).to_f64()),
        }
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

/// When every operand's last axis is whole (stride 1) and longer than 1: the length of that
/// axis, the outer axes of `out`, and each operand's strides along them. Each position of the
/// outer axes is then a contiguous run of `inner` elements in every operand and in the output.
#[allow(clippy::type_complexity)]
fn rows_of<'s, const N: usize>(
    out: &'s [usize],
    strides: [&'s [usize]; N],
) -> Option<(usize, &'s [usize], [&'s [usize]; N])> {
    let (&inner, outer) = out.split_last()?;
    let axis = outer.len();
    let whole = inner > 1 && strides.iter().all(|s| s[axis] == 1);
    whole.then(|| (inner, outer, strides.map(|s| &s[..axis])))
}

/// True when `shape` is `out` with some leading axes removed or set to 1: each element is reused
/// for every index of those leading axes, and the rest lines up with `out`'s trailing axes.
fn is_trailing(shape: &[usize], out: &[usize]) -> bool {
    let first = shape.iter().position(|&d| d != 1).unwrap_or(shape.len());
    let rest = &shape[first..];
    rest.len() <= out.len() && out[out.len() - rest.len()..] == *rest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element `i` of `out` (row-major) read from an operand of `shape` broadcast to it: the
    /// definition, index by index, that the row-at-a-time paths must agree with.
    fn source(shape: &[usize], out: &[usize], mut i: usize) -> usize {
        let mut at = vec![0; out.len()];
        for d in (0..out.len()).rev() {
            at[d] = i % out[d];
            i /= out[d];
        }
        let offset = out.len() - shape.len();
        shape.iter().enumerate().fold(0, |pos, (d, &n)| {
            pos * n + if n == 1 { 0 } else { at[offset + d] }
        })
    }

    fn counting(shape: &[usize], from: f64) -> Tensor<f64> {
        let n = crate::shape::numel(shape);
        let data = (0..n).map(|i| from + i as f64 * 0.5).collect();
        Tensor::from_vec(data, shape).unwrap()
    }

    /// Shapes whose broadcast keeps the last axis whole in every operand (the rows path), and
    /// ones that do not (the element path), for `binary`, `expand` and `accumulate_reduced`.
    #[test]
    fn broadcasting_by_rows_matches_the_definition() {
        let cases: [(&[usize], &[usize]); 6] = [
            (&[2, 1, 3], &[2, 4, 3]),
            (&[2, 4, 3], &[2, 1, 3]),
            (&[3, 1, 2, 5], &[1, 4, 1, 5]),
            (&[2, 1, 1], &[2, 4, 3]),
            (&[2, 4, 1], &[1, 4, 3]),
            (&[5], &[3, 1, 1]),
        ];
        for (sa, sb) in cases {
            let (a, b) = (counting(sa, 1.0), counting(sb, -7.0));
            let out = crate::shape::broadcast_shape(sa, sb).unwrap();
            let got = binary(&a, &b, &out, |p, q| p * 3.0 - q);
            for (i, &v) in got.data().iter().enumerate() {
                let (p, q) = (a.data()[source(sa, &out, i)], b.data()[source(sb, &out, i)]);
                assert_eq!(v, p * 3.0 - q, "{sa:?} with {sb:?}, element {i}");
            }
            let expanded = expand(&a, &out);
            for (i, &v) in expanded.iter().enumerate() {
                assert_eq!(v, a.data()[source(sa, &out, i)], "{sa:?} to {out:?}, {i}");
            }
            let g = counting(&out, 0.25);
            let mut dst = vec![1.0; a.numel()];
            accumulate_reduced(&mut dst, sa, &out, g.data(), |i, gi| gi * i as f64);
            let mut want = vec![0.0f64; a.numel()];
            for (i, &gi) in g.data().iter().enumerate() {
                want[source(sa, &out, i)] += gi * i as f64;
            }
            for (k, (&d, w)) in dst.iter().zip(want).enumerate() {
                assert_eq!(d, 1.0 + w, "the sum into {sa:?} from {out:?}, element {k}");
            }
        }
    }
}
