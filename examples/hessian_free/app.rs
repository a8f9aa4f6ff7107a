//! The example's program: flags in; Adam, Hessian-free and L-BFGS each trained for the same
//! seconds from the same initial weights; progress lines, a table and the curves out. Tests drive it through
//! [`run`].

#[path = "cg.rs"]
pub mod cg;
#[path = "data.rs"]
pub mod data;
#[path = "../support/flags.rs"]
mod flags;
#[path = "hf.rs"]
pub mod hf;
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

use clap::{Parser, ValueEnum};
use rewind::autograd::io::{check_writable, write_atomic};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::Module;
use rewind::optim::Adam;

use data::Batch;
use hf::Settings;
use model::Net;
use train::{AdamTrainer, Clock, Curve, HfTrainer, LbfgsTrainer, Trainer};

/// What went wrong, as one line a person can act on.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A flag or its value is not acceptable.
    Usage(String),
    /// Training diverged.
    Training(String),
    /// The figure cannot be written.
    Output(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Training(m) | Error::Output(m) => f.write_str(m),
        }
    }
}

/// Which trainers to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Adam on minibatches.
    Adam,
    /// Hessian-free.
    Hf,
    /// L-BFGS, full batch on a fixed training set.
    Lbfgs,
    /// Adam, then Hessian-free, from the same initial weights.
    Both,
    /// Adam, Hessian-free, then L-BFGS, from the same initial weights.
    All,
}

// Numeric flags allow negative numbers so that `--seconds -1` is read as a value and refused by
// its range, instead of being taken for an unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "hessian_free",
    about = "Train a tanh RNN on the adding problem with Adam, with Hessian-free optimisation \
             (Gauss-Newton products, truncated CG, Levenberg-Marquardt damping) and with L-BFGS \
             (full batch, strong-Wolfe line search), each for the same seconds; report held-out \
             MSE and accuracy and draw the curves."
)]
pub struct Cli {
    /// The trainers to run.
    #[arg(long, value_enum, default_value_t = Method::All)]
    pub method: Method,
    /// Seconds of training per method (measurement not counted).
    #[arg(long, allow_negative_numbers = true, default_value_t = 300.0)]
    pub seconds: f64,
    /// Stop each method after this many updates even if seconds remain.
    #[arg(long, allow_negative_numbers = true)]
    pub updates: Option<usize>,
    /// T, the steps of each sequence.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100)]
    pub seq_len: usize,
    /// Seed of the initial weights and of the data.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Write the held-out curves to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// H, the hidden units.
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    pub hidden: usize,
    /// The spectral radius W_hh is scaled to at the start.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub radius: f64,
    /// Held-out sequences, drawn once and shared by both methods.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1000)]
    pub heldout: usize,
    /// Seconds of training between held-out measurements and progress lines.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    pub eval_every: f64,
    /// Adam: sequences per update.
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    pub batch: usize,
    /// Adam: the learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    pub lr: f64,
    /// Adam: the largest global gradient norm; larger ones are scaled down to it.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub clip: f64,
    /// HF: sequences of each gradient batch; L-BFGS: sequences of its fixed training set.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1000)]
    pub grad_batch: usize,
    /// HF: sequences of the curvature minibatch (the first of the gradient batch).
    #[arg(long, allow_negative_numbers = true, default_value_t = 200)]
    pub curvature_batch: usize,
    /// HF: the most CG iterations per outer iteration.
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    pub cg_iterations: usize,
    /// HF: λ at the start.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub lambda: f64,
    /// HF: μ of structural damping (0: none).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub structural: f64,
}

/// What a finished run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// One curve per method run, in the order run.
    pub curves: Vec<Curve>,
    /// Seconds of training each method had.
    pub train_seconds: Vec<f64>,
    /// Where the figure was written.
    pub svg: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The methods were trained and measured.
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
        Err(e) => flags::failure("hessian_free", &e, matches!(e, Error::Usage(_))),
    }
}

