//! rewind-optim's schedules against PyTorch's (MultiStepLR, OneCycleLR,
//! CosineAnnealingWarmRestarts, ReduceLROnPlateau, ConstantLR, PolynomialLR, LambdaLR,
//! MultiplicativeLR, SequentialLR, ChainedScheduler, CyclicLR, and the momentum CyclicLR and
//! OneCycleLR cycle),
//! alone, behind a `Warmup`, and boxed as `Box<dyn LrSchedule>`: the learning rate at every step,
//! from tests/data/schedules_golden.safetensors, which `scripts/golden_schedules.py` wrote (its
//! docstring says how each case was run in torch). Each schedule is driven as a user drives it,
//! by a `Scheduler` over an optimizer, and the rates match torch's float64 ones to 1e-15
//! relative. On the machine that wrote the data they agree bit for bit, except that the
//! warm-up ramp, which torch's LinearLR builds by repeated multiplication, is an ulp away at
//! one step; the tolerance also leaves room for another platform's `cos`. Also here: every
//! schedule's refusal of arguments that would make a rate NaN or infinite, and decay counts past
//! 2^31. ReduceLROnPlateau's per-group floors (`min_lr=[...]`) come from
//! tests/data/leftovers_golden.safetensors, which `scripts/golden_round2_leftovers.py` wrote.

use crate::support::golden::{load, tensor};
use crate::support::panics::panic_of;
use rewind::autograd::io::TensorFile;
use rewind::optim::{
    Adagrad, Adam, Anneal, BaseLr, ChainedScheduler, ConstantLr, CosineAnnealingLr,
    CosineAnnealingWarmRestarts, CyclicLr, CyclicMode, ExponentialLr, LambdaLr, LinearLr,
    LrSchedule, MultiStepLr, MultiplicativeLr, OneCycleLr, Optimizer, ParamGroup, PlateauMode,
    PolynomialLr, ReduceLrOnPlateau, Scheduler, SequentialLr, Sgd, StepLr, ThresholdMode, Warmup,
};

const GOLDEN: &str = "schedules_golden.safetensors";
/// The base learning rate of every case but the one-cycle ones (scripts/golden_schedules.py's
/// BASE_LR).
const BASE_LR: f64 = 0.1;
/// The warm-up of the `warmup_*` cases (WARMUP in the script).
const WARMUP: usize = 4;

fn golden() -> TensorFile<f64> {
    load(GOLDEN, "golden_schedules.py")
}

fn values(g: &TensorFile<f64>, name: &str) -> Vec<f64> {
    tensor(g, name).data().to_vec()
}

/// The rate before any step, then after each of `steps` steps (the golden sequences' layout).
fn drive<S: LrSchedule>(schedule: S, base_lr: f64, steps: usize) -> Vec<f64> {
    let mut opt = Sgd::<f64>::new(base_lr);
    let mut sched = Scheduler::new(schedule, &mut opt);
    let mut lrs = vec![opt.lr()];
    for _ in 0..steps {
        sched.step(&mut opt);
        lrs.push(opt.lr());
    }
    lrs
}

/// As [`drive`], reporting one metric per step.
fn drive_with_metrics<S: LrSchedule>(schedule: S, base_lr: f64, metrics: &[f64]) -> Vec<f64> {
    let mut opt = Sgd::<f64>::new(base_lr);
    let mut sched = Scheduler::new(schedule, &mut opt);
    let mut lrs = vec![opt.lr()];
    for &m in metrics {
        sched.step_with_metric(m, &mut opt);
        lrs.push(opt.lr());
    }
    lrs
}

/// As [`drive`], over `opt` (whose momentum or β1 the schedule may cycle), also returning the
/// optimizer's momentum at each point.
fn drive_momentum<S: LrSchedule>(
    schedule: S,
    mut opt: Box<dyn Optimizer<f64>>,
    steps: usize,
) -> (Vec<f64>, Vec<f64>) {
    let momentum = |opt: &dyn Optimizer<f64>| opt.momentum().expect("a momentum");
    let mut sched = Scheduler::new(schedule, opt.as_mut());
    let (mut lrs, mut momenta) = (vec![opt.lr()], vec![momentum(opt.as_ref())]);
    for _ in 0..steps {
        sched.step(opt.as_mut());
        lrs.push(opt.lr());
        momenta.push(momentum(opt.as_ref()));
    }
    (lrs, momenta)
}

/// The script's optimizers for the CYCLING cases: SGD with momentum 0.5, or Adam.
fn cycled(kind: &str) -> Box<dyn Optimizer<f64>> {
    match kind {
        "sgd" => Box::new(Sgd::new(BASE_LR).momentum(0.5)),
        _ => Box::new(Adam::new(BASE_LR)),
    }
}

/// Checks `schedule`'s rates and momenta against `sched.<case>` and `momentum.<case>`, over the
/// first `steps` steps (all of them if None), on the optimizer `kind`.
fn check_cycling<S: LrSchedule>(
    g: &TensorFile<f64>,
    case: &str,
    kind: &str,
    steps: Option<usize>,
    schedule: S,
) {
    let want_lr = values(g, &format!("sched.{case}"));
    let want_momentum = values(g, &format!("momentum.{case}"));
    let steps = steps.unwrap_or(want_lr.len() - 1);
    let (lrs, momenta) = drive_momentum(schedule, cycled(kind), steps);
    assert_matches(case, &lrs, &want_lr[..=steps], 1e-15);
    assert_matches(
        &format!("{case} (momentum)"),
        &momenta,
        &want_momentum[..=steps],
        1e-15,
    );
}

