//! `eval`: a checkpoint's cross-entropy on the held-out text as training measures it (the static
//! figure) and, with `--dynamic`, as dynamic evaluation measures it (Krause et al., 2018): the
//! text read once as one sequence, each segment scored with the weights of the moment and then
//! learnt from, the weights drawn back toward the trained ones.

use std::path::Path;
use std::time::{Duration, Instant};

use rewind::autograd::{CrossEntropyOptions, Grads, Reduction, Tape, Tensor};
use rewind::nn::{Carry, Module, Run, Stream, Tokens};

use super::cli::{number, DynRule, DynamicConfig, EvalConfig};
use super::data::Corpus;
use super::model::CharModel;
use super::output::Output;
use super::sample::load_model;
use super::train::evaluate;
use super::Error;

/// ε of the RMS rule, Krause et al.'s (their code's default).
const RMS_EPS: f32 = 2e-5;

/// Lanes of the training text the RMS rule's mean squared gradients are gathered in.
const MS_LANES: usize = 32;

/// Segments of `MS_LANES` lanes the mean squared gradients are averaged over: 200 segments of
/// 20 characters read 128,000 training characters, as many as the held-out tenth of
/// tinyshakespeare has, from 32 places across the text.
const MS_SEGMENTS: usize = 200;

/// How often a long evaluation says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `eval`'s figures, in nats per character.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    /// Characters of the held-out text after its first: those the one-sequence readings score
    /// (the static figure's lanes leave out each lane's first and the remainder).
    pub chars: usize,
    /// The static figure: the mean as training's [`evaluate`] measures it, in the checkpoint's
    /// lanes and chunk length, the weights fixed.
    pub static_loss: f64,
    /// With `--dynamic`, the dynamic figure and what it is measured against.
    pub dynamic: Option<DynamicScores>,
}

/// Dynamic evaluation's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicScores {
    /// The text read as one sequence in segments, the weights fixed.
    pub unadapted: Halves,
    /// The same reading, each segment learnt from once it is scored.
    pub adapted: Halves,
}

/// A mean over the characters scored, and over the second half of them alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Halves {
    /// Every character.
    pub all: f64,
    /// The second half.
    pub second_half: f64,
}

impl Halves {
    fn of(losses: &[f64]) -> Self {
        let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
        Halves {
            all: mean(losses),
            second_half: mean(&losses[losses.len() / 2..]),
        }
    }
}

/// Runs an `eval` command and prints its figures.
pub fn run(c: &EvalConfig) -> Result<Scores, Error> {
    let (saved, model) = load_model(&c.checkpoint)?;
    let corpus = Corpus::load(c.data.as_deref())?;
    let ids = checkpoint_ids(&corpus, &saved.vocab, &c.checkpoint)?;
    if saved.text_hash.is_some_and(|h| h != corpus.hash) {
        super::tell(
            "note",
            &format!(
                "{} was trained on another text than {}: its held-out tenth may be text the model learnt",
                c.checkpoint.display(),
                corpus.source
            ),
        );
    }
    let mut val = in_checkpoint_ids(&corpus.val, &ids, saved.vocab.len());
    if let Some(limit) = c.limit {
        val.split_off(limit.min(val.len()));
    }
    if val.len() < 2 {
        return Err(Error::Data(format!(
            "the held-out tenth of {} has {} characters: scoring needs at least 2",
            corpus.source,
            val.len()
        )));
    }
    let mut out = Output::default();
    out.line(format_args!(
        "scoring {} characters{} of the last 10% of {} with {} (step {}{})",
        val.len() - 1,
        match c.limit {
            Some(_) => " (the first, by --limit)",
            None => "",
        },
        corpus.source,
        c.checkpoint.display(),
        saved.progress.step,
        match saved.average {
            Some(_) => format!("; the weights' average, decay {}", saved.hyper.ema),
            None => String::new(),
        }
    ));
    let h = &saved.hyper;
    let static_loss = evaluate(&model, &val, h.batch, h.seq_len);
    let lanes = match h.batch.min(val.len() / 2).max(1) {
        1 => "one lane".to_string(),
        n => format!("{n} lanes"),
    };
    out.line(format_args!(
        "static     {static_loss:.4} nats/char (perplexity {:.2}): as training measures it, {lanes} read in chunks of {}",
        static_loss.exp(),
        h.seq_len
    ));
    let dynamic = c.dynamic.as_ref().map(|d| {
        // The RMS rule's statistics come from the training part, in the checkpoint's tokens.
        let train = || in_checkpoint_ids(&corpus.train, &ids, saved.vocab.len());
        score_dynamic(&model, &val, train, d, &mut out)
    });
    match out.failed() {
        Some(e) => Err(Error::Output(format!(
            "cannot write the figures to standard output: {e}"
        ))),
        None => Ok(Scores {
            chars: val.len() - 1,
            static_loss,
            dynamic,
        }),
    }
}

