//! The example's program: flags in; each cell, optimizer, strategy and seed trained for the same
//! characters (or the same wall-clock); tables and an SVG of the validation curves out. Tests
//! drive it through [`run`].

#[path = "data.rs"]
pub mod data;
#[path = "../support/flags.rs"]
mod flags;
#[path = "../support/plot.rs"]
mod plot;
#[path = "study.rs"]
pub mod study;
#[path = "svg.rs"]
pub mod svg;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rewind::autograd::io::{check_writable, write_atomic};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{GruCell, RnnCell, StandardCell, Stream};
use rewind::optim::{clip_grad_norm, Adam, Optimizer, Sgd};

use study::{perplexity, spread, Method, Net, Spread};

/// What went wrong, as one line a person can act on.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A flag or its value is not acceptable.
    Usage(String),
    /// The text cannot be read or is too short.
    Data(String),
    /// A table or figure cannot be written.
    Output(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) | Error::Data(m) | Error::Output(m) => f.write_str(m),
        }
    }
}

/// A recurrent cell of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CellKind {
    /// The vanilla tanh RNN.
    Rnn,
    /// The GRU.
    Gru,
}

/// An optimizer of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimKind {
    /// SGD, --sgd-lr (D2L: 1).
    Sgd,
    /// Adam, --adam-lr.
    Adam,
}

/// A strategy of the study, by its flag name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyKind {
    /// Every path inside the window.
    Full,
    /// Cut every --k steps.
    Trunc,
    /// Randomized truncation with --pi.
    Rand,
}

// Numeric flags allow negative numbers so that `--k -1` is read as a value and refused, instead
// of being taken for an unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "truncation_study",
    about = "Train character models on The Time Machine with full, truncated and randomized-\
             truncation BPTT; report validation perplexity, time, tape memory and the gradient's \
             bias and variance against the full gradient."
)]
struct Cli {
    /// The text (D2L's tokens: lowercase letters and a space for each run of anything else).
    #[arg(long, default_value = "../shared/data/timemachine.txt")]
    data: PathBuf,
    /// Passes over the training tokens per run (the equal-characters mode).
    #[arg(long, allow_negative_numbers = true, default_value_t = 5)]
    epochs: usize,
    /// Train each run for this many minutes of training time instead of --epochs (the
    /// equal-wall-clock mode); validation after every epoch and at the end.
    #[arg(long, allow_negative_numbers = true)]
    minutes: Option<f64>,
    /// Seeds 0..N: initialisation and the randomized strategy's draws.
    #[arg(long, allow_negative_numbers = true, default_value_t = 3)]
    seeds: u64,
    /// Cells, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "rnn,gru")]
    cells: Vec<CellKind>,
    /// Optimizers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sgd,adam")]
    optims: Vec<OptimKind>,
    /// Strategies, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "full,trunc,rand")]
    strategies: Vec<StrategyKind>,
    /// Use only the first N training tokens (0: all of them).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    train_tokens: usize,
    /// Hidden units.
    #[arg(long, allow_negative_numbers = true, default_value_t = 256)]
    hidden: usize,
    /// Steps per window: one update per window (D2L's sequence length).
    #[arg(long, allow_negative_numbers = true, default_value_t = 35)]
    seq: usize,
    /// Parallel lanes (D2L's batch).
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    batch: usize,
    /// Truncation: steps between cuts inside a window.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10)]
    k: usize,
    /// Randomized truncation: the probability of keeping each step's gradient (0.9: a cut
    /// every 10 steps on average).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pi: f64,
    /// SGD's learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    sgd_lr: f64,
    /// Adam's learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2e-3)]
    adam_lr: f64,
    /// Global gradient-norm clipping threshold, for every optimizer.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    clip: f64,
    /// Draws of the randomized gradient at the fixed point.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100)]
    draws: usize,
    /// The directory the SVG and the markdown tables are written into (truncation_study.svg and
    /// .md; truncation_study_wallclock.* with --minutes).
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
}

/// Validation after a stretch of training.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Epochs completed (fractional when a wall-clock budget ends mid-epoch).
    pub epoch: f64,
    /// Training seconds so far (validation excluded).
    pub seconds: f64,
    /// Validation perplexity.
    pub ppl: f64,
}

/// One training run.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// The cell.
    pub cell: CellKind,
    /// The optimizer.
    pub optim: OptimKind,
    /// The strategy.
    pub method: Method,
    /// The seed.
    pub seed: u64,
    /// Validation after each epoch (and at the end of a wall-clock budget).
    pub points: Vec<Point>,
    /// Characters trained on (targets counted).
    pub chars: usize,
    /// The largest tape of any update, in bytes.
    pub peak_bytes: usize,
}

