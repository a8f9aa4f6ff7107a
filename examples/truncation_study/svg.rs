//! Validation perplexity curves as SVG: a panel per cell and optimizer, a colour per strategy, a
//! thin line per seed and a thick line through the seeds' mean.

use plotters::prelude::*;

use super::plot;
use super::{groups, Curve, Point};

const PANEL_W: u32 = 346;
const PANEL_H: u32 = 256;
const LEGEND_H: u32 = 30;

/// The curves; x is epochs, or training seconds when `by_time`.
pub fn curves(curves: &[Curve], by_time: bool) -> String {
    let groups = groups(curves);
    let mut panels: Vec<(String, Vec<usize>)> = Vec::new();
    let mut strategies: Vec<String> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let title = format!("{:?}, {:?}", g[0].cell, g[0].optim);
        match panels.iter_mut().find(|(t, _)| *t == title) {
            Some((_, members)) => members.push(i),
            None => panels.push((title, vec![i])),
        }
        let name = g[0].method.to_string();
        if !strategies.contains(&name) {
            strategies.push(name);
        }
    }
    let colour_of = |name: &str| {
        let i = strategies.iter().position(|n| n == name).unwrap_or(0);
        plot::SERIES[i % plot::SERIES.len()]
    };
    let x_of = |p: &Point| if by_time { p.seconds } else { p.epoch };
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(2).max(1);
    let size = (cols as u32 * PANEL_W, rows as u32 * PANEL_H + LEGEND_H);
    plot::svg(size, |root| {
        let (grid, legend) = root.split_vertically(rows as u32 * PANEL_H);
        for ((title, members), area) in panels.iter().zip(grid.split_evenly((rows, cols))) {
            let points = members
                .iter()
                .flat_map(|&i| groups[i].iter().flat_map(|c| c.points.iter()));
            let (mut x_max, mut y_min, mut y_max) = (1e-9f64, f64::INFINITY, 0f64);
            for q in points {
                x_max = x_max.max(x_of(q));
                // plotters loops forever on an infinite range: a diverged run sets no bound.
                if q.ppl.is_finite() {
                    y_min = y_min.min(q.ppl);
                    y_max = y_max.max(q.ppl);
                }
            }
            let y_min = y_min.min(y_max - 1e-9);
            let mut chart = ChartBuilder::on(&area)
                .caption(title, ("sans-serif", 13))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(48)
                .build_cartesian_2d(0.0..x_max, y_min..y_max)?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_labels(5)
                .y_labels(5)
                .x_desc(if by_time { "seconds" } else { "epochs" })
                .y_desc("val perplexity")
                .draw()?;
            for &i in members {
                let g = &groups[i];
                let colour = colour_of(&g[0].method.to_string());
                for c in g {
                    let line = c.points.iter().map(|q| (x_of(q), q.ppl));
                    chart.draw_series(LineSeries::new(line, colour.mix(0.35).stroke_width(1)))?;
                }
                let n = g.iter().map(|c| c.points.len()).min().unwrap_or(0);
                let k = g.len() as f64;
                let mean = (0..n).map(|e| {
                    let x = g.iter().map(|c| x_of(&c.points[e])).sum::<f64>() / k;
                    let y = g.iter().map(|c| c.points[e].ppl).sum::<f64>() / k;
                    (x, y)
                });
                chart.draw_series(LineSeries::new(mean, colour.stroke_width(3)))?;
            }
        }
        let entries: Vec<(&str, RGBColor)> = strategies
            .iter()
            .map(|name| (name.as_str(), colour_of(name)))
            .collect();
        plot::legend_row(&legend, &entries)
    })
}
