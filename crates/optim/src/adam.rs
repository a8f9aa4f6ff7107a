//! Adam (with AMSGrad) and AdamW.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::{mul_add, Lerp};
use crate::optimizer::{
    betas_option, checked_options, lr_and_state, momentum_methods, shared_options, with_grads,
    Buffers, Decay, Hyper, Layout, Optimizer,
};

/// Adam as `torch.optim.Adam` [lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// amsgrad off, maximize off], step t counted per parameter:
///
/// ```text
/// g ← -g                              (with maximize)
/// g ← g + λθ                          (Adam; AdamW instead first does θ ← θ(1 - lr·λ))
/// m ← β1·m + (1 - β1)·g
/// v ← β2·v + (1 - β2)·g²              (AMSGrad: v̂ ← max(v̂, v), used below in place of v)
/// θ ← θ - (lr / (1 - β1^t)) · m / (√v / √(1 - β2^t) + eps)
/// ```
///
/// The eps is added after the bias-corrected square root, as PyTorch does. Each step rounds like
/// torch's single-tensor loop (`foreach=False`): the constants 1 - β1, 1 - β2, lr / (1 - β1^t),
/// √(1 - β2^t) and 1 - lr·λ are computed in f64 and rounded to `F` once (rounding β2 = 0.999 to
/// f32 before subtracting it from 1 would put 1 - β2 1.3e-5 off), m is updated with `torch.lerp`,
/// and `g + λθ` and `β2·v + (1 - β2)·g·g` with one rounding of their last multiply-add.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, eps or weight
/// decay below 0, a beta outside [0, 1); and on what would make a weight NaN: an infinite value,
/// eps 0. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative rate.
#[derive(Debug)]
pub struct Adam<F: Float = f32> {
    hyper: Hyper,
    betas: (f64, f64),
    eps: f64,
    amsgrad: bool,
    decoupled: bool,
    buffers: Buffers<F>,
}

impl<F: Float> Default for Adam<F> {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl<F: Float> Adam<F> {
    /// Adam with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Adam {
            hyper: Hyper::new::<F>("Adam", lr, 0.0).group_options(&["betas", "eps"]),
            betas: (0.9, 0.999),
            eps: 1e-8,
            amsgrad: false,
            decoupled: false,
            buffers: Buffers::default(),
        }
    }

    /// AdamW (`torch.optim.AdamW`): decoupled weight decay, 1e-2 by default.
    #[track_caller]
    pub fn adamw(lr: f64) -> Self {
        Adam {
            decoupled: true,
            ..Self::new(lr).weight_decay(1e-2)
        }
    }

    betas_option!("Adam";
        /// The decay rates of the first and second moments.
    );

    checked_options!("Adam";
        /// The term added to the denominator.
        eps: check_positive,
    );

    /// The AMSGrad variant: the running maximum of v in the denominator.
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    shared_options!(
        "Adam",
        "Weight decay λ: added to the gradient (Adam) or applied to the weights (AdamW)."
    );
}

impl<F: Float> Optimizer<F> for Adam<F> {
    momentum_methods!("Adam", beta1);

    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (beta1, beta2) = self.hyper.betas(&name, self.betas);
            let w1 = F::from_f64(1.0 - beta1);
            let (b2, w2) = (F::from_f64(beta2), F::from_f64(1.0 - beta2));
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let state = self.buffers.get(&name);
            state.step += 1;
            // `powf`, not `powi`: libm's pow, as Python's `beta ** step`.
            let t = state.step as f64;
            let step_size = F::from_f64(lr / (1.0 - beta1.powf(t)));
            let bc2_sqrt = F::from_f64((1.0 - beta2.powf(t)).sqrt());
            let wanted = [
                ("exp_avg", true),
                ("exp_avg_sq", true),
                ("max_exp_avg_sq", self.amsgrad),
            ];
            let k = AdamStep {
                // Multiplying by 1 changes nothing, so Adam runs AdamW's decay too.
                decay: self.hyper.decay(&name, lr, wd, self.decoupled),
                w1: Lerp::new(w1),
                b2,
                w2,
                step_size,
                bc2_sqrt,
                eps,
            };
            param.update(|theta| {
                let [m, v, v_max] = state.buffers(wanted, theta, F::ZERO);
                let (m, v) = (m.expect("wanted"), v.expect("wanted"));
                let (theta, grad) = (theta.data_mut(), grad.data());
                match v_max {
                    Some(vm) => k.apply::<true>(theta, grad, m, v, vm),
                    None => k.apply::<false>(theta, grad, m, v, &mut []),
                }
            });
        }
    }

    lr_and_state!(
        "adam" or decoupled "adamw",
        Layout {
            signed: &["exp_avg"],
            never_negative: &["exp_avg_sq", "max_exp_avg_sq"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct AdamStep<F> {
    decay: Decay<F>,
    w1: Lerp<F>,
    b2: F,
    w2: F,
    step_size: F,
    bc2_sqrt: F,
    eps: F,
}

impl<F: Float> AdamStep<F> {
    /// Updates θ, m, v, and with `AMSGRAD` v̂ (`v_max`, empty without), in place.
    // Not inlined, and one copy per variant: as parameters of their own function the slices are
    // known not to overlap, and with no optional buffer in the loop it vectorises (inlined into
    // `step`, it did not, and ran at half the speed).
    #[inline(never)]
    fn apply<const AMSGRAD: bool>(
        self,
        theta: &mut [F],
        grad: &[F],
        m: &mut [F],
        v: &mut [F],
        v_max: &mut [F],
    ) {
        let n = theta.len();
        let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
        let v_max = if AMSGRAD { &mut v_max[..n] } else { v_max };
        for i in 0..n {
            theta[i] *= self.decay.keep;
            let g = self.decay.grad(theta[i], grad[i]);
            m[i] = self.w1.at(m[i], g);
            v[i] = mul_add(self.w2 * g, g, v[i] * self.b2);
            let second = if AMSGRAD {
                v_max[i] = v_max[i].max(v[i]);
                v_max[i]
            } else {
                v[i]
            };
            let denom = second.sqrt() / self.bc2_sqrt + self.eps;
            theta[i] -= self.step_size * m[i] / denom;
        }
    }
}
