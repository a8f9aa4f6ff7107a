//! `Tape::checkpoint`: a function recorded once on an inner tape, whose inner values are dropped
//! at once and recomputed from the record when backward needs them.
//!
//! Replaying the record, rather than calling the function again, is what lets the function
//! borrow anything (a model's cell, a slice of masks) and read parameters straight from the model:
//! nothing of it is kept but what it recorded. Randomness it drew is in that record as constants,
//! so a replay reproduces the forward pass exactly.

use std::any::Any;
use std::rc::Rc;

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::backward::rewind_from;
use crate::float::Float;
use crate::primitives::{Layout, Op, Segment};
use crate::shape::{numel, Shape};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl<F: Float> Tape<F> {
    /// Runs `f` on `inputs` and keeps only its outputs and its record: the values `f` computes
    /// inside are dropped at once, and during backward the recorded ops run again to recompute
    /// what its gradients need (as `jax.checkpoint` and `torch.utils.checkpoint`). Memory for a
    /// chain of such segments is their outputs plus one segment's insides at a time.
    ///
    /// `f` runs once, now, on an inner tape whose leaves are `inputs`; it may borrow anything,
    /// and it may read parameters itself (`inner.param(&p)`): those become inputs of the
    /// checkpoint, and their gradients reach the caller's tape. Whatever `f` draws at random is
    /// in its record as constants, so the recomputation reproduces it exactly.
    ///
    /// ```
    /// use rewind_autograd::{Param, Tape, Tensor};
    /// let w = Param::new(Tensor::scalar(3.0f64));
    /// let tape = Tape::new();
    /// let x = tape.var(Tensor::scalar(0.5));
    /// let y = tape.checkpoint(&[x], |inner, v| vec![(v[0] * inner.param(&w)).tanh()])[0];
    /// let grads = y.backward();
    /// let slope = 1.0 - 1.5f64.tanh().powi(2); // d tanh(wx) = (1 - tanh²(wx)) (w dx + x dw)
    /// assert!((grads[x].item() - 3.0 * slope).abs() < 1e-15);
    /// assert!((grads[&w].item() - 0.5 * slope).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn checkpoint<'t>(
        &'t self,
        inputs: &[Var<'t, F>],
        f: impl for<'s> FnOnce(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>>,
    ) -> Vec<Var<'t, F>> {
        for v in inputs {
            self.assert_owns("checkpoint", *v);
        }
        let inner = Tape::new();
        inner.detect_anomaly(self.detects_anomaly());
        let vars: Vec<Var<'_, F>> = inputs
            .iter()
            .map(|v| match v.requires_grad() {
                true => inner.var(v.value()),
                false => inner.constant(v.value()),
            })
            .collect();
        let returned: Vec<usize> = f(&inner, &vars)
            .into_iter()
            .map(|o| {
                inner.assert_owns("checkpoint's function output", o);
                o.index()
            })
            .collect();
        let mut leaves: Vec<usize> = vars.iter().map(|v| v.index()).collect();
        let mut indices: SmallVec<[usize; 4]> = inputs.iter().map(|v| v.index()).collect();
        for (id, i) in inner.params_read() {
            let value = inner.nodes()[i].value().clone();
            leaves.push(i);
            indices.push(self.param_by_id(id, value));
        }
        // While `f` ran, this tape also held the function's values. Its input leaves are this
        // tape's values, shared, not copied, yet counted by the inner tape; parameters are
        // counted by neither.
        let shared: usize = vars.iter().map(|v| v.value().nbytes()).sum();
        self.note_peak(inner.stats().peak_bytes.saturating_sub(shared));
        let (region, outputs) = Region::new(inner, leaves, returned);
        self.record_checkpoint(Rc::new(region), indices, outputs)
    }
}

/// A recorded region: its inner tape, which of its nodes stand for the checkpoint's inputs, and
/// which are its outputs.
struct Region<F: Float> {
    tape: Tape<F>,
    /// Inner leaf nodes, one per input of the checkpoint node, in the same order.
    leaves: Vec<usize>,
    /// Inner nodes the region returns, and their shapes.
    outputs: Vec<(usize, Shape)>,
    /// Inner nodes whose values are dropped after each use: every computed node that is not a
    /// leaf.
    computed: Vec<usize>,
}

impl<F: Float> Region<F> {
    /// A region of `tape`, an inner tape on which the function has just run: `leaves` are the
    /// inner nodes of its inputs (parameters included), `outputs` the nodes it returned. Drops
    /// every inner value but the leaves' and returns the outputs' values.
    fn new(tape: Tape<F>, leaves: Vec<usize>, outputs: Vec<usize>) -> (Self, Vec<Tensor<F>>) {
        // An output that is a view of a larger inner value (a row of a stacked result) is copied:
        // kept as a view, it would keep the whole inner buffer alive after `forget`, while the
        // tape counts only the window.
        let values = outputs.iter().map(|&i| tape.value(i).compact()).collect();
        let outputs = outputs.iter().map(|&i| (i, tape.shape(i))).collect();
        let computed = tape.computed_nodes();
        let region = Region {
            tape,
            leaves,
            outputs,
            computed,
        };
        region.tape.forget(&region.computed);
        (region, values)
    }
}

