//! `grad_graph`: the backward pass recorded on the tape. Each primitive's derivative is written
//! again here with the tape's own ops, so the gradients it returns are `Var`s that further ops
//! read and that backward, or `grad_graph` again, differentiates: second and higher derivatives,
//! Hessian-vector and Gauss-Newton products (see `second_order.rs`).
//!
//! The table below follows `primitives.rs` variant by variant, with the same equations; where the
//! fused cells keep their activations as saved tensors, the form here recomputes them from the
//! gates with ops, so that they too are differentiated. The plain [`Var::backward`] is untouched:
//! it stays the fast path, and nothing here runs unless asked for.

use std::collections::{HashMap, HashSet};

use crate::checkpoint::transplant;
use crate::float::Float;
use crate::primitives::{Op, Reduction};
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
            op => derivative(&mut sink, i, &op, g),
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
struct GraphSink<'t, F: Float> {
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

    /// Whether node `j` needs a gradient: it depends on a node of `wrt`.
    fn needs(&self, j: usize) -> bool {
        if j < self.floor {
            self.wrt.contains(&j)
        } else {
            self.depends.get(j - self.floor).copied().unwrap_or(false)
        }
    }

    /// Adds `g` into node `j`'s gradient.
    fn add(&mut self, j: usize, g: Var<'t, F>) {
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
    fn add_reduced(&mut self, j: usize, g: Var<'t, F>) {
        if self.needs(j) {
            let g = sum_to(g, &self.tape.shape(j));
            self.add(j, g);
        }
    }

    /// Adds `g` as the gradient of the window of node `j` along `axis` from `start`, to be
    /// joined with the node's other windows when it is reached.
    fn add_window(&mut self, j: usize, axis: usize, start: usize, g: Var<'t, F>) {
        if self.needs(j) {
            self.windows.entry(j).or_default().push((axis, start, g));
        }
    }

    /// Puts off dB += op(A)ᵀ·G for the matrix `b`, read transposed by the product if `tb`.
    fn stack(&mut self, b: usize, tb: bool, a: Var<'t, F>, g: Var<'t, F>) {
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

    fn var(&self, j: usize) -> Var<'t, F> {
        self.tape.var_at(j)
    }

    /// A constant: zeros of `shape`, or a scalar.
    fn zeros(&self, shape: &[usize]) -> Var<'t, F> {
        self.tape.constant(Tensor::zeros(shape))
    }

    fn scalar(&self, v: F) -> Var<'t, F> {
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

/// A 0/1 mask of `x`'s shape: 1 where `keep` holds.
fn mask<F: Float>(x: &Tensor<F>, keep: impl Fn(F) -> bool) -> Tensor<F> {
    x.map(|v| if keep(v) { F::ONE } else { F::ZERO })
}

/// `g` shaped to broadcast against the input of a reduction along `axis` (None: all axes) of a
/// value of rank `rank`: the reduced axes put back with size 1.
fn unreduce<'t, F: Float>(
    g: Var<'t, F>,
    axis: Option<usize>,
    keepdim: bool,
    rank: usize,
) -> Var<'t, F> {
    match (axis, keepdim) {
        (_, true) => g,
        (None, false) => g.reshape(&vec![1; rank]),
        (Some(a), false) => g.unsqueeze(a),
    }
}

