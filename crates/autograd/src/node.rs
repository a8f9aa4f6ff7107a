//! `Node`: one entry of a tape: a value, its shape, whether it needs a gradient, the line that
//! recorded it, and the op that produced it.

use std::cell::OnceCell;
use std::panic::Location;

use crate::float::Float;
use crate::kernels::Packed;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// One recorded value and the op `O` that produced it. `O` is always the op table's `Op`; it is a
/// parameter here so that the op table, which reads nodes, sits above this file rather than
/// beside it.
pub(crate) struct Node<F: Float, O> {
    pub(crate) op: O,
    /// `None` only for a transpose that no op has read yet: a matmul reads its source by stride.
    value: Option<Tensor<F>>,
    pub(crate) shape: Shape,
    pub(crate) requires_grad: bool,
    pub(crate) retain: bool,
    /// The line of code that recorded this node, for anomaly mode's messages.
    pub(crate) at: &'static Location<'static>,
    /// The value packed for the small-row GEMM, as stored and transposed, made on first use.
    packed: [OnceCell<Packed<F>>; 2],
}

impl<F: Float, O> Node<F, O> {
    /// A node recorded at `at`, with its value, or with `None` for a transpose to be computed when
    /// first read.
    pub(crate) fn new(
        op: O,
        value: Option<Tensor<F>>,
        shape: Shape,
        requires_grad: bool,
        at: &'static Location<'static>,
    ) -> Self {
        Node {
            op,
            value,
            shape,
            requires_grad,
            retain: false,
            at,
            packed: Default::default(),
        }
    }

    pub(crate) fn value(&self) -> &Tensor<F> {
        self.value
            .as_ref()
            .expect("a node's value is computed before any op reads it")
    }

    /// The value, if it has been computed (and not dropped since).
    pub(crate) fn computed(&self) -> Option<&Tensor<F>> {
        self.value.as_ref()
    }

    /// True for a transpose whose value has not been computed yet.
    pub(crate) fn is_pending(&self) -> bool {
        self.value.is_none()
    }

    /// Gives a pending transpose (or a checkpointed region's node, replayed) its value.
    pub(crate) fn set_value(&mut self, value: Tensor<F>) {
        self.value = Some(value);
    }

    /// Drops the value of a checkpointed region's node until the region is replayed.
    pub(crate) fn clear_value(&mut self) {
        self.value = None;
    }

    /// Drops the packed copies, made again on first use.
    pub(crate) fn clear_packed(&mut self) {
        self.packed = Default::default();
    }

    /// The cell that keeps this node's value (a matrix), transposed if `trans`, packed for the
    /// small-row GEMM.
    pub(crate) fn packed(&self, trans: bool) -> &OnceCell<Packed<F>> {
        &self.packed[trans as usize]
    }
}
