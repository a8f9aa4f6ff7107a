//! Losses: cross-entropy, negative log-likelihood, mean squared error, and binary cross-entropy
//! on logits. Each is an engine op or a composition of them, reduced by the mean as PyTorch's
//! defaults; cross-entropy and nll also take PyTorch's weights, ignore index and reductions.

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
/// `log_probs[n, target_n]`, skipping targets equal to -100 (`F.nll_loss`).
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
/// Panics, at the caller's line, unless the input is [N, C] with N targets, each a class index
/// or the ignore index, and the weights are `[C]`.
#[track_caller]
pub fn nll_loss_with<'t, F: Float, T: ClassIndex>(
    log_probs: Var<'t, F>,
    targets: &[T],
    options: NllOptions<F>,
) -> Var<'t, F> {
    let targets = &targets.iter().map(|t| t.class()).collect::<Vec<i64>>()[..];
    let shape = log_probs.shape();
    if shape.len() != 2 || shape[0] != targets.len() {
        panic!(
            "nll_loss: expected log-probabilities [N, C] and N targets: input {:?} vs targets [{}]",
            &shape[..],
            targets.len()
        );
    }
    let classes = shape[1];
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
    let mut total = 0.0f64;
    for (n, &t) in targets.iter().enumerate() {
        if t == options.ignore_index {
            continue;
        }
        if !(0..classes as i64).contains(&t) {
            panic!("nll_loss: target {t} at row {n} out of range for {classes} classes");
        }
        total += w(t as usize).to_f64();
    }
    let divisor = match options.reduction {
        Reduction::Mean => F::from_f64(total),
        Reduction::Sum | Reduction::None => F::ONE,
    };
    // The loss is -Σ log_probs ⊙ W, with W[n, t_n] = w_(t_n) / divisor and 0 elsewhere, summed
    // per row or in all: its gradient is exactly -W.
    let mut picked = vec![F::ZERO; targets.len() * classes];
    for (n, &t) in targets.iter().enumerate() {
        if t != options.ignore_index {
            picked[n * classes + t as usize] = w(t as usize) / divisor;
        }
    }
    let tape = log_probs.tape();
    let picked = tape.constant(Tensor::from_vec(picked, &shape).expect("N·C weights"));
    let terms = log_probs * picked;
    match options.reduction {
        Reduction::None => -terms.sum_axis(1, false),
        Reduction::Sum => -terms.sum(),
        // With nothing counted, the mean is 0/0 = NaN and its gradient 0, as PyTorch's.
        Reduction::Mean if total == 0.0 => {
            -terms.sum() + tape.constant(Tensor::scalar(F::from_f64(f64::NAN)))
        }
        Reduction::Mean => -terms.sum(),
    }
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
