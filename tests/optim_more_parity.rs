//! Adamax, NAdam and RAdam, and `maximize` in every optimizer, against PyTorch: 100-step
//! trajectories from the data `scripts/golden_optim_more.py` wrote with torch's single-tensor
//! (foreach=False) optimizers: tests/data/optim_more_golden.safetensors in float64 and
//! tests/data/optim_more_golden_f32.safetensors in float32. Float64 runs must match torch's
//! float64 to 1e-12 relative; float32 runs must match torch's own float32 results (not the exact
//! values), so they also check that rewind rounds where torch does.

mod support;

use rewind::autograd::io::TensorFile;
use rewind::autograd::{Float, Param, Tape, Tensor};
use rewind::optim::{Adagrad, Adam, Adamax, NAdam, Optimizer, ParamGroup, RAdam, RmsProp, Sgd};
use support::golden::load;
use support::panics::panic_of;
use support::trajectories::{
    assert_resuming_at_step_ten_equals_an_uninterrupted_run, assert_within, grads_at, model,
    trajectory_distances, Configs,
};

const GOLDEN_F64: &str = "optim_more_golden.safetensors";
const GOLDEN_F32: &str = "optim_more_golden_f32.safetensors";

fn golden<F: Float>(name: &str) -> TensorFile<F> {
    load(name, "golden_optim_more.py")
}

/// The bias in a group of its own at half the learning rate and without weight decay, as the
/// script's `bias_group`.
fn bias_group() -> ParamGroup {
    ParamGroup::biases().lr_scale(0.5).weight_decay(0.0)
}