/// Asserts that every rate of `got` is within `tolerance` of torch's, relative to torch's.
fn assert_matches(case: &str, got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{case}: number of steps");
    for (step, (a, e)) in got.iter().zip(want).enumerate() {
        let err = (a - e).abs() / e.abs().max(f64::MIN_POSITIVE);
        assert!(
            err <= tolerance,
            "{case} at step {step}: {a:e} vs torch's {e:e} ({err:.1e} relative)"
        );
    }
}

/// Checks `make()`'s schedule against `sched.<case>`, both as itself and boxed.
fn check<S: LrSchedule + 'static>(
    g: &TensorFile<f64>,
    case: &str,
    base_lr: f64,
    tolerance: f64,
    make: impl Fn() -> S,
) {
    let want = values(g, &format!("sched.{case}"));
    let steps = want.len() - 1;
    assert_matches(case, &drive(make(), base_lr, steps), &want, tolerance);
    let boxed: Box<dyn LrSchedule> = Box::new(make());
    assert_matches(
        &format!("{case} (boxed)"),
        &drive(boxed, base_lr, steps),
        &want,
        tolerance,
    );
}

/// Checks `make()`'s schedule against `plateau.<case>.lr`, fed `plateau.<case>.metrics`, both as
/// itself and boxed.
fn check_plateau<S: LrSchedule + 'static>(
    g: &TensorFile<f64>,
    case: &str,
    tolerance: f64,
    make: impl Fn() -> S,
) {
    let metrics = values(g, &format!("plateau.{case}.metrics"));
    let want = values(g, &format!("plateau.{case}.lr"));
    let got = drive_with_metrics(make(), BASE_LR, &metrics);
    assert_matches(case, &got, &want, tolerance);
    let boxed: Box<dyn LrSchedule> = Box::new(make());
    let got = drive_with_metrics(boxed, BASE_LR, &metrics);
    assert_matches(&format!("{case} (boxed)"), &got, &want, tolerance);
}

#[test]
fn multistep_lr_matches_pytorch() {
    let g = golden();
    check(&g, "multistep", BASE_LR, 1e-15, || {
        MultiStepLr::new([2, 5, 5, 9]).gamma(0.3)
    });
    // Default γ 0.1; a milestone at 0 already applies at step 0, as in torch.
    check(&g, "multistep_defaults_from_0", BASE_LR, 1e-15, || {
        MultiStepLr::new([4, 0])
    });
}

/// Two phases with PyTorch's defaults, and three phases with linear and cosine annealing, up to
/// and including step `total_steps` (torch allows that step, which lies past the end of the last
/// phase: the linear case ends below zero there, as torch's does, and a `Scheduler` refuses that
/// rate, since a negative rate climbs the loss).
#[test]
fn one_cycle_lr_matches_pytorch() {
    let g = golden();
    // The optimizer's own rate is ignored: the cycle starts at max_lr / div_factor.
    check(&g, "onecycle_defaults", BASE_LR, 1e-15, || {
        OneCycleLr::new(0.5, 20)
    });
    let linear = || {
        OneCycleLr::new(0.3, 25)
            .pct_start(0.25)
            .anneal(Anneal::Linear)
            .div_factor(10.0)
            .final_div_factor(100.0)
            .three_phase(true)
    };
    let want = values(&g, "sched.onecycle_linear_three_phase");
    let last = want.len() - 1;
    let by_lr_at: Vec<f64> = (0..=last).map(|s| linear().lr_at(BASE_LR, s)).collect();
    assert_matches("onecycle_linear_three_phase", &by_lr_at, &want, 1e-15);
    let driven = drive(linear(), BASE_LR, last - 1);
    assert_matches(
        "onecycle_linear_three_phase (driven)",
        &driven,
        &want[..last],
        1e-15,
    );
    let (msg, _, _) = panic_of(|| drop(drive(linear(), BASE_LR, last)));
    assert_eq!(
        msg,
        format!(
            "Scheduler: the rate at step 25 is {}; a learning rate must be finite and >= 0",
            want[last]
        )
    );
    check(&g, "onecycle_cos_three_phase", BASE_LR, 1e-15, || {
        OneCycleLr::new(0.3, 17).three_phase(true)
    });
}

/// PyTorch's CyclicLR in its three modes, cycling SGD's momentum or Adam's β1 against the rate
/// (triangular; triangular2, rising for 3 steps and falling for 5; exp_range with γ 0.9), and
/// with `cycle_momentum(false)`, which leaves the optimizer's momentum alone.
#[test]
fn cyclic_lr_and_its_momentum_match_pytorch() {
    let g = golden();
    check_cycling(
        &g,
        "cyclic_triangular",
        "sgd",
        None,
        CyclicLr::new(0.01, 0.1).step_size_up(4),
    );
    check_cycling(
        &g,
        "cyclic_triangular2",
        "sgd",
        None,
        CyclicLr::new(0.01, 0.1)
            .step_size_up(3)
            .step_size_down(5)
            .mode(CyclicMode::Triangular2),
    );
    check_cycling(
        &g,
        "cyclic_exp_range",
        "adam",
        None,
        CyclicLr::new(0.001, 0.05)
            .step_size_up(4)
            .mode(CyclicMode::ExpRange)
            .gamma(0.9)
            .base_momentum(0.7)
            .max_momentum(0.95),
    );
    check_cycling(
        &g,
        "cyclic_no_momentum",
        "sgd",
        None,
        CyclicLr::new(0.01, 0.1)
            .step_size_up(2)
            .step_size_down(1)
            .cycle_momentum(false),
    );
}

