//! exp, tanh and σ for f32, written so that a loop over a slice vectorises: f32's `Float::exp`,
//! `Float::tanh` and `Float::sigmoid`, and the bodies of the slice kernels in
//! `kernels::activation`, so that a value does not depend on which path computed it.
//!
//! Each is evaluated in f64 from a degree-10 polynomial of e^r on |r| ≤ ln2/2 (relative error
//! below 1e-12) and rounded once to f32, so a result is the correctly rounded f32 value unless the
//! exact one lies within 1e-12 of a rounding tie (the tests check 1 ulp of the f64 functions): as
//! exact as libm's f32 functions and PyTorch's vectorised ones (both ≤ 1 ulp), and branch-free,
//! so a loop runs four f64 lanes at once.

/// e^x in f64 for x clamped to [-700, 700] (NaN stays NaN), relative error below 1e-12.
#[inline(always)]
fn exp_f64(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^11 (Cody and Waite).
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5·2^52 rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-700.0, 700.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! of e^r; the k = 11 term is below 2.2e-13 on |r| ≤ ln2/2.
    let mut p = 1.0 / 3_628_800.0;
    for c in [
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // 2^n from n's bits: the low bits of t hold n (two's complement), shifted into the exponent.
    let two_n = f64::from_bits((t.to_bits() << 52).wrapping_add(1.0f64.to_bits()));
    p * two_n
}

/// e^x, correctly rounded to f32 but for near-ties; overflows to +inf past ~88.7.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    exp_f64(x as f64) as f32
}

/// tanh x: `1 - 2/(e^2|x| + 1)` with x's sign, or its odd Taylor series near 0, where the first
/// form would lose digits to cancellation.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let x = x as f64;
    let a = x.abs();
    let far = 1.0 - 2.0 / (exp_f64(2.0 * a) + 1.0);
    // tanh a = a - a³/3 + 2a⁵/15 - 17a⁷/315 + …; the a⁹ term is < 1e-13 relative for a < 2^-5.
    let a2 = a * a;
    let near = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))));
    let y = if a < 0.031_25 { near } else { far };
    y.copysign(x) as f32
}

/// σ(x) = 1 / (1 + e^-x).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + exp_f64(-(x as f64)))) as f32
}

/// Every 997th f32 bit pattern in [-30, 30], both signs, plus the edges of the branches: the
/// inputs the accuracy tests here and the slice kernels' tests sweep.
#[cfg(test)]
pub(crate) fn sweep() -> impl Iterator<Item = f32> {
    (0..0x41f0_0000u32)
        .step_by(997)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        .chain([
            0.031_25,
            -0.031_25,
            0.031_249_998,
            1e-30,
            88.0,
            -87.0,
            100.0,
            -100.0,
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_one_ulp_of_the_f64_functions() {
        for x in sweep() {
            let d = x as f64;
            let reference = [d.exp(), d.tanh(), 1.0 / (1.0 + (-d).exp())].map(|v| v as f32);
            for (got, want) in [exp(x), tanh(x), sigmoid(x)].into_iter().zip(reference) {
                assert!(ulps(got, want) <= 1, "x = {x:e}: {got:e} vs {want:e}");
            }
        }
    }

    #[test]
    fn edge_values() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan() && tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!([tanh(20.0), tanh(-20.0)], [1.0, -1.0]);
        assert_eq!([sigmoid(-200.0), sigmoid(200.0)], [0.0, 1.0]);
    }
}
