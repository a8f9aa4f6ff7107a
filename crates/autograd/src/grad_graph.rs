//! `grad_graph`: the backward pass recorded on the tape. Each primitive's derivative is written
//! again here with the tape's own ops, so the gradients it returns are `Var`s that further ops
//! read and that backward, or `grad_graph` again, differentiates: second and higher derivatives,
//! Hessian-vector and Gauss-Newton products (see `second_order.rs`).
//!
//! Each primitive's recorded derivative sits beside its forward and backward in its family's file
//! under `primitives/` (`derivative`); this file holds the pass that runs them, and
//! [`GraphSink`], the gradients in flight. The plain [`Var::backward`] is untouched: it stays the
//! fast path, and nothing here runs unless asked for.

use std::collections::{HashMap, HashSet};

use crate::checkpoint::transplant;
use crate::float::Float;
use crate::primitives::Op;
use crate::shape::Shape;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::var_methods::concat;

impl<'t, F: Float> Var<'t, F> {
    /// The gradients of this scalar with respect to `wrt`, recorded on the tape as `Var`s
    /// (PyTorch's `torch.autograd.grad(y, wrt, create_graph=True)`): they can enter further
    /// computation and be differentiated again, by [`backward`](Var::backward) or by
    /// `grad_graph` itself, any number of times.
    ///
    /// `wrt` may hold parameters (`tape.param(&p)`), leaves, or any intermediate node; each
    /// gradient is the total derivative through every path. A `wrt` this value does not depend on
    /// gets zeros. Only nodes between `wrt` and `self` are visited.
    ///
    /// Every primitive has a differentiable derivative, a checkpointed region included (its ops
    /// are recorded again on this tape, so its insides are held like any other's from then on);
    /// a [`CustomOp`](crate::CustomOp) has none and panics naming itself.
    ///
    /// ```
    /// use rewind_autograd::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(0.5));
    /// let y = x.tanh() * x; // y' = (1 - t²)x + t,  y'' = 2(1 - t²)(1 - t·x),  t = tanh x
    /// let dy = y.grad_graph(&[x])[0];
    /// let d2y = dy.grad_graph(&[x])[0];
    /// let t = 0.5f64.tanh();
    /// assert!((dy.item() - ((1.0 - t * t) * 0.5 + t)).abs() < 1e-15);
    /// assert!((d2y.item() - 2.0 * (1.0 - t * t) * (1.0 - t * 0.5)).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn grad_graph(self, wrt: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let shape = self.shape();
        if crate::shape::numel(&shape) != 1 {
            panic!(
                "grad_graph: output must be a scalar, got shape {shape:?}; use grad_graph_with(seed, wrt)"
            );
        }
        let seed = self.tape().constant(Tensor::ones(&shape));
        self.grad_graph_with(seed, wrt)
    }

    /// The vector-Jacobian product `seedᵀ·∂self/∂wrt` for each of `wrt`, recorded on the tape
    /// (`torch.autograd.grad(self, wrt, grad_outputs=seed, create_graph=True)`). `seed` has
    /// self's shape and may itself be a `Var` that needs a gradient: the result is linear in it,
    /// which is how a Jacobian-vector product is taken from two reverse passes.
    #[track_caller]
    pub fn grad_graph_with(self, seed: Var<'t, F>, wrt: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let tape = self.tape();
        tape.assert_owns("grad_graph", seed);
        crate::check::same("grad_graph_with", &self.shape(), &seed.shape());
        for v in wrt {
            tape.assert_owns("grad_graph", *v);
        }
        let indices: Vec<usize> = wrt.iter().map(|v| v.index()).collect();
        let floor = indices.iter().copied().min().unwrap_or(usize::MAX);
        let found = rewind_graph(tape, vec![(self.index(), seed)], &indices, floor);
        wrt.iter()
            .zip(found)
            .map(|(v, g)| g.unwrap_or_else(|| tape.constant(Tensor::zeros(&v.shape()))))
            .collect()
    }
}

