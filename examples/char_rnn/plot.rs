//! The training curve as an SVG, drawn with plotters: training and validation loss against steps,
//! the learning rate and the gradient norm in panels beneath, both from 0; one run, or several
//! overlaid (`char_rnn plot a.metrics.csv b.metrics.csv --out curve.svg`).

use std::ops::Range;
use std::path::Path;

use plotters::prelude::*;
use rewind::autograd::io::write_atomic;

use super::cli::{Across, PlotConfig};
use super::figure::{self, Area, Drawn};
use super::metrics::{self, Row};
use super::output::Output;
use super::Error;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 900;

/// Draws the runs of `c.files` into `c.out` and says so; returns the number of runs drawn.
pub fn run(c: &PlotConfig) -> Result<usize, Error> {
    let mut runs = Vec::new();
    for file in &c.files {
        let rows = metrics::read(file)?;
        if rows.is_empty() {
            return Err(Error::Metrics(format!(
                "{} has no rows yet: nothing to draw",
                file.display()
            )));
        }
        runs.push((run_name(file), rows));
    }
    let runs: Vec<(&str, &[Row])> = runs.iter().map(|(n, r)| (n.as_str(), &r[..])).collect();
    draw(&runs, &c.out, c.x).map_err(Error::Metrics)?;
    // Drawn is done: a closed standard output loses only this line.
    Output::default().line(format_args!(
        "drew {} run{} into {}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        c.out.display()
    ));
    Ok(runs.len())
}

/// `a.safetensors` for `runs/a.safetensors.metrics.csv`: what the legend calls a run.
fn run_name(file: &Path) -> String {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match name.strip_suffix(".metrics.csv") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    }
}

/// Writes the curve of `runs` (name, rows) to `out`, against steps or seconds (`x`), through a
/// temporary file and a rename, so that a viewer reloading it never finds half a picture. The
/// error is one line.
pub fn draw(runs: &[(&str, &[Row])], out: &Path, x: Across) -> Result<(), String> {
    let svg = figure::svg((WIDTH, HEIGHT), |root| panels(root, runs, x));
    write_atomic(out, svg.as_bytes()).map_err(|e| format!("cannot write the curve: {e}"))
}

/// Loss on the top half; learning rate and gradient norm beneath. (A log axis for the norm shows
/// no labels over less than a decade, the usual span.)
fn panels(root: &Area, runs: &[(&str, &[Row])], x: Across) -> Drawn {
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    let (middle, low) = bottom.split_vertically(HEIGHT / 4);
    let at = move |r: &Row| match x {
        Across::Step => r.step as f64,
        Across::Seconds => r.elapsed,
    };
    let last =
        bounds(runs.iter().flat_map(|(_, rows)| rows.iter().map(at))).map_or(1.0, |(_, hi)| hi);
    let steps = 0.0..if last > 0.0 { last } else { 1.0 };
    let x_desc = match x {
        Across::Step => "step",
        Across::Seconds => "seconds of training",
    };

    let losses = runs.iter().flat_map(|(_, rows)| {
        rows.iter()
            .flat_map(|r| [Some(r.train_loss_smooth), r.val_loss])
            .flatten()
    });
    let mut chart = ChartBuilder::on(&top)
        .caption("loss (nats/char)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(steps.clone(), padded(losses))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&x_label)
        .draw()?;
    for (i, (name, rows)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let train = rows.iter().map(|r| (at(r), r.train_loss_smooth));
        let took = rows.last().map_or(String::new(), |r| {
            format!(", {} steps in {}", r.step, duration(r.elapsed))
        });
        chart
            .draw_series(LineSeries::new(train, color.stroke_width(1)))?
            .label(format!("{name} training (smoothed){took}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(1)));
        let val: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((at(r), r.val_loss?)))
            .collect();
        if val.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(val, color.stroke_width(3)).point_size(3))?
            .label(format!("{name} validation"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    below(&middle, "learning rate", &steps, runs, &at, |r| r.lr)?;
    below(
        &low,
        "gradient norm before clipping",
        &steps,
        runs,
        &at,
        |r| r.grad_norm,
    )?;
    Ok(())
}

/// A panel of `value` against `at` (steps or seconds) for each run, its axis from 0.
fn below(
    area: &Area,
    caption: &str,
    steps: &Range<f64>,
    runs: &[(&str, &[Row])],
    at: &dyn Fn(&Row) -> f64,
    value: fn(&Row) -> f64,
) -> Drawn {
    let values = runs.iter().flat_map(|(_, rows)| rows.iter().map(value));
    let top = bounds(values).map_or(1.0, |(_, hi)| hi.max(0.0) * 1.05);
    let top = if top > 0.0 { top } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(steps.clone(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&x_label)
        .y_label_formatter(&|&v| label(v))
        .draw()?;
    for (i, (_, rows)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(LineSeries::new(
            rows.iter().map(|r| (at(r), value(r))),
            color,
        ))?;
    }
    Ok(())
}

/// A label of the horizontal axis: whole steps or seconds only (a short run's axis would
/// otherwise be ticked at half steps).
fn x_label(v: &f64) -> String {
    match v.fract() {
        0.0 => format!("{v:.0}"),
        _ => String::new(),
    }
}

/// An axis label: `0`, `0.25`, `2.0e-3`.
fn label(v: f64) -> String {
    match v.abs() {
        0.0 => "0".into(),
        a if !(1e-2..1e4).contains(&a) => format!("{v:.1e}"),
        _ => format!("{v:.2}"),
    }
}

/// Seconds of training as `45 s`, `12.5 min` or `3.2 h`.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// The range of the finite `values`, widened by 5% each way (and around a single value).
fn padded(values: impl Iterator<Item = f64>) -> Range<f64> {
    let Some((lo, hi)) = bounds(values) else {
        return 0.0..1.0;
    };
    let pad = match hi - lo {
        0.0 => lo.abs().max(1e-12) * 0.05,
        span => span * 0.05,
    };
    (lo - pad)..(hi + pad)
}

/// The least and greatest of the finite `values`; `None` if there is none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |b, v| match b {
        None => Some((v, v)),
        Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
    })
}
