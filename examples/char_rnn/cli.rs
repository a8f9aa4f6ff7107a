//! The command line: `char_rnn [train flags]`, `char_rnn sample [flags]`,
//! `char_rnn plot <metrics file>... [--out curve.svg]`,
//! `char_rnn eval --checkpoint <file> [--dynamic ...]` or
//! `char_rnn connectivity --checkpoint <file> --text <text> [--at <t>...] [--out <svg>]`, checked
//! into plain settings before anything runs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};

use super::flags;
use super::memory;
use super::model::{sampling_bytes, training_bytes};
use super::Error;

#[derive(Parser, Debug)]
#[command(
    name = "char_rnn",
    about = "Train a character-level language model on any text, watch it learn, sample from it.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

// Parsed once per process: the train variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (the default when no subcommand is given).
    Train(TrainArgs),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Score the held-out text with a checkpoint, as training does; with --dynamic, also by
    /// dynamic evaluation, reported beside it.
    Eval(EvalArgs),
    /// Draw the curve of one or more runs from their metrics files, overlaid.
    Plot(PlotArgs),
    /// Draw what a checkpoint's predictions read: for the prediction at position t, the gradient
    /// norm of its loss with respect to each character's input, as a strip over the text (SVG).
    Connectivity(ConnectivityArgs),
}

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CellKind {
    /// Vanilla tanh RNN.
    Rnn,
    /// LSTM.
    Lstm,
    /// GRU.
    Gru,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimKind {
    /// Adam.
    Adam,
    /// Plain SGD.
    Sgd,
    /// Adagrad.
    Adagrad,
    /// RMSprop.
    Rmsprop,
    /// AdamW: Adam with decoupled weight decay (--weight-decay, 0.01 by default).
    Adamw,
}

/// How the learning rate moves over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// --lr throughout (after any --warmup).
    Constant,
    /// Half a cosine from --lr down to --min-lr over the run: over its --steps, or over its
    /// --minutes by the clock.
    Cosine,
}

/// How dynamic evaluation updates the weights after scoring a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DynRule {
    /// θ ← θ - η·g + λ·(θ₀ - θ).
    Sgd,
    /// θ ← θ - η·g/(√MS + ε) + λ·(θ₀ - θ)·min(√MS / mean √MS, 1/λ), MS the mean squared gradient
    /// on training text (Krause et al.'s rule).
    Rms,
}

impl DynRule {
    /// The default (η, λ) for segments of [`SEGMENT`] characters: the best on the first half of
    /// tinyshakespeare's held-out text, for a 2 × 256 LSTM of 1,000 steps (docs/char_rnn.md,
    /// "Scoring a checkpoint").
    pub fn defaults(self) -> (f64, f64) {
        match self {
            DynRule::Sgd => (SGD_LR, SGD_DECAY),
            DynRule::Rms => (RMS_LR, RMS_DECAY),
        }
    }
}

const SGD_LR: f64 = 0.06;
const SGD_DECAY: f64 = 3e-4;
const RMS_LR: f64 = 1e-4;
const RMS_DECAY: f64 = 1e-3;

/// Characters per segment of dynamic evaluation by default: about what Krause et al. used for
/// characters, as issue 32 recalls it (their code's faster setting is 20 tokens, from 5).
pub const SEGMENT: usize = 20;

/// How gradients flow back through time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BpttKind {
    /// Random windows of --seq-len from a zero state, backpropagated whole.
    Full,
    /// The text read as a stream in --batch lanes; state carried and detached every --seq-len.
    Truncated,
    /// Like truncated, with chunk lengths drawn from seq-len/2 ..= 3·seq-len/2.
    Random,
    /// Like truncated, each chunk run in segments of √seq-len steps (the model and its loss), kept
    /// as their final states only and recomputed one at a time during backward.
    Checkpointed,
}

