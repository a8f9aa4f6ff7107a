//! What backpropagation through time costs as sequences grow, in one command: the grid of
//! `benches/bptt.rs` (RNN, LSTM, GRU; B = 32, H = 256, V = 65; T = 16 … 1024), each point the
//! median of 3 passes. Prints, per cell and strategy, T, forward and backward ms, their ratio, the
//! tape's peak MB and backward µs per step; fits backward time = a + b·T (b and R²); writes an
//! SVG of backward time and memory against T for full BPTT.
//!
//! Run: `cargo run --release --example bptt_report -- [--out bptt_report.svg] [--repeats 3]`

#[path = "../benches/support/bptt_grid.rs"]
mod grid;
#[path = "support/plot.rs"]
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use grid::{Bench, Measurement, Mode, LENGTHS};
use plotters::prelude::*;
use rewind::autograd::io::write_atomic;
use rewind::nn::{GruCell, LstmCell, RnnCell, StandardCell};

/// Full-BPTT figures of one cell, for the plot.
struct Series {
    name: &'static str,
    backward_ms: Vec<f64>,
    megabytes: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Least squares y = a + b·x: (a, b, R²).
fn fit(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let ss_res: f64 = x
        .iter()
        .zip(y)
        .map(|(xi, yi)| (yi - a - b * xi).powi(2))
        .sum();
    let ss_tot: f64 = y.iter().map(|yi| (yi - my).powi(2)).sum();
    (a, b, 1.0 - ss_res / ss_tot)
}

fn cell<C: StandardCell<f32> + 'static>(name: &'static str, repeats: usize) -> Series {
    let bench = Bench::<C>::new(*LENGTHS.last().unwrap());
    let mut series = Series {
        name,
        backward_ms: Vec::new(),
        megabytes: Vec::new(),
    };
    for mode in [Mode::Full, Mode::Truncated, Mode::Checkpointed] {
        println!("\n{name}, {} BPTT", mode.name());
        println!(
            "{:>6} {:>12} {:>12} {:>9} {:>10} {:>14}",
            "T", "forward ms", "backward ms", "bwd/fwd", "MB held", "bwd µs/step"
        );
        let (mut ts, mut bws) = (Vec::new(), Vec::new());
        for &t in &LENGTHS {
            let runs: Vec<Measurement> = (0..repeats).map(|_| bench.pass(t, mode)).collect();
            let fwd = median(runs.iter().map(|m| m.forward.as_secs_f64() * 1e3).collect());
            let bwd = median(
                runs.iter()
                    .map(|m| m.backward.as_secs_f64() * 1e3)
                    .collect(),
            );
            let mb = runs[0].peak_bytes as f64 / 1e6;
            println!(
                "{t:>6} {fwd:>12.2} {bwd:>12.2} {:>9.2} {mb:>10.1} {:>14.1}",
                bwd / fwd,
                bwd * 1e3 / t as f64
            );
            ts.push(t as f64);
            bws.push(bwd);
            if mode == Mode::Full {
                series.backward_ms.push(bwd);
                series.megabytes.push(mb);
            }
        }
        let (a, b, r2) = fit(&ts, &bws);
        println!(
            "backward ms = {a:.2} + {b:.4}·T   (b = {:.1} µs per step, R² = {r2:.4})",
            b * 1e3
        );
    }
    series
}

/// Picks one figure of a series for a panel.
type Pick = fn(&Series) -> &Vec<f64>;

/// Backward time (left) and peak tape memory (right) against T, log-log, one line per cell.
fn svg(series: &[Series]) -> String {
    let panels: [(&str, Pick); 2] = [
        ("backward ms", |s| &s.backward_ms),
        ("peak tape MB", |s| &s.megabytes),
    ];
    let lengths: Vec<f64> = LENGTHS.iter().map(|&t| t as f64).collect();
    let span = lengths[0]..lengths[lengths.len() - 1];
    plot::svg((900, 420), |root| {
        let (charts, legend) = root.split_vertically(390);
        for ((label, values), area) in panels.iter().zip(charts.split_evenly((1, 2))) {
            let all = || series.iter().flat_map(|s| values(s).iter().copied());
            let lo = 10f64.powf(all().fold(f64::MAX, f64::min).log10().floor());
            let hi = 10f64
                .powf(all().fold(f64::MIN, f64::max).log10().ceil())
                .max(lo * 10.0);
            let mut chart = ChartBuilder::on(&area)
                .caption(format!("{label} against T (full BPTT)"), ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(
                    span.clone().log_scale().with_key_points(lengths.clone()),
                    plot::log_axis(lo, hi),
                )?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc("T")
                .y_desc(*label)
                .x_label_formatter(&|t| format!("{t}"))
                .y_label_formatter(&plot::log_tick)
                .draw()?;
            for (s, colour) in series.iter().zip(plot::SERIES) {
                let line = lengths.iter().copied().zip(values(s).iter().copied());
                chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
            }
        }
        let entries: Vec<(&str, RGBColor)> =
            series.iter().map(|s| s.name).zip(plot::SERIES).collect();
        plot::legend_row(&legend, &entries)
    })
}

fn main() -> ExitCode {
    let mut out = PathBuf::from("bptt_report.svg");
    let mut repeats = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--out", Some(v)) => out = PathBuf::from(v),
            ("--repeats", Some(v)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => repeats = n,
                _ => {
                    eprintln!("bptt_report: --repeats needs a positive whole number, got `{v}`");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("bptt_report: usage: bptt_report [--out FILE.svg] [--repeats N]");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "B = {}, H = {}, V = {}; medians of {repeats} passes",
        grid::BATCH,
        grid::HIDDEN,
        grid::VOCAB
    );
    let series = [
        cell::<RnnCell<f32>>("RNN", repeats),
        cell::<LstmCell<f32>>("LSTM", repeats),
        cell::<GruCell<f32>>("GRU", repeats),
    ];
    match write_atomic(&out, svg(&series).as_bytes()) {
        Ok(()) => {
            println!("\nwrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bptt_report: {e}");
            ExitCode::FAILURE
        }
    }
}
