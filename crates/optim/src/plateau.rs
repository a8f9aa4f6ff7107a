//! `ReduceLrOnPlateau`: the learning-rate schedule driven by a metric.

use crate::schedule::LrSchedule;

/// Whether a lower or a higher metric is an improvement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlateauMode {
    /// Lower is better (a loss; torch's `mode="min"`, the default).
    #[default]
    Min,
    /// Higher is better (an accuracy; `"max"`).
    Max,
}

/// How far past the best a metric must go to count as an improvement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThresholdMode {
    /// Past `best·(1 ∓ threshold)` (torch's `threshold_mode="rel"`, the default).
    #[default]
    Rel,
    /// Past `best ∓ threshold` (`"abs"`).
    Abs,
}

/// What a [`ReduceLrOnPlateau`] remembers between steps, by torch's names: save it with a
/// checkpoint and give it back through [`ReduceLrOnPlateau::with_state`] to resume.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauState {
    /// The best metric so far (+∞ in [`PlateauMode::Min`], -∞ in `Max`, before any).
    pub best: f64,
    /// Steps in a row without improvement, outside cooldown.
    pub num_bad_epochs: usize,
    /// Steps of cooldown left.
    pub cooldown_counter: usize,
    /// How many times the patience ran out: the rate is the base after that many cuts.
    pub reductions: usize,
}

impl PlateauState {
    /// Nothing seen yet.
    fn fresh(mode: PlateauMode) -> Self {
        PlateauState {
            best: match mode {
                PlateauMode::Min => f64::INFINITY,
                PlateauMode::Max => f64::NEG_INFINITY,
            },
            num_bad_epochs: 0,
            cooldown_counter: 0,
            reductions: 0,
        }
    }
}

/// Cuts the learning rate when a metric stops improving (`ReduceLROnPlateau`). Each step
/// reads a metric m ([`Scheduler::step_with_metric`](crate::Scheduler::step_with_metric)),
/// which improves on the best so far if
///
/// - `m < best·(1 - threshold)` (mode Min, threshold Rel), `m < best - threshold` (Min, Abs),
/// - `m > best·(1 + threshold)` (Max, Rel), `m > best + threshold` (Max, Abs);
///
/// a NaN never does. Once more than `patience` steps in a row have not improved, the rate is
/// cut, `lr ← max(lr·factor, min_lr)`, unless that would change it by `eps` or less; then for
/// `cooldown` steps no step counts as bad.
///
/// Each parameter group's rate is cut on its own, as torch cuts each of its `param_groups`:
/// group g's rate starts at the optimizer's rate times its [`lr_scale`](crate::ParamGroup::lr_scale),
/// is floored at its own `min_lr_g` ([`min_lrs`](ReduceLrOnPlateau::min_lrs), or one
/// [`min_lr`](ReduceLrOnPlateau::min_lr) for all), and a cut that changes it by `eps` or less
/// is skipped for that group alone; so the groups' rates need not keep their ratios.
///
/// PyTorch's defaults: [`PlateauMode::Min`], factor 0.1, patience 10, threshold 1e-4,
/// [`ThresholdMode::Rel`], cooldown 0, min_lr 0, eps 1e-8. The rates are the optimizer's when
/// the scheduler started, cut as torch cuts them (so the same floats).
///
/// ```
/// use rewind_optim::{Optimizer, ReduceLrOnPlateau, Scheduler, Sgd, Warmup};
///
/// let mut opt = Sgd::<f32>::new(0.1);
/// let plateau = ReduceLrOnPlateau::new().factor(0.5).patience(1);
/// // Two steps of warm-up; the plateau reads the metrics reported after them.
/// let mut sched = Scheduler::new(Warmup { steps: 2, then: plateau }, &mut opt);
/// for val_loss in [1.0, 0.9, 0.8, 0.8, 0.8] {
///     // ... train an epoch, then report its validation loss ...
///     sched.step_with_metric(val_loss, &mut opt);
/// }
/// assert_eq!(opt.lr(), 0.05); // two steps without improvement, more than the patience of 1
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    mode: PlateauMode,
    factor: f64,
    patience: usize,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: usize,
    min_lr: MinLr,
    eps: f64,
    state: PlateauState,
}

/// The floor of each group's rate.
#[derive(Clone, Debug, PartialEq)]
enum MinLr {
    /// One for every group (torch's scalar `min_lr`).
    All(f64),
    /// One per group, the default group's first (torch's list).
    PerGroup(Vec<f64>),
}

impl Default for ReduceLrOnPlateau {
    fn default() -> Self {
        ReduceLrOnPlateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: MinLr::All(0.0),
            eps: 1e-8,
            state: PlateauState::fresh(PlateauMode::Min),
        }
    }
}

impl ReduceLrOnPlateau {
    /// PyTorch's defaults, nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether lower or higher is better (Min). Forgets what was seen so far.
    pub fn mode(mut self, mode: PlateauMode) -> Self {
        self.mode = mode;
        self.state = PlateauState::fresh(mode);
        self
    }