// Numeric flags allow negative numbers so that `--lr -1` is read as a value and refused by its
// range, instead of being taken for an unknown flag `-1`.
#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// UTF-8 text to learn; default: the built-in tinyshakespeare.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Recurrent cell.
    #[arg(long, value_enum, default_value_t = CellKind::Lstm)]
    cell: CellKind,
    /// Stacked recurrent layers.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    layers: usize,
    /// Hidden units per layer.
    #[arg(long, allow_negative_numbers = true, default_value_t = 128)]
    hidden: usize,
    /// Embedding size (0: one-hot input).
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    embed: usize,
    /// Dropout between layers (none with one layer, as in PyTorch's LSTM: see --input-dropout
    /// and --head-dropout).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    dropout: f64,
    /// Dropout on the first layer's input: the embedding's output (or the one-hot vectors).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    input_dropout: f64,
    /// Dropout on the top layer's output, before the readout.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    head_dropout: f64,
    /// Characters per chunk (the BPTT length).
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    seq_len: usize,
    /// Parallel sequences per step.
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2e-3)]
    lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimKind::Adam)]
    optim: OptimKind,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    clip: f64,
    /// The learning rate's schedule.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Constant)]
    schedule: ScheduleKind,
    /// Where --schedule cosine ends.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-4)]
    min_lr: f64,
    /// Raise the learning rate linearly from --lr/N to the schedule's over the first N steps.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    warmup: usize,
    /// Adam's and AdamW's second-moment decay, β2.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.999)]
    beta2: f64,
    /// Weight decay (default: 0.01 for AdamW, else 0), as PyTorch's `weight_decay`.
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Start each LSTM forget gate's bias at this value instead of a random draw (1 is usual).
    #[arg(long, allow_negative_numbers = true)]
    forget_bias: Option<f64>,
    /// Evaluate, sample and score with an exponential moving average of the weights of this
    /// decay (torch's AveragedModel with get_ema_multi_avg_fn; 0: off, the weights as trained).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    ema: f64,
    /// Backpropagation through time.
    #[arg(long, value_enum, default_value_t = BpttKind::Truncated)]
    bptt: BpttKind,
    /// Train until this many steps in all (default 1500).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "minutes")]
    steps: Option<usize>,
    /// Train for this many minutes.
    #[arg(long, allow_negative_numbers = true)]
    minutes: Option<f64>,
    /// Seed of initialisation, dropout and data order.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Where checkpoints are written (default: the --resume file, else char_rnn.safetensors or
    /// the first free char_rnn-N.safetensors).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Replace an existing checkpoint file that this run did not resume from.
    #[arg(long)]
    overwrite: bool,
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, allow_negative_numbers = true, default_value_t = 500)]
    save_every: usize,
    /// Report validation loss and a sample every this many steps.
    #[arg(long, allow_negative_numbers = true, default_value_t = 250)]
    eval_every: usize,
    /// Continue the run saved in this checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Cut each step's batch into this many shards of lanes, each run on a tape of its own by
    /// whichever core is free (default: one per core while a layer's recurrent weights are at
    /// most 8 MB, as up to 512 LSTM units; else 1). 1 runs the step on one tape, its products
    /// split across the cores. Dropout masks depend on it: a resumed run draws the masks of an
    /// uninterrupted one when it runs in as many shards.
    #[arg(long, allow_negative_numbers = true)]
    shards: Option<usize>,
    /// Write a row of <checkpoint>.metrics.csv (and TensorBoard's scalars) every this many steps,
    /// and at each evaluation, each save and the step the run stops at.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10)]
    log_every: usize,
    /// Also write the metrics as a TensorBoard event file in this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    tensorboard: Option<PathBuf>,
    /// Train data-parallel as one rank of an MPI job (`mpirun -np N char_rnn --mpi ...`): each
    /// rank takes --batch / N of the lanes; only rank 0 prints and writes. Needs the example built
    /// with `--features mpi`.
    #[arg(long)]
    mpi: bool,
}

#[derive(Args, Debug, Clone)]
struct PlotArgs {
    /// Metrics files written by training runs (<checkpoint>.metrics.csv).
    #[arg(required = true, value_name = "METRICS_FILE")]
    files: Vec<PathBuf>,
    /// The SVG to write.
    #[arg(long, default_value = "curve.svg")]
    out: PathBuf,
    /// What the horizontal axis counts: steps, or seconds of training (to compare runs of
    /// different speeds at equal time).
    #[arg(long, value_enum, default_value_t = Across::Step)]
    x: Across,
}

/// The horizontal axis of a curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Across {
    /// Training steps.
    Step,
    /// Seconds of training (the metrics file's `elapsed_s`).
    Seconds,
}