/// One strategy's gradient at the fixed point of one cell and seed.
#[derive(Clone, Debug, PartialEq)]
pub struct GradRow {
    /// The cell.
    pub cell: CellKind,
    /// The strategy.
    pub method: Method,
    /// The seed whose trained weights are the fixed point.
    pub seed: u64,
    /// Its spread against the full gradient.
    pub spread: Spread,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The study ran; the figure and tables are at these paths.
    Measured {
        /// Every training run.
        curves: Vec<Curve>,
        /// The gradient measurements.
        grads: Vec<GradRow>,
        /// The SVG of the curves.
        svg: PathBuf,
        /// The markdown tables.
        tables: PathBuf,
    },
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
        Err(e) => flags::failure("truncation_study", &e, matches!(e, Error::Usage(_))),
    }
}

/// Parses the flags, runs the study, prints the tables and writes them and the figure.
pub fn run<I, T>(args: I) -> Result<Outcome, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Some((cli, _)) = flags::parse::<Cli, _, _>(args).map_err(Error::Usage)? else {
        return Ok(Outcome::Informed);
    };
    check(&cli)?;
    let (mut train, valid) = data::load(&cli.data, cli.batch, cli.seq).map_err(Error::Data)?;
    if cli.train_tokens > 0 {
        train.truncate(cli.train_tokens.max(cli.batch * (cli.seq + 1)));
    }
    println!(
        "{} training and {} validation characters ({} symbols); hidden {}, window {}, batch {}, \
         truncation k = {}, randomized pi = {}, SGD lr {}, Adam lr {}, clip {}; {}",
        train.len(),
        valid.len(),
        data::VOCAB,
        cli.hidden,
        cli.seq,
        cli.batch,
        cli.k,
        cli.pi,
        cli.sgd_lr,
        cli.adam_lr,
        cli.clip,
        match cli.minutes {
            Some(m) => format!("{m} minutes of training per run"),
            None => format!("{} epochs per run", cli.epochs),
        }
    );
    let mut train = Stream::new(train, cli.batch);
    let mut valid = Stream::new(valid, cli.batch);
    let mut curves = Vec::new();
    let mut grads = Vec::new();
    for &cell in &cli.cells {
        let (c, g) = match cell {
            CellKind::Rnn => study_cell::<RnnCell<f32>>(cell, &cli, &mut train, &mut valid),
            CellKind::Gru => study_cell::<GruCell<f32>>(cell, &cli, &mut train, &mut valid),
        };
        curves.extend(c);
        grads.extend(g);
    }
    let mut tables = summary_table(&curves);
    tables.push('\n');
    tables.push_str(&epoch_table(&curves));
    tables.push('\n');
    tables.push_str(&grad_table(&grads));
    println!("\n{tables}");
    let [svg, tables_path] = outputs(&cli);
    write(&svg, &svg::curves(&curves, cli.minutes.is_some()))?;
    write(&tables_path, &tables)?;
    println!("wrote {} and {}", svg.display(), tables_path.display());
    Ok(Outcome::Measured {
        curves,
        grads,
        svg,
        tables: tables_path,
    })
}

fn check(cli: &Cli) -> Result<(), Error> {
    let at_least_one = [
        ("--epochs", cli.epochs),
        ("--seeds", cli.seeds as usize),
        ("--hidden", cli.hidden),
        ("--seq", cli.seq),
        ("--batch", cli.batch),
        ("--k", cli.k),
        ("--draws", cli.draws),
    ];
    for (flag, value) in at_least_one {
        if value == 0 {
            return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
        }
    }
    for (flag, value) in [
        ("--sgd-lr", cli.sgd_lr),
        ("--adam-lr", cli.adam_lr),
        ("--clip", cli.clip),
        ("--minutes", cli.minutes.unwrap_or(1.0)),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::Usage(format!(
                "{flag} must be a positive number, got {value}"
            )));
        }
    }
    if !(cli.pi > 0.0 && cli.pi <= 1.0) {
        return Err(Error::Usage(format!(
            "--pi must be in (0, 1], got {}",
            cli.pi
        )));
    }
    for (flag, empty) in [
        ("--cells", cli.cells.is_empty()),
        ("--optims", cli.optims.is_empty()),
        ("--strategies", cli.strategies.is_empty()),
    ] {
        if empty {
            return Err(Error::Usage(format!("{flag} needs at least one name")));
        }
    }
    if !cli.out_dir.is_dir() {
        return Err(Error::Usage(format!(
            "--out-dir {} is not an existing directory",
            cli.out_dir.display()
        )));
    }
    // Before training, not after it: a file that cannot be written would cost the whole study.
    for path in outputs(cli) {
        check_writable(&path).map_err(|e| Error::Output(e.to_string()))?;
    }
    Ok(())
}

