//! Adamax, NAdam and RAdam, and `maximize` in every optimizer, against PyTorch: 100-step
//! trajectories from the data `scripts/golden_optim_more.py` wrote with torch's single-tensor
//! (foreach=False) optimizers: tests/data/optim_more_golden.safetensors in float64 and
//! tests/data/optim_more_golden_f32.safetensors in float32. Float64 runs must match torch's
//! float64 to 1e-12 relative; float32 runs must match torch's own float32 results (not the exact
//! values), so they also check that rewind rounds where torch does.

use std::path::Path;

use rewind::autograd::io::{load_tensors, TensorFile};
use rewind::autograd::{Float, Grads, Param, Tape, Tensor};
use rewind::optim::{
    Adagrad, Adam, Adamax, NAdam, OptimState, Optimizer, ParamGroup, RAdam, RmsProp, Sgd,
};

const STEPS: usize = 100;
const GOLDEN_F64: &str = "tests/data/optim_more_golden.safetensors";
const GOLDEN_F32: &str = "tests/data/optim_more_golden_f32.safetensors";

fn golden<F: Float>(file: &str) -> TensorFile<F> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    load_tensors(&path).expect("golden data from scripts/golden_optim_more.py")
}

fn tensor<F: Float>(g: &TensorFile<F>, name: &str) -> Tensor<F> {
    g.tensors
        .get(name)
        .unwrap_or_else(|| panic!("golden data lacks {name}"))
        .clone()
}

/// Step `t` of a [T, ...] tensor.
fn row<F: Float>(t: &Tensor<F>, i: usize) -> Tensor<F> {
    let inner = t.shape()[1..].to_vec();
    let n: usize = inner.iter().product();
    Tensor::from_vec(t.data()[i * n..(i + 1) * n].to_vec(), &inner).unwrap()
}

fn model<F: Float>(g: &TensorFile<F>) -> Vec<Param<F>> {
    vec![
        Param::named("weight", tensor(g, "params.weight")),
        Param::named("bias", tensor(g, "params.bias")),
    ]
}

/// Gradients equal to the golden ones at step `t`: the gradient of Σ p ⊙ G with respect to p is G.
fn grads_at<F: Float>(g: &TensorFile<F>, model: &[Param<F>], t: usize) -> Grads<F> {
    let tape = Tape::new();
    let mut loss = tape.constant(Tensor::scalar(F::ZERO));
    for p in model {
        let gt = row(&tensor(g, &format!("grads.{}", p.name().unwrap())), t);
        loss = loss + (tape.param(p) * tape.constant(gt)).sum();
    }
    loss.backward()
}

/// The bias in a group of its own at half the learning rate and without weight decay, as the
/// script's `bias_group`.
fn bias_group() -> ParamGroup {
    ParamGroup::biases().lr_scale(0.5).weight_decay(0.0)
}

