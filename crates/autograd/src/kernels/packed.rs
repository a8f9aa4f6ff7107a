//! A GEMM for few rows against a weight packed once: `C ← A·B + beta·C`, or `C ← A·B + D` with
//! D read in place, with A of M ≤ 64 rows (a batch of hidden states) and B a weight read by
//! every time step.
//!
//! A general GEMM packs both operands on every call; for an RNN's per-step product the weight is
//! by far the larger one, and packing it again each step costs about a third of the product. Here
//! B is packed once per tape into panels of 32 columns (k-major, zero-padded), and a kernel reads
//! A in place: with AVX-512, 8 rows × 32 columns at a time; with AVX2 and FMA, 6 rows × 16 columns
//! (each half of a panel in turn), the most accumulators its 16 registers hold beside a row of B.
//! In f64 the same panels are read a slice at a time: 16 columns (two 8-lane vectors) 8 rows at a
//! time with AVX-512, 8 columns 6 rows at a time with AVX2 and FMA.
//! Each element of C is one sum over k in order, whatever the split across threads.

use crate::float::Float;
use crate::kernels::cpu::{simd, Simd};
use crate::kernels::gemm::View;
use crate::kernels::{pool, typed};
use crate::recycle;
use crate::tensor::zeroed;

/// Columns per panel: two 16-lane vectors.
const NR: usize = 32;
/// Rows per kernel call: AVX-512, AVX2.
const MR: usize = 8;
const MR_AVX2: usize = 6;
/// f64: columns of a panel per kernel call and rows per call, AVX-512 and AVX2. A block of KC
/// steps of a 16-column slice is KC·16·8 bytes = 32 KiB, as f32's.
const SLICE_F64: usize = 16;
const MR_F64: usize = 8;
const SLICE_F64_AVX2: usize = 8;
const MR_F64_AVX2: usize = 6;
/// Steps of k per block: a block of a panel is KC·NR·4 bytes = 32 KiB, held in L1 (48 KiB on
/// the AVX-512 machines measured; the AVX2 kernel reads half of each row, 16 KiB). One block
/// covers H = 256 whole: against 128, the per-step products ran 3–8% faster
/// (`cargo bench --bench matmul`, per_step_x_wT_param).
const KC: usize = 256;
/// The most rows of A this path takes; larger products amortise packing themselves.
pub(crate) const MAX_ROWS: usize = 64;

/// B [k, n] in panels of `NR` columns: panel j holds B[p, j·NR + c] at `(j·k + p)·NR + c`.
pub(crate) struct Packed<F: Float> {
    k: usize,
    n: usize,
    data: Vec<F>,
}

impl<F: Float> Drop for Packed<F> {
    fn drop(&mut self) {
        recycle::give_back_buffer(std::mem::take(&mut self.data));
    }
}

impl<F: Float> Packed<F> {
    /// Packs the matrix `b` lies in as `vb`.
    #[track_caller]
    pub(crate) fn new(b: &[F], vb: View) -> Self {
        assert_fits("B", vb, b.len());
        let (k, n) = (vb.rows, vb.cols);
        let panels = n.div_ceil(NR);
        let per_panel = k.checked_mul(NR);
        let len = per_panel.and_then(|p| p.checked_mul(panels));
        let (Some(per_panel), Some(len)) = (per_panel, len) else {
            panic!("packed matmul: B [{k}, {n}] packs into more than usize::MAX elements");
        };
        let mut data = zeroed(len);
        for j in 0..panels {
            let panel = &mut data[j * per_panel..][..per_panel];
            let cols = NR.min(n - j * NR);
            // In bounds and without overflow: every (p, column) lies inside the checked view.
            let at = |p: usize, c: usize| b[p * vb.rs + (j * NR + c) * vb.cs];
            // Read along whichever axis of B is contiguous.
            if vb.cs == 1 {
                for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                    row[..cols]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(c, d)| *d = at(p, c));
                }
            } else {
                for c in 0..cols {
                    (0..k).for_each(|p| panel[p * NR + c] = at(p, c));
                }
            }
        }
        Packed { k, n, data }
    }
}