#[derive(Args, Debug, Clone)]
struct SampleArgs {
    /// The checkpoint to sample from.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to start from (default: a newline, or the vocabulary's first character if the text
    /// had no newline).
    #[arg(long)]
    prime: Option<String>,
    /// Characters to generate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 500)]
    len: usize,
    /// Softmax temperature: lower is more conservative.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    temperature: f64,
    /// Sample only among the k likeliest characters.
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<usize>,
    /// Seed of the sampling.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug, Clone)]
struct ConnectivityArgs {
    /// The checkpoint whose model reads the text (LSTM, GRU or RNN).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The text the model reads, one lane from a zero state: at least 2 characters, all in the
    /// checkpoint's vocabulary.
    #[arg(long)]
    text: String,
    /// The predictions to draw, by the position t of the last character they read (counted from
    /// 0): t's loss is that of predicting character t + 1 from characters 0 to t. Repeat the flag
    /// or separate positions with commas; default: the last prediction, t = length - 2.
    #[arg(
        long,
        value_name = "T",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    at: Vec<usize>,
    /// The SVG to write: one strip over the text per prediction.
    #[arg(long, default_value = "connectivity.svg")]
    out: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct EvalArgs {
    /// The checkpoint to score.
    #[arg(long)]
    checkpoint: PathBuf,
    /// UTF-8 text whose last 10% is scored (the part a training run on it holds out); default:
    /// the built-in tinyshakespeare.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Score only the first CHARS characters of the held-out text: tune the dynamic settings on
    /// a part, then report on the whole and on the part not tuned on.
    #[arg(long, allow_negative_numbers = true, value_name = "CHARS")]
    limit: Option<usize>,
    /// Also score the held-out text by dynamic evaluation (Krause et al., 2018): read once as one
    /// sequence in segments, each scored with the weights of the moment, then learnt from.
    #[arg(long)]
    dynamic: bool,
    /// Dynamic evaluation's update rule (default: rms).
    #[arg(long, value_enum)]
    rule: Option<DynRule>,
    /// Dynamic evaluation's learning rate η (default: 1e-4 for rms, 0.06 for sgd).
    #[arg(long, allow_negative_numbers = true)]
    dyn_lr: Option<f64>,
    /// Dynamic evaluation's decay λ toward the trained weights, per segment (default: 0.001 for
    /// rms, 0.0003 for sgd).
    #[arg(long, allow_negative_numbers = true)]
    dyn_decay: Option<f64>,
    /// Characters per segment of dynamic evaluation: scored, then learnt from (default: 20).
    #[arg(long, allow_negative_numbers = true)]
    segment: Option<usize>,
}

/// The model's shape and how it is trained: saved in every checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyper {
    /// Recurrent cell.
    pub cell: CellKind,
    /// Layers.
    pub layers: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Embedding size, 0 for one-hot.
    pub embed: usize,
    /// Dropout between layers.
    pub dropout: f64,
    /// Dropout before the readout.
    pub head_dropout: f64,
    /// Dropout on the first layer's input.
    pub input_dropout: f64,
    /// Chunk length.
    pub seq_len: usize,
    /// Lanes.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optim: OptimKind,
    /// Global-norm clip (0: off).
    pub clip: f64,
    /// BPTT strategy.
    pub bptt: BpttKind,
    /// Seed.
    pub seed: u64,
    /// The learning rate's schedule.
    pub schedule: ScheduleKind,
    /// The cosine schedule's last rate.
    pub min_lr: f64,
    /// Steps of linear warmup (0: none).
    pub warmup: usize,
    /// Adam's β2.
    pub beta2: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// The LSTM forget gates' initial bias, `None` for PyTorch's random draw.
    pub forget_bias: Option<f64>,
    /// The decay of the weights' exponential moving average that evaluation uses (0: none).
    pub ema: f64,
}

/// A setting that cannot be used: its name as a field of [`Hyper`], its value, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BadSetting {
    /// The field, as `seq_len`.
    pub name: &'static str,
    /// Its value, as written in messages.
    pub value: String,
    /// What is wrong, as "must be at least 2".
    pub reason: String,
}