/// The configurations of scripts/golden_optim_more.py's CONFIGS, by the same names.
fn configs<F: Float>() -> Configs<F> {
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

/// In f64 every element stays within 1e-12 of torch's, relative to itself.
#[test]
fn new_optimizers_and_maximize_match_pytorch_f64_for_a_hundred_steps() {
    let distances = trajectory_distances(&golden::<f64>(GOLDEN_F64), configs());
    assert_within(&distances, GOLDEN_F64, |d| d.elementwise, 1e-12);
}

/// In f32, within 2e-7 of the largest weight of its tensor (a few ulps): the step constants are
/// computed in f64 and rounded once, and each element-wise step rounds where torch's kernel does
/// (see tests/optim_parity.rs for why the measure is normwise).
#[test]
fn new_optimizers_and_maximize_match_pytorch_f32_for_a_hundred_steps() {
    let distances = trajectory_distances(&golden::<f32>(GOLDEN_F32), configs());
    assert_within(&distances, GOLDEN_F32, |d| d.normwise, 2e-7);
}

#[test]
fn saving_at_step_ten_and_resuming_equals_an_uninterrupted_run() {
    assert_resuming_at_step_ten_equals_an_uninterrupted_run(
        &golden(GOLDEN_F64),
        configs::<f64>,
        "rewind-optim-more",
    );
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
        ("Sgd: lr must be finite and >= 0, got -0.1", || {
            drop(Sgd::<f32>::new(-0.1))
        }),
        ("Sgd: momentum must be finite and >= 0, got -0.9", || {
            drop(Sgd::<f32>::new(0.1).momentum(-0.9))
        }),
        ("Adam: beta2 must be in [0, 1), got 1.0", || {
            drop(Adam::<f32>::default().betas(0.9, 1.0))
        }),
        (
            "Adam: weight_decay must be finite and >= 0, got -0.01",
            || drop(Adam::<f32>::adamw(1e-3).weight_decay(-0.01)),
        ),
        (
            "Adagrad: lr_decay must be finite and >= 0, got -0.5",
            || drop(Adagrad::<f32>::default().lr_decay(-0.5)),
        ),
        (
            "Adagrad: initial_accumulator_value must be finite and >= 0, got -1.0",
            || drop(Adagrad::<f32>::default().initial_accumulator_value(-1.0)),
        ),
        ("RmsProp: alpha must be in [0, 1], got -0.99", || {
            drop(RmsProp::<f32>::default().alpha(-0.99))
        }),
        ("Adamax: lr must be finite and >= 0, got -0.1", || {
            drop(Adamax::<f32>::new(-0.1))
        }),
        (
            "Adamax: weight_decay must be finite and >= 0, got NaN",
            || drop(Adamax::<f32>::default().weight_decay(f64::NAN)),
        ),
        ("NAdam: beta1 must be in [0, 1), got 1.0", || {
            drop(NAdam::<f32>::default().betas(1.0, 0.999))
        }),
        (
            "NAdam: momentum_decay must be finite and >= 0, got -0.004",
            || drop(NAdam::<f32>::default().momentum_decay(-4e-3)),
        ),
        ("NAdam: eps must be finite and > 0, got -1e-8", || {
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

/// A misuse, the line it is on, and the message it must panic with.
type Case = (Box<dyn FnOnce()>, u32, &'static str);

/// What PyTorch accepts but would make a rate infinite or a weight NaN (an infinite learning
/// rate, momentum or weight decay; eps 0, which divides 0 by 0 where a gradient is 0; a NaN
/// dampening; RMSprop's alpha above 1, which makes v negative) panics at the caller's line,
/// naming the optimizer, the argument and the value: in a builder, in `set_lr` (what a schedule
/// calls) and in a parameter group.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn arguments_that_would_poison_the_weights_panic_at_the_callers_line() {
    let cases: Vec<Case> = vec![
        (Box::new(|| { Adam::<f64>::new(0.1).set_lr(f64::NAN); }), line!(), "Adam: lr must be finite and >= 0, got NaN"),
        (Box::new(|| { let mut opt: Box<dyn Optimizer<f32>> = Box::new(Sgd::new(0.1)); opt.set_lr(f64::INFINITY); }), line!(), "Sgd: lr must be finite and >= 0, got inf"),
        (Box::new(|| { RmsProp::<f64>::default().set_lr(-1e-3); }), line!(), "RmsProp: lr must be finite and >= 0, got -0.001"),
        (Box::new(|| { NAdam::<f64>::new(f64::INFINITY); }), line!(), "NAdam: lr must be finite and >= 0, got inf"),
        (Box::new(|| { Adam::<f64>::adamw(f64::NAN); }), line!(), "Adam: lr must be finite and >= 0, got NaN"),
        (Box::new(|| { Adam::<f64>::default().eps(0.0); }), line!(), "Adam: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { RmsProp::<f64>::default().eps(f64::INFINITY); }), line!(), "RmsProp: eps must be finite and > 0, got inf"),
        (Box::new(|| { Adagrad::<f64>::default().eps(0.0); }), line!(), "Adagrad: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { Adamax::<f64>::default().eps(0.0); }), line!(), "Adamax: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { RAdam::<f64>::default().eps(0.0); }), line!(), "RAdam: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { NAdam::<f64>::default().eps(0.0); }), line!(), "NAdam: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { Adagrad::<f64>::default().lr_decay(f64::INFINITY); }), line!(), "Adagrad: lr_decay must be finite and >= 0, got inf"),
        (Box::new(|| { Adagrad::<f64>::default().initial_accumulator_value(f64::INFINITY); }), line!(), "Adagrad: initial_accumulator_value must be finite and >= 0, got inf"),
        (Box::new(|| { Sgd::<f64>::new(0.1).momentum(f64::INFINITY); }), line!(), "Sgd: momentum must be finite and >= 0, got inf"),
        (Box::new(|| { Sgd::<f64>::new(0.1).momentum(0.9).dampening(f64::NAN); }), line!(), "Sgd: dampening must be finite, got NaN"),
        (Box::new(|| { RmsProp::<f64>::default().alpha(1.5); }), line!(), "RmsProp: alpha must be in [0, 1], got 1.5"),
        (Box::new(|| { RmsProp::<f64>::default().momentum(f64::INFINITY); }), line!(), "RmsProp: momentum must be finite and >= 0, got inf"),
        (Box::new(|| { Adam::<f64>::adamw(0.1).weight_decay(f64::INFINITY); }), line!(), "Adam: weight_decay must be finite and >= 0, got inf"),
        (Box::new(|| { NAdam::<f64>::default().momentum_decay(f64::INFINITY); }), line!(), "NAdam: momentum_decay must be finite and >= 0, got inf"),
        (Box::new(|| { ParamGroup::biases().lr_scale(f64::NAN); }), line!(), "ParamGroup: lr_scale must be finite and >= 0, got NaN"),
        (Box::new(|| { ParamGroup::biases().lr_scale(-0.5); }), line!(), "ParamGroup: lr_scale must be finite and >= 0, got -0.5"),
        (Box::new(|| { ParamGroup::biases().weight_decay(f64::INFINITY); }), line!(), "ParamGroup: weight_decay must be finite and >= 0, got inf"),
        (Box::new(|| { ParamGroup::biases().weight_decay(-1e-2); }), line!(), "ParamGroup: weight_decay must be finite and >= 0, got -0.01"),
        (Box::new(|| { Sgd::<f64>::new(1e300).group(ParamGroup::biases().lr_scale(1e10)); }), line!(), "Sgd: lr 1e300 times a group's lr_scale 1e10 is not finite"),
        (Box::new(|| { Adam::<f64>::new(0.1).group(ParamGroup::biases().lr_scale(1e300)).set_lr(1e10); }), line!(), "Adam: lr 1e10 times a group's lr_scale 1e300 is not finite"),
        // An f32 optimizer rounds each value to f32 before a step: above 3.4e38 it is infinite.
        (Box::new(|| { Adam::<f32>::new(1e39); }), line!(), "Adam: lr must be finite and >= 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Sgd::<f32>::new(0.1).set_lr(1e39); }), line!(), "Sgd: lr must be finite and >= 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Sgd::<f32>::new(0.1).weight_decay(1e39); }), line!(), "Sgd: weight_decay must be finite and >= 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Sgd::<f32>::new(0.1).momentum(0.9).dampening(-1e39); }), line!(), "Sgd: dampening must be finite, got -1e39 (infinite as f32)"),
        (Box::new(|| { RmsProp::<f32>::default().eps(1e39); }), line!(), "RmsProp: eps must be finite and > 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Sgd::<f32>::new(0.1).group(ParamGroup::biases().weight_decay(1e39)); }), line!(), "Sgd: a group's weight_decay must be finite and >= 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Sgd::<f32>::new(1e30).group(ParamGroup::biases().lr_scale(1e10)); }), line!(), "Sgd: lr 1e30 times a group's lr_scale 1e10 is not finite (infinite as f32)"),
    ];
    for (misuse, line, expected) in cases {
        let (msg, file, at) = panic_of(misuse);
        assert_eq!(msg, expected);
        assert!(file.ends_with("optim_more_parity.rs") && at == line, "`{expected}` panicked at {file}:{at}, not at this file's line {line}");
    }
}