/// Panics, naming the operand, its shape and strides, unless the matrix `v` describes lies
/// inside a slice of `len` elements. Every offset the kernels compute is at most the last
/// element's, so once this holds none of them wraps.
#[track_caller]
fn assert_fits(operand: &str, v: View, len: usize) {
    let View {
        rows, cols, rs, cs, ..
    } = v;
    let described =
        || format!("packed matmul: {operand} [{rows}, {cols}] with strides ({rs}, {cs})");
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .zip((cols - 1).checked_mul(cs))
        .and_then(|(r, c)| r.checked_add(c));
    let Some(need) = last.and_then(|l| l.checked_add(1)) else {
        panic!("{} addresses elements past usize::MAX", described());
    };
    assert!(
        need <= len,
        "{} needs {need} elements, its buffer holds {len}",
        described()
    );
}

/// True when the packed kernel runs here: on a CPU with AVX2 and FMA (or AVX-512) that
/// `REWIND_SIMD` does not cap below them, in f32 or f64. Otherwise the general GEMM takes these
/// products.
pub(crate) fn available<F: Float>() -> bool {
    (typed::is::<F, f32>() || typed::is::<F, f64>()) && simd() >= Simd::Avx2
}

/// What a product is added onto.
#[derive(Clone, Copy)]
pub(crate) enum Onto<'a, F> {
    /// Nothing: `C ← A·B` (beta 0; C is never read).
    Nothing,
    /// C itself: `C ← A·B + C` (beta 1).
    Itself,
    /// `D`, of C's shape, row-major with row stride `rs` (0: one row added to every row of C):
    /// `C ← A·B + D`, D read in place where a copy of it into C would otherwise come first.
    Other(&'a [F], usize),
}

/// `C ← A·B + beta·C` for 2-D A [m, k] (any strides, m ≤ `MAX_ROWS`), packed B and row-major C;
/// beta is 0 or 1. The caller checked [`available`].
#[track_caller]
pub(crate) fn gemm<F: Float>(a: &[F], va: View, b: &Packed<F>, c: &mut [F], vc: View, beta: F) {
    assert!(
        beta == F::ZERO || beta == F::ONE,
        "packed matmul: beta must be 0 or 1, not {beta}"
    );
    let onto = if beta == F::ONE {
        Onto::Itself
    } else {
        Onto::Nothing
    };
    gemm_onto(a, va, b, c, vc, onto);
}

/// `C ← A·B + onto` for 2-D A [m, k] (any strides, m ≤ `MAX_ROWS`), packed B and row-major C.
/// The caller checked [`available`].
#[track_caller]
pub(crate) fn gemm_onto<F: Float>(
    a: &[F],
    va: View,
    b: &Packed<F>,
    c: &mut [F],
    vc: View,
    onto: Onto<'_, F>,
) {
    let (m, k, n) = (va.rows, b.k, b.n);
    assert!(
        va.cols == k && vc.rows == m && vc.cols == n,
        "packed matmul: A [{m}, {}] · B [{k}, {n}] does not give C [{}, {}]",
        va.cols,
        vc.rows,
        vc.cols
    );
    assert!(
        m <= MAX_ROWS,
        "packed matmul: A [{m}, {k}] has more than {MAX_ROWS} rows"
    );
    assert!(
        vc.cs == 1,
        "packed matmul: C [{m}, {n}] must be row-major (column stride 1), not of column stride {}",
        vc.cs
    );
    assert_fits("A", va, a.len());
    assert_fits("C", vc, c.len());
    if let Onto::Other(d, rs) = onto {
        let mut vd = View::of(&[m, n], false);
        vd.rs = rs;
        assert_fits("the addend", vd, d.len());
    }
    assert!(
        available::<F>(),
        "packed matmul: the packed kernel is not available here (AVX2 and FMA or wider only)"
    );
    // Chosen here, on the caller's thread, for the workers too.
    let path = simd();
    if k == 0 {
        match onto {
            Onto::Nothing => super::gemm::scale_by_beta(c, vc, F::ZERO),
            Onto::Itself => {}
            Onto::Other(d, rs) => super::gemm::copy_rows(c, vc, d, rs),
        }
        return;
    }
    let panels = n.div_ceil(NR);
    // Only compared with a threshold, so saturating is exact enough.
    let flops = 2usize.saturating_mul(m).saturating_mul(k).saturating_mul(n);
    // Shares taken by whichever thread is free (see pool::run).
    let parts = if flops >= super::gemm::PARALLEL_FLOPS && panels >= 2 {
        (pool::threads() * super::gemm::BANDS_PER_THREAD).min(panels)
    } else {
        1
    };
    let per = panels.div_ceil(parts);
    let c_ptr = super::gemm::SendPtr(c.as_mut_ptr());
    let share = |t: usize| {
        let (lo, hi) = ((t * per).min(panels), ((t + 1) * per).min(panels));
        for j in lo..hi {
            // SAFETY: the views were checked to fit their slices, with k > 0; panel j writes only
            // columns [j·NR, j·NR + NR) of C, disjoint between threads; `path` is AVX2 or wider
            // (checked above).
            unsafe { panel(a, va, b, j, c_ptr, vc, onto, path) }
        }
    };
    if parts > 1 {
        pool::run(parts, &share);
    } else {
        share(0);
    }
}

