//! A cell of one's own in rewind's stacks and BPTT driver: the peephole LSTM of `peephole.rs`,
//! defined here outside the crates, trained as a two-layer bidirectional stack through the
//! driver with checkpointed segments, beside the built-in LSTM in the same harness.
//!
//! The task needs both directions: restore the characters hidden in a text. A fixed fraction of
//! the characters (chosen by position, so every run and every pass hides the same ones) is
//! replaced by a mask symbol, and the model predicts every original character from both sides.
//! Reported: nats per hidden character and the share restored on held-out text, against
//! guessing the commonest character.
//!
//! ```text
//! cargo run --release --example custom_cell
//! cargo run --release --example custom_cell -- --cell lstm --strategy truncated --updates 600
//! ```

mod peephole;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use peephole::Peephole;
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{
    nested, Bptt, Carry, Cell, Chunk, ChunkLoss, Embedding, Linear, Lstm, Module, Recurrent,
    RecurrentConfig, Run, State, Strategy, Stream,
};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};
use rewind::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CellKind {
    /// The peephole LSTM defined in this example.
    Peephole,
    /// rewind's built-in LSTM (no peepholes).
    Lstm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyKind {
    /// The whole remaining pass in one update (use with a small --updates).
    Full,
    /// Chunks of --chunk steps, the state carried across and detached.
    Truncated,
    /// TBPTT(k1 = --chunk / 2, k2 = --chunk).
    Overlapping,
    /// Chunks of --chunk steps with Tallec and Ollivier's randomized truncation, π = 0.5.
    Randomized,
    /// Chunks of a random length in --chunk/2 ..= --chunk.
    RandomLength,
    /// Chunks of --chunk steps, each run in checkpointed segments of √chunk steps.
    Checkpointed,
}

#[derive(Parser, Debug)]
#[command(
    name = "custom_cell",
    about = "Train a two-layer bidirectional stack of a user-defined peephole LSTM (or the \
             built-in LSTM) to restore hidden characters, through rewind's BPTT driver."
)]
struct Cli {
    /// A UTF-8 text file.
    #[arg(long, default_value = "../shared/data/tinyshakespeare.txt")]
    data: PathBuf,
    /// Which cell the stack is made of.
    #[arg(long, value_enum, default_value_t = CellKind::Peephole)]
    cell: CellKind,
    /// How gradients flow back through time.
    #[arg(long, value_enum, default_value_t = StrategyKind::Checkpointed)]
    strategy: StrategyKind,
    /// Steps per chunk.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// H of each direction.
    #[arg(long, default_value_t = 96)]
    hidden: usize,
    /// Stacked bidirectional layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Parallel lanes of the stream (the batch).
    #[arg(long, default_value_t = 32)]
    lanes: usize,
    /// Adam updates.
    #[arg(long, default_value_t = 400)]
    updates: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// The share of characters hidden, 0 < p < 1.
    #[arg(long, default_value_t = 0.2)]
    hide: f64,
    /// Seed of the initialisation and of the random strategies.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The text as ids, its vocabulary, and the id of the mask symbol (one past the vocabulary).
struct Text {
    train: Vec<usize>,
    valid: Vec<usize>,
    vocab: Vec<char>,
}

impl Text {
    fn read(path: &PathBuf) -> Result<Text, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let ids: Vec<usize> = text
            .chars()
            .map(|c| vocab.binary_search(&c).expect("in the vocabulary"))
            .collect();
        if ids.len() < 10_000 {
            return Err(format!(
                "{}: {} characters are too few; give at least 10,000",
                path.display(),
                ids.len()
            ));
        }
        let split = ids.len() * 9 / 10;
        Ok(Text {
            valid: ids[split..].to_vec(),
            train: ids[..split].to_vec(),
            vocab,
        })
    }

    fn mask(&self) -> usize {
        self.vocab.len()
    }
}