/// The recorded backward pass from `seeds` (node, ∂L/∂node) to the nodes `wrt`: each node that
/// depends on some `wrt` gets its gradient as a `Var`, visited in reverse order down to `floor`.
/// Nodes below `floor` are only ever `wrt` nodes themselves (a checkpoint's inputs, whose
/// region was recorded above them).
fn rewind_graph<'t, F: Float>(
    tape: &'t Tape<F>,
    seeds: Vec<(usize, Var<'t, F>)>,
    wrt: &[usize],
    floor: usize,
) -> Vec<Option<Var<'t, F>>> {
    let Some(root) = seeds.iter().map(|&(i, _)| i).max() else {
        return vec![None; wrt.len()];
    };
    let mut sink = GraphSink::new(tape, wrt, floor, root);
    for (i, seed) in seeds {
        sink.add(i, seed);
    }
    let mut found: HashMap<usize, Var<'t, F>> = HashMap::new();
    // The gradients of a checkpoint's outputs, by output number, until its node is reached.
    let mut regions: HashMap<usize, Vec<(usize, Var<'t, F>)>> = HashMap::new();
    for i in (floor.min(root + 1)..=root).rev() {
        if let Some(outputs) = regions.remove(&i) {
            sink.checkpoint(i, outputs);
            continue;
        }
        sink.settle(i);
        let Some(g) = sink.slots.remove(&i) else {
            continue;
        };
        if sink.wrt.contains(&i) {
            found.insert(i, g);
        }
        let op = tape.nodes()[i].op.clone();
        match op {
            Op::CheckpointOutput {
                checkpoint, output, ..
            } => regions.entry(checkpoint).or_default().push((output, g)),
            op => op.derivative(&mut sink, i, g),
        }
    }
    for &w in wrt {
        if w < floor {
            sink.settle(w);
        }
    }
    wrt.iter()
        .map(|w| found.get(w).or_else(|| sink.slots.get(w)).copied())
        .collect()
}

/// The gradients in flight during a recorded backward pass: one `Var` per node reached so far,
/// kept only for nodes that depend on a node of `wrt`.
///
/// Two kinds of gradient wait until their node is reached, so that they are put together by one
/// op rather than summed one step at a time (which would hold a whole-sized tensor per step):
/// windows of a node (each time step's slice of a hoisted projection, the gate blocks of a
/// fused cell) are concatenated, and per-step products' weight gradients are stacked into one
/// product over all steps' rows, as the plain backward pass does.
pub(crate) struct GraphSink<'t, F: Float> {
    tape: &'t Tape<F>,
    slots: HashMap<usize, Var<'t, F>>,
    /// Per node: gradients of windows of it, (axis, start, gradient).
    windows: HashMap<usize, Vec<(usize, usize, Var<'t, F>)>>,
    /// Per matrix read as a product's right operand (transposed if the flag says): the left
    /// operands and the products' gradients, dB = Σ Aᵀ·G taken as one product.
    stacked: HashMap<usize, Stack<'t, F>>,
    wrt: HashSet<usize>,
    floor: usize,
    /// `depends[i - floor]`: node i is one of `wrt` or reads one that depends on one.
    depends: Vec<bool>,
}

/// The products put off for one matrix B: dB = Σ op(A)ᵀ·G, B read transposed if `tb`.
struct Stack<'t, F: Float> {
    tb: bool,
    a: Vec<Var<'t, F>>,
    g: Vec<Var<'t, F>>,
}

impl<'t, F: Float> GraphSink<'t, F> {
    fn new(tape: &'t Tape<F>, wrt: &[usize], floor: usize, root: usize) -> Self {
        let mut sink = GraphSink {
            tape,
            slots: HashMap::new(),
            windows: HashMap::new(),
            stacked: HashMap::new(),
            wrt: wrt.iter().copied().collect(),
            floor,
            depends: Vec::new(),
        };
        if root >= floor {
            let nodes = tape.nodes();
            for i in floor..=root {
                let d =
                    sink.wrt.contains(&i) || nodes[i].op.inputs().iter().any(|&j| sink.needs(j));
                sink.depends.push(d);
            }
        }
        sink
    }

    /// The tape the gradients are recorded on.
    pub(crate) fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// Whether node `j` is one of the nodes the gradients are asked for.
    pub(crate) fn is_wrt(&self, j: usize) -> bool {
        self.wrt.contains(&j)
    }

    /// Whether node `j` needs a gradient: it depends on a node of `wrt`.
    pub(crate) fn needs(&self, j: usize) -> bool {
        if j < self.floor {
            self.wrt.contains(&j)
        } else {
            self.depends.get(j - self.floor).copied().unwrap_or(false)
        }
    }

    /// Adds `g` into node `j`'s gradient.
    pub(crate) fn add(&mut self, j: usize, g: Var<'t, F>) {
        if !self.needs(j) {
            return;
        }
        debug_assert_eq!(g.shape(), self.tape.shape(j), "gradient of node {j}");
        let sum = match self.slots.get(&j) {
            Some(&acc) => acc + g,
            None => g,
        };
        self.slots.insert(j, sum);
    }

    /// Adds `g`, computed in the broadcast shape, into node `j`'s gradient, summed over the axes
    /// along which `j` was broadcast.
    pub(crate) fn add_reduced(&mut self, j: usize, g: Var<'t, F>) {
        if self.needs(j) {
            let g = sum_to(g, &self.tape.shape(j));
            self.add(j, g);
        }
    }

    /// Adds `g` as the gradient of the window of node `j` along `axis` from `start`, to be
    /// joined with the node's other windows when it is reached.
    pub(crate) fn add_window(&mut self, j: usize, axis: usize, start: usize, g: Var<'t, F>) {
        if self.needs(j) {
            self.windows.entry(j).or_default().push((axis, start, g));
        }
    }

