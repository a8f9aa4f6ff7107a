//! Learning-rate schedules, in closed form or driven by a metric, and the `Scheduler` that
//! applies one to any optimizer.

use std::cell::Cell;
use std::f64::consts::PI;
use std::fmt;

use rewind_autograd::Float;

use crate::optimizer::Optimizer;

/// A learning rate as a function of the scheduler's step count (0 before its first step) and
/// the optimizer's initial learning rate; for a schedule that reads a metric
/// ([`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau)), also of the metrics it has observed.
pub trait LrSchedule {
    /// The learning rate after `step` scheduler steps. Panics, at the caller's line, on an
    /// argument the schedule refuses (each schedule says which).
    #[track_caller]
    fn lr_at(&self, base_lr: f64, step: usize) -> f64;

    /// Takes the metric reported with the scheduler step that reached `step` (≥ 1), before the
    /// rate of that step is asked for. Schedules that read no metric ignore it (the default).
    fn observe(&mut self, step: usize, metric: f64) {
        let _ = (step, metric);
    }

    /// Whether the schedule needs a metric at every step, so that [`Scheduler::step`] refuses
    /// to advance it without one. False by default.
    fn reads_metric(&self) -> bool {
        false
    }

    /// The momentum (SGD's, RMSprop's) or β1 (the Adam family's) after `step` steps, for a
    /// schedule that cycles it ([`CyclicLr`], [`OneCycleLr`]); None, the default, leaves the
    /// optimizer's own. A [`Scheduler`] sets it at every step, with the rate.
    fn momentum_at(&self, step: usize) -> Option<f64> {
        let _ = step;
        None
    }

    /// Each parameter group's rate after `step` steps, from `base_lr` and the groups'
    /// `lr_scales` ([`Optimizer::lr_scales`]: the default group's, 1, first), for a schedule
    /// that moves each group on its own ([`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau), which
    /// floors each group separately, as torch's does). None, the default, when every group's
    /// rate is [`lr_at`](LrSchedule::lr_at) times its scale. Panics, at the caller's line, on
    /// scales the schedule refuses.
    #[track_caller]
    fn group_lrs_at(&self, base_lr: f64, lr_scales: &[f64], step: usize) -> Option<Vec<f64>> {
        let _ = (base_lr, lr_scales, step);
        None
    }
}

/// A boxed schedule is a schedule, so `Scheduler<Box<dyn LrSchedule>>` and
/// `Warmup<Box<dyn LrSchedule>>` can hold one chosen at run time.
impl<S: LrSchedule + ?Sized> LrSchedule for Box<S> {
    fn lr_at(&self, base_lr: f64, step: usize) -> f64 {
        (**self).lr_at(base_lr, step)
    }

    fn observe(&mut self, step: usize, metric: f64) {
        (**self).observe(step, metric)
    }

    fn reads_metric(&self) -> bool {
        (**self).reads_metric()
    }

    fn momentum_at(&self, step: usize) -> Option<f64> {
        (**self).momentum_at(step)
    }

    fn group_lrs_at(&self, base_lr: f64, lr_scales: &[f64], step: usize) -> Option<Vec<f64>> {
        (**self).group_lrs_at(base_lr, lr_scales, step)
    }
}

/// `base · γ^⌊step / step_size⌋` (`torch.optim.lr_scheduler.StepLR`, γ 0.1 by default).
///
/// Asking for a rate panics, at the caller's line, unless `step_size` ≥ 1 and γ is positive
/// and finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    /// Steps between decays.
    pub step_size: usize,
    /// The factor of each decay.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        at_least_one("StepLr", "step_size", self.step_size);
        positive("StepLr", "gamma", self.gamma);
        base * power(self.gamma, step / self.step_size)
    }
}

/// `base · γ^step` (`ExponentialLR`).
///
/// Asking for a rate panics, at the caller's line, unless γ is positive and finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLr {
    /// The factor of each step.
    pub gamma: f64,
}

impl LrSchedule for ExponentialLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        positive("ExponentialLr", "gamma", self.gamma);
        base * power(self.gamma, step)
    }
}

/// γ^n for any count n, as Python's `gamma ** n` (libm's `pow`): `powi` takes an `i32`, which a
/// count past 2^31 wraps to a negative power or to 0.
fn power(gamma: f64, n: usize) -> f64 {
    gamma.powf(n as f64)
}

/// `η_min + (base - η_min)(1 + cos(π·step / T_max)) / 2` (`CosineAnnealingLR`, η_min 0 by default).
///
/// Asking for a rate panics, at the caller's line, unless `t_max` ≥ 1 and η_min is finite and
/// ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingLr {
    /// Steps of half a cosine period.
    pub t_max: usize,
    /// The lowest learning rate.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealingLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        at_least_one("CosineAnnealingLr", "t_max", self.t_max);
        non_negative("CosineAnnealingLr", "eta_min", self.eta_min);
        let phase = PI * step as f64 / self.t_max as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

/// `base · (start + (end - start)·min(step, total) / total)` (`LinearLR`; defaults start 1/3, end 1,
/// total 5).
///
/// Asking for a rate panics, at the caller's line, on what PyTorch refuses, a start factor
/// outside (0, 1] or an end factor outside [0, 1], and unless `total_iters` ≥ 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearLr {
    /// The factor at step 0.
    pub start_factor: f64,
    /// The factor from step `total_iters` on.
    pub end_factor: f64,
    /// Steps from start to end.
    pub total_iters: usize,
}

