//! Gradient clipping against PyTorch's `clip_grad_norm_` (norm types 1, 2, 3.5, inf, 0, -inf) and
//! `clip_grad_value_`, in float64 and float32, from tests/data/schedules_golden.safetensors,
//! which `scripts/golden_schedules.py` wrote (the `clip.*` tensors); negative finite norm types
//! (-2, -0.5, -1, -3.5) in float64 from tests/data/leftovers_golden.safetensors, which
//! `scripts/golden_round2_leftovers.py` wrote (the `clip_negative.*` tensors). Torch computes each dtype's
//! norm in that dtype; rewind sums in f64 whatever the gradients' type, so in f32 its norm is
//! the more accurate of the two (torch's f32 norm for p = 3.5 is 1.8e-7 off) and they agree to
//! 1e-6 relative; in f64 to 1e-15. Non-finite norms follow torch too.

use crate::support::golden::{load, tensor};
use crate::support::panics::panic_of;
use rewind::autograd::io::TensorFile;
use rewind::autograd::{Float, Grads, Param, Tape, Tensor};
use rewind::optim::{
    clip_grad_norm, clip_grad_norm_with, clip_grad_value, ClipOptions, NonFiniteNorm,
};

const GOLDEN: &str = "schedules_golden.safetensors";
/// The gradients' names in the golden file.
const NAMES: [&str; 3] = ["weight", "bias", "proj"];
/// scripts/golden_schedules.py's CLIPS: (case, norm_type, max_norm).
const CLIPS: [(&str, f64, f64); 7] = [
    ("p1", 1.0, 1.0),
    ("p2", 2.0, 1.0),
    ("p3_5", 3.5, 1.0),
    ("pinf", f64::INFINITY, 1.0),
    ("p3_5_loose", 3.5, 100.0),
    ("p0", 0.0, 1.0),
    ("pneginf", f64::NEG_INFINITY, 0.01),
];

/// The golden tensors, as `F`. The f32 cases were stored as f32, so reading them through f64 is
/// exact.
fn golden<F: Float>() -> TensorFile<F> {
    let file: TensorFile<f64> = load(GOLDEN, "golden_schedules.py");
    TensorFile {
        tensors: file
            .tensors
            .into_iter()
            .map(|(k, t)| {
                let data = t.data().iter().map(|&x| F::from_f64(x)).collect();
                (k, Tensor::from_vec(data, t.shape()).unwrap())
            })
            .collect(),
        integers: file.integers,
        metadata: file.metadata,
    }
}

fn dtype<F: Float>() -> &'static str {
    if std::mem::size_of::<F>() == 8 {
        "f64"
    } else {
        "f32"
    }
}

/// A model with one parameter per golden gradient `clip.<dtype>.grads.<name>`, and those
/// gradients.
fn model_and_grads<F: Float>(g: &TensorFile<F>) -> (Vec<Param<F>>, Grads<F>) {
    golden_grads(g, &format!("clip.{}.grads", dtype::<F>()), &NAMES)
}

/// A model with a parameter `name` for each of `names`, and as its gradient the golden tensor
/// `<prefix>.<name>`: the gradient of Σ p ⊙ G with respect to p is G.
fn golden_grads<F: Float>(
    g: &TensorFile<F>,
    prefix: &str,
    names: &[&str],
) -> (Vec<Param<F>>, Grads<F>) {
    let model: Vec<Param<F>> = names
        .iter()
        .map(|n| {
            let shape = tensor(g, &format!("{prefix}.{n}")).shape().to_vec();
            Param::named(*n, Tensor::zeros(&shape))
        })
        .collect();
    let tape = Tape::new();
    let mut loss = tape.constant(Tensor::scalar(F::ZERO));
    for (p, n) in model.iter().zip(names) {
        let gt = tensor(g, &format!("{prefix}.{n}"));
        loss = loss + (tape.param(p) * tape.constant(gt)).sum();
    }
    let grads = loss.backward();
    (model, grads)
}

fn rel_error(a: f64, e: f64) -> f64 {
    (a - e).abs() / e.abs().max(f64::MIN_POSITIVE)
}