/// The figure and the tables the study writes, in `--out-dir`.
fn outputs(cli: &Cli) -> [PathBuf; 2] {
    let stem = match cli.minutes {
        Some(_) => "truncation_study_wallclock",
        None => "truncation_study",
    };
    [
        cli.out_dir.join(format!("{stem}.svg")),
        cli.out_dir.join(format!("{stem}.md")),
    ]
}

fn method(kind: StrategyKind, cli: &Cli) -> Method {
    match kind {
        StrategyKind::Full => Method::Full,
        StrategyKind::Trunc => Method::Truncated { k: cli.k },
        StrategyKind::Rand => Method::Randomized { pi: cli.pi },
    }
}

/// Every run of one cell, and the gradient spreads at the weights its full-strategy run with
/// the first optimizer reached (or its initial weights when full is not among the strategies).
fn study_cell<C: StandardCell<f32>>(
    cell: CellKind,
    cli: &Cli,
    train: &mut Stream,
    valid: &mut Stream,
) -> (Vec<Curve>, Vec<GradRow>) {
    let mut curves = Vec::new();
    let mut grads = Vec::new();
    for seed in 0..cli.seeds {
        let mut fixed: Option<Net<C, f32>> = None;
        for (o, &optim) in cli.optims.iter().enumerate() {
            for &kind in &cli.strategies {
                let m = method(kind, cli);
                let mut net =
                    Net::<C, f32>::new(data::VOCAB, cli.hidden, &mut StdRng::seed_from_u64(seed));
                let curve = train_run(&mut net, cell, optim, m, seed, cli, train, valid);
                let last = curve.points.last().expect("a run validates at least once");
                println!(
                    "{cell:?} {optim:?} {m} seed {seed}: val ppl {:.2} after {:.2} epochs, {:.1} s, peak tape {:.1} MiB",
                    last.ppl,
                    last.epoch,
                    last.seconds,
                    mib(curve.peak_bytes)
                );
                curves.push(curve);
                if o == 0 && m == Method::Full {
                    fixed = Some(net);
                }
            }
        }
        let net = fixed
            .unwrap_or_else(|| Net::new(data::VOCAB, cli.hidden, &mut StdRng::seed_from_u64(seed)));
        for &kind in &cli.strategies {
            let m = method(kind, cli);
            let draws = if matches!(m, Method::Randomized { .. }) {
                cli.draws
            } else {
                1
            };
            let s = spread(&net, m, train, 0, cli.seq, draws);
            println!(
                "{cell:?} {m} seed {seed}: |g|^2 {:.3e}, MSD/|g|^2 {:.4}, bias^2/|g|^2 {:.4}, var/|g|^2 {:.4} ({draws} draws)",
                s.full_sq,
                s.msd / s.full_sq,
                s.bias_sq / s.full_sq,
                s.variance / s.full_sq
            );
            grads.push(GradRow {
                cell,
                method: m,
                seed,
                spread: s,
            });
        }
    }
    (curves, grads)
}

