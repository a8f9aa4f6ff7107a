//! L-BFGS: quasi-Newton steps from a short history of gradient differences, with an optional
//! strong-Wolfe line search; a step re-evaluates the loss through a closure.

use std::marker::PhantomData;

use rewind_autograd::{Float, Grads, Param, Tensor};
use rewind_nn::Module;

use crate::fused::mul_add;
use crate::optimizer::check_non_negative;

/// How [`Lbfgs`] chooses the step length along each direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LineSearch {
    /// The learning rate (scaled down on the very first iteration), with no search
    /// (torch's `line_search_fn=None`, the default).
    #[default]
    Fixed,
    /// A step length that satisfies the strong Wolfe conditions, f(x + t·d) ≤ f(x) + c1·t·gᵀd and
    /// |∇f(x + t·d)ᵀd| ≤ c2·|gᵀd| with c1 = 1e-4, c2 = 0.9, found by bracketing and cubic
    /// interpolation (Nocedal and Wright, algorithms 3.5 and 3.6; torch's `"strong_wolfe"`).
    StrongWolfe,
}

/// L-BFGS as `torch.optim.LBFGS` [lr 1, max_iter 20, max_eval max_iter·5/4, tolerance_grad
/// 1e-7, tolerance_change 1e-9, history_size 100, no line search, maximize off], over all the
/// model's parameters as one flat vector θ, with its gradient g (0 for a parameter without one):
///
/// ```text
/// d = -H·g                  H from the last history_size pairs s = θ' - θ, y = g' - g with
///                           yᵀs > 1e-10, by the two-loop recursion, scaled by yᵀs / yᵀy of the
///                           newest pair (d = -g at the very first iteration)
/// t = lr                    (min(1, 1/‖g‖₁)·lr at the very first iteration), or the
///                           strong-Wolfe step from there
/// θ ← θ + t·d
/// ```
///
/// One [`step`](Lbfgs::step) runs up to `max_iter` such iterations and `max_eval` evaluations of
/// the closure, and stops early, as torch does, when max|g| ≤ tolerance_grad, when gᵀd >
/// -tolerance_change, or when the step max|t·d| or the change in the loss falls to
/// tolerance_change. The history, the last direction and step, and the counts carry over to the
/// next call. With `maximize`, the closure's loss and gradient are negated: L-BFGS climbs.
///
/// The closure is PyTorch's: it evaluates the model at its current parameters and returns the
/// loss and its gradients, `|m| { let tape = Tape::new(); ...; (loss.value().item(),
/// loss.backward()) }`. The directions and line search are computed in f64 whatever `F` is
/// (torch's run in `F`), and each update of the parameters is `θ + t·d` rounded to `F` once.
/// The state is not saved with [`OptimState`](crate::OptimState): L-BFGS is not an
/// [`Optimizer`](crate::Optimizer), whose step takes one set of gradients.
///
/// The builders panic at the caller's line on a learning rate or tolerance that is negative,
/// NaN or infinite, and on `max_iter`, `max_eval` or `history_size` 0.
#[derive(Debug)]
pub struct Lbfgs<F: Float = f32> {
    lr: f64,
    max_iter: usize,
    max_eval: Option<usize>,
    tolerance_grad: f64,
    tolerance_change: f64,
    history_size: usize,
    line_search: LineSearch,
    maximize: bool,
    state: History,
    dtype: PhantomData<F>,
}

/// What carries over from one call of [`Lbfgs::step`] to the next (torch's per-optimizer state).
#[derive(Clone, Debug, Default)]
struct History {
    /// Last direction d and step length t.
    d: Vec<f64>,
    t: f64,
    /// The pairs (y, s) and 1 / yᵀs, oldest first.
    old_dirs: Vec<Vec<f64>>,
    old_stps: Vec<Vec<f64>>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Vec<f64>,
    func_evals: usize,
    n_iter: usize,
}

impl<F: Float> Default for Lbfgs<F> {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl<F: Float> Lbfgs<F> {
    /// L-BFGS with learning rate `lr` and PyTorch's other defaults. Panics unless `lr` is
    /// finite and ≥ 0.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        check_non_negative::<F>("Lbfgs", "lr", lr);
        Lbfgs {
            lr,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: LineSearch::Fixed,
            maximize: false,
            state: History::default(),
            dtype: PhantomData,
        }
    }