/// Every norm type, `tolerance` relative on the norm and on each clipped element.
fn clip_norm_matches_pytorch<F: Float>(tolerance: f64) {
    let g = golden::<F>();
    let d = dtype::<F>();
    for (case, norm_type, max_norm) in CLIPS {
        let (model, mut grads) = model_and_grads(&g);
        let options = ClipOptions::new(max_norm).norm_type(norm_type);
        let total = clip_grad_norm_with(&mut grads, options).unwrap();
        let want = tensor(&g, &format!("clip.{d}.{case}.total")).data()[0].to_f64();
        let err = rel_error(total, want);
        println!("{d} {case}: norm {total} vs torch's {want} ({err:.1e} relative)");
        assert!(
            err <= tolerance,
            "{d} {case}: norm {total} vs torch's {want}"
        );
        for (p, n) in model.iter().zip(NAMES) {
            let want = tensor(&g, &format!("clip.{d}.{case}.{n}"));
            for (i, (a, e)) in grads[p].data().iter().zip(want.data()).enumerate() {
                let err = rel_error(a.to_f64(), e.to_f64());
                assert!(err <= tolerance, "{d} {case}: {n}[{i}] {a} vs torch's {e}");
            }
        }
    }
}

#[test]
fn clip_grad_norm_matches_pytorch_for_every_norm_type_f64() {
    clip_norm_matches_pytorch::<f64>(1e-15);
}

#[test]
fn clip_grad_norm_matches_pytorch_for_every_norm_type_f32() {
    clip_norm_matches_pytorch::<f32>(1e-6);
}

fn clip_value_matches_pytorch<F: Float>() {
    let g = golden::<F>();
    let d = dtype::<F>();
    let (model, mut grads) = model_and_grads(&g);
    clip_grad_value(&mut grads, 0.5);
    for (p, n) in model.iter().zip(NAMES) {
        let want = tensor(&g, &format!("clip.{d}.value.{n}"));
        assert_eq!(grads[p].data(), want.data(), "{d} {n}");
    }
}

#[test]
fn clip_grad_value_matches_pytorch_exactly() {
    clip_value_matches_pytorch::<f64>();
    clip_value_matches_pytorch::<f32>();
}

/// The two-argument form is the options form with PyTorch's defaults (L2, no error).
#[test]
fn clip_grad_norm_is_the_options_form_with_defaults() {
    let g = golden::<f32>();
    let (plain_model, mut plain) = model_and_grads(&g);
    let (model, mut options) = model_and_grads(&g);
    let a = clip_grad_norm(&mut plain, 1.0);
    let b = clip_grad_norm_with(
        &mut options,
        ClipOptions {
            max_norm: 1.0,
            norm_type: 2.0,
            error_if_nonfinite: false,
        },
    )
    .unwrap();
    assert_eq!(a, b);
    for (p, q) in plain_model.iter().zip(&model) {
        assert_eq!(plain[p].data(), options[q].data());
    }
    assert_eq!(ClipOptions::new(1.0).norm_type, 2.0);
    assert!(!ClipOptions::new(1.0).error_if_nonfinite);
}

/// One parameter's gradient equal to `values`.
fn grads_of(values: &[f64]) -> (Param<f64>, Grads<f64>) {
    let p = Param::named("w", Tensor::zeros(&[values.len()]));
    let tape = Tape::new();
    let g = Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap();
    let grads = (tape.param(&p) * tape.constant(g)).sum().backward();
    (p, grads)
}

