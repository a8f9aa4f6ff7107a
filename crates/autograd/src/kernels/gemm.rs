//! The general GEMM: batched and strided, on matrixmultiply. Every matrix product that the packed
//! kernel does not take runs here; [`matmul`](super::matmul) chooses. Thin products (a side of at
//! most four: a vector times a matrix, an outer product) skip matrixmultiply, whose packing of
//! both operands would cost as much as the product, and run as plain loops ([`direct`]).
//!
//! Operands are read through strides, so a transposed operand is never copied: transposing a
//! view swaps its row and column strides. Every raw pointer offset here is bounded by
//! [`View::assert_fits`], whose arithmetic is checked: a view that reaches past `usize::MAX`
//! panics instead of wrapping into one that seems to fit.

use crate::float::Float;
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::{simd, Simd};
use crate::kernels::{pool, typed};

/// How a (possibly batched) matrix lies in a slice: element (b, i, j) sits at
/// `b·bs + i·rs + j·cs`. A batch stride of 0 reuses one matrix for every batch entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    bs: usize,
}

impl View {
    /// A row-major tensor of shape [r, c] or [batch, r, c], transposed in its last two axes when
    /// `trans` is set. (r·c is a product of a tensor's dimensions: it fits.)
    pub(crate) fn of(shape: &[usize], trans: bool) -> Self {
        let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let bs = if shape.len() == 3 { r * c } else { 0 };
        let v = View {
            rows: r,
            cols: c,
            rs: c,
            cs: 1,
            bs,
        };
        if trans {
            v.t()
        } else {
            v
        }
    }

    /// The transpose, read by stride.
    pub(crate) fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            bs: self.bs,
        }
    }

    /// How many elements a slice needs to hold `batch` entries of this view: one past the last
    /// element addressed, or `None` when that is past `usize::MAX`.
    fn extent(&self, batch: usize) -> Option<usize> {
        if batch == 0 || self.rows == 0 || self.cols == 0 {
            return Some(0);
        }
        let last_entry = (batch - 1).checked_mul(self.bs)?;
        let last_row = (self.rows - 1).checked_mul(self.rs)?;
        let last_col = (self.cols - 1).checked_mul(self.cs)?;
        last_entry
            .checked_add(last_row)?
            .checked_add(last_col)?
            .checked_add(1)
    }

    /// Panics unless `batch` entries of this view lie inside a slice of `len` elements. Then any
    /// offset `e·bs + i·rs + j·cs` with e < batch, i < rows, j < cols is below `len`, and so is
    /// each of its terms. A stride of an axis longer than 1 is then below `len`, at most
    /// `isize::MAX` for a slice, so its `as isize` is exact; one of an axis of size 1 is only
    /// ever multiplied by 0.
    #[track_caller]
    pub(crate) fn assert_fits(&self, batch: usize, len: usize) {
        match self.extent(batch) {
            Some(n) => assert!(
                n <= len,
                "gemm: view {self:?} x{batch} exceeds a buffer of {len}"
            ),
            None => panic!("gemm: view {self:?} x{batch} reaches past usize::MAX"),
        }
    }

    /// `batch` entries of this view read as one matrix, of batch·rows rows (`by_rows`) or
    /// batch·cols columns, when each entry starts where the previous one's rows (columns) end;
    /// `None` when they do not, or when that matrix would have more than `usize::MAX` of them.
    fn stacked(self, batch: usize, by_rows: bool) -> Option<Self> {
        let (n, stride) = if by_rows {
            (self.rows, self.rs)
        } else {
            (self.cols, self.cs)
        };
        if Some(self.bs) != n.checked_mul(stride) {
            return None;
        }
        let n = n.checked_mul(batch)?;
        Some(if by_rows {
            View { rows: n, ..self }
        } else {
            View { cols: n, ..self }
        })
    }
}