impl Default for LinearLr {
    fn default() -> Self {
        LinearLr {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_iters: 5,
        }
    }
}

impl LrSchedule for LinearLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        let (start, end) = (self.start_factor, self.end_factor);
        assert!(
            start > 0.0 && start <= 1.0,
            "LinearLr: start_factor must be in (0, 1], got {start}"
        );
        assert!(
            (0.0..=1.0).contains(&end),
            "LinearLr: end_factor must be in [0, 1], got {end}"
        );
        at_least_one("LinearLr", "total_iters", self.total_iters);
        let progress = step.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (self.start_factor + (self.end_factor - self.start_factor) * progress)
    }
}

/// `base · γ^k`, k the number of milestones ≤ `step` (`MultiStepLR`, γ 0.1 by default): the
/// rate drops by γ at each milestone, by γ^n at one listed n times. Like torch, it multiplies by
/// γ^n milestone after milestone, so the rates round as torch's do.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLr {
    /// Distinct milestones, ascending, each with the number of times it was listed.
    milestones: Vec<(usize, u64)>,
    gamma: f64,
}

impl MultiStepLr {
    /// Decays by γ = 0.1 at each of `milestones` (steps, in any order; a repeated one decays
    /// once per listing, as with torch's `Counter`).
    pub fn new(milestones: impl IntoIterator<Item = usize>) -> Self {
        let mut sorted: Vec<usize> = milestones.into_iter().collect();
        sorted.sort_unstable();
        let mut counted: Vec<(usize, u64)> = Vec::new();
        for m in sorted {
            match counted.last_mut() {
                Some((last, n)) if *last == m => *n += 1,
                _ => counted.push((m, 1)),
            }
        }
        MultiStepLr {
            milestones: counted,
            gamma: 0.1,
        }
    }

    /// The factor of each decay. Panics unless positive and finite.
    #[track_caller]
    pub fn gamma(mut self, gamma: f64) -> Self {
        positive("MultiStepLr", "gamma", gamma);
        self.gamma = gamma;
        self
    }
}

impl LrSchedule for MultiStepLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        self.milestones
            .iter()
            .take_while(|&&(m, _)| m <= step)
            .fold(base, |lr, &(_, n)| lr * self.gamma.powf(n as f64))
    }
}

/// How [`OneCycleLr`] goes from one rate to another over a phase, as `pct` goes from 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Anneal {
    /// `end + (start - end)/2 · (1 + cos(π·pct))` (torch's `anneal_strategy="cos"`, the default).
    #[default]
    Cos,
    /// `start + (end - start)·pct` (`"linear"`).
    Linear,
}

impl Anneal {
    fn between(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// The 1cycle policy (`OneCycleLR`; Smith and Topin 2017), over `total_steps` steps T with
/// `p = pct_start`: from `initial = max_lr / div_factor` up to `max_lr` until step `p·T - 1`,
/// then down to `min = initial / final_div_factor` at step `T - 1`. With `three_phase`, the
/// rise is mirrored back down to `initial` at step `2·p·T - 2`, and the last phase goes from
/// there to `min`. Within a phase from step a to step b, the rate moves from its start to its
/// end by [`Anneal`] with `pct = (step - a)/(b - a)`.
///
/// The momentum cycles the other way (`cycle_momentum`, on by default, as in torch): from
/// `max_momentum` down to `base_momentum` while the rate rises, and back up while it falls; with
/// three phases it stays at `max_momentum` through the last. It is SGD's or RMSprop's momentum,
/// or the Adam family's β1 (see [`Optimizer::momentum`]); a [`Scheduler`] refuses an optimizer
/// with neither, as torch does, unless the cycling is turned off.
///
/// PyTorch's defaults: pct_start 0.3, [`Anneal::Cos`], div_factor 25, final_div_factor 1e4,
/// two phases, momentum from 0.95 to 0.85. The optimizer's own rate is ignored: the cycle sets
/// every rate. Steps 0 to T are defined (step T lies one step past the last phase's end, as in
/// torch); stepping past T panics, as torch raises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycleLr {
    max_lr: f64,
    total_steps: usize,
    pct_start: f64,
    anneal: Anneal,
    div_factor: f64,
    final_div_factor: f64,
    three_phase: bool,
    cycle_momentum: bool,
    base_momentum: f64,
    max_momentum: f64,
}

impl OneCycleLr {
    /// A cycle peaking at `max_lr` over `total_steps` steps (torch's `epochs · steps_per_epoch`
    /// is the same number), with PyTorch's defaults. Panics unless `max_lr` is positive and
    /// finite and `total_steps` at least 1.
    #[track_caller]
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        positive("OneCycleLr", "max_lr", max_lr);
        assert!(
            total_steps >= 1,
            "OneCycleLr: total_steps must be at least 1, got {total_steps}"
        );
        OneCycleLr {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
        }
    }

