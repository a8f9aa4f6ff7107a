//! The reductions along an axis or over everything: sum and mean, max, softmax and its log, and
//! cross-entropy, each with its derivative on tensors and recorded with tape ops.

use super::{Nodes, Sink};
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::activation;
use crate::kernels::axis as ax;
use crate::kernels::{pool, sum};
use crate::recycle;
use crate::shape::Shape;
use crate::tape::Var;
use crate::tensor::Tensor;

/// How a loss over many targets is reduced, as PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the targets that count (PyTorch's default); with class weights, the sum
    /// divided by the summed weights of the targets that count.
    #[default]
    Mean,
    /// The sum over the targets that count.
    Sum,
    /// No reduction: the loss of each target, of shape `[N]`, 0 where a target does not count.
    None,
}

/// A reduction.
#[derive(Clone)]
pub(crate) enum Reduce<F: Float> {
    /// `Σ x / divisor` over all elements (`axis: None`) or along one axis; `divisor` is 1 for a
    /// sum and n for a mean. The sum accumulates in f64.
    Sum {
        x: usize,
        axis: Option<usize>,
        keepdim: bool,
        divisor: F,
    },
    MaxAxis {
        x: usize,
        axis: usize,
        keepdim: bool,
        argmax: Vec<usize>,
    },
    Softmax {
        x: usize,
        axis: usize,
    },
    LogSoftmax {
        x: usize,
        axis: usize,
    },
    /// Cross-entropy of logits [N, C] against class targets, each row's loss weighted by its
    /// target's class weight and smoothed by `smoothing` (see `Var::cross_entropy_with`); rows
    /// whose target is `ignore` do not count. Reduced by `reduction`: for a mean or a sum, the
    /// sum (accumulated in f64) is divided by `divisor` (the summed weights, for a mean).
    CrossEntropy {
        logits: usize,
        targets: Vec<i64>,
        ignore: i64,
        weight: Option<Vec<F>>,
        smoothing: F,
        reduction: Reduction,
        divisor: F,
    },
}

/// `total / divisor` for a reduced loss: a mean over counted targets whose weights sum to 0 is
/// 0/0 = NaN whatever the smoothed total is, as in PyTorch (whose unsmoothed part is 0/0).
fn mean_of<F: Float>(total: f64, divisor: F) -> f64 {
    if divisor == F::ZERO {
        f64::NAN
    } else {
        total / divisor.to_f64()
    }
}

fn reduced_shape(shape: &[usize], axis: Option<usize>, keepdim: bool) -> Shape {
    match (axis, keepdim) {
        (None, false) => Shape::new(),
        (None, true) => shape.iter().map(|_| 1).collect(),
        (Some(a), true) => shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if d == a { 1 } else { n })
            .collect(),
        (Some(a), false) => shape
            .iter()
            .enumerate()
            .filter(|&(d, _)| d != a)
            .map(|(_, &n)| n)
            .collect(),
    }
}

/// `g` shaped to broadcast against the input of a reduction along `axis` (None: all axes) of a
/// value of rank `rank`: the reduced axes put back with size 1.
fn unreduce<'t, F: Float>(
    g: Var<'t, F>,
    axis: Option<usize>,
    keepdim: bool,
    rank: usize,
) -> Var<'t, F> {
    match (axis, keepdim) {
        (_, true) => g,
        (None, false) => g.reshape(&vec![1; rank]),
        (Some(a), false) => g.unsqueeze(a),
    }
}