/// Equal, or both NaN.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// With error_if_nonfinite, an infinite or NaN norm is an error and the gradients are left
/// alone, for every norm type. Without it, torch's result (`clip.nonfinite_*`): the norm is
/// returned and the gradients scaled by max_norm / norm, which zeroes the finite ones when the
/// norm is infinite and makes every one NaN when it is NaN. An infinite or NaN element need not
/// make the norm so: the 0 "norm" counts gradients (1 here), and the -inf norm of [1, inf, -2]
/// is 1; then there is no error, and the gradients are scaled as any others.
#[test]
fn a_nonfinite_norm_is_refused_on_request_and_otherwise_scaled_as_pytorch() {
    let g = golden::<f64>();
    for (label, bad) in [("inf", f64::INFINITY), ("nan", f64::NAN)] {
        for (case, norm_type, max_norm) in CLIPS {
            let want_total = tensor(&g, &format!("clip.nonfinite_{label}.{case}.total")).data()[0];
            let want = tensor(&g, &format!("clip.nonfinite_{label}.{case}.grad"));
            let (p, mut grads) = grads_of(&[1.0, bad, -2.0]);
            let options = ClipOptions::new(max_norm)
                .norm_type(norm_type)
                .error_if_nonfinite(true);
            let total = if want_total.is_finite() {
                clip_grad_norm_with(&mut grads, options).unwrap()
            } else {
                let NonFiniteNorm(total) = clip_grad_norm_with(&mut grads, options).unwrap_err();
                assert!(
                    same(total, want_total),
                    "{label} {case}: error carries {total}"
                );
                assert_eq!(
                    grads[&p].data()[0],
                    1.0,
                    "{label} {case}: gradients left untouched"
                );
                clip_grad_norm_with(&mut grads, options.error_if_nonfinite(false)).unwrap()
            };
            assert!(
                same(total, want_total),
                "{label} {case}: norm {total} vs {want_total}"
            );
            let got = grads[&p].data();
            assert!(
                got.iter().zip(want.data()).all(|(&a, &e)| same(a, e)),
                "{label} {case}: {got:?} vs torch's {:?}",
                want.data()
            );
        }
    }
}

/// Norm types 0 and -inf on gradients that hold zeros, one of them all zeros (`clip.sparse.*`):
/// torch's total is the norm of the per-gradient norms, so the 0 "norm" is 2, the gradients with
/// a nonzero element (not 3, the nonzero elements), and clips by 1/(2 + 1e-6); the -inf norm is
/// the smallest |g|, 0, which clips nothing. With no gradients at all, every norm is 0, as
/// torch's.
#[test]
fn norm_types_zero_and_minus_inf_count_gradients_and_take_the_smallest() {
    let g = golden::<f64>();
    let names = ["a", "b", "c"];
    for (case, norm_type, max_norm) in CLIPS
        .into_iter()
        .filter(|c| c.0 == "p0" || c.0 == "pneginf")
    {
        let (model, mut grads) = golden_grads(&g, "clip.sparse.grads", &names);
        let options = ClipOptions::new(max_norm).norm_type(norm_type);
        let total = clip_grad_norm_with(&mut grads, options).unwrap();
        let want = tensor(&g, &format!("clip.sparse.{case}.total")).data()[0];
        assert_eq!(total, want, "{case}: norm");
        for (p, n) in model.iter().zip(names) {
            let want = tensor(&g, &format!("clip.sparse.{case}.{n}"));
            assert_eq!(grads[p].data(), want.data(), "{case}: {n}");
        }
        let mut none = Grads::<f64>::default();
        assert_eq!(clip_grad_norm_with(&mut none, options).unwrap(), 0.0);
    }
}