/// OneCycleLR's momentum, by PyTorch's defaults (0.95 down to 0.85 while the rate rises, and
/// back), and over three linear phases between 0.9 and 0.8 on Adam's β1 (up to step 16: step 17's
/// rate is below 0, which a `Scheduler` refuses).
#[test]
fn one_cycle_momentum_matches_pytorch() {
    let g = golden();
    check_cycling(
        &g,
        "onecycle_momentum_defaults",
        "sgd",
        None,
        OneCycleLr::new(0.5, 20),
    );
    let three_phase = OneCycleLr::new(0.3, 17)
        .three_phase(true)
        .anneal(Anneal::Linear)
        .base_momentum(0.8)
        .max_momentum(0.9);
    check_cycling(
        &g,
        "onecycle_momentum_three_phase",
        "adam",
        Some(16),
        three_phase,
    );
}

/// Restarts at steps 3, 9 and 21 (T_0 3, T_mult 2), and every 4 steps (T_mult 1).
#[test]
fn cosine_annealing_warm_restarts_match_pytorch() {
    let g = golden();
    check(&g, "restarts_t0_3_mult_2", BASE_LR, 1e-15, || {
        CosineAnnealingWarmRestarts::new(3).t_mult(2).eta_min(0.001)
    });
    check(&g, "restarts_t0_4", BASE_LR, 1e-15, || {
        CosineAnnealingWarmRestarts::new(4)
    });
}

/// PyTorch's ConstantLR: the base times `factor` for the first `total_iters` steps, then the
/// base (defaults 1/3 and 5; and 0.5 for 3 steps).
#[test]
fn constant_lr_matches_pytorch() {
    let g = golden();
    check(&g, "constant_defaults", BASE_LR, 1e-15, ConstantLr::default);
    check(&g, "constant_half_3", BASE_LR, 1e-15, || ConstantLr {
        factor: 0.5,
        total_iters: 3,
    });
}

/// PyTorch's PolynomialLR: `base · (1 - min(step, total_iters) / total_iters)^power`, with its
/// defaults (5, 1), squared over 6 steps and square-rooted over 4, past the end where the rate
/// stays 0. torch reaches each rate by multiplying the last one by a ratio; the closed form here
/// is an ulp or two from it.
#[test]
fn polynomial_lr_matches_pytorch() {
    let g = golden();
    check(
        &g,
        "polynomial_defaults",
        BASE_LR,
        1e-15,
        PolynomialLr::default,
    );
    check(&g, "polynomial_6_power_2", BASE_LR, 1e-15, || {
        PolynomialLr {
            total_iters: 6,
            power: 2.0,
        }
    });
    check(&g, "polynomial_4_power_half", BASE_LR, 1e-15, || {
        PolynomialLr {
            total_iters: 4,
            power: 0.5,
        }
    });
}

/// PyTorch's LambdaLR (`base · λ(step)`) and MultiplicativeLR (`base · f(1)·…·f(step)`), with
/// the closures of scripts/golden_schedules.py's SCHEDULES written again in Rust.
#[test]
fn lambda_and_multiplicative_lr_match_pytorch() {
    let g = golden();
    check(&g, "lambda_power", BASE_LR, 1e-15, || {
        LambdaLr::new(|step| 0.95f64.powf(step as f64))
    });
    check(&g, "lambda_inverse", BASE_LR, 1e-15, || {
        LambdaLr::new(|step| 1.0 / (step as f64 + 1.0))
    });
    let every_third = |step: usize| if step.is_multiple_of(3) { 0.97 } else { 0.9 };
    check(&g, "multiplicative", BASE_LR, 1e-15, || {
        MultiplicativeLr::new(every_third)
    });
    // Asked out of order (as a resumed run asks), the product is the same.
    let m = MultiplicativeLr::new(every_third);
    let want = values(&g, "sched.multiplicative");
    for step in [9, 3, 15, 0, 14, 15] {
        let got = m.lr_at(BASE_LR, step);
        assert_eq!(got, want[step], "MultiplicativeLr asked for step {step}");
    }
}

/// PyTorch's SequentialLR: each schedule runs from its milestone, from its own step 0 (ConstantLr,
/// then ExponentialLr from step 3, then StepLr from step 7; a LinearLr warm-up into a cosine
/// that goes on past its half period).
#[test]
fn sequential_lr_matches_pytorch() {
    let g = golden();
    check(
        &g,
        "sequential_constant_exponential_step",
        BASE_LR,
        1e-15,
        || {
            SequentialLr::new(
                vec![
                    Box::new(ConstantLr {
                        factor: 0.5,
                        total_iters: 2,
                    }),
                    Box::new(ExponentialLr { gamma: 0.9 }),
                    Box::new(StepLr {
                        step_size: 2,
                        gamma: 0.5,
                    }),
                ],
                [3, 7],
            )
        },
    );
    check(&g, "sequential_linear_cosine", BASE_LR, 1e-15, || {
        SequentialLr::new(
            vec![
                Box::new(LinearLr {
                    start_factor: 0.25,
                    end_factor: 1.0,
                    total_iters: 3,
                }),
                Box::new(CosineAnnealingLr {
                    t_max: 6,
                    eta_min: 0.0,
                }),
            ],
            [4],
        )
    });
}

