//! `train`: the loop. Reads the text as a stream in `--batch` lanes, runs the BPTT driver, clips,
//! steps the optimizer, reports progress, records metrics, evaluates, samples and saves; resumes
//! exactly from a checkpoint; saves and stops on Ctrl-C, SIGTERM or SIGHUP, or when standard
//! output or the records fail.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::{
    load_state_dict, param_grad_norms, Bptt, Carry, ModelState, Module, Run, Strategy, Stream,
    Tokens,
};
use rewind::optim::{
    clip_grad_norm, grad_norm, Adagrad, Adam, Optimizer, RmsProp, Sgd, WeightAverage,
};

use super::checkpoint::{self, Progress, SaveParts};
use super::cli::{
    default_shards, number, BpttKind, Hyper, Limit, OptimKind, ScheduleKind, TrainConfig,
};
use super::data::Corpus;
use super::lock::{self, Lock};
use super::metrics::{Records, Row};
use super::model::CharModel;
use super::output::Output;
use super::ranks::Ranks;
use super::sample::generate;
use super::signals;
use super::{Error, Outcome};

/// Runs a training command.
pub fn run(c: &TrainConfig) -> Result<Outcome, Error> {
    // A symlink is followed once, here: the run reads, locks and writes the file it names, and
    // the link keeps naming it.
    let c = TrainConfig {
        checkpoint: c.checkpoint.as_deref().map(lock::resolve).transpose()?,
        resume: c.resume.as_deref().map(lock::resolve).transpose()?,
        ..c.clone()
    };
    // Held until the run returns: no other run writes this path meanwhile. Without
    // --checkpoint, the first free default name is claimed atomically, so two bare runs started
    // together get two files.
    let ranks = Ranks::start(c.mpi)?;
    // Only rank 0 writes, so only it holds the lock; the other ranks never write the path.
    let claimed = match (&c.checkpoint, ranks.lead()) {
        (Some(path), true) => Lock::claim(path).map(|lock| (path.clone(), Some(lock))),
        (None, true) => Lock::claim_default(Path::new("")).map(|(path, lock)| (path, Some(lock))),
        (Some(path), false) => Ok((path.clone(), None)),
        (None, false) => Ok((Path::new("char_rnn.safetensors").to_path_buf(), None)),
    };
    let outcome = claimed.and_then(|(path, _lock)| train(&c, &path, &ranks));
    if let (Err(e), true) = (&outcome, ranks.size() > 1) {
        // The other ranks may be waiting for this one: stop them all, after saying why.
        super::tell("error", &format!("rank {}: {e}", ranks.rank()));
        ranks.abort_all(1);
    }
    outcome
}

