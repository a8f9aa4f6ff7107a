//! ASGD: SGD with a decaying step size and a running average of the weights.

use rewind_autograd::{Float, Grads, Tensor};
use rewind_nn::Module;

use crate::fused::mul_add;
use crate::optimizer::{
    check_finite, checked_options, lr_and_state, shared_options, with_grads, Buffers, Decay, Hyper,
    Layout, Optimizer,
};

/// Averaged SGD as `torch.optim.ASGD` [lr 1e-2, lambd 1e-4, alpha 0.75, t0 1e6, weight_decay 0,
/// maximize off] (Polyak and Juditsky 1992; Bottou 2012), with a step size η (starting at lr),
/// an averaging weight μ (starting at 1) and the average ā of the weights, per parameter, at
/// step t from 1:
///
/// ```text
/// g ← -g                                  (with maximize)
/// g ← g + λθ                              (λ the weight decay)
/// θ ← θ·(1 - lambd·η)
/// θ ← θ - η·g
/// ā ← ā + μ·(θ - ā)                       (ā ← θ while μ = 1)
/// η ← lr / (1 + lambd·lr·t)^alpha
/// μ ← 1 / max(1, t - t0)
/// ```
///
/// ā, the weights to evaluate with once the average has started (t > t0 + 1), is the state's
/// `<param>.ax`; η and μ are kept in `F`, as torch keeps them in its default dtype (so an f32 run
/// rounds them as torch's does), under `<param>.eta` and `<param>.mu`. The η of a step is the one
/// computed at the end of the step before, from the learning rate of that step. Each step
/// rounds like torch's single-tensor loop (`foreach=False`): 1 - lambd·η is computed in f64 and
/// rounded to `F` once, `g + λθ` and `θ - η·g` are multiply-adds rounded once, and θ - ā, its
/// product with μ and the sum are each rounded.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, lambd,
/// alpha or weight decay below 0; and on an infinite value (or a t0 that is not finite). So
/// does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative rate.
#[derive(Debug)]
pub struct Asgd<F: Float = f32> {
    hyper: Hyper,
    lambd: f64,
    alpha: f64,
    t0: f64,
    buffers: Buffers<F>,
}

impl<F: Float> Default for Asgd<F> {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl<F: Float> Asgd<F> {
    /// ASGD with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Asgd {
            hyper: Hyper::new::<F>("Asgd", lr, 0.0),
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            buffers: Buffers::default(),
        }
    }

    checked_options!("Asgd";
        /// The decay term lambd: the weights shrink by 1 - lambd·η, and η decays with it.
        lambd: check_non_negative,
        /// The power of η's decay.
        alpha: check_non_negative,
    );

    /// The step after which averaging starts: μ = 1 / max(1, t - t0). Panics unless finite.
    #[track_caller]
    pub fn t0(mut self, t0: f64) -> Self {
        check_finite::<f64>("Asgd", "t0", t0);
        self.t0 = t0;
        self
    }

    shared_options!("Asgd", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Asgd<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let state = self.buffers.get(&name);
            state.step += 1;
            let t = state.step as f64;
            // One number each: `load_state` refuses a state where they are not.
            let eta = state
                .tensors
                .entry("eta")
                .or_insert_with(|| Tensor::scalar(F::from_f64(lr)));
            let eta_value = eta.data()[0].to_f64();
            eta.data_mut()[0] = F::from_f64(lr / (1.0 + self.lambd * lr * t).powf(self.alpha));
            let mu = state
                .tensors
                .entry("mu")
                .or_insert_with(|| Tensor::scalar(F::ONE));
            let mu_value = mu.data()[0];
            mu.data_mut()[0] = F::from_f64(1.0 / (t - self.t0).max(1.0));
            let k = AsgdStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                shrink: F::from_f64(1.0 - self.lambd * eta_value),
                neg_eta: F::from_f64(-eta_value),
                mu: mu_value,
            };
            param.update(|theta| {
                let [ax] = state.buffers([("ax", true)], theta, F::ZERO);
                k.apply(theta.data_mut(), grad.data(), ax.expect("wanted"));
            });
        }
    }

    lr_and_state!(
        "asgd",
        Layout {
            signed: &["ax"],
            never_negative: &[],
            fractions: &["mu"],
            rates: &["eta"],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct AsgdStep<F> {
    decay: Decay<F>,
    /// 1 - lambd·η.
    shrink: F,
    neg_eta: F,
    /// The averaging weight of this step.
    mu: F,
}

impl<F: Float> AsgdStep<F> {
    /// Updates θ and ā in place.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], ax: &mut [F]) {
        let n = theta.len();
        let (grad, ax) = (&grad[..n], &mut ax[..n]);
        for i in 0..n {
            let g = self.decay.grad(theta[i], grad[i]);
            theta[i] = mul_add(g, self.neg_eta, theta[i] * self.shrink);
            ax[i] = if self.mu == F::ONE {
                theta[i]
            } else {
                ax[i] + (theta[i] - ax[i]) * self.mu
            };
        }
    }
}
