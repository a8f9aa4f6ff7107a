//! Losses: cross-entropy, negative log-likelihood, mean squared error, and binary cross-entropy
//! on logits. Each is an engine op or a composition of them, reduced by the mean as PyTorch's
//! defaults; cross-entropy (against class indices or class probabilities) and nll also take
//! PyTorch's weights, ignore index, reductions and unbatched `[C]` or K-dimensional
//! `[N, C, d1, ...]` inputs.

use rewind_autograd::{concat, ClassIndex, CrossEntropyOptions, Float, Reduction, Tensor, Var};

/// Cross-entropy of logits [N, C] against class indices, averaged over the targets that are not
/// -100 (`F.cross_entropy`).
#[track_caller]
pub fn cross_entropy<'t, F: Float, T: ClassIndex>(logits: Var<'t, F>, targets: &[T]) -> Var<'t, F> {
    logits.cross_entropy(targets)
}

/// Cross-entropy with class weights, an ignore index, label smoothing and a reduction
/// (`F.cross_entropy(weight=, ignore_index=, reduction=, label_smoothing=)`); the math is at
/// [`Var::cross_entropy_with`].
#[track_caller]
pub fn cross_entropy_with<'t, F: Float, T: ClassIndex>(
    logits: Var<'t, F>,
    targets: &[T],
    options: CrossEntropyOptions<F>,
) -> Var<'t, F> {
    logits.cross_entropy_with(targets, options)
}

/// Cross-entropy of logits [N, C] against class probabilities of the same shape, averaged over
/// the N rows (`F.cross_entropy` given a floating-point target); unbatched `[C]` and
/// K-dimensional `[N, C, d1, ...]` logits too. The math is at [`Var::cross_entropy_probs_with`].
#[track_caller]
pub fn cross_entropy_probs<'t, F: Float>(logits: Var<'t, F>, target: Var<'t, F>) -> Var<'t, F> {
    logits.cross_entropy_probs(target)
}

/// Cross-entropy against class probabilities with class weights, label smoothing and a
/// reduction (`F.cross_entropy(weight=, reduction=, label_smoothing=)` given a floating-point
/// target; the mean divides by the rows, not the weights, as PyTorch's); the math is at
/// [`Var::cross_entropy_probs_with`].
#[track_caller]
pub fn cross_entropy_probs_with<'t, F: Float>(
    logits: Var<'t, F>,
    target: Var<'t, F>,
    options: CrossEntropyOptions<F>,
) -> Var<'t, F> {
    logits.cross_entropy_probs_with(target, options)
}

/// Options of [`nll_loss_with`]: the keywords of PyTorch's `F.nll_loss`, with its defaults (no
/// weights, ignore index -100, mean).
#[derive(Clone, Debug, PartialEq)]
pub struct NllOptions<F: Float = f32> {
    /// A weight per class, of shape `[C]`; `None` weighs every class 1. No gradient flows to it.
    pub weight: Option<Tensor<F>>,
    /// Targets equal to this do not count: their loss is 0 and their weight is left out of the
    /// mean's divisor.
    pub ignore_index: i64,
    /// Mean (the default), sum, or none (the loss of each target, `[N]`).
    pub reduction: Reduction,
}

impl<F: Float> Default for NllOptions<F> {
    fn default() -> Self {
        NllOptions {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }
}

/// Negative log-likelihood of log-probabilities [N, C]: -mean over counted rows of
/// `log_probs[n, target_n]`, skipping targets equal to -100 (`F.nll_loss`). Unbatched `[C]` and
/// K-dimensional `[N, C, d1, ...]` inputs too, as at [`nll_loss_with`].
#[track_caller]
pub fn nll_loss<'t, F: Float, T: ClassIndex>(log_probs: Var<'t, F>, targets: &[T]) -> Var<'t, F> {
    nll_loss_with(log_probs, targets, NllOptions::default())
}