/// The run itself, on the checkpoint path it holds (rank 0) or reads (the other ranks).
fn train(c: &TrainConfig, checkpoint_path: &Path, ranks: &Ranks) -> Result<Outcome, Error> {
    let mut out = match ranks.lead() {
        true => Output::default(),
        false => Output::quiet(),
    };
    let corpus = Corpus::load(c.data.as_deref())?;
    let resumed = c.resume.as_deref().map(checkpoint::load).transpose()?;
    let hyper = match &resumed {
        Some(saved) => agree(c, &saved.hyper)?,
        None => c.hyper.clone(),
    };
    hyper
        .check_training(corpus.vocab.len(), corpus.held_bytes())
        .map_err(|b| match c.resume.as_deref() {
            Some(path) => b.in_checkpoint(path),
            None => b.as_flag(),
        })?;
    corpus.check_length(hyper.batch, hyper.seq_len)?;
    ranks.check_batch(hyper.batch)?;
    let mine = ranks.lanes(hyper.batch);
    // However each is spelled (`runs/../runs/c.safetensors`, a link's file).
    let resuming_here = c
        .resume
        .as_deref()
        .is_some_and(|r| same_file(r, checkpoint_path));
    // Anything at the path counts, whatever its type: the save would replace it.
    let exists = fs::symlink_metadata(checkpoint_path).is_ok();
    if exists && !resuming_here && !c.overwrite && ranks.lead() {
        return Err(Error::Checkpoint(format!(
            "{} exists: pass --resume {0} to continue it, --overwrite to replace it, or another --checkpoint path",
            checkpoint_path.display()
        )));
    }

    // Said when the run starts; a resumed run cannot change its --dropout.
    if hyper.dropout > 0.0 && hyper.layers == 1 && resumed.is_none() && ranks.lead() {
        super::tell("warning", &format!(
            "--dropout {} does nothing with one layer: it sits between layers, as in PyTorch's LSTM; --input-dropout and --head-dropout drop the first layer's input and the readout's",
            hyper.dropout
        ));
    }
    let mut rng = StdRng::seed_from_u64(hyper.seed);
    let mut model = CharModel::new(&hyper, corpus.vocab.len(), &mut rng);
    let mut optimizer = make_optimizer(&hyper);
    // With --ema, the weights' average, and a model of the same shape to evaluate it with.
    let mut average = (hyper.ema > 0.0).then(|| WeightAverage::ema(hyper.ema));
    let scored_model = average
        .is_some()
        .then(|| CharModel::new(&hyper, corpus.vocab.len(), &mut StdRng::seed_from_u64(0)));
    let mut stream = Stream::new(corpus.train.clone(), hyper.batch).select_lanes(mine.clone());
    let mut driver = Bptt::new(strategy(&hyper), model.zero_carry(mine.len()), hyper.seed);
    let mut progress = Progress {
        step: 0,
        position: 0,
        epoch: 0,
    };
    if let (Some(mut saved), Some(path)) = (resumed, c.resume.as_deref()) {
        if saved.vocab != corpus.vocab {
            return Err(Error::Checkpoint(format!(
                "{} was trained on a vocabulary of {} characters, but {} has {}: resume with the same --data",
                path.display(),
                saved.vocab.len(),
                corpus.source,
                corpus.vocab.len()
            )));
        }
        // Fine-tuning on a new text is a use, so a different text is said, not refused.
        match saved.text_hash {
            Some(h) if h != corpus.hash => super::tell("warning", &format!(
                "{} was trained on another text than {} (same {} characters; text hash {h:016x} then, {:016x} now): training goes on with this text from the saved position",
                path.display(),
                corpus.source,
                corpus.vocab.len(),
                corpus.hash
            )),
            Some(_) => {}
            None => super::tell("note", &format!(
                "{} has no hash of its text (it predates them): whether {} is the text it was trained on cannot be told",
                path.display(),
                corpus.source
            )),
        }
        model = restore_model(&hyper, &saved.vocab, &saved.weights, path)?;
        // load_state_for, not load_state: a moment of the wrong shape for its parameter is a
        // corrupt checkpoint, refused here rather than at the first step.
        optimizer
            .load_state_for(&model, &saved.optimizer)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        // A new --lr leaves the saved moments as valid as they were.
        optimizer.set_lr(hyper.lr);
        if let Some(average) = &mut average {
            let (count, weights) = saved.average.take().ok_or_else(|| {
                Error::Checkpoint(format!(
                    "{}: `run.ema` is {} but the file holds no weight average",
                    path.display(),
                    hyper.ema
                ))
            })?;
            average
                .restore(&model, count, weights)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        }
        let expected = model.zero_carry(hyper.batch);
        if saved.carry.h().shape() != expected.h().shape()
            || saved.progress.position > stream.steps()
        {
            return Err(Error::Checkpoint(format!(
                "{}: the saved stream state does not fit this text",
                path.display()
            )));
        }
        progress = saved.progress;
        stream.seek(progress.position);
        driver.resume_at(progress.position, saved.carry.select_lanes(mine.clone()));
        out.line(format_args!(
            "resuming {} at step {}",
            path.display(),
            progress.step
        ));
    }

    // Rank 0's alone.
    // Every rank has read the same settings, text and checkpoint, or none starts.
    ranks.agree(settings_hash(&hyper, c, corpus.hash, progress))?;
    let mut records = match ranks.lead() {
        true => Some(Records::open(
            checkpoint_path,
            c.resume.as_deref().map(|p| (p, progress.step)),
            c.tensorboard.as_deref(),
        )?),
        false => None,
    };
    signals::listen();

    let shards = c.shards.unwrap_or_else(|| default_shards(&hyper));
    out.line(format_args!(
        "training a {} × {} {:?} on {} ({} characters, vocabulary {}; last 10% held out): {} parameters; the batch in {} on {} cores",
        hyper.layers,
        hyper.hidden,
        hyper.cell,
        corpus.source,
        corpus.train.len() + corpus.val.len(),
        corpus.vocab.len(),
        rewind::nn::Module::num_params(&model),
        match shards.min(hyper.batch) {
            1 => "one piece".to_string(),
            n => format!("{n} shards"),
        },
        rewind::autograd::cores(),
    ));
    let mut report = Report::new(
        c.limit,
        progress.step,
        out,
        records.as_ref().and_then(|r| r.last()),
    );
    let started = Instant::now();
    let mut val_loss = f64::NAN;
    let (mut saved_at, mut evaluated_at) = (resuming_here.then_some(progress.step), None);
    let uniform = (corpus.vocab.len() as f64).ln();
    let mut guard = Guard {
        uniform,
        limit: 10.0 * uniform.max(1.0),
        good: c.resume.as_deref().map(|p| (p, progress.step)),
        clipped: hyper.clip > 0.0,
    };
    let time_limit = match c.limit {
        Limit::Minutes(m) => Duration::try_from_secs_f64(m * 60.0).unwrap_or(Duration::MAX),
        Limit::Steps(_) => Duration::MAX,
    };
    let reached = |step: usize| match c.limit {
        Limit::Steps(total) => step >= total,
        Limit::Minutes(_) => started.elapsed() >= time_limit,
    };
    // The schedule's clock: the fraction of --steps (in all) or of this run's --minutes spent.
    let budget_spent = |step: usize| match c.limit {
        Limit::Steps(total) => step as f64 / total as f64,
        Limit::Minutes(_) => started.elapsed().as_secs_f64() / time_limit.as_secs_f64(),
    };
    // Decided once per step, so that the last step is measured and recorded as the last.
    let mut last = ranks.any(reached(progress.step))?;
    // A save point's checkpoint is written once the next step's loss shows its weights are
    // sound, so a diverging run never leaves a checkpoint it cannot resume from.
    let mut pending: Option<(Progress, Carry)> = None;
    let mut interrupted = false;
    while !last {
        let step_seed = mix(hyper.seed, progress.step as u64);
        model.reseed_dropout(step_seed);
        let update = if hyper.bptt == BpttKind::Full {
            full_update(&model, &hyper, &corpus.train, step_seed, shards, ranks)?
        } else {
            driver.reseed(step_seed);
            match step(&mut driver, &mut stream, &model, shards, ranks)? {
                Some(u) => u,
                None => {
                    stream.rewind();
                    driver.restart(model.zero_carry(mine.len()));
                    progress.epoch += 1;
                    continue;
                }
            }
        };
        let mut grads = update.grads;
        let step = progress.step + 1;
        guard.loss(step, "training", update.loss)?;
        let norm = grad_norm(&grads);
        guard.norm(step, norm)?;
        // A signal is looked at once a step, here, so that the step it stops at has its row. The
        // ranks stop together: at any rank's limit, signal or failed output.
        let stop = signals::interrupted() || report.out.failed().is_some();
        let agreed = ranks.any_of([reached(step), stop])?;
        let (stop, mut stop_after) = (agreed[1], false);
        last = agreed[0];
        // Every step a checkpoint may hold has its row, so a resumed run continues the smoothed
        // loss exactly: the saves, the last step, and the step the run stops at.
        let logged = [c.log_every, c.eval_every, c.save_every]
            .iter()
            .any(|&every| step.is_multiple_of(every))
            || last
            || stop;
        let param_norms = match logged && records.as_ref().is_some_and(|r| r.wants_param_norms()) {
            true => param_grad_norms(&model, &grads),
            false => Vec::new(),
        };
        if let Some((at, carry)) = pending.take() {
            guard.state(at.step, optimizer.as_ref(), &carry)?;
            if let Some(records) = &mut records {
                records.sync();
                // `save` reads the carried state from a driver.
                let held = Bptt::new(Strategy::Full, carry, hyper.seed);
                save(
                    checkpoint_path,
                    &hyper,
                    &corpus,
                    at,
                    Trained {
                        model: &model,
                        optimizer: optimizer.as_ref(),
                        average: average.as_ref(),
                    },
                    &held,
                )?;
            }
            saved_at = Some(at.step);
            guard.good = Some((checkpoint_path, at.step));
        }
        if hyper.clip > 0.0 {
            clip_grad_norm(&mut grads, hyper.clip);
        }
        // By the clock, rank 0's: every rank takes the same learning rate.
        let spent = match c.limit {
            Limit::Minutes(_) => ranks.lead_value(budget_spent(progress.step))?,
            Limit::Steps(_) => budget_spent(progress.step),
        };
        optimizer.set_lr(scheduled_lr(&hyper, progress.step, spent));
        optimizer.step(&mut model, &grads);
        guard.weights(step, &model)?;
        if let Some(average) = &mut average {
            average.update(&model);
        }
        progress.step = step;
        progress.position = stream.position();
        report.step(progress.step, update.loss, update.targets);

        let eval_step = progress.step.is_multiple_of(c.eval_every);
        // Copied only when read: the next update would copy the shared storage back.
        let scored = match eval_step || last {
            true => scored(&model, average.as_ref(), scored_model.as_ref()),
            false => &model,
        };
        if eval_step || last {
            val_loss = evaluate_on(scored, &corpus.val, hyper.batch, hyper.seq_len, ranks)?;
            guard.loss(progress.step, "validation", val_loss)?;
            evaluated_at = Some(progress.step);
        }
        if eval_step && ranks.lead() {
            let mut sample_rng = StdRng::seed_from_u64(mix(step_seed, SeedStream::Sample as u64));
            let prime = corpus.vocab[corpus.val.get(0)].to_string();
            let text = generate(
                scored,
                &corpus.vocab,
                &prime,
                160,
                0.8,
                None,
                &mut sample_rng,
            )
            .map_err(|e| guard.diverged(progress.step, format!("sampling: {e}")))?;
            report.eval(progress.step, val_loss, &(prime + &text));
        }
        // Standard output may have failed in this step's own report: the run stops here too, and
        // the step gets its row (without per-parameter norms, which were not taken).
        stop_after |= report.out.failed().is_some();
        if logged || stop || stop_after {
            let row = Row {
                step,
                elapsed: report.elapsed(),
                chars_per_s: report.speed(),
                train_loss: update.loss,
                train_loss_smooth: report.loss,
                val_loss: (evaluated_at == Some(step)).then_some(val_loss),
                lr: optimizer.lr(),
                grad_norm: norm,
                // As clip_grad_norm decides.
                clipped: hyper.clip > 0.0 && hyper.clip / (norm + 1e-6) < 1.0,
            };
            if let Some(records) = &mut records {
                records.write(row, &param_norms);
                stop_after |= records.failed().is_some();
            }
        }
        if progress.step.is_multiple_of(c.save_every) {
            pending = Some((progress, ranks.gather(driver.carry(), hyper.batch)?));
        }
        // A closed or full standard output stops the run as Ctrl-C does: its work is saved.
        if stop || ranks.any(stop_after)? {
            interrupted = true;
            break;
        }
    }
    if progress.step == 0 {
        let limit = match c.limit {
            Limit::Minutes(m) => format!("--minutes {}", number(m)),
            Limit::Steps(s) => format!("--steps {s}"),
        };
        return Err(Error::Training(format!(
            "{limit} ran out before the first step: nothing was trained and no checkpoint was written"
        )));
    }
    // The end of the run (its limit, or Ctrl-C; a pending save is this same state) is always
    // saved, and measured first unless Ctrl-C (the loop measured it, unless the limit was
    // reached before any step).
    if !interrupted && evaluated_at != Some(progress.step) {
        let scored = scored(&model, average.as_ref(), scored_model.as_ref());
        val_loss = evaluate_on(scored, &corpus.val, hyper.batch, hyper.seq_len, ranks)?;
        guard.loss(progress.step, "validation", val_loss)?;
    }
    // Beside the average's figure, the trained weights' own, once.
    let trained_loss = match average.is_some() && !interrupted {
        true => Some(evaluate_on(
            &model,
            &corpus.val,
            hyper.batch,
            hyper.seq_len,
            ranks,
        )?),
        false => None,
    };
    if saved_at != Some(progress.step) {
        guard.state(progress.step, optimizer.as_ref(), driver.carry())?;
        let carry = ranks.gather(driver.carry(), hyper.batch)?;
        if let Some(records) = &mut records {
            records.sync();
            let held = Bptt::new(Strategy::Full, carry, hyper.seed);
            save(
                checkpoint_path,
                &hyper,
                &corpus,
                progress,
                Trained {
                    model: &model,
                    optimizer: optimizer.as_ref(),
                    average: average.as_ref(),
                },
                &held,
            )?;
        }
    }
    report.finish();
    let outcome = if interrupted && report.out.failed().is_none() {
        report.out.line(format_args!(
            "interrupted: saved {} at step {}",
            checkpoint_path.display(),
            progress.step
        ));
        Outcome::Interrupted {
            step: progress.step,
        }
    } else {
        let averaged = match trained_loss {
            Some(trained) => format!(
                " with the weights' average (decay {}; {trained:.4} with the trained weights)",
                hyper.ema
            ),
            None => String::new(),
        };
        report.out.line(format_args!(
            "step {}: validation {:.4} nats/char (perplexity {:.2}){averaged}; checkpoint {}",
            progress.step,
            val_loss,
            val_loss.exp(),
            checkpoint_path.display()
        ));
        Outcome::Trained {
            step: progress.step,
            val_loss,
        }
    };
    let stopped = format!(
        "the run stopped at step {} and saved {}; resume it with --resume {1}",
        progress.step,
        checkpoint_path.display()
    );
    match (
        report.out.failed(),
        records.as_ref().and_then(|r| r.failed()),
    ) {
        (Some(e), _) => Err(Error::Output(format!(
            "standard output failed ({e}): {stopped}"
        ))),
        (None, Some(what)) => Err(Error::Metrics(format!("{what}: {stopped}"))),
        (None, None) => Ok(outcome),
    }
}