/// Whether the character at `step` of lane `lane` is hidden: a hash of the position against
/// the share `p`, so the same characters are hidden on every pass.
fn hidden(lane: usize, step: usize, p: f64) -> bool {
    let mut z = ((lane as u64) << 40 ^ step as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 <= p
}

/// Embedding of the (partly hidden) characters → a bidirectional stack of cells `C` → a readout
/// of the original character from both directions' h.
struct Restorer<C> {
    embed: Embedding,
    rnn: Recurrent<C>,
    head: Linear,
    vocab: usize,
    hide: f64,
}

impl<C: Cell> Module for Restorer<C> {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut all = nested("embed", self.embed.params());
        all.extend(nested("rnn", self.rnn.params()));
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// What a chunk gives: the loss over counted characters, the final state, and for the hidden
/// characters their summed loss, how many, and how many the argmax restores.
struct Scored<'t> {
    loss: ChunkLoss<'t>,
    state: State<'t>,
    hidden_nats: f64,
    hidden_count: usize,
    restored: usize,
}

impl<C: for<'t> Cell<State<'t> = State<'t>>> Restorer<C> {
    fn score<'t>(&self, tape: &'t Tape, chunk: &Chunk, state: State<'t>, run: &Run) -> Scored<'t> {
        let (steps, lanes) = (chunk.steps, chunk.lanes);
        let is_hidden = |i: usize| hidden(i % lanes, chunk.start + i / lanes, self.hide);
        let seen: Vec<usize> = (0..steps * lanes)
            .map(|i| {
                if is_hidden(i) {
                    self.vocab
                } else {
                    chunk.inputs[i]
                }
            })
            .collect();
        // The target of a step is the character itself, where the driver counts that step.
        let targets: Vec<i64> = (0..steps * lanes)
            .map(|i| match chunk.targets[i] {
                -100 => -100,
                _ => chunk.inputs[i] as i64,
            })
            .collect();
        let x = self.embed.forward(tape, &seen, &[steps, lanes]);
        let out = self.rnn.forward_with(tape, x, Some(state), run);
        let features = out.output.shape()[2];
        let logits = self
            .head
            .forward(tape, out.output.reshape(&[steps * lanes, features]));
        let each = logits.cross_entropy_with(
            &targets,
            CrossEntropyOptions {
                reduction: Reduction::None,
                ..Default::default()
            },
        );
        let (nats, best) = (each.value(), logits.value().argmax(-1));
        let (mut hidden_nats, mut hidden_count, mut restored) = (0.0, 0, 0);
        for i in (0..steps * lanes).filter(|&i| is_hidden(i) && targets[i] >= 0) {
            hidden_nats += f64::from(nats.data()[i]);
            hidden_count += 1;
            restored += usize::from(best[i] == chunk.inputs[i]);
        }
        let counted = targets.iter().filter(|&&t| t != -100).count();
        Scored {
            loss: ChunkLoss::summed(each.sum(), counted),
            state: out.state,
            hidden_nats,
            hidden_count,
            restored,
        }
    }

    /// Nats per hidden character and the share restored over the whole of `stream`, the state
    /// carried across chunks.
    fn evaluate(&self, stream: &mut Stream, chunk: usize) -> (f64, f64) {
        self.rnn.set_training(false);
        stream.rewind();
        let mut carry = Carry::zeros(&self.rnn, stream.lanes());
        let (mut nats, mut count, mut restored) = (0.0, 0, 0);
        while let Some(c) = stream.take(chunk) {
            let tape = Tape::new();
            let s = self.score(&tape, &c, carry.on(&tape), &Run::default());
            nats += s.hidden_nats;
            count += s.hidden_count;
            restored += s.restored;
            carry = Carry::of(s.state);
        }
        self.rnn.set_training(true);
        (nats / count as f64, restored as f64 / count as f64)
    }
}