/// Batches that are rows of one larger matrix, as a single product: a shared B with A and C
/// stacked by rows (an input projection over all time steps), or a shared C with A and B stacked
/// along the inner dimension (that projection's weight gradient).
fn fold_batches(batch: usize, va: View, vb: View, vc: View) -> Option<(View, View, View)> {
    if batch <= 1 {
        return None;
    }
    if vb.bs == 0 {
        if let (Some(a), Some(c)) = (va.stacked(batch, true), vc.stacked(batch, true)) {
            return Some((a, vb, c));
        }
    }
    if vc.bs == 0 {
        if let (Some(a), Some(b)) = (va.stacked(batch, false), vb.stacked(batch, true)) {
            return Some((a, b, vc));
        }
    }
    None
}

/// The flops of an m×k by k×n product, saturating: it only chooses a path, and must not wrap
/// into a small count.
fn flops(m: usize, k: usize, n: usize) -> usize {
    m.saturating_mul(k).saturating_mul(n).saturating_mul(2)
}

/// `C_b ← A_b · B_b + beta · C_b` for each of `batch` entries. When C's batch stride is 0 the
/// products of all entries are summed into one C (a weight gradient over a batch).
///
/// Batches that are rows of one larger matrix are folded into a single GEMM call
/// ([`fold_batches`]).
pub(crate) fn gemm<F: Float>(
    mut batch: usize,
    a: (&[F], View),
    b: (&[F], View),
    c: (&mut [F], View),
    beta: F,
) {
    let (a, mut va) = a;
    let (b, mut vb) = b;
    let (c, mut vc) = c;
    assert!(va.rows == vc.rows && vb.cols == vc.cols && va.cols == vb.rows);
    if batch == 0 {
        // No entries. A C shared by all of them (batch stride 0) is their empty sum, beta·C;
        // any other C has no elements.
        if vc.bs == 0 {
            vc.assert_fits(1, c.len());
            scale_by_beta(c, vc, beta);
        }
        return;
    }
    if let Some(folded) = fold_batches(batch, va, vb, vc) {
        (va, vb, vc) = folded;
        batch = 1;
    }
    va.assert_fits(batch, a.len());
    vb.assert_fits(batch, b.len());
    vc.assert_fits(batch, c.len());
    let (m, k, n) = (va.rows, va.cols, vc.cols);
    if m == 0 || n == 0 {
        return;
    }
    if batch == 1 && k > 0 && flops(m, k, n) >= PARALLEL_FLOPS {
        return gemm_parallel(a, va, b, vb, c, vc, beta, pool::threads_now());
    }
    for e in 0..batch {
        // A C shared by all entries accumulates: only the first entry applies beta.
        let beta_e = if vc.bs == 0 && e > 0 { F::ONE } else { beta };
        if k == 0 {
            scale_by_beta(&mut c[e * vc.bs..], vc, beta_e);
            continue;
        }
        if thin(m, k, n) {
            // SAFETY: as for `strided` below.
            unsafe {
                direct(
                    m,
                    k,
                    n,
                    Strided(a.as_ptr().add(e * va.bs), va.rs, va.cs),
                    Strided(b.as_ptr().add(e * vb.bs), vb.rs, vb.cs),
                    beta_e,
                    c.as_mut_ptr().add(e * vc.bs),
                    (vc.rs, vc.cs),
                )
            };
            continue;
        }
        // SAFETY: assert_fits checked, without wrapping, that every view over every batch entry
        // stays inside its slice, so each offset `e·bs` and every element the GEMM reads or
        // writes from there is in bounds; C is a distinct `&mut` slice, so it aliases neither A
        // nor B.
        unsafe {
            strided(
                m,
                k,
                n,
                F::ONE,
                a.as_ptr().add(e * va.bs),
                va.rs as isize,
                va.cs as isize,
                b.as_ptr().add(e * vb.bs),
                vb.rs as isize,
                vb.cs as isize,
                beta_e,
                c.as_mut_ptr().add(e * vc.bs),
                vc.rs as isize,
                vc.cs as isize,
            );
        }
    }
}

/// An empty sum: C ← beta·C over the rows and columns of `vc`, where beta 0 means C is not read
/// (it may hold anything, NaN included, from a recycled buffer).
pub(super) fn scale_by_beta<F: Float>(c: &mut [F], vc: View, beta: F) {
    for i in 0..vc.rows {
        for j in 0..vc.cols {
            let v = &mut c[i * vc.rs + j * vc.cs];
            *v = if beta == F::ZERO { F::ZERO } else { *v * beta };
        }
    }
}

