//! Sums that keep f32's reductions as exact as f64's: every one accumulates in f64.
//!
//! Adding 10^6 values one after another in f32 drifts by about 1e-5 relative, which is three
//! orders more than PyTorch's pairwise f32 sums. An f64 accumulator is exact to about 1e-16 per
//! addition and costs a widening conversion per element; for f64 itself it is the plain sum.

use std::ops::Range;

use crate::float::Float;
use crate::kernels::activation::avx2_copy;
use crate::kernels::pool;

/// Independent accumulators, so that the additions pipeline (and vectorise) instead of waiting on
/// each other.
const LANES: usize = 8;

/// Σ f(x_i), accumulated in f64.
#[inline]
pub(crate) fn sum_map<F: Float>(x: &[F], f: impl Fn(F) -> F) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v).to_f64();
        }
    }
    let mut total = acc.iter().sum::<f64>();
    for &v in tail {
        total += f(v).to_f64();
    }
    total
}

/// Σ x_i, accumulated in f64.
pub(crate) fn sum<F: Float>(x: &[F]) -> f64 {
    sum_map(x, |v| v)
}

/// Σ a_i·b_i, accumulated in f64 (each product rounded in `F` first, as PyTorch's f32 does).
pub(crate) fn dot<F: Float>(a: &[F], b: &[F]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += (xa[k] * xb[k]).to_f64();
        }
    }
    let mut total = acc.iter().sum::<f64>();
    for (&x, &y) in ta.iter().zip(tb) {
        total += (x * y).to_f64();
    }
    total
}

/// Columns summed at a time: their f64 accumulators live on the stack, and each row is read in
/// runs of this many contiguous elements.
const BLOCK: usize = 64;

/// For each column j of `src` (rows `n` wide), `out(j, Σ_r f(r·n + j, src[r·n + j]))`, the sum
/// taken in f64 in row order; no buffer is allocated.
#[inline(always)]
pub(crate) fn column_sums<F: Float>(
    src: &[F],
    n: usize,
    cols: Range<usize>,
    f: impl Fn(usize, F) -> F,
    mut out: impl FnMut(usize, f64),
) {
    let rows = src.len().checked_div(n).unwrap_or(0);
    for start in cols.clone().step_by(BLOCK) {
        let width = BLOCK.min(cols.end - start);
        let mut acc = [0.0f64; BLOCK];
        if width == BLOCK {
            // A whole block: a fixed trip count, which the compiler unrolls and vectorises.
            for r in 0..rows {
                let at = r * n + start;
                let row: &[F; BLOCK] = src[at..at + BLOCK]
                    .try_into()
                    .expect("a block is BLOCK wide");
                for j in 0..BLOCK {
                    acc[j] += f(at + j, row[j]).to_f64();
                }
            }
        } else {
            for r in 0..rows {
                let at = r * n + start;
                for (j, (a, &v)) in acc[..width]
                    .iter_mut()
                    .zip(&src[at..at + width])
                    .enumerate()
                {
                    *a += f(at + j, v).to_f64();
                }
            }
        }
        for (j, &a) in acc[..width].iter().enumerate() {
            out(start + j, a);
        }
    }
}

/// `dst[j] += Σ_r f(r·n + j, src[r·n + j])` over the rows of `src` (each `n = dst.len()` wide),
/// accumulated in f64: a bias's gradient over every row of a batch. Whole blocks of columns go
/// to the threads in bands; each column is still summed over the rows in order, so the result
/// does not depend on the split.
pub(crate) fn add_rows<F: Float>(src: &[F], dst: &mut [F], f: impl Fn(usize, F) -> F + Sync) {
    let n = dst.len();
    let rows = src.len().checked_div(n).unwrap_or(0);
    let blocks = n / BLOCK;
    let (head, tail) = dst.split_at_mut(blocks * BLOCK);
    pool::row_bands(blocks, rows * BLOCK, [head], |first, [band]| {
        add_columns(src, n, first * BLOCK, band, &f);
    });
    add_columns(src, n, blocks * BLOCK, tail, &f);
}

avx2_copy! {
    /// `dst[j] += Σ_r f(r·n + lo + j, src[r·n + lo + j])`: columns `lo..lo + dst.len()` of
    /// [`add_rows`].
    fn add_columns<F: Float>(src: &[F], n: usize, lo: usize, dst: &mut [F], f: impl Fn(usize, F) -> F) {
        column_sums(src, n, lo..lo + dst.len(), f, |j, a| {
            dst[j - lo] = F::from_f64(dst[j - lo].to_f64() + a)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{for_each_simd, Simd};

    /// Every path gives each column's sum in f64, row by row, for whole blocks of columns and
    /// the narrower last one alike, on one thread and (the larger case) in bands of columns.
    /// (The path is forced on this thread only: a band a worker takes runs the widest allowed,
    /// which `REWIND_SIMD` caps in CI's reruns.)
    #[test]
    fn add_rows_is_the_row_order_f64_sum_on_every_path() {
        for (rows, n) in [(37, 2 * BLOCK + 5), (300, 3 * BLOCK + 5)] {
            add_rows_case(rows, n);
        }
    }

    fn add_rows_case(rows: usize, n: usize) {
        let src: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
            .collect();
        let start: Vec<f32> = (0..n).map(|j| j as f32 * 0.25).collect();
        let want: Vec<f32> = (0..n)
            .map(|j| {
                let sum = (0..rows).fold(0.0f64, |a, r| a + (2.0 * src[r * n + j]) as f64);
                (start[j] as f64 + sum) as f32
            })
            .collect();
        for_each_simd(
            "add_rows_is_the_row_order_f64_sum_on_every_path",
            &[Simd::Avx2, Simd::Scalar],
            |s| {
                let mut dst = start.clone();
                add_rows(&src, &mut dst, |_, v| 2.0 * v);
                for (j, (&got, &want)) in dst.iter().zip(&want).enumerate() {
                    assert_eq!(got.to_bits(), want.to_bits(), "column {j} on {s:?}");
                }
            },
        );
    }
}