    /// Puts off dB += op(A)ᵀ·G for the matrix `b`, read transposed by the product if `tb`.
    pub(crate) fn stack(&mut self, b: usize, tb: bool, a: Var<'t, F>, g: Var<'t, F>) {
        if self.stacked.get(&b).is_some_and(|s| s.tb != tb) {
            self.settle(b);
        }
        let entry = self.stacked.entry(b).or_insert_with(|| Stack {
            tb,
            a: Vec::new(),
            g: Vec::new(),
        });
        entry.a.push(a);
        entry.g.push(g);
    }

    /// Adds node `j`'s waiting gradients into its slot: its windows' gradients joined (by one
    /// concat where they are disjoint windows along one axis, zeros between them) and its
    /// stacked products' weight gradient.
    fn settle(&mut self, j: usize) {
        if let Some(Stack { tb, a, g }) = self.stacked.remove(&j) {
            let (a, g) = (concat(&a, 0), concat(&g, 0));
            // B read transposed: op(B) = Bᵀ, so dB = (Aᵀ·G)ᵀ = Gᵀ·A.
            let db = if tb { g.t().matmul(a) } else { a.t().matmul(g) };
            self.add(j, db);
        }
        let Some(mut windows) = self.windows.remove(&j) else {
            return;
        };
        let shape = self.tape.shape(j);
        let axis = windows[0].0;
        windows.sort_by_key(|w| (w.0, w.1));
        let disjoint = windows.iter().all(|w| w.0 == axis)
            && windows
                .windows(2)
                .all(|p| p[0].1 + p[0].2.shape()[axis] <= p[1].1);
        let pieces: Vec<Vec<(usize, usize, Var<'t, F>)>> = if disjoint {
            vec![windows]
        } else {
            windows.into_iter().map(|w| vec![w]).collect()
        };
        for piece in pieces {
            let axis = piece[0].0;
            let mut parts = Vec::with_capacity(2 * piece.len() + 1);
            let mut at = 0;
            for (_, start, g) in piece {
                if start > at {
                    parts.push(self.gap(&shape, axis, start - at));
                }
                at = start + g.shape()[axis];
                parts.push(g);
            }
            if shape[axis] > at {
                parts.push(self.gap(&shape, axis, shape[axis] - at));
            }
            let whole = match parts.len() {
                1 => parts[0],
                _ => concat(&parts, axis),
            };
            self.add(j, whole);
        }
    }

    /// Zeros of `shape` with `len` entries along `axis`.
    fn gap(&self, shape: &[usize], axis: usize, len: usize) -> Var<'t, F> {
        let mut s = Shape::from_slice(shape);
        s[axis] = len;
        self.zeros(&s)
    }

    pub(crate) fn var(&self, j: usize) -> Var<'t, F> {
        self.tape.var_at(j)
    }

    /// A constant: zeros of `shape`, or a scalar.
    fn zeros(&self, shape: &[usize]) -> Var<'t, F> {
        self.tape.constant(Tensor::zeros(shape))
    }

    pub(crate) fn scalar(&self, v: F) -> Var<'t, F> {
        self.tape.constant(Tensor::scalar(v))
    }

    /// A checkpointed region reached with its outputs' gradients: its ops are recorded again on
    /// the tape, reading the checkpoint's inputs, and the recorded backward runs through them.
    fn checkpoint(&mut self, i: usize, outputs: Vec<(usize, Var<'t, F>)>) {
        let Op::Checkpoint { region, inputs, .. } = self.tape.nodes()[i].op.clone() else {
            unreachable!("a checkpoint output reads a checkpoint node");
        };
        let top = self.tape.len();
        let outs = transplant(region.as_ref(), self.tape, &inputs);
        let seeds = outputs
            .into_iter()
            .map(|(k, g)| (outs[k].index(), g))
            .collect();
        // A node passed twice (or a parameter passed and also read inside) has one slot, which
        // collects both of its leaves' gradients: it is handed on once.
        let mut wanted: Vec<usize> = inputs.iter().copied().filter(|&j| self.needs(j)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let grads = rewind_graph(self.tape, seeds, &wanted, top);
        for (j, g) in wanted.into_iter().zip(grads) {
            if let Some(g) = g {
                self.add(j, g);
            }
        }
    }
}

/// `g` summed over the axes along which a value of `shape` was broadcast to g's shape.
fn sum_to<'t, F: Float>(g: Var<'t, F>, shape: &[usize]) -> Var<'t, F> {
    let mut r = g;
    while r.shape().len() > shape.len() {
        r = r.sum_axis(0, false);
    }
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 && r.shape()[d] != 1 {
            r = r.sum_axis(d, true);
        }
    }
    r
}