/// C ← D over the rows and the `vc.cols` columns of `vc` (C row-major), D's rows `rs` apart (0:
/// one row for all): the addend of an `addmm`, where the product is then added onto C or there
/// is none (an empty inner dimension).
pub(super) fn copy_rows<F: Float>(c: &mut [F], vc: View, d: &[F], rs: usize) {
    let n = vc.cols;
    for r in 0..vc.rows {
        c[r * vc.rs..][..n].copy_from_slice(&d[r * rs..][..n]);
    }
}

/// A side of the product this thin or thinner (rows of A, columns of B, or the inner size) makes
/// packing cost as much as the product: an attention step's `[1, W]·[W, H]` per lane, a
/// matrix-vector product, an outer product of two vectors.
const THIN: usize = 4;

/// True when [`direct`] computes the product: a side of at most [`THIN`], and too small to split
/// across the cores.
fn thin(m: usize, k: usize, n: usize) -> bool {
    m.min(k).min(n) <= THIN && flops(m, k, n) < PARALLEL_FLOPS
}

/// A read-only operand: its first element, row stride and column stride.
#[derive(Clone, Copy)]
struct Strided<F>(*const F, usize, usize);

/// `C ← A·B + beta·C` without packing either operand, for a [`thin`] product. Each element of C
/// is summed over k in order (the dot products in eight running sums), and the loops run along
/// whichever side of the operands is contiguous, so that the compiler vectorises them:
/// - rows of B and C contiguous: C's row i gains A[i, p] times row p of B, for each p;
/// - columns of A and C contiguous: the same on the transposed product, Cᵀ = Bᵀ·Aᵀ;
/// - rows of A and columns of B contiguous: each element is a dot product over k;
/// - otherwise, element by element through the strides.
///
/// The loops run compiled for AVX2 when [`simd`] allows it: eight f32 lanes a vector instead of
/// SSE2's four. Products and sums stay separate instructions there (Rust does not fuse them), in
/// the same order, so both paths give the same bits.
///
/// beta 0 means C is not read (it may hold anything, NaN included, from a recycled buffer).
///
/// # Safety
/// Every operand with its strides must address valid memory for its dimensions (A m×k, B k×n,
/// C m×n), and C must not alias A or B.
#[allow(clippy::too_many_arguments)]
unsafe fn direct<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<F>,
    b: Strided<F>,
    beta: F,
    c: *mut F,
    csr: (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if simd() >= Simd::Avx2 {
        // SAFETY: the caller's contract, and the CPU has the features the copy was compiled for.
        return unsafe { direct_avx2(m, k, n, a, b, beta, c, csr) };
    }
    // SAFETY: the caller's contract.
    unsafe { direct_loops(m, k, n, a, b, beta, c, csr) }
}

/// [`direct_loops`] compiled for AVX2 and FMA.
///
/// # Safety
/// As [`direct`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_avx2<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<F>,
    b: Strided<F>,
    beta: F,
    c: *mut F,
    csr: (usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { direct_loops(m, k, n, a, b, beta, c, csr) }
}

