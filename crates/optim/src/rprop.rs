//! Rprop: each element steps by its own step size in the direction opposite its gradient's
//! sign, the size growing while the sign holds and shrinking when it flips.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::optimizer::{lr_and_state, with_grads, Buffers, Hyper, Layout, Optimizer, ParamGroup};

/// Rprop as `torch.optim.Rprop` [lr 1e-2, etas (0.5, 1.2), step_sizes (1e-6, 50), maximize
/// off] (Riedmiller and Braun 1993, the variant without weight backtracking), per element, with
/// s the step size (starting at lr) and p the previous gradient (starting at 0):
///
/// ```text
/// g ← -g                                  (with maximize)
/// s ← clamp(s·η₊, min, max)  if g·p > 0
/// s ← clamp(s·η₋, min, max), g ← 0   if g·p < 0
/// s ← clamp(s, min, max)     if g·p = 0
/// θ ← θ - sign(g)·s
/// p ← g
/// ```
///
/// The learning rate only sets the first step size of a parameter's elements, as in PyTorch: a
/// schedule's [`set_lr`](Optimizer::set_lr) changes no step size already under way. PyTorch's
/// Rprop has no weight decay, so neither has this one, and a [`ParamGroup`] that sets one is
/// refused. Each step rounds like torch's single-tensor loop (`foreach=False`): η₊, η₋ and the
/// bounds are rounded to `F`, and g·p is rounded before its sign is taken.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate below 0,
/// etas not ordered 0 < η₋ < 1 < η₊; and on an infinite value or bounds not ordered
/// 0 ≤ min ≤ max. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative rate.
#[derive(Debug)]
pub struct Rprop<F: Float = f32> {
    hyper: Hyper,
    etas: (f64, f64),
    step_sizes: (f64, f64),
    buffers: Buffers<F>,
}

impl<F: Float> Default for Rprop<F> {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl<F: Float> Rprop<F> {
    /// Rprop whose step sizes start at `lr`, with PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Rprop {
            hyper: Hyper::new::<F>("Rprop", lr, 0.0),
            etas: (0.5, 1.2),
            step_sizes: (1e-6, 50.0),
            buffers: Buffers::default(),
        }
    }

    /// The factors η₋ (the sign flipped) and η₊ (it held) of the step size, with
    /// 0 < η₋ < 1 < η₊, both finite.
    #[track_caller]
    pub fn etas(mut self, etaminus: f64, etaplus: f64) -> Self {
        assert!(
            0.0 < etaminus && etaminus < 1.0 && 1.0 < etaplus && etaplus.is_finite(),
            "Rprop: etas must satisfy 0 < etaminus < 1 < etaplus, got ({etaminus:?}, {etaplus:?})"
        );
        self.etas = (etaminus, etaplus);
        self
    }

    /// The least and the greatest step size, with 0 ≤ min ≤ max, both finite.
    #[track_caller]
    pub fn step_sizes(mut self, min: f64, max: f64) -> Self {
        assert!(
            0.0 <= min && min <= max && max.is_finite(),
            "Rprop: step_sizes must satisfy 0 <= min <= max, both finite, got ({min:?}, {max:?})"
        );
        self.step_sizes = (min, max);
        self
    }

    /// Ascends the objective instead of descending it (PyTorch's `maximize`, off by default):
    /// the gradient is negated, `g ← -g`, before anything else.
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.hyper.maximize = maximize;
        self
    }

    /// Adds a parameter group, whose `lr_scale` scales the first step size of its parameters.
    ///
    /// Panics if the group sets a weight decay, betas, eps or momentum, which Rprop does not
    /// have, or if the learning rate times its `lr_scale` is infinite in `F`. It may set
    /// `maximize`.
    #[track_caller]
    pub fn group(mut self, group: ParamGroup) -> Self {
        assert!(
            !group.sets_weight_decay(),
            "Rprop: a group's weight_decay is not an option of Rprop, which has no weight decay"
        );
        self.hyper.add_group::<F>(group);
        self
    }
}

impl<F: Float> Optimizer<F> for Rprop<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let (etaminus, etaplus) = self.etas;
        let (min, max) = self.step_sizes;
        let own = RpropStep {
            sign: F::ONE,
            etaminus: F::from_f64(etaminus),
            etaplus: F::from_f64(etaplus),
            min: F::from_f64(min),
            max: F::from_f64(max),
        };
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, _) = self.hyper.for_param(&name);
            let k = RpropStep {
                sign: self.hyper.sign(&name),
                ..own
            };
            let state = self.buffers.get(&name);
            state.step += 1;
            param.update(|theta| {
                // Created first on its own, as each buffer has its own starting value.
                state.buffers([("step_size", true)], theta, F::from_f64(lr));
                let wanted = [("prev", true), ("step_size", true)];
                let [prev, size] = state.buffers(wanted, theta, F::ZERO);
                k.apply(
                    theta.data_mut(),
                    grad.data(),
                    prev.expect("wanted"),
                    size.expect("wanted"),
                );
            });
        }
    }

    lr_and_state!(
        "rprop",
        Layout {
            signed: &["prev"],
            never_negative: &["step_size"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants, each rounded to `F` once.
#[derive(Clone, Copy)]
struct RpropStep<F> {
    /// -1 to maximize, else 1.
    sign: F,
    etaminus: F,
    etaplus: F,
    min: F,
    max: F,
}

impl<F: Float> RpropStep<F> {
    /// Updates θ, the previous gradient and the step sizes in place.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], prev: &mut [F], size: &mut [F]) {
        let n = theta.len();
        let (grad, prev, size) = (&grad[..n], &mut prev[..n], &mut size[..n]);
        for i in 0..n {
            let mut g = grad[i] * self.sign;
            let agreement = g * prev[i];
            // A NaN agreement leaves the factor NaN, as torch's sign tensor does.
            let factor = if agreement > F::ZERO {
                self.etaplus
            } else if agreement < F::ZERO {
                g = F::ZERO;
                self.etaminus
            } else if agreement == F::ZERO {
                F::ONE
            } else {
                agreement
            };
            size[i] = clamp(size[i] * factor, self.min, self.max);
            theta[i] -= signum(g) * size[i];
            prev[i] = g;
        }
    }
}

/// `torch.clamp`: `min(max(x, lo), hi)`, NaN if x is.
fn clamp<F: Float>(x: F, lo: F, hi: F) -> F {
    // min(a, b) = -max(-a, -b), with `Float::max`, which keeps a NaN.
    let above = x.max(lo);
    -((-above).max(-hi))
}

/// `torch.sign`: -1, 0 or 1, and NaN for NaN.
fn signum<F: Float>(x: F) -> F {
    if x > F::ZERO {
        F::ONE
    } else if x < F::ZERO {
        -F::ONE
    } else {
        x
    }
}
