//! Learning-rate schedules, in closed form, and the `Scheduler` that applies one to any
//! optimizer.

use rewind_autograd::Float;

use crate::optimizer::Optimizer;

/// A learning rate as a function of the scheduler's step count (0 before its first step) and
/// the optimizer's initial learning rate.
pub trait LrSchedule {
    /// The learning rate after `step` scheduler steps.
    fn lr_at(&self, base_lr: f64, step: usize) -> f64;
}

/// `base · γ^⌊step / step_size⌋` (`torch.optim.lr_scheduler.StepLR`, γ 0.1 by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    /// Steps between decays.
    pub step_size: usize,
    /// The factor of each decay.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        base * self.gamma.powi((step / self.step_size) as i32)
    }
}

/// `base · γ^step` (`ExponentialLR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLr {
    /// The factor of each step.
    pub gamma: f64,
}

impl LrSchedule for ExponentialLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        base * self.gamma.powi(step as i32)
    }
}

/// `η_min + (base - η_min)(1 + cos(π·step / T_max)) / 2` (`CosineAnnealingLR`, η_min 0 by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingLr {
    /// Steps of half a cosine period.
    pub t_max: usize,
    /// The lowest learning rate.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealingLr {
    fn lr_at(&self, base: f64, step: usize) -> f64 {
        let phase = std::f64::consts::PI * step as f64 / self.t_max as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

/// `base · (start + (end - start)·min(step, total) / total)` (`LinearLR`; defaults start 1/3, end 1,
/// total 5).
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
        let progress = step.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (self.start_factor + (self.end_factor - self.start_factor) * progress)
    }
}

/// A constant learning rate: the base.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ConstantLr;

impl LrSchedule for ConstantLr {
    fn lr_at(&self, base: f64, _: usize) -> f64 {
        base
    }
}

/// Linear warmup, then another schedule: `base·(step + 1)/steps` for the first `steps` steps,
/// then `then` counted from the end of the warmup. (PyTorch: `SequentialLR` of
/// `LinearLR(1/steps, 1, steps - 1)` and `then`, with the milestone at `steps`.)
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
            base * (step + 1) as f64 / self.steps as f64
        } else {
            self.then.lr_at(base, step - self.steps)
        }
    }
}

/// Applies a schedule to an optimizer: call [`step`](Scheduler::step) once per epoch or
/// iteration, after the optimizer's step, as with PyTorch's schedulers.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler<S> {
    schedule: S,
    base_lr: f64,
    steps: usize,
}

impl<S: LrSchedule> Scheduler<S> {
    /// Starts the schedule from the optimizer's current learning rate, and sets its step-0 value.
    pub fn new<F: Float>(schedule: S, optimizer: &mut dyn Optimizer<F>) -> Self {
        Self::resume(schedule, optimizer.lr(), 0, optimizer)
    }

    /// Continues a schedule that had taken `steps` steps from `base_lr` (for resuming a run).
    pub fn resume<F: Float>(
        schedule: S,
        base_lr: f64,
        steps: usize,
        optimizer: &mut dyn Optimizer<F>,
    ) -> Self {
        optimizer.set_lr(schedule.lr_at(base_lr, steps));
        Scheduler {
            schedule,
            base_lr,
            steps,
        }
    }

    /// Advances one step and sets the optimizer's learning rate.
    pub fn step<F: Float>(&mut self, optimizer: &mut dyn Optimizer<F>) {
        self.steps += 1;
        optimizer.set_lr(self.lr());
    }

    /// The learning rate at the current step.
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
}
