//! A generic `F: Float` seen as the concrete type it is, for the kernels written per type:
//! matrixmultiply's sgemm and dgemm, the vectorised f32 activations, the packed GEMM's kernels.
//!
//! `Float` is sealed to f32 and f64 and carries no kernel of its own, so a kernel asks which type
//! `F` is. Both types are known when `F` is substituted, so the question is a constant and its
//! branch compiles away.

use std::any::TypeId;

use crate::float::Float;

/// True when `F` is `T`.
#[inline(always)]
pub(crate) fn is<F: Float, T: Float>() -> bool {
    TypeId::of::<F>() == TypeId::of::<T>()
}

/// `x` as a slice of `T`, when `F` is `T`.
#[inline(always)]
pub(crate) fn slice<F: Float, T: Float>(x: &[F]) -> Option<&[T]> {
    // SAFETY: F and T are one type, so the slice is reinterpreted as itself.
    is::<F, T>().then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) })
}

/// `x` as a mutable slice of `T`, when `F` is `T`.
#[inline(always)]
pub(crate) fn slice_mut<F: Float, T: Float>(x: &mut [F]) -> Option<&mut [T]> {
    // SAFETY: F and T are one type, so the slice is reinterpreted as itself, and the borrow of
    // `x` is handed on whole.
    is::<F, T>().then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}

/// `x` as a `T`, when `F` is `T`.
#[inline(always)]
pub(crate) fn value<F: Float, T: Float>(x: F) -> Option<T> {
    // SAFETY: F and T are one type, so the value is copied as itself.
    is::<F, T>().then(|| unsafe { std::mem::transmute_copy::<F, T>(&x) })
}
