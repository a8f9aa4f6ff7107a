//! Hessian-free optimisation (Martens, 2010; Martens & Sutskever, 2011): each outer iteration
//! minimises a damped quadratic model of the loss with truncated conjugate gradient, the
//! curvature being the Gauss-Newton matrix taken on a curvature minibatch, only ever through
//! products with it.

use rewind::autograd::GaussNewton;
use rewind::nn::Module;
use rewind::prelude::*;

use super::cg::{self, dot, Iterate, Stop};
use super::data::Batch;
use super::model::Net;

/// The settings of the method.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Sequences of the curvature minibatch: the first ones of each gradient batch.
    pub curvature_batch: usize,
    /// The conjugate-gradient iteration.
    pub cg: cg::Options,
    /// λ at the start: the Tikhonov damping λ‖δ‖²/2 added to the model.
    pub lambda: f64,
    /// CG starts from this fraction of the previous iteration's last CG iterate.
    pub decay: f64,
    /// μ of structural damping: λμ/2 · Σ_t ‖Δh_t‖² (mean over sequences) is added to the model,
    /// with Δh_t the linearised change of the hidden states. 0 leaves it out.
    pub structural: f64,
}

impl Default for Settings {
    /// The command line's defaults.
    fn default() -> Self {
        Settings {
            curvature_batch: 200,
            cg: cg::Options::default(),
            lambda: 1.0,
            decay: 0.95,
            structural: 0.1,
        }
    }
}

/// What one outer iteration did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The loss on the gradient batch before the update.
    pub loss: f64,
    /// The loss on the gradient batch after it.
    pub loss_after: f64,
    /// The reduction ratio ρ = (f(θ+δ) - f(θ)) / (M(δ) - M(0)) for the backtracked iterate δ,
    /// M the quadratic model without its Tikhonov term (with the structural one, which is part
    /// of the curvature operator CG is given).
    pub rho: f64,
    /// λ during this iteration (the next one uses [`HessianFree::lambda`]).
    pub lambda: f64,
    /// CG iterations run.
    pub cg_iterations: usize,
    /// Why CG stopped.
    pub stop: Stop,
    /// The CG iteration backtracked to.
    pub chosen: usize,
    /// The step taken along it, from the line search: 1, less, or 0 for no update.
    pub step: f64,
    /// Gauss-Newton products used.
    pub products: usize,
}

/// The state of the method between outer iterations.
#[derive(Debug)]
pub struct HessianFree {
    settings: Settings,
    lambda: f64,
    /// The last CG iterate of the previous outer iteration: where the next CG starts, decayed.
    previous: Option<Vec<f64>>,
}

/// The LM rule: λ grows by 3/2 when the model overstated the reduction (ρ < 1/4, or the loss
/// rose), shrinks by 2/3 when it predicted it well (ρ > 3/4).
pub fn adapt(lambda: f64, rho: f64) -> f64 {
    if rho.is_nan() || rho < 0.25 {
        lambda * 1.5
    } else if rho > 0.75 {
        lambda * 2.0 / 3.0
    } else {
        lambda
    }
}

/// Armijo's sufficient decrease for the line search: f(θ + αδ) ≤ f(θ) + c·α·∇fᵀδ.
const ARMIJO: f64 = 1e-2;
/// Each rejected step is shrunk by this much, at most `LINE_SEARCH` times.
const SHRINK: f64 = 0.8;
const LINE_SEARCH: usize = 8;