/// Columns [j·NR, j·NR + NR) of C, every row: the kernel this type and `path` call for, over
/// the panel's slices of columns.
///
/// # Safety
/// As in [`gemm`]: views checked by [`assert_fits`], k > 0, j < the number of panels, `path`
/// (AVX-512, or AVX2 with FMA) present, no other thread on these columns.
#[allow(clippy::too_many_arguments)]
unsafe fn panel<F: Float>(
    a: &[F],
    va: View,
    b: &Packed<F>,
    j: usize,
    c: super::gemm::SendPtr<F>,
    vc: View,
    onto: Onto<'_, F>,
    path: Simd,
) {
    let wide = path >= Simd::Avx512;
    let c = c.0.wrapping_add(j * NR);
    // The first block of k adds its product onto this (null: onto nothing), the later ones onto C.
    let (first, first_rs) = match onto {
        Onto::Nothing => (std::ptr::null(), 0),
        Onto::Itself => (c.cast_const(), vc.rs),
        Onto::Other(d, rs) => (d.as_ptr().wrapping_add(j * NR), rs),
    };
    let at = Panel {
        k: b.k,
        cols: NR.min(b.n - j * NR),
        rows: va.rows,
        va,
        vc,
        first_rs,
    };
    let b = b.data[j * b.k * NR..].as_ptr();
    // SAFETY: passed on from the caller; each branch passes F as the type it is, with the slice
    // width its kernel computes.
    unsafe {
        if typed::is::<F, f32>() {
            let (a, b, c, first) = (a.as_ptr().cast(), b.cast(), c.cast(), first.cast());
            match wide {
                true => slices(at, a, b, c, first, NR, MR, row_block),
                false => slices(at, a, b, c, first, 16, MR_AVX2, row_block_avx2),
            }
        } else {
            let (a, b, c, first) = (a.as_ptr().cast(), b.cast(), c.cast(), first.cast());
            match wide {
                true => slices(at, a, b, c, first, SLICE_F64, MR_F64, row_block_f64),
                false => slices(
                    at,
                    a,
                    b,
                    c,
                    first,
                    SLICE_F64_AVX2,
                    MR_F64_AVX2,
                    row_block_f64_avx2,
                ),
            }
        }
    }
}

/// One panel's product: k steps, its valid columns, the rows of A, the views of A and C, and
/// the row stride of what the first block of k adds onto.
#[derive(Clone, Copy)]
struct Panel {
    k: usize,
    cols: usize,
    rows: usize,
    va: View,
    vc: View,
    first_rs: usize,
}

