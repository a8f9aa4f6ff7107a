//! What the examples' figures share: an SVG document drawn with plotters into a string, the series
//! colours, legends, and a logarithmic axis with its ticks and their labels.

// Each example draws with part of this module.
#![allow(dead_code)]

use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The colours of a figure's series, in the order it assigns them.
pub const SERIES: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// The colour of a legend's frame and of reference lines.
pub const GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// The whole figure, in pixels from its top left corner.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What drawing on an [`Area`] returns.
pub type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// An SVG document of `size` pixels (width, height) on white, drawn by `draw`.
///
/// Panics if plotters reports an error: writing into a string cannot fail, so an error is a
/// mistake in the figure's code, not in the data. A trap for that code: every axis range must be
/// finite (plotters loops forever on an infinite one and panics on NaN), so a figure sets its
/// ranges from its finite values only; a NaN or infinite point itself is drawn harmlessly.
pub fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Drawn) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present());
        if let Err(e) = drawn {
            panic!("drawing an SVG figure into a string failed: {e}");
        }
    }
    out
}

/// Text whose SVG `font-size` is `size` in `family`, anchored at its left end and vertical
/// centre. (Plotters writes a font's size divided by 1.24 into an SVG.)
pub fn text(family: &str, size: f64) -> TextStyle<'_> {
    TextStyle::from((family, size * 1.24).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

/// A legend's sample of a series drawn in `colour`: a short thick line from the anchor rightward.
pub fn swatch(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3))
}

/// The labelled series of `chart` listed at `position`, on a nearly opaque white box.
pub fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}

/// One legend for several charts: left to right across the middle of `area`, each entry's
/// [`swatch`] and its name after it.
pub fn legend_row(area: &Area, entries: &[(&str, RGBColor)]) -> Drawn {
    let style = text("sans-serif", 12.0);
    let y = area.dim_in_pixel().1 as i32 / 2;
    let mut x = 46;
    for &(name, colour) in entries {
        area.draw(&swatch(colour)((x, y)))?;
        area.draw(&Text::new(name, (x + 25, y), style.clone()))?;
        x += 25 + area.estimate_text_size(name, &style)?.0 as i32 + 40;
    }
    Ok(())
}

/// A logarithmic axis from `lo` to `hi` (both positive) ticked at [`log_ticks`].
pub fn log_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    (lo..hi).log_scale().with_key_points(log_ticks(lo, hi))
}

/// The ticks of a logarithmic axis from `lo` to `hi` (both positive): 1, 2 and 5 times each
/// power of ten within three decades, otherwise powers of ten, every so many to label about six.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10(), hi.log10());
    let multiples: &[f64] = if b - a > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let every = ((b - a) / 6.0).ceil().max(1.0) as usize;
    (a.floor() as i32..=b.ceil() as i32)
        .step_by(every)
        .flat_map(|k| multiples.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| (a - 1e-9..=b + 1e-9).contains(&v.log10()))
        .collect()
}

/// A tick label on a logarithmic axis: plain from 0.01 to 10⁵, otherwise as 2e-3.
pub fn log_tick(v: &f64) -> String {
    if (0.01..1e5).contains(v) {
        format!("{}", (v * 1e6).round() / 1e6)
    } else {
        format!("{v:.0e}")
    }
}