/// The configurations of scripts/golden_optim_more.py's CONFIGS, by the same names.
fn configs<F: Float>() -> Vec<(&'static str, Box<dyn Optimizer<F>>)> {
    vec![
        ("adamax_defaults", Box::new(Adamax::default())),
        (
            "adamax",
            Box::new(
                Adamax::new(0.01)
                    .betas(0.8, 0.99)
                    .eps(1e-6)
                    .weight_decay(0.1),
            ),
        ),
        (
            "adamax_groups",
            Box::new(Adamax::new(0.01).weight_decay(0.1).group(bias_group())),
        ),
        ("nadam_defaults", Box::new(NAdam::default())),
        (
            "nadam",
            Box::new(
                NAdam::new(0.01)
                    .betas(0.8, 0.99)
                    .eps(1e-6)
                    .weight_decay(0.1)
                    .momentum_decay(0.01),
            ),
        ),
        (
            "nadamw",
            Box::new(
                NAdam::new(0.01)
                    .weight_decay(0.1)
                    .decoupled_weight_decay(true),
            ),
        ),
        (
            "nadam_groups",
            Box::new(NAdam::new(0.01).weight_decay(0.1).group(bias_group())),
        ),
        ("radam_defaults", Box::new(RAdam::default())),
        (
            "radam",
            Box::new(
                RAdam::new(0.01)
                    .betas(0.8, 0.99)
                    .eps(1e-6)
                    .weight_decay(0.1),
            ),
        ),
        (
            "radamw",
            Box::new(
                RAdam::new(0.01)
                    .weight_decay(0.1)
                    .decoupled_weight_decay(true),
            ),
        ),
        (
            "radam_groups",
            Box::new(RAdam::new(0.01).weight_decay(0.1).group(bias_group())),
        ),
        (
            "sgd_maximize",
            Box::new(
                Sgd::new(0.1)
                    .momentum(0.9)
                    .nesterov(true)
                    .weight_decay(0.1)
                    .maximize(true),
            ),
        ),
        (
            "adam_maximize",
            Box::new(Adam::new(0.01).weight_decay(0.1).maximize(true)),
        ),
        (
            "adamw_amsgrad_maximize",
            Box::new(
                Adam::adamw(0.01)
                    .weight_decay(0.1)
                    .amsgrad(true)
                    .maximize(true),
            ),
        ),
        (
            "adagrad_maximize",
            Box::new(
                Adagrad::new(0.1)
                    .lr_decay(0.01)
                    .weight_decay(0.1)
                    .maximize(true),
            ),
        ),
        (
            "rmsprop_maximize",
            Box::new(
                RmsProp::new(0.01)
                    .centered(true)
                    .momentum(0.5)
                    .weight_decay(0.1)
                    .maximize(true),
            ),
        ),
        (
            "adamax_maximize",
            Box::new(Adamax::new(0.01).weight_decay(0.1).maximize(true)),
        ),
        (
            "nadam_maximize",
            Box::new(NAdam::new(0.01).weight_decay(0.1).maximize(true)),
        ),
        (
            "nadamw_maximize",
            Box::new(
                NAdam::new(0.01)
                    .weight_decay(0.1)
                    .decoupled_weight_decay(true)
                    .maximize(true),
            ),
        ),
        (
            "radam_maximize",
            Box::new(RAdam::new(0.01).weight_decay(0.1).maximize(true)),
        ),
    ]
}

/// The largest distance of a run from torch's over every parameter and step: element by
/// element relative to the element (`elementwise`), and relative to the largest element of its
/// tensor at that step (`normwise`, ‖a - e‖∞ / ‖e‖∞), which does not blow up where a weight
/// passes near zero.
#[derive(Clone, Copy, Debug, Default)]
struct Distance {
    elementwise: f64,
    normwise: f64,
}

impl Distance {
    fn of<F: Float>(actual: &[F], expected: &[F]) -> Self {
        assert_eq!(actual.len(), expected.len());
        let pairs = || {
            actual
                .iter()
                .zip(expected)
                .map(|(a, e)| (a.to_f64(), e.to_f64()))
        };
        let largest = pairs().fold(0.0, |m, (_, e)| e.abs().max(m));
        Distance {
            elementwise: pairs().fold(0.0, |m, (a, e)| ((a - e).abs() / e.abs().max(1e-12)).max(m)),
            normwise: pairs().fold(0.0, |m, (a, e)| (a - e).abs().max(m)) / largest,
        }
    }

    fn max(self, other: Self) -> Self {
        Distance {
            elementwise: self.elementwise.max(other.elementwise),
            normwise: self.normwise.max(other.normwise),
        }
    }
}

/// Runs every configuration for [`STEPS`] steps on the golden start and gradients of `file`, and
/// checks `measure` of its distance from torch's trajectory against `tolerance`.
fn assert_trajectories_within<F: Float>(file: &str, measure: fn(&Distance) -> f64, tolerance: f64) {
    let g = golden::<F>(file);
    let mut report = Vec::new();
    for (name, mut opt) in configs::<F>() {
        let mut m = model(&g);
        let mut worst = Distance::default();
        for t in 0..STEPS {
            let grads = grads_at(&g, &m, t);
            opt.step(&mut m, &grads);
            for p in &m {
                let expected = row(&tensor(&g, &format!("{name}.{}", p.name().unwrap())), t);
                worst = worst.max(Distance::of(p.value().data(), expected.data()));
            }
        }
        report.push((name, worst));
    }
    println!("{file}: largest relative error over {STEPS} steps (element, normwise)");
    for (name, d) in &report {
        println!("{name:<24} {:>9.2e} {:>9.2e}", d.elementwise, d.normwise);
    }
    for (name, d) in &report {
        assert!(
            measure(d) <= tolerance,
            "{name} in {file}: relative error {:e} exceeds {tolerance:e}",
            measure(d)
        );
    }
}

