//! RMSprop: gradients divided by a running root mean square, optionally centered and with
//! momentum.

use rewind_autograd::{Float, Grads};
use rewind_nn::Module;

use crate::fused::{mul_add, Lerp};
use crate::optimizer::{
    check_unit, checked_options, lr_and_state, momentum_methods, shared_options, with_grads,
    Buffers, Decay, Hyper, Layout, Optimizer,
};

/// RMSprop as `torch.optim.RMSprop` [lr 1e-2, alpha 0.99, eps 1e-8, weight_decay 0, momentum 0,
/// centered off, maximize off]:
///
/// ```text
/// g ← -g                                                    (with maximize)
/// g ← g + λθ
/// v ← α·v + (1 - α)·g²
/// centered: ḡ ← ḡ + (1 - α)(g - ḡ);  d = √(v - ḡ²) + eps,   else d = √v + eps
/// momentum μ: b ← μ·b + g/d;  θ ← θ - lr·b,                 else θ ← θ - lr·g/d
/// ```
///
/// Each step rounds like torch's single-tensor loop (`foreach=False`): 1 - α is computed in f64
/// and rounded to `F` once (rounding α = 0.999 to f32 before subtracting it from 1 would put
/// 1 - α 1.3e-5 off), ḡ is updated with `torch.lerp`, and `g + λθ`, `α·v + (1 - α)·g·g`,
/// `v - ḡ²` and `θ - lr·b` are multiply-adds rounded once.
///
/// The builders panic at the caller's line on what PyTorch refuses: a learning rate, alpha, eps,
/// momentum or weight decay below 0; and on what would make a weight NaN: an infinite value,
/// eps 0, alpha above 1 (v goes negative). So does [`set_lr`](Optimizer::set_lr) on a NaN,
/// infinite or negative rate.
#[derive(Debug)]
pub struct RmsProp<F: Float = f32> {
    hyper: Hyper,
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
    buffers: Buffers<F>,
}

impl<F: Float> Default for RmsProp<F> {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl<F: Float> RmsProp<F> {
    /// RMSprop with learning rate `lr` and PyTorch's other defaults.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        RmsProp {
            hyper: Hyper::new::<F>("RmsProp", lr, 0.0).group_options(&["eps", "momentum"]),
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            buffers: Buffers::default(),
        }
    }

    /// The decay rate α of the running mean of g², in [0, 1].
    #[track_caller]
    pub fn alpha(mut self, alpha: f64) -> Self {
        check_unit("RmsProp", "alpha", alpha);
        self.alpha = alpha;
        self
    }

    checked_options!("RmsProp";
        /// The term added to the denominator.
        eps: check_positive,
        /// Momentum μ.
        momentum: check_non_negative,
    );

    /// Divide by the centered second moment (an estimate of the variance).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    shared_options!("RmsProp", "L2 weight decay λ, added to the gradient.");
}

impl<F: Float> Optimizer<F> for RmsProp<F> {
    momentum_methods!("RmsProp", momentum);

    fn step(&mut self, model: &mut dyn Module<F>, grads: &Grads<F>) {
        let w = F::from_f64(1.0 - self.alpha);
        for (name, param, grad) in with_grads(model, grads) {
            let (lr, wd) = self.hyper.for_param(&name);
            let momentum = self.hyper.momentum(&name, self.momentum);
            let k = RmsPropStep {
                decay: self.hyper.decay(&name, lr, wd, false),
                alpha: F::from_f64(self.alpha),
                w,
                towards_g: Lerp::new(w),
                eps: F::from_f64(self.hyper.eps(&name, self.eps)),
                mu: F::from_f64(momentum),
                lr: F::from_f64(lr),
                neg_lr: F::from_f64(-lr),
            };
            let state = self.buffers.get(&name);
            state.step += 1;
            let wanted = [
                ("square_avg", true),
                ("grad_avg", self.centered),
                ("momentum_buffer", momentum > 0.0),
            ];
            let variant = (self.centered, momentum > 0.0);
            param.update(|theta| {
                let [v, g_avg, buf] = state.buffers(wanted, theta, F::ZERO);
                let (theta, grad, v) = (theta.data_mut(), grad.data(), v.expect("wanted"));
                let (ga, b) = (g_avg.unwrap_or_default(), buf.unwrap_or_default());
                match variant {
                    (false, false) => k.apply::<false, false>(theta, grad, v, ga, b),
                    (true, false) => k.apply::<true, false>(theta, grad, v, ga, b),
                    (false, true) => k.apply::<false, true>(theta, grad, v, ga, b),
                    (true, true) => k.apply::<true, true>(theta, grad, v, ga, b),
                }
            });
        }
    }

    lr_and_state!(
        "rmsprop",
        Layout {
            signed: &["grad_avg", "momentum_buffer"],
            never_negative: &["square_avg"],
            fractions: &[],
            rates: &[],
        }
    );
}

/// One step's constants for one parameter, each rounded to `F` once.
#[derive(Clone, Copy)]
struct RmsPropStep<F> {
    decay: Decay<F>,
    alpha: F,
    /// 1 - α.
    w: F,
    /// ḡ's step towards g, by 1 - α.
    towards_g: Lerp<F>,
    eps: F,
    mu: F,
    lr: F,
    neg_lr: F,
}

impl<F: Float> RmsPropStep<F> {
    /// Updates θ, v, and with `CENTERED` ḡ (`g_avg`) and with `MOMENTUM` the buffer `buf` (each
    /// empty without), in place.
    // Not inlined, and one copy per variant: as parameters of their own function the slices are
    // known not to overlap, and with no optional buffer in the loop it vectorises.
    #[inline(never)]
    fn apply<const CENTERED: bool, const MOMENTUM: bool>(
        self,
        theta: &mut [F],
        grad: &[F],
        v: &mut [F],
        g_avg: &mut [F],
        buf: &mut [F],
    ) {
        let n = theta.len();
        let (grad, v) = (&grad[..n], &mut v[..n]);
        let g_avg = if CENTERED { &mut g_avg[..n] } else { g_avg };
        let buf = if MOMENTUM { &mut buf[..n] } else { buf };
        for i in 0..n {
            let g = self.decay.grad(theta[i], grad[i]);
            v[i] = mul_add(self.w * g, g, v[i] * self.alpha);
            let root = if CENTERED {
                g_avg[i] = self.towards_g.at(g_avg[i], g);
                mul_add(-g_avg[i], g_avg[i], v[i]).sqrt()
            } else {
                v[i].sqrt()
            };
            let d = root + self.eps;
            if MOMENTUM {
                buf[i] = buf[i] * self.mu + g / d;
                theta[i] = mul_add(buf[i], self.neg_lr, theta[i]);
            } else {
                theta[i] -= self.lr * g / d;
            }
        }
    }
}
