//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::optimizer::{
    shared_options, with_grads, Buffers, Hyper, OptimState, Optimizer, StateError,
};

/// SGD as `torch.optim.SGD` [momentum 0, dampening 0, weight_decay 0, nesterov off]:
///
/// ```text
/// g ← g + λθ
/// b ← g on the first step, then μb + (1 - dampening)g        (with momentum μ)
/// g ← g + μb with nesterov, else b
/// θ ← θ - lr·g
/// ```
#[derive(Debug)]
pub struct Sgd<F: Float = f32> {
    hyper: Hyper,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    buffers: Buffers<F>,
}

const KIND: &str = "sgd";

impl<F: Float> Sgd<F> {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd {
            hyper: Hyper::new(lr, 0.0),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            buffers: Buffers::default(),
        }
    }

    /// Momentum μ.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Dampening of the momentum update.
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    shared_options!("L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    #[track_caller]
    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        assert!(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "Sgd: nesterov momentum requires a momentum and zero dampening"
        );
        let (mu, damp) = (
            F::from_f64(self.momentum),
            F::from_f64(1.0 - self.dampening),
        );
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let (lr, wd) = (F::from_f64(lr), F::from_f64(wd));
            let state = self.buffers.get(&name);
            state.step += 1;
            let first = state.step == 1;
            let [mut buf] = state.buffers(
                [("momentum_buffer", self.momentum != 0.0)],
                param.value(),
                F::ZERO,
            );
            let theta = param.value_mut().data_mut();
            for (i, (t, &g)) in theta.iter_mut().zip(grad.data()).enumerate() {
                let mut g = if wd != F::ZERO { g + wd * *t } else { g };
                if let Some(b) = buf.as_deref_mut() {
                    b[i] = if first { g } else { mu * b[i] + damp * g };
                    g = if self.nesterov { g + mu * b[i] } else { b[i] };
                }
                *t -= lr * g;
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
        self.buffers
            .restore(state, kind, &["momentum_buffer"], &mut self.hyper)
    }
}
