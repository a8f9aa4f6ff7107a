//! Adamax, NAdam, RAdam, Adadelta, Rprop and Asgd, `maximize` in every optimizer, and per-group
//! betas, eps, momentum and maximize, against
//! PyTorch (and L-BFGS, against tests/data/lbfgs_golden.safetensors from
//! `scripts/golden_lbfgs.py`): 100-step
//! trajectories from the data `scripts/golden_optim_more.py` wrote with torch's single-tensor
//! (foreach=False) optimizers: tests/data/optim_more_golden.safetensors in float64 and
//! tests/data/optim_more_golden_f32.safetensors in float32. Float64 runs must match torch's
//! float64 to 1e-12 relative; float32 runs must match torch's own float32 results (not the exact
//! values), so they also check that rewind rounds where torch does.

use crate::support::golden::{load, row, tensor};
use crate::support::panics::panic_of;
use crate::support::trajectories::{
    assert_resuming_at_step_ten_equals_an_uninterrupted_run, assert_within, grads_at, model,
    trajectory_distances, Configs, STEPS,
};
use rewind::autograd::io::TensorFile;
use rewind::autograd::Grads;
use rewind::autograd::{Float, Param, Tape, Tensor};
use rewind::optim::{
    Adadelta, Adagrad, Adam, Adamax, Asgd, Lbfgs, LineSearch, NAdam, Optimizer, ParamGroup, RAdam,
    RmsProp, Rprop, Sgd,
};

const GOLDEN_F64: &str = "optim_more_golden.safetensors";
const GOLDEN_F32: &str = "optim_more_golden_f32.safetensors";
const GOLDEN_LBFGS: &str = "lbfgs_golden.safetensors";

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
        ("adadelta_defaults", Box::new(Adadelta::default())),
        (
            "adadelta",
            Box::new(Adadelta::new(0.5).rho(0.8).eps(1e-5).weight_decay(0.1)),
        ),
        (
            "adadelta_groups",
            Box::new(Adadelta::new(1.0).weight_decay(0.1).group(bias_group())),
        ),
        (
            "adadelta_maximize",
            Box::new(Adadelta::new(0.5).weight_decay(0.1).maximize(true)),
        ),
        ("rprop_defaults", Box::new(Rprop::default())),
        (
            "rprop",
            Box::new(Rprop::new(0.05).etas(0.3, 1.5).step_sizes(1e-3, 0.2)),
        ),
        (
            "rprop_groups",
            Box::new(Rprop::new(0.01).group(ParamGroup::biases().lr_scale(0.5))),
        ),
        ("rprop_maximize", Box::new(Rprop::new(0.05).maximize(true))),
        ("asgd_defaults", Box::new(Asgd::default())),
        (
            "asgd",
            Box::new(
                Asgd::new(0.05)
                    .lambd(1e-3)
                    .alpha(0.5)
                    .t0(10.0)
                    .weight_decay(0.1),
            ),
        ),
        (
            "asgd_groups",
            Box::new(
                Asgd::new(0.05)
                    .t0(10.0)
                    .weight_decay(0.1)
                    .group(bias_group()),
            ),
        ),
        (
            "asgd_maximize",
            Box::new(Asgd::new(0.05).t0(10.0).weight_decay(0.1).maximize(true)),
        ),
        (
            "sgd_group_options",
            Box::new(
                Sgd::new(0.1)
                    .momentum(0.9)
                    .group(ParamGroup::biases().momentum(0.5).maximize(true)),
            ),
        ),
        (
            "adam_group_options",
            Box::new(
                Adam::new(0.01).group(
                    ParamGroup::biases()
                        .betas(0.8, 0.99)
                        .eps(1e-6)
                        .maximize(true),
                ),
            ),
        ),
        (
            "adagrad_group_options",
            Box::new(Adagrad::new(0.1).group(ParamGroup::biases().eps(1e-3).maximize(true))),
        ),
        (
            "rmsprop_group_options",
            Box::new(
                RmsProp::new(0.01)
                    .momentum(0.5)
                    .group(ParamGroup::biases().momentum(0.9).eps(1e-4)),
            ),
        ),
        (
            "adamax_group_options",
            Box::new(Adamax::new(0.01).group(ParamGroup::biases().betas(0.8, 0.99).eps(1e-6))),
        ),
        (
            "nadam_group_options",
            Box::new(NAdam::new(0.01).group(ParamGroup::biases().betas(0.85, 0.995).eps(1e-5))),
        ),
        (
            "radam_group_options",
            Box::new(RAdam::new(0.01).group(ParamGroup::biases().betas(0.8, 0.99).maximize(true))),
        ),
        (
            "adadelta_group_options",
            Box::new(Adadelta::default().group(ParamGroup::biases().eps(1e-4).maximize(true))),
        ),
        (
            "rprop_group_options",
            Box::new(Rprop::new(0.01).group(ParamGroup::biases().maximize(true))),
        ),
        (
            "asgd_group_options",
            Box::new(
                Asgd::new(0.05)
                    .t0(10.0)
                    .group(ParamGroup::biases().maximize(true)),
            ),
        ),
    ]
}