/// A misuse, the line it is on, and the message it must panic with.
type Case = (Box<dyn FnOnce()>, u32, &'static str);

#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn bad_arguments_panic_at_the_callers_line_with_a_message() {
    #[track_caller]
    fn with(options: ClipOptions) { let (_, mut grads) = grads_of(&[1.0, 2.0]); let _ = clip_grad_norm_with(&mut grads, options); }
    let cases: Vec<Case> = vec![
        (Box::new(|| with(ClipOptions::new(1.0).norm_type(f64::NAN))), line!(), "clip_grad_norm: norm_type must be a number or ±inf, got NaN"),
        (Box::new(|| { let (_, mut grads) = grads_of(&[]); let _ = clip_grad_norm_with(&mut grads, ClipOptions::new(1.0).norm_type(f64::NEG_INFINITY)); }), line!(), "clip_grad_norm: the -inf norm of an empty gradient (shape [0]) is undefined, as in PyTorch"),
        (Box::new(|| { let (_, mut grads) = grads_of(&[]); let _ = clip_grad_norm_with(&mut grads, ClipOptions::new(1.0).norm_type(-2.0)); }), line!(), "clip_grad_norm: the -2 norm of an empty gradient (shape [0]) is undefined, as in PyTorch"),
        (Box::new(|| { let (_, mut grads) = grads_of(&[4.0, -5.0]); let _ = clip_grad_norm_with(&mut grads, ClipOptions::new(1.0).norm_type(1e4)); }), line!(), "clip_grad_norm: the 10000-norm of these gradients overflows f64 (|g|^10000 is infinite for |g| = 5), though every element is finite; PyTorch returns inf and zeroes every gradient. Use norm_type f64::INFINITY for the largest |g|"),
        (Box::new(|| with(ClipOptions::new(-1.0))), line!(), "clip_grad_norm: max_norm must be non-negative, got -1"),
        (Box::new(|| { let (_, mut grads) = grads_of(&[1.0]); clip_grad_norm(&mut grads, f64::NAN); }), line!(), "clip_grad_norm: max_norm must be non-negative, got NaN"),
        (Box::new(|| { let (_, mut grads) = grads_of(&[1.0]); clip_grad_value(&mut grads, -0.5); }), line!(), "clip_grad_value: clip_value must be non-negative, got -0.5"),
    ];
    for (misuse, line, expected) in cases {
        let (msg, file, at) = panic_of(misuse);
        assert_eq!(msg, expected);
        assert!(file.ends_with("clip_parity.rs") && at == line, "`{expected}` panicked at {file}:{at}, not at this file's line {line}");
    }
}

/// The leftovers golden file's `clip_negative.*` cases (scripts/golden_round2_leftovers.py's
/// CLIPS): (case, norm_type, max_norm, whether the gradient `bias` is all zeros).
const NEGATIVE_CLIPS: [(&str, f64, f64, bool); 5] = [
    ("pm2", -2.0, 0.005, false),
    ("pm0_5", -0.5, 1e-4, false),
    ("pm1", -1.0, 1.0, false),
    ("pm3_5_loose", -3.5, 100.0, false),
    ("pm2_zero", -2.0, 0.1, true),
];

/// A negative finite norm type, as torch 2.15's `clip_grad_norm_` takes it
/// (`scripts/golden_round2_leftovers.py`): the norm of the per-gradient norms,
/// `(Σ_g ‖g‖_p^p)^(1/p)` with `‖g‖_p = (Σ |x|^p)^(1/p)`, e.g. 0.01232419597068209 for p = -2
/// (clipped to max_norm 0.005) and 4.65224544652891e-4 for p = -0.5 (clipped to 1e-4). A zero
/// element makes `|0|^p` infinite, so its gradient's norm is 0, and so is the total
/// (`pm2_zero`: 0, and the gradients are left alone, as max_norm / 1e-6 > 1). The norm and every clipped element agree with torch's float64 ones
/// to 1e-15 relative.
#[test]
fn negative_norm_types_match_pytorch_including_a_zero_gradient() {
    let file: TensorFile<f64> = load("leftovers_golden.safetensors", "golden_round2_leftovers.py");
    for (case, norm_type, max_norm, zero) in NEGATIVE_CLIPS {
        let prefix = if zero {
            "clip_negative.zero.grads"
        } else {
            "clip_negative.grads"
        };
        let (model, mut grads) = golden_grads(&file, prefix, &NAMES);
        let options = ClipOptions::new(max_norm).norm_type(norm_type);
        let total = clip_grad_norm_with(&mut grads, options).unwrap();
        let want = tensor(&file, &format!("clip_negative.{case}.total")).data()[0];
        println!("{case}: norm {total:e} vs torch's {want:e}");
        assert!(
            rel_error(total, want) <= 1e-15,
            "{case}: norm {total:e} vs torch's {want:e}"
        );
        for (p, n) in model.iter().zip(NAMES) {
            let want = tensor(&file, &format!("clip_negative.{case}.{n}"));
            for (i, (&a, &e)) in grads[p].data().iter().zip(want.data()).enumerate() {
                assert!(
                    rel_error(a, e) <= 1e-15,
                    "{case}: {n}[{i}] {a} vs torch's {e}"
                );
            }
        }
        let mut none = Grads::<f64>::default();
        assert_eq!(
            clip_grad_norm_with(&mut none, options).unwrap(),
            0.0,
            "no gradients"
        );
    }
}
