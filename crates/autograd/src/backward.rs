//! The backward pass: one reverse loop over the tape, and `GradSink`, the gradients in flight
//! during it, which puts off a parameter's per-step weight gradients and stacks them into one GEMM.

use crate::float::Float;
use crate::grads::Grads;
use crate::kernels::{self, Rhs, View};
use crate::param::ParamId;
use crate::primitives::{Nodes, Op, Sink};
use crate::recycle;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl<'t, F: Float> Var<'t, F> {
    /// Backpropagates from this scalar: returns ∂self/∂p for every parameter and requested leaf
    /// that self depends on.
    #[track_caller]
    pub fn backward(self) -> Grads<F> {
        let shape = self.shape();
        if crate::shape::numel(&shape) != 1 {
            panic!(
                "backward: output must be a scalar, got shape {shape:?}; use backward_with(seed)"
            );
        }
        rewind(self.tape(), self.index(), Tensor::ones(&shape))
    }

    /// Backpropagates from a non-scalar output, with `seed` = ∂L/∂self (a vector-Jacobian
    /// product).
    #[track_caller]
    pub fn backward_with(self, seed: &Tensor<F>) -> Grads<F> {
        crate::check::same("backward_with", &self.shape(), seed.shape());
        rewind(self.tape(), self.index(), seed.clone())
    }
}

/// Rewinds `tape` from `root`, seeded with ∂L/∂root = `seed`: one reverse loop in which each node
/// adds its inputs' gradients. Nodes that lead to no requested leaf or parameter were recorded
/// without `requires_grad` and are skipped.
fn rewind<F: Float>(tape: &Tape<F>, root: usize, seed: Tensor<F>) -> Grads<F> {
    rewind_from(tape, vec![(root, seed)]).0
}

/// Rewinds `tape` from several nodes at once, each seeded with its own gradient: the backward
/// pass of Σ_k ⟨node_k, seed_k⟩ (a checkpointed region's outputs). Also returns the most bytes
/// that the checkpointed regions on `tape` recomputed and held at once during the pass, beyond
/// what `tape` itself holds.
pub(crate) fn rewind_from<F: Float>(
    tape: &Tape<F>,
    seeds: Vec<(usize, Tensor<F>)>,
) -> (Grads<F>, usize) {
    rewind_pruned(tape, seeds, None)
}

/// [`rewind_from`], visiting only the nodes that depend on a node of `only` when it is given.
fn rewind_pruned<F: Float>(
    tape: &Tape<F>,
    seeds: Vec<(usize, Tensor<F>)>,
    only: Option<&[usize]>,
) -> (Grads<F>, usize) {
    let nodes = tape.nodes();
    let anomaly = tape.detects_anomaly();
    let root = seeds.iter().map(|&(i, _)| i).max().unwrap_or(0);
    let mut sink = GradSink::new(&nodes, root, Grads::new(tape.id()), !anomaly);
    if let Some(only) = only {
        sink.wanted = Some(depending_on(&nodes, only, root));
    }
    for (i, seed) in seeds {
        if anomaly {
            crate::anomaly::check_seed(&seed);
        }
        if nodes[i].requires_grad {
            sink.add(i, seed);
        }
    }
    for i in (0..=root).rev() {
        sink.flush(i);
        let Some(g) = sink.take(i) else { continue };
        let node = &nodes[i];
        debug_assert_eq!(g.shape(), &node.shape[..]);
        if node.retain {
            sink.grads.insert_node(i, g.clone());
        }
        node.op.backward(i, g, &nodes, &mut sink);
        if anomaly {
            crate::anomaly::check_gradients(i, &nodes, |k| sink.slot(k));
        }
    }
    tape.note_peak(sink.inner_peak);
    let grads = std::mem::replace(&mut sink.grads, Grads::new(tape.id()));
    (grads, sink.inner_peak)
}

/// The plain backward pass from `root`, seeded with `seed`, returning the gradients of the nodes
/// `wrt` (any nodes: leaves, parameters or intermediate ones), `None` where none arrives.
pub(crate) fn gradients_at<F: Float>(
    tape: &Tape<F>,
    root: usize,
    seed: Tensor<F>,
    wrt: &[usize],
) -> Vec<Option<Tensor<F>>> {
    let kept: Vec<bool> = wrt.iter().map(|&i| tape.set_retain(i, true)).collect();
    let (grads, _) = rewind_pruned(tape, vec![(root, seed)], Some(wrt));
    // In reverse, so a node listed twice gets back what it had before the first.
    for (&i, was) in wrt.iter().zip(kept).rev() {
        tape.set_retain(i, was);
    }
    wrt.iter().map(|&i| grads.node(i).cloned()).collect()
}