/// PyTorch's ChainedScheduler: every schedule's factor applies at once (its documentation's
/// ConstantLR and ExponentialLR; and StepLR, LinearLR and PolynomialLR, down to 0). torch
/// multiplies the rate by each schedule's factor step after step, and the product of closed
/// forms here is within 5e-16 of it over these steps.
#[test]
fn chained_scheduler_matches_pytorch() {
    let g = golden();
    check(&g, "chained_constant_exponential", BASE_LR, 1e-15, || {
        ChainedScheduler::new(vec![
            Box::new(ConstantLr {
                factor: 0.1,
                total_iters: 2,
            }),
            Box::new(ExponentialLr { gamma: 0.9 }),
        ])
    });
    check(&g, "chained_step_linear_polynomial", BASE_LR, 1e-15, || {
        ChainedScheduler::new(vec![
            Box::new(StepLr {
                step_size: 3,
                gamma: 0.5,
            }),
            Box::new(LinearLr {
                start_factor: 0.5,
                end_factor: 1.0,
                total_iters: 4,
            }),
            Box::new(PolynomialLr {
                total_iters: 10,
                power: 0.5,
            }),
        ])
    });
}

/// A plateau inside a SequentialLr or a ChainedScheduler sees the metrics of its own steps.
#[test]
fn a_plateau_inside_sequential_or_chained_reads_its_metrics() {
    let g = golden();
    let plateau = || {
        ReduceLrOnPlateau::new()
            .threshold_mode(ThresholdMode::Abs)
            .threshold(0.1)
            .factor(0.5)
            .patience(1)
    };
    // The Warmup case of the golden file, as a SequentialLr of a LinearLr and the plateau.
    check_plateau(&g, "warmup_min_abs", 1e-15, || {
        SequentialLr::new(
            vec![
                Box::new(LinearLr {
                    start_factor: 1.0 / WARMUP as f64,
                    end_factor: 1.0,
                    total_iters: WARMUP - 1,
                }),
                Box::new(plateau()),
            ],
            [WARMUP],
        )
    });
    check_plateau(&g, "defaults", 1e-15, || {
        ChainedScheduler::new(vec![Box::new(ReduceLrOnPlateau::new()), Box::new(BaseLr)])
    });
}

/// `BaseLr` keeps the optimizer's own rate at every step.
#[test]
fn base_lr_keeps_the_optimizers_rate() {
    assert_eq!(drive(BaseLr, BASE_LR, 5), vec![BASE_LR; 6]);
}

/// CosineAnnealingWarmRestarts stepped to fractional epochs, as torch's `step(epoch)` once per
/// batch (every 0.3 and every 0.25 epoch, then onto the restarts and either side of one), both
/// by `lr_at_epoch` and by a `Scheduler`, whose step count becomes the whole epoch, as torch's
/// `last_epoch`.
#[test]
fn warm_restarts_at_fractional_epochs_match_pytorch() {
    let g = golden();
    let cases = [
        (
            "restarts_t0_3_mult_2",
            CosineAnnealingWarmRestarts::new(3).t_mult(2).eta_min(0.001),
        ),
        ("restarts_t0_4", CosineAnnealingWarmRestarts::new(4)),
    ];
    for (case, schedule) in cases {
        let epochs = values(&g, &format!("fractional.{case}.epochs"));
        let want = values(&g, &format!("fractional.{case}.lr"));
        let by_epoch: Vec<f64> = epochs
            .iter()
            .map(|&e| schedule.lr_at_epoch(BASE_LR, e))
            .collect();
        assert_matches(case, &by_epoch, &want, 1e-15);
        let mut opt = Sgd::<f64>::new(BASE_LR);
        let mut sched = Scheduler::new(schedule, &mut opt);
        for (&epoch, &want) in epochs.iter().zip(&want) {
            sched.step_to_epoch(epoch, &mut opt);
            assert_matches(case, &[opt.lr()], &[want], 1e-15);
            assert_eq!(
                sched.steps(),
                epoch.floor() as usize,
                "{case}: steps at {epoch}"
            );
        }
    }
}

/// Fixed metric sequences (in the golden file) through every option: both modes, both threshold
/// modes, cooldown, the min_lr floor, eps skipping a cut too small to matter, and a NaN metric
/// (counted as no improvement, as in torch).
#[test]
fn reduce_lr_on_plateau_matches_pytorch() {
    let g = golden();
    check_plateau(&g, "defaults", 1e-15, ReduceLrOnPlateau::new);
    check_plateau(&g, "min_rel", 1e-15, || {
        ReduceLrOnPlateau::new()
            .factor(0.5)
            .patience(2)
            .threshold(0.01)
    });
    check_plateau(&g, "max_abs_cooldown_min_lr", 1e-15, || {
        ReduceLrOnPlateau::new()
            .mode(PlateauMode::Max)
            .threshold_mode(ThresholdMode::Abs)
            .threshold(0.05)
            .factor(0.2)
            .patience(1)
            .cooldown(2)
            .min_lr(0.001)
    });
    check_plateau(&g, "max_rel", 1e-15, || {
        ReduceLrOnPlateau::new()
            .mode(PlateauMode::Max)
            .factor(0.5)
            .patience(1)
            .threshold(0.1)
    });
    check_plateau(&g, "eps", 1e-15, || {
        ReduceLrOnPlateau::new().patience(0).eps(1e-3)
    });
}