    /// The fraction of the cycle spent rising, in [0, 1] (0.3).
    #[track_caller]
    pub fn pct_start(mut self, pct_start: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&pct_start),
            "OneCycleLr: pct_start must be in [0, 1], got {pct_start}"
        );
        self.pct_start = pct_start;
        self
    }

    /// How each phase moves between its rates ([`Anneal::Cos`]).
    pub fn anneal(mut self, anneal: Anneal) -> Self {
        self.anneal = anneal;
        self
    }

    /// The starting rate is `max_lr / div_factor` (25). Panics unless positive and finite.
    #[track_caller]
    pub fn div_factor(mut self, div_factor: f64) -> Self {
        positive("OneCycleLr", "div_factor", div_factor);
        self.div_factor = div_factor;
        self
    }

    /// The final rate is the starting rate over `final_div_factor` (1e4). Panics unless
    /// positive and finite.
    #[track_caller]
    pub fn final_div_factor(mut self, final_div_factor: f64) -> Self {
        positive("OneCycleLr", "final_div_factor", final_div_factor);
        self.final_div_factor = final_div_factor;
        self
    }

    /// Three phases (up, back down to the start, then to the minimum), as in the 1cycle paper,
    /// instead of two (false, as in fastai and torch by default).
    pub fn three_phase(mut self, three_phase: bool) -> Self {
        self.three_phase = three_phase;
        self
    }

    /// Whether to cycle the optimizer's momentum (true).
    pub fn cycle_momentum(mut self, cycle_momentum: bool) -> Self {
        self.cycle_momentum = cycle_momentum;
        self
    }

    /// The momentum at the top of the rate (0.85). Panics unless finite and ≥ 0 (the optimizer
    /// refuses a β1 of 1 or more when it is set).
    #[track_caller]
    pub fn base_momentum(mut self, base_momentum: f64) -> Self {
        non_negative("OneCycleLr", "base_momentum", base_momentum);
        self.base_momentum = base_momentum;
        self
    }

    /// The momentum at the start and the end of the cycle (0.95). Panics unless finite and ≥ 0.
    #[track_caller]
    pub fn max_momentum(mut self, max_momentum: f64) -> Self {
        non_negative("OneCycleLr", "max_momentum", max_momentum);
        self.max_momentum = max_momentum;
        self
    }

    /// Where `step` lies: the phase's (from, to) rates and momenta and how far through it it is.
    #[track_caller]
    fn position(&self, step: usize) -> ((f64, f64), (f64, f64), f64) {
        let (t, p) = (self.total_steps, self.pct_start);
        assert!(
            step <= t,
            "OneCycleLr: step {step} is past the end of the cycle (total_steps {t})"
        );
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let (low, high) = (self.base_momentum, self.max_momentum);
        let tf = t as f64;
        // (last step, rates, momenta) of each phase, computed as torch computes them.
        let phases = if self.three_phase {
            vec![
                (p * tf - 1.0, (initial, self.max_lr), (high, low)),
                (2.0 * p * tf - 2.0, (self.max_lr, initial), (low, high)),
                (tf - 1.0, (initial, min), (high, high)),
            ]
        } else {
            vec![
                (p * tf - 1.0, (initial, self.max_lr), (high, low)),
                (tf - 1.0, (self.max_lr, min), (low, high)),
            ]
        };
        let s = step as f64;
        let mut start = 0.0;
        for (i, &(end, rates, momenta)) in phases.iter().enumerate() {
            if s <= end || i == phases.len() - 1 {
                // torch divides by zero here.
                assert!(
                    end != start,
                    "OneCycleLr: phase {} of the cycle is empty (pct_start {p} of total_steps {t} \
                     ends it at step {end}); choose another pct_start",
                    i + 1
                );
                return (rates, momenta, (s - start) / (end - start));
            }
            start = end;
        }
        unreachable!("the last phase takes every step past the others")
    }
}

impl LrSchedule for OneCycleLr {
    fn lr_at(&self, _: f64, step: usize) -> f64 {
        let ((from, to), _, pct) = self.position(step);
        self.anneal.between(from, to, pct)
    }

    fn momentum_at(&self, step: usize) -> Option<f64> {
        let (_, (from, to), pct) = self.position(step);
        self.cycle_momentum
            .then(|| self.anneal.between(from, to, pct))
    }
}

/// How [`CyclicLr`] scales the height of each cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CyclicMode {
    /// Every cycle the same height (torch's `"triangular"`, the default).
    #[default]
    Triangular,
    /// Each cycle half the height of the one before: scale `1 / 2^(cycle - 1)`
    /// (`"triangular2"`).
    Triangular2,
    /// The height decays by γ every step: scale `γ^step` (`"exp_range"`).
    ExpRange,
}

/// The cyclical learning rate policy (`CyclicLR`; Smith 2017): the rate goes from `base_lr` up
/// to `max_lr` over `step_size_up` steps and back down over `step_size_down`, over and over, the
/// height of each cycle scaled by the [`CyclicMode`]. With `T = up + down`, at step s:
///
/// ```text
/// cycle = ⌊1 + s/T⌋,  x = 1 + s/T - cycle
/// f = x / r  if x ≤ r,  else (x - 1)/(r - 1)        r = up / T
/// lr = base_lr + (max_lr - base_lr)·f·scale
/// momentum = max_momentum - (max_momentum - base_momentum)·f·scale
/// ```
///
/// The momentum cycles against the rate (`cycle_momentum`, on by default, as in torch, from
/// 0.9 down to 0.8): as with [`OneCycleLr`], it is SGD's or RMSprop's momentum, or the Adam
/// family's β1, and a [`Scheduler`] refuses an optimizer with neither unless the cycling is
/// turned off. The optimizer's own rate is ignored. PyTorch's defaults: step_size_up 2000,
/// step_size_down equal to it, [`CyclicMode::Triangular`], γ 1. torch's custom `scale_fn` is
/// not offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CyclicLr {
    base_lr: f64,
    max_lr: f64,
    step_size_up: usize,
    step_size_down: Option<usize>,
    mode: CyclicMode,
    gamma: f64,
    cycle_momentum: bool,
    base_momentum: f64,
    max_momentum: f64,
}

