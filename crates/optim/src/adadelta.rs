//! Adadelta: steps scaled by the ratio of two running root mean squares, of past updates and of
//! gradients, so that the update has the units of the weight.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::mul_add;
use crate::optimizer::{
    check_unit, checked_options, lr_and_state, shared_options, with_grads, Buffers, Decay, Hyper,
    Layout, Optimizer,
};

/// Adadelta as `torch.optim.Adadelta` [lr 1, rho 0.9, eps 1e-6, weight_decay 0, maximize off]
/// (Zeiler 2012, with PyTorch's learning rate in front of the update):
///
/// ```text
/// g ← -g                                  (with maximize)
/// g ← g + λθ
/// v ← ρ·v + (1 - ρ)·g²
/// Δ ← √(u + eps) / √(v + eps) · g
/// u ← ρ·u + (1 - ρ)·Δ²
/// θ ← θ - lr·Δ
/// ```
///
/// Each step rounds like torch's single-tensor loop (`foreach=False`): 1 - ρ is computed in f64
/// and rounded to `F` once, `g + λθ`, `ρ·v + (1 - ρ)·g·g`, `ρ·u + (1 - ρ)·Δ·Δ` and `θ - lr·Δ` are
/// multiply-adds rounded once, and Δ is `√(u + eps) / √(v + eps)` rounded, then times g.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, eps or
/// weight decay below 0, rho outside [0, 1]; and on what would make a weight NaN: an infinite
/// value, eps 0 (u and v both start at 0). So does [`set_lr`](Optimizer::set_lr) on a NaN,
/// infinite or negative rate.
#[derive(Debug)]
pub struct Adadelta<F: Float = f32> {
    hyper: Hyper,
    rho: f64,
    eps: f64,
    buffers: Buffers<F>,
}

impl<F: Float> Default for Adadelta<F> {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl<F: Float> Adadelta<F> {
    /// Adadelta with learning rate `lr` (the factor on each update) and PyTorch's other
    /// defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Adadelta {
            hyper: Hyper::new::<F>("Adadelta", lr, 0.0).group_options(&["eps"]),
            rho: 0.9,
            eps: 1e-6,
            buffers: Buffers::default(),
        }
    }

    /// The decay rate ρ of both running means, in [0, 1].
    #[track_caller]
    pub fn rho(mut self, rho: f64) -> Self {
        check_unit("Adadelta", "rho", rho);
        self.rho = rho;
        self
    }

    checked_options!("Adadelta";
        /// The term added to both means of squares before their square roots.
        eps: check_positive,
    );

    shared_options!("Adadelta", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Adadelta<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let (rho, w) = (F::from_f64(self.rho), F::from_f64(1.0 - self.rho));
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let k = AdadeltaStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                rho,
                w,
                eps,
                neg_lr: F::from_f64(-lr),
            };
            let state = self.buffers.get(&name);
            state.step += 1;
            let wanted = [("square_avg", true), ("acc_delta", true)];
            param.update(|theta| {
                let [v, u] = state.buffers(wanted, theta, F::ZERO);
                k.apply(
                    theta.data_mut(),
                    grad.data(),
                    v.expect("wanted"),
                    u.expect("wanted"),
                );
            });
        }
    }

    lr_and_state!(
        "adadelta",
        Layout {
            signed: &[],
            never_negative: &["square_avg", "acc_delta"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct AdadeltaStep<F> {
    decay: Decay<F>,
    rho: F,
    /// 1 - ρ.
    w: F,
    eps: F,
    neg_lr: F,
}

impl<F: Float> AdadeltaStep<F> {
    /// Updates θ, v and u in place.
    // Not inlined: as parameters of their own function the slices are known not to overlap, so
    // the loop vectorises.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], v: &mut [F], u: &mut [F]) {
        let n = theta.len();
        let (grad, v, u) = (&grad[..n], &mut v[..n], &mut u[..n]);
        for i in 0..n {
            let g = self.decay.grad(theta[i], grad[i]);
            v[i] = mul_add(self.w * g, g, v[i] * self.rho);
            let delta = (u[i] + self.eps).sqrt() / (v[i] + self.eps).sqrt() * g;
            u[i] = mul_add(self.w * delta, delta, u[i] * self.rho);
            theta[i] = mul_add(delta, self.neg_lr, theta[i]);
        }
    }
}
