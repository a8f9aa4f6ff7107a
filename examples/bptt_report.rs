//! What backpropagation through time costs as sequences grow, in one command: the grid of
//! `benches/bptt.rs` (RNN, LSTM, GRU; B = 32, H = 256, V = 65; T = 16 … 1024), each point the
//! median of 3 passes. Prints, per cell and strategy, T, forward and backward ms, their ratio, the
//! tape's peak MB and backward µs per step; fits backward time = a + b·T (b and R²); writes an
//! SVG of backward time and memory against T for full BPTT.
//!
//! Run: `cargo run --release --example bptt_report -- [--out bptt_report.svg] [--repeats 3]`

#[path = "../benches/support/bptt_grid.rs"]
mod grid;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use grid::{Bench, Measurement, Mode, LENGTHS};
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
    let (w, h) = (900.0, 400.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let colors = ["#d62728", "#1f77b4", "#2ca02c"];
    let panels: [(&str, Pick); 2] = [
        ("backward ms", |s| &s.backward_ms),
        ("peak tape MB", |s| &s.megabytes),
    ];
    for (p, (label, values)) in panels.iter().enumerate() {
        let (left, top, pw, ph) = (70.0 + p as f64 * 440.0, 40.0, 340.0, 300.0);
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| values(s).iter().copied())
            .collect();
        let (lo, hi) = (
            all.iter().cloned().fold(f64::MAX, f64::min).log10().floor(),
            all.iter().cloned().fold(f64::MIN, f64::max).log10().ceil(),
        );
        let (tlo, thi) = (
            (LENGTHS[0] as f64).log2(),
            (LENGTHS[LENGTHS.len() - 1] as f64).log2(),
        );
        let x = |t: usize| left + pw * ((t as f64).log2() - tlo) / (thi - tlo);
        let y = |v: f64| top + ph * (hi - v.log10()) / (hi - lo).max(1.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{label} against T (full BPTT)</text>"#,
            left + pw / 2.0
        );
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        for e in lo as i32..=hi as i32 {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">1e{e}</text>"#,
                left - 5.0,
                y(10f64.powi(e)) + 4.0
            );
        }
        for &t in &LENGTHS {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
                x(t),
                top + ph + 16.0
            );
        }
        for (series, color) in series.iter().zip(colors) {
            let points: Vec<String> = LENGTHS
                .iter()
                .zip(values(series))
                .map(|(&t, &v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    for (i, (series, color)) in series.iter().zip(colors).enumerate() {
        let lx = 80.0 + 90.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="385" x2="{}" y2="385" stroke="{color}" stroke-width="3"/><text x="{}" y="389">{}</text>"#,
            lx + 20.0,
            lx + 25.0,
            series.name
        );
    }
    s.push_str("</svg>\n");
    s
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
