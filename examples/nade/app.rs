//! The example's program: flags in, three models trained and measured, a table and two SVG files
//! out. Tests drive it through [`run`].

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

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use rewind::autograd::io::{check_writable, write_atomic};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::seq::SliceRandom;
use rewind::autograd::rand::SeedableRng;
use rewind::optim::{Adam, Optimizer};
use rewind::prelude::*;

use data::PIXELS;
use model::{nll, sample, Autoregressive, Bernoulli, Fvsbn, Nade};

/// What went wrong, as one line a person can act on.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A flag or its value is not acceptable.
    Usage(String),
    /// The digits file cannot be read or parsed.
    Data(String),
    /// A figure cannot be written.
    Output(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Data(m) | Error::Output(m) => f.write_str(m),
        }
    }
}

// Numeric flags allow negative numbers so that `--lr -1` is read as a value and refused by its
// range, instead of being taken for an unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "nade",
    about = "Fit independent Bernoulli pixels, FVSBN and NADE to binarized 8x8 digits; report \
             test negative log-likelihood and draw real and sampled digits."
)]
struct Cli {
    /// The digits CSV: per line 64 pixels 0..16 (row-major 8x8) then a label.
    #[arg(long, default_value = "../shared/data/digits.csv")]
    data: PathBuf,
    /// NADE's hidden units H.
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    hidden: usize,
    /// Passes over the training set, for every model.
    #[arg(long, allow_negative_numbers = true, default_value_t = 200)]
    epochs: usize,
    /// Images per Adam step.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100)]
    batch: usize,
    /// Adam's learning rate, for every model.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5e-3)]
    lr: f64,
    /// Seed of NADE's initialisation, the minibatch order and the samples (the train/test split
    /// is fixed).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Images per row of the SVG grids.
    #[arg(long, allow_negative_numbers = true, default_value_t = 16)]
    samples: usize,
    /// The directory the SVG files are written into.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// The grid of real test digits (inside --out-dir).
    #[arg(long, default_value = "nade_real.svg")]
    real_svg: PathBuf,
    /// The grid of samples, a row per model (inside --out-dir).
    #[arg(long, default_value = "nade_samples.svg")]
    samples_svg: PathBuf,
}

/// One model's measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The model.
    pub model: &'static str,
    /// Free parameters.
    pub params: usize,
    /// Mean NLL on the training set after training, nats per image.
    pub train_nll: f64,
    /// Mean NLL on the test set, nats per image.
    pub test_nll: f64,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The models were trained and measured; the figures are at these paths.
    Measured {
        /// A row per model.
        rows: Vec<Row>,
        /// The real digits' grid.
        real_svg: PathBuf,
        /// The samples' grid.
        samples_svg: PathBuf,
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
        Err(e) => flags::failure("nade", &e, matches!(e, Error::Usage(_))),
    }
}