/// Per node up to `root`: whether it is one of `wrt` or reads a node that depends on one.
fn depending_on<F: Float>(nodes: &Nodes<F>, wrt: &[usize], root: usize) -> Vec<bool> {
    let mut depends = vec![false; root + 1];
    wrt.iter()
        .filter(|&&w| w <= root)
        .for_each(|&w| depends[w] = true);
    let floor = wrt.iter().copied().min().unwrap_or(root + 1);
    for i in floor..=root {
        if !depends[i] {
            depends[i] = nodes[i].op.inputs().iter().any(|&j| depends[j]);
        }
    }
    depends
}

/// The gradients in flight during one backward pass, one slot per node. A slot is created on
/// first use, zeroed, and every op adds into it.
struct GradSink<'a, F: Float> {
    nodes: &'a Nodes<F>,
    slots: Vec<Option<Tensor<F>>>,
    /// The finished gradients of leaves and parameters, and those kept by `retain_grad`.
    grads: Grads<F>,
    /// Per parameter node, weight-gradient products put off to run as one GEMM: a few entries,
    /// searched in order.
    stacked: Vec<(usize, Stacked<F>)>,
    /// The most bytes a checkpoint's recomputation held at once.
    inner_peak: usize,
    /// Whether per-step weight-gradient products are put off and stacked (off in anomaly mode,
    /// which checks each gradient where it is made).
    stack_weight_gradients: bool,
    /// When set, only these nodes get gradients (those on a path to the ones asked for).
    wanted: Option<Vec<bool>>,
}

/// Rows of several products' weight gradients, stacked: dW += Gᵀ·A (W read transposed) or
/// Aᵀ·G, G [rows, n] being the gradients of the products and A [rows, k] their left operands.
/// Stacking T steps of batch B gives one GEMM with inner size T·B instead of T with inner size B.
struct Stacked<F: Float> {
    tb: bool,
    g: Vec<F>,
    a: Vec<F>,
}

impl<F: Float> Drop for Stacked<F> {
    fn drop(&mut self) {
        recycle::give_back_buffer(std::mem::take(&mut self.g));
        recycle::give_back_buffer(std::mem::take(&mut self.a));
    }
}

/// Rows stacked before a weight gradient is computed: enough for an efficient GEMM, few enough
/// that the stacks stay small next to the tape.
const STACK_ROWS: usize = 512;

impl<'a, F: Float> GradSink<'a, F> {
    fn new(nodes: &'a Nodes<F>, root: usize, grads: Grads<F>, stack: bool) -> Self {
        let mut slots = recycle::spare();
        slots.resize_with(root + 1, || None);
        GradSink {
            nodes,
            slots,
            grads,
            stacked: recycle::spare(),
            inner_peak: 0,
            stack_weight_gradients: stack,
            wanted: None,
        }
    }

    /// Puts off `dW += gᵀ·a` (`tb`) or `aᵀ·g` for the parameter node `w`, g [m, n] and a [m, k]
    /// row-major: the rows join `w`'s stack, which is multiplied out when full or when `w` is
    /// reached ([`flush`](GradSink::flush)).
    fn defer(&mut self, w: usize, tb: bool, g: &[F], a: &[F]) {
        if self.stack(w).is_some_and(|s| s.tb != tb) {
            self.flush(w);
        }
        let (n, k) = self.stack_widths(w, tb);
        if n == 0 || k == 0 {
            // An empty weight: nothing to stack; its gradient is an empty tensor.
            self.acc(w);
            return;
        }
        let rows = g.len() / n;
        // The stacks keep their capacity from flush to flush: no allocation after the first.
        if self.stack(w).is_none() {
            let stack = Stacked {
                tb,
                g: recycle::with_capacity((STACK_ROWS + rows) * n),
                a: recycle::with_capacity((STACK_ROWS + rows) * k),
            };
            self.stacked.push((w, stack));
        }
        let s = self.stack_mut(w).expect("the stack was just made");
        s.tb = tb;
        s.g.extend_from_slice(g);
        s.a.extend_from_slice(a);
        if s.g.len() >= STACK_ROWS * n {
            self.flush(w);
        }
    }

    /// The row widths of `w`'s stacks: n of the gradients, k of the left operands. W is [n, k]
    /// when the products read it transposed (`tb`), else [k, n].
    fn stack_widths(&self, w: usize, tb: bool) -> (usize, usize) {
        let shape = &self.nodes[w].shape;
        if tb {
            (shape[0], shape[1])
        } else {
            (shape[1], shape[0])
        }
    }

