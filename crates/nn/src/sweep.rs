//! One direction of one layer over the whole sequence: the loop over time that calls a cell's
//! step, every step recorded, or in checkpointed segments whose insides are recomputed during
//! backward.

use rewind_autograd::{stack, Float, Tape, Tensor, Var};

use crate::cell::{Cell, CellState};

/// One direction of one layer over the whole sequence.
pub(crate) struct Sweep<'a, F: Float> {
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    pub(crate) reverse: bool,
    /// By time step: 1 where the sequence still runs, [B, 1].
    pub(crate) masks: Option<&'a [Tensor<F>]>,
    /// By loop step.
    pub(crate) grad_scale: Option<&'a [F]>,
}

impl<'a, F: Float> Sweep<'a, F> {
    /// The time step that loop step `k` processes.
    fn time(&self, k: usize) -> usize {
        if self.reverse {
            self.steps - 1 - k
        } else {
            k
        }
    }

    /// The loop over time, every step recorded, on the rows `x` [T·B, in] (time-major): returns
    /// h at every step [T, B, H] (time order) and the final state. The input projection of
    /// every step is one call of [`Cell::project`] before the loop.
    pub(crate) fn run<'t, C: Cell<F>>(
        &self,
        tape: &'t Tape<F>,
        cell: &C,
        x: Var<'t, F>,
        start: C::State<'t>,
        keep: Option<&mut Vec<Var<'t, F>>>,
    ) -> (Var<'t, F>, C::State<'t>) {
        let xp = cell.project(tape, x);
        let (hs, state) = self.steps(tape, cell, xp, start, 0, keep);
        (stack(&hs, 0), state)
    }

    /// The loop in checkpointed segments of `k` steps: the tape keeps each segment's final state
    /// and the layer's output, into which each segment writes its rows as it runs
    /// ([`CheckpointRows`](rewind_autograd::CheckpointRows): held once, not once per segment and
    /// again concatenated); its insides, the cell's projection and steps, are recomputed during
    /// backward. A segment reads its input rows as a view of `x`. The parameters the cell reads
    /// become the segment's inputs, so any cell is checkpointed.
    pub(crate) fn run_checkpointed<'t, C: Cell<F>>(
        &self,
        tape: &'t Tape<F>,
        cell: &C,
        x: Var<'t, F>,
        start: C::State<'t>,
        k: usize,
    ) -> (Var<'t, F>, C::State<'t>) {
        let mut shape = vec![self.steps];
        shape.extend_from_slice(&start.h().shape());
        let mut output = tape.checkpoint_rows(&shape);
        let mut state = start;
        for first in (0..self.steps).step_by(k) {
            let n = k.min(self.steps - first);
            // Rows of the segment in time order: loop steps first..first+n.
            let t_lo = self.time(first).min(self.time(first + n - 1));
            let rows = x.narrow(0, t_lo * self.batch, n * self.batch);
            let segment = Sweep {
                steps: n,
                batch: self.batch,
                reverse: self.reverse,
                masks: self.masks.map(|m| &m[t_lo..t_lo + n]),
                grad_scale: self.grad_scale.map(|xi| &xi[first..first + n]),
            };
            let mut inputs = vec![rows];
            inputs.extend(state.parts());
            let end = output.checkpoint(t_lo, &inputs, |inner, v| {
                let xp = cell.project(inner, v[0]);
                let start = C::State::from_parts(&v[1..]);
                let (hs, end) = segment.steps(inner, cell, xp, start, first, None);
                let mut out = vec![stack(&hs, 0)];
                out.extend(end.parts());
                out
            });
            state = C::State::from_parts(&end);
        }
        (output.finish(), state)
    }

    /// Runs every step of the lane from `state` on the projected rows `xp` [T·B, ·] (time
    /// order); `offset` is the loop index of its first step in the whole sequence (the
    /// sequence's first step has no incoming gradient to scale). Returns h per step in time
    /// order, and the final state; pushes each state's h onto `keep` if given.
    fn steps<'t, C: Cell<F>>(
        &self,
        tape: &'t Tape<F>,
        cell: &C,
        xp: Var<'t, F>,
        mut state: C::State<'t>,
        offset: usize,
        mut keep: Option<&mut Vec<Var<'t, F>>>,
    ) -> (Vec<Var<'t, F>>, C::State<'t>) {
        let mut hs = vec![None; self.steps];
        let zero = self.masks.map(|_| tape.constant(Tensor::scalar(F::ZERO)));
        for k in 0..self.steps {
            if let Some(xi) = self.grad_scale.filter(|_| offset + k > 0) {
                state = state.map(|part| part.scale_grad(xi[k]));
            }
            let t = self.time(k);
            let input = xp.narrow(0, t * self.batch, self.batch);
            let next = cell.step(tape, input, state);
            state = match self.masks {
                Some(m) => masked(&m[t], next, state),
                None => next,
            };
            let h = state.h();
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(h.retain_grad());
            }
            // The output reads the state node itself, not the cell's `next.h` (equal where the
            // sequence runs): then h_t is one node that every path to the loss passes through,
            // and a kept state's gradient is the total ∂L/∂h_t.
            hs[t] = Some(match (self.masks, zero) {
                (Some(m), Some(zero)) => h.where_cond(&m[t], zero),
                _ => h,
            });
        }
        let hs = hs.into_iter().map(|h| h.expect("every step ran")).collect();
        (hs, state)
    }
}

/// Where `mask` [B, 1] is 0 (the sequence has ended), keeps the previous state, part by part
/// (the mask shaped [B, 1, …] to each part's rank).
fn masked<'t, F: Float, S: CellState<'t, F>>(mask: &Tensor<F>, next: S, prev: S) -> S {
    let prev = prev.parts();
    let mut i = 0;
    next.map(|n| {
        let p = prev[i];
        i += 1;
        let rank = n.shape().len();
        if rank == 2 {
            n.where_cond(mask, p)
        } else {
            let mut shape = vec![1; rank];
            shape[0] = mask.shape()[0];
            n.where_cond(&mask.reshape(&shape), p)
        }
    })
}