impl BadSetting {
    fn new(name: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        BadSetting {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// As a bad flag: `--seq-len 1 must be at least 2`.
    pub fn as_flag(&self) -> Error {
        Error::Usage(format!(
            "--{} {} {}",
            self.name.replace('_', "-"),
            self.value,
            self.reason
        ))
    }

    /// As a bad entry of the checkpoint at `path`: `path: run.seq_len 1 must be at least 2`.
    pub fn in_checkpoint(&self, path: &Path) -> Error {
        Error::Checkpoint(format!(
            "{}: run.{} {} {}",
            path.display(),
            self.name,
            self.value,
            self.reason
        ))
    }
}

impl Hyper {
    /// Checks every setting and that a model of this shape over `vocab` characters fits in
    /// memory to be loaded and sampled: what a checkpoint's settings must pass before anything
    /// is allocated.
    pub fn check(&self, vocab: usize) -> Result<(), BadSetting> {
        self.check_values()?;
        self.check_fits(vocab, sampling_bytes, 0, "the model")
    }

    /// [`Hyper::check`], and that training it (weights, gradients, optimizer state and one
    /// chunk's activations) fits in memory beside the `text` bytes the text's token ids take.
    pub fn check_training(&self, vocab: usize, text: u64) -> Result<(), BadSetting> {
        self.check(vocab)?;
        self.check_fits(
            vocab,
            training_bytes,
            text,
            "the model, one training step and the text's token ids",
        )
    }

    /// Each value in its range, in the type it is used in (the learning rate scales f32
    /// updates; dropout and clipping are applied in f64).
    pub(crate) fn check_values(&self) -> Result<(), BadSetting> {
        let at_least = |name, value: usize, min: usize| match value >= min {
            true => Ok(()),
            false => Err(BadSetting::new(
                name,
                value,
                format!("must be at least {min}"),
            )),
        };
        at_least("layers", self.layers, 1)?;
        at_least("hidden", self.hidden, 1)?;
        at_least("seq_len", self.seq_len, 2)?;
        at_least("batch", self.batch, 1)?;
        for (name, p) in [
            ("dropout", self.dropout),
            ("head_dropout", self.head_dropout),
            ("input_dropout", self.input_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(BadSetting::new(name, number(p), "must be in [0, 1)"));
            }
        }
        let lr = number(self.lr);
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(BadSetting::new("lr", lr, "must be a positive number"));
        }
        let in_f32 = self.lr as f32;
        if in_f32.is_infinite() || in_f32 == 0.0 {
            let reason = format!(
                "is {in_f32} in f32, the type updates are computed in: it must be between {:.1e} and {:.1e}",
                f32::from_bits(1),
                f32::MAX
            );
            return Err(BadSetting::new("lr", lr, reason));
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            let clip = number(self.clip);
            return Err(BadSetting::new("clip", clip, "must be 0 (off) or positive"));
        }
        let cosine = self.schedule == ScheduleKind::Cosine;
        if !(self.min_lr >= 0.0 && (self.min_lr <= self.lr || !cosine)) {
            let reason = format!("must be from 0 to --lr ({})", number(self.lr));
            return Err(BadSetting::new("min_lr", number(self.min_lr), reason));
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return Err(BadSetting::new(
                "beta2",
                number(self.beta2),
                "must be in [0, 1)",
            ));
        }
        let adam = matches!(self.optim, OptimKind::Adam | OptimKind::Adamw);
        if self.beta2 != 0.999 && !adam {
            let reason = "is Adam's and AdamW's: it needs --optim adam or adamw";
            return Err(BadSetting::new("beta2", number(self.beta2), reason));
        }
        if !(0.0..1.0).contains(&self.ema) {
            let reason = "must be in [0, 1): 0 is off, 0.998 averages about the last 500 steps";
            return Err(BadSetting::new("ema", number(self.ema), reason));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            let wd = number(self.weight_decay);
            return Err(BadSetting::new("weight_decay", wd, "must be 0 or positive"));
        }
        match self.forget_bias {
            Some(b) if !b.is_finite() => {
                Err(BadSetting::new("forget_bias", number(b), "must be finite"))
            }
            Some(b) if self.cell != CellKind::Lstm => {
                let reason = "needs --cell lstm: only the LSTM has a forget gate";
                Err(BadSetting::new("forget_bias", number(b), reason))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a shape whose `need`, with `extra` bytes beside it, exceeds the memory available,
    /// naming the setting whose smallest value would shrink it most.
    fn check_fits(
        &self,
        vocab: usize,
        need: fn(&Hyper, usize) -> Option<u64>,
        extra: u64,
        what: &str,
    ) -> Result<(), BadSetting> {
        let (limit, source) = memory::limit();
        let bytes = need(self, vocab).and_then(|b| b.checked_add(extra));
        if bytes.is_some_and(|b| b <= limit) {
            return Ok(());
        }
        let least = |name: &'static str| {
            let mut h = self.clone();
            let value = match name {
                "layers" => std::mem::replace(&mut h.layers, 1),
                "hidden" => std::mem::replace(&mut h.hidden, 1),
                "embed" => std::mem::replace(&mut h.embed, 1),
                "seq_len" => std::mem::replace(&mut h.seq_len, 2),
                _ => std::mem::replace(&mut h.batch, 1),
            };
            (need(&h, vocab).unwrap_or(u64::MAX), name, value)
        };
        let (_, name, value) = ["hidden", "layers", "embed", "seq_len", "batch"]
            .into_iter()
            .map(least)
            .min_by_key(|&(bytes, ..)| bytes)
            .expect("five candidates");
        let size = match bytes {
            Some(b) => format!("about {}", human(b)),
            None => format!("more than {}", human(u64::MAX)),
        };
        Err(BadSetting::new(
            name,
            value,
            format!(
                "needs {size} of memory for {what} (vocabulary {vocab}), but at most {} is available ({source})",
                human(limit)
            ),
        ))
    }
}

/// `bytes` in decimal units: `21.9 GB`.
pub fn human(bytes: u64) -> String {
    let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// A float as a person would type it: `1.5`, `0.002`, `1e-9`, `1e300`, `NaN`.
pub fn number(x: f64) -> String {
    match x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e9) {
        true => format!("{x:e}"),
        false => x.to_string(),
    }
}

/// The most `--minutes` a `Duration` holds.
const MAX_MINUTES: f64 = u64::MAX as f64 / 60.0;

/// When training stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// At this many steps in all.
    Steps(usize),
    /// After this many minutes of this run.
    Minutes(f64),
}

/// A checked `train` command.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Model and training settings.
    pub hyper: Hyper,
    /// The names of the settings given on the command line (a resumed run must agree on them).
    pub explicit: BTreeSet<&'static str>,
    /// The text.
    pub data: Option<PathBuf>,
    /// Stop condition.
    pub limit: Limit,
    /// Checkpoint path; `None` for the first free default name (`char_rnn.safetensors`,
    /// `char_rnn-2.safetensors`, ...), claimed when the run starts.
    pub checkpoint: Option<PathBuf>,
    /// Replace an existing file at `checkpoint`.
    pub overwrite: bool,
    /// Save interval.
    pub save_every: usize,
    /// Evaluation interval.
    pub eval_every: usize,
    /// Checkpoint to resume.
    pub resume: Option<PathBuf>,
    /// Shards of each step's batch (1: one tape); `None` for the default of the model's size
    /// ([`default_shards`]).
    pub shards: Option<usize>,
    /// Interval of the metrics rows.
    pub log_every: usize,
    /// Directory of the TensorBoard event file, if any.
    pub tensorboard: Option<PathBuf>,
    /// One rank of an MPI job.
    pub mpi: bool,
}

/// The shards a step of a model of shape `hyper` runs in by default: one per core while each
/// core can reread a layer's recurrent weights at every time step, at most 8 MB of them (an
/// LSTM up to 512 units, a GRU up to 836); one tape, its products split across the cores, for
/// larger layers, where rereading the weights once per shard costs more than the shards save
/// (benches/README.md, "The step grid with the batch in shards").
pub fn default_shards(hyper: &Hyper) -> usize {
    let gates = match hyper.cell {
        CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    };
    let bytes = (gates * hyper.hidden)
        .saturating_mul(hyper.hidden)
        .saturating_mul(4);
    if bytes <= 8 << 20 {
        rewind::autograd::cores()
    } else {
        1
    }
}

/// A checked `sample` command.
#[derive(Clone, Debug)]
pub struct SampleConfig {
    /// Checkpoint path.
    pub checkpoint: PathBuf,
    /// Starting text (`None`: a newline if the vocabulary has one).
    pub prime: Option<String>,
    /// Characters to generate.
    pub len: usize,
    /// Softmax temperature.
    pub temperature: f64,
    /// Top-k filter.
    pub top_k: Option<usize>,
    /// Seed.
    pub seed: u64,
}

/// A checked `eval` command.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Checkpoint path.
    pub checkpoint: PathBuf,
    /// The text whose held-out tenth is scored.
    pub data: Option<PathBuf>,
    /// Characters of the held-out text scored, from its start (`None`: all).
    pub limit: Option<usize>,
    /// Dynamic evaluation's settings, if asked for.
    pub dynamic: Option<DynamicConfig>,
}

