//! The held-out curves as hand-written SVG: mean squared error on a log scale against seconds of
//! training, one line per method, with the error of always predicting the mean for reference.

use std::fmt::Write;

use super::train::Curve;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;
const COLOURS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
/// The mean squared error of predicting 1.0, the mean of the target, whatever the input.
const BASELINE: f64 = 1.0 / 6.0;

/// The figure for `curves`, titled with T.
pub fn render(curves: &[Curve], steps: usize) -> String {
    let points = || curves.iter().flat_map(|c| c.points.iter());
    let seconds = points().map(|p| p.seconds).fold(1e-9, f64::max);
    let logs = points()
        .map(|p| p.mse)
        .chain([BASELINE])
        .filter(|&m| m > 0.0)
        .map(f64::log10);
    let (lo, hi) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), l| {
        (lo.min(l), hi.max(l))
    });
    let (lo, hi) = (lo - 0.05, hi + 0.05);
    let x = |s: f64| LEFT + (W - LEFT - RIGHT) * s / seconds;
    let y = |mse: f64| {
        let l = if mse > 0.0 { mse.log10().max(lo) } else { lo };
        TOP + (H - TOP - BOTTOM) * (hi - l) / (hi - lo)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">Adding problem, T = {steps}: held-out MSE against training time</text>"#,
        (LEFT + W - RIGHT) / 2.0
    );
    for tick in log_ticks(lo, hi) {
        let yy = y(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            number(tick)
        );
    }
    let step = nice_step(seconds / 6.0);
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    for k in 0..=(seconds / step + 1e-9) as usize {
        let tick = k as f64 * step;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick:.decimals$}</text>"#,
            x(tick),
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds of training</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" transform="rotate(-90 18 {0})" text-anchor="middle">held-out mean squared error</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#888" stroke-dasharray="5 4"/><text x="{2}" y="{3:.1}" fill="#555" font-size="11" stroke="white" stroke-width="3" paint-order="stroke">predict the mean (1/6)</text>"##,
        y(BASELINE),
        W - RIGHT,
        LEFT + 6.0,
        y(BASELINE) - 5.0
    );
    for (c, colour) in curves.iter().zip(COLOURS.iter().cycle()) {
        let line: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.seconds), y(p.mse)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            line.join(" ")
        );
    }
    for (i, (c, colour)) in curves.iter().zip(COLOURS.iter().cycle()).enumerate() {
        let ly = TOP + 40.0 + 40.0 * i as f64;
        let last = c.last();
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text><text x="{2}" y="{5}" font-size="11" fill="#555">{6} updates, {7:.0}% right</text>"##,
            W - RIGHT + 8.0,
            W - RIGHT + 30.0,
            W - RIGHT + 36.0,
            ly + 4.0,
            label(c.method),
            ly + 19.0,
            last.updates,
            100.0 * last.accuracy
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 and 5 times the powers of ten between 10^lo and 10^hi; only the powers of ten when the
/// range spans more than three decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let multiples: &[f64] = if hi - lo > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    (lo.floor() as i32..=hi.ceil() as i32)
        .flat_map(|k| multiples.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(&v.log10()))
        .collect()
}

/// A tick label: plain down to 0.01, then as 2e-3.
fn number(v: f64) -> String {
    if v >= 0.01 {
        format!("{}", (v * 1e6).round() / 1e6)
    } else {
        format!("{v:.0e}")
    }
}

fn label(method: &str) -> &str {
    match method {
        "hf" => "Hessian-free",
        "adam" => "Adam",
        "lbfgs" => "L-BFGS",
        other => other,
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}