/// ASGD's average of the weights (its state `ax`), step by step, within `tolerance` of torch's
/// (`<config>.ax.*` in the golden file), relative to the largest element of its tensor.
fn check_asgd_averages<F: Float>(file: &str, tolerance: f64) {
    let g = golden::<F>(file);
    for (name, mut opt) in configs::<F>() {
        if !name.starts_with("asgd") {
            continue;
        }
        let mut m = model(&g);
        for t in 0..STEPS {
            let grads = grads_at(&g, &m, t);
            opt.step(&mut m, &grads);
            let state = opt.state();
            for p in ["weight", "bias"] {
                let got = state.tensors[&format!("{p}.ax")].data().to_vec();
                let want = row(&tensor(&g, &format!("{name}.ax.{p}")), t);
                let largest = want.data().iter().fold(0.0, |m, e| e.to_f64().abs().max(m));
                let worst = got
                    .iter()
                    .zip(want.data())
                    .fold(0.0, |m, (a, e)| (a.to_f64() - e.to_f64()).abs().max(m));
                assert!(
                    worst <= tolerance * largest,
                    "{name} in {file}: ax.{p} at step {t} is {:e} of its largest element off torch's",
                    worst / largest
                );
            }
        }
    }
}

/// ASGD averages the weights from step t0 + 1 on (the `asgd*` configurations set t0 10; with the
/// default 1e6 the average is the weights themselves).
#[test]
fn asgd_averages_match_pytorch_f64_and_f32() {
    check_asgd_averages::<f64>(GOLDEN_F64, 1e-12);
    check_asgd_averages::<f32>(GOLDEN_F32, 2e-7);
}

/// In f64 every element stays within 1e-12 of torch's, relative to itself.
#[test]
fn new_optimizers_and_maximize_match_pytorch_f64_for_a_hundred_steps() {
    let distances = trajectory_distances(&golden::<f64>(GOLDEN_F64), configs());
    assert_within(&distances, GOLDEN_F64, |d| d.elementwise, 1e-12);
}

/// In f32, within 2e-7 of the largest weight of its tensor (a few ulps): the step constants are
/// computed in f64 and rounded once, and each element-wise step rounds where torch's kernel does
/// (see tests/optim/optim_parity.rs for why the measure is normwise). Adadelta's within 4e-7: the torch
/// that wrote its data (an AVX2 build) takes f32 square roots that are not correctly rounded
/// (there, `torch.sqrt` of f32 values drawn from [0, 0.1) differed from the correctly rounded
/// root in 17% of them), and Adadelta takes two a step.
#[test]
fn new_optimizers_and_maximize_match_pytorch_f32_for_a_hundred_steps() {
    let distances = trajectory_distances(&golden::<f32>(GOLDEN_F32), configs());
    let (adadelta, others): (Vec<_>, Vec<_>) = distances
        .into_iter()
        .partition(|(name, _)| name.starts_with("adadelta"));
    assert_within(&others, GOLDEN_F32, |d| d.normwise, 2e-7);
    assert_within(&adadelta, GOLDEN_F32, |d| d.normwise, 4e-7);
}

#[test]
fn saving_at_step_ten_and_resuming_equals_an_uninterrupted_run() {
    assert_resuming_at_step_ten_equals_an_uninterrupted_run(
        &golden(GOLDEN_F64),
        configs::<f64>,
        "rewind-optim-more",
    );
}

/// The loss a case of scripts/golden_lbfgs.py minimises, as a closure for `Lbfgs::step`: its
/// value at the parameters (times `sign`) and its gradients.
type Closure = Box<dyn FnMut(&Vec<Param<f64>>) -> (f64, Grads<f64>)>;

