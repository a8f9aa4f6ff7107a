//! Grids of binary 8×8 images as SVG: a filled square per lit pixel, a caption per row.

use plotters::prelude::*;

use super::data::SIDE;
use super::plot;

const CELL: i32 = 4;
const GAP: i32 = 4;
const LABEL: i32 = 140;
const PAPER: RGBColor = RGBColor(0xf2, 0xf2, 0xf2);

/// An SVG of labelled rows of images, each row's images side by side; an image is 64 values
/// read as on when at least ½, row-major.
pub fn grid(rows: &[(&str, Vec<Vec<f64>>)]) -> String {
    let side = SIDE as i32 * CELL;
    let tile = side + GAP;
    let per_row = rows.iter().map(|(_, ims)| ims.len()).max().unwrap_or(0) as i32;
    let size = (LABEL + per_row * tile + GAP, rows.len() as i32 * tile + GAP);
    plot::svg((size.0 as u32, size.1 as u32), |root| {
        for (r, (label, images)) in rows.iter().enumerate() {
            let y0 = GAP + r as i32 * tile;
            let caption = plot::text("sans-serif", 11.0);
            root.draw(&Text::new(*label, (4, y0 + side / 2), caption))?;
            for (i, image) in images.iter().enumerate() {
                let x0 = LABEL + i as i32 * tile;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + side, y0 + side)],
                    PAPER.filled(),
                ))?;
                for (k, _) in image.iter().enumerate().filter(|(_, &v)| v >= 0.5) {
                    let (x, y) = (x0 + (k % SIDE) as i32 * CELL, y0 + (k / SIDE) as i32 * CELL);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + CELL, y + CELL)],
                        BLACK.filled(),
                    ))?;
                }
            }
        }
        Ok(())
    })
}