/// True if `a` and `b` name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The settings of a resumed run: the checkpoint's, with `--lr` and `--clip` as given (neither
/// changes what the saved optimizer state means); any other flag given must agree.
fn agree(c: &TrainConfig, saved: &Hyper) -> Result<Hyper, Error> {
    let given = &c.hyper;
    let differs = |name: &str| -> bool {
        match name {
            "cell" => given.cell != saved.cell,
            "layers" => given.layers != saved.layers,
            "hidden" => given.hidden != saved.hidden,
            "embed" => given.embed != saved.embed,
            "dropout" => given.dropout != saved.dropout,
            "head_dropout" => given.head_dropout != saved.head_dropout,
            "input_dropout" => given.input_dropout != saved.input_dropout,
            "seq_len" => given.seq_len != saved.seq_len,
            "batch" => given.batch != saved.batch,
            "optim" => given.optim != saved.optim,
            "bptt" => given.bptt != saved.bptt,
            "seed" => given.seed != saved.seed,
            "schedule" => given.schedule != saved.schedule,
            "min_lr" => given.min_lr != saved.min_lr,
            "warmup" => given.warmup != saved.warmup,
            "beta2" => given.beta2 != saved.beta2,
            "weight_decay" => given.weight_decay != saved.weight_decay,
            "forget_bias" => given.forget_bias != saved.forget_bias,
            "ema" => given.ema != saved.ema,
            _ => false,
        }
    };
    if let Some(name) = c.explicit.iter().find(|n| differs(n)) {
        return Err(Error::Checkpoint(format!(
            "--{} differs from the checkpoint being resumed; drop the flag to keep the checkpoint's value",
            name.replace('_', "-")
        )));
    }
    let mut hyper = saved.clone();
    if c.explicit.contains("lr") {
        hyper.lr = given.lr;
    }
    if c.explicit.contains("clip") {
        hyper.clip = given.clip;
    }
    Ok(hyper)
}