/// Each new schedule behind a 4-step warm-up, around the concrete schedule and around a boxed
/// one: torch's SequentialLR(LinearLR, schedule) (for the plateau, its hand-made equivalent; see
/// the script). The plateau sees only the metrics reported after the warm-up.
#[test]
fn warmup_composes_with_each_new_schedule_boxed_or_not() {
    let g = golden();
    let tol = 1e-15;
    check(&g, "warmup_multistep", BASE_LR, tol, || Warmup {
        steps: WARMUP,
        then: MultiStepLr::new([3, 6]).gamma(0.5),
    });
    check(&g, "warmup_multistep", BASE_LR, tol, || Warmup {
        steps: WARMUP,
        then: Box::new(MultiStepLr::new([3, 6]).gamma(0.5)) as Box<dyn LrSchedule>,
    });
    // Warm up to the rate the cycle starts from: max_lr / div_factor = 0.5 / 25.
    check(&g, "warmup_onecycle", 0.02, tol, || Warmup {
        steps: WARMUP,
        then: OneCycleLr::new(0.5, 20),
    });
    check(&g, "warmup_onecycle", 0.02, tol, || Warmup {
        steps: WARMUP,
        then: Box::new(OneCycleLr::new(0.5, 20)) as Box<dyn LrSchedule>,
    });
    check(&g, "warmup_restarts", BASE_LR, tol, || Warmup {
        steps: WARMUP,
        then: CosineAnnealingWarmRestarts::new(3).t_mult(2),
    });
    check(&g, "warmup_restarts", BASE_LR, tol, || Warmup {
        steps: WARMUP,
        then: Box::new(CosineAnnealingWarmRestarts::new(3).t_mult(2)) as Box<dyn LrSchedule>,
    });
    let plateau = || {
        ReduceLrOnPlateau::new()
            .threshold_mode(ThresholdMode::Abs)
            .threshold(0.1)
            .factor(0.5)
            .patience(1)
    };
    check_plateau(&g, "warmup_min_abs", tol, || Warmup {
        steps: WARMUP,
        then: plateau(),
    });
    check_plateau(&g, "warmup_min_abs", tol, || Warmup {
        steps: WARMUP,
        then: Box::new(plateau()) as Box<dyn LrSchedule>,
    });
}

/// A plateau schedule's memory (best metric, bad steps, cooldown, cuts made) is part of what a
/// checkpoint must keep: saving it at step 10 and resuming from it gives the uninterrupted run.
#[test]
fn a_plateau_resumed_from_its_state_continues_the_run() {
    let g = golden();
    let metrics = values(&g, "plateau.min_rel.metrics");
    let make = || {
        ReduceLrOnPlateau::new()
            .factor(0.5)
            .patience(2)
            .threshold(0.01)
    };
    let straight = drive_with_metrics(make(), BASE_LR, &metrics);

    let mut opt = Sgd::<f64>::new(BASE_LR);
    let mut first = Scheduler::new(make(), &mut opt);
    for &m in &metrics[..10] {
        first.step_with_metric(m, &mut opt);
    }
    let saved = first.schedule().state();
    let mut fresh = Sgd::<f64>::new(123.0);
    let mut second = Scheduler::resume(make().with_state(saved), BASE_LR, 10, &mut fresh);
    let mut resumed = straight[..=10].to_vec();
    assert_eq!(fresh.lr(), straight[10], "the resumed rate");
    for &m in &metrics[10..] {
        second.step_with_metric(m, &mut fresh);
        resumed.push(fresh.lr());
    }
    assert_eq!(resumed, straight);
}

/// A schedule that reads no metric ignores one, so a training loop can report its validation
/// loss to whichever schedule it was configured with.
#[test]
fn a_metric_is_ignored_by_schedules_that_read_none() {
    let metrics = [3.0, 2.0, 1.0, 5.0, 4.0, 3.0, 2.0];
    let make = || MultiStepLr::new([2, 4]);
    assert_eq!(
        drive_with_metrics(make(), BASE_LR, &metrics),
        drive(make(), BASE_LR, metrics.len())
    );
}