/// Dynamic evaluation's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicConfig {
    /// The update rule.
    pub rule: DynRule,
    /// Learning rate η.
    pub lr: f64,
    /// Decay λ toward the trained weights.
    pub decay: f64,
    /// Characters per segment.
    pub segment: usize,
}

/// A checked `plot` command.
#[derive(Clone, Debug)]
pub struct PlotConfig {
    /// Metrics files, one run each.
    pub files: Vec<PathBuf>,
    /// The SVG to write.
    pub out: PathBuf,
    /// What the horizontal axis counts.
    pub x: Across,
}

/// A checked `connectivity` command.
#[derive(Clone, Debug)]
pub struct ConnectivityConfig {
    /// Checkpoint path.
    pub checkpoint: PathBuf,
    /// The text read, at least 2 characters.
    pub text: String,
    /// The predictions to draw, by the position of the last character each reads: ascending,
    /// each once, each below the text's length less 1.
    pub at: Vec<usize>,
    /// The SVG to write.
    pub out: PathBuf,
}

/// What the command line asks for.
// Made once per process: the train variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// Train.
    Train(TrainConfig),
    /// Sample.
    Sample(SampleConfig),
    /// Evaluate.
    Eval(EvalConfig),
    /// Plot.
    Plot(PlotConfig),
    /// Connectivity.
    Connectivity(ConnectivityConfig),
    /// Help or version was printed.
    Informed,
}