/// The loops of [`direct`], inlined into each of its copies (a call out of the AVX2 copy would
/// run without AVX2).
///
/// # Safety
/// As [`direct`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_loops<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<F>,
    b: Strided<F>,
    beta: F,
    c: *mut F,
    (rsc, csc): (usize, usize),
) {
    let wide = |len: usize, unit: usize| len >= 8 && unit == 1;
    // Columns of A and C contiguous: compute Cᵀ = Bᵀ·Aᵀ, whose rows are. Swapped here rather than
    // by calling `direct` again, which would leave the AVX2 copy.
    let rows_contiguous = wide(n, b.2) && csc == 1;
    let (m, n, a, b, rsc, csc) = if !rows_contiguous && wide(m, a.1) && rsc == 1 {
        (
            n,
            m,
            Strided(b.0, b.2, b.1),
            Strided(a.0, a.2, a.1),
            csc,
            rsc,
        )
    } else {
        (m, n, a, b, rsc, csc)
    };
    // SAFETY (every block below): each offset is i·rs + j·cs for i, j inside the operand's
    // dimensions, which the caller guarantees to lie in valid memory; the slices made from C's
    // rows (or columns) are its elements alone, and C aliases neither operand.
    unsafe {
        if wide(n, b.2) && csc == 1 {
            for i in 0..m {
                let row = std::slice::from_raw_parts_mut(c.add(i * rsc), n);
                let a_at = |p: usize| *a.0.add(i * a.1 + p * a.2);
                let b_row = |p: usize| std::slice::from_raw_parts(b.0.add(p * b.1), n);
                start_from(row, beta);
                // Four rows of B per pass over C's row, added one after another as the plain
                // loop would: a quarter of the loads and stores of C.
                let mut p = 0;
                while p + 4 <= k {
                    let x = [0, 1, 2, 3].map(|q| a_at(p + q));
                    let w = row
                        .iter_mut()
                        .zip(b_row(p))
                        .zip(b_row(p + 1))
                        .zip(b_row(p + 2).iter().zip(b_row(p + 3)));
                    for (((y, &w0), &w1), (&w2, &w3)) in w {
                        *y = (((*y + x[0] * w0) + x[1] * w1) + x[2] * w2) + x[3] * w3;
                    }
                    p += 4;
                }
                for p in p..k {
                    let x = a_at(p);
                    for (y, &w) in row.iter_mut().zip(b_row(p)) {
                        *y += x * w;
                    }
                }
            }
        } else if a.2 == 1 && b.1 == 1 {
            for i in 0..m {
                let a_row = std::slice::from_raw_parts(a.0.add(i * a.1), k);
                for j in 0..n {
                    let b_col = std::slice::from_raw_parts(b.0.add(j * b.2), k);
                    let y = &mut *c.add(i * rsc + j * csc);
                    *y = dot(a_row, b_col) + if beta == F::ZERO { F::ZERO } else { beta * *y };
                }
            }
        } else {
            for i in 0..m {
                for j in 0..n {
                    let mut sum = F::ZERO;
                    for p in 0..k {
                        sum += *a.0.add(i * a.1 + p * a.2) * *b.0.add(p * b.1 + j * b.2);
                    }
                    let y = &mut *c.add(i * rsc + j * csc);
                    *y = sum + if beta == F::ZERO { F::ZERO } else { beta * *y };
                }
            }
        }
    }
}

/// A row of C before its products are added: beta·C, or zeros when beta is 0.
#[inline(always)]
fn start_from<F: Float>(row: &mut [F], beta: F) {
    if beta == F::ZERO {
        row.fill(F::ZERO);
    } else if beta != F::ONE {
        row.iter_mut().for_each(|y| *y *= beta);
    }
}

/// Σ x_p·y_p in eight running sums (lanes p mod 8), added pairwise at the end: an order the
/// compiler keeps whatever vectors it uses, so the sum does not depend on the CPU.
#[inline(always)]
fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    let mut lanes = [F::ZERO; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (x8, y8) in xs.zip(ys) {
        for l in 0..8 {
            lanes[l] += x8[l] * y8[l];
        }
    }
    for (l, (&u, &v)) in x_rest.iter().zip(y_rest).enumerate() {
        lanes[l] += u * v;
    }
    let fours = [0, 1, 2, 3].map(|l| lanes[l] + lanes[l + 4]);
    (fours[0] + fours[2]) + (fours[1] + fours[3])
}