/// Parses the flags, trains the three models, prints the table and writes the figures.
pub fn run<I, T>(args: I) -> Result<Outcome, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Some((cli, _)) = flags::parse::<Cli, _, _>(args).map_err(Error::Usage)? else {
        return Ok(Outcome::Informed);
    };
    check(&cli)?;
    let (train, test) = data::split(&data::load(&cli.data)?);
    let (x_train, x_test) = (
        data::to_tensor::<f32>(&train),
        data::to_tensor::<f32>(&test),
    );
    println!(
        "{} training and {} test images, binarized at pixel >= {}; NADE H = {}, {} epochs, batch {}, Adam lr {}, seed {}",
        train.len(),
        test.len(),
        data::THRESHOLD,
        cli.hidden,
        cli.epochs,
        cli.batch,
        cli.lr,
        cli.seed
    );

    let mut rng = StdRng::seed_from_u64(cli.seed);
    let mut bernoulli = Bernoulli::new(PIXELS);
    let mut fvsbn = Fvsbn::new(PIXELS);
    let mut nade = Nade::new(PIXELS, cli.hidden, &mut rng);
    let models: [&mut dyn Autoregressive<f32>; 3] = [&mut bernoulli, &mut fvsbn, &mut nade];
    let mut rows = Vec::new();
    let mut sample_rows = Vec::new();
    for model in models {
        fit(model, &x_train, &cli, &mut rng);
        let row = Row {
            model: model.name(),
            params: model.free_params(),
            train_nll: mean_nll(model, &x_train),
            test_nll: mean_nll(model, &x_test),
        };
        println!(
            "{:<22} {:>6} parameters  train {:>6.2}  test {:>6.2} nats/image",
            row.model, row.params, row.train_nll, row.test_nll
        );
        let drawn = sample(&*model, cli.samples, PIXELS, &mut rng);
        sample_rows.push((model.name(), images(&drawn)));
        rows.push(row);
    }
    print_table(&rows);

    let real = data::to_tensor::<f32>(&test[..cli.samples.min(test.len())]);
    let real_svg = cli.out_dir.join(&cli.real_svg);
    let samples_svg = cli.out_dir.join(&cli.samples_svg);
    write(&real_svg, &svg::grid(&[("test digits", images(&real))]))?;
    write(&samples_svg, &svg::grid(&sample_rows))?;
    println!("wrote {} and {}", real_svg.display(), samples_svg.display());
    Ok(Outcome::Measured {
        rows,
        real_svg,
        samples_svg,
    })
}

fn check(cli: &Cli) -> Result<(), Error> {
    let at_least_one = [
        ("--hidden", cli.hidden),
        ("--epochs", cli.epochs),
        ("--batch", cli.batch),
        ("--samples", cli.samples),
    ];
    for (flag, value) in at_least_one {
        if value == 0 {
            return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
        }
    }
    if !(cli.lr.is_finite() && cli.lr > 0.0) {
        return Err(Error::Usage(format!(
            "--lr must be a positive number, got {}",
            cli.lr
        )));
    }
    if !cli.out_dir.is_dir() {
        return Err(Error::Usage(format!(
            "--out-dir {} is not an existing directory",
            cli.out_dir.display()
        )));
    }
    // Before training, not after it: a file that cannot be written would cost the whole run.
    for name in [&cli.real_svg, &cli.samples_svg] {
        check_writable(&cli.out_dir.join(name)).map_err(|e| Error::Output(e.to_string()))?;
    }
    Ok(())
}

/// Adam on the mean NLL, minibatches in a seeded order each epoch.
fn fit(model: &mut dyn Autoregressive<f32>, x: &Tensor<f32>, cli: &Cli, rng: &mut StdRng) {
    let n = x.shape()[0];
    let mut opt = Adam::new(cli.lr);
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..cli.epochs {
        order.shuffle(rng);
        for batch in order.chunks(cli.batch) {
            let tape = Tape::new();
            let xb = tape.constant(x.clone()).index_select(batch);
            let grads = nll(model.logits(&tape, xb), xb).backward();
            opt.step(&mut *model, &grads);
        }
    }
}

fn mean_nll(model: &dyn Autoregressive<f32>, x: &Tensor<f32>) -> f64 {
    let tape = Tape::new();
    let x = tape.constant(x.clone());
    nll(model.logits(&tape, x), x).item().into()
}

fn images(x: &Tensor<f32>) -> Vec<Vec<f64>> {
    x.data()
        .chunks(PIXELS)
        .map(|im| im.iter().map(|&v| v.into()).collect())
        .collect()
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| model | parameters | train NLL (nats/image) | test NLL (nats/image) |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} |",
            r.model, r.params, r.train_nll, r.test_nll
        );
    }
}

/// Writes `contents` atomically: a failed write leaves the previous file as it was.
fn write(path: &Path, contents: &str) -> Result<(), Error> {
    write_atomic(path, contents.as_bytes()).map_err(|e| Error::Output(e.to_string()))
}
