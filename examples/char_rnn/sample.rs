//! Sampling: feed a priming text, then draw each next character from the model's softmax, with
//! a temperature and an optional top-k filter.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use std::path::Path;

use rewind::autograd::Tape;
use rewind::nn::{Carry, Module, Run};

use super::checkpoint::{self, Saved};
use super::cli::{human, Hyper, SampleConfig};
use super::data::Corpus;
use super::memory;
use super::model::{priming_bytes, sampling_bytes, CharModel};
use super::output::Output;
use super::train::restore_model;
use super::Error;

/// `sample`: loads the checkpoint and prints what the model writes after `--prime`.
pub fn run(c: &SampleConfig) -> Result<String, Error> {
    let (saved, model) = load_model(&c.checkpoint)?;
    check_len(c.len, &saved.vocab)?;
    let mut rng = StdRng::seed_from_u64(c.seed);
    let prime = c
        .prime
        .clone()
        .unwrap_or_else(|| match saved.vocab.contains(&'\n') {
            true => "\n".into(),
            false => saved.vocab[0].to_string(),
        });
    check_fed("--prime", &saved.hyper, &saved.vocab, &prime)?;
    let text = generate(
        &model,
        &saved.vocab,
        &prime,
        c.len,
        c.temperature,
        c.top_k,
        &mut rng,
    )
    .map_err(|e| match e {
        Error::Checkpoint(m) => Error::Checkpoint(format!("{}: {m}", c.checkpoint.display())),
        e => e,
    })?;
    let mut out = Output::default();
    out.line(format_args!("{prime}{text}"));
    match out.failed() {
        Some(e) => Err(Error::Output(format!(
            "cannot write the sample to standard output: {e}"
        ))),
        None => Ok(text),
    }
}

/// The checkpoint at `path` and its model, ready to read text: what `sample`, `eval` and
/// `connectivity` start from. Its vocabulary, settings (including that the model fits in
/// memory) and weights are checked before the model is used.
pub fn load_model(path: &Path) -> Result<(Saved, CharModel), Error> {
    let saved = checkpoint::load(path)?;
    check_vocab(&saved.vocab, path)?;
    saved
        .hyper
        .check(saved.vocab.len())
        .map_err(|b| b.in_checkpoint(path))?;
    // With --ema, the average: the weights the run evaluated.
    let model = restore_model(&saved.hyper, &saved.vocab, saved.scored_weights(), path)?;
    check_finite(&model, path)?;
    Ok((saved, model))
}

/// A vocabulary as char_rnn writes it: not empty, sorted, each character once (tokens are
/// found by binary search).
fn check_vocab(vocab: &[char], path: &Path) -> Result<(), Error> {
    let bad = |what: String| {
        Err(Error::Checkpoint(format!(
            "{}: the vocabulary {what}; char_rnn writes it sorted, each character once",
            path.display()
        )))
    };
    if vocab.is_empty() {
        return bad("is empty".into());
    }
    match vocab.windows(2).position(|w| w[0] >= w[1]) {
        Some(i) => bad(format!(
            "has {:?} before {:?} at position {}",
            vocab[i],
            vocab[i + 1],
            i + 1
        )),
        None => Ok(()),
    }
}

/// Refuses a `--len` whose text would not fit in memory (up to 4 bytes a character).
fn check_len(len: usize, vocab: &[char]) -> Result<(), Error> {
    let (limit, source) = memory::limit();
    let widest = vocab.iter().map(|c| c.len_utf8()).max().unwrap_or(1);
    let bytes = len.checked_mul(widest).map(|b| b as u64);
    if bytes.is_some_and(|b| b <= limit) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--len {len} needs {} of memory for the text, but at most {} is available ({source})",
        amount(bytes),
        human(limit)
    )))
}

/// "about N" for a size that was computed, "more than the most" for one that overflowed.
fn amount(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("about {}", human(b)),
        None => format!("more than {}", human(u64::MAX)),
    }
}

/// Refuses a text fed to the model in one call (`flag`'s value, as `--prime`) whose steps, all
/// recorded on one tape, would not fit in memory beside the model.
pub fn check_fed(flag: &str, h: &Hyper, vocab: &[char], text: &str) -> Result<(), Error> {
    let (limit, source) = memory::limit();
    let chars = text.chars().count();
    let bytes = priming_bytes(h, vocab.len(), chars)
        .and_then(|p| p.checked_add(sampling_bytes(h, vocab.len())?));
    if bytes.is_some_and(|b| b <= limit) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{flag} of {chars} characters needs {} of memory with the model (every step of it is recorded on one tape), but at most {} is available ({source}); use a shorter {}",
        amount(bytes),
        human(limit),
        flag.trim_start_matches('-')
    )))
}

/// Refuses weights that are NaN or infinite: they sample noise.
fn check_finite(model: &CharModel, path: &Path) -> Result<(), Error> {
    for (name, p) in model.params() {
        if let Some(i) = p.value().data().iter().position(|x| !x.is_finite()) {
            return Err(Error::Checkpoint(format!(
                "{}: {name} holds {} at index {i}: the weights are damaged or come from a diverged run",
                path.display(),
                p.value().data()[i]
            )));
        }
    }
    Ok(())
}

/// `len` characters following `prime`.
pub fn generate(
    model: &CharModel,
    vocab: &[char],
    prime: &str,
    len: usize,
    temperature: f64,
    top_k: Option<usize>,
    rng: &mut StdRng,
) -> Result<String, Error> {
    let tokens = Corpus::encode(vocab, prime).map_err(|c| {
        Error::Usage(format!(
            "--prime contains {c:?}, which is not in the checkpoint's vocabulary of {} characters",
            vocab.len()
        ))
    })?;
    model.set_training(false);
    let mut carry: Carry = model.zero_carry(1);
    let mut input = tokens;
    let mut out = String::new();
    for step in 1..=len {
        let tape = Tape::new();
        let (logits, state) = model.logits(
            &tape,
            &input,
            input.len(),
            1,
            carry.on(&tape),
            &Run::default(),
        );
        carry = Carry::of(state);
        let v = vocab.len();
        let all = logits.value();
        let last = &all.data()[(input.len() - 1) * v..];
        // Finite weights can still overflow f32 on the way; a draw from such logits is no sample.
        if let Some(i) = last.iter().position(|x| !x.is_finite()) {
            model.set_training(true);
            return Err(Error::Checkpoint(format!(
                "the logits at step {step} of {len} are not finite ({} for {:?}): the weights are finite but too large, and overflow f32",
                last[i], vocab[i]
            )));
        }
        let next = draw(last, temperature, top_k, rng);
        out.push(vocab[next]);
        input = vec![next];
    }
    model.set_training(true);
    Ok(out)
}

/// An index drawn from softmax(logits / temperature), among the `top_k` largest if given.
fn draw(logits: &[f32], temperature: f64, top_k: Option<usize>, rng: &mut StdRng) -> usize {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(top_k.unwrap_or(logits.len()).min(logits.len()));
    let best = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - best) / temperature).exp())
        .collect();
    let mut pick = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        pick -= w;
        if pick <= 0.0 {
            return i;
        }
    }
    order[order.len() - 1]
}
