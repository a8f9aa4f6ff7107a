//! `Tape` and `Var`: the record of a forward pass, one node per op, and the handles model code
//! computes with. Rewinding it is `backward.rs`.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use smallvec::SmallVec;

use crate::custom::CustomOp;
use crate::float::Float;
use crate::node::Node;
use crate::param::{Param, ParamId};
use crate::primitives::{product, Op, Segment};
use crate::recycle;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// What a tape holds, for memory benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeStats {
    /// Recorded nodes.
    pub nodes: usize,
    /// Bytes of node values the tape owns: not parameters (the model owns those) and not views
    /// that share another node's storage (reshape, detach).
    pub bytes: usize,
    /// The most bytes held at once: `bytes`, or more while a backward pass recomputed a
    /// checkpointed function on an inner tape.
    pub peak_bytes: usize,
}

/// The record of a forward pass: one node per op, in creation order.
///
/// Creation order is already a topological order, so backward is a single reverse loop over the
/// nodes: nothing recursive, in backward or in drop, however long the graph.
///
/// ```
/// use rewind_autograd::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::scalar(3.0));
/// let y = x * x + 2.0 * x; // dy/dx = 2x + 2 = 8
/// let grads = y.backward();
/// assert_eq!(grads[x].item(), 8.0);
/// ```
pub struct Tape<F: Float = f32> {
    id: u64,
    nodes: RefCell<Vec<Node<F, Op<F>>>>,
    params: RefCell<HashMap<ParamId, usize>>,
    bytes: Cell<usize>,
    peak_bytes: Cell<usize>,
    anomaly: Cell<bool>,
}

/// True when the environment variable `REWIND_DETECT_ANOMALY` is set to anything but `0` or an
/// empty string: every new tape then starts in anomaly mode.
fn anomaly_by_default() -> bool {
    static DEFAULT: OnceLock<bool> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var_os("REWIND_DETECT_ANOMALY").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// A handle to a node on a [`Tape`]: cheap to copy, and the thing model code computes with.
/// Ops on a `Var` record a node and return a new `Var`.
#[derive(Clone, Copy)]
pub struct Var<'t, F: Float = f32> {
    tape: &'t Tape<F>,
    index: usize,
}

impl<F: Float> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

// The node list and the values' buffers go back to the recycler, for the next step's tape.
impl<F: Float> Drop for Tape<F> {
    fn drop(&mut self) {
        recycle::keep_spare(std::mem::take(self.nodes.get_mut()));
        recycle::tape_dropped();
    }
}