/// The golden regression, mean((tanh(x·weight + bias) - y)²), times `sign`, and its start.
fn tanh_problem(g: &TensorFile<f64>, sign: f64) -> (Vec<Param<f64>>, Closure) {
    let (x, y) = (tensor(g, "tanh.x"), tensor(g, "tanh.y"));
    let start = vec![
        Param::named("weight", tensor(g, "tanh.params.weight")),
        Param::named("bias", tensor(g, "tanh.params.bias")),
    ];
    let closure = move |m: &Vec<Param<f64>>| {
        let tape = Tape::new();
        let (w, b) = (tape.param(&m[0]), tape.param(&m[1]));
        let fit = tape.constant(x.clone()).matmul(w) + b;
        let loss = (fit.tanh() - tape.constant(y.clone())).powf(2.0).mean() * sign;
        (loss.value().item(), loss.backward())
    };
    (start, Box::new(closure))
}

/// Rosenbrock's function (1 - a)² + 100 (b - a²)² and the golden start (-1.5, 2).
fn rosenbrock_problem(g: &TensorFile<f64>) -> (Vec<Param<f64>>, Closure) {
    let start = vec![
        Param::named("a", tensor(g, "rosenbrock.params.a")),
        Param::named("b", tensor(g, "rosenbrock.params.b")),
    ];
    let closure = |m: &Vec<Param<f64>>| {
        let tape = Tape::new();
        let (a, b) = (tape.param(&m[0]), tape.param(&m[1]));
        let valley = (b - a.powf(2.0)).powf(2.0).sum() * 100.0;
        let loss = (a - 1.0).powf(2.0).sum() + valley;
        (loss.value().item(), loss.backward())
    };
    (start, Box::new(closure))
}

/// Runs `opt` for as many `step(closure)` calls as the golden case `case` made, checking after
/// each the loss it returned, the counts of evaluations and iterations (exactly: the line search
/// took the same path) and the parameters, within `tolerance` of torch's relative to the largest
/// element of each.
fn check_lbfgs(
    g: &TensorFile<f64>,
    case: &str,
    mut opt: Lbfgs<f64>,
    (mut model, mut closure): (Vec<Param<f64>>, Closure),
    tolerance: f64,
) {
    let losses = tensor(g, &format!("{case}.loss"));
    let evals = tensor(g, &format!("{case}.func_evals"));
    let iters = tensor(g, &format!("{case}.n_iter"));
    let close = |what: String, got: &[f64], want: &[f64]| {
        let largest = want.iter().fold(0.0f64, |m, e| e.abs().max(m));
        let worst = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (a, e)| (a - e).abs().max(m));
        assert!(
            worst <= tolerance * largest,
            "{what}: {got:?} vs torch's {want:?}"
        );
    };
    for call in 0..losses.numel() {
        let loss = opt.step(&mut model, &mut closure);
        let at = format!("{case}, call {}", call + 1);
        close(format!("{at}: loss"), &[loss], &[losses.data()[call]]);
        let (e, i) = opt.counts();
        assert_eq!(
            (e as f64, i as f64),
            (evals.data()[call], iters.data()[call]),
            "{at}: (evaluations, iterations)"
        );
        for p in &model {
            let name = p.name().unwrap();
            let want = row(&tensor(g, &format!("{case}.{name}")), call);
            close(format!("{at}: {name}"), p.value().data(), want.data());
        }
    }
}

