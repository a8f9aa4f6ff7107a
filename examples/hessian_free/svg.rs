//! The held-out curves as SVG: mean squared error on a log scale against seconds of training, one
//! line per method, with the error of always predicting the mean for reference.

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::plot;
use super::train::Curve;

/// The mean squared error of predicting 1.0, the mean of the target, whatever the input.
const BASELINE: f64 = 1.0 / 6.0;

/// The figure for `curves`, titled with T.
pub fn render(curves: &[Curve], steps: usize) -> String {
    let points = || curves.iter().flat_map(|c| c.points.iter());
    let seconds = points().map(|p| p.seconds).fold(1e-9, f64::max);
    let (lo, hi) = points()
        .map(|p| p.mse)
        .chain([BASELINE])
        // plotters loops forever on an infinite range: a diverged run sets no bound.
        .filter(|&m| m > 0.0 && m.is_finite())
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), m| {
            (lo.min(m), hi.max(m))
        });
    // A twentieth of a decade of room above and below the extremes.
    let margin = 10f64.powf(0.05);
    let (lo, hi) = (lo / margin, hi * margin);
    let title = format!("Adding problem, T = {steps}: held-out MSE against training time");
    plot::svg((760, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..seconds, plot::log_axis(lo, hi))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_x_mesh()
            .x_desc("seconds of training")
            .y_desc("held-out mean squared error")
            .y_label_formatter(&plot::log_tick)
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, BASELINE), (seconds, BASELINE)],
                5,
                4,
                plot::GREY.into(),
            ))?
            .label("predict the mean (1/6)")
            .legend(|(x, y)| DashedPathElement::new([(x, y), (x + 20, y)], 5, 4, plot::GREY));
        for (c, colour) in curves.iter().zip(plot::SERIES.into_iter().cycle()) {
            let last = c.last();
            let label = format!(
                "{}: {} updates, {:.0}% right",
                name(c.method),
                last.updates,
                100.0 * last.accuracy
            );
            let line = c.points.iter().map(|p| (p.seconds, p.mse.max(lo)));
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
                .label(label)
                .legend(plot::swatch(colour));
        }
        plot::legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

fn name(method: &str) -> &str {
    match method {
        "hf" => "Hessian-free",
        "adam" => "Adam",
        "lbfgs" => "L-BFGS",
        other => other,
    }
}
