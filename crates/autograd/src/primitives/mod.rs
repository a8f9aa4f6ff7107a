//! `Op`, the primitives a tape records, and their derivative table. The primitives come in
//! families, one file each, and each family's file holds, op by op, its forward, its backward on
//! tensors and its derivative recorded with tape ops for `grad_graph`, side by side:
//!
//! - [`pointwise`]: arithmetic, the activations, clamp, `where`. Each derivative is one generic
//!   function, run on numbers by backward and on `Var`s by `grad_graph`: written once.
//! - [`product`]: the matrix product, and the pending transposes it reads by stride.
//! - [`fused`]: the LSTM and GRU cells.
//! - [`reduce`]: sum, max, softmax, log-softmax, cross-entropy.
//! - [`layout`]: reshape, broadcast, permute, narrow, concat, index select and add.
//!
//! Adding a primitive to a family is one arm in each of its file's matches (name, inputs,
//! forward, backward, derivative); the matches here only route by family. The arithmetic is the
//! kernels'; all a derivative sees of the backward pass is [`Sink`] (or `GraphSink` when
//! recorded), and all a checkpoint sees of the tape is [`Segment`].
//!
//! Backward always adds into the inputs' gradients (`+=`): that is what makes a value used twice,
//! such as a weight shared by every time step, come out right.

use std::any::Any;
use std::rc::Rc;

use smallvec::SmallVec;

use crate::custom::CustomOp;
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::elementwise::accumulate_reduced;
use crate::node::Node;
use crate::param::ParamId;
use crate::tape::Var;
use crate::tensor::Tensor;

/// One list of the nodes an op reads, expanded into `inputs` (to read) and `inputs_mut` (to
/// renumber, when a region's record is copied onto another tape): the same patterns bind by
/// reference in one and by mutable reference in the other, so the two cannot disagree.
macro_rules! inputs_of {
    (|$op:ident| $list:expr) => {
        /// The nodes this op reads.
        pub(crate) fn inputs(&self) -> smallvec::SmallVec<[&usize; 4]> {
            let $op = self;
            $list
        }

        /// The nodes this op reads, to renumber.
        pub(crate) fn inputs_mut(&mut self) -> smallvec::SmallVec<[&mut usize; 4]> {
            let $op = self;
            $list
        }
    };
}

pub(crate) mod fused;
pub(crate) mod layout;
pub(crate) mod pointwise;
pub(crate) mod product;
pub(crate) mod reduce;

pub(crate) use fused::Fused;
pub(crate) use layout::Layout;
pub(crate) use pointwise::Pointwise;
pub(crate) use product::MatMul;
pub(crate) use reduce::Reduce;
pub use reduce::Reduction;

/// One recorded primitive. Inputs are node indices on the same tape. A clone shares what it
/// saved (tensors are copy-on-write, a custom op and a region are shared).
#[derive(Clone)]
pub(crate) enum Op<F: Float> {
    /// A constant or a requested leaf.
    Leaf,
    /// A parameter's leaf.
    Param(ParamId),
    Pointwise(Pointwise<F>),
    MatMul(MatMul),
    Fused(Fused<F>),
    Reduce(Reduce<F>),
    Layout(Layout),
    Custom {
        op: Rc<dyn CustomOp<F>>,
        inputs: SmallVec<[usize; 4]>,
    },
    /// A checkpointed region over `inputs` (the caller's, then the parameters the region read):
    /// its record, without its inner values. Its gradient is every output's, flattened and
    /// concatenated; its value holds nothing, and `outputs` holds the outputs only while a
    /// replay hands them to the `CheckpointOutput` nodes. Backward replays the record to get the
    /// inputs' gradients.
    Checkpoint {
        region: Rc<dyn Segment<F>>,
        inputs: SmallVec<[usize; 4]>,
        outputs: Vec<Tensor<F>>,
    },
    /// Output number `output` of a `Checkpoint` node, at `offset` in its flattened gradient.
    CheckpointOutput {
        checkpoint: usize,
        offset: usize,
        output: usize,
    },
}

