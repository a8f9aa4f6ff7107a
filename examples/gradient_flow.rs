//! Gradient flow through time in a vanilla RNN, an LSTM and a GRU, on the adding problem: each
//! step holds a value in [0, 1] and a marker; the target is the sum of the two marked values, one
//! in each half of a sequence of T ≥ 100 steps. Each model is trained, its accuracy printed
//! (|prediction - target| < 0.04 on fresh sequences), and ‖∂L/∂h_t‖ measured for every step t;
//! an SVG plots that norm against t for the three.
//!
//! Run: `cargo run --release --example gradient_flow -- [--steps 3000] [--seq-len 100] [--seed 0]
//! [--out gradient_flow.svg]`

#[path = "support/plot.rs"]
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use plotters::prelude::*;
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{io::write_atomic, Tape, Tensor};
use rewind::nn::{
    grad_norms_through_time, recurrent_spectral_radii, GruCell, Linear, LstmCell, Module,
    Recurrent, RecurrentConfig, RnnCell, Run, StandardCell,
};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};

const HIDDEN: usize = 32;
const BATCH: usize = 32;

struct Options {
    steps: usize,
    seq_len: usize,
    seed: u64,
    out: PathBuf,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        steps: 3000,
        seq_len: 100,
        seed: 0,
        out: PathBuf::from("gradient_flow.svg"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a whole number"))
        };
        match flag.as_str() {
            "--steps" => o.steps = number(value()?)? as usize,
            "--seq-len" => o.seq_len = number(value()?)? as usize,
            "--seed" => o.seed = number(value()?)?,
            "--out" => o.out = PathBuf::from(value()?),
            "--help" | "-h" => {
                return Err(
                    "usage: gradient_flow [--steps N] [--seq-len T] [--seed S] [--out FILE.svg]"
                        .into(),
                )
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if o.seq_len < 4 {
        return Err(format!(
            "--seq-len {} is too short: the task needs at least 4 steps",
            o.seq_len
        ));
    }
    Ok(o)
}

/// A batch of the adding problem: inputs [T, B, 2] (value, marker) and targets [B, 1].
fn adding_batch(t: usize, rng: &mut StdRng) -> (Tensor, Tensor) {
    let mut x = vec![0.0f32; t * BATCH * 2];
    let mut y = vec![0.0f32; BATCH];
    for b in 0..BATCH {
        let first = rng.random_range(0..t / 2);
        let second = rng.random_range(t / 2..t);
        for step in 0..t {
            let v: f32 = rng.random();
            x[(step * BATCH + b) * 2] = v;
            if step == first || step == second {
                x[(step * BATCH + b) * 2 + 1] = 1.0;
                y[b] += v;
            }
        }
    }
    (
        Tensor::from_vec(x, &[t, BATCH, 2]).unwrap(),
        Tensor::from_vec(y, &[BATCH, 1]).unwrap(),
    )
}

struct Model<C> {
    rnn: Recurrent<C>,
    head: Linear,
}

impl<C: StandardCell<f32>> Module for Model<C> {
    fn params(&self) -> Vec<(String, &rewind::autograd::Param)> {
        let mut p = rewind::nn::nested("rnn", self.rnn.params());
        p.extend(rewind::nn::nested("head", self.head.params()));
        p
    }
}

struct Report {
    name: &'static str,
    accuracy: f64,
    mse: f64,
    norms: Vec<f64>,
    radius_before: f64,
    radius_after: f64,
}

/// Trains one model and measures it.
fn study<C: StandardCell<f32>>(name: &'static str, o: &Options) -> Report {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut model = Model {
        rnn: Recurrent::<C>::new(RecurrentConfig::new(2, HIDDEN), &mut rng),
        head: Linear::new(HIDDEN, 1, &mut rng),
    };
    let radius = |m: &Model<C>| {
        recurrent_spectral_radii(m.rnn.cell(0, 0), 200)
            .into_iter()
            .fold(0.0, f64::max)
    };
    let radius_before = radius(&model);
    let mut opt = Adam::new(3e-3);
    for step in 1..=o.steps {
        let (x, y) = adding_batch(o.seq_len, &mut rng);
        let tape = Tape::new();
        let out = model.rnn.forward(&tape, tape.constant(x), None, None);
        let last = out
            .output
            .narrow(0, o.seq_len - 1, 1)
            .reshape(&[BATCH, HIDDEN]);
        let loss = (model.head.forward(&tape, last) - tape.constant(y))
            .powf(2.0)
            .mean();
        let mut grads = loss.backward();
        clip_grad_norm(&mut grads, 1.0);
        opt.step(&mut model, &grads);
        if step % 250 == 0 {
            println!("  {name:<5} step {step:>5}  mse {:.4}", loss.item());
        }
    }
    // Measure on fresh sequences: accuracy, and the gradient of the final loss back through time.
    let (x, y) = adding_batch(o.seq_len, &mut rng);
    let tape = Tape::new();
    let run = Run {
        keep_states: true,
        ..Run::default()
    };
    let out = model.rnn.forward_with(&tape, tape.constant(x), None, &run);
    let last = out
        .output
        .narrow(0, o.seq_len - 1, 1)
        .reshape(&[BATCH, HIDDEN]);
    let prediction = model.head.forward(&tape, last);
    let loss = (prediction - tape.constant(y.clone())).powf(2.0).mean();
    let grads = loss.backward();
    let correct = prediction
        .value()
        .data()
        .iter()
        .zip(y.data())
        .filter(|(p, t)| (*p - *t).abs() < 0.04)
        .count();
    Report {
        name,
        accuracy: correct as f64 / BATCH as f64,
        mse: loss.item() as f64,
        norms: grad_norms_through_time(&grads, &out.states),
        radius_before,
        radius_after: radius(&model),
    }
}

/// ‖∂L/∂h_t‖ against t on a log scale, one line per model; a norm of 0, or more than 30 decades
/// under the largest, is drawn at the bottom.
fn svg(reports: &[Report], t: usize) -> String {
    let logs = || {
        reports
            .iter()
            .flat_map(|r| r.norms.iter())
            .filter(|&&n| n > 0.0 && n.is_finite())
            .map(|n| n.log10())
    };
    // plotters loops forever on an infinite range: an overflowed norm sets no bound.
    let hi = logs().fold(f64::NEG_INFINITY, f64::max);
    let hi = if hi.is_finite() { hi.ceil() } else { 0.0 };
    let lo = logs().fold(hi, f64::min).floor().max(hi - 30.0);
    let (lo, hi) = (10f64.powf(lo), 10f64.powf(hi.max(lo + 1.0)));
    let title = format!("‖∂L/∂h_t‖ after training, adding problem, T = {t}");
    plot::svg((720, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0..t - 1, plot::log_axis(lo, hi))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_x_mesh()
            .x_desc("time step t")
            .y_desc("‖∂L/∂h_t‖")
            .y_label_formatter(&plot::log_tick)
            .draw()?;
        for (r, colour) in reports.iter().zip(plot::SERIES) {
            let line = r.norms.iter().enumerate().map(|(s, &n)| (s, n.max(lo)));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
                .label(format!("{} ({:.0}%)", r.name, 100.0 * r.accuracy))
                .legend(plot::swatch(colour));
        }
        // Where a vanishing gradient leaves room: late steps, small norms.
        plot::legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gradient_flow: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "Adding problem, T = {}, {} training steps of batch {BATCH}, hidden {HIDDEN}",
        o.seq_len, o.steps
    );
    let reports = [
        study::<RnnCell<f32>>("RNN", &o),
        study::<LstmCell<f32>>("LSTM", &o),
        study::<GruCell<f32>>("GRU", &o),
    ];
    println!("\nmodel   accuracy   mse      ρ(W_hh) init→trained   ‖∂L/∂h_t‖ at t = 0, T/4, T/2, 3T/4, T-1");
    for r in &reports {
        let at = |f: usize| r.norms[(f * (o.seq_len - 1)) / 4];
        println!(
            "{:<6} {:>7.1}%   {:.4}   {:.3} → {:.3}          {:.2e}  {:.2e}  {:.2e}  {:.2e}  {:.2e}",
            r.name, 100.0 * r.accuracy, r.mse, r.radius_before, r.radius_after, at(0), at(1), at(2), at(3), at(4)
        );
    }
    println!(
        "(a model that predicts the mean, 1.0, has mse 0.167; accuracy counts |error| < 0.04)"
    );
    match write_atomic(&o.out, svg(&reports, o.seq_len).as_bytes()) {
        Ok(()) => {
            println!("wrote {}", o.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gradient_flow: {e}");
            ExitCode::FAILURE
        }
    }
}
