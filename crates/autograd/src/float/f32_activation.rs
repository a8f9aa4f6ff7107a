//! exp, tanh and σ for f32, written so that a loop over a slice vectorises: f32's `Float::exp`,
//! `Float::tanh` and `Float::sigmoid`, and the bodies of the slice kernels in
//! `kernels::activation`, so that a value does not depend on which path computed it.
//!
//! Each is evaluated in f32 lanes: e^x from Cody and Waite's reduction x = n·ln2 + r and a
//! degree-7 polynomial of r (Cephes' coefficients), every multiply-add fused (`mul_add`, an FMA
//! instruction on the vector paths and a correctly rounded `fmaf` on the scalar fallback, so that
//! every path computes the same bits). tanh is an odd polynomial of degree 11 near 0 and
//! `1 - 2/(e^2|x| + 1)` beyond, σ is `1/(1 + e^-|x|)` (`e^x/(1 + e^x)` below 0). The bound,
//! checked over every f32 input by the ignored test `every_f32_input_is_within_the_stated_bound`
//! (CI runs it): at most 2 units in the last place from the correctly rounded value (the f64
//! function rounded to f32), subnormal results included; measured, exp and tanh 1 ulp, σ 2.
//! PyTorch's vectorised f32 functions state 1-3 ulp. Eight f32 lanes a vector instead of the four
//! f64 ones that correct rounding took.

/// The most units in the last place a result lies from the correctly rounded one.
#[cfg(test)]
const ULP_BOUND: u32 = 2;

/// 2^k for k in [-126, 127], from its bits.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// e^x; 0 below about -103.97, +inf above about 88.72, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for the n that occur (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Past these e^x is 0 or +inf in f32 whatever the rest computes; n stays in [-150, 129].
    let x = x.clamp(-104.0, 89.0);
    let t = x.mul_add(LOG2_E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    // e^r = 1 + r + r²·p(r) on |r| ≤ ln2/2.
    let p = 1.987_569_1e-4_f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_6e-1)
        .mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // 2^n in two factors, each a normal f32, so that a subnormal result is rounded once.
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = n >> 1;
    e * pow2(half) * pow2(n - half)
}

/// tanh x: an odd polynomial of x near 0 (Cephes' coefficients), `1 - 2/(e^2|x| + 1)` with x's
/// sign beyond 0.625, where the subtraction no longer loses digits.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let s = a * a;
    let p = (-5.704_988_7e-3_f32)
        .mul_add(s, 2.063_908_8e-2)
        .mul_add(s, -5.373_971_5e-2)
        .mul_add(s, 1.333_144_2e-1)
        .mul_add(s, -3.333_328e-1);
    let near = (p * s).mul_add(a, a);
    let far = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let y = if a < 0.625 { near } else { far };
    y.copysign(x)
}

/// σ(x) = 1 / (1 + e^-x) for x ≥ 0, and e^x / (1 + e^x) below, where e^-x would overflow
/// long before σ(x) reaches 0 (σ(-95) is a subnormal 5.6e-42).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let top = if x < 0.0 { e } else { 1.0 };
    top / (1.0 + e)
}

/// Every 997th f32 bit pattern in [-30, 30], both signs, plus the edges of the branches: the
/// inputs the accuracy tests here and the slice kernels' tests sweep.
#[cfg(test)]
pub(crate) fn sweep() -> impl Iterator<Item = f32> {
    (0..0x41f0_0000u32)
        .step_by(997)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        .chain([
            0.625,
            -0.625,
            0.624_999_94,
            1e-30,
            1e-40,
            88.0,
            -87.0,
            -95.0,
            -103.9,
            100.0,
            -100.0,
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two f32 of the same sign (infinities and
    /// subnormals included).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Each function at `x` against the f64 function rounded to f32: the ulps apart.
    fn errors(x: f32) -> [u32; 3] {
        let d = x as f64;
        let reference = [d.exp(), d.tanh(), 1.0 / (1.0 + (-d).exp())].map(|v| v as f32);
        let got = [exp(x), tanh(x), sigmoid(x)];
        std::array::from_fn(|i| ulps(got[i], reference[i]))
    }

    #[test]
    fn within_the_bound_on_a_sweep() {
        for x in sweep() {
            let e = errors(x);
            assert!(
                e.iter().all(|&u| u <= ULP_BOUND),
                "x = {x:e}: {e:?} ulp (exp, tanh, σ)"
            );
        }
    }

    /// Every f32 input but NaN, on every core: about three minutes in release on 2 cores
    /// (`cargo test --release -p rewind-autograd --lib -- --ignored every_f32`, as CI runs it).
    /// Prints each function's worst case: exp and tanh 1 ulp, σ 2 (2026-12-06).
    #[test]
    #[ignore = "every f32 input: run in release, as .ci/run does"]
    fn every_f32_input_is_within_the_stated_bound() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let worst = std::sync::Mutex::new([(0u32, 0f32); 3]);
        std::thread::scope(|scope| {
            for first in 0..threads {
                let worst = &worst;
                scope.spawn(move || {
                    let mut mine = [(0u32, 0f32); 3];
                    for bits in (first..=u64::from(u32::MAX)).step_by(threads as usize) {
                        let x = f32::from_bits(bits as u32);
                        if x.is_nan() {
                            continue;
                        }
                        // Half the inputs lie past ±128, where the rounded values are exactly
                        // 0 or +inf, ±1, and 0 or 1: checked as such, without the f64 functions.
                        if x.abs() >= 128.0 {
                            let up = x > 0.0;
                            let want = [if up { f32::INFINITY } else { 0.0 }, x.signum()];
                            let sigma = if up { 1.0 } else { 0.0 };
                            assert_eq!([exp(x), tanh(x), sigmoid(x)], [want[0], want[1], sigma]);
                            continue;
                        }
                        for (w, u) in mine.iter_mut().zip(errors(x)) {
                            if u > w.0 {
                                *w = (u, x);
                            }
                        }
                    }
                    let mut all = worst.lock().unwrap();
                    for (w, m) in all.iter_mut().zip(mine) {
                        if m.0 > w.0 {
                            *w = m;
                        }
                    }
                });
            }
        });
        let worst = worst.into_inner().unwrap();
        for (name, (u, x)) in ["exp", "tanh", "sigmoid"].into_iter().zip(worst) {
            println!("{name}: at most {u} ulp (first at x = {x:e})");
            assert!(
                u <= ULP_BOUND,
                "{name}({x:e}) is {u} ulp from the rounded value"
            );
        }
    }

    #[test]
    fn edge_values() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan() && tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!([tanh(20.0), tanh(-20.0)], [1.0, -1.0]);
        assert_eq!([sigmoid(-200.0), sigmoid(200.0)], [0.0, 1.0]);
        assert_eq!(sigmoid(0.0), 0.5);
    }
}