/// The panel at `bp` times A into C's columns from `c` on: each slice of `width` columns in
/// turn, in blocks of KC steps of k (held in L1 while every row block reads them), `mr` rows at a
/// time through `block`. The first block adds onto `first` (null: nothing), the others onto C.
///
/// # Safety
/// As for [`panel`]; `c` points at the panel's first column of C's row 0, `first` (unless null)
/// at the panel's first column of the checked addend's row 0, and `block` computes `width`
/// columns (`width` divides NR).
#[allow(clippy::too_many_arguments)]
unsafe fn slices<T>(
    at: Panel,
    a: *const T,
    bp: *const T,
    c: *mut T,
    first: *const T,
    width: usize,
    mr: usize,
    block: unsafe fn(usize, ArgsOf<T>),
) {
    let Panel {
        k,
        cols,
        rows: m,
        va,
        vc,
        first_rs,
    } = at;
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let (onto, rso) = match k0 {
            0 => (first, first_rs),
            _ => (c.cast_const(), vc.rs),
        };
        for s in 0..NR / width {
            let part = cols.saturating_sub(width * s).min(width);
            if part == 0 {
                break;
            }
            for i in (0..m).step_by(mr) {
                // SAFETY: row block i.., steps k0..k0+kc and columns width·s..+part of the panel
                // lie inside the checked views, so no offset wraps; the panel is zero-padded to
                // NR columns, so the kernels' loads of B lie inside it.
                unsafe {
                    let ai = a.add(i * va.rs + k0 * va.cs);
                    let bk = bp.add(k0 * NR + width * s);
                    let ci = c.add(i * vc.rs + width * s);
                    let oi = match onto.is_null() {
                        true => onto,
                        false => onto.add(i * rso + width * s),
                    };
                    block(m - i, (kc, ai, va.rs, va.cs, bk, ci, vc.rs, part, oi, rso));
                }
            }
        }
    }
}

/// The f64 AVX-512 kernel for the `rows` left (all `MR_F64` of them when there are more).
///
/// # Safety
/// As for [`kernel_f64`].
unsafe fn row_block_f64(rows: usize, args: ArgsOf<f64>) {
    // SAFETY: passed on from the caller.
    unsafe {
        match rows {
            1 => kernel_f64::<1>(args),
            2 => kernel_f64::<2>(args),
            3 => kernel_f64::<3>(args),
            4 => kernel_f64::<4>(args),
            5 => kernel_f64::<5>(args),
            6 => kernel_f64::<6>(args),
            7 => kernel_f64::<7>(args),
            _ => kernel_f64::<MR_F64>(args),
        }
    }
}

/// The f64 AVX2 kernel for the `rows` left (all `MR_F64_AVX2` of them when there are more).
///
/// # Safety
/// As for [`kernel_f64_avx2`].
unsafe fn row_block_f64_avx2(rows: usize, args: ArgsOf<f64>) {
    // SAFETY: passed on from the caller.
    unsafe {
        match rows {
            1 => kernel_f64_avx2::<1>(args),
            2 => kernel_f64_avx2::<2>(args),
            3 => kernel_f64_avx2::<3>(args),
            4 => kernel_f64_avx2::<4>(args),
            5 => kernel_f64_avx2::<5>(args),
            _ => kernel_f64_avx2::<MR_F64_AVX2>(args),
        }
    }
}

/// The kernel for the `rows` left (all `MR` of them when there are more).
///
/// # Safety
/// As for [`kernel`].
unsafe fn row_block(rows: usize, args: Args) {
    // SAFETY: passed on from the caller.
    unsafe {
        match rows {
            1 => kernel::<1>(args),
            2 => kernel::<2>(args),
            3 => kernel::<3>(args),
            4 => kernel::<4>(args),
            5 => kernel::<5>(args),
            6 => kernel::<6>(args),
            7 => kernel::<7>(args),
            _ => kernel::<MR>(args),
        }
    }
}

/// The AVX2 kernel for the `rows` left (all `MR_AVX2` of them when there are more).
///
/// # Safety
/// As for [`kernel_avx2`].
unsafe fn row_block_avx2(rows: usize, args: Args) {
    // SAFETY: passed on from the caller.
    unsafe {
        match rows {
            1 => kernel_avx2::<1>(args),
            2 => kernel_avx2::<2>(args),
            3 => kernel_avx2::<3>(args),
            4 => kernel_avx2::<4>(args),
            5 => kernel_avx2::<5>(args),
            _ => kernel_avx2::<MR_AVX2>(args),
        }
    }
}