impl CyclicLr {
    /// Cycles between `base_lr` and `max_lr` with PyTorch's defaults. Panics unless both are
    /// finite and ≥ 0.
    #[track_caller]
    pub fn new(base_lr: f64, max_lr: f64) -> Self {
        non_negative("CyclicLr", "base_lr", base_lr);
        non_negative("CyclicLr", "max_lr", max_lr);
        CyclicLr {
            base_lr,
            max_lr,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }

    /// Steps from `base_lr` up to `max_lr` (2000). Panics unless at least 1.
    #[track_caller]
    pub fn step_size_up(mut self, steps: usize) -> Self {
        at_least_one("CyclicLr", "step_size_up", steps);
        self.step_size_up = steps;
        self
    }

    /// Steps from `max_lr` back down (as many as up, unless set).
    pub fn step_size_down(mut self, steps: usize) -> Self {
        self.step_size_down = Some(steps);
        self
    }

    /// How each cycle's height is scaled ([`CyclicMode::Triangular`]).
    pub fn mode(mut self, mode: CyclicMode) -> Self {
        self.mode = mode;
        self
    }

    /// The decay γ of [`CyclicMode::ExpRange`] (1). Panics unless positive and finite.
    #[track_caller]
    pub fn gamma(mut self, gamma: f64) -> Self {
        positive("CyclicLr", "gamma", gamma);
        self.gamma = gamma;
        self
    }

    /// Whether to cycle the optimizer's momentum (true).
    pub fn cycle_momentum(mut self, cycle_momentum: bool) -> Self {
        self.cycle_momentum = cycle_momentum;
        self
    }

    /// The momentum at the top of the rate (0.8). Panics unless finite and ≥ 0 (the optimizer
    /// refuses a β1 of 1 or more when it is set).
    #[track_caller]
    pub fn base_momentum(mut self, base_momentum: f64) -> Self {
        non_negative("CyclicLr", "base_momentum", base_momentum);
        self.base_momentum = base_momentum;
        self
    }

    /// The momentum at the bottom of the rate (0.9). Panics unless finite and ≥ 0.
    #[track_caller]
    pub fn max_momentum(mut self, max_momentum: f64) -> Self {
        non_negative("CyclicLr", "max_momentum", max_momentum);
        self.max_momentum = max_momentum;
        self
    }

    /// (f, scale) at `step`, kept apart so that the rate and the momentum multiply them in
    /// torch's order.
    fn height(&self, step: usize) -> (f64, f64) {
        let up = self.step_size_up as f64;
        let total = up + self.step_size_down.unwrap_or(self.step_size_up) as f64;
        let s = step as f64;
        let cycle = (1.0 + s / total).floor();
        let x = 1.0 + s / total - cycle;
        let ratio = up / total;
        let f = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let scale = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange => self.gamma.powf(s),
        };
        (f, scale)
    }
}

impl LrSchedule for CyclicLr {
    fn lr_at(&self, _: f64, step: usize) -> f64 {
        let (f, scale) = self.height(step);
        self.base_lr + (self.max_lr - self.base_lr) * f * scale
    }

    fn momentum_at(&self, step: usize) -> Option<f64> {
        let (f, scale) = self.height(step);
        let span = self.max_momentum - self.base_momentum;
        self.cycle_momentum
            .then_some(self.max_momentum - span * f * scale)
    }
}