/// A misuse, the line it is on, and the message it must panic with.
type Case = (Box<dyn FnOnce()>, u32, &'static str);

/// Starts `schedule` on an optimizer, as a training loop does.
#[track_caller]
fn with_schedule<S: LrSchedule>(schedule: S) {
    let mut opt = Sgd::<f64>::new(BASE_LR);
    Scheduler::new(schedule, &mut opt);
}

/// γ^n for counts past 2^31 (where a 32-bit count wraps, to a negative power or to 0): the
/// rate keeps decaying. γ = 1 - 2^-40 is close enough to 1 that γ^(2^31) = e^(-2^-9) and
/// γ^(2^32) = e^(-2^-8) are far from 0; the expected values are exp(n·ln γ), with ln γ from
/// `ln_1p` to full precision.
#[test]
fn exponential_and_step_decay_keep_decaying_past_step_two_to_the_31() {
    let gamma = 1.0 - 2f64.powi(-40);
    let power = |n: u64| (n as f64 * (-(2f64.powi(-40))).ln_1p()).exp();
    for n in [1u64 << 31, 1 << 32, 3 << 32] {
        let steps = usize::try_from(n).expect("a 64-bit usize");
        let cases = [
            (
                "ExponentialLr",
                ExponentialLr { gamma }.lr_at(BASE_LR, steps),
            ),
            (
                "StepLr",
                StepLr {
                    step_size: 2,
                    gamma,
                }
                .lr_at(BASE_LR, 2 * steps + 1),
            ),
        ];
        for (name, lr) in cases {
            let want = BASE_LR * power(n);
            assert!(
                (lr - want).abs() <= 1e-12 * want,
                "{name} after {n} decays: {lr:e}, expected {want:e}"
            );
        }
    }
    let mut opt = Sgd::<f64>::new(BASE_LR);
    Scheduler::resume(ExponentialLr { gamma: 0.5 }, BASE_LR, 1 << 31, &mut opt);
    assert_eq!(opt.lr(), 0.0, "0.5^(2^31) underflows to 0");
}

#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn bad_arguments_panic_at_the_callers_line_with_a_message() {
    let cases: Vec<Case> = vec![
        (Box::new(|| { MultiStepLr::new([3]).gamma(0.0); }), line!(), "MultiStepLr: gamma must be a positive finite number, got 0"),
        (Box::new(|| { OneCycleLr::new(0.0, 10); }), line!(), "OneCycleLr: max_lr must be a positive finite number, got 0"),
        (Box::new(|| { OneCycleLr::new(0.1, 0); }), line!(), "OneCycleLr: total_steps must be at least 1, got 0"),
        (Box::new(|| { OneCycleLr::new(0.1, 10).pct_start(1.5); }), line!(), "OneCycleLr: pct_start must be in [0, 1], got 1.5"),
        (Box::new(|| { OneCycleLr::new(0.1, 10).div_factor(-1.0); }), line!(), "OneCycleLr: div_factor must be a positive finite number, got -1"),
        (Box::new(|| { OneCycleLr::new(0.1, 10).final_div_factor(f64::NAN); }), line!(), "OneCycleLr: final_div_factor must be a positive finite number, got NaN"),
        (Box::new(|| { CosineAnnealingWarmRestarts::new(0); }), line!(), "CosineAnnealingWarmRestarts: t_0 must be at least 1, got 0"),
        (Box::new(|| { CosineAnnealingWarmRestarts::new(3).t_mult(0); }), line!(), "CosineAnnealingWarmRestarts: t_mult must be at least 1, got 0"),
        (Box::new(|| { CosineAnnealingWarmRestarts::new(3).eta_min(f64::INFINITY); }), line!(), "CosineAnnealingWarmRestarts: eta_min must be a non-negative finite number, got inf"),
        (Box::new(|| { CosineAnnealingWarmRestarts::new(3).lr_at_epoch(0.1, -0.5); }), line!(), "CosineAnnealingWarmRestarts: epoch must be a non-negative finite number, got -0.5"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            let mut sched = Scheduler::new(CosineAnnealingWarmRestarts::new(3), &mut opt);
            sched.step_to_epoch(f64::NAN, &mut opt); }), line!(),
            "CosineAnnealingWarmRestarts: epoch must be a non-negative finite number, got NaN"),
        (Box::new(|| { CosineAnnealingWarmRestarts::new(3).eta_min(-1e-3); }), line!(), "CosineAnnealingWarmRestarts: eta_min must be a non-negative finite number, got -0.001"),
        (Box::new(|| { ReduceLrOnPlateau::new().factor(1.0); }), line!(), "ReduceLrOnPlateau: factor must be in [0, 1), got 1"),
        (Box::new(|| { ReduceLrOnPlateau::new().threshold(-0.1); }), line!(), "ReduceLrOnPlateau: threshold must be a non-negative finite number, got -0.1"),
        (Box::new(|| { ReduceLrOnPlateau::new().min_lr(-1.0); }), line!(), "ReduceLrOnPlateau: min_lr must be a non-negative finite number, got -1"),
        (Box::new(|| { ReduceLrOnPlateau::new().eps(f64::NAN); }), line!(), "ReduceLrOnPlateau: eps must be a non-negative finite number, got NaN"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            let mut sched = Scheduler::new(OneCycleLr::new(0.5, 2), &mut opt);
            sched.step(&mut opt);
            sched.step(&mut opt);
            sched.step(&mut opt); }), line!(), "OneCycleLr: step 3 is past the end of the cycle (total_steps 2)"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            Scheduler::new(OneCycleLr::new(0.5, 10).pct_start(0.1), &mut opt); }), line!(),
            "OneCycleLr: phase 1 of the cycle is empty (pct_start 0.1 of total_steps 10 ends it at step 0); choose another pct_start"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            let mut sched = Scheduler::new(ReduceLrOnPlateau::new(), &mut opt);
            sched.step(&mut opt); }), line!(),
            "Scheduler::step: this schedule reads a metric (ReduceLrOnPlateau); call step_with_metric(metric, optimizer)"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            let boxed: Box<dyn LrSchedule> = Box::new(Warmup { steps: 2, then: ReduceLrOnPlateau::new() });
            let mut sched = Scheduler::new(boxed, &mut opt);
            sched.step(&mut opt); }), line!(),
            "Scheduler::step: this schedule reads a metric (ReduceLrOnPlateau); call step_with_metric(metric, optimizer)"),
        // The closed-form schedules are plain structs: their fields are checked when a rate is
        // asked for, first by `Scheduler::new`, before any step.
        (Box::new(|| { with_schedule(StepLr { step_size: 0, gamma: 0.5 }) }), line!(), "StepLr: step_size must be at least 1, got 0"),
        (Box::new(|| { with_schedule(StepLr { step_size: 3, gamma: f64::NAN }) }), line!(), "StepLr: gamma must be a positive finite number, got NaN"),
        (Box::new(|| { with_schedule(ExponentialLr { gamma: -0.5 }) }), line!(), "ExponentialLr: gamma must be a positive finite number, got -0.5"),
        (Box::new(|| { with_schedule(ExponentialLr { gamma: f64::INFINITY }) }), line!(), "ExponentialLr: gamma must be a positive finite number, got inf"),
        (Box::new(|| { with_schedule(CosineAnnealingLr { t_max: 0, eta_min: 0.0 }) }), line!(), "CosineAnnealingLr: t_max must be at least 1, got 0"),
        (Box::new(|| { with_schedule(CosineAnnealingLr { t_max: 10, eta_min: f64::NAN }) }), line!(), "CosineAnnealingLr: eta_min must be a non-negative finite number, got NaN"),
        (Box::new(|| { with_schedule(LinearLr { total_iters: 0, ..LinearLr::default() }) }), line!(), "LinearLr: total_iters must be at least 1, got 0"),
        (Box::new(|| { with_schedule(LinearLr { start_factor: 0.0, ..LinearLr::default() }) }), line!(), "LinearLr: start_factor must be in (0, 1], got 0"),
        (Box::new(|| { with_schedule(LinearLr { end_factor: f64::NAN, ..LinearLr::default() }) }), line!(), "LinearLr: end_factor must be in [0, 1], got NaN"),
        (Box::new(|| { CyclicLr::new(-0.1, 0.1); }), line!(), "CyclicLr: base_lr must be a non-negative finite number, got -0.1"),
        (Box::new(|| { CyclicLr::new(0.01, f64::INFINITY); }), line!(), "CyclicLr: max_lr must be a non-negative finite number, got inf"),
        (Box::new(|| { CyclicLr::new(0.01, 0.1).step_size_up(0); }), line!(), "CyclicLr: step_size_up must be at least 1, got 0"),
        (Box::new(|| { CyclicLr::new(0.01, 0.1).gamma(0.0); }), line!(), "CyclicLr: gamma must be a positive finite number, got 0"),
        (Box::new(|| { CyclicLr::new(0.01, 0.1).base_momentum(f64::NAN); }), line!(), "CyclicLr: base_momentum must be a non-negative finite number, got NaN"),
        (Box::new(|| { OneCycleLr::new(0.1, 10).max_momentum(-0.95); }), line!(), "OneCycleLr: max_momentum must be a non-negative finite number, got -0.95"),
        (Box::new(|| {
            let mut opt = Adagrad::<f64>::new(0.1);
            Scheduler::new(CyclicLr::new(0.01, 0.1), &mut opt); }), line!(),
            "Scheduler: the schedule cycles the momentum, but this optimizer has neither a momentum nor a beta1; turn the cycling off (cycle_momentum(false))"),
        (Box::new(|| {
            let mut opt = Adam::<f64>::new(0.1);
            Scheduler::new(OneCycleLr::new(0.1, 10).max_momentum(1.0), &mut opt); }), line!(),
            "Adam: beta1 must be in [0, 1), got 1.0"),
        (Box::new(|| { with_schedule(PolynomialLr { total_iters: 0, power: 1.0 }) }), line!(), "PolynomialLr: total_iters must be at least 1, got 0"),
        (Box::new(|| { with_schedule(PolynomialLr { total_iters: 5, power: -1.0 }) }), line!(), "PolynomialLr: power must be a non-negative finite number, got -1"),
        (Box::new(|| { SequentialLr::new(vec![Box::new(BaseLr), Box::new(BaseLr)], [2, 4]); }), line!(), "SequentialLr: 2 schedules take 1 milestone, got 2"),
        (Box::new(|| { SequentialLr::new(vec![], []); }), line!(), "SequentialLr: no schedules"),
        (Box::new(|| { SequentialLr::new(vec![Box::new(BaseLr), Box::new(BaseLr), Box::new(BaseLr)], [5, 3]); }), line!(), "SequentialLr: milestones must be in ascending order, got [5, 3]"),
        (Box::new(|| { ChainedScheduler::new(vec![]); }), line!(), "ChainedScheduler: no schedules"),
        (Box::new(|| { with_schedule(SequentialLr::new(vec![Box::new(BaseLr), Box::new(ExponentialLr { gamma: 0.0 })], [3])) }), line!(), "ExponentialLr: gamma must be a positive finite number, got 0"),
        (Box::new(|| { with_schedule(ChainedScheduler::new(vec![Box::new(BaseLr), Box::new(ConstantLr { factor: 2.0, total_iters: 1 })])) }), line!(), "ConstantLr: factor must be in [0, 1], got 2"),
        (Box::new(|| { with_schedule(ConstantLr { factor: 1.5, total_iters: 3 }) }), line!(), "ConstantLr: factor must be in [0, 1], got 1.5"),
        (Box::new(|| { with_schedule(ConstantLr { factor: f64::NAN, total_iters: 3 }) }), line!(), "ConstantLr: factor must be in [0, 1], got NaN"),
        (Box::new(|| { with_schedule(Warmup { steps: 2, then: LinearLr { end_factor: 1.5, ..LinearLr::default() } }) }), line!(), "LinearLr: end_factor must be in [0, 1], got 1.5"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            Scheduler::resume(BaseLr, f64::NAN, 0, &mut opt); }), line!(),
            "Scheduler: base_lr must be a non-negative finite number, got NaN"),
        (Box::new(|| {
            let mut opt = Sgd::<f64>::new(0.1);
            let mut sched = Scheduler::resume(ExponentialLr { gamma: 2.0 }, 1e-3, 1023, &mut opt);
            sched.step(&mut opt); }), line!(),
            "Scheduler: the rate at step 1024 is inf; a learning rate must be finite and >= 0"),
    ];
    for (misuse, line, expected) in cases {
        let (msg, file, at) = panic_of(misuse);
        assert_eq!(msg, expected);
        assert!(file.ends_with("schedules_parity.rs") && at == line, "`{expected}` panicked at {file}:{at}, not at this file's line {line}");
    }
}

