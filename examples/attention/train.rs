//! The run: the training text as a stream in lanes, truncated BPTT through rewind's driver, Adam
//! with the gradient norm clipped, evaluation on the held-out text after each stretch of training
//! time, and the attention map at the end.

use std::time::{Duration, Instant};

use rewind::autograd::io::write_atomic;
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{Bptt, ModelState, Module, Run, Strategy, Stream};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};
use rewind::prelude::*;

use super::cell::Kind;
use super::data::Corpus;
use super::model::{AttentionLm, LmCarry, Shape};
use super::{svg, Cli, Error, Summary};

/// Characters read before the drawn line, at least: the window is full and the LSTM warmed up.
const CONTEXT: usize = 512;

/// Trains for `--minutes` of training time (or `--updates`), evaluating every `--eval-every`
/// seconds of it and once at the end.
pub fn run(cli: &Cli) -> Result<Summary, Error> {
    let began = Instant::now();
    let corpus = Corpus::load(&cli.data)?;
    if corpus.train.len() / cli.lanes < 2 || corpus.val.len() < 2 {
        let need = (20..)
            .find(|&n| n - n / 10 >= 2 * cli.lanes)
            .expect("some length is enough");
        return Err(Error::Data(format!(
            "{} has {} characters: --lanes {} needs at least {need} (two a lane, and a tenth \
             held out)",
            cli.data.display(),
            corpus.train.len() + corpus.val.len(),
            cli.lanes,
        )));
    }
    let shape = Shape {
        kind: cli.attention,
        vocab: corpus.vocab.len(),
        hidden: cli.hidden,
        layers: cli.layers,
        window: cli.window,
        key: cli.key_size,
    };
    let mut model: AttentionLm = AttentionLm::new(shape, &mut StdRng::seed_from_u64(cli.seed));
    let params = model.num_params();
    let attending = match cli.attention {
        Kind::None => "no attention".to_string(),
        kind => format!(
            "{} attention over W = {}, A = {}",
            kind.name(),
            cli.window,
            cli.key_size
        ),
    };
    println!(
        "{attending}, {} layers of H = {}: {params} parameters; {} training and {} validation \
         characters, vocabulary {}; truncated BPTT {} steps × {} lanes, Adam lr {}, clip {}",
        cli.layers,
        cli.hidden,
        corpus.train.len(),
        corpus.val.len(),
        corpus.vocab.len(),
        cli.chunk,
        cli.lanes,
        cli.lr,
        cli.clip
    );

    let mut stream = Stream::new(corpus.train.clone(), cli.lanes);
    let strategy = Strategy::Truncated { k: cli.chunk };
    let mut driver = Bptt::new(strategy, model.zero_carry(cli.lanes), cli.seed);
    let mut adam = Adam::new(cli.lr);
    let budget = Duration::try_from_secs_f64(cli.minutes * 60.0).unwrap_or(Duration::MAX);
    let eval_every = Duration::try_from_secs_f64(cli.eval_every).unwrap_or(Duration::MAX);
    let (mut trained, mut next_eval) = (Duration::ZERO, eval_every);
    let (mut updates, mut train_loss, mut best) = (0, f64::NAN, f64::INFINITY);
    println!("update  train nats/char  valid nats/char  training s");
    while trained < budget && cli.updates.is_none_or(|n| updates < n) {
        let clock = Instant::now();
        let step = match cli.shards.unwrap_or_else(rewind::autograd::cores) {
            1 => driver.step(&mut stream, |tape, chunk, state, run| {
                model.loss(tape, chunk, state, run)
            }),
            n => driver.step_sharded(&mut stream, n, |tape, chunk, state, run| {
                model.loss(tape, chunk, state, run)
            }),
        };
        let Some(update) = step else {
            stream.rewind();
            driver.restart(model.zero_carry(cli.lanes));
            continue;
        };
        if !update.loss.is_finite() {
            return Err(Error::Training(format!(
                "training diverged at update {}: the loss is {}; try a lower --lr",
                updates + 1,
                update.loss
            )));
        }
        let mut grads = update.grads;
        clip_grad_norm(&mut grads, cli.clip);
        adam.step(&mut model, &grads);
        trained += clock.elapsed();
        updates += 1;
        train_loss = if train_loss.is_nan() {
            update.loss
        } else {
            0.95 * train_loss + 0.05 * update.loss
        };
        let last = trained >= budget || cli.updates == Some(updates);
        if trained >= next_eval || last {
            let val = evaluate(&model, &corpus.val, cli.lanes, cli.chunk);
            if !val.is_finite() {
                return Err(Error::Training(format!(
                    "training diverged by update {updates}: the validation loss is {val}; try a \
                     lower --lr"
                )));
            }
            best = best.min(val);
            next_eval = trained + eval_every;
            println!(
                "{updates:>6}  {train_loss:>15.4}  {val:>15.4}  {:>10.1}",
                trained.as_secs_f64()
            );
        }
    }
    if let Some(path) = &cli.svg {
        draw(&model, &corpus, cli, updates, best, path)?;
    }
    let summary = Summary {
        attention: cli.attention,
        window: cli.window,
        params,
        updates,
        best_val: best,
        train_seconds: trained.as_secs_f64(),
        seconds: began.elapsed().as_secs_f64(),
        svg: cli.svg.clone(),
    };
    println!("{summary}");
    Ok(summary)
}

/// Mean cross-entropy in nats per character over the whole held-out text, read as a stream
/// from an empty window, the state carried across chunks.
pub fn evaluate(model: &AttentionLm, val: &[usize], lanes: usize, chunk: usize) -> f64 {
    let lanes = lanes.min(val.len() / 2).max(1);
    let mut stream = Stream::new(val.to_vec(), lanes);
    let mut carry = model.zero_carry(lanes);
    let (mut total, mut count) = (0.0, 0usize);
    while let Some(c) = stream.take(chunk) {
        let tape = Tape::new();
        let (loss, state) = model.loss(&tape, &c, carry.on(&tape), &Run::default());
        total += f64::from(loss.sum().item());
        count += loss.terms();
        carry = LmCarry::of(state);
    }
    total / count as f64
}

/// Writes the attention over a line of held-out text, read after `CONTEXT` characters before it.
fn draw(
    model: &AttentionLm,
    corpus: &Corpus,
    cli: &Cli,
    updates: usize,
    best: f64,
    path: &std::path::Path,
) -> Result<(), Error> {
    let context = CONTEXT.max(cli.window);
    let (start, end) = corpus.sample_line(context);
    let from = start.saturating_sub(context);
    let tokens = &corpus.val[from..end];
    let rows = model
        .attention_map(tokens)
        .expect("--svg is refused without attention");
    let text: Vec<char> = tokens.iter().map(|&t| corpus.vocab[t]).collect();
    let title = format!(
        "{} attention over the last {} states, after {updates} updates (best validation {best:.3} \
         nats/char)",
        cli.attention.name(),
        cli.window
    );
    let map = svg::Map {
        title: &title,
        text: &text,
        first: start - from,
        weights: &rows[start - from..],
    };
    write_atomic(path, svg::render(&map).as_bytes()).map_err(|e| Error::Output(e.to_string()))?;
    println!("wrote {}", path.display());
    Ok(())
}