/// (k, A, A's row stride, A's column stride, packed panel, C, C's row stride, valid columns,
/// what the product is added onto (null: nothing; may be C), its row stride).
type ArgsOf<T> = (
    usize,
    *const T,
    usize,
    usize,
    *const T,
    *mut T,
    usize,
    usize,
    *const T,
    usize,
);
type Args = ArgsOf<f32>;

/// R rows × 32 columns of C from R rows of A and one panel: 2R accumulators of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>((k, a, rsa, csa, bp, c, rsc, cols, onto, rso): Args) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for p in 0..k {
        // SAFETY: p < k, r < R rows; the caller checked the views.
        unsafe {
            let b0 = _mm512_loadu_ps(bp.add(p * NR));
            let b1 = _mm512_loadu_ps(bp.add(p * NR + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * rsa + p * csa));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
        }
    }
    // Lanes past the last column are masked off.
    let mask = |h: usize| -> __mmask16 {
        let n = cols.saturating_sub(16 * h).min(16);
        ((1u32 << n) - 1) as __mmask16
    };
    let masks = [mask(0), mask(1)];
    for (r, acc) in acc.iter().enumerate() {
        for (h, (&v, &m)) in acc.iter().zip(&masks).enumerate() {
            // With 16 columns or fewer the second half's address may lie past C's end: not
            // even formed, let alone used.
            if m == 0 {
                continue;
            }
            // SAFETY: lane 0 is column 16h < cols of row r, inside C and (unless null) inside
            // what is added onto; masked lanes are neither read nor written.
            unsafe {
                let v = match onto.is_null() {
                    true => v,
                    false => _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, onto.add(r * rso + 16 * h))),
                };
                _mm512_mask_storeu_ps(c.add(r * rsc + 16 * h), m, v);
            }
        }
    }
}

/// R rows × 16 columns of C from R rows of A and half a panel (its rows NR apart): 2R
/// accumulators of 8 lanes. `cols` ≤ 16 columns are valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize>((k, a, rsa, csa, bp, c, rsc, cols, onto, rso): Args) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..k {
        // SAFETY: p < k, r < R rows; the caller checked the views; the panel is zero-padded to
        // NR columns, so both loads lie inside it.
        unsafe {
            let b0 = _mm256_loadu_ps(bp.add(p * NR));
            let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*a.add(r * rsa + p * csa));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
    }
    // Lane i of a mask is on when i < n: the window of LANES that starts 8 - n in.
    const LANES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    let counts = [cols.min(8), cols.saturating_sub(8)];
    for (r, acc) in acc.iter().enumerate() {
        for (h, (&v, &n)) in acc.iter().zip(&counts).enumerate() {
            if n == 0 {
                continue;
            }
            // SAFETY: lane 0 is column 8h < cols of row r, inside C and (unless null) inside
            // what is added onto; with n < 8 the masked lanes are neither read nor written; the
            // mask window lies inside LANES.
            unsafe {
                let (dst, src) = (c.add(r * rsc + 8 * h), onto.wrapping_add(r * rso + 8 * h));
                if n == 8 {
                    let v = match onto.is_null() {
                        true => v,
                        false => _mm256_add_ps(v, _mm256_loadu_ps(src)),
                    };
                    _mm256_storeu_ps(dst, v);
                } else {
                    let m = _mm256_loadu_si256(LANES.as_ptr().add(8 - n).cast());
                    let v = match onto.is_null() {
                        true => v,
                        false => _mm256_add_ps(v, _mm256_maskload_ps(src, m)),
                    };
                    _mm256_maskstore_ps(dst, m, v);
                }
            }
        }
    }
}

