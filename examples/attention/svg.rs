//! The attention map as an SVG: a row per character of a line of text (the query, just read), a
//! column per slot of the window (oldest left, the step before right), each cell shaded by its
//! weight α and labelled with the character that slot's state had just read.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot;

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

const CELL_W: i32 = 11;
const CELL_H: i32 = 14;
const LEFT: i32 = 44;
const TOP: i32 = 72;
/// Room for the caption and the legend.
const MIN_WIDTH: i32 = 780;
const PALE: RGBColor = RGBColor(255, 255, 255);
const DARK: RGBColor = RGBColor(8, 48, 107);
const NOTE: RGBColor = RGBColor(105, 105, 105);
const INK: RGBColor = RGBColor(128, 128, 128);

/// The SVG document. Shades are linear in α, the darkest being the largest α in the figure
/// (its value is printed), so a flat row of W equal weights is pale.
pub fn render(map: &Map) -> String {
    let window = map.weights.first().map_or(0, Vec::len);
    let width = (LEFT + window as i32 * CELL_W + 20).max(MIN_WIDTH);
    let height = TOP + map.weights.len() as i32 * CELL_H + 20;
    let top = map.weights.iter().flatten().fold(0.0f64, |m, &a| m.max(a));
    let font = |size: f64| plot::text("monospace", size);
    let anchored = |size: f64, h: HPos| font(size).pos(Pos::new(h, VPos::Center));
    plot::svg((width as u32, height as u32), |root| {
        root.draw(&Text::new(map.title, (8, 14), font(13.0)))?;
        let note = [
            format!(
                "row: the character just read; column: a past step, t-{window} (left) to t-1 \
                 (right),"
            ),
            format!("labelled with the character it read; shade: α, darkest = {top:.3}"),
        ];
        for (line, y) in note.iter().zip([32, 46]) {
            root.draw(&Text::new(line.as_str(), (8, y), font(11.0).color(&NOTE)))?;
        }
        for (r, row) in map.weights.iter().enumerate() {
            let t = map.first + r;
            let y = TOP + r as i32 * CELL_H;
            let mid = y + CELL_H / 2;
            let read = glyph(map.text[t]);
            root.draw(&Text::new(
                read,
                (LEFT - 6, mid),
                anchored(11.0, HPos::Right),
            ))?;
            for (k, &alpha) in row.iter().enumerate() {
                let x = LEFT + k as i32 * CELL_W;
                let shade = if top > 0.0 { alpha / top } else { 0.0 };
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL_W, y + CELL_H)],
                    blend(PALE, DARK, shade).filled(),
                ))?;
                // Slot k of the window at step t holds the state of step t - W + k.
                if let Some(j) = (t + k).checked_sub(window) {
                    let ink = if shade > 0.5 { WHITE } else { INK };
                    let label = anchored(8.0, HPos::Center).color(&ink);
                    root.draw(&Text::new(glyph(map.text[j]), (x + CELL_W / 2, mid), label))?;
                }
            }
        }
        Ok(())
    })
}

/// `from` moved toward `to` by `share` of the way.
fn blend(from: RGBColor, to: RGBColor, share: f64) -> RGBColor {
    let share = share.clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * share).round() as u8;
    RGBColor(mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2))
}

/// A character as it can be seen in a cell: space and newline made visible.
fn glyph(c: char) -> String {
    match c {
        ' ' => "␣".into(),
        '\n' => "⏎".into(),
        c if c.is_control() => "·".into(),
        c => c.to_string(),
    }
}