impl<F: Float> Reduce<F> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Reduce::Sum { .. } => "sum",
            Reduce::MaxAxis { .. } => "max_axis",
            Reduce::Softmax { .. } => "softmax",
            Reduce::LogSoftmax { .. } => "log_softmax",
            Reduce::CrossEntropy { .. } => "cross_entropy",
        }
    }

    inputs_of!(|op| match op {
        Reduce::Sum { x, .. }
        | Reduce::MaxAxis { x, .. }
        | Reduce::Softmax { x, .. }
        | Reduce::LogSoftmax { x, .. }
        | Reduce::CrossEntropy { logits: x, .. } => [x].into_iter().collect(),
    });

    pub(crate) fn forward(&mut self, nodes: &Nodes<F>) -> Tensor<F> {
        let val = |i: usize| nodes[i].value();
        match self {
            Reduce::Sum {
                x,
                axis,
                keepdim,
                divisor,
            } => {
                let v = val(*x);
                let shape = reduced_shape(v.shape(), *axis, *keepdim);
                let data = match axis {
                    None => vec![F::from_f64(sum::sum(v.data()) / divisor.to_f64())],
                    Some(a) => ax::sum_axis(v.data(), v.shape(), *a, *divisor),
                };
                Tensor::new_unchecked(shape, data)
            }
            Reduce::MaxAxis {
                x,
                axis,
                keepdim,
                argmax,
            } => {
                let v = val(*x);
                let (data, arg) = ax::max_axis(v.data(), v.shape(), *axis);
                *argmax = arg;
                Tensor::new_unchecked(reduced_shape(v.shape(), Some(*axis), *keepdim), data)
            }
            Reduce::Softmax { x, axis } => {
                let v = val(*x);
                Tensor::new_unchecked(v.shape().into(), ax::softmax(v.data(), v.shape(), *axis))
            }
            Reduce::LogSoftmax { x, axis } => {
                let v = val(*x);
                Tensor::new_unchecked(
                    v.shape().into(),
                    ax::log_softmax(v.data(), v.shape(), *axis),
                )
            }
            Reduce::CrossEntropy {
                logits,
                targets,
                ignore,
                weight,
                smoothing,
                reduction,
                divisor,
            } => {
                let v = val(*logits);
                let classes = v.shape()[1];
                let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
                let eps = *smoothing;
                let row_loss = |n: usize, t: i64, buf: &mut [F]| {
                    if t == *ignore {
                        return 0.0;
                    }
                    let row = &v.data()[n * classes..(n + 1) * classes];
                    let (m, log_sum) = ax::max_and_log_sum(row, buf);
                    // -log p_c = log Σ e^(x - m) - (x_c - m)
                    let nll = |c: usize| log_sum - (row[c] - m);
                    let t = t as usize;
                    if eps == F::ZERO {
                        return (w(t) * nll(t)).to_f64();
                    }
                    let smooth = (0..classes).map(|c| (w(c) * nll(c)).to_f64()).sum::<f64>();
                    ((F::ONE - eps) * w(t) * nll(t)).to_f64()
                        + (eps / F::from_usize(classes)).to_f64() * smooth
                };
                // Each row's loss in bands across the threads, then summed in row order here, so
                // the total does not depend on the split.
                let mut losses = recycle::scratch(targets.len(), 0.0f64);
                pool::row_bands(
                    targets.len(),
                    2 * classes,
                    [&mut losses[..]],
                    |first, [band]| {
                        let mut buf = recycle::scratch(classes, F::ZERO);
                        for (i, loss) in band.iter_mut().enumerate() {
                            *loss = row_loss(first + i, targets[first + i], &mut buf);
                        }
                    },
                );
                match reduction {
                    Reduction::None => {
                        let losses: Vec<F> = losses.iter().map(|&l| F::from_f64(l)).collect();
                        Tensor::new_unchecked(Shape::from_slice(&[targets.len()]), losses)
                    }
                    Reduction::Mean | Reduction::Sum => {
                        let total: f64 = losses.iter().sum();
                        Tensor::scalar(F::from_f64(mean_of(total, *divisor)))
                    }
                }
            }
        }
    }

    /// Adds the input's gradient into `sink`, given `g` = ∂L/∂(node `me`'s value).
    pub(crate) fn backward(
        &self,
        me: usize,
        g: &Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let out = &nodes[me].shape;
        let gd = g.data();
        match self {
            // d(Σx / n) = dy / n broadcast back over the summed axis (divided, as PyTorch's mean).
            Reduce::Sum {
                x, axis, divisor, ..
            } => {
                let Some(gx) = sink.acc(*x) else { return };
                match axis {
                    None => {
                        let g = gd[0] / *divisor;
                        gx.iter_mut().for_each(|v| *v += g)
                    }
                    Some(a) => {
                        let (outer, len, inner) = crate::shape::split_at_axis(&nodes[*x].shape, *a);
                        for o in 0..outer {
                            for j in 0..len {
                                let dst = &mut gx[(o * len + j) * inner..][..inner];
                                for (d, &s) in dst.iter_mut().zip(&gd[o * inner..][..inner]) {
                                    *d += s / *divisor;
                                }
                            }
                        }
                    }
                }
            }
            // The gradient flows to the (first) maximum of each lane only.
            Reduce::MaxAxis { x, argmax, .. } => {
                if let Some(gx) = sink.acc(*x) {
                    for (&at, &g) in argmax.iter().zip(gd) {
                        gx[at] += g;
                    }
                }
            }
            // dx_j = y_j (g_j - Σ_k g_k y_k)
            Reduce::Softmax { x, axis } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::softmax_backward(nodes[me].value().data(), gd, out, *axis, gx);
                }
            }
            // dx_j = g_j - softmax_j Σ_k g_k
            Reduce::LogSoftmax { x, axis } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::log_softmax_backward(nodes[me].value().data(), gd, out, *axis, gx);
                }
            }
            // Per counted row, with p = softmax(x), w_t the target's weight and W = Σ_j w_j:
            // ∂l/∂x_c = (1 - ε)·w_t·(p_c - [c = t]) + (ε/C)·(W·p_c - w_c)
            //         = a·p_c - (1 - ε)·w_t·[c = t] - (ε/C)·w_c,  a = (1 - ε)·w_t + (ε/C)·W,
            // times the row's gradient: its own for `None`, else the output's over the divisor.
            Reduce::CrossEntropy {
                logits,
                targets,
                ignore,
                weight,
                smoothing,
                reduction,
                divisor,
            } => {
                let Some(gx) = sink.acc(*logits) else { return };
                let v = nodes[*logits].value();
                let classes = v.shape()[1];
                let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
                let spread = *smoothing / F::from_usize(classes);
                let all = match weight {
                    Some(w) => F::from_f64(sum::sum(w)),
                    None => F::from_usize(classes),
                };
                // Rows are independent: bands of them across the threads.
                let rows = targets.len();
                pool::row_bands(rows, 2 * classes, [gx], |first, [band]| {
                    let mut probs = recycle::scratch(classes, F::ZERO);
                    // (`max(1)`: with no classes the band is empty, and so is the loop.)
                    for (i, dst) in band.chunks_exact_mut(classes.max(1)).enumerate() {
                        let n = first + i;
                        let t = targets[n];
                        if t == *ignore {
                            continue;
                        }
                        let scale = match reduction {
                            Reduction::None => gd[n],
                            Reduction::Mean | Reduction::Sum => {
                                F::from_f64(mean_of(gd[0].to_f64(), *divisor))
                            }
                        };
                        let (t, row) = (t as usize, &v.data()[n * classes..(n + 1) * classes]);
                        let (m, log_sum) = ax::max_and_log_sum(row, &mut probs);
                        // p = e^{(z - m) - ln Σ}, rounded as the log-probability then its exp.
                        for (p, &z) in probs.iter_mut().zip(row) {
                            *p = (z - m) - log_sum;
                        }
                        activation::exp_in_place(&mut probs);
                        let hit = (F::ONE - *smoothing) * w(t);
                        let a = hit + spread * all;
                        for (c, (d, &p)) in dst.iter_mut().zip(probs.iter()).enumerate() {
                            let target = if c == t { hit } else { F::ZERO };
                            *d += scale * (a * p - target - spread * w(c));
                        }
                    }
                });
            }
        }
    }

    /// [`backward`](Reduce::backward)'s equations recorded with tape ops.
    pub(crate) fn derivative<'t>(&self, sink: &mut GraphSink<'t, F>, me: usize, g: Var<'t, F>) {
        let tape = sink.tape();
        match self {
            // dy / n broadcast back over the summed axes.
            Reduce::Sum {
                x,
                axis,
                keepdim,
                divisor,
            } => {
                let shape = tape.shape(*x);
                let mut dx = unreduce(g, *axis, *keepdim, shape.len()).broadcast_to(&shape);
                if *divisor != F::ONE {
                    dx = dx / sink.scalar(*divisor);
                }
                sink.add(*x, dx);
            }
            // To the (first) maximum of each lane, chosen by a constant mask.
            Reduce::MaxAxis {
                x,
                axis,
                keepdim,
                argmax,
            } => {
                let shape = tape.shape(*x);
                let mut chosen = Tensor::zeros(&shape);
                argmax.iter().for_each(|&at| chosen.data_mut()[at] = F::ONE);
                let gk = unreduce(g, Some(*axis), *keepdim, shape.len());
                sink.add(*x, gk.where_cond(&chosen, sink.scalar(F::ZERO)));
            }
            // dx = y ⊙ (g - Σ g ⊙ y)
            Reduce::Softmax { x, axis } => {
                let y = sink.var(me);
                sink.add(*x, y * (g - (g * y).sum_axis(*axis, true)));
            }
            // dx = g - softmax(x)·Σ g, softmax(x) = e^y
            Reduce::LogSoftmax { x, axis } => {
                let y = sink.var(me);
                sink.add(*x, g - y.exp() * g.sum_axis(*axis, true));
            }
            // Per counted row n with target t: ∂l/∂x_c = a_n·p_c - k_nc with
            // a_n = (1 - ε)·w_t + (ε/C)·W and k_nc = (1 - ε)·w_t·[c = t] + (ε/C)·w_c (both zero on
            // an ignored row), times the row's gradient. a and k are constants; p and the row's
            // gradient are Vars.
            Reduce::CrossEntropy {
                logits,
                targets,
                ignore,
                weight,
                smoothing,
                reduction,
                divisor,
            } => {
                let x = sink.var(*logits);
                let (rows, classes) = (x.shape()[0], x.shape()[1]);
                let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
                let spread = *smoothing / F::from_usize(classes);
                let all = (0..classes).fold(F::ZERO, |s, c| s + w(c));
                let mut a = Tensor::zeros(&[rows, 1]);
                let mut k = Tensor::zeros(&[rows, classes]);
                for (n, &t) in targets.iter().enumerate() {
                    if t == *ignore {
                        continue;
                    }
                    let hit = (F::ONE - *smoothing) * w(t as usize);
                    a.data_mut()[n] = hit + spread * all;
                    let row = &mut k.data_mut()[n * classes..(n + 1) * classes];
                    for (c, kc) in row.iter_mut().enumerate() {
                        *kc = spread * w(c) + if c == t as usize { hit } else { F::ZERO };
                    }
                }
                let scale = match reduction {
                    Reduction::None => g.reshape(&[rows, 1]),
                    // 0/0 = NaN on the counted rows, as the forward, and nothing on ignored ones.
                    Reduction::Mean if *divisor == F::ZERO => {
                        let counted = targets.iter().map(|&t| match t == *ignore {
                            true => F::ZERO,
                            false => F::from_f64(f64::NAN),
                        });
                        let nan =
                            Tensor::new_unchecked(Shape::from_slice(&[rows, 1]), counted.collect());
                        g.reshape(&[1, 1]) * tape.constant(nan)
                    }
                    Reduction::Mean | Reduction::Sum => {
                        (g / sink.scalar(*divisor)).reshape(&[1, 1])
                    }
                };
                let (a, k) = (tape.constant(a), tape.constant(k));
                sink.add(*logits, scale * (a * x.softmax(1) - k));
            }
        }
    }
}