/// R rows × 16 columns of C in f64 from R rows of A and a slice of a panel (its rows NR apart):
/// 2R accumulators of 8 lanes. `cols` ≤ 16 columns are valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_f64<const R: usize>((k, a, rsa, csa, bp, c, rsc, cols, onto, rso): ArgsOf<f64>) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_pd(); 2]; R];
    for p in 0..k {
        // SAFETY: p < k, r < R rows; the caller checked the views; the panel is zero-padded to
        // NR columns, so both loads lie inside it.
        unsafe {
            let b0 = _mm512_loadu_pd(bp.add(p * NR));
            let b1 = _mm512_loadu_pd(bp.add(p * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_pd(*a.add(r * rsa + p * csa));
                acc[0] = _mm512_fmadd_pd(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_pd(x, b1, acc[1]);
            }
        }
    }
    // Lanes past the last column are masked off.
    let mask = |h: usize| -> __mmask8 {
        let n = cols.saturating_sub(8 * h).min(8);
        ((1u32 << n) - 1) as __mmask8
    };
    let masks = [mask(0), mask(1)];
    for (r, acc) in acc.iter().enumerate() {
        for (h, (&v, &m)) in acc.iter().zip(&masks).enumerate() {
            // With 8 columns or fewer the second half's address may lie past C's end: not even
            // formed.
            if m == 0 {
                continue;
            }
            // SAFETY: lane 0 is column 8h < cols of row r, inside C and (unless null) inside
            // what is added onto; masked lanes are neither read nor written.
            unsafe {
                let v = match onto.is_null() {
                    true => v,
                    false => _mm512_add_pd(v, _mm512_maskz_loadu_pd(m, onto.add(r * rso + 8 * h))),
                };
                _mm512_mask_storeu_pd(c.add(r * rsc + 8 * h), m, v);
            }
        }
    }
}

/// R rows × 8 columns of C in f64 from R rows of A and a slice of a panel (its rows NR apart):
/// 2R accumulators of 4 lanes. `cols` ≤ 8 columns are valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_f64_avx2<const R: usize>(
    (k, a, rsa, csa, bp, c, rsc, cols, onto, rso): ArgsOf<f64>,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_pd(); 2]; R];
    for p in 0..k {
        // SAFETY: as in kernel_f64.
        unsafe {
            let b0 = _mm256_loadu_pd(bp.add(p * NR));
            let b1 = _mm256_loadu_pd(bp.add(p * NR + 4));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_pd(*a.add(r * rsa + p * csa));
                acc[0] = _mm256_fmadd_pd(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_pd(x, b1, acc[1]);
            }
        }
    }
    // Lane i of a mask is on when i < n: the window of LANES that starts 4 - n in.
    const LANES: [i64; 8] = [-1, -1, -1, -1, 0, 0, 0, 0];
    let counts = [cols.min(4), cols.saturating_sub(4)];
    for (r, acc) in acc.iter().enumerate() {
        for (h, (&v, &n)) in acc.iter().zip(&counts).enumerate() {
            if n == 0 {
                continue;
            }
            // SAFETY: lane 0 is column 4h < cols of row r, inside C and (unless null) inside
            // what is added onto; with n < 4 the masked lanes are neither read nor written; the
            // mask window lies inside LANES.
            unsafe {
                let (dst, src) = (c.add(r * rsc + 4 * h), onto.wrapping_add(r * rso + 4 * h));
                if n == 4 {
                    let v = match onto.is_null() {
                        true => v,
                        false => _mm256_add_pd(v, _mm256_loadu_pd(src)),
                    };
                    _mm256_storeu_pd(dst, v);
                } else {
                    let m = _mm256_loadu_si256(LANES.as_ptr().add(4 - n).cast());
                    let v = match onto.is_null() {
                        true => v,
                        false => _mm256_add_pd(v, _mm256_maskload_pd(src, m)),
                    };
                    _mm256_maskstore_pd(dst, m, v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_f64<const R: usize>(_: ArgsOf<f64>) {
    unreachable!("the packed kernel is only offered on x86_64 with AVX2 or AVX-512")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_f64_avx2<const R: usize>(_: ArgsOf<f64>) {
    unreachable!("the packed kernel is only offered on x86_64 with AVX2 or AVX-512")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize>(_: Args) {
    unreachable!("the packed kernel is only offered on x86_64 with AVX2 or AVX-512")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_avx2<const R: usize>(_: Args) {
    unreachable!("the packed kernel is only offered on x86_64 with AVX2 or AVX-512")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::for_each_simd;
    use crate::kernels::gemm as general;
    use crate::kernels::{addmm, Rhs};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::cell::OnceCell;

    /// What a case's product is added onto: beta·C, or an addend D read at a row stride (0: one
    /// row for all), as `addmm` passes it.
    #[derive(Clone, Copy, Debug)]
    enum Add {
        Beta(f32),
        Rows(usize),
    }

    /// One product's operands and the definition's C in f64.
    struct Case {
        label: String,
        a: Vec<f32>,
        va: View,
        b: Vec<f32>,
        vb: View,
        c0: Vec<f32>,
        vc: View,
        add: Add,
        d: Vec<f32>,
        want: Vec<f64>,
    }

    fn cases() -> Vec<Case> {
        let mut rng = StdRng::seed_from_u64(3);
        let mut cases = Vec::new();
        for (m, k, n) in [
            (1, 1, 1),
            (3, 0, 5),
            (7, 5, 33),
            (8, 16, 32),
            (13, 40, 70),
            (6, 3, 24),
            (12, 130, 41),
            (32, 256, 1024),
            // Three blocks of k (KC, KC and a ragged rest), accumulated onto C between them.
            (9, 2 * KC + 88, 40),
        ] {
            let layouts = [
                (false, true, Add::Beta(0.0)),
                (true, false, Add::Beta(1.0)),
                (false, false, Add::Beta(1.0)),
                (false, true, Add::Rows(n)),
                (false, true, Add::Rows(0)),
                (true, false, Add::Rows(n + 5)),
            ];
            for (ta, tb, add) in layouts {
                let sa: &[usize] = if ta { &[k, m] } else { &[m, k] };
                let sb: &[usize] = if tb { &[n, k] } else { &[k, n] };
                let mut rand = |len: usize| -> Vec<f32> {
                    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
                };
                let (a, b, c0) = (rand(m * k), rand(k * n), rand(m * n));
                let d = match add {
                    Add::Beta(_) => Vec::new(),
                    Add::Rows(rs) => rand((m - 1) * rs + n),
                };
                let (va, vb, vc) = (View::of(sa, ta), View::of(sb, tb), View::of(&[m, n], false));
                let want = (0..m * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        (0..k)
                            .map(|p| {
                                a[i * va.rs + p * va.cs] as f64 * b[p * vb.rs + j * vb.cs] as f64
                            })
                            .sum::<f64>()
                            + match add {
                                Add::Beta(beta) => beta as f64 * c0[e] as f64,
                                Add::Rows(rs) => d[i * rs + j] as f64,
                            }
                    })
                    .collect();
                let label = format!("{m}×{k}×{n} (ta {ta}, tb {tb}, {add:?})");
                cases.push(Case {
                    label,
                    a,
                    va,
                    b,
                    vb,
                    c0,
                    vc,
                    add,
                    d,
                    want,
                });
            }
        }
        cases
    }

    /// A parameter's product with few rows, as the engine runs it on each path this CPU allows:
    /// the packed kernel with AVX-512 or AVX2, otherwise the general GEMM. Against the definition in f64,
    /// over ragged rows and columns, an empty inner dimension, both layouts of A and B, beta 0
    /// and 1, an addend read in place (`addmm`: its own rows, one row for all, a wider stride),
    /// and products large enough to be split across threads.
    #[test]
    fn packed_gemm_and_its_fallback_equal_the_definition() {
        let cases = cases();
        for_each_simd(
            "packed_gemm_and_its_fallback_equal_the_definition",
            &Simd::ALL,
            |s| {
                assert_eq!(available::<f32>(), s >= Simd::Avx2, "{s:?}");
                for case in &cases {
                    let mut c = case.c0.clone();
                    match case.add {
                        Add::Beta(beta) if available::<f32>() => {
                            let b = Packed::new(&case.b, case.vb);
                            gemm(&case.a, case.va, &b, &mut c, case.vc, beta);
                        }
                        Add::Beta(beta) => {
                            let (a, b) = ((&case.a[..], case.va), (&case.b[..], case.vb));
                            general::gemm(1, a, b, (&mut c, case.vc), beta);
                        }
                        Add::Rows(rs) => {
                            let b = Rhs::Weight(&case.b, case.vb, &OnceCell::new());
                            let d = (&case.d[..], rs);
                            addmm((&case.a, case.va), b, (&mut c, case.vc), d);
                        }
                    }
                    let k = case.va.cols as f64;
                    for (e, (&got, &want)) in c.iter().zip(&case.want).enumerate() {
                        assert!(
                            (got as f64 - want).abs() < 1e-5 * (1.0 + k).sqrt(),
                            "{} on {s:?}, element {e}: {got} vs {want}",
                            case.label
                        );
                    }
                }
            },
        );
    }

    /// As above, in f64 (the same operands, widened): the f64 kernels with AVX-512 or AVX2, else
    /// the general GEMM, each within a few units in the last place of the definition.
    #[test]
    fn packed_gemm_and_its_fallback_equal_the_definition_in_f64() {
        let cases = cases();
        for_each_simd(
            "packed_gemm_and_its_fallback_equal_the_definition_in_f64",
            &Simd::ALL,
            |s| {
                assert_eq!(available::<f64>(), s >= Simd::Avx2, "{s:?}");
                for case in &cases {
                    let widen = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
                    let (a, b, mut c) = (widen(&case.a), widen(&case.b), widen(&case.c0));
                    match case.add {
                        Add::Beta(beta) if available::<f64>() => {
                            let packed = Packed::new(&b, case.vb);
                            gemm(&a, case.va, &packed, &mut c, case.vc, beta as f64);
                        }
                        Add::Beta(beta) => {
                            let (a, b) = ((&a[..], case.va), (&b[..], case.vb));
                            general::gemm(1, a, b, (&mut c, case.vc), beta as f64);
                        }
                        Add::Rows(rs) => {
                            let b = Rhs::Weight(&b, case.vb, &OnceCell::new());
                            let d = widen(&case.d);
                            addmm((&a, case.va), b, (&mut c, case.vc), (&d, rs));
                        }
                    }
                    let k = case.va.cols as f64;
                    for (e, (&got, &want)) in c.iter().zip(&case.want).enumerate() {
                        assert!(
                            (got - want).abs() < 1e-14 * (1.0 + k),
                            "{} on {s:?}, element {e}: {got} vs {want}",
                            case.label
                        );
                    }
                }
            },
        );
    }

    /// A's strides put its last element past usize: a panic that names the op and the operand,
    /// not a wrapped offset.
    #[test]
    #[should_panic(expected = "packed matmul: A [3, 2] with strides (")]
    fn an_a_whose_offsets_overflow_panics_naming_it() {
        let mut va = View::of(&[3, 2], false);
        va.rs = usize::MAX / 2 + 1;
        let b = Packed::new(&[0.0f32; 2 * 4], View::of(&[2, 4], false));
        gemm(
            &[0.0; 6],
            va,
            &b,
            &mut [0.0; 12],
            View::of(&[3, 4], false),
            0.0,
        );
    }

    #[test]
    #[should_panic(expected = "packed matmul: C [3, 4] with strides (4, 1) needs 12 elements")]
    fn a_c_past_its_buffer_panics_naming_it() {
        let b = Packed::new(&[0.0f32; 2 * 4], View::of(&[2, 4], false));
        gemm(
            &[0.0; 6],
            View::of(&[3, 2], false),
            &b,
            &mut [0.0; 11],
            View::of(&[3, 4], false),
            0.0,
        );
    }

    #[test]
    #[should_panic(
        expected = "packed matmul: the addend [3, 4] with strides (5, 1) needs 14 elements"
    )]
    fn an_addend_past_its_buffer_panics_naming_it() {
        let b = Packed::new(&[0.0f32; 2 * 4], View::of(&[2, 4], false));
        let (a, va, vc) = ([0.0; 6], View::of(&[3, 2], false), View::of(&[3, 4], false));
        gemm_onto(&a, va, &b, &mut [0.0; 12], vc, Onto::Other(&[0.0; 13], 5));
    }

    #[test]
    #[should_panic(expected = "packed matmul: B [")]
    fn a_weight_too_large_to_pack_panics_naming_it() {
        // One row of 96 columns read again for every row: three panels of usize::MAX / 64 rows.
        let mut vb = View::of(&[1, 96], false);
        vb.rows = usize::MAX / 64;
        vb.rs = 0;
        Packed::new(&[0.0f32; 96], vb);
    }
}