/// Adds the gradients of node `me`'s inputs, given `g` = ∂L/∂me, each written with tape ops.
fn derivative<'t, F: Float>(sink: &mut GraphSink<'t, F>, me: usize, op: &Op<F>, g: Var<'t, F>) {
    let tape = sink.tape;
    let y = || tape.var_at(me);
    let shape_of = |j: usize| tape.shape(j);
    match op {
        // The loop hands out the gradients of `wrt`; a leaf passes nothing on.
        Op::Leaf | Op::Param(_) => {}
        Op::Add(a, b) => {
            sink.add_reduced(*a, g);
            sink.add_reduced(*b, g);
        }
        Op::Sub(a, b) => {
            sink.add_reduced(*a, g);
            sink.add_reduced(*b, -g);
        }
        // d(a·b) = b·da + a·db
        Op::Mul(a, b) => {
            let (va, vb) = (sink.var(*a), sink.var(*b));
            if sink.needs(*a) {
                sink.add_reduced(*a, g * vb);
            }
            if sink.needs(*b) {
                sink.add_reduced(*b, g * va);
            }
        }
        // d(a/b) = da/b - ((a/b)/b)·db
        Op::Div(a, b) => {
            let vb = sink.var(*b);
            if sink.needs(*a) {
                sink.add_reduced(*a, g / vb);
            }
            if sink.needs(*b) {
                sink.add_reduced(*b, -g * (y() / vb));
            }
        }
        Op::Affine { x, scale, .. } => sink.add(*x, g.affine(*scale, F::ZERO)),
        // p·x^(p-1)·dx, and nothing for p = 0.
        Op::Powf { x, p } => {
            if *p != F::ZERO {
                let dx = g.affine(*p, F::ZERO) * sink.var(*x).powf(*p - F::ONE);
                sink.add(*x, dx);
            }
        }
        Op::Exp(x) => sink.add(*x, g * y()),
        Op::Ln(x) => sink.add(*x, g / sink.var(*x)),
        Op::Sqrt(x) => {
            let y = y();
            sink.add(*x, g / (y + y))
        }
        // (1 - y²)·dx
        Op::Tanh(x) => {
            let y = y();
            sink.add(*x, g * (y * y).affine(-F::ONE, F::ONE))
        }
        // y(1 - y)·dx
        Op::Sigmoid(x) => {
            let y = y();
            sink.add(*x, g * y * y.affine(-F::ONE, F::ONE))
        }
        // [y > 0]·dx: a mask of constants, whose own derivative is zero almost everywhere.
        Op::Relu(x) => {
            let keep = mask(&y().value(), |v| v > F::ZERO);
            sink.add(*x, g.where_cond(&keep, sink.scalar(F::ZERO)));
        }
        Op::Clamp { x, min, max } => {
            let keep = mask(&sink.var(*x).value(), |v| *min <= v && v <= *max);
            sink.add(*x, g.where_cond(&keep, sink.scalar(F::ZERO)));
        }
        // C = A·B with A, B the operands as the caller passed them (pending transposes are read
        // by stride): dA = dC·Bᵀ, dB = Aᵀ·dC, summed over a batch an operand was shared by.
        Op::MatMul {
            b: source,
            tb,
            add,
            operands,
            ..
        } => {
            if let Some(x) = add {
                sink.add_reduced(*x, g);
            }
            let [a, b] = *operands;
            let (va, vb) = (sink.var(a), sink.var(b));
            let (sa, sb) = (shape_of(a), shape_of(b));
            if sink.needs(a) {
                sink.add_reduced(a, g.matmul(vb.t()));
            }
            // A matrix B read by many 2-D products (a weight, by every time step): its
            // gradient goes to B's source, stacked with the other products' rows.
            let chain_free = || {
                let nodes = tape.nodes();
                let mut i = b;
                while i != *source {
                    if sink.wrt.contains(&i) {
                        return false;
                    }
                    match &nodes[i].op {
                        Op::Permute { x, .. } => i = *x,
                        _ => return false,
                    }
                }
                true
            };
            if sink.needs(b) {
                if sa.len() == 2 && sb.len() == 2 && chain_free() {
                    sink.stack(*source, *tb, va, g);
                } else {
                    let db = if sa.len() == 3 && sb.len() == 2 {
                        // Every batch entry read the same B: one product over all entries' rows.
                        let rows = sa[0] * sa[1];
                        let gs = g.shape();
                        let a2 = va.reshape(&[rows, sa[2]]);
                        a2.t().matmul(g.reshape(&[rows, gs[2]]))
                    } else {
                        va.t().matmul(g)
                    };
                    sink.add_reduced(b, db);
                }
            }
        }
        // c' = σ(f)⊙c + σ(i)⊙tanh(g), the gates recomputed from their pre-activations.
        Op::LstmCell { gates, c, .. } => {
            let (pre, vc) = (sink.var(*gates), sink.var(*c));
            let h = shape_of(*c)[1];
            let block = |k: usize| pre.narrow(1, k * h, h);
            let (i, f, gg) = (block(0).sigmoid(), block(1).sigmoid(), block(2).tanh());
            if sink.needs(*gates) {
                let one_minus = |v: Var<'t, F>| v.affine(-F::ONE, F::ONE);
                sink.add_window(*gates, 1, 0, g * gg * i * one_minus(i));
                sink.add_window(*gates, 1, h, g * vc * f * one_minus(f));
                sink.add_window(*gates, 1, 2 * h, g * i * one_minus(gg * gg));
            }
            if sink.needs(*c) {
                sink.add(*c, g * f);
            }
        }
        // h' = σ(o)⊙tanh(c')
        Op::LstmHidden { cell, gates, .. } => {
            let h = shape_of(*cell)[1];
            let o = sink.var(*gates).narrow(1, 3 * h, h).sigmoid();
            let tc = sink.var(*cell).tanh();
            if sink.needs(*gates) {
                let d_o = g * tc * o * o.affine(-F::ONE, F::ONE);
                sink.add_window(*gates, 1, 3 * h, d_o);
            }
            if sink.needs(*cell) {
                sink.add(*cell, g * o * (tc * tc).affine(-F::ONE, F::ONE));
            }
        }
        // r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r⊙h_n), h' = n + z⊙(h - n).
        Op::GruCell { xp, hp, h, .. } => {
            let (vx, vhp, vh) = (sink.var(*xp), sink.var(*hp), sink.var(*h));
            let hs = shape_of(*h)[1];
            let blocks = |v: Var<'t, F>| [0, 1, 2].map(|k| v.narrow(1, k * hs, hs));
            let ([xr, xz, xn], [hr, hz, hn]) = (blocks(vx), blocks(vhp));
            let (r, z) = ((xr + hr).sigmoid(), (xz + hz).sigmoid());
            let n = (xn + r * hn).tanh();
            let one_minus = |v: Var<'t, F>| v.affine(-F::ONE, F::ONE);
            let dn = g * one_minus(z) * one_minus(n * n);
            let dz = g * (vh - n) * z * one_minus(z);
            let dr = dn * hn * r * one_minus(r);
            if sink.needs(*xp) {
                sink.add(*xp, concat(&[dr, dz, dn], 1));
            }
            if sink.needs(*hp) {
                sink.add(*hp, concat(&[dr, dz, dn * r], 1));
            }
            if sink.needs(*h) {
                sink.add(*h, g * z);
            }
        }
        // dy / n broadcast back over the summed axes.
        Op::Sum {
            x,
            axis,
            keepdim,
            divisor,
        } => {
            let shape = shape_of(*x);
            let mut dx = unreduce(g, *axis, *keepdim, shape.len()).broadcast_to(&shape);
            if *divisor != F::ONE {
                dx = dx / sink.scalar(*divisor);
            }
            sink.add(*x, dx);
        }
        // To the (first) maximum of each lane, chosen by a constant mask.
        Op::MaxAxis {
            x,
            axis,
            keepdim,
            argmax,
        } => {
            let shape = shape_of(*x);
            let mut chosen = Tensor::zeros(&shape);
            argmax.iter().for_each(|&at| chosen.data_mut()[at] = F::ONE);
            let gk = unreduce(g, Some(*axis), *keepdim, shape.len());
            sink.add(*x, gk.where_cond(&chosen, sink.scalar(F::ZERO)));
        }
        Op::Reshape { x, .. } => sink.add(*x, g.reshape(&shape_of(*x))),
        Op::Expand { x, .. } => sink.add_reduced(*x, g),
        Op::Permute { x, perm } => {
            let mut inverse = vec![0usize; perm.len()];
            perm.iter().enumerate().for_each(|(d, &p)| inverse[p] = d);
            sink.add(*x, g.permute(&inverse));
        }
        // The window's gradient, joined with the node's other windows' (zeros elsewhere) when
        // the node is reached.
        Op::Narrow { x, axis, start, .. } => sink.add_window(*x, *axis, *start, g),
        Op::Concat { xs, axis } => {
            let mut start = 0;
            for &i in xs.iter() {
                let len = shape_of(i)[*axis];
                if sink.needs(i) {
                    sink.add(i, g.narrow(*axis, start, len));
                }
                start += len;
            }
        }
        Op::IndexSelect { x, axis, indices } => {
            let len = shape_of(*x)[*axis];
            sink.add(*x, index_add(g, *axis, indices, len));
        }
        Op::IndexAdd {
            x, axis, indices, ..
        } => {
            sink.add(*x, g.index_select_dim(*axis, indices));
        }
        // dx = y ⊙ (g - Σ g ⊙ y)
        Op::Softmax { x, axis } => {
            let y = y();
            sink.add(*x, y * (g - (g * y).sum_axis(*axis, true)));
        }
        // dx = g - softmax(x)·Σ g, softmax(x) = e^y
        Op::LogSoftmax { x, axis } => {
            let y = y();
            sink.add(*x, g - y.exp() * g.sum_axis(*axis, true));
        }
        // Per counted row n with target t, p = softmax(x), w_t the target's weight, W = Σ_j w_j:
        // ∂l/∂x_c = a_n·p_c - k_nc with a_n = (1 - ε)·w_t + (ε/C)·W and
        // k_nc = (1 - ε)·w_t·[c = t] + (ε/C)·w_c (both zero on an ignored row), times the row's
        // gradient. a and k are constants; p and the row's gradient are Vars.
        Op::CrossEntropy {
            logits,
            targets,
            ignore,
            weight,
            smoothing,
            reduction,
            divisor,
        } => {
            let x = sink.var(*logits);
            let (rows, classes) = (shape_of(*logits)[0], shape_of(*logits)[1]);
            let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
            let spread = *smoothing / F::from_usize(classes);
            let all = (0..classes).fold(F::ZERO, |s, c| s + w(c));
            let mut a = Tensor::zeros(&[rows, 1]);
            let mut k = Tensor::zeros(&[rows, classes]);
            for (n, &t) in targets.iter().enumerate() {
                if t == *ignore {
                    continue;
                }
                let hit = (F::ONE - *smoothing) * w(t as usize);
                a.data_mut()[n] = hit + spread * all;
                let row = &mut k.data_mut()[n * classes..(n + 1) * classes];
                for (c, kc) in row.iter_mut().enumerate() {
                    *kc = spread * w(c) + if c == t as usize { hit } else { F::ZERO };
                }
            }
            let scale = match reduction {
                Reduction::None => g.reshape(&[rows, 1]),
                // 0/0 = NaN on the counted rows, as the forward, and nothing on ignored ones.
                Reduction::Mean if *divisor == F::ZERO => {
                    let counted = targets.iter().map(|&t| {
                        if t == *ignore {
                            F::ZERO
                        } else {
                            F::from_f64(f64::NAN)
                        }
                    });
                    let nan =
                        Tensor::new_unchecked(Shape::from_slice(&[rows, 1]), counted.collect());
                    g.reshape(&[1, 1]) * tape.constant(nan)
                }
                Reduction::Mean | Reduction::Sum => (g / sink.scalar(*divisor)).reshape(&[1, 1]),
            };
            let (a, k) = (tape.constant(a), tape.constant(k));
            sink.add(*logits, scale * (a * x.softmax(1) - k));
        }
        Op::Where { cond, a, b } => {
            let zero = sink.scalar(F::ZERO);
            if sink.needs(*a) {
                sink.add_reduced(*a, g.where_cond(cond, zero));
            }
            if sink.needs(*b) {
                sink.add_reduced(*b, zero.where_cond(cond, g));
            }
        }
        Op::Custom { op, .. } => {
            let at = tape.nodes()[me].at;
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

/// Zeros with `len` entries along `axis`, into which entry k of `g` along `axis` is added at
/// `indices[k]`: index_select's backward as an op, whose own backward is an index_select.
fn index_add<'t, F: Float>(
    g: Var<'t, F>,
    axis: usize,
    indices: &[usize],
    len: usize,
) -> Var<'t, F> {
    let op = Op::IndexAdd {
        x: g.index(),
        axis,
        indices: indices.to_vec(),
        len,
    };
    g.tape().record(op, &[g.index()])
}