/// Parses and checks the command line.
pub fn parse<I, T>(args: I) -> Result<Parsed, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Some((cli, matches)) = flags::parse::<Cli, _, _>(args).map_err(Error::Usage)? else {
        return Ok(Parsed::Informed);
    };
    match cli.command {
        Some(Command::Sample(s)) => check_sample(s).map(Parsed::Sample),
        Some(Command::Eval(e)) => check_eval(e).map(Parsed::Eval),
        Some(Command::Plot(p)) => Ok(Parsed::Plot(PlotConfig {
            files: p.files,
            out: p.out,
            x: p.x,
        })),
        Some(Command::Connectivity(c)) => check_connectivity(c).map(Parsed::Connectivity),
        Some(Command::Train(t)) => {
            let sub = matches
                .subcommand_matches("train")
                .expect("the train subcommand matched");
            check_train(t, sub).map(Parsed::Train)
        }
        None => check_train(cli.train, &matches).map(Parsed::Train),
    }
}

fn check_train(a: TrainArgs, m: &ArgMatches) -> Result<TrainConfig, Error> {
    let usage = |m: String| Err(Error::Usage(m));
    if a.save_every == 0 || a.eval_every == 0 {
        return usage("--save-every and --eval-every must be at least 1".into());
    }
    if a.log_every == 0 {
        return usage("--log-every must be at least 1".into());
    }
    if a.shards == Some(0) {
        return usage("--shards must be at least 1".into());
    }
    let limit = match (a.steps, a.minutes) {
        (_, Some(min)) if !(min > 0.0 && Duration::try_from_secs_f64(min * 60.0).is_ok()) => {
            return usage(format!(
                "--minutes {} must be positive and at most {MAX_MINUTES:.1e} (the longest a timer counts)",
                number(min)
            ))
        }
        (_, Some(min)) => Limit::Minutes(min),
        (Some(0), _) => return usage("--steps must be at least 1".into()),
        (Some(s), None) => Limit::Steps(s),
        (None, None) => Limit::Steps(1500),
    };
    let names = [
        "cell",
        "layers",
        "hidden",
        "embed",
        "dropout",
        "head_dropout",
        "input_dropout",
        "seq_len",
        "batch",
        "lr",
        "optim",
        "clip",
        "bptt",
        "seed",
        "schedule",
        "min_lr",
        "warmup",
        "beta2",
        "weight_decay",
        "forget_bias",
        "ema",
    ];
    let explicit = names
        .into_iter()
        .filter(|n| m.value_source(n) == Some(ValueSource::CommandLine))
        .collect();
    let checkpoint = a.checkpoint.or_else(|| a.resume.clone());
    let hyper = Hyper {
        cell: a.cell,
        layers: a.layers,
        hidden: a.hidden,
        embed: a.embed,
        dropout: a.dropout,
        head_dropout: a.head_dropout,
        input_dropout: a.input_dropout,
        seq_len: a.seq_len,
        batch: a.batch,
        lr: a.lr,
        optim: a.optim,
        clip: a.clip,
        bptt: a.bptt,
        seed: a.seed,
        schedule: a.schedule,
        min_lr: a.min_lr,
        warmup: a.warmup,
        beta2: a.beta2,
        weight_decay: a.weight_decay.unwrap_or(if a.optim == OptimKind::Adamw {
            1e-2
        } else {
            0.0
        }),
        forget_bias: a.forget_bias,
        ema: a.ema,
    };
    hyper.check_values().map_err(|b| b.as_flag())?;
    Ok(TrainConfig {
        hyper,
        explicit,
        data: a.data,
        limit,
        checkpoint,
        overwrite: a.overwrite,
        save_every: a.save_every,
        eval_every: a.eval_every,
        resume: a.resume,
        shards: a.shards,
        log_every: a.log_every,
        tensorboard: a.tensorboard,
        mpi: a.mpi,
    })
}