/// A tape's nodes, each holding one of these ops.
pub(crate) type Nodes<F> = [Node<F, Op<F>>];

/// The record of a `Checkpoint` node's region, kept by `Tape::checkpoint`: only the tape can
/// replay the inner tape it holds.
pub(crate) trait Segment<F: Float> {
    /// The region's outputs, its record replayed (a region inside a region being replayed).
    fn rerun(&self) -> Vec<Tensor<F>>;

    /// The gradient of each of the region's inputs, `None` where it gets none, given its
    /// outputs' gradients flattened and concatenated in `flat`; the record replayed. Also the
    /// most bytes the replay held.
    fn backward(&self, flat: &[F]) -> (Vec<Option<Tensor<F>>>, usize);

    /// The region itself, for the one place that reads its record (recording its ops again on
    /// the outer tape, to differentiate through it any number of times).
    fn as_any(&self) -> &dyn Any;
}

/// Where a derivative puts the gradients it computes: the backward pass's `GradSink`. Every
/// gradient is added into what the node holds so far.
pub(crate) trait Sink<F: Float> {
    /// The gradient buffer of node `i` to add into, zeroed on first use, or `None` when `i` needs
    /// no gradient.
    fn acc(&mut self, i: usize) -> Option<&mut [F]>;

    /// [`acc`](Sink::acc) for a product that writes every element: the buffer and the beta to
    /// give the GEMM. On first use the buffer is not zeroed and beta is 0 (the product overwrites
    /// whatever it holds); after that beta is 1.
    fn acc_product(&mut self, i: usize) -> Option<(&mut [F], F)>;

    /// Adds a whole gradient tensor to node `i`.
    fn add(&mut self, i: usize, g: Tensor<F>);

    /// Hands out the finished gradient of leaf node `i`.
    fn leaf(&mut self, i: usize, g: Tensor<F>);

    /// Hands out the finished gradient of a parameter.
    fn param(&mut self, id: ParamId, g: Tensor<F>);

    /// Offers `dW += gᵀ·a` (W read transposed, `tb`) or `aᵀ·g` for node `w`, the right operand of
    /// a per-step product, g [m, n] and a [m, k] row-major: the sink may put it off and stack it
    /// with other steps' rows. False when it does not take it, and the caller adds it now.
    fn defer_weight_grad(&mut self, w: usize, tb: bool, g: &[F], a: &[F]) -> bool;

    /// Notes the bytes a checkpoint's recomputation held at once.
    fn note_inner_bytes(&mut self, bytes: usize);
}

impl<F: Float> From<Pointwise<F>> for Op<F> {
    fn from(op: Pointwise<F>) -> Self {
        Op::Pointwise(op)
    }
}

impl<F: Float> From<Fused<F>> for Op<F> {
    fn from(op: Fused<F>) -> Self {
        Op::Fused(op)
    }
}

impl<F: Float> From<Reduce<F>> for Op<F> {
    fn from(op: Reduce<F>) -> Self {
        Op::Reduce(op)
    }
}

impl<F: Float> From<Layout> for Op<F> {
    fn from(op: Layout) -> Self {
        Op::Layout(op)
    }
}

/// Adds `g` (of shape `out`) into node `i`'s gradient, summed over the axes along which `i` was
/// broadcast.
fn add_reduced<F: Float>(
    sink: &mut impl Sink<F>,
    nodes: &Nodes<F>,
    i: usize,
    g: &Tensor<F>,
    out: &[usize],
) {
    if nodes[i].shape[..] == *out {
        sink.add(i, g.clone());
    } else if let Some(gi) = sink.acc(i) {
        accumulate_reduced(gi, &nodes[i].shape, out, g.data(), |_, g| g);
    }
}