/// Cosine annealing with warm restarts (`CosineAnnealingWarmRestarts`; SGDR, Loshchilov and
/// Hutter 2017): `η_min + (base - η_min)(1 + cos(π·T_cur / T_i)) / 2`, where the i-th period
/// (from 0) lasts `T_i = t_0 · t_mult^i` steps and `T_cur` counts the steps since the last
/// restart, at which the rate jumps back to base. Defaults t_mult 1, eta_min 0. Fractional
/// epochs (torch's `step(epoch)` with a float, once per batch) go through
/// [`lr_at_epoch`](CosineAnnealingWarmRestarts::lr_at_epoch) and
/// [`Scheduler::step_to_epoch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    t_0: usize,
    t_mult: usize,
    eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// Restarts every `t_0` steps (≥ 1), annealing to 0 each time.
    #[track_caller]
    pub fn new(t_0: usize) -> Self {
        assert!(
            t_0 >= 1,
            "CosineAnnealingWarmRestarts: t_0 must be at least 1, got {t_0}"
        );
        CosineAnnealingWarmRestarts {
            t_0,
            t_mult: 1,
            eta_min: 0.0,
        }
    }

    /// Each period is `t_mult` (≥ 1) times the one before.
    #[track_caller]
    pub fn t_mult(mut self, t_mult: usize) -> Self {
        assert!(
            t_mult >= 1,
            "CosineAnnealingWarmRestarts: t_mult must be at least 1, got {t_mult}"
        );
        self.t_mult = t_mult;
        self
    }

    /// The lowest rate, approached at the end of each period. Panics unless finite and ≥ 0.
    #[track_caller]
    pub fn eta_min(mut self, eta_min: f64) -> Self {
        non_negative("CosineAnnealingWarmRestarts", "eta_min", eta_min);
        self.eta_min = eta_min;
        self
    }

    /// The rate at a fractional `epoch` e, as torch's `step(epoch)` computes it: the period it
    /// falls in is n = ⌊log_{t_mult}(e/t_0·(t_mult - 1) + 1)⌋ (e mod t_0 into a period of t_0
    /// with t_mult 1), so `T_i = t_0·t_mult^n` and `T_cur = e - t_0·(t_mult^n - 1)/(t_mult - 1)`.
    ///
    /// Panics, at the caller's line, unless `epoch` is finite and ≥ 0 (torch refuses a negative
    /// one).
    #[track_caller]
    pub fn lr_at_epoch(&self, base: f64, epoch: f64) -> f64 {
        non_negative("CosineAnnealingWarmRestarts", "epoch", epoch);
        let (t_0, t_mult) = (self.t_0 as f64, self.t_mult as f64);
        let (t_cur, t_i) = if epoch < t_0 {
            (epoch, t_0)
        } else if self.t_mult == 1 {
            (epoch % t_0, t_0)
        } else {
            // Python's `math.log(x, base)`, ln x / ln base, truncated as `int` does.
            let n = ((epoch / t_0 * (t_mult - 1.0) + 1.0).ln() / t_mult.ln()).trunc();
            let grown = t_mult.powf(n);
            (epoch - t_0 * (grown - 1.0) / (t_mult - 1.0), t_0 * grown)
        };
        let phase = PI * t_cur / t_i;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

impl LrSchedule for CosineAnnealingWarmRestarts {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        let (t_cur, t_i) = if self.t_mult == 1 {
            (step % self.t_0, self.t_0)
        } else {
            let (mut t_cur, mut t_i) = (step, self.t_0);
            while t_cur >= t_i {
                t_cur -= t_i;
                t_i = t_i.saturating_mul(self.t_mult);
            }
            (t_cur, t_i)
        };
        let phase = PI * t_cur as f64 / t_i as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

/// Panics unless `value` is positive and finite, naming the schedule and the argument.
#[track_caller]
fn positive(schedule: &str, name: &str, value: f64) {
    assert!(
        value > 0.0 && value.is_finite(),
        "{schedule}: {name} must be a positive finite number, got {value}"
    );
}

/// Panics unless `value` is finite and ≥ 0, naming the schedule and the argument.
#[track_caller]
fn non_negative(schedule: &str, name: &str, value: f64) {
    assert!(
        value >= 0.0 && value.is_finite(),
        "{schedule}: {name} must be a non-negative finite number, got {value}"
    );
}

/// Panics unless the count `value` is at least 1 (a period or a number of steps, which the
/// schedule divides by), naming the schedule and the argument.
#[track_caller]
fn at_least_one(schedule: &str, name: &str, value: usize) {
    assert!(
        value >= 1,
        "{schedule}: {name} must be at least 1, got {value}"
    );
}

/// The optimizer's own rate at every step: `base`. (PyTorch has no such scheduler: it is no
/// scheduler at all. It is for code that always drives a [`Scheduler`]; not to be confused with
/// [`ConstantLr`], PyTorch's `ConstantLR`.)
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct BaseLr;

impl LrSchedule for BaseLr {
    fn lr_at(&self, base: f64, _: usize) -> f64 {
        base
    }
}

/// `base · factor` for the first `total_iters` steps, then `base` (`ConstantLR`; defaults
/// factor 1/3, total_iters 5), in torch's closed form.
///
/// Asking for a rate panics, at the caller's line, on a factor outside [0, 1], which PyTorch
/// refuses. Factor 0, which it accepts, holds the rate at 0 and then restores the base, where
/// torch's step-by-step form divides by the factor and gives NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConstantLr {
    /// The multiple of the base until `total_iters`.
    pub factor: f64,
    /// Steps at the reduced rate.
    pub total_iters: usize,
}

impl Default for ConstantLr {
    fn default() -> Self {
        ConstantLr {
            factor: 1.0 / 3.0,
            total_iters: 5,
        }
    }
}

impl LrSchedule for ConstantLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        let factor = self.factor;
        assert!(
            (0.0..=1.0).contains(&factor),
            "ConstantLr: factor must be in [0, 1], got {factor}"
        );
        if step < self.total_iters {
            base * factor
        } else {
            base
        }
    }
}

/// `base · (1 - min(step, total_iters) / total_iters)^power` (`PolynomialLR`; defaults
/// total_iters 5, power 1): down to 0 at step `total_iters`, and 0 after, in torch's closed form.
///
/// Asking for a rate panics, at the caller's line, unless `total_iters` ≥ 1 and the power is
/// finite and ≥ 0 (below 0 the rate at `total_iters` is 1/0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolynomialLr {
    /// Steps until the rate reaches 0.
    pub total_iters: usize,
    /// The power of the polynomial.
    pub power: f64,
}

impl Default for PolynomialLr {
    fn default() -> Self {
        PolynomialLr {
            total_iters: 5,
            power: 1.0,
        }
    }
}