/// Negative log-likelihood of log-probabilities [N, C] against class indices t `[N]` with
/// PyTorch's options ([`NllOptions`]): each target that counts has the loss
/// l_n = -w_(t_n)·log_probs[n, t_n] (w = 1 without weights), an ignored one 0. `Mean` is
/// Σ_n l_n / Σ_n w_(t_n) over the targets that count (0/0 = NaN when none does, as PyTorch);
/// `Sum` is Σ_n l_n; `None` returns l `[N]`. ∂l_n/∂log_probs[n, c] = -w_c·[c = t_n].
///
/// As PyTorch, the input may also be one unbatched sample `[C]` with one target (`None` gives a
/// 0-d loss), or K-dimensional [N, C, d1, ...] with a target per position of [N, d1, ...],
/// given flattened in row-major order: l at each position is -w_t·log_probs[n, t, d1, ...],
/// the mean runs over every position and `None` gives l `[N, d1, ...]`.
///
/// Panics, at the caller's line, unless there is one target per position, each a class index
/// or the ignore index, and the weights are `[C]`.
#[track_caller]
pub fn nll_loss_with<'t, F: Float, T: ClassIndex>(
    log_probs: Var<'t, F>,
    targets: &[T],
    options: NllOptions<F>,
) -> Var<'t, F> {
    let targets = &targets.iter().map(|t| t.class()).collect::<Vec<i64>>()[..];
    let shape = log_probs.shape();
    let axis = class_axis(&shape, targets, options.ignore_index);
    let classes = shape[axis];
    if let Some(w) = &options.weight {
        if w.shape() != [classes] {
            panic!(
                "nll_loss: expected class weights [C]: input {:?} vs weight {:?}",
                &shape[..],
                w.shape()
            );
        }
    }
    let w = |c: usize| options.weight.as_ref().map_or(F::ONE, |w| w.data()[c]);
    let total: f64 = targets
        .iter()
        .filter(|&&t| t != options.ignore_index)
        .map(|&t| w(t as usize).to_f64())
        .sum();
    let divisor = match options.reduction {
        Reduction::Mean => F::from_f64(total),
        Reduction::Sum | Reduction::None => F::ONE,
    };
    // The loss is -Σ log_probs ⊙ W, with W = w_t / divisor at each position's target class and
    // 0 elsewhere, summed along C or in all: its gradient is exactly -W. Position i of
    // [N, d1, ...] is (n, r) of [N, D], D = d1·..., and its class t sits at (n, t, r) of
    // [N, C, D].
    let inner: usize = shape[axis + 1..].iter().product();
    let mut picked = vec![F::ZERO; shape.iter().product()];
    for (i, &t) in targets.iter().enumerate() {
        if t != options.ignore_index {
            let (n, r) = (i / inner, i % inner);
            picked[(n * classes + t as usize) * inner + r] = w(t as usize) / divisor;
        }
    }
    let tape = log_probs.tape();
    let picked = tape.constant(Tensor::from_vec(picked, &shape).expect("one weight per element"));
    let terms = log_probs * picked;
    match options.reduction {
        Reduction::None => -terms.sum_axis(axis, false),
        Reduction::Sum => -terms.sum(),
        // With nothing counted, the mean is 0/0 = NaN and its gradient 0, as PyTorch's.
        Reduction::Mean if total == 0.0 => {
            -terms.sum() + tape.constant(Tensor::scalar(F::from_f64(f64::NAN)))
        }
        Reduction::Mean => -terms.sum(),
    }
}

/// The class axis of log-probabilities [C] (0), [N, C] or [N, C, d1, ...] (1), checked against
/// one target per position (the shape without C, flattened), each a class or the ignore index.
#[track_caller]
fn class_axis(shape: &[usize], targets: &[i64], ignore_index: i64) -> usize {
    let form = match shape.len() {
        0 => "log-probabilities [C], [N, C] or [N, C, d1, ...]",
        1 => "unbatched log-probabilities [C] and one target",
        2 => "log-probabilities [N, C] and N targets",
        _ => "log-probabilities [N, C, d1, ...] and N·d1·... targets",
    };
    let axis = shape.len().clamp(1, 2) - 1;
    let positions: Vec<usize> = (0..shape.len())
        .filter(|&d| d != axis)
        .map(|d| shape[d])
        .collect();
    let count = positions.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if shape.is_empty() || count != Some(targets.len()) {
        panic!(
            "nll_loss: expected {form}: input {shape:?} vs targets [{}]",
            targets.len()
        );
    }
    let classes = shape[axis];
    if let Some((i, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t != ignore_index && !(0..classes as i64).contains(&t))
    {
        let at = match shape.len() {
            1 => String::new(),
            2 => format!(" at row {i}"),
            _ => format!(" at {:?}", unravel(i, &positions)),
        };
        panic!("nll_loss: target {t}{at} out of range for {classes} classes");
    }
    axis
}

/// The index into `shape` of the `i`-th element in row-major order.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &size) in index.iter_mut().zip(shape).rev() {
        *slot = i % size;
        i /= size;
    }
    index
}

/// mean((input - target)²) (`F.mse_loss`).
#[track_caller]
pub fn mse_loss<'t, F: Float>(input: Var<'t, F>, target: Var<'t, F>) -> Var<'t, F> {
    (input - target).powf(F::from_f64(2.0)).mean()
}

/// Binary cross-entropy on logits x with targets y in [0, 1], averaged
/// (`F.binary_cross_entropy_with_logits`): -mean(y·log σ(x) + (1 - y)·log(1 - σ(x))).
///
/// log σ(x) and log(1 - σ(x)) are the log-softmax of the two logits [0, x], which is stable for
/// any x and smooth at 0 (a max(x, 0) - x·y + log(1 + e^-|x|) form has a kink there that gives a
/// wrong gradient at exactly x = 0).
#[track_caller]
pub fn bce_with_logits<'t, F: Float>(input: Var<'t, F>, target: Var<'t, F>) -> Var<'t, F> {
    let shape = input.shape();
    let tape = input.tape();
    let zeros = tape.constant(Tensor::zeros(&shape));
    let nd = shape.len();
    let pair = concat(&[zeros.unsqueeze(nd), input.unsqueeze(nd)], nd).log_softmax(nd as isize);
    let log_not = pair.narrow(nd, 0, 1).squeeze(nd);
    let log_yes = pair.narrow(nd, 1, 1).squeeze(nd);
    -(target * log_yes + (target.affine(-F::ONE, F::ONE)) * log_not).mean()
}