impl<F: Float> Op<F> {
    /// The op's name as the API spells it, for messages.
    pub(crate) fn name(&self) -> &str {
        match self {
            Op::Leaf => "leaf",
            Op::Param(_) => "param",
            Op::Pointwise(op) => op.name(),
            Op::MatMul(op) => op.name(),
            Op::Fused(op) => op.name(),
            Op::Reduce(op) => op.name(),
            Op::Layout(op) => op.name(),
            Op::Custom { op, .. } => op.name(),
            Op::Checkpoint { .. } => "checkpoint",
            Op::CheckpointOutput { .. } => "checkpoint output",
        }
    }

    /// The nodes this op reads (for a matmul, the sources it reads and the operands as passed).
    pub(crate) fn inputs(&self) -> SmallVec<[usize; 4]> {
        let read: SmallVec<[&usize; 4]> = match self {
            Op::Leaf | Op::Param(_) => SmallVec::new(),
            Op::Pointwise(op) => op.inputs(),
            Op::MatMul(op) => op.inputs(),
            Op::Fused(op) => op.inputs(),
            Op::Reduce(op) => op.inputs(),
            Op::Layout(op) => op.inputs(),
            Op::Custom { inputs, .. } | Op::Checkpoint { inputs, .. } => inputs.iter().collect(),
            Op::CheckpointOutput { checkpoint, .. } => [checkpoint].into_iter().collect(),
        };
        read.into_iter().copied().collect()
    }

    /// Renumbers every node this op reads through `f` (a region's record copied onto another
    /// tape).
    pub(crate) fn map_inputs(&mut self, f: impl Fn(usize) -> usize) {
        let slots: SmallVec<[&mut usize; 4]> = match self {
            Op::Leaf | Op::Param(_) => SmallVec::new(),
            Op::Pointwise(op) => op.inputs_mut(),
            Op::MatMul(op) => op.inputs_mut(),
            Op::Fused(op) => op.inputs_mut(),
            Op::Reduce(op) => op.inputs_mut(),
            Op::Layout(op) => op.inputs_mut(),
            Op::Custom { inputs, .. } | Op::Checkpoint { inputs, .. } => {
                inputs.iter_mut().collect()
            }
            Op::CheckpointOutput { checkpoint, .. } => [checkpoint].into_iter().collect(),
        };
        slots.into_iter().for_each(|i| *i = f(*i));
    }

    /// Bytes this op keeps besides its value, for backward (the fused cells' activations).
    pub(crate) fn saved_bytes(&self) -> usize {
        match self {
            Op::Fused(op) => op.saved_bytes(),
            _ => 0,
        }
    }

    /// Drops what forward saved for backward (a checkpointed region's insides between replays);
    /// forward saves it again.
    pub(crate) fn forget_saved(&mut self) {
        match self {
            Op::Fused(op) => op.forget_saved(),
            Op::Checkpoint { outputs, .. } => outputs.clear(),
            _ => {}
        }
    }

    /// Computes this op's value from its inputs' values.
    pub(crate) fn forward(&mut self, nodes: &Nodes<F>) -> Tensor<F> {
        match self {
            Op::Leaf | Op::Param(_) => unreachable!("leaves are recorded with their values"),
            Op::Pointwise(op) => op.forward(nodes),
            Op::MatMul(op) => op.forward(nodes),
            Op::Fused(op) => op.forward(nodes),
            Op::Reduce(op) => op.forward(nodes),
            Op::Layout(op) => op.forward(nodes),
            Op::Custom { op, inputs } => {
                let values: Vec<&Tensor<F>> = inputs.iter().map(|&i| nodes[i].value()).collect();
                op.forward(&values)
            }
            // Only a region inside a region being replayed is computed again.
            Op::Checkpoint {
                region, outputs, ..
            } => {
                *outputs = region.rerun();
                Tensor::zeros(&[0])
            }
            Op::CheckpointOutput {
                checkpoint, output, ..
            } => match &nodes[*checkpoint].op {
                Op::Checkpoint { outputs, .. } => outputs[*output].clone(),
                _ => unreachable!("a checkpoint output reads its checkpoint"),
            },
        }
    }

