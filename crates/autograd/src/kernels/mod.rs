//! Plain numeric kernels over slices, no tape and no gradients, and the choice of which one runs:
//! every matrix product enters through [`matmul`], which picks the packed or the general GEMM, and
//! every kernel takes the widest instruction set [`cpu::simd`] allows. The op table calls these in
//! forward and backward and never chooses.

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
pub(crate) use packed::Packed;

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
    match b {
        Rhs::Weight(data, vb, cache)
            if batch == 1
                && a.1.rows <= packed::MAX_ROWS
                && c.1.rows > 0
                && packed::available::<F>() =>
        {
            let packed = cache.get_or_init(|| Packed::new(data, vb));
            packed::gemm(a.0, a.1, packed, c.0, c.1, beta);
        }
        Rhs::Weight(data, vb, _) | Rhs::Plain(data, vb) => {
            gemm::gemm(batch, a, (data, vb), c, beta)
        }
    }
}