/// The one-sequence readings of `val`, unadapted then adapted by `d`, each printed as it is
/// measured.
fn score_dynamic(
    model: &CharModel,
    val: &Tokens,
    train: impl FnOnce() -> Tokens,
    d: &DynamicConfig,
    out: &mut Output,
) -> DynamicScores {
    let tokens: Vec<usize> = (0..val.len()).map(|i| val.get(i)).collect();
    let unadapted = Halves::of(&sequence_losses(model, &tokens, d.segment));
    out.line(format_args!(
        "unadapted  {:.4} nats/char (second half {:.4}): one sequence in segments of {}, the weights fixed",
        unadapted.all, unadapted.second_half, d.segment
    ));
    let started = Instant::now();
    let adapt = match d.rule {
        DynRule::Sgd => Adapt::sgd(d),
        DynRule::Rms => Adapt::rms(d, &gradient_rms(model, &train(), d.segment)),
    };
    let adapted = Halves::of(&dynamic_losses(model, &tokens, &adapt));
    out.line(format_args!(
        "dynamic    {:.4} nats/char (second half {:.4}): the same, each segment learnt from once scored (--rule {}, --dyn-lr {}, --dyn-decay {}; {:.1} s)",
        adapted.all,
        adapted.second_half,
        match d.rule {
            DynRule::Sgd => "sgd",
            DynRule::Rms => "rms",
        },
        number(d.lr),
        number(d.decay),
        started.elapsed().as_secs_f64()
    ));
    DynamicScores { unadapted, adapted }
}

/// For each token of the corpus's vocabulary, its token in the checkpoint's; an error names the
/// first character the checkpoint has no token for.
fn checkpoint_ids(corpus: &Corpus, vocab: &[char], path: &Path) -> Result<Vec<usize>, Error> {
    corpus
        .vocab
        .iter()
        .map(|c| {
            vocab.binary_search(c).map_err(|_| {
                Error::Data(format!(
                    "{} contains {c:?}, which is not in the vocabulary of {} ({} characters): the model cannot score it",
                    corpus.source,
                    path.display(),
                    vocab.len()
                ))
            })
        })
        .collect()
}

fn in_checkpoint_ids(tokens: &Tokens, ids: &[usize], vocab: usize) -> Tokens {
    let mut mapped = Tokens::for_vocab(vocab, tokens.len());
    for i in 0..tokens.len() {
        mapped.push(ids[tokens.get(i)]);
    }
    mapped
}

/// Dynamic evaluation's update of every parameter after a segment is scored,
///
/// ```text
/// θ ← θ - η·a⊙g + λ·b⊙(θ₀ - θ)
/// ```
///
/// g the gradient of the segment's mean loss and θ₀ the trained weights; for the SGD rule
/// a = b = 1, for the RMS rule a = 1/(√MS + ε) and b = min(√MS / mean √MS, 1/λ), MS each
/// weight's mean squared gradient on training text and the mean taken over every weight.
pub struct Adapt {
    /// Characters per segment.
    pub segment: usize,
    /// η.
    pub lr: f32,
    /// λ.
    pub decay: f32,
    /// Per parameter, in [`Module::params`] order, a and b; `None` for SGD.
    scales: Option<Vec<(Vec<f32>, Vec<f32>)>>,
}

impl Adapt {
    /// The SGD rule.
    pub fn sgd(d: &DynamicConfig) -> Self {
        Adapt {
            segment: d.segment,
            lr: d.lr as f32,
            decay: d.decay as f32,
            scales: None,
        }
    }

    /// The RMS rule, from each parameter's √MS ([`gradient_rms`]).
    pub fn rms(d: &DynamicConfig, rms: &[Tensor]) -> Self {
        let all: f64 = rms.iter().flat_map(|t| t.data()).map(|&r| r as f64).sum();
        let count: usize = rms.iter().map(Tensor::numel).sum();
        let mean = (all / count as f64) as f32;
        let most = (1.0 / d.decay) as f32;
        let scales = rms
            .iter()
            .map(|t| {
                let a = t.data().iter().map(|&r| 1.0 / (r + RMS_EPS)).collect();
                let b = t.data().iter().map(|&r| (r / mean).min(most)).collect();
                (a, b)
            })
            .collect();
        Adapt {
            scales: Some(scales),
            ..Adapt::sgd(d)
        }
    }

