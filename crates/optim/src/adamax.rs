//! Adamax: Adam with a decaying infinity norm of the gradients in place of their root mean square.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::Lerp;
use crate::optimizer::{
    betas_option, checked_options, lr_and_state, momentum_methods, shared_options, with_grads,
    Buffers, Decay, Hyper, Layout, Optimizer,
};

/// Adamax as `torch.optim.Adamax` [lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// maximize off], step t counted per parameter:
///
/// ```text
/// g ← -g                              (with maximize)
/// g ← g + λθ
/// m ← β1·m + (1 - β1)·g
/// u ← max(β2·u, |g| + eps)            (eps inside the max, as PyTorch adds it)
/// θ ← θ - (lr / (1 - β1^t)) · m / u
/// ```
///
/// Each step rounds like torch's single-tensor loop (`foreach=False`): 1 - β1 and
/// lr / (1 - β1^t) are computed in f64 and rounded to `F` once, m is updated with `torch.lerp`,
/// `g + λθ` is a multiply-add rounded once, and β2·u, |g| + eps and the update are each rounded.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, eps or weight
/// decay below 0, a beta outside [0, 1); and on what would make a weight NaN: an infinite value,
/// eps 0. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative rate.
#[derive(Debug)]
pub struct Adamax<F: Float = f32> {
    hyper: Hyper,
    betas: (f64, f64),
    eps: f64,
    buffers: Buffers<F>,
}

impl<F: Float> Default for Adamax<F> {
    fn default() -> Self {
        Self::new(2e-3)
    }
}

impl<F: Float> Adamax<F> {
    /// Adamax with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Adamax {
            hyper: Hyper::new::<F>("Adamax", lr, 0.0).group_options(&["betas", "eps"]),
            betas: (0.9, 0.999),
            eps: 1e-8,
            buffers: Buffers::default(),
        }
    }

    betas_option!("Adamax";
        /// The decay rates of the first moment and of the infinity norm.
    );

    checked_options!("Adamax";
        /// The term added to |g| before the maximum.
        eps: check_positive,
    );

    shared_options!("Adamax", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Adamax<F> {
    momentum_methods!("Adamax", beta1);

    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (beta1, beta2) = self.hyper.betas(&name, self.betas);
            let towards_g = Lerp::new(F::from_f64(1.0 - beta1));
            let b2 = F::from_f64(beta2);
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let state = self.buffers.get(&name);
            state.step += 1;
            // `powf`, not `powi`: libm's pow, as Python's `beta ** step`.
            let clr = lr / (1.0 - beta1.powf(state.step as f64));
            let k = AdamaxStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                towards_g,
                b2,
                eps,
                neg_clr: F::from_f64(-clr),
            };
            let wanted = [("exp_avg", true), ("exp_inf", true)];
            param.update(|theta| {
                let [m, u] = state.buffers(wanted, theta, F::ZERO);
                k.apply(
                    theta.data_mut(),
                    grad.data(),
                    m.expect("wanted"),
                    u.expect("wanted"),
                );
            });
        }
    }

    lr_and_state!(
        "adamax",
        Layout {
            signed: &["exp_avg"],
            never_negative: &["exp_inf"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct AdamaxStep<F> {
    decay: Decay<F>,
    /// m's step towards g, by 1 - β1.
    towards_g: Lerp<F>,
    b2: F,
    eps: F,
    /// -lr / (1 - β1^t).
    neg_clr: F,
}

impl<F: Float> AdamaxStep<F> {
    /// Updates θ, m and u in place.
    // Not inlined: as parameters of their own function the slices are known not to overlap, so
    // the loop vectorises.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], m: &mut [F], u: &mut [F]) {
        let n = theta.len();
        let (grad, m, u) = (&grad[..n], &mut m[..n], &mut u[..n]);
        for i in 0..n {
            let g = self.decay.grad(theta[i], grad[i]);
            m[i] = self.towards_g.at(m[i], g);
            // torch.maximum: NaN if either is.
            u[i] = (u[i] * self.b2).max(g.abs() + self.eps);
            theta[i] += self.neg_clr * m[i] / u[i];
        }
    }
}