impl LrSchedule for PolynomialLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        at_least_one("PolynomialLr", "total_iters", self.total_iters);
        non_negative("PolynomialLr", "power", self.power);
        let done = step.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (1.0 - done).powf(self.power)
    }
}

/// `base · λ(step)` for a closure λ (`LambdaLR`). A rate that comes out NaN, infinite or
/// negative is refused by the [`Scheduler`] at the step that asks for it.
#[derive(Clone)]
pub struct LambdaLr<L> {
    lambda: L,
}

impl<L: Fn(usize) -> f64> LambdaLr<L> {
    /// The base scaled by `lambda(step)` at each step.
    pub fn new(lambda: L) -> Self {
        LambdaLr { lambda }
    }
}

impl<L> fmt::Debug for LambdaLr<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaLr").finish_non_exhaustive()
    }
}

impl<L: Fn(usize) -> f64> LrSchedule for LambdaLr<L> {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        base * (self.lambda)(step)
    }
}

/// `base · f(1) · f(2) ⋯ f(step)` for a closure f (`MultiplicativeLR`): each step multiplies
/// the rate by `f(step)`, in that order, as torch rounds it. The last product is remembered, so
/// a [`Scheduler`] stepping on costs one call of f a step; asking for an earlier step starts the
/// product again from the base.
#[derive(Clone)]
pub struct MultiplicativeLr<L> {
    factor: L,
    /// (base, step, rate) of the last rate asked for.
    last: Cell<(f64, usize, f64)>,
}

impl<L: Fn(usize) -> f64> MultiplicativeLr<L> {
    /// The rate multiplied by `factor(step)` at each step from 1.
    pub fn new(factor: L) -> Self {
        MultiplicativeLr {
            factor,
            last: Cell::new((f64::NAN, 0, f64::NAN)),
        }
    }
}

impl<L> fmt::Debug for MultiplicativeLr<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiplicativeLr").finish_non_exhaustive()
    }
}

impl<L: Fn(usize) -> f64> LrSchedule for MultiplicativeLr<L> {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        let (last_base, last_step, last_lr) = self.last.get();
        // A NaN base never equals the remembered one, so it is recomputed (and stays NaN).
        let (from, mut lr) = if last_base == base && last_step <= step {
            (last_step, last_lr)
        } else {
            (0, base)
        };
        for k in from + 1..=step {
            lr *= (self.factor)(k);
        }
        self.last.set((base, step, lr));
        lr
    }
}

/// Schedules one after another (`SequentialLR`): schedule i (from 0) runs from milestone i - 1
/// (from step 0 for the first) until milestone i, counting its own steps from 0 there. For the
/// first schedule and `milestones = [m]`: `s_0(base, step)` while step < m, then
/// `s_1(base, step - m)`. A schedule that reads a metric sees those reported during its own
/// steps, from its step 1 on, as behind a [`Warmup`].
///
/// Every schedule's arguments are checked when the scheduler starts (step 0), by asking each
/// for its first rate, so that a misconfigured later schedule panics then, not at its milestone.
pub struct SequentialLr {
    schedules: Vec<Box<dyn LrSchedule>>,
    milestones: Vec<usize>,
}

impl SequentialLr {
    /// `schedules` (at least one), switching at `milestones` (one fewer, ascending; two equal
    /// milestones skip the schedule between them, as in torch). Panics otherwise, at the
    /// caller's line.
    #[track_caller]
    pub fn new(
        schedules: Vec<Box<dyn LrSchedule>>,
        milestones: impl IntoIterator<Item = usize>,
    ) -> Self {
        let milestones: Vec<usize> = milestones.into_iter().collect();
        assert!(!schedules.is_empty(), "SequentialLr: no schedules");
        let wanted = schedules.len() - 1;
        assert!(
            milestones.len() == wanted,
            "SequentialLr: {} schedules take {wanted} milestone{}, got {}",
            schedules.len(),
            if wanted == 1 { "" } else { "s" },
            milestones.len()
        );
        assert!(
            milestones.windows(2).all(|w| w[0] <= w[1]),
            "SequentialLr: milestones must be in ascending order, got {milestones:?}"
        );
        SequentialLr {
            schedules,
            milestones,
        }
    }

    /// The schedule that sets the rate at `step`, and its own step count there.
    fn active(&self, step: usize) -> (usize, usize) {
        let i = self.milestones.partition_point(|&m| m <= step);
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        (i, step - start)
    }
}

impl fmt::Debug for SequentialLr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequentialLr")
            .field("milestones", &self.milestones)
            .finish_non_exhaustive()
    }
}

impl LrSchedule for SequentialLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        if step == 0 {
            for later in &self.schedules[1..] {
                later.lr_at(base, 0);
            }
        }
        let (i, local) = self.active(step);
        self.schedules[i].lr_at(base, local)
    }

    fn observe(&mut self, step: usize, metric: f64) {
        let (i, local) = self.active(step);
        if local > 0 {
            self.schedules[i].observe(local, metric);
        }
    }

    fn reads_metric(&self) -> bool {
        self.schedules.iter().any(|s| s.reads_metric())
    }

    /// The momentum of the schedule running at `step`, if it cycles one.
    fn momentum_at(&self, step: usize) -> Option<f64> {
        let (i, local) = self.active(step);
        self.schedules[i].momentum_at(local)
    }

    /// The group rates of the schedule running at `step`, if it sets them.
    fn group_lrs_at(&self, base: f64, lr_scales: &[f64], step: usize) -> Option<Vec<f64>> {
        if step == 0 {
            for later in &self.schedules[1..] {
                later.group_lrs_at(base, lr_scales, 0);
            }
        }
        let (i, local) = self.active(step);
        self.schedules[i].group_lrs_at(base, lr_scales, local)
    }
}