    /// Adds this op's inputs' gradients into `sink`, given `g` = ∂L/∂(this node's value). Leaves
    /// hand their gradient out through `sink` instead.
    pub(crate) fn backward(
        &self,
        me: usize,
        g: Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let val = |i: usize| nodes[i].value();
        let gd = g.data();
        match self {
            Op::Leaf => sink.leaf(me, g),
            Op::Param(id) => sink.param(*id, g),
            Op::Pointwise(op) => op.backward(me, &g, nodes, sink),
            Op::MatMul(op) => op.backward(me, &g, nodes, sink),
            Op::Fused(op) => op.backward(me, &g, nodes, sink),
            Op::Reduce(op) => op.backward(me, &g, nodes, sink),
            Op::Layout(op) => op.backward(me, g, nodes, sink),
            Op::Custom { op, inputs } => {
                let values: Vec<&Tensor<F>> = inputs.iter().map(|&i| val(i)).collect();
                let input_grads = op.backward(&values, val(me), &g);
                assert_eq!(
                    input_grads.len(),
                    inputs.len(),
                    "custom op `{}`: backward returned {} gradients for {} inputs",
                    op.name(),
                    input_grads.len(),
                    inputs.len()
                );
                for (k, (&i, gi)) in inputs.iter().zip(input_grads).enumerate() {
                    let Some(gi) = gi else { continue };
                    assert_eq!(
                        gi.shape(),
                        &nodes[i].shape[..],
                        "custom op `{}`: backward returned a gradient of shape {:?} for input {k} of shape {:?}",
                        op.name(),
                        gi.shape(),
                        &nodes[i].shape[..]
                    );
                    sink.add(i, gi);
                }
            }
            Op::CheckpointOutput {
                checkpoint, offset, ..
            } => {
                if let Some(flat) = sink.acc(*checkpoint) {
                    let dst = &mut flat[*offset..*offset + gd.len()];
                    dst.iter_mut().zip(gd).for_each(|(d, &g)| *d += g);
                }
            }
            // Replay the region's record and backpropagate every output's gradient through it:
            // the inputs' gradients, recomputed.
            Op::Checkpoint { region, inputs, .. } => {
                let (input_grads, bytes) = region.backward(gd);
                sink.note_inner_bytes(bytes);
                for (&i, gi) in inputs.iter().zip(input_grads) {
                    if let Some(gi) = gi.filter(|_| nodes[i].requires_grad) {
                        sink.add(i, gi);
                    }
                }
            }
        }
    }

    /// Adds this op's inputs' gradients into `sink`, recorded as tape ops (`grad_graph`), given
    /// `g` = ∂L/∂(node `me`'s value) as a `Var`.
    pub(crate) fn derivative<'t>(&self, sink: &mut GraphSink<'t, F>, me: usize, g: Var<'t, F>) {
        match self {
            // The loop hands out the gradients of `wrt`; a leaf passes nothing on.
            Op::Leaf | Op::Param(_) => {}
            Op::Pointwise(op) => op.derivative(sink, me, g),
            Op::MatMul(op) => op.derivative(sink, g),
            Op::Fused(op) => op.derivative(sink, g),
            Op::Reduce(op) => op.derivative(sink, me, g),
            Op::Layout(op) => op.derivative(sink, g),
            Op::Custom { op, .. } => {
                let at = sink.tape().nodes()[me].at;
                panic!(
                    "grad_graph: the custom op `{}` (recorded at {at}) has no differentiable backward; \
                     write it with the tape's ops to differentiate through it more than once",
                    op.name()
                )
            }
            Op::Checkpoint { .. } | Op::CheckpointOutput { .. } => {
                unreachable!("the loop hands checkpoints to GraphSink::checkpoint")
            }
        }
    }
}