/// L-BFGS against torch's, call by call, on a small tanh regression and on Rosenbrock's
/// function: with a fixed step (the defaults; lr 0.5 with a history of 3), with the strong-Wolfe
/// line search (a history of 5; maximizing the negated loss; Rosenbrock to its minimum, and
/// with max_eval 12 cutting calls short), from scripts/golden_lbfgs.py. Parameters within 1e-12
/// of torch's (float64 only: rewind computes the directions in f64 for any float, torch in the
/// parameters' dtype); its dot products add in another order.
#[test]
fn lbfgs_matches_pytorch_with_and_without_line_search() {
    let g = golden::<f64>(GOLDEN_LBFGS);
    let wolfe = || Lbfgs::<f64>::default().line_search(LineSearch::StrongWolfe);
    let tol = 1e-12;
    check_lbfgs(
        &g,
        "tanh_defaults",
        Lbfgs::default(),
        tanh_problem(&g, 1.0),
        tol,
    );
    let short = Lbfgs::new(0.5).history_size(3).max_iter(8);
    check_lbfgs(&g, "tanh_lr_history", short, tanh_problem(&g, 1.0), tol);
    let searched = wolfe().history_size(5).max_iter(10);
    check_lbfgs(
        &g,
        "tanh_strong_wolfe",
        searched,
        tanh_problem(&g, 1.0),
        tol,
    );
    let climbing = wolfe().maximize(true);
    check_lbfgs(
        &g,
        "tanh_strong_wolfe_maximize",
        climbing,
        tanh_problem(&g, -1.0),
        tol,
    );
    let rosenbrock = rosenbrock_problem(&g);
    check_lbfgs(&g, "rosenbrock_strong_wolfe", wolfe(), rosenbrock, tol);
    let capped = wolfe().max_iter(30).max_eval(12);
    check_lbfgs(
        &g,
        "rosenbrock_strong_wolfe_max_eval",
        capped,
        rosenbrock_problem(&g),
        tol,
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
        ("radamw".into(), radam_buffers, steps.clone())
    );
    let buffers = |names: &[&str]| {
        let mut all: Vec<String> = ["bias", "weight"]
            .iter()
            .flat_map(|p| names.iter().map(move |n| format!("{p}.{n}")))
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        keys(&mut Adadelta::default()),
        (
            "adadelta".into(),
            buffers(&["acc_delta", "square_avg"]),
            steps.clone()
        )
    );
    assert_eq!(
        keys(&mut Rprop::default()),
        (
            "rprop".into(),
            buffers(&["prev", "step_size"]),
            steps.clone()
        )
    );
    assert_eq!(
        keys(&mut Asgd::default()),
        ("asgd".into(), buffers(&["ax", "eta", "mu"]), steps)
    );
}

