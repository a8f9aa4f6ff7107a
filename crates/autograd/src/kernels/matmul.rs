//! Batched, strided GEMM: every matrix product in the engine, forward and backward, runs here.
//!
//! Operands are read through strides, so a transposed operand is never copied: transposing a
//! view swaps its row and column strides.

use crate::float::Float;

/// How a (possibly batched) matrix lies in a slice: element (b, i, j) sits at
/// `b·bs + i·rs + j·cs`. A batch stride of 0 reuses one matrix for every batch entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    rs: usize,
    cs: usize,
    bs: usize,
}

impl View {
    /// A row-major tensor of shape [r, c] or [batch, r, c], transposed in its last two axes when
    /// `trans` is set.
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

    #[track_caller]
    fn assert_fits(&self, batch: usize, len: usize) {
        let last = if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (batch - 1) * self.bs + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        };
        assert!(
            last <= len,
            "gemm view {self:?} x{batch} exceeds a buffer of {len}"
        );
    }
}

/// `C_b ← A_b · B_b + beta · C_b` for each of `batch` entries. When C's batch stride is 0 the
/// products of all entries are summed into one C (a weight gradient over a batch).
///
/// Batches that are rows of one larger matrix are folded into a single GEMM call: a shared B with
/// A and C stacked by rows (an input projection over all time steps), or a shared C with A and B
/// stacked along the inner dimension (that projection's weight gradient).
pub(crate) fn gemm<F: Float>(
    batch: usize,
    a: (&[F], View),
    b: (&[F], View),
    c: (&mut [F], View),
    beta: F,
) {
    let (a, mut va) = a;
    let (b, mut vb) = b;
    let (c, mut vc) = c;
    assert!(va.rows == vc.rows && vb.cols == vc.cols && va.cols == vb.rows);
    let mut batch = batch.max(1);
    if batch > 1 && vb.bs == 0 && va.bs == va.rows * va.rs && vc.bs == vc.rows * vc.rs {
        va.rows *= batch;
        vc.rows *= batch;
        batch = 1;
    } else if batch > 1 && vc.bs == 0 && va.bs == va.cols * va.cs && vb.bs == vb.rows * vb.rs {
        va.cols *= batch;
        vb.rows *= batch;
        batch = 1;
    }
    va.assert_fits(batch, a.len());
    vb.assert_fits(batch, b.len());
    vc.assert_fits(batch, c.len());
    let (m, k, n) = (va.rows, va.cols, vc.cols);
    if m == 0 || n == 0 {
        return;
    }
    for e in 0..batch {
        // A C shared by all entries accumulates: only the first entry applies beta.
        let beta_e = if vc.bs == 0 && e > 0 { F::ONE } else { beta };
        if k == 0 {
            let cm = &mut c[e * vc.bs..];
            for i in 0..m {
                for j in 0..n {
                    cm[i * vc.rs + j * vc.cs] *= beta_e;
                }
            }
            continue;
        }
        // SAFETY: assert_fits checked that every view, over every batch entry, stays inside its
        // slice; C is a distinct `&mut` slice, so it aliases neither A nor B.
        unsafe {
            F::gemm(
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
