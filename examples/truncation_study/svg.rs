//! Validation perplexity curves as hand-written SVG: a panel per cell and optimizer, a colour per
//! strategy, a thin line per seed and a thick line through the seeds' mean.

use std::fmt::Write;

use super::{groups, Curve};

const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 200.0;
const MARGIN: f64 = 46.0;
const COLOURS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

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
    let x_of = |p: &super::Point| if by_time { p.seconds } else { p.epoch };
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(2);
    let width = cols as f64 * (PANEL_W + MARGIN) + MARGIN;
    let height = rows as f64 * (PANEL_H + MARGIN + 10.0) + MARGIN + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (p, (title, members)) in panels.iter().enumerate() {
        let x0 = MARGIN + (p % 2) as f64 * (PANEL_W + MARGIN);
        let y0 = MARGIN + (p / 2) as f64 * (PANEL_H + MARGIN + 10.0);
        let points = members
            .iter()
            .flat_map(|&i| groups[i].iter().flat_map(|c| c.points.iter()));
        let (mut x_max, mut y_min, mut y_max) = (0f64, f64::INFINITY, 0f64);
        for q in points {
            x_max = x_max.max(x_of(q));
            y_min = y_min.min(q.ppl);
            y_max = y_max.max(q.ppl);
        }
        let y_min = y_min.min(y_max - 1e-9);
        let sx = |x: f64| x0 + x / x_max.max(1e-9) * PANEL_W;
        let sy = |y: f64| y0 + PANEL_H - (y - y_min) / (y_max - y_min) * PANEL_H;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(s, r#"<text x="{x0}" y="{}">{title}</text>"#, y0 - 6.0);
        for (v, anchor_y) in [(y_max, y0 + 4.0), (y_min, y0 + PANEL_H)] {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{anchor_y}" text-anchor="end">{v:.1}</text>"#,
                x0 - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{x_max:.1} {}</text>"#,
            x0 + PANEL_W,
            y0 + PANEL_H + 14.0,
            if by_time { "s" } else { "epochs" }
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" transform="rotate(-90 {0} {1})" text-anchor="middle">val perplexity</text>"#,
            x0 - 30.0,
            y0 + PANEL_H / 2.0
        );
        for &i in members {
            let g = &groups[i];
            let name = g[0].method.to_string();
            let colour = COLOURS[strategies.iter().position(|n| *n == name).unwrap_or(0) % 3];
            for c in g {
                let line: Vec<String> = c
                    .points
                    .iter()
                    .map(|q| format!("{:.1},{:.1}", sx(x_of(q)), sy(q.ppl)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1" stroke-opacity="0.35"/>"#,
                    line.join(" ")
                );
            }
            let n = g.iter().map(|c| c.points.len()).min().unwrap_or(0);
            let mean: Vec<String> = (0..n)
                .map(|e| {
                    let k = g.len() as f64;
                    let x = g.iter().map(|c| x_of(&c.points[e])).sum::<f64>() / k;
                    let y = g.iter().map(|c| c.points[e].ppl).sum::<f64>() / k;
                    format!("{:.1},{:.1}", sx(x), sy(y))
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2.5"/>"#,
                mean.join(" ")
            );
        }
    }
    for (i, name) in strategies.iter().enumerate() {
        let x = MARGIN + i as f64 * 160.0;
        let y = height - 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{0}" stroke="{}" stroke-width="2.5"/><text x="{}" y="{y}">{name}</text>"#,
            y - 4.0,
            x + 20.0,
            COLOURS[i % 3],
            x + 24.0
        );
    }
    s.push_str("</svg>\n");
    s
}
