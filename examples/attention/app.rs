//! The example's program: flags in, a model trained for a stretch of wall clock and measured, a
//! summary line and optionally an attention map out. Tests drive it through [`run`].

#[path = "cell.rs"]
pub mod cell;
#[path = "data.rs"]
pub mod data;
#[path = "../support/flags.rs"]
mod flags;
#[path = "model.rs"]
pub mod model;
#[path = "../support/plot.rs"]
mod plot;
#[path = "svg.rs"]
pub mod svg;
#[path = "train.rs"]
pub mod train;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rewind::autograd::io::check_writable;

use cell::Kind;

/// What went wrong, as one line a person can act on.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A flag or its value is not acceptable.
    Usage(String),
    /// The text cannot be read or is too short.
    Data(String),
    /// Training diverged.
    Training(String),
    /// The attention map cannot be written.
    Output(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Data(m) | Error::Training(m) | Error::Output(m) => {
                f.write_str(m)
            }
        }
    }
}

// Numeric flags allow negative numbers so that `--window -1` is read as a value and refused by
// its range, instead of being taken for an unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "attention",
    about = "Train a character-level LSTM language model whose readout also attends over its \
             own last W hidden states, for a stretch of wall clock; report validation nats/char \
             and draw the attention over a line of held-out text."
)]
pub struct Cli {
    /// The attention of the top layer.
    #[arg(long, value_enum, default_value_t = Kind::Additive)]
    pub attention: Kind,
    /// W, the past hidden states attended over (carried across chunk boundaries).
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    pub window: usize,
    /// A, the features of queries and keys.
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    pub key_size: usize,
    /// H of every layer.
    #[arg(long, allow_negative_numbers = true, default_value_t = 256)]
    pub hidden: usize,
    /// Layers: plain LSTM layers, then the attentive one on top.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
    pub layers: usize,
    /// A UTF-8 text; the last 10% is held out for validation.
    #[arg(long, default_value = "../shared/data/tinyshakespeare.txt")]
    pub data: PathBuf,
    /// Seed of the initialisation.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Minutes of training (evaluation not counted, so every model gets the same clock).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0)]
    pub minutes: f64,
    /// Stop after this many updates even if minutes remain.
    #[arg(long, allow_negative_numbers = true)]
    pub updates: Option<usize>,
    /// Seconds of training between evaluations on the held-out text.
    #[arg(long, allow_negative_numbers = true, default_value_t = 60.0)]
    pub eval_every: f64,
    /// Steps per chunk of truncated BPTT.
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    pub chunk: usize,
    /// Parallel lanes of the stream (the batch).
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    pub lanes: usize,
    /// Adam's learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2e-3)]
    pub lr: f64,
    /// The largest global gradient norm; larger ones are scaled down to it.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    pub clip: f64,
    /// Write the attention weights over a line of held-out text to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Cut each update's lanes into this many shards, each on a tape of its own on whichever
    /// core is free (default: one per core); 1 runs the update on one tape.
    #[arg(long, allow_negative_numbers = true)]
    pub shards: Option<usize>,
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The attention of the top layer.
    pub attention: Kind,
    /// W (not used without attention).
    pub window: usize,
    /// Scalar parameters.
    pub params: usize,
    /// Optimizer updates done.
    pub updates: usize,
    /// The lowest validation loss seen, nats per character.
    pub best_val: f64,
    /// Seconds spent training (the clock `--minutes` limits).
    pub train_seconds: f64,
    /// Seconds in all, evaluation included.
    pub seconds: f64,
    /// Where the attention map was written.
    pub svg: Option<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = match self.attention {
            Kind::None => "-".to_string(),
            _ => self.window.to_string(),
        };
        write!(
            f,
            "attention {}, W {window}: {} parameters, {} updates, best validation {:.4} \
             nats/char, {:.0} s training ({:.0} s in all)",
            self.attention.name(),
            self.params,
            self.updates,
            self.best_val,
            self.train_seconds,
            self.seconds
        )
    }
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The model was trained and measured.
    Trained(Summary),
    /// Help or version was printed.
    Informed,
}

/// Runs the command line and turns its outcome into an exit code: 2 for a usage error, 1 for
/// any other error, each printed as one line.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match run(args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => flags::failure("attention", &e, matches!(e, Error::Usage(_))),
    }
}

/// Parses the flags (the program name first), trains, evaluates and draws.
pub fn run<I, T>(args: I) -> Result<Outcome, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Some((cli, _)) = flags::parse::<Cli, _, _>(args).map_err(Error::Usage)? else {
        return Ok(Outcome::Informed);
    };
    check(&cli)?;
    train::run(&cli).map(Outcome::Trained)
}

fn check(cli: &Cli) -> Result<(), Error> {
    let at_least_one = [
        ("--window", cli.window),
        ("--key-size", cli.key_size),
        ("--hidden", cli.hidden),
        ("--layers", cli.layers),
        ("--chunk", cli.chunk),
        ("--lanes", cli.lanes),
        ("--updates", cli.updates.unwrap_or(1)),
        ("--shards", cli.shards.unwrap_or(1)),
    ];
    for (flag, value) in at_least_one {
        if value == 0 {
            return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
        }
    }
    let positive = [
        ("--minutes", cli.minutes),
        ("--eval-every", cli.eval_every),
        ("--lr", cli.lr),
        ("--clip", cli.clip),
    ];
    for (flag, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::Usage(format!(
                "{flag} must be a positive number, got {value}"
            )));
        }
    }
    if let Some(path) = &cli.svg {
        if cli.attention == Kind::None {
            return Err(Error::Usage(
                "--svg draws attention weights: it needs --attention additive or dot".into(),
            ));
        }
        // Before training, not after it: a file that cannot be written would cost the run.
        check_writable(path).map_err(|e| Error::Output(e.to_string()))?;
    }
    Ok(())
}