/// Stops a diverging run before anything non-finite reaches a checkpoint: a loss far above a
/// uniform guess's, a non-finite loss, gradient norm, weight or optimizer state. Its error says
/// which checkpoint is still good.
struct Guard<'a> {
    /// A uniform guess's loss, ln V nats per character: where an untrained model starts.
    uniform: f64,
    /// The loss above which the run has exploded: 10 × ln V, at least 10.
    limit: f64,
    /// The newest checkpoint of this run's weights known good, and its step.
    good: Option<(&'a Path, usize)>,
    /// Whether the gradient norm is clipped (the advice differs).
    clipped: bool,
}

impl Guard<'_> {
    fn loss(&self, step: usize, which: &str, loss: f64) -> Result<(), Error> {
        if loss.is_finite() && loss <= self.limit {
            return Ok(());
        }
        let value = match loss.is_finite() {
            true => format!(
                "{loss:.3e} nats/char (a uniform guess scores {:.2}; the limit is {:.1})",
                self.uniform, self.limit
            ),
            false => loss.to_string(),
        };
        Err(self.diverged(step, format!("the {which} loss is {value}")))
    }

    fn norm(&self, step: usize, norm: f64) -> Result<(), Error> {
        match norm.is_finite() {
            true => Ok(()),
            false => Err(self.diverged(step, format!("the gradient norm is {norm}"))),
        }
    }

    fn weights(&self, step: usize, model: &CharModel) -> Result<(), Error> {
        let params = rewind::nn::Module::params(model);
        match params.iter().find(|(_, p)| !all_finite(&p.value())) {
            Some((name, _)) => {
                Err(self.diverged(step, format!("the update made {name} non-finite")))
            }
            None => Ok(()),
        }
    }

    fn state(&self, step: usize, optimizer: &dyn Optimizer, carry: &Carry) -> Result<(), Error> {
        let state = optimizer.state();
        let tensors = state
            .tensors
            .iter()
            .map(|(n, t)| (format!("optimizer.{n}"), t));
        let carried = carry.parts().iter();
        let carried = carried.map(|t| ("the carried state".to_string(), t));
        if let Some((name, _)) = tensors.chain(carried).find(|(_, t)| !all_finite(t)) {
            return Err(self.diverged(step, format!("{name} is not finite")));
        }
        match state.scalars.iter().find(|(_, v)| !v.is_finite()) {
            Some((name, _)) => Err(self.diverged(step, format!("optimizer.{name} is not finite"))),
            None => Ok(()),
        }
    }

    fn diverged(&self, step: usize, what: String) -> Error {
        let clip = if self.clipped { "" } else { " or --clip 5" };
        let kept = match self.good {
            Some((path, at)) => format!(
                "{} still holds step {at}, the last good one: resume it with a lower --lr{clip}",
                path.display()
            ),
            None => format!("no checkpoint was written: start again with a lower --lr{clip}"),
        };
        Error::Training(format!("training diverged at step {step}: {what}; {kept}"))
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.data().iter().all(|x| x.is_finite())
}

