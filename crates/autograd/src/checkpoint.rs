//! Checkpointed regions: a function recorded once on an inner tape, whose inner values are
//! dropped at once and recomputed from the recorded ops when backward needs them.
//!
//! Replaying the recorded ops, rather than calling the function again, is what lets the function
//! borrow anything (a model's cell, a slice of masks) and read parameters straight from the model:
//! nothing of it is kept but its record. Randomness it drew is in that record as constants, so a
//! replay reproduces the forward pass exactly.

use crate::float::Float;
use crate::grads::Grads;
use crate::shape::{numel, Shape};
use crate::tape::Tape;
use crate::tensor::Tensor;

/// A recorded region: its inner tape, which of its nodes stand for the checkpoint's inputs, and
/// which are its outputs.
pub(crate) struct Region<F: Float> {
    tape: Tape<F>,
    /// Inner leaf nodes, one per input of the checkpoint node, in the same order.
    pub(crate) leaves: Vec<usize>,
    /// Inner nodes the region returns.
    outputs: Vec<usize>,
    /// Their shapes.
    pub(crate) shapes: Vec<Shape>,
    /// Inner nodes whose values are dropped after each use: every computed node that is not a
    /// leaf.
    computed: Vec<usize>,
}

impl<F: Float> Region<F> {
    /// A region of `tape`, an inner tape on which the function has just run: `leaves` are the
    /// inner nodes of its inputs (parameters included), `outputs` the nodes it returned. Drops
    /// every inner value but the leaves' and returns the outputs' values.
    pub(crate) fn new(
        tape: Tape<F>,
        leaves: Vec<usize>,
        outputs: Vec<usize>,
    ) -> (Self, Vec<Tensor<F>>) {
        let values = outputs.iter().map(|&i| tape.value(i)).collect();
        let shapes = outputs.iter().map(|&i| tape.shape(i)).collect();
        let computed = tape.computed_nodes();
        let region = Region {
            tape,
            leaves,
            outputs,
            shapes,
            computed,
        };
        region.forget();
        (region, values)
    }

    /// Recomputes the dropped values in recording order; returns the bytes they hold.
    fn replay(&self) -> usize {
        self.tape.recompute(&self.computed)
    }

    /// Drops the recomputed values again, and the leaves' packed copies.
    fn forget(&self) {
        self.tape.forget(&self.computed);
    }

    /// The outputs' values, recomputed (a region inside a region being replayed).
    pub(crate) fn rerun(&self) -> Vec<Tensor<F>> {
        self.replay();
        let values = self.outputs.iter().map(|&i| self.tape.value(i)).collect();
        self.forget();
        values
    }

    /// The gradient of each leaf, given the outputs' gradients flattened and concatenated in
    /// `flat`; `None` where a leaf gets none. Also returns the most bytes the recomputation held.
    pub(crate) fn backward(&self, flat: &[F]) -> (Vec<Option<Tensor<F>>>, usize) {
        let bytes = self.replay();
        let mut offset = 0;
        let seeds = self
            .outputs
            .iter()
            .zip(&self.shapes)
            .map(|(&i, shape)| {
                let n = numel(shape);
                let g = Tensor::new_unchecked(shape.clone(), flat[offset..offset + n].to_vec());
                offset += n;
                (i, g)
            })
            .collect();
        let grads: Grads<F> = self.tape.backward_seeds(seeds);
        let peak = bytes + self.tape.stats().peak_bytes;
        let out = self
            .leaves
            .iter()
            .map(|&i| match self.tape.op_param(i) {
                Some(id) => grads.by_id(id).cloned(),
                None => grads.node(i).cloned(),
            })
            .collect();
        self.forget();
        (out, peak)
    }
}
