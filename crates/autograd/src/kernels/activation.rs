//! exp, tanh and σ over slices: f32's through a loop compiled for AVX-512 (sixteen f32 lanes) or
//! AVX2 and FMA (eight) when the CPU has them and `REWIND_SIMD` allows them, f64's through libm,
//! the reference for gradient checks. An f32 slice holds exactly what f32's `Float::exp`
//! (`tanh`, `sigmoid`) gives element by element.
//!
//! Also [`avx2_copy`], which gives any generic kernel such a second copy.

use crate::float::f32_activation::{exp as exp32, sigmoid as sigmoid32, tanh as tanh32};
use crate::float::Float;
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::{simd, Simd};
use crate::kernels::typed;

/// The element-wise functions with a vectorised f32 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unary {
    Exp,
    Tanh,
    Sigmoid,
}

/// `out[i] = e^x[i]`.
pub(crate) fn exp<F: Float>(x: &[F], out: &mut [F]) {
    apply(Unary::Exp, x, out, F::exp);
}

/// `out[i] = tanh x[i]`.
pub(crate) fn tanh<F: Float>(x: &[F], out: &mut [F]) {
    apply(Unary::Tanh, x, out, F::tanh);
}

/// `out[i] = σ(x[i])`.
pub(crate) fn sigmoid<F: Float>(x: &[F], out: &mut [F]) {
    apply(Unary::Sigmoid, x, out, F::sigmoid);
}

/// `x[i] = e^x[i]`, in place.
pub(crate) fn exp_in_place<F: Float>(x: &mut [F]) {
    if let Some(x) = typed::slice_mut::<F, f32>(x) {
        return map_in_place(Unary::Exp, x);
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// `out[i] = f(x[i])`: the vectorised kernel for f32, `element` one by one for f64.
#[inline(always)]
fn apply<F: Float>(f: Unary, x: &[F], out: &mut [F], element: impl Fn(F) -> F) {
    match (typed::slice::<F, f32>(x), typed::slice_mut::<F, f32>(out)) {
        (Some(x), Some(out)) => map(f, x, out),
        _ => out.iter_mut().zip(x).for_each(|(o, &v)| *o = element(v)),
    }
}

/// `out[i] = f(x[i])`.
fn map(f: Unary, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    match simd() {
        // SAFETY (both): the CPU has the features the copy was compiled for.
        Simd::Avx512 => return unsafe { map_avx512(f, x, out) },
        Simd::Avx2 => return unsafe { map_avx2(f, x, out) },
        Simd::Scalar => {}
    }
    map_plain(f, x, out);
}

/// Sixteen f32 lanes a vector instead of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn map_avx512(f: Unary, x: &[f32], out: &mut [f32]) {
    map_plain(f, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_avx2(f: Unary, x: &[f32], out: &mut [f32]) {
    map_plain(f, x, out);
}

/// `x[i] = f(x[i])`.
fn map_in_place(f: Unary, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match simd() {
        // SAFETY (both): the CPU has the features the copy was compiled for.
        Simd::Avx512 => return unsafe { map_in_place_avx512(f, x) },
        Simd::Avx2 => return unsafe { map_in_place_avx2(f, x) },
        Simd::Scalar => {}
    }
    map_in_place_plain(f, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn map_in_place_avx512(f: Unary, x: &mut [f32]) {
    map_in_place_plain(f, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_in_place_avx2(f: Unary, x: &mut [f32]) {
    map_in_place_plain(f, x);
}

#[inline(always)]
fn map_in_place_plain(f: Unary, x: &mut [f32]) {
    match f {
        Unary::Exp => x.iter_mut().for_each(|v| *v = exp32(*v)),
        Unary::Tanh => x.iter_mut().for_each(|v| *v = tanh32(*v)),
        Unary::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid32(*v)),
    }
}

#[inline(always)]
fn map_plain(f: Unary, x: &[f32], out: &mut [f32]) {
    let pairs = out.iter_mut().zip(x);
    match f {
        Unary::Exp => pairs.for_each(|(o, &v)| *o = exp32(v)),
        Unary::Tanh => pairs.for_each(|(o, &v)| *o = tanh32(v)),
        Unary::Sigmoid => pairs.for_each(|(o, &v)| *o = sigmoid32(v)),
    }
}

/// Defines a kernel `fn name<F: Float>(…)` together with a copy of its body compiled for AVX2 and
/// FMA, which it runs when [`simd`] allows them, so that its loops vectorise with the wider
/// registers. (A closure handed to a function with those features is not reliably inlined into
/// it, and then runs without them.)
macro_rules! avx2_copy {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident<F: Float>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name<F: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<F: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2<F: Float>($($arg: $ty),*) $(-> $ret)? {
                imp($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::cpu::simd() >= $crate::kernels::cpu::Simd::Avx2 {
                // SAFETY: the CPU has the features the copy was compiled for.
                return unsafe { avx2($($arg),*) };
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use avx2_copy;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::f32_activation::sweep;
    use crate::kernels::cpu::{for_each_simd, Simd};

    /// On each path the CPU allows, a slice's values are bit for bit the scalar functions'.
    #[test]
    fn slices_equal_the_scalar_functions() {
        let x: Vec<f32> = sweep().take(10_007).collect();
        let mut out = vec![0.0; x.len()];
        for_each_simd(
            "slices_equal_the_scalar_functions",
            &[Simd::Avx512, Simd::Avx2, Simd::Scalar],
            |s| {
                for (f, scalar) in [
                    (Unary::Exp, exp32 as fn(f32) -> f32),
                    (Unary::Tanh, tanh32),
                    (Unary::Sigmoid, sigmoid32),
                ] {
                    map(f, &x, &mut out);
                    for (&o, &v) in out.iter().zip(&x) {
                        assert_eq!(o.to_bits(), scalar(v).to_bits(), "{f:?}({v:e}) on {s:?}");
                    }
                    let mut in_place = x.clone();
                    map_in_place(f, &mut in_place);
                    assert!(in_place
                        .iter()
                        .zip(&out)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            },
        );
    }
}
