//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::mul_add;
use crate::optimizer::{
    checked_options, lr_and_state, momentum_methods, shared_options, with_grads, Buffers, Decay,
    Hyper, Layout, Optimizer,
};

/// SGD as `torch.optim.SGD` [momentum 0, dampening 0, weight_decay 0, nesterov off, maximize
/// off]:
///
/// ```text
/// g ← -g                                                     (with maximize)
/// g ← g + λθ
/// b ← g on the first step, then μb + (1 - dampening)g        (with momentum μ)
/// g ← g + μb with nesterov, else b
/// θ ← θ - lr·g
/// ```
///
/// Each step rounds like torch's single-tensor loop (`foreach=False`): 1 - dampening and -lr are
/// computed in f64 and rounded to `F` once, and every line above after the exact negation is one
/// multiply-add rounded once (after μb is rounded).
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, momentum or
/// weight decay below 0; and on what would make a weight NaN: an infinite value, a NaN or
/// infinite dampening. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or negative
/// rate.
#[derive(Debug)]
pub struct Sgd<F: Float = f32> {
    hyper: Hyper,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    buffers: Buffers<F>,
}

impl<F: Float> Sgd<F> {
    /// Plain SGD with learning rate `lr`.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Sgd {
            hyper: Hyper::new::<F>("Sgd", lr, 0.0).group_options(&["momentum"]),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            buffers: Buffers::default(),
        }
    }

    checked_options!("Sgd";
        /// Momentum μ.
        momentum: check_non_negative,
        /// Dampening of the momentum update: the gradient enters the buffer times
        /// 1 - dampening.
        dampening: check_finite,
    );

    /// Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    shared_options!("Sgd", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    momentum_methods!("Sgd", momentum);

    #[track_caller]
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let damp = F::from_f64(1.0 - self.dampening);
        let params = with_grads(model, grads);
        // Checked for every parameter before any is updated, so that a refused step changes
        // nothing.
        for (name, _, _) in &params {
            let momentum = self.hyper.momentum(name, self.momentum);
            assert!(
                !self.nesterov || (momentum > 0.0 && self.dampening == 0.0),
                "Sgd: nesterov momentum requires a momentum and zero dampening"
            );
        }
        for (name, param, grad) in params {
            let (lr, wd) = self.hyper.for_param(&name);
            let momentum = self.hyper.momentum(&name, self.momentum);
            let mu = F::from_f64(momentum);
            let state = self.buffers.get(&name);
            state.step += 1;
            let k = SgdStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                neg_lr: F::from_f64(-lr),
                mu,
                damp,
                first: state.step == 1,
                nesterov: self.nesterov,
            };
            let wanted = [("momentum_buffer", momentum != 0.0)];
            param.update(|theta| {
                let [buf] = state.buffers(wanted, theta, F::ZERO);
                let (theta, grad) = (theta.data_mut(), grad.data());
                match buf {
                    Some(b) => k.apply::<true>(theta, grad, b),
                    None => k.apply::<false>(theta, grad, &mut []),
                }
            });
        }
    }

    lr_and_state!(
        "sgd",
        Layout {
            signed: &["momentum_buffer"],
            never_negative: &[],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct SgdStep<F> {
    decay: Decay<F>,
    neg_lr: F,
    mu: F,
    /// 1 - dampening.
    damp: F,
    /// The momentum buffer starts as the first gradient.
    first: bool,
    nesterov: bool,
}

impl<F: Float> SgdStep<F> {
    /// Updates θ, and with `MOMENTUM` the buffer `buf` (empty without), in place.
    // Not inlined, and one copy per variant: as parameters of their own function the slices are
    // known not to overlap, and with no optional buffer in the loop it vectorises.
    #[inline(never)]
    fn apply<const MOMENTUM: bool>(self, theta: &mut [F], grad: &[F], buf: &mut [F]) {
        let n = theta.len();
        let grad = &grad[..n];
        let buf = if MOMENTUM { &mut buf[..n] } else { buf };
        for i in 0..n {
            let mut g = self.decay.grad(theta[i], grad[i]);
            if MOMENTUM {
                // Both values, then a choice: with a branch here the loop does not vectorise.
                let later = mul_add(g, self.damp, buf[i] * self.mu);
                buf[i] = if self.first { g } else { later };
                g = if self.nesterov {
                    mul_add(buf[i], self.mu, g)
                } else {
                    buf[i]
                };
            }
            theta[i] = mul_add(g, self.neg_lr, theta[i]);
        }
    }
}
