//! The example's program: command line in, exit code out. Tests drive it through [`run`].

#[path = "checkpoint.rs"]
pub mod checkpoint;
#[path = "cli.rs"]
pub mod cli;
#[path = "connectivity.rs"]
pub mod connectivity;
#[path = "data.rs"]
pub mod data;
#[path = "eval.rs"]
pub mod eval;
#[path = "../support/plot.rs"]
mod figure;
#[path = "../support/flags.rs"]
mod flags;
#[path = "lock.rs"]
pub mod lock;
#[path = "memory.rs"]
pub mod memory;
#[path = "metrics.rs"]
pub mod metrics;
#[path = "model.rs"]
pub mod model;
#[path = "output.rs"]
mod output;
#[path = "plot.rs"]
pub mod plot;
#[path = "ranks.rs"]
mod ranks;
#[path = "sample.rs"]
mod sample;
#[path = "signals.rs"]
mod signals;
#[path = "tensorboard.rs"]
pub mod tensorboard;
#[path = "train.rs"]
pub mod train;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// What went wrong, as one line a person can act on.
#[derive(Debug)]
pub enum Error {
    /// A flag or its value is not acceptable.
    Usage(String),
    /// The text to learn from cannot be used.
    Data(String),
    /// A checkpoint cannot be read, written, or does not fit.
    Checkpoint(String),
    /// Training diverged or was interrupted.
    Training(String),
    /// Standard output is closed or full; a training run saved first.
    Output(String),
    /// A metrics file, a figure (a curve, a connectivity view) or a TensorBoard event file cannot
    /// be read or written.
    Metrics(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::Data(m)
            | Error::Checkpoint(m)
            | Error::Training(m)
            | Error::Output(m)
            | Error::Metrics(m) => f.write_str(m),
        }
    }
}

/// Prints `char_rnn: <label>: <message>` on standard error, `label` being `note` or `warning`;
/// a closed standard error loses the message, never the run.
pub fn tell(label: &str, message: &str) {
    let _ = writeln!(std::io::stderr(), "char_rnn: {label}: {message}");
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Training stopped at its limit, at this step.
    Trained { step: usize, val_loss: f64 },
    /// Ctrl-C, SIGTERM or SIGHUP: a checkpoint was saved at this step.
    Interrupted { step: usize },
    /// Text was sampled.
    Sampled(String),
    /// The held-out text was scored: the static figure, and the dynamic one if asked for.
    Evaluated(eval::Scores),
    /// The curve of this many runs was drawn.
    Plotted(usize),
    /// The connectivity of these predictions was drawn.
    Connectivity(Vec<connectivity::Strip>),
    /// Help or version was printed.
    Informed,
}

/// Parses `args` (the program name first) and runs the command.
pub fn run<I, T>(args: I) -> Result<Outcome, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match cli::parse(args)? {
        cli::Parsed::Train(t) => train::run(&t),
        cli::Parsed::Sample(s) => sample::run(&s).map(Outcome::Sampled),
        cli::Parsed::Eval(e) => eval::run(&e).map(Outcome::Evaluated),
        cli::Parsed::Plot(p) => plot::run(&p).map(Outcome::Plotted),
        cli::Parsed::Connectivity(c) => connectivity::run(&c).map(Outcome::Connectivity),
        cli::Parsed::Informed => Ok(Outcome::Informed),
    }
}

/// `run` with its result as an exit code: 0 done, 1 failed, 2 bad usage, 130 interrupted.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match run(args) {
        Ok(Outcome::Interrupted { .. }) => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => flags::failure("char_rnn", &e, matches!(e, Error::Usage(_))),
    }
}