    /// The factor of each cut, in [0, 1) (0.1).
    #[track_caller]
    pub fn factor(mut self, factor: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&factor),
            "ReduceLrOnPlateau: factor must be in [0, 1), got {factor}"
        );
        self.factor = factor;
        self
    }

    /// Steps in a row without improvement that are tolerated before a cut (10).
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// How far past the best a metric must go to improve on it (1e-4).
    #[track_caller]
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = non_negative("threshold", threshold);
        self
    }

    /// Whether the threshold is relative to the best or absolute (Rel).
    pub fn threshold_mode(mut self, threshold_mode: ThresholdMode) -> Self {
        self.threshold_mode = threshold_mode;
        self
    }

    /// Steps after a cut during which none counts as bad (0).
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// No group's rate is cut below this (0).
    #[track_caller]
    pub fn min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = MinLr::All(non_negative("min_lr", min_lr));
        self
    }

    /// A floor for each parameter group, the default group's first, then each added group's in
    /// the order added (torch's `min_lr=[...]`, in the order of its `param_groups`). Panics
    /// unless each is finite and ≥ 0 and there is one; the scheduler refuses, when it starts, a
    /// list whose length is not the optimizer's number of groups, as torch does.
    #[track_caller]
    pub fn min_lrs(mut self, min_lrs: impl IntoIterator<Item = f64>) -> Self {
        let mut floors = Vec::new();
        for min_lr in min_lrs {
            floors.push(non_negative("min_lrs", min_lr));
        }
        assert!(
            !floors.is_empty(),
            "ReduceLrOnPlateau: min_lrs is empty; it takes one rate per parameter group"
        );
        self.min_lr = MinLr::PerGroup(floors);
        self
    }

    /// A cut that would change the rate by this much or less is skipped (1e-8).
    #[track_caller]
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = non_negative("eps", eps);
        self
    }

    /// What it has seen so far, to save with a checkpoint.
    pub fn state(&self) -> PlateauState {
        self.state
    }

    /// Continues from a saved [`state`](ReduceLrOnPlateau::state).
    pub fn with_state(mut self, state: PlateauState) -> Self {
        self.state = state;
        self
    }

    fn improves(&self, metric: f64, best: f64) -> bool {
        let t = self.threshold;
        match (self.mode, self.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => metric < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => metric < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => metric > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => metric > best + t,
        }
    }
}

#[track_caller]
fn non_negative(name: &str, value: f64) -> f64 {
    assert!(
        value >= 0.0 && value.is_finite(),
        "ReduceLrOnPlateau: {name} must be a non-negative finite number, got {value}"
    );
    value
}

impl ReduceLrOnPlateau {
    /// The rate `base` after `state.reductions` cuts floored at `min_lr`.
    fn cut(&self, base: f64, min_lr: f64) -> f64 {
        let mut lr = base;
        for _ in 0..self.state.reductions {
            let cut = (lr * self.factor).max(min_lr);
            // A skipped cut leaves everything as it was, so every later one is skipped too.
            if lr - cut <= self.eps {
                break;
            }
            lr = cut;
        }
        lr
    }

    /// The floor of group `group`.
    fn min_lr_of(&self, group: usize) -> f64 {
        match &self.min_lr {
            MinLr::All(min_lr) => *min_lr,
            MinLr::PerGroup(floors) => floors[group],
        }
    }
}

impl LrSchedule for ReduceLrOnPlateau {
    /// The default group's rate from `base` after `state.reductions` cuts; the step count does
    /// not matter.
    fn lr_at(&self, base: f64, _: usize) -> f64 {
        self.cut(base, self.min_lr_of(0))
    }

    /// Panics, at the caller's line, when [`min_lrs`](ReduceLrOnPlateau::min_lrs) holds a
    /// number of floors other than the number of groups.
    fn group_lrs_at(&self, base: f64, lr_scales: &[f64], _: usize) -> Option<Vec<f64>> {
        if let MinLr::PerGroup(floors) = &self.min_lr {
            assert!(
                floors.len() == lr_scales.len(),
                "ReduceLrOnPlateau: min_lrs holds {} rates, but the optimizer has {} parameter \
                 groups (its default group and {} added)",
                floors.len(),
                lr_scales.len(),
                lr_scales.len() - 1
            );
        }
        let lrs = lr_scales
            .iter()
            .enumerate()
            .map(|(g, &scale)| self.cut(base * scale, self.min_lr_of(g)))
            .collect();
        Some(lrs)
    }

    fn observe(&mut self, _: usize, metric: f64) {
        if self.improves(metric, self.state.best) {
            self.state.best = metric;
            self.state.num_bad_epochs = 0;
        } else {
            self.state.num_bad_epochs += 1;
        }
        if self.state.cooldown_counter > 0 {
            self.state.cooldown_counter -= 1;
            self.state.num_bad_epochs = 0;
        }
        if self.state.num_bad_epochs > self.patience {
            self.state.reductions += 1;
            self.state.cooldown_counter = self.cooldown;
            self.state.num_bad_epochs = 0;
        }
    }

    fn reads_metric(&self) -> bool {
        true
    }
}