/// A model of the checkpoint's shape with its weights, or an error naming what does not fit.
pub fn restore_model(
    hyper: &Hyper,
    vocab: &[char],
    weights: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<CharModel, Error> {
    let mut model = CharModel::new(hyper, vocab.len(), &mut StdRng::seed_from_u64(0));
    load_state_dict(&mut model, weights)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok(model)
}

fn make_optimizer(h: &Hyper) -> Box<dyn Optimizer> {
    let wd = h.weight_decay;
    match h.optim {
        OptimKind::Adam => Box::new(Adam::new(h.lr).betas(0.9, h.beta2).weight_decay(wd)),
        OptimKind::Adamw => Box::new(Adam::adamw(h.lr).betas(0.9, h.beta2).weight_decay(wd)),
        OptimKind::Sgd => Box::new(Sgd::new(h.lr).weight_decay(wd)),
        OptimKind::Adagrad => Box::new(Adagrad::new(h.lr).weight_decay(wd)),
        OptimKind::Rmsprop => Box::new(RmsProp::new(h.lr).weight_decay(wd)),
    }
}

/// The learning rate of update `step` (counted from 0) when `done` of the run's budget is spent
/// (0 to 1: its steps, or its minutes by the clock): `--lr` after a linear warmup over `--warmup`
/// steps, or half a cosine from `--lr` down to `--min-lr` over the budget.
pub fn scheduled_lr(h: &Hyper, step: usize, done: f64) -> f64 {
    let peak = match h.schedule {
        ScheduleKind::Constant => h.lr,
        ScheduleKind::Cosine => {
            let phase = std::f64::consts::PI * done.clamp(0.0, 1.0);
            h.min_lr + (h.lr - h.min_lr) * (1.0 + phase.cos()) / 2.0
        }
    };
    match step < h.warmup {
        true => peak * (step + 1) as f64 / h.warmup as f64,
        false => peak,
    }
}

fn strategy(h: &Hyper) -> Strategy {
    match h.bptt {
        BpttKind::Full | BpttKind::Truncated => Strategy::Truncated { k: h.seq_len },
        BpttKind::Random => Strategy::RandomLength {
            min: (h.seq_len / 2).max(1),
            max: h.seq_len * 3 / 2,
        },
        BpttKind::Checkpointed => Strategy::CheckpointedModel {
            k: h.seq_len,
            every: None,
        },
    }
}

/// One update of `model` on `stream`: on one tape, or in `shards` shards side by side, and
/// with other ranks, their gradients summed with this one's.
fn step(
    driver: &mut Bptt,
    stream: &mut Stream,
    model: &CharModel,
    shards: usize,
    ranks: &Ranks,
) -> Result<Option<rewind::nn::Update>, Error> {
    Ok(match ranks.across() {
        Some(across) => {
            let params: Vec<_> = model.params().into_iter().map(|(_, p)| p).collect();
            driver
                .step_across(stream, across, &params, shards, |t, ch, s, r| {
                    model.loss(t, ch, s, r)
                })
                .map_err(|e| Error::Training(format!("the ranks lost each other: {e}")))?
        }
        None if shards > 1 => {
            driver.step_sharded(stream, shards, |t, ch, s, r| model.loss(t, ch, s, r))
        }
        None => driver.step(stream, |t, ch, s, r| model.loss(t, ch, s, r)),
    })
}

/// Full BPTT: `batch` random windows of `seq_len` from a zero state, backpropagated whole.
fn full_update(
    model: &CharModel,
    h: &Hyper,
    train: &Tokens,
    seed: u64,
    shards: usize,
    ranks: &Ranks,
) -> Result<rewind::nn::Update, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let window = h.seq_len + 1;
    let mut tokens = Vec::with_capacity(h.batch * window);
    for _ in 0..h.batch {
        let start = rng.random_range(0..=train.len() - window);
        tokens.extend((start..start + window).map(|i| train.get(i)));
    }
    // Every rank draws the same windows and takes its lanes of them.
    let mine = ranks.lanes(h.batch);
    let mut stream = Stream::new(tokens, h.batch).select_lanes(mine.clone());
    let carry = model.zero_carry(mine.len());
    let mut driver = Bptt::new(Strategy::Full, carry, seed);
    Ok(step(&mut driver, &mut stream, model, shards, ranks)?.expect("one window per lane"))
}