/// Schedules applied together (`ChainedScheduler`): `base · Π_i s_i(base, step) / base`, each
/// schedule's factor on the base multiplying the others'. This is torch's rate when each of its
/// schedules moves the rate by a factor (StepLR, MultiStepLR, ExponentialLR, ConstantLR,
/// LinearLR, PolynomialLR, MultiplicativeLR, ReduceLROnPlateau), up to rounding; torch's
/// LambdaLR, CosineAnnealingLR and OneCycleLR instead set the rate from the base, which makes
/// torch's chain depend on their order, and the product here does not. A base of 0 gives 0.
///
/// A schedule that reads a metric sees every one reported.
pub struct ChainedScheduler {
    schedules: Vec<Box<dyn LrSchedule>>,
}

impl ChainedScheduler {
    /// `schedules` (at least one; panics otherwise, at the caller's line), all applied at every
    /// step.
    #[track_caller]
    pub fn new(schedules: Vec<Box<dyn LrSchedule>>) -> Self {
        assert!(!schedules.is_empty(), "ChainedScheduler: no schedules");
        ChainedScheduler { schedules }
    }
}

impl fmt::Debug for ChainedScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainedScheduler")
            .field("schedules", &self.schedules.len())
            .finish_non_exhaustive()
    }
}

impl LrSchedule for ChainedScheduler {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        // A loop, not an iterator's closure, so that a schedule's refusal panics at the line
        // of the caller, through `#[track_caller]`. Every schedule is asked even at base 0, so
        // that its arguments are checked.
        let mut lr = base;
        for s in &self.schedules {
            lr *= s.lr_at(base, step) / base;
        }
        if base == 0.0 {
            0.0
        } else {
            lr
        }
    }

    fn observe(&mut self, step: usize, metric: f64) {
        for s in &mut self.schedules {
            s.observe(step, metric);
        }
    }

    fn reads_metric(&self) -> bool {
        self.schedules.iter().any(|s| s.reads_metric())
    }

    /// The momentum of the last schedule that cycles one, as torch's chain sets each in turn.
    fn momentum_at(&self, step: usize) -> Option<f64> {
        self.schedules
            .iter()
            .rev()
            .find_map(|s| s.momentum_at(step))
    }

    /// When some schedule sets each group's rate: group g's base `base·scale_g` times each
    /// schedule's factor on it, that schedule's rate for the group over the group's base (for a
    /// schedule that moves every group alike, `lr_at(base, step) / base`).
    fn group_lrs_at(&self, base: f64, lr_scales: &[f64], step: usize) -> Option<Vec<f64>> {
        let mut per_group = Vec::with_capacity(self.schedules.len());
        for s in &self.schedules {
            per_group.push(s.group_lrs_at(base, lr_scales, step));
        }
        if per_group.iter().all(Option::is_none) {
            return None;
        }
        let mut lrs = Vec::with_capacity(lr_scales.len());
        for (g, &scale) in lr_scales.iter().enumerate() {
            let group_base = base * scale;
            let mut lr = group_base;
            for (s, rates) in self.schedules.iter().zip(&per_group) {
                lr *= match rates {
                    Some(rates) => rates[g] / group_base,
                    None => s.lr_at(base, step) / base,
                };
            }
            lrs.push(if group_base == 0.0 { 0.0 } else { lr });
        }
        Some(lrs)
    }
}

/// Linear warmup, then another schedule: `base·(step + 1)/steps` for the first `steps` steps,
/// then `then` counted from the end of the warmup. (PyTorch: `SequentialLR` of
/// `LinearLR(1/steps, 1, steps - 1)` and `then`, with the milestone at `steps`.) A schedule
/// that reads a metric sees only those reported after the warm-up: its step 0 is step `steps`,
/// its step 1 the first step with a metric it reads. `then` may be boxed
/// (`Box<dyn LrSchedule>`); its arguments are checked from step 0, as if it ran alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup<S> {
    /// Steps of warmup.
    pub steps: usize,
    /// The schedule after it.
    pub then: S,
}

impl<S: LrSchedule> LrSchedule for Warmup<S> {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        if step < self.steps {
            // Asked for its first rate, which checks its arguments, so that a misconfigured
            // `then` panics when the scheduler starts, not when the warm-up ends.
            self.then.lr_at(base, 0);
            base * (step + 1) as f64 / self.steps as f64
        } else {
            self.then.lr_at(base, step - self.steps)
        }
    }

    fn observe(&mut self, step: usize, metric: f64) {
        if step > self.steps {
            self.then.observe(step - self.steps, metric);
        }
    }

    fn reads_metric(&self) -> bool {
        self.then.reads_metric()
    }

    /// During the warm-up, the momentum `then` starts with (as torch's schedules set theirs when
    /// created).
    fn momentum_at(&self, step: usize) -> Option<f64> {
        self.then.momentum_at(step.saturating_sub(self.steps))
    }

    /// After the warm-up, `then`'s group rates, if it sets them; during it, checks that `then`
    /// takes these scales.
    fn group_lrs_at(&self, base: f64, lr_scales: &[f64], step: usize) -> Option<Vec<f64>> {
        if step < self.steps {
            self.then.group_lrs_at(base, lr_scales, 0);
            None
        } else {
            self.then.group_lrs_at(base, lr_scales, step - self.steps)
        }
    }
}

