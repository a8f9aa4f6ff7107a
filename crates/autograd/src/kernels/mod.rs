//! Plain numeric kernels over slices, no tape and no gradients, and the choice of which one runs:
//! every matrix product enters through [`matmul`] (or [`addmm`]), which picks the packed or the
//! general GEMM, and every kernel takes the widest instruction set [`cpu::simd`] allows. The op
//! table calls these in forward and backward and never chooses.

pub(crate) mod activation;
pub(crate) mod axis;
pub(crate) mod cells;
mod cpu;
pub(crate) mod elementwise;
mod gemm;
mod packed;
pub(crate) mod pool;
pub(crate) mod sum;
mod typed;

use std::cell::OnceCell;

use crate::float::Float;

pub use cpu::kernel_path;
pub(crate) use gemm::View;
use packed::Onto;
pub(crate) use packed::Packed;
pub use pool::{cores, on_this_thread, share_out};

/// The most rows a product may have for the packed kernel to take it: a batch of hidden states,
/// as in an RNN's per-step product.
pub(crate) const PER_STEP_ROWS: usize = packed::MAX_ROWS;

/// The right operand of a product.
pub(crate) enum Rhs<'a, F: Float> {
    /// A matrix lying in a slice as its view says.
    Plain(&'a [F], View),
    /// A weight that many products read (a parameter, read once per time step), lying in a slice
    /// as its view says, with the cell that keeps its packed form for all of them.
    Weight(&'a [F], View, &'a OnceCell<Packed<F>>),
}

/// `C_b ← A_b·B_b + beta·C_b` for each of `batch` entries, as [`gemm::gemm`]. A weight read by a
/// few rows goes through the packed kernel where it runs, packed on first use; every other
/// product through the general GEMM.
pub(crate) fn matmul<F: Float>(
    batch: usize,
    a: (&[F], View),
    b: Rhs<'_, F>,
    c: (&mut [F], View),
    beta: F,
) {
    match packed_weight(batch, a.1, &b, c.1) {
        Some(packed) => packed::gemm(a.0, a.1, packed, c.0, c.1, beta),
        None => gemm::gemm(batch, a, b.plain(), c, beta),
    }
}

/// `C ← D + A·B` for 2-D row-major C [m, n] and D [m, n] of row stride `d.1` (0: one row added to
/// every row of C), as PyTorch's `addmm`. Where the packed kernel takes the product it reads D
/// in place; otherwise D is copied into C and the product added onto it. Either way each element
/// is D plus the product, one rounding.
pub(crate) fn addmm<F: Float>(
    a: (&[F], View),
    b: Rhs<'_, F>,
    c: (&mut [F], View),
    d: (&[F], usize),
) {
    match packed_weight(1, a.1, &b, c.1) {
        Some(packed) => packed::gemm_onto(a.0, a.1, packed, c.0, c.1, Onto::Other(d.0, d.1)),
        None => {
            gemm::copy_rows(c.0, c.1, d.0, d.1);
            gemm::gemm(1, a, b.plain(), c, F::ONE);
        }
    }
}

/// The packed form of `b` when the packed kernel takes this product: a weight, one matrix, few
/// rows, on a CPU that runs the kernel. Packed on first use.
fn packed_weight<'a, F: Float>(
    batch: usize,
    va: View,
    b: &Rhs<'a, F>,
    vc: View,
) -> Option<&'a Packed<F>> {
    match *b {
        Rhs::Weight(data, vb, cache)
            if batch == 1
                && va.rows <= packed::MAX_ROWS
                && vc.rows > 0
                && packed::available::<F>() =>
        {
            Some(cache.get_or_init(|| Packed::new(data, vb)))
        }
        _ => None,
    }
}

impl<'a, F: Float> Rhs<'a, F> {
    /// The matrix and its view, for the general GEMM.
    fn plain(self) -> (&'a [F], View) {
        match self {
            Rhs::Weight(data, vb, _) | Rhs::Plain(data, vb) => (data, vb),
        }
    }
}