    /// Iterations per [`step`](Lbfgs::step) (20). Panics if 0.
    #[track_caller]
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        at_least_one("max_iter", max_iter);
        self.max_iter = max_iter;
        self
    }

    /// Closure evaluations per [`step`](Lbfgs::step) (max_iter·5/4 unless set). Panics if 0.
    #[track_caller]
    pub fn max_eval(mut self, max_eval: usize) -> Self {
        at_least_one("max_eval", max_eval);
        self.max_eval = Some(max_eval);
        self
    }

    /// Stop when every element of the gradient is at most this in magnitude (1e-7). Panics
    /// unless finite and ≥ 0.
    #[track_caller]
    pub fn tolerance_grad(mut self, tolerance: f64) -> Self {
        check_non_negative::<f64>("Lbfgs", "tolerance_grad", tolerance);
        self.tolerance_grad = tolerance;
        self
    }

    /// Stop when a step or the change in the loss is at most this (1e-9). Panics unless finite
    /// and ≥ 0.
    #[track_caller]
    pub fn tolerance_change(mut self, tolerance: f64) -> Self {
        check_non_negative::<f64>("Lbfgs", "tolerance_change", tolerance);
        self.tolerance_change = tolerance;
        self
    }

    /// Pairs of differences kept (100). Panics if 0.
    #[track_caller]
    pub fn history_size(mut self, history_size: usize) -> Self {
        at_least_one("history_size", history_size);
        self.history_size = history_size;
        self
    }

    /// How the step length is chosen ([`LineSearch::Fixed`]).
    pub fn line_search(mut self, line_search: LineSearch) -> Self {
        self.line_search = line_search;
        self
    }

    /// Climb the closure's loss instead of descending it (off).
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.maximize = maximize;
        self
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate. Panics, at the caller's line, unless finite and ≥ 0.
    #[track_caller]
    pub fn set_lr(&mut self, lr: f64) {
        check_non_negative::<F>("Lbfgs", "lr", lr);
        self.lr = lr;
    }

    /// Closure evaluations and iterations over every call so far (torch's `func_evals` and
    /// `n_iter`).
    pub fn counts(&self) -> (usize, usize) {
        (self.state.func_evals, self.state.n_iter)
    }

    /// Runs up to `max_iter` iterations on `model`'s parameters, calling `closure` to evaluate
    /// the loss and gradients at the current parameters, and returns the loss of the first
    /// evaluation (before any update), as torch's `step(closure)` does.
    pub fn step<M: Module<F> + ?Sized>(
        &mut self,
        model: &mut M,
        mut closure: impl FnMut(&M) -> (F, Grads<F>),
    ) -> F {
        let model: &M = model;
        let params = distinct(model);
        let sign = if self.maximize { -1.0 } else { 1.0 };
        let mut evaluate = |model: &M| {
            let (loss, grads) = closure(model);
            (loss, sign * loss.to_f64(), flat_grad(&params, &grads, sign))
        };
        let (orig_loss, mut loss, mut g) = evaluate(model);
        let mut current_evals = 1;
        let max_eval = self.max_eval.unwrap_or(self.max_iter * 5 / 4);
        let state = &mut self.state;
        state.func_evals += 1;
        if max_abs(&g) <= self.tolerance_grad {
            return orig_loss;
        }
        let mut n_iter = 0;
        while n_iter < self.max_iter {
            n_iter += 1;
            state.n_iter += 1;
            if state.n_iter == 1 {
                state.d = g.iter().map(|x| -x).collect();
                state.old_dirs.clear();
                state.old_stps.clear();
                state.ro.clear();
                state.h_diag = 1.0;
            } else {
                state.d = direction(state, &g, self.history_size);
            }
            state.prev_flat_grad.clone_from(&g);
            let prev_loss = loss;
            let mut t = if state.n_iter == 1 {
                (1.0 / g.iter().map(|x| x.abs()).sum::<f64>()).min(1.0) * self.lr
            } else {
                self.lr
            };
            // Kept before the check below, as torch keeps it when it stops there: the next
            // call's first pair is s = t·d from this d and this t.
            state.t = t;
            let d = &state.d;
            let gtd = dot(&g, d);
            if gtd > -self.tolerance_change {
                break;
            }
            let mut opt_cond = false;
            let mut ls_evals = 0;
            match self.line_search {
                LineSearch::StrongWolfe => {
                    let start: Vec<Tensor<F>> = params.iter().map(|p| p.value()).collect();
                    let mut along = |t: f64| {
                        add_step(&params, t, d);
                        let (_, loss, g) = evaluate(model);
                        for (p, v) in params.iter().zip(&start) {
                            p.set(v.clone());
                        }
                        (loss, g)
                    };
                    let budget = max_eval.saturating_sub(current_evals);
                    let found = strong_wolfe(
                        &mut along,
                        t,
                        d,
                        (loss, &g, gtd),
                        self.tolerance_change,
                        budget,
                    );
                    (loss, g, t, ls_evals) = found;
                    add_step(&params, t, d);
                    opt_cond = max_abs(&g) <= self.tolerance_grad;
                }
                LineSearch::Fixed => {
                    add_step(&params, t, d);
                    if n_iter != self.max_iter {
                        (_, loss, g) = evaluate(model);
                        opt_cond = max_abs(&g) <= self.tolerance_grad;
                        ls_evals = 1;
                    }
                }
            }
            state.t = t;
            current_evals += ls_evals;
            state.func_evals += ls_evals;
            if n_iter == self.max_iter || current_evals >= max_eval || opt_cond {
                break;
            }
            if state.d.iter().map(|x| (x * t).abs()).fold(0.0, f64::max) <= self.tolerance_change {
                break;
            }
            if (loss - prev_loss).abs() < self.tolerance_change {
                break;
            }
        }
        orig_loss
    }
}