impl<F: Float> Segment<F> for Region<F> {
    fn rerun(&self) -> Vec<Tensor<F>> {
        self.tape.recompute(&self.computed);
        let values = self
            .outputs
            .iter()
            .map(|&(i, _)| self.tape.value(i).compact())
            .collect();
        self.tape.forget(&self.computed);
        values
    }

    fn backward(&self, flat: &[F]) -> (Vec<Option<Tensor<F>>>, usize) {
        let bytes = self.tape.recompute(&self.computed);
        let mut offset = 0;
        let seeds = self
            .outputs
            .iter()
            .map(|(i, shape)| {
                let n = numel(shape);
                let g = Tensor::new_unchecked(shape.clone(), flat[offset..offset + n].to_vec());
                offset += n;
                (*i, g)
            })
            .collect();
        // Held beyond the enclosing tape: the recomputed values, and at most what a region
        // inside this one recomputes on top of them. (The inner tape's own byte count still
        // includes the values dropped after the first run, so its peak would count them twice.)
        let (grads, nested) = rewind_from(&self.tape, seeds);
        let peak = bytes + nested;
        let out = self
            .leaves
            .iter()
            .map(|&i| match self.tape.op_param(i) {
                Some(id) => grads.by_id(id).cloned(),
                None => grads.node(i).cloned(),
            })
            .collect();
        self.tape.forget(&self.computed);
        (out, peak)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Records `segment`'s ops again on `tape`, reading the nodes `inputs` (the checkpoint node's
/// inputs) where the region read its leaves, and returns its outputs there: the region as
/// ordinary nodes, which a recorded backward differentiates any number of times. A region inside
/// it is recorded the same way.
pub(crate) fn transplant<'t, F: Float>(
    segment: &dyn Segment<F>,
    tape: &'t Tape<F>,
    inputs: &[usize],
) -> Vec<Var<'t, F>> {
    let region = segment
        .as_any()
        .downcast_ref::<Region<F>>()
        .expect("every checkpoint's record is a Region");
    let nodes = region.tape.nodes();
    let mut at = vec![usize::MAX; nodes.len()];
    for (&leaf, &outer) in region.leaves.iter().zip(inputs) {
        at[leaf] = outer;
    }
    let mut regions: HashMap<usize, Vec<Var<'t, F>>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if at[i] != usize::MAX {
            continue;
        }
        at[i] = match &node.op {
            // A constant the function made (data, a dropout mask), or a leaf it asked a gradient
            // of itself, which the caller cannot read: a constant either way.
            Op::Leaf | Op::Param(_) => tape.constant(node.value().clone()).index(),
            Op::Checkpoint {
                region: inner,
                inputs,
                ..
            } => {
                let inputs: Vec<usize> = inputs.iter().map(|&j| at[j]).collect();
                regions.insert(i, transplant(inner.as_ref(), tape, &inputs));
                // Stands in for the inner checkpoint node, which only its outputs read.
                tape.constant(Tensor::zeros(&[0])).index()
            }
            Op::CheckpointOutput {
                checkpoint, output, ..
            } => regions[checkpoint][*output].index(),
            op => {
                let mut op = op.clone();
                op.map_inputs(|j| at[j]);
                let reads = op.inputs();
                tape.record(op, &reads).index()
            }
        };
    }
    region
        .outputs
        .iter()
        .map(|&(i, _)| tape.var_at(at[i]))
        .collect()
}

/// A tensor whose leading rows are written by checkpointed segments as they run, each segment's
/// block of rows copied in and then dropped from the tape: the rows are held once, where a
/// [`concat`](crate::concat) of the segments' outputs would hold them twice. Gradients flow to
/// each segment as through that concatenation. Made by [`Tape::checkpoint_rows`].
///
/// ```
/// use rewind_autograd::{Param, Tape, Tensor};
/// let w = Param::new(Tensor::scalar(0.5f64));
/// let tape = Tape::new();
/// let mut h = tape.var(Tensor::ones(&[1, 2]));
/// // Four steps of h ← tanh(w·h), in two segments of two, each writing its two rows of `hs`.
/// let mut hs = tape.checkpoint_rows(&[4, 1, 2]);
/// for first in [0, 2] {
///     h = hs.checkpoint(first, &[h], |inner, v| {
///         let a = (v[0] * inner.param(&w)).tanh();
///         let b = (a * inner.param(&w)).tanh();
///         let rows = rewind_autograd::stack(&[a, b], 0);
///         vec![rows, b]
///     })[0];
/// }
/// let hs = hs.finish();
/// assert_eq!(hs.shape()[..], [4, 1, 2]);
/// let grads = hs.sum().backward();
/// assert!(grads[&w].item() > 0.0);
/// ```
pub struct CheckpointRows<'t, F: Float> {
    tape: &'t Tape<F>,
    shape: Shape,
    data: Vec<F>,
    /// (first row, rows, the checkpoint output that held them), in the order written.
    parts: Vec<(usize, usize, usize)>,
}