/// The model to evaluate and sample with: `model` itself, or with `--ema` the weights' average,
/// copied into `scored_model`.
fn scored<'a>(
    model: &'a CharModel,
    average: Option<&WeightAverage>,
    scored_model: Option<&'a CharModel>,
) -> &'a CharModel {
    match (average, scored_model) {
        (Some(average), Some(scored_model)) if average.count() > 0 => {
            average.copy_to(scored_model);
            scored_model
        }
        _ => model,
    }
}

/// Mean cross-entropy in nats per character over the held-out text, read as a stream in
/// evaluation mode with the state carried.
pub fn evaluate(model: &CharModel, val: &Tokens, batch: usize, seq_len: usize) -> f64 {
    evaluate_on(model, val, batch, seq_len, &Ranks::alone()).expect("one rank alone")
}

/// [`evaluate`] with the lanes shared by the ranks when they divide them (each scores its
/// lanes, the sums and counts are added), else each scoring every lane.
fn evaluate_on(
    model: &CharModel,
    val: &Tokens,
    batch: usize,
    seq_len: usize,
    ranks: &Ranks,
) -> Result<f64, Error> {
    let lanes = batch.min(val.len() / 2).max(1);
    let shared = lanes.is_multiple_of(ranks.size());
    let mut stream = Stream::new(val.clone(), lanes);
    if shared {
        stream = stream.select_lanes(ranks.lanes(lanes));
    }
    let mut carry: Carry = model.zero_carry(stream.lanes());
    let (mut total, mut count) = (0.0, 0usize);
    model.set_training(false);
    while let Some(chunk) = stream.take(seq_len) {
        let tape = Tape::new();
        let (loss, state) = model.loss(&tape, &chunk, carry.on(&tape), &Run::default());
        total += loss.sum().item() as f64;
        count += loss.terms();
        carry = Carry::of(state);
    }
    model.set_training(true);
    let mut sums = [total, count as f64];
    if shared {
        ranks.sum(&mut sums)?;
    }
    Ok(sums[0] / sums[1])
}