/// In f64 every element stays within 1e-12 of torch's, relative to itself.
#[test]
fn new_optimizers_and_maximize_match_pytorch_f64_for_a_hundred_steps() {
    assert_trajectories_within::<f64>(GOLDEN_F64, |d| d.elementwise, 1e-12);
}

/// In f32, within 2e-7 of the largest weight of its tensor (a few ulps): the step constants are
/// computed in f64 and rounded once, and each element-wise step rounds where torch's kernel does
/// (see tests/optim_parity.rs for why the measure is normwise).
#[test]
fn new_optimizers_and_maximize_match_pytorch_f32_for_a_hundred_steps() {
    assert_trajectories_within::<f32>(GOLDEN_F32, |d| d.normwise, 2e-7);
}

#[test]
fn saving_at_step_ten_and_resuming_equals_an_uninterrupted_run() {
    let g = golden::<f64>(GOLDEN_F64);
    let dir = std::env::temp_dir().join(format!("rewind-optim-more-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ((name, mut whole), (_, mut first_part)) in configs::<f64>().into_iter().zip(configs()) {
        let mut straight = model(&g);
        for t in 0..STEPS {
            let grads = grads_at(&g, &straight, t);
            whole.step(&mut straight, &grads);
        }
        let mut resumed = model(&g);
        for t in 0..10 {
            let grads = grads_at(&g, &resumed, t);
            first_part.step(&mut resumed, &grads);
        }
        let file = dir.join(format!("{name}.safetensors"));
        first_part.state().save(&file).unwrap();
        let (_, mut rest) = configs::<f64>()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        rest.set_lr(123.0); // the saved state must restore it
        rest.load_state(&OptimState::load(&file).unwrap()).unwrap();
        for t in 10..STEPS {
            let grads = grads_at(&g, &resumed, t);
            rest.step(&mut resumed, &grads);
        }
        for (a, b) in straight.iter().zip(&resumed) {
            assert_eq!(
                a.value().data(),
                b.value().data(),
                "{name}: resumed run differs"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The state holds each parameter's buffers under its name, as torch's state_dict holds them per
/// parameter: NAdam's running product of momentum coefficients too.
#[test]
fn state_is_keyed_by_parameter_name() {
    let g = golden::<f64>(GOLDEN_F64);
    let keys = |opt: &mut dyn Optimizer<f64>| {
        let mut m = model(&g);
        let grads = grads_at(&g, &m, 0);
        opt.step(&mut m, &grads);
        let s = opt.state();
        let tensors: Vec<String> = s.tensors.keys().cloned().collect();
        let scalars: Vec<String> = s.scalars.keys().cloned().collect();
        (s.kind, tensors, scalars)
    };
    let steps = ["bias.step", "lr", "weight.step"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        keys(&mut Adamax::default()),
        (
            "adamax".into(),
            [
                "bias.exp_avg",
                "bias.exp_inf",
                "weight.exp_avg",
                "weight.exp_inf"
            ]
            .map(String::from)
            .to_vec(),
            steps.clone()
        )
    );
    let nadam_buffers = [
        "bias.exp_avg",
        "bias.exp_avg_sq",
        "bias.mu_product",
        "weight.exp_avg",
        "weight.exp_avg_sq",
        "weight.mu_product",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        keys(&mut NAdam::default()),
        ("nadam".into(), nadam_buffers.clone(), steps.clone())
    );
    assert_eq!(
        keys(&mut NAdam::default().decoupled_weight_decay(true)),
        ("nadamw".into(), nadam_buffers, steps.clone())
    );
    let radam_buffers = [
        "bias.exp_avg",
        "bias.exp_avg_sq",
        "weight.exp_avg",
        "weight.exp_avg_sq",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        keys(&mut RAdam::default()),
        ("radam".into(), radam_buffers.clone(), steps.clone())
    );
    assert_eq!(
        keys(&mut RAdam::default().decoupled_weight_decay(true)),
        ("radamw".into(), radam_buffers, steps)
    );
}

#[test]
fn loading_another_variants_state_is_an_error() {
    let nadamw = NAdam::<f64>::default().decoupled_weight_decay(true);
    let err = NAdam::<f64>::default()
        .load_state(&nadamw.state())
        .unwrap_err();
    assert_eq!(err.to_string(), "optimizer state is for nadamw, not nadam");
    let err = RAdam::<f64>::default()
        .load_state(&Adamax::<f64>::default().state())
        .unwrap_err();
    assert_eq!(err.to_string(), "optimizer state is for adamax, not radam");
}

/// With `maximize`, every optimizer climbs -(w - 3)² to its top at w = 3.
#[test]
fn maximize_climbs_to_the_top_with_every_optimizer() {
    let cases: Vec<(&str, Box<dyn Optimizer<f64>>)> = vec![
        ("sgd", Box::new(Sgd::new(0.1).maximize(true))),
        ("adam", Box::new(Adam::new(0.1).maximize(true))),
        ("adamw", Box::new(Adam::adamw(0.1).maximize(true))),
        ("adagrad", Box::new(Adagrad::new(0.5).maximize(true))),
        ("rmsprop", Box::new(RmsProp::new(0.05).maximize(true))),
        ("adamax", Box::new(Adamax::new(0.1).maximize(true))),
        ("nadam", Box::new(NAdam::new(0.1).maximize(true))),
        ("radam", Box::new(RAdam::new(0.1).maximize(true))),
    ];
    for (name, mut opt) in cases {
        let mut model = vec![Param::named("w", Tensor::scalar(0.0))];
        for _ in 0..500 {
            let tape = Tape::new();
            let w = tape.param(&model[0]);
            let objective = -(w - 3.0).powf(2.0);
            opt.step(&mut model, &objective.backward());
        }
        let w = model[0].value().item();
        assert!((w - 3.0).abs() < 0.05, "{name}: w = {w} after 500 steps");
    }
}

/// What PyTorch refuses with a ValueError panics, at the caller's line, naming the optimizer,
/// the argument and the value.
#[test]
fn every_optimizer_refuses_the_arguments_pytorch_refuses() {
    type Build = fn();
    let cases: [(&str, Build); 14] = [
        ("Sgd: lr must be >= 0, got -0.1", || {
            drop(Sgd::<f32>::new(-0.1))
        }),
        ("Sgd: momentum must be >= 0, got -0.9", || {
            drop(Sgd::<f32>::new(0.1).momentum(-0.9))
        }),
        ("Adam: beta2 must be in [0, 1), got 1.0", || {
            drop(Adam::<f32>::default().betas(0.9, 1.0))
        }),
        ("Adam: weight_decay must be >= 0, got -0.01", || {
            drop(Adam::<f32>::adamw(1e-3).weight_decay(-0.01))
        }),
        ("Adagrad: lr_decay must be >= 0, got -0.5", || {
            drop(Adagrad::<f32>::default().lr_decay(-0.5))
        }),
        (
            "Adagrad: initial_accumulator_value must be >= 0, got -1.0",
            || drop(Adagrad::<f32>::default().initial_accumulator_value(-1.0)),
        ),
        ("RmsProp: alpha must be >= 0, got -0.99", || {
            drop(RmsProp::<f32>::default().alpha(-0.99))
        }),
        ("Adamax: lr must be >= 0, got -0.1", || {
            drop(Adamax::<f32>::new(-0.1))
        }),
        ("Adamax: weight_decay must be >= 0, got NaN", || {
            drop(Adamax::<f32>::default().weight_decay(f64::NAN))
        }),
        ("NAdam: beta1 must be in [0, 1), got 1.0", || {
            drop(NAdam::<f32>::default().betas(1.0, 0.999))
        }),
        ("NAdam: momentum_decay must be >= 0, got -0.004", || {
            drop(NAdam::<f32>::default().momentum_decay(-4e-3))
        }),
        ("NAdam: eps must be >= 0, got -1e-8", || {
            drop(NAdam::<f32>::default().eps(-1e-8))
        }),
        ("RAdam: beta2 must be in [0, 1), got NaN", || {
            drop(RAdam::<f32>::default().betas(0.9, f64::NAN))
        }),
        ("RAdam: beta1 must be in [0, 1), got -0.1", || {
            drop(RAdam::<f32>::default().betas(-0.1, 0.999))
        }),
    ];
    for (expected, build) in cases {
        let panic = std::panic::catch_unwind(build).expect_err(expected);
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        assert_eq!(message, expected);
    }
}