fn strategy(cli: &Cli) -> Strategy {
    let k = cli.chunk;
    match cli.strategy {
        StrategyKind::Full => Strategy::Full,
        StrategyKind::Truncated => Strategy::Truncated { k },
        StrategyKind::Overlapping => Strategy::Overlapping {
            k1: (k / 2).max(1),
            k2: k,
        },
        StrategyKind::Randomized => Strategy::Randomized { k, pi: 0.5 },
        StrategyKind::RandomLength => Strategy::RandomLength {
            min: (k / 2).max(1),
            max: k,
        },
        StrategyKind::Checkpointed => Strategy::Checkpointed { k, every: None },
    }
}

fn train<C: for<'t> Cell<State<'t> = State<'t>>>(
    cli: &Cli,
    text: &Text,
    rnn: Recurrent<C>,
    rng: &mut StdRng,
) {
    let (vocab, hidden_size) = (text.vocab.len(), cli.hidden);
    let mut model = Restorer {
        embed: Embedding::new(vocab + 1, hidden_size, rng),
        head: Linear::new(2 * hidden_size, vocab, rng),
        rnn,
        vocab,
        hide: cli.hide,
    };
    let mut stream = Stream::new(text.train.clone(), cli.lanes);
    let mut valid = Stream::new(text.valid.clone(), cli.lanes);
    let mut bptt = Bptt::new(strategy(cli), Carry::zeros(&model.rnn, cli.lanes), cli.seed);
    let mut adam = Adam::new(cli.lr);
    let baseline = commonest_share(&text.valid, text.mask());
    println!(
        "{} parameters; guessing the commonest character restores {:.1}% of hidden ones",
        model.num_params(),
        100.0 * baseline
    );
    println!("update  train nats/char  valid nats/hidden  restored  seconds");
    let began = Instant::now();
    let report_every = (cli.updates / 4).max(1);
    for update in 1..=cli.updates {
        let step = bptt.step(&mut stream, |tape, chunk, state, run| {
            let s = model.score(tape, chunk, state, run);
            (s.loss, s.state)
        });
        let Some(mut step) = step else {
            stream.rewind();
            bptt.restart(Carry::zeros(&model.rnn, cli.lanes));
            continue;
        };
        clip_grad_norm(&mut step.grads, 1.0);
        adam.step(&mut model, &step.grads);
        if update % report_every == 0 || update == cli.updates {
            let (nats, share) = model.evaluate(&mut valid, cli.chunk);
            println!(
                "{update:>6}  {:>15.3}  {nats:>17.3}  {:>7.1}%  {:>7.1}",
                step.loss,
                100.0 * share,
                began.elapsed().as_secs_f64()
            );
        }
    }
}

/// The share of positions holding the commonest character (what always guessing it restores).
fn commonest_share(ids: &[usize], vocab: usize) -> f64 {
    let mut counts = vec![0usize; vocab];
    ids.iter().for_each(|&i| counts[i] += 1);
    *counts.iter().max().expect("a vocabulary") as f64 / ids.len() as f64
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(cli.hide > 0.0 && cli.hide < 1.0) || cli.chunk == 0 || cli.lanes == 0 || cli.layers == 0 {
        eprintln!("custom_cell: --hide must be in (0, 1) and --chunk, --lanes, --layers above 0");
        return ExitCode::from(2);
    }
    let text = match Text::read(&cli.data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("custom_cell: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let config = RecurrentConfig::new(cli.hidden, cli.hidden)
        .num_layers(cli.layers)
        .bidirectional(true);
    println!(
        "{:?} cells, {} bidirectional layers of H = {}, {:?}, {} lanes",
        cli.cell,
        cli.layers,
        cli.hidden,
        strategy(&cli),
        cli.lanes
    );
    match cli.cell {
        CellKind::Peephole => {
            let rnn = Recurrent::with_cells(config, |input, hidden| {
                Peephole::new(input, hidden, &mut rng)
            });
            train(&cli, &text, rnn, &mut rng)
        }
        CellKind::Lstm => {
            let rnn: Lstm = Lstm::new(config, &mut rng);
            train(&cli, &text, rnn, &mut rng)
        }
    }
    ExitCode::SUCCESS
}