/// Applies a schedule to an optimizer: call [`step`](Scheduler::step) once per epoch or
/// iteration, after the optimizer's step, as with PyTorch's schedulers; a schedule that reads a
/// metric takes it through [`step_with_metric`](Scheduler::step_with_metric) instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler<S> {
    schedule: S,
    base_lr: f64,
    steps: usize,
}

impl<S: LrSchedule> Scheduler<S> {
    /// Starts the schedule from the optimizer's current learning rate, and sets its step-0 value.
    /// Panics as [`resume`](Scheduler::resume) does.
    #[track_caller]
    pub fn new<F: Float>(schedule: S, optimizer: &mut dyn Optimizer<F>) -> Self {
        Self::resume(schedule, optimizer.lr(), 0, optimizer)
    }

    /// Continues a schedule that had taken `steps` steps from `base_lr` (for resuming a run; a
    /// [`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau) also needs its saved
    /// [`state`](crate::ReduceLrOnPlateau::state)).
    ///
    /// Panics unless `base_lr` is finite and ≥ 0. Here and at every step, a rate the schedule
    /// gives that is not finite and ≥ 0 (γ^step overflowing, a linear one-cycle's step
    /// `total_steps`, which lies below 0) panics before it reaches the optimizer.
    #[track_caller]
    pub fn resume<F: Float>(
        schedule: S,
        base_lr: f64,
        steps: usize,
        optimizer: &mut dyn Optimizer<F>,
    ) -> Self {
        non_negative("Scheduler", "base_lr", base_lr);
        let scheduler = Scheduler {
            schedule,
            base_lr,
            steps,
        };
        scheduler.apply(optimizer);
        scheduler
    }

    /// Sets the optimizer's learning rate to the current step's (each group's, for a schedule
    /// that sets them), and its momentum if the schedule cycles it.
    #[track_caller]
    fn apply<F: Float>(&self, optimizer: &mut dyn Optimizer<F>) {
        let lr = self.lr();
        assert!(
            lr >= 0.0 && lr.is_finite(),
            "Scheduler: the rate at step {} is {lr}; a learning rate must be finite and >= 0",
            self.steps
        );
        let lr_scales = optimizer.lr_scales();
        match self
            .schedule
            .group_lrs_at(self.base_lr, &lr_scales, self.steps)
        {
            Some(lrs) => optimizer.set_group_lrs(&lrs),
            None => optimizer.set_lr(lr),
        }
        if let Some(momentum) = self.schedule.momentum_at(self.steps) {
            assert!(
                optimizer.momentum().is_some(),
                "Scheduler: the schedule cycles the momentum, but this optimizer has neither a \
                 momentum nor a beta1; turn the cycling off (cycle_momentum(false))"
            );
            optimizer.set_momentum(momentum);
        }
    }

    /// Advances one step and sets the optimizer's learning rate.
    ///
    /// Panics if the schedule reads a metric: use [`step_with_metric`](Scheduler::step_with_metric).
    #[track_caller]
    pub fn step<F: Float>(&mut self, optimizer: &mut dyn Optimizer<F>) {
        assert!(
            !self.schedule.reads_metric(),
            "Scheduler::step: this schedule reads a metric (ReduceLrOnPlateau); \
             call step_with_metric(metric, optimizer)"
        );
        self.steps += 1;
        self.apply(optimizer);
    }

    /// Advances one step, reporting `metric` (e.g. the validation loss; PyTorch's
    /// `scheduler.step(metric)`), and sets the optimizer's learning rate. Schedules that read
    /// no metric ignore it, so a training loop may report one to whichever schedule it has.
    #[track_caller]
    pub fn step_with_metric<F: Float>(&mut self, metric: f64, optimizer: &mut dyn Optimizer<F>) {
        self.steps += 1;
        self.schedule.observe(self.steps, metric);
        self.apply(optimizer);
    }

    /// The learning rate at the current step.
    #[track_caller]
    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.base_lr, self.steps)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The learning rate the schedule started from.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// The schedule (to save a [`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau)'s state).
    pub fn schedule(&self) -> &S {
        &self.schedule
    }
}

impl Scheduler<CosineAnnealingWarmRestarts> {
    /// Moves to the fractional `epoch` (torch's `scheduler.step(epoch)`, e.g. `epoch + i / iters`
    /// at batch i) and sets the optimizer's rate to
    /// [`lr_at_epoch`](CosineAnnealingWarmRestarts::lr_at_epoch)'s; the step count becomes
    /// ⌊epoch⌋, as torch's `last_epoch` does. A plain [`step`](Scheduler::step) after it goes on
    /// from that whole step (torch's goes on from the fractional position).
    ///
    /// Panics, at the caller's line, unless `epoch` is finite and ≥ 0.
    #[track_caller]
    pub fn step_to_epoch<F: Float>(&mut self, epoch: f64, optimizer: &mut dyn Optimizer<F>) {
        let lr = self.schedule.lr_at_epoch(self.base_lr, epoch);
        optimizer.set_lr(lr);
        self.steps = epoch.floor() as usize;
    }
}