    /// One update of `model`'s weights from `grads`, toward `trained`.
    fn apply(&self, model: &CharModel, grads: &Grads, trained: &[Tensor]) {
        let (lr, decay) = (self.lr, self.decay);
        for (i, ((_, p), theta0)) in model.params().into_iter().zip(trained).enumerate() {
            // Without a gradient a parameter has never moved: there is nothing to decay.
            let Some(g) = grads.get(p) else {
                continue;
            };
            p.update(|theta| {
                let (theta, g, theta0) = (theta.data_mut(), g.data(), theta0.data());
                match &self.scales {
                    None => {
                        for j in 0..theta.len() {
                            theta[j] += -lr * g[j] + decay * (theta0[j] - theta[j]);
                        }
                    }
                    Some(scales) => {
                        let (a, b) = (&scales[i].0, &scales[i].1);
                        for j in 0..theta.len() {
                            theta[j] += -lr * a[j] * g[j] + decay * b[j] * (theta0[j] - theta[j]);
                        }
                    }
                }
            });
        }
    }
}

/// Each parameter's √MS, the root of its mean squared gradient on `train`: the gradient of the
/// mean loss of [`MS_SEGMENTS`] segments of `segment` characters in [`MS_LANES`] lanes, the state
/// carried, in evaluation mode.
pub fn gradient_rms(model: &CharModel, train: &Tokens, segment: usize) -> Vec<Tensor> {
    let lanes = MS_LANES.min(train.len() / (segment + 1)).max(1);
    let mut stream = Stream::new(train.clone(), lanes);
    let mut carry = model.zero_carry(lanes);
    let params = model.params();
    let mut sums: Vec<Vec<f64>> = params
        .iter()
        .map(|(_, p)| vec![0.0; p.value().numel()])
        .collect();
    let mut segments = 0;
    model.set_training(false);
    while segments < MS_SEGMENTS {
        let Some(chunk) = stream.take(segment) else {
            break;
        };
        let tape = Tape::new();
        let (loss, state) = model.loss(&tape, &chunk, carry.on(&tape), &Run::default());
        carry = Carry::of(state);
        let grads = loss.mean().backward();
        for ((_, p), sum) in params.iter().zip(&mut sums) {
            if let Some(g) = grads.get(p) {
                for (s, &g) in sum.iter_mut().zip(g.data()) {
                    *s += g as f64 * g as f64;
                }
            }
        }
        segments += 1;
    }
    model.set_training(true);
    params
        .iter()
        .zip(sums)
        .map(|((_, p), sum)| {
            let rms = sum
                .iter()
                .map(|s| (s / segments as f64).sqrt() as f32)
                .collect();
            Tensor::from_vec(rms, &p.shape()).expect("one value per weight")
        })
        .collect()
}

/// The loss of each character of `tokens` after the first, in nats, the text read as one
/// sequence in segments of `segment` characters, the state carried and the weights fixed.
pub fn sequence_losses(model: &CharModel, tokens: &[usize], segment: usize) -> Vec<f64> {
    read(model, tokens, segment, None)
}

/// The loss of each character of `tokens` after the first, in nats, under dynamic evaluation:
/// the text read as one sequence in segments, the state carried; each segment is scored with
/// the weights of the moment, then its mean loss's gradient (truncated at the segment, the
/// state detached) updates them by `adapt`. The model's weights are the trained ones again
/// when it returns.
pub fn dynamic_losses(model: &CharModel, tokens: &[usize], adapt: &Adapt) -> Vec<f64> {
    read(model, tokens, adapt.segment, Some(adapt))
}

fn read(model: &CharModel, tokens: &[usize], segment: usize, adapt: Option<&Adapt>) -> Vec<f64> {
    let trained: Vec<Tensor> = model.params().iter().map(|(_, p)| p.value()).collect();
    let mut stream = Stream::new(tokens.to_vec(), 1);
    let mut carry = model.zero_carry(1);
    let mut losses = Vec::with_capacity(stream.steps());
    let mut said = Instant::now();
    model.set_training(false);
    while let Some(chunk) = stream.take(segment) {
        let tape = Tape::new();
        let (logits, state) = model.logits(
            &tape,
            &chunk.inputs,
            chunk.steps,
            1,
            carry.on(&tape),
            &Run::default(),
        );
        carry = Carry::of(state);
        let each = logits.cross_entropy_with(
            &chunk.targets,
            CrossEntropyOptions {
                reduction: Reduction::None,
                ..Default::default()
            },
        );
        // Scored before anything is learnt from it.
        losses.extend(each.value().data().iter().map(|&l| l as f64));
        if let Some(adapt) = adapt {
            adapt.apply(model, &each.mean().backward(), &trained);
        }
        if said.elapsed() >= PROGRESS_EVERY {
            said = Instant::now();
            let so_far = losses.iter().sum::<f64>() / losses.len() as f64;
            super::tell(
                "note",
                &format!(
                    "{}: {} of {} characters, {so_far:.4} nats/char so far",
                    match adapt {
                        Some(_) => "dynamic evaluation",
                        None => "unadapted reading",
                    },
                    losses.len(),
                    stream.steps()
                ),
            );
        }
    }
    model.set_training(true);
    for ((_, p), theta0) in model.params().into_iter().zip(trained) {
        p.set(theta0);
    }
    losses
}
