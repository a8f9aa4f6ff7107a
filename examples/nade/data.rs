//! The digits: a CSV of 8×8 images (64 pixels 0..16, row-major, then a label), binarized and
//! split into training and test sets.

use std::fs;
use std::path::Path;

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::seq::SliceRandom;
use rewind::autograd::rand::SeedableRng;
use rewind::prelude::*;

use super::Error;

/// Pixels per image.
pub const PIXELS: usize = 64;
/// Side of the square image.
pub const SIDE: usize = 8;
/// A pixel is 1 when its value is at least this (0..16 scale), else 0.
pub const THRESHOLD: u8 = 8;
/// The seed of the shuffle that splits the data, the same for every run whatever `--seed` is.
pub const SPLIT_SEED: u64 = 15;

/// Every image of the file, binarized: `pixel >= THRESHOLD` is 1.
pub fn load(path: &Path) -> Result<Vec<[bool; PIXELS]>, Error> {
    let text = fs::read_to_string(path)
        .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    let images = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_line(line).map_err(|m| Error::Data(format!("{}:{}: {m}", path.display(), i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if images.len() < 2 {
        return Err(Error::Data(format!(
            "{}: expected at least 2 images to split into training and test, found {}",
            path.display(),
            images.len()
        )));
    }
    Ok(images)
}

fn parse_line(line: &str) -> Result<[bool; PIXELS], String> {
    let fields: Vec<&str> = line.trim().split(',').collect();
    if fields.len() != PIXELS + 1 {
        return Err(format!(
            "expected {} comma-separated values (64 pixels then a label), found {}",
            PIXELS + 1,
            fields.len()
        ));
    }
    let mut image = [false; PIXELS];
    for (k, field) in fields[..PIXELS].iter().enumerate() {
        match field.trim().parse::<u8>() {
            Ok(v) if v <= 16 => image[k] = v >= THRESHOLD,
            _ => {
                return Err(format!(
                    "pixel {} is {field:?}, expected an integer 0..=16",
                    k + 1
                ))
            }
        }
    }
    Ok(image)
}

/// A seeded shuffle (`SPLIT_SEED`) of the images, the first 80% for training and the rest for
/// testing (at least one of each).
pub fn split(images: &[[bool; PIXELS]]) -> (Vec<[bool; PIXELS]>, Vec<[bool; PIXELS]>) {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(SPLIT_SEED));
    let train = (images.len() * 4 / 5).clamp(1, images.len() - 1);
    let pick = |idx: &[usize]| idx.iter().map(|&i| images[i]).collect();
    (pick(&order[..train]), pick(&order[train..]))
}

/// The images as a [N, 64] tensor of 0/1.
pub fn to_tensor<F: Float>(images: &[[bool; PIXELS]]) -> Tensor<F> {
    let data = images
        .iter()
        .flat_map(|im| im.iter().map(|&on| if on { F::ONE } else { F::ZERO }))
        .collect();
    Tensor::from_vec(data, &[images.len(), PIXELS]).expect("64 values per image")
}