/// Parses the flags (the program name first), trains, measures and draws.
pub fn run<I, T>(args: I) -> Result<Outcome, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Some((cli, _)) = flags::parse::<Cli, _, _>(args).map_err(Error::Usage)? else {
        return Ok(Outcome::Informed);
    };
    check(&cli)?;
    let heldout = Batch::draw(
        cli.seq_len,
        cli.heldout,
        &mut StdRng::seed_from_u64(cli.seed.wrapping_add(2)),
    );
    let clock = Clock {
        budget: cli.seconds,
        updates: cli.updates,
        every: cli.eval_every,
    };
    let mut trainers: Vec<Box<dyn Trainer>> = Vec::new();
    if matches!(cli.method, Method::Adam | Method::Both | Method::All) {
        trainers.push(Box::new(AdamTrainer {
            adam: Adam::new(cli.lr),
            batch: cli.batch,
            steps: cli.seq_len,
            clip: cli.clip,
        }));
    }
    if matches!(cli.method, Method::Hf | Method::Both | Method::All) {
        let settings = Settings {
            curvature_batch: cli.curvature_batch,
            cg: cg::Options {
                max_iterations: cli.cg_iterations,
                ..cg::Options::default()
            },
            lambda: cli.lambda,
            structural: cli.structural,
            ..Settings::default()
        };
        trainers.push(Box::new(HfTrainer::new(
            settings,
            cli.grad_batch,
            cli.seq_len,
        )));
    }
    if matches!(cli.method, Method::Lbfgs | Method::All) {
        trainers.push(Box::new(LbfgsTrainer::new(cli.grad_batch, cli.seq_len)));
    }
    let mut curves = Vec::new();
    for trainer in &mut trainers {
        let mut net: Net = Net::new(cli.hidden, cli.radius, &mut StdRng::seed_from_u64(cli.seed));
        if curves.is_empty() {
            println!(
                "Adding problem, T = {}: tanh RNN, H = {} ({} parameters, W_hh at spectral radius \
                 {}); {} held-out sequences; {} s of training per method",
                cli.seq_len,
                cli.hidden,
                net.num_params(),
                cli.radius,
                cli.heldout,
                cli.seconds
            );
        }
        println!("{}", trainer.describe());
        let mut rng = StdRng::seed_from_u64(cli.seed.wrapping_add(1));
        let curve = train::run(trainer.as_mut(), &mut net, &heldout, clock, &mut rng)
            .map_err(Error::Training)?;
        curves.push(curve);
    }
    println!("\n{}", table(&curves));
    println!("(predicting the mean, 1.0, has MSE 1/6 ≈ 0.167; right means |error| < 0.04)");
    if let Some(path) = &cli.svg {
        write_atomic(path, svg::render(&curves, cli.seq_len).as_bytes())
            .map_err(|e| Error::Output(e.to_string()))?;
        println!("wrote {}", path.display());
    }
    Ok(Outcome::Trained(Summary {
        train_seconds: curves.iter().map(|c| c.last().seconds).collect(),
        curves,
        svg: cli.svg.clone(),
    }))
}

/// The final measurements, a row per method: the loss reached against seconds and against
/// gradient evaluations (one per Adam or HF update, each closure call of L-BFGS).
pub fn table(curves: &[Curve]) -> String {
    let mut s = String::from(
        "method   updates   seconds   held-out MSE   accuracy   gradient evaluations   \
         Gauss-Newton products\n",
    );
    for c in curves {
        let last = c.last();
        s.push_str(&format!(
            "{:<6} {:>9} {:>9.1} {:>14.5} {:>9.1}% {:>22} {:>23}\n",
            c.method,
            last.updates,
            last.seconds,
            last.mse,
            100.0 * last.accuracy,
            c.evaluations,
            c.products
        ));
    }
    s
}

fn check(cli: &Cli) -> Result<(), Error> {
    let at_least_one = [
        ("--hidden", cli.hidden),
        ("--heldout", cli.heldout),
        ("--batch", cli.batch),
        ("--grad-batch", cli.grad_batch),
        ("--curvature-batch", cli.curvature_batch),
        ("--cg-iterations", cli.cg_iterations),
        ("--updates", cli.updates.unwrap_or(1)),
    ];
    for (flag, value) in at_least_one {
        if value == 0 {
            return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
        }
    }
    if cli.seq_len < 2 {
        return Err(Error::Usage(format!(
            "--seq-len must be at least 2 (a marked step in each half), got {}",
            cli.seq_len
        )));
    }
    if cli.curvature_batch > cli.grad_batch {
        return Err(Error::Usage(format!(
            "--curvature-batch {} is more than --grad-batch {}: the curvature minibatch is part \
             of the gradient batch",
            cli.curvature_batch, cli.grad_batch
        )));
    }
    let positive = [
        ("--seconds", cli.seconds),
        ("--radius", cli.radius),
        ("--eval-every", cli.eval_every),
        ("--lr", cli.lr),
        ("--clip", cli.clip),
        ("--lambda", cli.lambda),
    ];
    for (flag, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::Usage(format!(
                "{flag} must be a positive number, got {value}"
            )));
        }
    }
    if !(cli.structural.is_finite() && cli.structural >= 0.0) {
        return Err(Error::Usage(format!(
            "--structural must be a number ≥ 0, got {}",
            cli.structural
        )));
    }
    if let Some(path) = &cli.svg {
        check_writable(path).map_err(|e| Error::Output(e.to_string()))?;
    }
    Ok(())
}