/// The golden file of the per-group plateau cases (tests/data/leftovers_golden.safetensors, which
/// `scripts/golden_round2_leftovers.py` wrote).
fn leftovers() -> TensorFile<f64> {
    load("leftovers_golden.safetensors", "golden_round2_leftovers.py")
}

/// `make()`'s plateau over an SGD whose groups have the rates `BASE_LR·scales` (the default
/// group's scale first, 1), fed `plateau_groups.<case>.metrics`: every group's rate at every step
/// equals torch's in `plateau_groups.<case>.lr`, bit for bit, boxed and behind a zero-step
/// warm-up, and to 1e-15 relative in a `ChainedScheduler` with [`BaseLr`].
fn check_plateau_groups(
    g: &TensorFile<f64>,
    case: &str,
    scales: &[f64],
    make: impl Fn() -> ReduceLrOnPlateau,
) {
    let metrics = values(g, &format!("plateau_groups.{case}.metrics"));
    let want = values(g, &format!("plateau_groups.{case}.lr"));
    let drive = |schedule: Box<dyn LrSchedule>| {
        assert_eq!(
            scales[0], 1.0,
            "the default group's rate is the optimizer's"
        );
        let mut opt = Sgd::<f64>::new(BASE_LR);
        for (k, &scale) in scales.iter().enumerate().skip(1) {
            let name = format!("g{k}");
            opt = opt.group(ParamGroup::matching(move |n| n == name).lr_scale(scale));
        }
        let mut sched = Scheduler::new(schedule, &mut opt);
        let mut lrs = opt.group_lrs();
        for &m in &metrics {
            sched.step_with_metric(m, &mut opt);
            assert_eq!(
                opt.lr(),
                opt.group_lrs()[0],
                "{case}: lr() is the default group's"
            );
            lrs.extend(opt.group_lrs());
        }
        lrs
    };
    assert_eq!(drive(Box::new(make())), want, "{case}");
    let warm = Warmup {
        steps: 0,
        then: make(),
    };
    assert_eq!(drive(Box::new(warm)), want, "{case} behind a warm-up");
    // A chain divides each group's rate by its base and multiplies back: an ulp may move.
    let chained = ChainedScheduler::new(vec![Box::new(make()), Box::new(BaseLr)]);
    let got = drive(Box::new(chained));
    assert_matches(&format!("{case} chained"), &got, &want, 1e-15);
}