impl HessianFree {
    /// The method with `settings`, at its initial λ.
    pub fn new(settings: Settings) -> Self {
        HessianFree {
            lambda: settings.lambda,
            settings,
            previous: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// λ for the next outer iteration.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// One outer iteration on `batch`: its gradient on all of it, the Gauss-Newton products on
    /// its first `curvature_batch` sequences; the parameters of `net` are moved in place.
    pub fn step<F: Float>(&mut self, net: &Net<F>, batch: &Batch<F>) -> Report {
        let params: Vec<&Param<F>> = net.params().into_iter().map(|(_, p)| p).collect();
        let theta: Vec<Tensor<F>> = params.iter().map(|p| p.value()).collect();
        let (loss, gradient) = loss_and_gradient(net, &params, batch);
        let lambda = self.lambda;
        let solution = self.solve(net, &params, &theta, batch, &gradient);
        self.previous = Some(solution.last().x.clone());

        let loss_at = |delta: &[f64], alpha: f64| {
            move_to(&params, &theta, delta, alpha);
            net.loss(batch)
        };
        let (best, best_loss) = backtrack(&solution, |x| loss_at(x, 1.0));
        // φ is the damped model ½δᵀ(G + λI)δ + gᵀδ; the reduction ratio leaves λI out.
        let undamped = best.value - 0.5 * lambda * dot(&best.x, &best.x);
        let rho = (best_loss - loss) / undamped;
        self.lambda = adapt(lambda, rho);
        let slope = dot(&gradient, &best.x);
        let (step, loss_after) =
            line_search(loss, best_loss, slope, |alpha| loss_at(&best.x, alpha));
        move_to(&params, &theta, &best.x, step);
        Report {
            loss,
            loss_after,
            rho,
            lambda,
            cg_iterations: solution.last().iteration,
            stop: solution.stop,
            chosen: best.iteration,
            step,
            products: solution.products,
        }
    }

    /// Truncated CG on (G + λI)δ = -∇f, G on the curvature minibatch, from the previous
    /// solution decayed.
    fn solve<F: Float>(
        &self,
        net: &Net<F>,
        params: &[&Param<F>],
        theta: &[Tensor<F>],
        batch: &Batch<F>,
        gradient: &[f64],
    ) -> cg::Solution {
        let start = match &self.previous {
            Some(p) => p.iter().map(|v| v * self.settings.decay).collect(),
            None => vec![0.0; gradient.len()],
        };
        let minus_g: Vec<f64> = gradient.iter().map(|g| -g).collect();
        let curvature = batch.head(self.settings.curvature_batch.min(batch.sequences()));
        let tape = Tape::new();
        let wrt: Vec<Var<F>> = params.iter().map(|p| tape.param(p)).collect();
        let lambda = self.lambda;
        let gn = gauss_newton(
            net,
            &tape,
            &curvature,
            &wrt,
            lambda * self.settings.structural,
        );
        let damped = |v: &[f64]| {
            let mut gv = flatten(gn.product(&shaped(v, theta)).iter());
            cg::axpy(lambda, v, &mut gv);
            gv
        };
        cg::solve(damped, &minus_g, &start, &self.settings.cg)
    }
}

/// The loss on `batch` and its gradient with respect to `params`, laid end to end.
fn loss_and_gradient<F: Float>(
    net: &Net<F>,
    params: &[&Param<F>],
    batch: &Batch<F>,
) -> (f64, Vec<f64>) {
    let tape = Tape::new();
    let loss = net.forward(&tape, batch).loss;
    let grads = loss.backward();
    let g = params
        .iter()
        .map(|p| grads.get(p).expect("every parameter is used"));
    (loss.item().to_f64(), flatten(g))
}

/// Martens' backtracking: from the last kept CG iterate to earlier ones while the loss keeps
/// falling; the iterate where it stops, with its loss.
fn backtrack(solution: &cg::Solution, mut loss_at: impl FnMut(&[f64]) -> f64) -> (&Iterate, f64) {
    let mut kept = solution.iterates.iter().rev();
    let mut best = kept.next().expect("the last iterate is kept");
    let mut best_loss = loss_at(&best.x);
    for earlier in kept {
        let l = loss_at(&earlier.x);
        if l >= best_loss {
            break;
        }
        (best, best_loss) = (earlier, l);
    }
    (best, best_loss)
}

/// The step α along δ: 1 if it decreases the loss enough (Armijo), else shrunk until it does;
/// 0 if none of the tries decreases it at all. `loss` is f(θ), `full` f(θ + δ), `slope` ∇fᵀδ.
/// Returns α and f(θ + αδ).
fn line_search(
    loss: f64,
    full: f64,
    slope: f64,
    mut loss_at: impl FnMut(f64) -> f64,
) -> (f64, f64) {
    let sufficient = |l: f64, step: f64| l <= loss + ARMIJO * step * slope;
    let (mut step, mut after) = (1.0, full);
    for _ in 0..LINE_SEARCH {
        if sufficient(after, step) {
            break;
        }
        step *= SHRINK;
        after = loss_at(step);
    }
    if after.is_nan() || after > loss {
        (0.0, loss)
    } else {
        (step, after)
    }
}

/// The curvature of the model on `batch` as an operator: the Gauss-Newton matrix of the loss
/// with respect to `wrt`, plus, with a structural weight w = λμ > 0, w/B · J_hᵀJ_h (J_h the
/// Jacobian of all hidden states). Both are one Gauss-Newton matrix, that of
/// L(z) = (1/B) Σ_b (ŷ_b - y_b)² + w/(2B) ‖h - h(θ)‖² of the output z = (ŷ, h), the second term
/// zero at θ with a Hessian w/B · I.
pub fn gauss_newton<'t, F: Float>(
    net: &Net<F>,
    tape: &'t Tape<F>,
    batch: &Batch<F>,
    wrt: &[Var<'t, F>],
    structural: f64,
) -> GaussNewton<'t, F> {
    let forward = net.forward(tape, batch);
    if structural == 0.0 {
        return forward.loss.gauss_newton(forward.prediction, wrt);
    }
    let b = batch.sequences();
    let states = forward.hidden.value().numel();
    let z = concat(
        &[
            forward.prediction.reshape(&[b]),
            forward.hidden.reshape(&[states]),
        ],
        0,
    );
    let prediction = z.narrow(0, 0, b).reshape(&[b, 1]);
    let two = F::from_f64(2.0);
    let fit = (prediction - tape.constant(batch.y.clone()))
        .powf(two)
        .mean();
    let h = z.narrow(0, b, states);
    let drift = (h - tape.constant(h.value())).powf(two).sum();
    let loss = fit + drift * F::from_f64(structural / (2.0 * b as f64));
    loss.gauss_newton(z, wrt)
}

/// The tensors laid end to end, as f64.
pub fn flatten<'a, F: Float + 'a>(tensors: impl Iterator<Item = &'a Tensor<F>>) -> Vec<f64> {
    tensors
        .flat_map(|t| t.data().iter().map(|v| v.to_f64()))
        .collect()
}

/// `flat` cut into tensors of the shapes of `like`.
pub fn shaped<F: Float>(flat: &[f64], like: &[Tensor<F>]) -> Vec<Tensor<F>> {
    let mut at = 0;
    like.iter()
        .map(|t| {
            let n = t.numel();
            let data = flat[at..at + n].iter().map(|&v| F::from_f64(v)).collect();
            at += n;
            Tensor::from_vec(data, t.shape()).expect("sizes match")
        })
        .collect()
}

/// Sets the parameters to θ + α·δ.
fn move_to<F: Float>(params: &[&Param<F>], theta: &[Tensor<F>], delta: &[f64], alpha: f64) {
    let mut at = 0;
    for (p, t) in params.iter().zip(theta) {
        let n = t.numel();
        let data = t
            .data()
            .iter()
            .zip(&delta[at..at + n])
            .map(|(v, d)| F::from_f64(v.to_f64() + alpha * d))
            .collect();
        at += n;
        p.set(Tensor::from_vec(data, t.shape()).expect("sizes match"));
    }
}
