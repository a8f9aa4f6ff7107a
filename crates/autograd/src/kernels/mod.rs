//! Plain numeric kernels over slices: no tape, no gradients. Ops call these in forward and
//! backward.

pub(crate) mod activation;
pub(crate) mod axis;
pub(crate) mod cells;
pub(crate) mod elementwise;
pub(crate) mod matmul;
pub(crate) mod packed;
pub(crate) mod pool;
