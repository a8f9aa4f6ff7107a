//! Kernels that work along one axis or rearrange axes: reductions, softmax, windows (narrow and
//! concat), permute.

use crate::float::Float;
use crate::kernels::{activation, sum};
use crate::recycle;
use crate::shape::{for_each_broadcast, numel, split_at_axis, Shape};
use crate::tensor::zeroed;

/// Sum along `axis` over `divisor`: out[o, i] = Σ_j x[o, j, i] / divisor, accumulated in f64.
pub(crate) fn sum_axis<F: Float>(x: &[F], shape: &[usize], axis: usize, divisor: F) -> Vec<F> {
    let (outer, len, inner) = split_at_axis(shape, axis);
    let d = divisor.to_f64();
    let mut out = zeroed(outer * inner);
    if inner == 1 {
        for (o, dst) in out.iter_mut().enumerate() {
            *dst = F::from_f64(sum::sum(&x[o * len..(o + 1) * len]) / d);
        }
        return out;
    }
    for o in 0..outer {
        let block = &x[o * len * inner..(o + 1) * len * inner];
        let dst = &mut out[o * inner..(o + 1) * inner];
        sum::column_sums(
            block,
            inner,
            0..inner,
            |_, v| v,
            |i, a| dst[i] = F::from_f64(a / d),
        );
    }
    out
}

/// Max along `axis` and the flat input index of the first maximum of each lane.
pub(crate) fn max_axis<F: Float>(x: &[F], shape: &[usize], axis: usize) -> (Vec<F>, Vec<usize>) {
    let (outer, len, inner) = split_at_axis(shape, axis);
    let mut values = vec![F::neg_infinity(); outer * inner];
    let mut argmax = vec![0; outer * inner];
    for o in 0..outer {
        for i in 0..inner {
            let k = o * inner + i;
            for j in 0..len {
                let at = (o * len + j) * inner + i;
                let v = x[at];
                // A NaN wins and stays, so it propagates as in PyTorch.
                let nan = |f: F| f.to_f64().is_nan();
                if j == 0 || v > values[k] || (nan(v) && !nan(values[k])) {
                    values[k] = v;
                    argmax[k] = at;
                }
            }
        }
    }
    (values, argmax)
}

/// Calls `f` with each lane along `axis` gathered into a contiguous buffer, then scatters the
/// buffer back into `out`. Lanes along the last axis are used in place.
fn for_each_lane<F: Float>(
    x: &[F],
    shape: &[usize],
    axis: usize,
    out: &mut [F],
    mut f: impl FnMut(&[F], &mut [F]),
) {
    let (outer, len, inner) = split_at_axis(shape, axis);
    if inner == 1 {
        // (`max(1)`: an empty axis has no lanes, and then x is empty too.)
        let len = len.max(1);
        for (src, dst) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
            f(src, dst);
        }
        return;
    }
    let (mut src, mut dst) = (
        recycle::scratch(len, F::ZERO),
        recycle::scratch(len, F::ZERO),
    );
    for o in 0..outer {
        for i in 0..inner {
            let base = o * len * inner + i;
            for j in 0..len {
                src[j] = x[base + j * inner];
            }
            f(&src, &mut dst);
            for j in 0..len {
                out[base + j * inner] = dst[j];
            }
        }
    }
}

/// The lane's maximum m and ln Σ_j e^{x_j - m}, so that log Σ_j e^{x_j} = m + that. Kept apart
/// because `(x - m) - ln Σ` is exact where `x - (m + ln Σ)` loses the digits of a large m.
/// `buf`, as long as the lane, receives the e^{x_j - m} (when m is finite).
pub(crate) fn max_and_log_sum<F: Float>(lane: &[F], buf: &mut [F]) -> (F, F) {
    let m = lane_max(lane);
    if !m.is_finite() {
        return (m, F::ZERO);
    }
    exp_shifted(lane, m, buf);
    (m, F::from_f64(sum::sum(buf).ln()))
}

/// The largest of `x`, NaN if any is NaN (as `F::max` gives), -∞ for an empty lane. Sixteen
/// running maxima side by side, so the compiler keeps them in vector registers: one scalar chain
/// of `max` waits on each comparison in turn and was most of a cross-entropy's time.
fn lane_max<F: Float>(x: &[F]) -> F {
    const LANES: usize = 16;
    let mut acc = [F::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            // Not `a.max(v)`: this form compiles to vector compares and a blend. A NaN v is
            // taken, and stays: nothing compares greater than it.
            if v > *a || v.is_nan() {
                *a = v;
            }
        }
    }
    let m = rest.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    acc.iter().fold(m, |m, &v| m.max(v))
}

