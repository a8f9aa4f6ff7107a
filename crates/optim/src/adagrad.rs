//! Adagrad: per-element learning rates from the sum of squared gradients.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::mul_add;
use crate::optimizer::{
    checked_options, lr_and_state, shared_options, with_grads, Buffers, Decay, Hyper, Layout,
    Optimizer,
};

/// Adagrad as `torch.optim.Adagrad` [lr 1e-2, lr_decay 0, weight_decay 0,
/// initial_accumulator_value 0, eps 1e-10, maximize off]:
///
/// ```text
/// g ← -g                                  (with maximize)
/// g ← g + λθ
/// clr = lr / (1 + (t - 1)·lr_decay)
/// sum ← sum + g²
/// θ ← θ - clr · g / (√sum + eps)          (eps outside the root)
/// ```
///
/// Each step rounds like torch's single-tensor loop (`foreach=False`): clr is computed in f64 and
/// rounded to `F` once, and `g + λθ` and `sum + g²` are multiply-adds rounded once.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, lr_decay,
/// initial accumulator value, eps or weight decay below 0; and on what would make a weight NaN:
/// an infinite value, eps 0. So does [`set_lr`](Optimizer::set_lr) on a NaN, infinite or
/// negative rate.
#[derive(Debug)]
pub struct Adagrad<F: Float = f32> {
    hyper: Hyper,
    lr_decay: f64,
    initial_accumulator_value: f64,
    eps: f64,
    buffers: Buffers<F>,
}

impl<F: Float> Default for Adagrad<F> {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl<F: Float> Adagrad<F> {
    /// Adagrad with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        Adagrad {
            hyper: Hyper::new::<F>("Adagrad", lr, 0.0).group_options(&["eps"]),
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            buffers: Buffers::default(),
        }
    }

    checked_options!("Adagrad";
        /// Decay of the learning rate with the step count.
        lr_decay: check_non_negative,
        /// The starting value of the sum of squares.
        initial_accumulator_value: check_non_negative,
        /// The term added to the denominator.
        eps: check_positive,
    );

    shared_options!("Adagrad", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Adagrad<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let init = F::from_f64(self.initial_accumulator_value);
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let eps = F::from_f64(self.hyper.eps(&name, self.eps));
            let state = self.buffers.get(&name);
            state.step += 1;
            let k = AdagradStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                clr: F::from_f64(lr / (1.0 + (state.step - 1) as f64 * self.lr_decay)),
                eps,
            };
            param.update(|theta| {
                let [sum] = state.buffers([("sum", true)], theta, init);
                k.apply(theta.data_mut(), grad.data(), sum.expect("wanted"));
            });
        }
    }

    lr_and_state!(
        "adagrad",
        Layout {
            signed: &[],
            never_negative: &["sum"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct AdagradStep<F> {
    decay: Decay<F>,
    clr: F,
    eps: F,
}

impl<F: Float> AdagradStep<F> {
    /// Updates θ and the sum of squares in place.
    // Not inlined: as parameters of their own function the slices are known not to overlap, so
    // the loop vectorises.
    #[inline(never)]
    fn apply(self, theta: &mut [F], grad: &[F], sum: &mut [F]) {
        let n = theta.len();
        let (grad, sum) = (&grad[..n], &mut sum[..n]);
        for i in 0..n {
            let g = self.decay.grad(theta[i], grad[i]);
            sum[i] = mul_add(g, g, sum[i]);
            theta[i] -= self.clr * g / (sum[i].sqrt() + self.eps);
        }
    }
}
