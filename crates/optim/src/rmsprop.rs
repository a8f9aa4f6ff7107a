//! RMSprop: gradients divided by a running root mean square, optionally centered and with
//! momentum.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::optimizer::{
    shared_options, with_grads, Buffers, Hyper, OptimState, Optimizer, StateError,
};

/// RMSprop as `torch.optim.RMSprop` [lr 1e-2, alpha 0.99, eps 1e-8, weight_decay 0, momentum 0,
/// centered off]:
///
/// ```text
/// g ← g + λθ
/// v ← α·v + (1 - α)·g²
/// centered: ḡ ← ḡ + (1 - α)(g - ḡ);  d = √(v - ḡ²) + eps,   else d = √v + eps
/// momentum μ: b ← μ·b + g/d;  θ ← θ - lr·b,                 else θ ← θ - lr·g/d
/// ```
#[derive(Debug)]
pub struct RmsProp<F: Float = f32> {
    hyper: Hyper,
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
    buffers: Buffers<F>,
}

const KIND: &str = "rmsprop";

impl<F: Float> Default for RmsProp<F> {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl<F: Float> RmsProp<F> {
    /// RMSprop with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        RmsProp {
            hyper: Hyper::new(lr, 0.0),
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            buffers: Buffers::default(),
        }
    }

    /// The decay rate α of the running mean of g².
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The term added to the denominator.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Momentum μ.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Divide by the centered second moment (an estimate of the variance).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    shared_options!("L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for RmsProp<F> {
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let (alpha, eps, mu) = (
            F::from_f64(self.alpha),
            F::from_f64(self.eps),
            F::from_f64(self.momentum),
        );
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (lr, wd) = (F::from_f64(lr), F::from_f64(wd));
            let state = self.buffers.get(&name);
            state.step += 1;
            let wanted = [
                ("square_avg", true),
                ("grad_avg", self.centered),
                ("momentum_buffer", self.momentum > 0.0),
            ];
            let [v, mut g_avg, mut buf] = state.buffers(wanted, param.value(), F::ZERO);
            let v = v.expect("wanted");
            for (i, (x, &g)) in param
                .value_mut()
                .data_mut()
                .iter_mut()
                .zip(grad.data())
                .enumerate()
            {
                let g = if wd != F::ZERO { g + wd * *x } else { g };
                v[i] = v[i] * alpha + (F::ONE - alpha) * g * g;
                let avg = match g_avg.as_deref_mut() {
                    Some(ga) => {
                        ga[i] += (F::ONE - alpha) * (g - ga[i]);
                        (v[i] - ga[i] * ga[i]).sqrt()
                    }
                    None => v[i].sqrt(),
                } + eps;
                match buf.as_deref_mut() {
                    Some(b) => {
                        b[i] = b[i] * mu + g / avg;
                        *x -= lr * b[i];
                    }
                    None => *x -= lr * g / avg,
                }
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
        self.buffers.state(KIND, self.hyper.lr)
    }

    fn load_state(&mut self, state: &OptimState<F>) -> Result<(), StateError> {
        let kind = KIND;
        self.buffers.restore(
            state,
            kind,
            &["square_avg", "grad_avg", "momentum_buffer"],
            &mut self.hyper,
        )
    }
}