/// `out[j] = e^{x_j - shift}`, through the vectorised exp.
fn exp_shifted<F: Float>(x: &[F], shift: F, out: &mut [F]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v - shift;
    }
    activation::exp_in_place(out);
}

/// softmax along `axis`: y_j = e^{x_j - m} / Σ_k e^{x_k - m}, with m the lane's maximum.
pub(crate) fn softmax<F: Float>(x: &[F], shape: &[usize], axis: usize) -> Vec<F> {
    let mut out = zeroed(x.len());
    for_each_lane(x, shape, axis, &mut out, |src, dst| {
        let m = lane_max(src);
        exp_shifted(src, m, dst);
        let total = F::from_f64(sum::sum(dst));
        for d in dst.iter_mut() {
            *d /= total;
        }
    });
    out
}

/// log_softmax along `axis`: y_j = x_j - log Σ_k e^{x_k}.
pub(crate) fn log_softmax<F: Float>(x: &[F], shape: &[usize], axis: usize) -> Vec<F> {
    let mut out = zeroed(x.len());
    for_each_lane(x, shape, axis, &mut out, |src, dst| {
        let (m, log_sum) = max_and_log_sum(src, dst);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (s - m) - log_sum;
        }
    });
    out
}

/// Softmax backward, added into `gx`: gx_j += y_j (g_j - Σ_k g_k y_k).
pub(crate) fn softmax_backward<F: Float>(
    y: &[F],
    g: &[F],
    shape: &[usize],
    axis: usize,
    gx: &mut [F],
) {
    lane_backward(y, g, shape, axis, gx, |y, g, out| {
        let dot = F::from_f64(sum::dot(y, g));
        for j in 0..y.len() {
            out[j] = y[j] * (g[j] - dot);
        }
    });
}

/// log_softmax backward, added into `gx`: gx_j += g_j - e^{y_j} Σ_k g_k.
pub(crate) fn log_softmax_backward<F: Float>(
    y: &[F],
    g: &[F],
    shape: &[usize],
    axis: usize,
    gx: &mut [F],
) {
    lane_backward(y, g, shape, axis, gx, |y, g, out| {
        let total = F::from_f64(sum::sum(g));
        activation::exp(y, out);
        for j in 0..y.len() {
            out[j] = g[j] - out[j] * total;
        }
    });
}

/// Runs a per-lane backward rule `f(y, g, out)` along `axis` and adds `out` into `gx`.
fn lane_backward<F: Float>(
    y: &[F],
    g: &[F],
    shape: &[usize],
    axis: usize,
    gx: &mut [F],
    f: impl Fn(&[F], &[F], &mut [F]),
) {
    let (outer, len, inner) = split_at_axis(shape, axis);
    let mut ly = recycle::scratch(len, F::ZERO);
    let mut lg = recycle::scratch(len, F::ZERO);
    let mut lo = recycle::scratch(len, F::ZERO);
    for o in 0..outer {
        for i in 0..inner {
            let base = o * len * inner + i;
            for j in 0..len {
                ly[j] = y[base + j * inner];
                lg[j] = g[base + j * inner];
            }
            f(&ly, &lg, &mut lo);
            for j in 0..len {
                gx[base + j * inner] += lo[j];
            }
        }
    }
}

/// A range `start..start + len` along one axis of a larger tensor, as runs of contiguous memory.
///
/// check::narrow proved, without wrapping, that `start + len` is at most the axis's size, so
/// every run's bounds are at most the larger tensor's element count and cannot wrap.
pub(crate) struct Window {
    outer: usize,
    inner: usize,
    full: usize,
    start: usize,
    len: usize,
}

impl Window {
    /// The window `start..start + len` along `axis` of a tensor of shape `full_shape`.
    pub(crate) fn new(full_shape: &[usize], axis: usize, start: usize, len: usize) -> Self {
        let (outer, full, inner) = split_at_axis(full_shape, axis);
        Window {
            outer,
            inner,
            full,
            start,
            len,
        }
    }

    fn runs(&self) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
        let run = self.len * self.inner;
        (0..self.outer).map(move |o| {
            let big = (o * self.full + self.start) * self.inner;
            (big..big + run, o * run..(o + 1) * run)
        })
    }

    /// `small = full[window]`, or `small += full[window]` when accumulating.
    pub(crate) fn gather<F: Float>(&self, full: &[F], small: &mut [F], accumulate: bool) {
        for (b, s) in self.runs() {
            copy_or_add(&full[b], &mut small[s], accumulate);
        }
    }

    /// `full[window] = small`, or `full[window] += small` when accumulating.
    pub(crate) fn scatter<F: Float>(&self, small: &[F], full: &mut [F], accumulate: bool) {
        for (b, s) in self.runs() {
            copy_or_add(&small[s], &mut full[b], accumulate);
        }
    }
}