/// A hash of what every rank of a run must share: the settings that shape it, its limit and
/// intervals, whether it resumes and from where, and the text.
fn settings_hash(hyper: &Hyper, c: &TrainConfig, text: u64, resumed: Progress) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let described = format!(
        "{hyper:?} {:?} {} {} {} {}",
        c.limit,
        c.save_every,
        c.eval_every,
        c.log_every,
        c.resume.is_some()
    );
    described.hash(&mut h);
    text.hash(&mut h);
    (resumed.step, resumed.position, resumed.epoch).hash(&mut h);
    h.finish()
}

/// What training has made: the model, its optimizer and, with `--ema`, the weights' average.
struct Trained<'a> {
    model: &'a CharModel,
    optimizer: &'a dyn Optimizer,
    average: Option<&'a WeightAverage>,
}

fn save(
    checkpoint_path: &Path,
    hyper: &Hyper,
    corpus: &Corpus,
    progress: Progress,
    trained: Trained<'_>,
    driver: &Bptt,
) -> Result<(), Error> {
    checkpoint::save(
        checkpoint_path,
        &SaveParts {
            hyper,
            vocab: &corpus.vocab,
            progress,
            model: trained.model,
            optimizer: &trained.optimizer.state(),
            carry: driver.carry(),
            text_hash: corpus.hash,
            average: trained.average,
        },
    )
}

