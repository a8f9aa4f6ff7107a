//! NAdam: Adam with Nesterov momentum and a warming-up momentum schedule (Dozat, 2016).

use rewind_autograd::{Float, Grads, Tensor};
use rewind_nn::Module;

use crate::fused::{mul_add, Lerp};
use crate::optimizer::{
    betas_option, checked_options, decoupled_weight_decay_option, lr_and_state, momentum_methods,
    shared_options, with_grads, Buffers, Decay, Hyper, Layout, Optimizer,
};

/// NAdam as `torch.optim.NAdam` [lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// momentum_decay ψ = 4e-3, decoupled_weight_decay off, maximize off], step t counted per
/// parameter:
///
/// ```text
/// g ← -g                                      (with maximize)
/// g ← g + λθ                                  (NAdamW, decoupled: θ ← θ(1 - lr·λ) instead)
/// μ_t = β1·(1 - ½·0.96^(t·ψ)),   μ_{t+1} = β1·(1 - ½·0.96^((t+1)·ψ))
/// Π ← Π·μ_t                                   (Π starts at 1: the product μ_1 ⋯ μ_t)
/// m ← β1·m + (1 - β1)·g
/// v ← β2·v + (1 - β2)·g²
/// d = √(v / (1 - β2^t)) + eps
/// θ ← θ - (lr·(1 - μ_t) / (1 - Π)) · g / d - (lr·μ_{t+1} / (1 - Π·μ_{t+1})) · m / d
/// ```
///
/// Π is kept per parameter in `F`, as torch keeps `mu_product` in its default dtype (so an f32
/// run rounds it at every step, as torch's does). Each step rounds like torch's single-tensor
/// loop (`foreach=False`): μ_t, the two step sizes, 1 - β1, 1 - β2, 1 - β2^t and 1 - lr·λ are
/// computed in f64 and rounded to `F` once, m is updated with `torch.lerp`, `g + λθ` and
/// `β2·v + (1 - β2)·g·g` are multiply-adds rounded once, and θ takes the two terms one after the
/// other, each rounded.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, eps, weight
/// decay or momentum decay below 0, a beta outside [0, 1); and on what would make a weight NaN:
/// an infinite value, eps 0. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or
/// negative rate.
#[derive(Debug)]
pub struct NAdam<F: Float = f32> {
    hyper: Hyper,
    betas: (f64, f64),
    eps: f64,
    momentum_decay: f64,
    decoupled: bool,
    buffers: Buffers<F>,
}

impl<F: Float> Default for NAdam<F> {
    fn default() -> Self {
        Self::new(2e-3)
    }
}

impl<F: Float> NAdam<F> {
    /// NAdam with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        NAdam {
            hyper: Hyper::new::<F>("NAdam", lr, 0.0).group_options(&["betas", "eps"]),
            betas: (0.9, 0.999),
            eps: 1e-8,
            momentum_decay: 4e-3,
            decoupled: false,
            buffers: Buffers::default(),
        }
    }

    betas_option!("NAdam";
        /// The decay rates of the first and second moments (β1 also scales every μ_t).
    );

    checked_options!("NAdam";
        /// The term added to the denominator.
        eps: check_positive,
        /// ψ, how fast μ_t rises from β1/2 towards β1.
        momentum_decay: check_non_negative,
    );

    decoupled_weight_decay_option!("NAdamW");

    shared_options!(
        "NAdam",
        "Weight decay λ: added to the gradient, or applied to the weights with \
         [`decoupled_weight_decay`](NAdam::decoupled_weight_decay)."
    );
}

impl<F: Float> Optimizer<F> for NAdam<F> {
    momentum_methods!("NAdam", beta1);

    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let momentum_decay = self.momentum_decay;
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (beta1, beta2) = self.hyper.betas(&name, self.betas);
            let towards_g = Lerp::new(F::from_f64(1.0 - beta1));
            let (b2, w2) = (F::from_f64(beta2), F::from_f64(1.0 - beta2));
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let mu_at = |t: f64| beta1 * (1.0 - 0.5 * 0.96f64.powf(t * momentum_decay));
            let state = self.buffers.get(&name);
            state.step += 1;
            let t = state.step as f64;
            let (mu, mu_next) = (mu_at(t), mu_at(t + 1.0));
            // One number: `load_state` refuses a state where it is not.
            let product = state
                .tensors
                .entry("mu_product")
                .or_insert_with(|| Tensor::scalar(F::ONE));
            let product = &mut product.data_mut()[0];
            *product *= F::from_f64(mu);
            let product = product.to_f64();
            let k = NAdamStep {
                decay: self.hyper.decay(&name, lr, wd, self.decoupled),
                towards_g,
                b2,
                w2,
                // `powf`, not `powi`: libm's pow, as Python's `beta ** step`.
                bc2: F::from_f64(1.0 - beta2.powf(t)),
                eps,
                neg_g_size: F::from_f64(-lr * (1.0 - mu) / (1.0 - product)),
                neg_m_size: F::from_f64((-lr * mu_next) / (1.0 - product * mu_next)),
            };
            let wanted = [("exp_avg", true), ("exp_avg_sq", true)];
            param.update(|theta| {
                let [m, v] = state.buffers(wanted, theta, F::ZERO);
                k.apply(
                    theta.data_mut(),
                    grad.data(),
                    m.expect("wanted"),
                    v.expect("wanted"),
                );
            });
        }
    }

    lr_and_state!(
        "nadam" or decoupled "nadamw",
        Layout {
            signed: &["exp_avg"],
            never_negative: &["exp_avg_sq"],
            fractions: &["mu_product"],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct NAdamStep<F> {
    decay: Decay<F>,
    /// m's step towards g, by 1 - β1.
    towards_g: Lerp<F>,
    b2: F,
    w2: F,
    /// 1 - β2^t.
    bc2: F,
    eps: F,
    /// -lr·(1 - μ_t) / (1 - Π).
    neg_g_size: F,
    /// -lr·μ_{t+1} / (1 - Π·μ_{t+1}).
    neg_m_size: F,
}

impl<F: Float> NAdamStep<F> {
    /// Updates θ, m and v in place.
    // Not inlined: as parameters of their own function the slices are known not to overlap, so
    // the loop vectorises.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], m: &mut [F], v: &mut [F]) {
        let n = theta.len();
        let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            theta[i] *= self.decay.keep;
            let g = self.decay.grad(theta[i], grad[i]);
            m[i] = self.towards_g.at(m[i], g);
            v[i] = mul_add(self.w2 * g, g, v[i] * self.b2);
            let d = (v[i] / self.bc2).sqrt() + self.eps;
            theta[i] += self.neg_g_size * g / d;
            theta[i] += self.neg_m_size * m[i] / d;
        }
    }
}