impl<F: Float> Tape<F> {
    /// An empty tape.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        recycle::tape_made();
        Tape {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            nodes: RefCell::new(recycle::spare()),
            params: RefCell::new(HashMap::new()),
            bytes: Cell::new(0),
            peak_bytes: Cell::new(0),
            anomaly: Cell::new(anomaly_by_default()),
        }
    }

    /// Turns anomaly mode on or off for this tape (off by default; the environment variable
    /// `REWIND_DETECT_ANOMALY=1` turns it on for every new tape, so a whole program can be run
    /// under it).
    ///
    /// In anomaly mode, the first op whose value has a NaN or an infinity that its inputs did not
    /// have, and the first op whose backward makes an input's gradient non-finite from a finite
    /// gradient, panic with the op's name, the element, the shapes, and the line of code that
    /// recorded the op. Values that are non-finite on purpose (an attention mask of -inf) pass
    /// while their inputs carry them in. It costs a scan of every value and gradient, and turns
    /// off the stacking of per-step weight gradients, so that each is checked where it is made.
    ///
    /// ```should_panic
    /// use rewind_autograd::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// tape.detect_anomaly(true);
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 0.0], &[2]).unwrap());
    /// let y = x.ln(); // panics: anomaly: `ln` recorded at src/main.rs:6:11 produced -inf at ...
    /// ```
    pub fn detect_anomaly(&self, on: bool) {
        self.anomaly.set(on);
    }

    /// Whether anomaly mode is on ([`detect_anomaly`](Tape::detect_anomaly)).
    pub fn detects_anomaly(&self) -> bool {
        self.anomaly.get()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// A value that gets no gradient (data, targets, masks).
    #[track_caller]
    pub fn constant(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(Op::Leaf, Some(value), false, true)
    }

    /// A constant that shares storage with a value already on the tape (`detach`).
    #[track_caller]
    pub(crate) fn constant_sharing(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(Op::Leaf, Some(value), false, false)
    }

    /// A leaf whose gradient is requested: `grads[v]` holds ∂L/∂v after backward.
    #[track_caller]
    pub fn var(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(Op::Leaf, Some(value), true, true)
    }

    /// A parameter as a leaf, sharing its storage. Asking twice for one parameter on one tape
    /// returns the same node.
    #[track_caller]
    pub fn param(&self, p: &Param<F>) -> Var<'_, F> {
        if let Some(&index) = self.params.borrow().get(&p.id()) {
            return Var { tape: self, index };
        }
        let v = self.push(Op::Param(p.id()), Some(p.value()), true, false);
        self.params.borrow_mut().insert(p.id(), v.index);
        v
    }

    /// Records a user-defined op over `inputs`.
    #[track_caller]
    pub fn custom<'t>(&'t self, op: impl CustomOp<F>, inputs: &[Var<'t, F>]) -> Var<'t, F> {
        for v in inputs {
            self.assert_owns(op.name(), *v);
        }
        let indices: SmallVec<[usize; 4]> = inputs.iter().map(|v| v.index).collect();
        self.record(
            Op::Custom {
                op: Rc::new(op),
                inputs: indices.clone(),
            },
            &indices,
        )
    }

    /// The number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node count and bytes held.
    pub fn stats(&self) -> TapeStats {
        TapeStats {
            nodes: self.len(),
            bytes: self.bytes.get(),
            peak_bytes: self.peak_bytes.get().max(self.bytes.get()),
        }
    }

    #[track_caller]
    pub(crate) fn assert_owns(&self, op: &str, v: Var<'_, F>) {
        if !std::ptr::eq(self, v.tape) {
            panic!("{op}: operands are on different tapes");
        }
    }

    #[track_caller]
    fn push(
        &self,
        op: Op<F>,
        value: Option<Tensor<F>>,
        requires_grad: bool,
        owns: bool,
    ) -> Var<'_, F> {
        let shape = Shape::from_slice(value.as_ref().map_or(&[][..], |v| v.shape()));
        self.push_shaped(op, value, shape, requires_grad, owns)
    }

    #[track_caller]
    fn push_shaped(
        &self,
        op: Op<F>,
        value: Option<Tensor<F>>,
        shape: Shape,
        requires_grad: bool,
        owns: bool,
    ) -> Var<'_, F> {
        if let (true, Some(v)) = (owns, &value) {
            self.note_bytes(v.nbytes());
        }
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node::new(
            op,
            value,
            shape,
            requires_grad,
            Location::caller(),
        ));
        Var {
            tape: self,
            index: nodes.len() - 1,
        }
    }

    /// Computes `op` over the values of `inputs` and records it. The node needs a gradient when
    /// any input does; otherwise backward never visits it.
    #[track_caller]
    pub(crate) fn record(&self, op: impl Into<Op<F>>, inputs: &[usize]) -> Var<'_, F> {
        self.record_op(op.into(), inputs)
    }

    /// [`record`](Tape::record) once the op is an `Op`: one function per element type, which
    /// the `instances` module compiles in this crate for the tests and examples to link.
    #[track_caller]
    pub(crate) fn record_op(&self, mut op: Op<F>, inputs: &[usize]) -> Var<'_, F> {
        match &op {
            // A product reads its operands by stride, through their pending transposes.
            Op::MatMul(product) => product
                .read_whole()
                .into_iter()
                .for_each(|i| self.materialize(i)),
            _ => inputs.iter().for_each(|&i| self.materialize(i)),
        }
        let nodes = self.nodes.borrow();
        let requires_grad = inputs.iter().any(|&i| nodes[i].requires_grad);
        let value = op.forward(&nodes);
        let shares = inputs
            .iter()
            .any(|&i| nodes[i].value().shares_storage(&value));
        if self.anomaly.get() {
            crate::anomaly::check_value(&op, &value, inputs, &nodes, Location::caller());
        }
        drop(nodes);
        self.note_bytes(op.saved_bytes());
        self.push(op, Some(value), requires_grad, !shares)
    }

    fn note_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
        self.peak_bytes
            .set(self.peak_bytes.get().max(self.bytes.get()));
    }

    /// Records a transpose of the last two axes without computing it: a matmul reads the source
    /// by stride, and any other op computes it on first read.
    #[track_caller]
    pub(crate) fn record_lazy(&self, op: Op<F>, input: usize, shape: Shape) -> Var<'_, F> {
        let requires_grad = self.nodes.borrow()[input].requires_grad;
        self.push_shaped(op, None, shape, requires_grad, true)
    }

    /// Records a `Checkpoint` node over `inputs` whose region returned `outputs`, then one
    /// `CheckpointOutput` node for each output holding its value. The node is pushed, not
    /// recorded: recording computes a node's value, which here would replay the region that has
    /// just run.
    pub(crate) fn record_checkpoint(
        &self,
        region: Rc<dyn Segment<F>>,
        inputs: SmallVec<[usize; 4]>,
        outputs: Vec<Tensor<F>>,
    ) -> Vec<Var<'_, F>> {
        let requires_grad = {
            let nodes = self.nodes.borrow();
            inputs.iter().any(|&i| nodes[i].requires_grad)
        };
        // The node's gradient is the outputs' gradients, flattened; it holds no value.
        let total = outputs
            .iter()
            .try_fold(0usize, |n, t| n.checked_add(t.numel()))
            .expect("checkpoint: the outputs hold more than usize::MAX elements");
        let op = Op::Checkpoint {
            region,
            inputs,
            outputs: Vec::new(),
        };
        let checkpoint = self
            .push_shaped(
                op,
                Some(Tensor::zeros(&[0])),
                Shape::from_slice(&[total]),
                requires_grad,
                false,
            )
            .index;
        let mut offset = 0;
        outputs
            .into_iter()
            .enumerate()
            .map(|(output, value)| {
                let op = Op::CheckpointOutput {
                    checkpoint,
                    offset,
                    output,
                };
                offset += value.numel();
                self.push(op, Some(value), requires_grad, true)
            })
            .collect()
    }

    /// The node of parameter `id` on this tape, recorded with `value` if it is not yet.
    pub(crate) fn param_by_id(&self, id: ParamId, value: Tensor<F>) -> usize {
        if let Some(&index) = self.params.borrow().get(&id) {
            return index;
        }
        let index = self.push(Op::Param(id), Some(value), true, false).index;
        self.params.borrow_mut().insert(id, index);
        index
    }

    /// The parameters read on this tape and their nodes, in recording order.
    pub(crate) fn params_read(&self) -> Vec<(ParamId, usize)> {
        let mut read: Vec<(ParamId, usize)> = self
            .params
            .borrow()
            .iter()
            .map(|(&id, &i)| (id, i))
            .collect();
        read.sort_by_key(|&(_, i)| i);
        read
    }

    /// The nodes whose values an op computed: every node but leaves and pending transposes (a
    /// checkpoint output whose rows went into [`CheckpointRows`](crate::CheckpointRows) among
    /// them: it has no value until a replay computes it again).
    pub(crate) fn computed_nodes(&self) -> Vec<usize> {
        let nodes = self.nodes.borrow();
        (0..nodes.len())
            .filter(|&i| match nodes[i].op {
                Op::Leaf | Op::Param(_) => false,
                Op::CheckpointOutput { .. } => true,
                _ => !nodes[i].is_pending(),
            })
            .collect()
    }

    /// Drops the value of checkpoint output `index`, which the caller has copied elsewhere and
    /// which nothing reads (a replay of an enclosing region computes it again).
    pub(crate) fn release_checkpoint_output(&self, index: usize) {
        let mut nodes = self.nodes.borrow_mut();
        debug_assert!(matches!(nodes[index].op, Op::CheckpointOutput { .. }));
        let bytes = nodes[index].computed().map_or(0, Tensor::nbytes);
        nodes[index].clear_value();
        self.bytes.set(self.bytes.get() - bytes);
    }

    /// Counts `n` more bytes as held by this tape (a buffer that becomes a node's value later).
    pub(crate) fn hold_bytes(&self, n: usize) {
        self.note_bytes(n);
    }

    /// Counts `n` bytes fewer, given back by [`hold_bytes`](Self::hold_bytes)'s buffer unused.
    pub(crate) fn unhold_bytes(&self, n: usize) {
        self.bytes.set(self.bytes.get() - n);
    }

    /// Pushes `op` with a value computed by the caller from what its inputs held, its bytes
    /// already counted by [`hold_bytes`](Self::hold_bytes).
    #[track_caller]
    pub(crate) fn push_computed(&self, op: Op<F>, value: Tensor<F>) -> Var<'_, F> {
        let requires_grad = {
            let nodes = self.nodes.borrow();
            op.inputs().iter().any(|&i| nodes[i].requires_grad)
        };
        self.push(op, Some(value), requires_grad, false)
    }

    /// Computes the values of `indices` again, in order, from their ops; returns their bytes.
    pub(crate) fn recompute(&self, indices: &[usize]) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        let mut bytes = 0;
        for &i in indices {
            let mut op = std::mem::replace(&mut nodes[i].op, Op::Leaf);
            let value = op.forward(&nodes);
            // As when recorded: a view of an input's storage holds no bytes of its own.
            let shares = op.inputs().iter().any(|&j| {
                nodes[j]
                    .computed()
                    .is_some_and(|v| v.shares_storage(&value))
            });
            bytes += op.saved_bytes() + if shares { 0 } else { value.nbytes() };
            nodes[i].op = op;
            nodes[i].set_value(value);
        }
        bytes
    }

    /// Drops the values of `indices` and what their ops saved for backward, and every node's
    /// packed copy.
    pub(crate) fn forget(&self, indices: &[usize]) {
        let mut nodes = self.nodes.borrow_mut();
        for &i in indices {
            nodes[i].clear_value();
            nodes[i].op.forget_saved();
        }
        for node in nodes.iter_mut() {
            node.clear_packed();
        }
    }

    /// The parameter a node stands for, if it is a parameter's leaf.
    pub(crate) fn op_param(&self, index: usize) -> Option<ParamId> {
        match self.nodes.borrow()[index].op {
            Op::Param(id) => Some(id),
            _ => None,
        }
    }

    /// Computes a pending transpose's value, and first those of the pending transposes it reads
    /// (`x.t().t()` is a chain of two).
    fn materialize(&self, i: usize) {
        let mut nodes = self.nodes.borrow_mut();
        let chain = product::pending_transposes(&nodes, i);
        for &j in chain.iter().rev() {
            let mut op = std::mem::replace(&mut nodes[j].op, Op::Leaf);
            let value = op.forward(&nodes);
            self.bytes.set(self.bytes.get() + value.nbytes());
            nodes[j].op = op;
            nodes[j].set_value(value);
        }
    }

    /// The handle of node `index`.
    pub(crate) fn var_at(&self, index: usize) -> Var<'_, F> {
        debug_assert!(index < self.len());
        Var { tape: self, index }
    }

    pub(crate) fn value(&self, index: usize) -> Tensor<F> {
        self.materialize(index);
        self.nodes.borrow()[index].value().clone()
    }

    pub(crate) fn shape(&self, index: usize) -> Shape {
        self.nodes.borrow()[index].shape.clone()
    }

    pub(crate) fn requires_grad(&self, index: usize) -> bool {
        self.nodes.borrow()[index].requires_grad
    }

    pub(crate) fn retain(&self, index: usize) {
        self.nodes.borrow_mut()[index].retain = true;
    }

    /// Sets whether node `index` keeps its gradient; returns what it was.
    pub(crate) fn set_retain(&self, index: usize, on: bool) -> bool {
        std::mem::replace(&mut self.nodes.borrow_mut()[index].retain, on)
    }

    /// The recorded nodes, in creation order.
    pub(crate) fn nodes(&self) -> Ref<'_, Vec<Node<F, Op<F>>>> {
        self.nodes.borrow()
    }

    /// Notes that `extra` bytes were held at once on top of the tape's own (a checkpoint's
    /// recomputation during backward).
    pub(crate) fn note_peak(&self, extra: usize) {
        let peak = self.bytes.get() + extra;
        self.peak_bytes.set(self.peak_bytes.get().max(peak));
    }
}

impl<F: Float> fmt::Debug for Tape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        write!(f, "Tape {{ nodes: {}, bytes: {} }}", s.nodes, s.bytes)
    }
}

impl<'t, F: Float> Var<'t, F> {
    /// The tape this node lives on.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// The node's position on its tape (its creation order).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The computed value (cheap: the storage is shared).
    pub fn value(&self) -> Tensor<F> {
        self.tape.value(self.index)
    }

    /// The shape of the value.
    pub fn shape(&self) -> Shape {
        self.tape.shape(self.index)
    }

    /// The value of a one-element node.
    #[track_caller]
    pub fn item(&self) -> F {
        self.value().item()
    }

    /// True when some requested leaf or parameter feeds this node.
    pub fn requires_grad(&self) -> bool {
        self.tape.requires_grad(self.index)
    }

    /// Keeps this node's gradient in the [`Grads`](crate::Grads) of a later backward pass
    /// (intermediate gradients are otherwise freed as soon as they have been propagated).
    pub fn retain_grad(self) -> Self {
        self.tape.retain(self.index);
        self
    }
}

impl<F: Float> fmt::Debug for Var<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Var {{ index: {}, shape: {:?} }}",
            self.index,
            self.shape()
        )
    }
}
