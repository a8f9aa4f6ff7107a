//! Plain numeric kernels over slices: no tape, no gradients. Ops call these in forward and
//! backward.

pub(crate) mod activation;
pub(crate) mod axis;
pub(crate) mod cells;
pub(crate) mod elementwise;
pub(crate) mod matmul;
pub(crate) mod packed;
pub(crate) mod pool;
pub(crate) mod sum;

use crate::float::Float;

/// `n` zeros, written here rather than taken as the allocator's zeroed pages. A fresh mapping of
/// zero pages turns the first write after a read of each page (`+=` into a gradient) into a
/// copy-on-write fault whose TLB flush interrupts every other core running this process (the
/// GEMM workers); on a long tape those interrupts cost more than the backward pass itself.
pub(crate) fn zeroed<F: Float>(n: usize) -> Vec<F> {
    let mut v = Vec::with_capacity(n);
    // Escapes, as far as the optimiser knows, so allocation and fill are not folded into calloc.
    std::hint::black_box(v.as_mut_ptr());
    v.resize(n, F::ZERO);
    v
}
