//! RAdam: Adam whose adaptive step is rectified for the variance of v in the first steps (Liu et
//! al., 2019).

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::{mul_add, Lerp};
use crate::optimizer::{
    betas_option, checked_options, decoupled_weight_decay_option, lr_and_state, momentum_methods,
    shared_options, with_grads, Buffers, Decay, Hyper, Layout, Optimizer,
};

/// RAdam as `torch.optim.RAdam` [lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// decoupled_weight_decay off, maximize off], step t counted per parameter:
///
/// ```text
/// g ← -g                                      (with maximize)
/// g ← g + λθ                                  (RAdamW, decoupled: θ ← θ(1 - lr·λ) instead)
/// m ← β1·m + (1 - β1)·g
/// v ← β2·v + (1 - β2)·g²
/// m̂ = m / (1 - β1^t)
/// ρ∞ = 2 / (1 - β2) - 1,   ρ_t = ρ∞ - 2t·β2^t / (1 - β2^t)
/// ρ_t > 5:  r = √((ρ_t - 4)(ρ_t - 2)ρ∞ / ((ρ∞ - 4)(ρ∞ - 2)ρ_t))
///           θ ← θ - lr·m̂ · (√(1 - β2^t) / (√v + eps)) · r
/// else:     θ ← θ - lr·m̂                     (SGD with momentum while v is too noisy)
/// ```
///
/// With the default β2 the first five steps take the plain branch. Each step rounds like torch's
/// single-tensor loop (`foreach=False`): 1 - β1, 1 - β2, 1 - β1^t, √(1 - β2^t), r and 1 - lr·λ
/// are computed in f64 and rounded to `F` once, m is updated with `torch.lerp`, `g + λθ` and
/// `β2·v + (1 - β2)·g·g` are multiply-adds rounded once, and the update is rounded after each
/// product in the order above, with 1 / (√v + eps) rounded before it is scaled.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, eps or weight
/// decay below 0, a beta outside [0, 1); and on what would make a weight NaN: an infinite value,
/// eps 0. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative rate.
#[derive(Debug)]
pub struct RAdam<F: Float = f32> {
    hyper: Hyper,
    betas: (f64, f64),
    eps: f64,
    decoupled: bool,
    buffers: Buffers<F>,
}

impl<F: Float> Default for RAdam<F> {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl<F: Float> RAdam<F> {
    /// RAdam with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        RAdam {
            hyper: Hyper::new::<F>("RAdam", lr, 0.0).group_options(&["betas", "eps"]),
            betas: (0.9, 0.999),
            eps: 1e-8,
            decoupled: false,
            buffers: Buffers::default(),
        }
    }

    betas_option!("RAdam";
        /// The decay rates of the first and second moments.
    );

    checked_options!("RAdam";
        /// The term added to the denominator.
        eps: check_positive,
    );

    decoupled_weight_decay_option!("RAdamW");

    shared_options!(
        "RAdam",
        "Weight decay λ: added to the gradient, or applied to the weights with \
         [`decoupled_weight_decay`](RAdam::decoupled_weight_decay)."
    );
}

/// The rectification r at step `t`, or `None` while ρ_t ≤ 5; in torch's order of operations.
fn rectification(beta2: f64, t: f64) -> Option<f64> {
    let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    let rho_t = rho_inf - 2.0 * t * beta2.powf(t) / (1.0 - beta2.powf(t));
    (rho_t > 5.0).then(|| {
        ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            .powf(0.5)
    })
}

impl<F: Float> Optimizer<F> for RAdam<F> {
    momentum_methods!("RAdam", beta1);

    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (beta1, beta2) = self.hyper.betas(&name, self.betas);
            let towards_g = Lerp::new(F::from_f64(1.0 - beta1));
            let (b2, w2) = (F::from_f64(beta2), F::from_f64(1.0 - beta2));
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let state = self.buffers.get(&name);
            state.step += 1;
            // `powf`, not `powi`: libm's pow, as Python's `beta ** step` and `x ** 0.5`.
            let t = state.step as f64;
            let k = RAdamStep {
                decay: self.hyper.decay(&name, lr, wd, self.decoupled),
                towards_g,
                b2,
                w2,
                bc1: F::from_f64(1.0 - beta1.powf(t)),
                lr: F::from_f64(lr),
                bc2_sqrt: F::from_f64((1.0 - beta2.powf(t)).powf(0.5)),
                eps,
            };
            let wanted = [("exp_avg", true), ("exp_avg_sq", true)];
            let rectified = rectification(beta2, t);
            param.update(|theta| {
                let [m, v] = state.buffers(wanted, theta, F::ZERO);
                let (theta, grad) = (theta.data_mut(), grad.data());
                let (m, v) = (m.expect("wanted"), v.expect("wanted"));
                match rectified {
                    Some(r) => k.apply::<true>(theta, grad, m, v, F::from_f64(r)),
                    None => k.apply::<false>(theta, grad, m, v, F::ONE),
                }
            });
        }
    }

    lr_and_state!(
        "radam" or decoupled "radamw",
        Layout {
            signed: &["exp_avg"],
            never_negative: &["exp_avg_sq"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct RAdamStep<F> {
    decay: Decay<F>,
    /// m's step towards g, by 1 - β1.
    towards_g: Lerp<F>,
    b2: F,
    w2: F,
    /// 1 - β1^t.
    bc1: F,
    lr: F,
    /// √(1 - β2^t).
    bc2_sqrt: F,
    eps: F,
}

impl<F: Float> RAdamStep<F> {
    /// Updates θ, m and v in place; with `RECTIFIED` the adaptive step, scaled by `r`, else
    /// the plain one (`r` unused).
    // Not inlined, and one copy per branch: as parameters of their own function the slices are
    // known not to overlap, so the loop vectorises.
    #[inline(never)]
    fn apply<const RECTIFIED: bool>(
        self,
        theta: &mut [F],
        grad: &[F],
        m: &mut [F],
        v: &mut [F],
        r: F,
    ) {
        let n = theta.len();
        let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            theta[i] *= self.decay.keep;
            let g = self.decay.grad(theta[i], grad[i]);
            m[i] = self.towards_g.at(m[i], g);
            v[i] = mul_add(self.w2 * g, g, v[i] * self.b2);
            let step = m[i] / self.bc1 * self.lr;
            theta[i] -= if RECTIFIED {
                // torch computes `c / x` for a number c as `x.reciprocal() * c`.
                let adaptive = (F::ONE / (v[i].sqrt() + self.eps)) * self.bc2_sqrt;
                step * adaptive * r
            } else {
                step
            };
        }
    }
}