/// matrixmultiply's GEMM for `F`, sgemm or dgemm: `C ← alpha·A·B + beta·C` on strided matrices,
/// A m×k, B k×n and C m×n, element (i, j) of each at `ptr + i·rs + j·cs`.
///
/// # Safety
/// Every pointer with its strides must address valid memory for the given dimensions, and C
/// must not alias A or B.
#[allow(clippy::too_many_arguments)]
unsafe fn strided<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: *const F,
    rsa: isize,
    csa: isize,
    b: *const F,
    rsb: isize,
    csb: isize,
    beta: F,
    c: *mut F,
    rsc: isize,
    csc: isize,
) {
    let f32s = typed::value::<F, f32>(alpha).zip(typed::value::<F, f32>(beta));
    let f64s = typed::value::<F, f64>(alpha).zip(typed::value::<F, f64>(beta));
    // SAFETY: the caller upholds the contract above; each branch runs only when F is its type,
    // so the pointers are reinterpreted as themselves.
    unsafe {
        if let Some((alpha, beta)) = f32s {
            let (a, b, c) = (a.cast(), b.cast(), c.cast());
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        } else if let Some((alpha, beta)) = f64s {
            let (a, b, c) = (a.cast(), b.cast(), c.cast());
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        } else {
            unreachable!("Float is sealed to f32 and f64")
        }
    }
}

/// Bands a parallel product is cut into per thread. More (2 or 4) were measured to balance a core
/// shared with another process no better (a worker taken off its core holds its band for the
/// other process's whole time slice, whatever the band's size) and cost 3-10% on a quiet machine.
pub(crate) const BANDS_PER_THREAD: usize = 1;

/// Products of at least this many flops are split across the cores; below it the hand-off to a
/// worker (a few µs) costs more than it saves.
pub(crate) const PARALLEL_FLOPS: usize = 1 << 21;

/// One product split into bands of C's rows (or of its columns, when C is wider than tall, so
/// that each thread packs only its share of the larger operand), `threads` times
/// [`BANDS_PER_THREAD`] of them, taken by whichever thread is free. Each element of C is still
/// one band's full sum over k, so the result does not depend on the number of threads or on who
/// ran which band.
#[allow(clippy::too_many_arguments)]
fn gemm_parallel<F: Float>(
    a: &[F],
    va: View,
    b: &[F],
    vb: View,
    c: &mut [F],
    vc: View,
    beta: F,
    threads: usize,
) {
    let by_rows = vc.rows >= vc.cols;
    let len = if by_rows { vc.rows } else { vc.cols };
    if threads < 2 || len < 8 * threads {
        return gemm_one(a, va, b, vb, c, vc, beta);
    }
    // Bands of whole 8-row (or column) groups, so the kernels' edges do not multiply.
    let groups = len.div_ceil(8);
    let parts = (threads * BANDS_PER_THREAD).min(groups);
    let band = groups.div_ceil(parts) * 8;
    let parts = len.div_ceil(band);
    let c_ptr = SendPtr(c.as_mut_ptr());
    pool::run(parts, &|p| {
        let (lo, hi) = ((p * band).min(len), ((p + 1) * band).min(len));
        if lo < hi {
            // SAFETY: bands [lo, hi) are disjoint rows (or columns) of C, so no two threads
            // write the same element; C outlives `run`, which returns when every band is done.
            unsafe { gemm_band(a, va, b, vb, c_ptr, vc, beta, by_rows, lo, hi) }
        }
    });
}

/// A raw pointer to C that may cross to another thread; each thread writes its own band.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<F>(pub(crate) *mut F);

// SAFETY: only used for disjoint bands of one product while `pool::run` waits for them.
unsafe impl<F> Send for SendPtr<F> {}
// SAFETY: as above; each band is written by one thread.
unsafe impl<F> Sync for SendPtr<F> {}

/// C[band] ← A[band]·B (rows) or A·B[band] (columns), + beta·C[band].
///
/// # Safety
/// `c` with `vc` addresses valid memory, and no other thread touches this band.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_band<F: Float>(
    a: &[F],
    va: View,
    b: &[F],
    vb: View,
    c: SendPtr<F>,
    vc: View,
    beta: F,
    by_rows: bool,
    lo: usize,
    hi: usize,
) {
    let (m, n, k) = if by_rows {
        (hi - lo, vc.cols, va.cols)
    } else {
        (vc.rows, hi - lo, va.cols)
    };
    let (a_off, b_off, c_off) = if by_rows {
        (lo * va.rs, 0, lo * vc.rs)
    } else {
        (0, lo * vb.cs, lo * vc.cs)
    };
    // SAFETY: the caller guarantees the band is valid and exclusive; lo < rows (or cols), so
    // each offset is at most a term of the last element's offset, which the caller of gemm
    // checked with assert_fits to lie inside its slice without wrapping.
    unsafe {
        strided(
            m,
            k,
            n,
            F::ONE,
            a.as_ptr().add(a_off),
            va.rs as isize,
            va.cs as isize,
            b.as_ptr().add(b_off),
            vb.rs as isize,
            vb.cs as isize,
            beta,
            c.0.add(c_off),
            vc.rs as isize,
            vc.cs as isize,
        )
    }
}