/// Trains `net` for --epochs passes or --minutes of training time, validating after each epoch.
#[allow(clippy::too_many_arguments)]
fn train_run<C: StandardCell<f32>>(
    net: &mut Net<C, f32>,
    cell: CellKind,
    optim: OptimKind,
    method: Method,
    seed: u64,
    cli: &Cli,
    train: &mut Stream,
    valid: &mut Stream,
) -> Curve {
    let mut opt: Box<dyn Optimizer<f32>> = match optim {
        OptimKind::Sgd => Box::new(Sgd::new(cli.sgd_lr)),
        OptimKind::Adam => Box::new(Adam::new(cli.adam_lr)),
    };
    let budget = cli.minutes.map(|m| Duration::from_secs_f64(m * 60.0));
    let mut curve = Curve {
        cell,
        optim,
        method,
        seed,
        points: Vec::new(),
        chars: 0,
        peak_bytes: 0,
    };
    let mut spent = Duration::ZERO;
    let mut epoch = 0;
    loop {
        train.rewind();
        let mut bptt = method.driver(net, cli.seq, cli.batch, seed * 1000 + epoch as u64);
        let started = Instant::now();
        let mut out_of_time = false;
        while let Some(mut update) = method.update(net, &mut bptt, train, &mut curve.peak_bytes) {
            clip_grad_norm(&mut update.grads, cli.clip);
            opt.step(net, &update.grads);
            curve.chars += update.targets;
            if budget.is_some_and(|b| spent + started.elapsed() >= b) {
                out_of_time = true;
                break;
            }
        }
        spent += started.elapsed();
        let done = train.position() as f64 / train.steps() as f64;
        epoch += 1;
        curve.points.push(Point {
            epoch: (epoch - 1) as f64 + done,
            seconds: spent.as_secs_f64(),
            ppl: perplexity(net, valid, cli.seq),
        });
        if out_of_time || (budget.is_none() && epoch == cli.epochs) {
            return curve;
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Mean, sample standard deviation, min and max.
fn stats(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, sd, min, max)
}

/// The curves grouped by cell, optimizer and strategy, in the order they ran.
pub fn groups(curves: &[Curve]) -> Vec<Vec<&Curve>> {
    let mut out: Vec<Vec<&Curve>> = Vec::new();
    for c in curves {
        match out.iter_mut().find(|g| {
            let h = g[0];
            (h.cell, h.optim, h.method) == (c.cell, c.optim, c.method)
        }) {
            Some(g) => g.push(c),
            None => out.push(vec![c]),
        }
    }
    out
}

fn summary_table(curves: &[Curve]) -> String {
    let mut s = String::new();
    s.push_str("| cell | optimizer | strategy | final val ppl, mean ± sd [min, max] | epochs | train s/epoch | peak tape MiB | characters |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|---:|\n");
    for g in groups(curves) {
        let last: Vec<&Point> = g
            .iter()
            .map(|c| c.points.last().expect("validated"))
            .collect();
        let (ppl, sd, lo, hi) = stats(&last.iter().map(|p| p.ppl).collect::<Vec<_>>());
        let (epochs, ..) = stats(&last.iter().map(|p| p.epoch).collect::<Vec<_>>());
        let (per_epoch, ..) = stats(&last.iter().map(|p| p.seconds / p.epoch).collect::<Vec<_>>());
        let peak = g.iter().map(|c| c.peak_bytes).max().unwrap_or(0);
        let (chars, ..) = stats(&g.iter().map(|c| c.chars as f64).collect::<Vec<_>>());
        let _ = writeln!(
            s,
            "| {:?} | {:?} | {} | {ppl:.2} ± {sd:.2} [{lo:.2}, {hi:.2}] | {epochs:.2} | {per_epoch:.1} | {:.1} | {chars:.0} |",
            g[0].cell,
            g[0].optim,
            g[0].method,
            mib(peak)
        );
    }
    s
}

fn epoch_table(curves: &[Curve]) -> String {
    let epochs = curves.iter().map(|c| c.points.len()).max().unwrap_or(0);
    let mut s = String::from("| cell | optimizer | strategy |");
    for e in 1..=epochs {
        let _ = write!(s, " epoch {e} |");
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---:|".repeat(epochs));
    s.push('\n');
    for g in groups(curves) {
        let _ = write!(
            s,
            "| {:?} | {:?} | {} |",
            g[0].cell, g[0].optim, g[0].method
        );
        for e in 0..epochs {
            let at: Vec<f64> = g
                .iter()
                .filter_map(|c| c.points.get(e))
                .map(|p| p.ppl)
                .collect();
            if at.is_empty() {
                s.push_str(" |");
            } else {
                let (mean, sd, ..) = stats(&at);
                let _ = write!(s, " {mean:.2} ± {sd:.2} |");
            }
        }
        s.push('\n');
    }
    s
}

fn grad_table(rows: &[GradRow]) -> String {
    let mut s = String::new();
    s.push_str("| cell | strategy | ‖g‖² | E‖ĝ − g‖² / ‖g‖² | bias² / ‖g‖² | variance / ‖g‖² |\n");
    s.push_str("|---|---|---:|---:|---:|---:|\n");
    let mut seen: Vec<(CellKind, Method)> = Vec::new();
    for r in rows {
        if seen.contains(&(r.cell, r.method)) {
            continue;
        }
        seen.push((r.cell, r.method));
        let same: Vec<&Spread> = rows
            .iter()
            .filter(|q| (q.cell, q.method) == (r.cell, r.method))
            .map(|q| &q.spread)
            .collect();
        let col = |f: &dyn Fn(&Spread) -> f64| {
            let (mean, sd, ..) = stats(&same.iter().map(|s| f(s)).collect::<Vec<_>>());
            format!("{mean:.4} ± {sd:.4}")
        };
        let (g2, g2sd, ..) = stats(&same.iter().map(|s| s.full_sq).collect::<Vec<_>>());
        let _ = writeln!(
            s,
            "| {:?} | {} | {g2:.3e} ± {g2sd:.1e} | {} | {} | {} |",
            r.cell,
            r.method,
            col(&|s| s.msd / s.full_sq),
            col(&|s| s.bias_sq / s.full_sq),
            col(&|s| s.variance / s.full_sq)
        );
    }
    s
}

/// Writes `contents` atomically: a failed write leaves the previous file as it was.
fn write(path: &Path, contents: &str) -> Result<(), Error> {
    write_atomic(path, contents.as_bytes()).map_err(|e| Error::Output(e.to_string()))
}
