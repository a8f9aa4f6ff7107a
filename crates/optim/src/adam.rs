//! Adam (with AMSGrad) and AdamW.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::optimizer::{
    shared_options, with_grads, Buffers, Hyper, OptimState, Optimizer, StateError,
};

/// Adam as `torch.optim.Adam` [lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// amsgrad off], step t counted per parameter:
///
/// ```text
/// g ← g + λθ                          (Adam; AdamW instead first does θ ← θ(1 - lr·λ))
/// m ← β1·m + (1 - β1)·g
/// v ← β2·v + (1 - β2)·g²              (AMSGrad: v̂ ← max(v̂, v), used below in place of v)
/// θ ← θ - (lr / (1 - β1^t)) · m / (√v / √(1 - β2^t) + eps)
/// ```
///
/// The eps is added after the bias-corrected square root, as PyTorch does.
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
    pub fn new(lr: f64) -> Self {
        Adam {
            hyper: Hyper::new(lr, 0.0),
            betas: (0.9, 0.999),
            eps: 1e-8,
            amsgrad: false,
            decoupled: false,
            buffers: Buffers::default(),
        }
    }

    /// AdamW (`torch.optim.AdamW`): decoupled weight decay, 1e-2 by default.
    pub fn adamw(lr: f64) -> Self {
        Adam {
            decoupled: true,
            ..Self::new(lr).weight_decay(1e-2)
        }
    }

    /// The decay rates of the first and second moments.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// The term added to the denominator.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The AMSGrad variant: the running maximum of v in the denominator.
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    shared_options!(
        "Weight decay λ: added to the gradient (Adam) or applied to the weights (AdamW)."
    );

    fn kind(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let (beta1, beta2) = self.betas;
        let (b1, b2) = (F::from_f64(beta1), F::from_f64(beta2));
        let eps = F::from_f64(self.eps);
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let state = self.buffers.get(&name);
            state.step += 1;
            let t = state.step as i32;
            let step_size = F::from_f64(lr / (1.0 - beta1.powi(t)));
            let bc2_sqrt = F::from_f64((1.0 - beta2.powi(t)).sqrt());
            let wanted = [
                ("exp_avg", true),
                ("exp_avg_sq", true),
                ("max_exp_avg_sq", self.amsgrad),
            ];
            let [m, v, mut v_max] = state.buffers(wanted, param.value(), F::ZERO);
            let (m, v) = (m.expect("wanted"), v.expect("wanted"));
            let theta = param.value_mut().data_mut();
            if self.decoupled {
                let keep = F::from_f64(1.0 - lr * wd);
                theta.iter_mut().for_each(|x| *x *= keep);
            }
            let wd = if self.decoupled {
                F::ZERO
            } else {
                F::from_f64(wd)
            };
            for (i, (x, &g)) in theta.iter_mut().zip(grad.data()).enumerate() {
                let g = if wd != F::ZERO { g + wd * *x } else { g };
                // PyTorch updates m with lerp: m + (1 - β1)(g - m).
                m[i] += (F::ONE - b1) * (g - m[i]);
                v[i] = v[i] * b2 + (F::ONE - b2) * g * g;
                let second = match v_max.as_deref_mut() {
                    Some(vm) => {
                        vm[i] = vm[i].max(v[i]);
                        vm[i]
                    }
                    None => v[i],
                };
                let denom = second.sqrt() / bc2_sqrt + eps;
                *x -= step_size * m[i] / denom;
            }
        }
    }

    fn lr(&self) -> f64 {
        self.hyper.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.hyper.lr = lr;
    }

    fn state(&self) -> OptimState<F> {
        self.buffers.state(self.kind(), self.hyper.lr)
    }

    fn load_state(&mut self, state: &OptimState<F>) -> Result<(), StateError> {
        let kind = self.kind();
        self.buffers.restore(
            state,
            kind,
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
            &mut self.hyper,
        )
    }
}
