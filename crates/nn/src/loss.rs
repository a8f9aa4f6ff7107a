//! Losses: cross-entropy, negative log-likelihood, mean squared error, and binary cross-entropy
//! on logits. Each is a composition of engine ops, reduced by the mean as PyTorch's defaults.

use rewind_autograd::{concat, Float, Tensor, Var};

/// Cross-entropy of logits [N, C] against class indices, averaged over the targets that are not
/// -100 (`F.cross_entropy`).
#[track_caller]
pub fn cross_entropy<'t, F: Float>(logits: Var<'t, F>, targets: &[i64]) -> Var<'t, F> {
    logits.cross_entropy(targets)
}

/// Negative log-likelihood of log-probabilities [N, C]: -mean over counted rows of
/// `log_probs[n, target_n]`, skipping targets equal to -100 (`F.nll_loss`).
#[track_caller]
pub fn nll_loss<'t, F: Float>(log_probs: Var<'t, F>, targets: &[i64]) -> Var<'t, F> {
    let shape = log_probs.shape();
    if shape.len() != 2 || shape[0] != targets.len() {
        panic!(
            "nll_loss: expected log-probabilities [N, C] and N targets: input {:?} vs targets [{}]",
            &shape[..],
            targets.len()
        );
    }
    let classes = shape[1];
    let counted = targets.iter().filter(|&&t| t != -100).count();
    // The loss is -Σ log_probs ⊙ W with W[n, t_n] = 1/count: its gradient is exactly -W.
    let mut weights = vec![F::ZERO; targets.len() * classes];
    for (n, &t) in targets.iter().enumerate() {
        if t == -100 {
            continue;
        }
        if !(0..classes as i64).contains(&t) {
            panic!("nll_loss: target {t} at row {n} out of range for {classes} classes");
        }
        weights[n * classes + t as usize] = F::ONE / F::from_usize(counted);
    }
    let w = log_probs
        .tape()
        .constant(Tensor::from_vec(weights, &shape).expect("N·C weights"));
    -(log_probs * w).sum()
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