    /// Multiplies out node `w`'s stacked weight-gradient rows into its gradient.
    fn flush(&mut self, w: usize) {
        if self.stacked.is_empty() {
            return;
        }
        let Some(at) = self.stacked.iter().position(|(i, _)| *i == w) else {
            return;
        };
        let (_, mut s) = self.stacked.swap_remove(at);
        if !s.g.is_empty() {
            let shape = self.nodes[w].shape.clone();
            let (n, k) = self.stack_widths(w, s.tb);
            let rows = s.g.len() / n;
            let (vg, va) = (View::of(&[rows, n], false), View::of(&[rows, k], false));
            let gw = self.acc(w).expect("only a gradient's parameter is stacked");
            let c = (gw, View::of(&shape, false));
            if s.tb {
                kernels::matmul(1, (&s.g, vg.t()), Rhs::Plain(&s.a, va), c, F::ONE);
            } else {
                kernels::matmul(1, (&s.a, va.t()), Rhs::Plain(&s.g, vg), c, F::ONE);
            }
            s.g.clear();
            s.a.clear();
        } else {
            // Products of no rows (a [0, k] input): their sum is a zero gradient, not none.
            let _ = self.acc(w);
        }
        self.stacked.push((w, s));
    }

    /// Node `w`'s stacked rows, if any.
    fn stack(&self, w: usize) -> Option<&Stacked<F>> {
        self.stacked.iter().find(|(i, _)| *i == w).map(|(_, s)| s)
    }

    fn stack_mut(&mut self, w: usize) -> Option<&mut Stacked<F>> {
        self.stacked
            .iter_mut()
            .find(|(i, _)| *i == w)
            .map(|(_, s)| s)
    }

    /// Whether node `i` is on a path to the nodes asked for (every node, unless pruned).
    fn wants(&self, i: usize) -> bool {
        self.wanted.as_ref().is_none_or(|w| w[i])
    }

    /// Node `i`'s gradient so far, if any.
    fn slot(&self, i: usize) -> Option<&Tensor<F>> {
        self.slots[i].as_ref()
    }

    /// Removes node `i`'s finished gradient (every consumer of `i` comes after it on the tape).
    fn take(&mut self, i: usize) -> Option<Tensor<F>> {
        self.slots[i].take()
    }
}

// The slots and the stacks go back to the recycler, for the next backward pass.
impl<F: Float> Drop for GradSink<'_, F> {
    fn drop(&mut self) {
        recycle::keep_spare(std::mem::take(&mut self.slots));
        recycle::keep_spare(std::mem::take(&mut self.stacked));
    }
}

impl<F: Float> Sink<F> for GradSink<'_, F> {
    // The product's buffer, zeroed when new, for a contribution that is added in.
    fn acc(&mut self, i: usize) -> Option<&mut [F]> {
        let (slot, beta) = self.acc_product(i)?;
        if beta == F::ZERO {
            slot.fill(F::ZERO);
        }
        Some(slot)
    }

    fn acc_product(&mut self, i: usize) -> Option<(&mut [F], F)> {
        let node = &self.nodes[i];
        if !node.requires_grad || !self.wants(i) {
            return None;
        }
        let beta = if self.slots[i].is_some() {
            F::ONE
        } else {
            F::ZERO
        };
        let slot = self.slots[i].get_or_insert_with(|| {
            let n = crate::shape::numel(&node.shape);
            Tensor::new_unchecked(node.shape.clone(), recycle::overwritten(n))
        });
        Some((slot.data_mut(), beta))
    }

    // The first gradient is kept without a copy.
    fn add(&mut self, i: usize, g: Tensor<F>) {
        if !self.nodes[i].requires_grad || !self.wants(i) {
            return;
        }
        match &mut self.slots[i] {
            slot @ None => *slot = Some(g),
            Some(acc) => {
                for (d, &s) in acc.data_mut().iter_mut().zip(g.data()) {
                    *d += s;
                }
            }
        }
    }

    fn leaf(&mut self, i: usize, g: Tensor<F>) {
        self.grads.insert_node(i, g);
    }

    fn param(&mut self, id: ParamId, g: Tensor<F>) {
        self.grads.insert_param(id, g);
    }

    // A parameter's rows wait to be stacked with the other steps': one GEMM over many steps'
    // rows instead of one per step.
    fn defer_weight_grad(&mut self, w: usize, tb: bool, g: &[F], a: &[F]) -> bool {
        let node = &self.nodes[w];
        let stacks = self.stack_weight_gradients
            && matches!(node.op, Op::Param(_))
            && node.requires_grad
            && self.wants(w);
        if stacks {
            self.defer(w, tb, g, a);
        }
        stacks
    }

    fn note_inner_bytes(&mut self, bytes: usize) {
        self.inner_peak = self.inner_peak.max(bytes);
    }
}