fn copy_or_add<F: Float>(src: &[F], dst: &mut [F], accumulate: bool) {
    if accumulate {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// Strides that read a tensor of shape `shape` in the axis order `perm`. (`step` ends at the
/// element count of a tensor's shape, which fits.)
pub(crate) fn permuted_strides(shape: &[usize], perm: &[usize]) -> Shape {
    let mut strides: Shape = smallvec::smallvec![0; shape.len()];
    let mut step = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = step;
        step *= shape[d];
    }
    perm.iter().map(|&p| strides[p]).collect()
}

/// The axes of `shape` reordered by `perm`: out[i] = x along perm[i].
pub(crate) fn permute<F: Float>(x: &[F], shape: &[usize], perm: &[usize]) -> (Shape, Vec<F>) {
    let out_shape: Shape = perm.iter().map(|&p| shape[p]).collect();
    let strides = permuted_strides(shape, perm);
    let mut out = zeroed(numel(shape));
    for_each_broadcast(&out_shape, [&strides], |i, [o]| out[i] = x[o]);
    (out_shape, out)
}

/// The permute backward: gx (input layout) += g (output layout, axes reordered by `perm`).
pub(crate) fn permute_backward<F: Float>(g: &[F], shape: &[usize], perm: &[usize], gx: &mut [F]) {
    let out_shape: Shape = perm.iter().map(|&p| shape[p]).collect();
    let strides = permuted_strides(shape, perm);
    for_each_broadcast(&out_shape, [&strides], |i, [o]| gx[o] += g[i]);
}

/// `dst[.., indices[k], ..] += src[.., k, ..]` along `axis`: `src` has `indices.len()` entries
/// along it (its shape `src_shape`), `dst` has `len`. An index given twice adds twice.
pub(crate) fn index_add<F: Float>(
    src: &[F],
    src_shape: &[usize],
    axis: usize,
    indices: &[usize],
    len: usize,
    dst: &mut [F],
) {
    let (outer, picked, inner) = split_at_axis(src_shape, axis);
    for o in 0..outer {
        for (k, &r) in indices.iter().enumerate() {
            let to = &mut dst[(o * len + r) * inner..][..inner];
            let from = &src[(o * picked + k) * inner..][..inner];
            to.iter_mut().zip(from).for_each(|(d, &s)| *d += s);
        }
    }
}

/// `dst[.., k, ..] += full[.., indices[k], ..]` along `axis`: an index_select added into `dst`.
pub(crate) fn index_select_add<F: Float>(
    full: &[F],
    full_shape: &[usize],
    axis: usize,
    indices: &[usize],
    dst: &mut [F],
) {
    let (outer, len, inner) = split_at_axis(full_shape, axis);
    let picked = indices.len();
    for o in 0..outer {
        for (k, &r) in indices.iter().enumerate() {
            let to = &mut dst[(o * picked + k) * inner..][..inner];
            let from = &full[(o * len + r) * inner..][..inner];
            to.iter_mut().zip(from).for_each(|(d, &s)| *d += s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lane_max;
    use crate::Float;

    /// The sixteen side-by-side maxima give the one-at-a-time fold's answer at every length
    /// around the vector width, wherever the largest value or a NaN sits, with -∞ mixed in.
    #[test]
    fn lane_max_equals_the_plain_fold() {
        let fold = |x: &[f32]| x.iter().fold(f32::NEG_INFINITY, |m, &v| Float::max(m, v));
        for len in 1..50 {
            for top in 0..len {
                let mut x: Vec<f32> = (0..len).map(|i| -((i * 7 % 11) as f32) - 1.0).collect();
                x[top] = 3.5;
                if len > 1 {
                    x[(top + 1) % len] = f32::NEG_INFINITY;
                }
                assert_eq!(lane_max(&x), 3.5, "length {len}, largest at {top}");
                assert_eq!(lane_max(&x), fold(&x));
                for nan in [top, (top + 3) % len] {
                    let mut y = x.clone();
                    y[nan] = f32::NAN;
                    assert!(lane_max(&y).is_nan(), "length {len}, NaN at {nan}");
                }
            }
        }
        assert_eq!(lane_max::<f64>(&[]), f64::NEG_INFINITY);
        assert_eq!(lane_max(&[f64::NEG_INFINITY; 20]), f64::NEG_INFINITY);
    }
}