/// Panics, at the caller's line, unless the count `value` is at least 1.
#[track_caller]
fn at_least_one(name: &str, value: usize) {
    assert!(value >= 1, "Lbfgs: {name} must be at least 1, got {value}");
}

/// The model's parameters, each once (a tied weight listed under two names is one variable).
fn distinct<F: Float, M: Module<F> + ?Sized>(model: &M) -> Vec<&Param<F>> {
    let mut seen = Vec::new();
    let mut params = Vec::new();
    for (_, p) in model.params() {
        if !seen.contains(&p.id()) {
            seen.push(p.id());
            params.push(p);
        }
    }
    params
}

/// The gradients of `params`, concatenated, times `sign` (0 for a parameter without one).
fn flat_grad<F: Float>(params: &[&Param<F>], grads: &Grads<F>, sign: f64) -> Vec<f64> {
    let mut flat = Vec::new();
    for p in params {
        match grads.get(p) {
            Some(g) => flat.extend(g.data().iter().map(|x| sign * x.to_f64())),
            None => flat.extend(std::iter::repeat_n(0.0, p.value().numel())),
        }
    }
    flat
}

/// θ ← θ + t·d over the concatenated parameters, each element rounded to `F` once.
fn add_step<F: Float>(params: &[&Param<F>], t: f64, d: &[f64]) {
    let t = F::from_f64(t);
    let mut offset = 0;
    for p in params {
        p.update(|theta| {
            let theta = theta.data_mut();
            for (x, &dx) in theta.iter_mut().zip(&d[offset..]) {
                *x = mul_add(F::from_f64(dx), t, *x);
            }
            offset += theta.len();
        });
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().map(|x| x.abs()).fold(0.0, f64::max)
}

/// The two-loop recursion: records the pair from the last step if yᵀs > 1e-10, then returns
/// -H·g.
fn direction(state: &mut History, g: &[f64], history_size: usize) -> Vec<f64> {
    let y: Vec<f64> = g
        .iter()
        .zip(&state.prev_flat_grad)
        .map(|(a, b)| a - b)
        .collect();
    let s: Vec<f64> = state.d.iter().map(|x| x * state.t).collect();
    let ys = dot(&y, &s);
    if ys > 1e-10 {
        if state.old_dirs.len() == history_size {
            state.old_dirs.remove(0);
            state.old_stps.remove(0);
            state.ro.remove(0);
        }
        state.h_diag = ys / dot(&y, &y);
        state.old_dirs.push(y);
        state.old_stps.push(s);
        state.ro.push(1.0 / ys);
    }
    let n = state.old_dirs.len();
    let mut al = vec![0.0; n];
    let mut q: Vec<f64> = g.iter().map(|x| -x).collect();
    for i in (0..n).rev() {
        al[i] = dot(&state.old_stps[i], &q) * state.ro[i];
        for (qj, yj) in q.iter_mut().zip(&state.old_dirs[i]) {
            *qj = (-al[i]).mul_add(*yj, *qj);
        }
    }
    let mut r: Vec<f64> = q.iter().map(|x| x * state.h_diag).collect();
    for i in 0..n {
        let be_i = dot(&state.old_dirs[i], &r) * state.ro[i];
        for (rj, sj) in r.iter_mut().zip(&state.old_stps[i]) {
            *rj = (al[i] - be_i).mul_add(*sj, *rj);
        }
    }
    r
}

/// The minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2, within
/// `bounds` (the interval between x1 and x2 if None); their midpoint if the cubic has none.
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// One point of the line search: step length, loss, gradient, and the gradient along d.
#[derive(Clone)]
struct Point {
    t: f64,
    f: f64,
    g: Vec<f64>,
    gtd: f64,
}

/// torch's `_strong_wolfe`, from the point (f, g, gᵀd) at t = 0 and a first trial step `t`,
/// with at most `max_ls` evaluations of `along(t)` past the first: returns the loss, gradient and
/// step length chosen and the number of evaluations made.
fn strong_wolfe(
    along: &mut dyn FnMut(f64) -> (f64, Vec<f64>),
    mut t: f64,
    d: &[f64],
    (f, g, gtd): (f64, &[f64], f64),
    tolerance_change: f64,
    max_ls: usize,
) -> (f64, Vec<f64>, f64, usize) {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    let d_norm = max_abs(d);
    let (f_new, g_new) = along(t);
    let mut evals = 1;
    let mut new = Point {
        t,
        gtd: dot(&g_new, d),
        f: f_new,
        g: g_new,
    };
    let mut prev = Point {
        t: 0.0,
        f,
        g: g.to_vec(),
        gtd,
    };
    let mut done = false;
    let mut ls_iter = 0;
    // The bracketing phase: find an interval that holds a point satisfying the conditions.
    let mut bracket: Vec<Point> = loop {
        if ls_iter >= max_ls {
            let start = Point {
                t: 0.0,
                f,
                g: g.to_vec(),
                gtd,
            };
            break vec![start, new];
        }
        if new.f > f + C1 * new.t * gtd || (ls_iter > 1 && new.f >= prev.f) {
            break vec![prev, new];
        }
        if new.gtd.abs() <= -C2 * gtd {
            done = true;
            break vec![new];
        }
        if new.gtd >= 0.0 {
            break vec![prev, new];
        }
        let min_step = new.t + 0.01 * (new.t - prev.t);
        let max_step = new.t * 10.0;
        t = cubic_interpolate(
            (prev.t, prev.f, prev.gtd),
            (new.t, new.f, new.gtd),
            Some((min_step, max_step)),
        );
        prev = new;
        let (f_new, g_new) = along(t);
        evals += 1;
        new = Point {
            t,
            gtd: dot(&g_new, d),
            f: f_new,
            g: g_new,
        };
        ls_iter += 1;
    };
    if done {
        let p = bracket.swap_remove(0);
        return (p.f, p.g, p.t, evals);
    }
    // The zoom phase: shrink the bracket by cubic interpolation, with safeguards.
    let mut insuf_progress = false;
    let (mut low, mut high) = if bracket[0].f <= bracket[1].f {
        (0, 1)
    } else {
        (1, 0)
    };
    while !done && ls_iter < max_ls {
        let (a, b) = (bracket[0].t, bracket[1].t);
        if (b - a).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate(
            (a, bracket[0].f, bracket[0].gtd),
            (b, bracket[1].f, bracket[1].gtd),
            None,
        );
        let (lo, hi) = (a.min(b), a.max(b));
        let eps = 0.1 * (hi - lo);
        if (hi - t).min(t - lo) < eps {
            if insuf_progress || t >= hi || t <= lo {
                t = if (t - hi).abs() < (t - lo).abs() {
                    hi - eps
                } else {
                    lo + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        let (f_new, g_new) = along(t);
        evals += 1;
        ls_iter += 1;
        let point = Point {
            t,
            gtd: dot(&g_new, d),
            f: f_new,
            g: g_new,
        };
        if point.f > f + C1 * t * gtd || point.f >= bracket[low].f {
            bracket[high] = point;
            (low, high) = if bracket[0].f <= bracket[1].f {
                (0, 1)
            } else {
                (1, 0)
            };
        } else {
            if point.gtd.abs() <= -C2 * gtd {
                done = true;
            } else if point.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = point;
        }
    }
    let p = bracket.swap_remove(low);
    (p.f, p.g, p.t, evals)
}