/// What a step's seed is split into, by [`mix`] of the step's seed and the stream's number, so
/// that no two of them draw the same numbers. (The stack's dropout and the driver draw from the
/// step's seed itself.)
#[derive(Clone, Copy, Debug)]
pub enum SeedStream {
    /// The sample printed at an evaluation.
    Sample = 1,
    /// The masks of the dropout before the readout, on one tape (shards draw their own).
    HeadDropout = 2,
    /// The masks of the dropout on the first layer's input, on one tape.
    InputDropout = 3,
    /// The masks of the dropout between the stack's layers, on one tape. Not the step's seed
    /// itself: that seeds the update's windows (`full_update`) and the driver's random chunk
    /// lengths, and masks drawn from the same stream would be functions of those draws.
    StackDropout = 4,
}

/// A seed for step `n` of a run seeded with `seed` (splitmix64), so a resumed run draws what an
/// uninterrupted one would.
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Progress: a live bar on a terminal, plain lines otherwise.
struct Report {
    bar: Option<ProgressBar>,
    out: Output,
    started: Instant,
    /// Seconds of training before this run, in the runs it resumes.
    before: f64,
    chars: usize,
    /// The smoothed training loss.
    loss: f64,
}

impl Report {
    /// Progress from `first_step`, continuing the smoothed loss and the time of the `resumed`
    /// row.
    fn new(limit: Limit, first_step: usize, out: Output, resumed: Option<&Row>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match limit {
                Limit::Steps(total) => ProgressBar::new(total as u64),
                Limit::Minutes(_) => ProgressBar::no_length(),
            };
            let template = "{elapsed_precise} [{bar:30.cyan/blue}] step {pos} {msg}";
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_position(first_step as u64);
            bar
        });
        Report {
            bar,
            out,
            started: Instant::now(),
            before: resumed.map_or(0.0, |r| r.elapsed),
            chars: 0,
            loss: resumed.map_or(f64::NAN, |r| r.train_loss_smooth),
        }
    }

    /// Seconds of training in all, the resumed runs' included.
    fn elapsed(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }

    /// Training characters per second in this run.
    fn speed(&self) -> f64 {
        self.chars as f64 / self.started.elapsed().as_secs_f64()
    }

    fn step(&mut self, step: usize, loss: f64, chars: usize) {
        self.chars += chars;
        self.loss = if self.loss.is_nan() {
            loss
        } else {
            0.95 * self.loss + 0.05 * loss
        };
        let speed = self.speed();
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(format!(
                    "| train {:.3} nats/char | {:.0} chars/s",
                    self.loss, speed
                ));
            }
            None if step.is_multiple_of(50) => self.out.line(format_args!(
                "step {step:>6}  train {:.3} nats/char  {:.0} chars/s  {:.0}s",
                self.loss,
                speed,
                self.started.elapsed().as_secs_f64()
            )),
            None => {}
        }
    }

    fn eval(&mut self, step: usize, val: f64, sample: &str) {
        let lines = format!(
            "step {step:>6}  validation {val:.3} nats/char (perplexity {:.2})\n---\n{}\n---",
            val.exp(),
            sample.trim_end()
        );
        match &self.bar {
            Some(bar) => bar.println(lines),
            None => self.out.line(lines),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