/// ASGD's η and μ are one number each: a state holding more, a negative η or a μ outside
/// [0, 1] is refused, as NAdam's product is.
#[test]
fn asgd_state_refuses_a_bad_eta_or_mu() {
    let g = golden::<f64>(GOLDEN_F64);
    let mut m = model(&g);
    let mut opt = Asgd::<f64>::default();
    let grads = grads_at(&g, &m, 0);
    opt.step(&mut m, &grads);
    let good = opt.state();
    let with = |name: &str, t: Tensor<f64>| {
        let mut s = good.clone();
        s.tensors.insert(name.into(), t);
        Asgd::<f64>::default()
            .load_state(&s)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        with("bias.eta", Tensor::scalar(-0.01)),
        "optimizer state: `bias.eta` is -0.01, expected a number >= 0"
    );
    assert_eq!(
        with("bias.mu", Tensor::scalar(1.5)),
        "optimizer state: `bias.mu` is 1.5, expected a number from 0 to 1"
    );
    assert_eq!(
        with(
            "weight.eta",
            Tensor::from_vec(vec![0.01, 0.01], &[2]).unwrap()
        ),
        "optimizer state: `weight.eta` has shape [2], expected []"
    );
    assert!(Asgd::<f64>::default().load_state(&good).is_ok());
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
        ("adadelta", Box::new(Adadelta::new(10.0).maximize(true))),
        ("rprop", Box::new(Rprop::new(0.1).maximize(true))),
        ("asgd", Box::new(Asgd::new(0.1).maximize(true))),
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
    let cases: [(&str, Build); 20] = [
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
        ("Adadelta: rho must be in [0, 1], got 1.5", || {
            drop(Adadelta::<f32>::default().rho(1.5))
        }),
        ("Adadelta: lr must be finite and >= 0, got -1.0", || {
            drop(Adadelta::<f32>::new(-1.0))
        }),
        (
            "Rprop: etas must satisfy 0 < etaminus < 1 < etaplus, got (0.5, 0.9)",
            || drop(Rprop::<f32>::default().etas(0.5, 0.9)),
        ),
        ("Rprop: lr must be finite and >= 0, got -0.01", || {
            drop(Rprop::<f32>::new(-0.01))
        }),
        ("Asgd: lambd must be finite and >= 0, got -0.1", || {
            drop(Asgd::<f32>::default().lambd(-0.1))
        }),
        ("Asgd: alpha must be finite and >= 0, got -0.75", || {
            drop(Asgd::<f32>::default().alpha(-0.75))
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
        (Box::new(|| { Adadelta::<f64>::default().eps(0.0); }), line!(), "Adadelta: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { Adadelta::<f64>::default().weight_decay(f64::INFINITY); }), line!(), "Adadelta: weight_decay must be finite and >= 0, got inf"),
        (Box::new(|| { Rprop::<f64>::default().step_sizes(1.0, 0.1); }), line!(), "Rprop: step_sizes must satisfy 0 <= min <= max, both finite, got (1.0, 0.1)"),
        (Box::new(|| { Rprop::<f64>::default().step_sizes(1e-6, f64::INFINITY); }), line!(), "Rprop: step_sizes must satisfy 0 <= min <= max, both finite, got (1e-6, inf)"),
        (Box::new(|| { Rprop::<f64>::default().etas(f64::NAN, 1.2); }), line!(), "Rprop: etas must satisfy 0 < etaminus < 1 < etaplus, got (NaN, 1.2)"),
        (Box::new(|| { Rprop::<f64>::default().etas(0.5, f64::INFINITY); }), line!(), "Rprop: etas must satisfy 0 < etaminus < 1 < etaplus, got (0.5, inf)"),
        (Box::new(|| { Rprop::<f64>::default().group(ParamGroup::biases().weight_decay(0.1)); }), line!(), "Rprop: a group's weight_decay is not an option of Rprop, which has no weight decay"),
        (Box::new(|| { Asgd::<f64>::default().t0(f64::NAN); }), line!(), "Asgd: t0 must be finite, got NaN"),
        (Box::new(|| { Asgd::<f64>::default().lambd(f64::INFINITY); }), line!(), "Asgd: lambd must be finite and >= 0, got inf"),
        (Box::new(|| { ParamGroup::biases().betas(0.9, 1.0); }), line!(), "ParamGroup: beta2 must be in [0, 1), got 1.0"),
        (Box::new(|| { ParamGroup::biases().eps(0.0); }), line!(), "ParamGroup: eps must be finite and > 0, got 0.0"),
        (Box::new(|| { ParamGroup::biases().momentum(-0.9); }), line!(), "ParamGroup: momentum must be finite and >= 0, got -0.9"),
        (Box::new(|| { Sgd::<f64>::new(0.1).group(ParamGroup::biases().betas(0.9, 0.99)); }), line!(), "Sgd: a group's betas is not an option of Sgd"),
        (Box::new(|| { Adam::<f64>::new(0.1).group(ParamGroup::biases().momentum(0.9)); }), line!(), "Adam: a group's momentum is not an option of Adam"),
        (Box::new(|| { Rprop::<f64>::new(0.1).group(ParamGroup::biases().eps(1e-8)); }), line!(), "Rprop: a group's eps is not an option of Rprop"),
        (Box::new(|| { Adam::<f32>::new(0.1).group(ParamGroup::biases().eps(1e39)); }), line!(), "Adam: a group's eps must be finite and > 0, got 1e39 (infinite as f32)"),
        (Box::new(|| { Lbfgs::<f64>::new(-1.0); }), line!(), "Lbfgs: lr must be finite and >= 0, got -1.0"),
        (Box::new(|| { Lbfgs::<f64>::default().max_iter(0); }), line!(), "Lbfgs: max_iter must be at least 1, got 0"),
        (Box::new(|| { Lbfgs::<f64>::default().history_size(0); }), line!(), "Lbfgs: history_size must be at least 1, got 0"),
        (Box::new(|| { Lbfgs::<f64>::default().tolerance_grad(f64::NAN); }), line!(), "Lbfgs: tolerance_grad must be finite and >= 0, got NaN"),
        (Box::new(|| { Lbfgs::<f64>::default().set_lr(f64::INFINITY); }), line!(), "Lbfgs: lr must be finite and >= 0, got inf"),
        (Box::new(|| { Asgd::<f32>::default().set_lr(1e39); }), line!(), "Asgd: lr must be finite and >= 0, got 1e39 (infinite as f32)"),
    ];
    for (misuse, line, expected) in cases {
        let (msg, file, at) = panic_of(misuse);
        assert_eq!(msg, expected);
        assert!(file.ends_with("optim_more_parity.rs") && at == line, "`{expected}` panicked at {file}:{at}, not at this file's line {line}");
    }
}