/// The whole product on this thread.
fn gemm_one<F: Float>(a: &[F], va: View, b: &[F], vb: View, c: &mut [F], vc: View, beta: F) {
    // SAFETY: one band covering all of C, on this thread only.
    unsafe {
        gemm_band(
            a,
            va,
            b,
            vb,
            SendPtr(c.as_mut_ptr()),
            vc,
            beta,
            true,
            0,
            vc.rows,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{for_each_simd, Simd};

    /// 2³²: a view of [2³², 2³²] spans 2⁶⁴ elements, which wraps to 0 in a `usize`.
    const BIG: usize = 1 << 32;

    #[test]
    #[should_panic(expected = "reaches past usize::MAX")]
    fn a_view_whose_extent_wraps_does_not_fit_an_empty_buffer() {
        View::of(&[BIG, BIG], false).assert_fits(1, 0);
    }

    #[test]
    #[should_panic(expected = "reaches past usize::MAX")]
    fn gemm_refuses_views_whose_extent_wraps() {
        let v = View::of(&[BIG, BIG], false);
        gemm::<f32>(1, (&[], v), (&[], v), (&mut [], v), 0.0);
    }

    /// A product cut into bands for 2, 3 or 4 threads (of rows when C is taller, of columns when
    /// wider, with a transposed operand and beta) equals it in one band, to the bit: each element
    /// is one band's full sum over k, whatever the cut.
    #[test]
    fn bands_of_a_product_equal_it_whole() {
        let fill = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 7.0 - 1.5)
                .collect()
        };
        for (m, k, n, trans_b) in [(70, 33, 50, false), (20, 45, 90, true), (64, 300, 17, true)] {
            let (a, b) = (fill(m * k, 1), fill(k * n, 2));
            let b_shape = if trans_b { [n, k] } else { [k, n] };
            let (va, vb, vc) = (
                View::of(&[m, k], false),
                View::of(&b_shape, trans_b),
                View::of(&[m, n], false),
            );
            let mut whole = fill(m * n, 3);
            gemm_one(&a, va, &b, vb, &mut whole, vc, 0.5);
            for threads in [2, 3, 4] {
                let mut banded = fill(m * n, 3);
                gemm_parallel(&a, va, &b, vb, &mut banded, vc, 0.5, threads);
                assert_eq!(banded, whole, "{m}×{k}·{k}×{n}, {threads} threads");
            }
        }
    }

    /// Thin products (a side of at most `THIN`), computed without packing, equal the definition
    /// in f64 for every layout of A, B and C, with beta 0 (over NaN: C is not read), 1 and 0.5,
    /// batched, and summed into one C over a batch, on each path the CPU allows; the AVX2 path
    /// gives the scalar path's bits. Each shape is checked to be thin, so that a change of `thin`
    /// cannot leave the path untested.
    #[test]
    fn thin_products_equal_the_definition_in_every_layout() {
        let mut runs = Vec::new();
        for_each_simd(
            "thin_products_equal_the_definition_in_every_layout",
            &[Simd::Avx2, Simd::Scalar],
            |s| runs.push((s, thin_products_against_the_definition())),
        );
        let (scalar, want) = runs.pop().expect("the scalar path always runs");
        assert_eq!(scalar, Simd::Scalar);
        for (s, got) in &runs {
            for (at, (got, want)) in got.iter().zip(&want).enumerate() {
                let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(want), "product {at} on {s:?}");
            }
        }
    }

    /// Every thin product of the test above, each checked against the definition; their results
    /// in order.
    fn thin_products_against_the_definition() -> Vec<Vec<f32>> {
        let mut results = Vec::new();
        let value = |i: usize, seed: usize| ((i * 37 + seed * 11) % 23) as f64 / 7.0 - 1.5;
        let shapes = [
            (1, 32, 256),
            (1, 256, 32),
            (32, 1, 256),
            (512, 64, 1),
            (64, 512, 1),
            (3, 5, 4),
            (4, 9, 13),
            (13, 4, 9),
            (9, 13, 2),
            (1, 1, 1),
            (2, 3, 1),
        ];
        for (m, k, n) in shapes {
            assert!(thin(m, k, n), "{m}×{k}·{k}×{n} is not thin");
            for (trans_a, trans_b, trans_c) in (0..8).map(|l| (l & 1 > 0, l & 2 > 0, l & 4 > 0)) {
                for (batch, shared_c) in [(1, false), (3, false), (3, true)] {
                    for beta in [0.0f32, 1.0, 0.5] {
                        let dims = |r: usize, c: usize, t: bool| match t {
                            true => [batch, c, r],
                            false => [batch, r, c],
                        };
                        let (sa, sb) = (dims(m, k, trans_a), dims(k, n, trans_b));
                        let (va, vb) = (View::of(&sa, trans_a), View::of(&sb, trans_b));
                        let mut vc = View::of(&dims(m, n, trans_c), trans_c);
                        let c_len = if shared_c { m * n } else { batch * m * n };
                        if shared_c {
                            vc.bs = 0;
                        }
                        let a: Vec<f64> = (0..batch * m * k).map(|i| value(i, 1)).collect();
                        let b: Vec<f64> = (0..batch * k * n).map(|i| value(i, 2)).collect();
                        let c0: Vec<f64> = (0..c_len).map(|i| value(i, 3)).collect();
                        // The definition, in f64 from the same f32 values.
                        let round = |x: &[f64]| -> Vec<f64> {
                            x.iter().map(|&v| v as f32 as f64).collect()
                        };
                        let (a, b, c0) = (round(&a), round(&b), round(&c0));
                        let mut want = c0.clone();
                        for e in 0..batch {
                            for i in 0..m {
                                for j in 0..n {
                                    let sum: f64 = (0..k)
                                        .map(|p| {
                                            a[e * va.bs + i * va.rs + p * va.cs]
                                                * b[e * vb.bs + p * vb.rs + j * vb.cs]
                                        })
                                        .sum();
                                    let y = &mut want[e * vc.bs + i * vc.rs + j * vc.cs];
                                    let first = !shared_c || e == 0;
                                    *y = sum + if first { beta as f64 * *y } else { *y };
                                }
                            }
                        }
                        let f32s =
                            |x: &[f64]| -> Vec<f32> { x.iter().map(|&v| v as f32).collect() };
                        let mut c: Vec<f32> = match beta {
                            0.0 => vec![f32::NAN; c_len],
                            _ => f32s(&c0),
                        };
                        gemm(batch, (&f32s(&a), va), (&f32s(&b), vb), (&mut c, vc), beta);
                        let at = format!(
                            "{m}×{k}·{k}×{n}, transposed {trans_a}/{trans_b}/{trans_c}, \
                             batch {batch}, shared C {shared_c}, beta {beta}"
                        );
                        for (got, want) in c.iter().zip(&want) {
                            let bound = 1e-5 * (1.0 + (k * batch) as f64);
                            assert!((*got as f64 - want).abs() <= bound, "{at}: {got} vs {want}");
                        }
                        results.push(c);
                    }
                }
            }
        }
        assert_eq!(results.len(), shapes.len() * 8 * 3 * 3);
        results
    }

    /// A shared B with A and C stacked by rows is folded into one product of batch·m rows; that
    /// product must not wrap to 0 rows and skip the check.
    #[test]
    #[should_panic(expected = "reaches past usize::MAX")]
    fn folding_batches_into_rows_does_not_wrap() {
        let stacked = View::of(&[BIG, BIG, 1], false);
        let shared = View::of(&[1, 1], false);
        gemm::<f32>(
            BIG,
            (&[], stacked),
            (&[1.0], shared),
            (&mut [], stacked),
            0.0,
        );
    }
}