fn check_sample(s: SampleArgs) -> Result<SampleConfig, Error> {
    if !(s.temperature > 0.0 && s.temperature.is_finite()) {
        return Err(Error::Usage(format!(
            "--temperature {} must be positive",
            number(s.temperature)
        )));
    }
    if s.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    if s.prime.as_deref() == Some("") {
        return Err(Error::Usage("--prime must not be empty".into()));
    }
    Ok(SampleConfig {
        checkpoint: s.checkpoint,
        prime: s.prime,
        len: s.len,
        temperature: s.temperature,
        top_k: s.top_k,
        seed: s.seed,
    })
}

fn check_connectivity(c: ConnectivityArgs) -> Result<ConnectivityConfig, Error> {
    let len = c.text.chars().count();
    if len < 2 {
        return Err(Error::Usage(format!(
            "--text has {len} character{}: a prediction reads at least one and predicts the next",
            if len == 1 { "" } else { "s" }
        )));
    }
    let last = len - 2;
    if let Some(t) = c.at.iter().find(|&&t| t > last) {
        return Err(Error::Usage(format!(
            "--at {t} is past the last prediction of the text: {len} characters have predictions at 0 to {last} (t predicts character t + 1)"
        )));
    }
    let mut at = c.at;
    if at.is_empty() {
        at.push(last);
    }
    at.sort_unstable();
    at.dedup();
    Ok(ConnectivityConfig {
        checkpoint: c.checkpoint,
        text: c.text,
        at,
        out: c.out,
    })
}

fn check_eval(e: EvalArgs) -> Result<EvalConfig, Error> {
    let usage = |m: String| Err(Error::Usage(m));
    if e.limit.is_some_and(|l| l < 2) {
        return usage("--limit must be at least 2: a first character, and one to score".into());
    }
    let dynamic_flags = [
        ("--rule", e.rule.is_some()),
        ("--dyn-lr", e.dyn_lr.is_some()),
        ("--dyn-decay", e.dyn_decay.is_some()),
        ("--segment", e.segment.is_some()),
    ];
    if !e.dynamic {
        if let Some((flag, _)) = dynamic_flags.iter().find(|(_, given)| *given) {
            return usage(format!(
                "{flag} is a setting of dynamic evaluation: add --dynamic, or drop it"
            ));
        }
        return Ok(EvalConfig {
            checkpoint: e.checkpoint,
            data: e.data,
            limit: e.limit,
            dynamic: None,
        });
    }
    let rule = e.rule.unwrap_or(DynRule::Rms);
    let (lr, decay) = rule.defaults();
    let (lr, decay) = (e.dyn_lr.unwrap_or(lr), e.dyn_decay.unwrap_or(decay));
    if !(lr >= 0.0 && (lr as f32).is_finite()) {
        return usage(format!(
            "--dyn-lr {} must be 0 (no adaptation) or positive, within f32's range",
            number(lr)
        ));
    }
    if !(0.0..=1.0).contains(&decay) {
        return usage(format!(
            "--dyn-decay {} must be in [0, 1]: the fraction of the way back to the trained weights each segment goes",
            number(decay)
        ));
    }
    let segment = e.segment.unwrap_or(SEGMENT);
    if segment == 0 {
        return usage("--segment must be at least 1".into());
    }
    Ok(EvalConfig {
        checkpoint: e.checkpoint,
        data: e.data,
        limit: e.limit,
        dynamic: Some(DynamicConfig {
            rule,
            lr,
            decay,
            segment,
        }),
    })
}