/// torch's `ReduceLROnPlateau(min_lr=[...])`: each group's rate is cut to
/// `max(lr_g·factor, min_lr_g)` on its own, and a cut that changes a group's rate by eps or less
/// is skipped for that group alone; a scalar `min_lr` floors every group. Three groups reach
/// their floors at steps 5, 3 and 9; in `eps_per_group` the third never moves while the first
/// stops at 0.00625 and the second at its floor 0.03.
#[test]
fn reduce_lr_on_plateau_floors_and_skips_each_group_as_pytorch() {
    let g = leftovers();
    check_plateau_groups(&g, "min_lrs", &[1.0, 0.5, 2.0], || {
        ReduceLrOnPlateau::new()
            .factor(0.5)
            .patience(0)
            .min_lrs([0.01, 0.02, 0.001])
    });
    check_plateau_groups(&g, "scalar_min_lr", &[1.0, 0.25], || {
        ReduceLrOnPlateau::new()
            .factor(0.5)
            .patience(1)
            .min_lr(0.02)
    });
    check_plateau_groups(&g, "eps_per_group", &[1.0, 4.0, 0.03], || {
        ReduceLrOnPlateau::new()
            .factor(0.5)
            .patience(0)
            .eps(0.004)
            .min_lrs([0.0, 0.03, 0.0])
    });
}

/// An optimizer's groups take their own rates through `set_group_lrs` (one per group, the default
/// group's first, refused otherwise at the caller's line), and `set_lr` scales them all from one
/// rate again.
#[test]
fn groups_take_their_own_rates_until_set_lr_scales_them_again() {
    let mut opt = Sgd::<f64>::new(0.1).group(ParamGroup::biases().lr_scale(0.5));
    assert_eq!(opt.lr_scales(), [1.0, 0.5]);
    assert_eq!(opt.group_lrs(), [0.1, 0.05]);
    opt.set_group_lrs(&[0.01, 0.03]);
    assert_eq!((opt.lr(), opt.group_lrs()), (0.01, vec![0.01, 0.03]));
    opt.set_lr(0.2);
    assert_eq!(opt.group_lrs(), [0.2, 0.1]);
    let line = line!() + 1;
    let (msg, file, at) = panic_of(|| opt.set_group_lrs(&[0.1]));
    assert_eq!(
        msg,
        "Sgd: set_group_lrs takes one rate per parameter group, 2 here (the default group and 1 \
         added), got 1"
    );
    assert!(
        file.ends_with("schedules_parity.rs") && at == line,
        "panicked at {file}:{at}"
    );
}

/// A list of floors whose length is not the optimizer's number of groups is refused when the
/// scheduler starts, as torch refuses it when the scheduler is created; so is a negative one.
#[test]
fn min_lrs_of_the_wrong_length_or_sign_are_refused() {
    let mut opt = Sgd::<f64>::new(0.1).group(ParamGroup::biases().lr_scale(0.5));
    let plateau = ReduceLrOnPlateau::new().min_lrs([0.01, 0.02, 0.03]);
    let line = line!() + 1;
    let (msg, file, at) = panic_of(|| drop(Scheduler::new(plateau, &mut opt)));
    assert_eq!(
        msg,
        "ReduceLrOnPlateau: min_lrs holds 3 rates, but the optimizer has 2 parameter groups \
         (its default group and 1 added)"
    );
    assert!(
        file.ends_with("schedules_parity.rs") && at == line,
        "panicked at {file}:{at}"
    );
    let line = line!() + 1;
    let (msg, file, at) = panic_of(|| drop(ReduceLrOnPlateau::new().min_lrs([0.01, -0.5])));
    assert_eq!(
        msg,
        "ReduceLrOnPlateau: min_lrs must be a non-negative finite number, got -0.5"
    );
    assert!(
        file.ends_with("schedules_parity.rs") && at == line,
        "panicked at {file}:{at}"
    );
}