impl<F: Float> Tape<F> {
    /// A tensor of `shape` whose rows (along the first axis) checkpointed segments write with
    /// [`CheckpointRows::checkpoint`]; [`CheckpointRows::finish`] records it once every row is
    /// written. The tape counts its bytes from now on.
    #[track_caller]
    pub fn checkpoint_rows(&self, shape: &[usize]) -> CheckpointRows<'_, F> {
        let n = crate::check::numel("checkpoint_rows", shape);
        assert!(
            !shape.is_empty(),
            "checkpoint_rows: a scalar has no rows to write"
        );
        self.hold_bytes(n * std::mem::size_of::<F>());
        CheckpointRows {
            tape: self,
            shape: Shape::from_slice(shape),
            data: crate::recycle::overwritten(n),
            parts: Vec::new(),
        }
    }
}

impl<'t, F: Float> CheckpointRows<'t, F> {
    /// [`Tape::checkpoint`] over `inputs` and `f`, whose first output is a block of rows written
    /// here from row `first` on: its shape is the tensor's but for the first axis. Returns the
    /// other outputs (a segment's final state, say).
    #[track_caller]
    pub fn checkpoint(
        &mut self,
        first: usize,
        inputs: &[Var<'t, F>],
        f: impl for<'s> FnOnce(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>>,
    ) -> Vec<Var<'t, F>> {
        let mut outputs = self.tape.checkpoint(inputs, f);
        assert!(
            !outputs.is_empty(),
            "checkpoint_rows: the function returned no outputs; the first is the block of rows"
        );
        let rows = outputs.remove(0);
        let block = rows.shape();
        let total = self.shape[0];
        let fits = block.len() == self.shape.len()
            && block[1..] == self.shape[1..]
            && first.checked_add(block[0]).is_some_and(|end| end <= total);
        if !fits {
            panic!(
                "checkpoint_rows: a block of shape {:?} written from row {first} does not fit a tensor of shape {:?}",
                block,
                &self.shape[..]
            );
        }
        let n = block[0];
        if let Some(&(at, len, _)) = self
            .parts
            .iter()
            .find(|&&(at, len, _)| first < at + len && at < first + n)
        {
            panic!(
                "checkpoint_rows: rows {first}..{} overlap rows {at}..{} written before",
                first + n,
                at + len
            );
        }
        let row = numel(&self.shape[1..]);
        self.data[first * row..(first + n) * row].copy_from_slice(rows.value().data());
        self.tape.release_checkpoint_output(rows.index());
        self.parts.push((first, n, rows.index()));
        outputs
    }

    /// Records the tensor: a concatenation of the blocks in row order, holding the rows already
    /// written. Panics unless every row was written.
    #[track_caller]
    pub fn finish(mut self) -> Var<'t, F> {
        let written: usize = self.parts.iter().map(|&(_, n, _)| n).sum();
        if written != self.shape[0] {
            panic!(
                "checkpoint_rows: {written} of the {} rows of a tensor of shape {:?} were written",
                self.shape[0],
                &self.shape[..]
            );
        }
        let value = Tensor::new_unchecked(self.shape.clone(), std::mem::take(&mut self.data));
        if self.parts.is_empty() {
            // No rows at all (and so no bytes): nothing to differentiate.
            return self.tape.constant(value);
        }
        self.parts.sort_by_key(|&(first, ..)| first);
        let xs = self.parts.iter().map(|&(.., node)| node).collect();
        self.tape
            .push_computed(Op::Layout(Layout::Concat { xs, axis: 0 }), value)
    }
}

// Unfinished, the buffer was never recorded: its bytes are no longer held. (`finish` takes the
// buffer, leaving none.)
impl<F: Float> Drop for CheckpointRows<'_, F> {
    fn drop(&mut self) {
        self.tape
            .unhold_bytes(self.data.len() * std::mem::size_of::<F>());
    }
}

#[cfg(test)]
mod tests {
    use crate::tape::Tape;
    use crate::tensor::Tensor;

    /// A checkpoint that returns a row of a larger value it computed keeps that row alone, not
    /// the larger buffer, which the tape would not count.
    #[test]
    fn an_output_viewing_a_larger_inner_value_is_copied() {
        let tape = Tape::<f32>::new();
        let x = tape.var(Tensor::ones(&[1000, 100]));
        let before = tape.stats().bytes;
        let out = tape.checkpoint(&[x], |_, v| vec![(v[0] * 2.0).narrow(0, 0, 1)])[0];
        let value = out.value();
        assert_eq!(value.data(), &[2.0; 100][..]);
        assert!(
            value.clone().compact().shares_storage(&value),
            "the output still views a larger buffer"
        );
        assert_eq!(tape.stats().bytes, before + 400);
    }
}
