//! Grids of binary 8×8 images as hand-written SVG: one `rect` per lit pixel, a caption per row.

use std::fmt::Write;

use super::data::SIDE;

const CELL: usize = 4;
const GAP: usize = 4;
const LABEL: usize = 140;

/// An SVG of labelled rows of images, each row's images side by side; an image is 64 values
/// read as on when at least ½, row-major.
pub fn grid(rows: &[(&str, Vec<Vec<f64>>)]) -> String {
    let per_row = rows.iter().map(|(_, ims)| ims.len()).max().unwrap_or(0);
    let tile = SIDE * CELL + GAP;
    let (width, height) = (LABEL + per_row * tile + GAP, rows.len() * tile + GAP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (r, (label, images)) in rows.iter().enumerate() {
        let y0 = GAP + r * tile;
        let _ = writeln!(
            s,
            r#"<text x="4" y="{}" font-family="sans-serif" font-size="11">{label}</text>"#,
            y0 + SIDE * CELL / 2 + 4
        );
        for (i, image) in images.iter().enumerate() {
            let x0 = LABEL + i * tile;
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y0}" width="{0}" height="{0}" fill="#f2f2f2"/>"##,
                SIDE * CELL
            );
            for (k, _) in image.iter().enumerate().filter(|(_, &v)| v >= 0.5) {
                let _ = writeln!(
                    s,
                    r#"<rect x="{}" y="{}" width="{CELL}" height="{CELL}"/>"#,
                    x0 + (k % SIDE) * CELL,
                    y0 + (k / SIDE) * CELL
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
