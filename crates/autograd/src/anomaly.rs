//! Anomaly mode's checks: the first op that makes a value or a gradient non-finite, named with
//! its shapes and the line that recorded it ([`Tape::detect_anomaly`](crate::Tape::detect_anomaly)).

use std::panic::Location;

use crate::float::Float;
use crate::primitives::{Nodes, Op};
use crate::tensor::Tensor;

/// The first non-finite element of `data`: its flat position and its value.
fn first_non_finite<F: Float>(data: &[F]) -> Option<(usize, F)> {
    data.iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, &v)| (i, v))
}

/// The multi-dimensional index of flat position `flat` in `shape`.
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d].max(1);
        flat /= shape[d].max(1);
    }
    index
}

fn describe<F: Float>(v: F) -> String {
    let v = v.to_f64();
    if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// Panics when `value`, just computed by `op` from `inputs`, holds a NaN or an infinity while
/// every input was finite.
#[track_caller]
pub(crate) fn check_value<F: Float>(
    op: &Op<F>,
    value: &Tensor<F>,
    inputs: &[usize],
    nodes: &Nodes<F>,
    at: &Location<'_>,
) {
    let Some((flat, v)) = first_non_finite(value.data()) else {
        return;
    };
    if inputs
        .iter()
        .any(|&i| first_non_finite(nodes[i].value().data()).is_some())
    {
        return;
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|&i| &nodes[i].shape[..]).collect();
    panic!(
        "anomaly: `{}` recorded at {at} produced {} at element {:?} of its value {:?} from finite inputs of shapes {shapes:?}",
        op.name(),
        describe(v),
        unflatten(flat, value.shape()),
        value.shape(),
    );
}

/// Panics when the seed of a backward pass is not finite.
pub(crate) fn check_seed<F: Float>(seed: &Tensor<F>) {
    if let Some((flat, v)) = first_non_finite(seed.data()) {
        panic!(
            "anomaly: the seed of backward holds {} at element {:?} of shape {:?}",
            describe(v),
            unflatten(flat, seed.shape()),
            seed.shape()
        );
    }
}

/// Panics when node `me`'s backward, just run from a finite gradient, left a non-finite value in
/// one of its inputs' gradients, which `grad` returns by node.
pub(crate) fn check_gradients<'g, F: Float>(
    me: usize,
    nodes: &Nodes<F>,
    grad: impl Fn(usize) -> Option<&'g Tensor<F>>,
) {
    let op = &nodes[me].op;
    for (k, i) in op.inputs().into_iter().enumerate() {
        let Some(g) = grad(i) else { continue };
        if let Some((flat, v)) = first_non_finite(g.data()) {
            panic!(
                "anomaly: the backward of `{}` recorded at {} produced {} at element {:?} in the gradient of its input {k} (shape {:?}) from a finite gradient of shape {:?}",
                op.name(),
                nodes[me].at,
                describe(v),
                unflatten(flat, g.shape()),
                g.shape(),
                &nodes[me].shape[..],
            );
        }
    }
}
