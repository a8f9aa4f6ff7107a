//! The attention map as an SVG: a row per character of a line of text (the query, just read), a
//! column per slot of the window (oldest left, the step before right), each cell shaded by its
//! weight α and labelled with the character that slot's state had just read.

use std::fmt::Write;

/// What to draw.
pub struct Map<'a> {
    /// The caption.
    pub title: &'a str,
    /// Every character the model read, from the start of its stream.
    pub text: &'a [char],
    /// The position in `text` of the first row's character.
    pub first: usize,
    /// α for each row from `first` on, W each, oldest slot first.
    pub weights: &'a [Vec<f64>],
}

const CELL_W: usize = 11;
const CELL_H: usize = 14;
const LEFT: usize = 44;
const TOP: usize = 72;
/// Room for the caption and the legend.
const MIN_WIDTH: usize = 780;

/// The SVG document. Shades are linear in α, the darkest being the largest α in the figure
/// (its value is printed), so a flat row of W equal weights is pale.
pub fn render(map: &Map) -> String {
    let window = map.weights.first().map_or(0, Vec::len);
    let rows = map.weights.len();
    let width = (LEFT + window * CELL_W + 20).max(MIN_WIDTH);
    let height = TOP + rows * CELL_H + 20;
    let top = map.weights.iter().flatten().fold(0.0f64, |m, &a| m.max(a));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="8" y="18" font-size="13">{}</text>"#,
        escape(map.title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="8" y="36" font-size="11" fill="dimgray">row: the character just read; column: a past step, t-{window} (left) to t-1 (right),</text>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="8" y="50" font-size="11" fill="dimgray">labelled with the character it read; shade: α, darkest = {top:.3}</text>"#
    );
    for (r, row) in map.weights.iter().enumerate() {
        let t = map.first + r;
        let y = TOP + r * CELL_H;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 6,
            y + CELL_H - 3,
            glyph(map.text[t])
        );
        for (k, &alpha) in row.iter().enumerate() {
            let x = LEFT + k * CELL_W;
            let shade = if top > 0.0 { alpha / top } else { 0.0 };
            let _ = writeln!(
                svg,
                r#"<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="rgb({},{},{})"><title>α = {alpha:.4}</title></rect>"#,
                blend(255, 8, shade),
                blend(255, 48, shade),
                blend(255, 107, shade)
            );
            // Slot k of the window at step t holds the state of step t - W + k.
            if let Some(j) = (t + k).checked_sub(window) {
                let ink = if shade > 0.5 { "white" } else { "gray" };
                let _ = writeln!(
                    svg,
                    r#"<text x="{}" y="{}" font-size="8" text-anchor="middle" fill="{ink}">{}</text>"#,
                    x + CELL_W / 2,
                    y + CELL_H - 4,
                    glyph(map.text[j])
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// `from` moved toward `to` by `share` of the way.
fn blend(from: u8, to: u8, share: f64) -> u8 {
    let v = f64::from(from) + (f64::from(to) - f64::from(from)) * share.clamp(0.0, 1.0);
    v.round() as u8
}

/// A character as it can be seen in a cell: space and newline made visible, XML escaped.
fn glyph(c: char) -> String {
    match c {
        ' ' => "␣".into(),
        '\n' => "⏎".into(),
        c if c.is_control() => "·".into(),
        c => escape(&c.to_string()),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
