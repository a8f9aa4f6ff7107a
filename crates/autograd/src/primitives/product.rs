//! The matrix product, `add + op(a)·op(b)`, and the one optimisation it carries: a transpose
//! is recorded without its value, and a product reads it by stride. Everything that has to know
//! about those pending transposes is here: how an operand resolves to the node it reads, which
//! transposes a product's gradient must still pass through, and where a weight read by many
//! time steps gets its gradient.

use std::iter::successors;

use smallvec::SmallVec;

use super::layout::Layout;
use super::{add_reduced, Nodes, Op, Sink};
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::elementwise::expand;
use crate::kernels::{self, Rhs, View};
use crate::recycle;
use crate::shape::{numel, Shape};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// `add + op(a) · op(b)`, `op` transposing the last two axes where the flag says, read by
/// stride; `add`, when given, is broadcast to the product's shape and the product accumulated
/// onto it (GEMM with beta = 1). `a` and `b` are the sources of `operands`, the nodes the caller
/// passed, which may be chains of pending transposes.
#[derive(Clone)]
pub(crate) struct MatMul {
    pub(crate) a: usize,
    pub(crate) b: usize,
    pub(crate) ta: bool,
    pub(crate) tb: bool,
    pub(crate) add: Option<usize>,
    pub(crate) operands: [usize; 2],
}

/// `x` with its last two axes swapped by `perm`, recorded without its value when `x` is 2-D or
/// 3-D: a product reads it by stride, and any other op computes it on first read. `None` for
/// any other permutation, which is computed when recorded.
pub(crate) fn pending_transpose<'t, F: Float>(x: Var<'t, F>, perm: &Shape) -> Option<Var<'t, F>> {
    let shape = x.shape();
    if !crate::shape::swaps_last_two(perm) || shape.len() > 3 {
        return None;
    }
    let out: Shape = perm.iter().map(|&p| shape[p]).collect();
    let op = Layout::Permute {
        x: x.index(),
        perm: perm.clone(),
    };
    Some(x.tape().record_lazy(Op::Layout(op), x.index(), out))
}

/// The node a product reads for `operand`, and whether it reads it transposed: a chain of
/// pending transposes collapses to its source and a flag.
fn source<F: Float>(nodes: &Nodes<F>, operand: usize) -> (usize, bool) {
    let (mut i, mut trans) = (operand, false);
    while nodes[i].is_pending() {
        let Op::Layout(Layout::Permute { x, perm }) = &nodes[i].op else {
            unreachable!("only a transpose is recorded without its value")
        };
        debug_assert!(crate::shape::swaps_last_two(perm));
        i = *x;
        trans = !trans;
    }
    (i, trans)
}

/// The pending transposes from `i` down to the first node that holds its value, `i` first:
/// what must be computed, last first, before an op other than a product reads `i`.
pub(crate) fn pending_transposes<F: Float>(nodes: &Nodes<F>, i: usize) -> SmallVec<[usize; 4]> {
    chain(nodes, i)
        .take_while(|&j| nodes[j].is_pending())
        .collect()
}

/// `i`, then the input of each permutation from it on, until a node that is not one.
fn chain<F: Float>(nodes: &Nodes<F>, i: usize) -> impl Iterator<Item = usize> + '_ {
    successors(Some(i), move |&j| match &nodes[j].op {
        Op::Layout(Layout::Permute { x, .. }) => Some(*x),
        _ => None,
    })
}

/// The transposes between a product's `operand` and the `source` it reads (which, recorded
/// pending, may since have been computed for another reader).
fn transposes<F: Float>(
    nodes: &Nodes<F>,
    operand: usize,
    src: usize,
) -> impl Iterator<Item = usize> + '_ {
    chain(nodes, operand).take_while(move |&j| j != src)
}

/// The operand itself when a transpose between it and its source keeps its gradient
/// (`retain_grad`): its gradient must then go through the chain, in the caller's layout, for
/// every retained view to see it whole. `None` when it may go straight to the source.
fn retained_view<F: Float>(nodes: &Nodes<F>, operand: usize, src: usize) -> Option<usize> {
    let retained = transposes(nodes, operand, src).any(|j| nodes[j].retain);
    retained.then_some(operand)
}

/// Node `b`'s value as the right operand of a product, transposed if `tb`: a parameter is a
/// weight, which many products read, so it is packed once for them all.
fn rhs<F: Float>(nodes: &Nodes<F>, b: usize, tb: bool) -> Rhs<'_, F> {
    let node = &nodes[b];
    let (data, view) = (node.value().data(), View::of(&node.shape, tb));
    match node.op {
        Op::Param(_) => Rhs::Weight(data, view, node.packed(tb)),
        _ => Rhs::Plain(data, view),
    }
}

/// The row stride at which `addmm` reads an addend of shape `x` in place for an output of shape
/// `out`: its own rows when it has the output's shape, 0 when it is one row ([n] or [1, n]) of
/// a 2-D output. None for any other broadcast, which is copied into the output first.
fn addend_row_stride(x: &[usize], out: &[usize]) -> Option<usize> {
    match (x, out) {
        _ if x == out && out.len() == 2 => Some(out[1]),
        ([n] | [1, n], [_, cols]) if n == cols => Some(0),
        _ => None,
    }
}

impl MatMul {
    /// Records `add + a·b` (`add` None: `a·b`), reading `a` and `b` through their pending
    /// transposes by stride. The caller checked the shapes.
    #[track_caller]
    pub(crate) fn record<'t, F: Float>(
        a: Var<'t, F>,
        b: Var<'t, F>,
        add: Option<Var<'t, F>>,
    ) -> Var<'t, F> {
        let tape: &'t Tape<F> = a.tape();
        let ((sa, ta), (sb, tb)) = {
            let nodes = tape.nodes();
            (source(&nodes, a.index()), source(&nodes, b.index()))
        };
        let op = MatMul {
            a: sa,
            b: sb,
            ta,
            tb,
            add: add.map(|x| x.index()),
            operands: [a.index(), b.index()],
        };
        let inputs: SmallVec<[usize; 3]> = [sa, sb].into_iter().chain(op.add).collect();
        tape.record(Op::MatMul(op), &inputs)
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.add {
            None => "matmul",
            Some(_) => "addmm",
        }
    }

    inputs_of!(|op| {
        let MatMul {
            a,
            b,
            add,
            operands,
            ..
        } = op;
        [a, b].into_iter().chain(add).chain(operands).collect()
    });

    /// The inputs whose values the product reads whole: only what it adds onto (the operands
    /// are read by stride, through their pending transposes).
    pub(crate) fn read_whole(&self) -> Option<usize> {
        self.add
    }

    pub(crate) fn forward<F: Float>(&self, nodes: &Nodes<F>) -> Tensor<F> {
        let MatMul {
            a, b, ta, tb, add, ..
        } = *self;
        let (va, vb) = (nodes[a].value(), nodes[b].value());
        let out = crate::check::matmul(va.shape(), ta, vb.shape(), tb);
        let batch = if out.len() == 3 { out[0] } else { 1 };
        let a = (va.data(), View::of(va.shape(), ta));
        let c_view = View::of(&out, false);
        let c = match add.map(|x| nodes[x].value()) {
            // An addend of the output's shape, or one row of it, is read in place by the
            // kernel (C is then written whole); any other is broadcast into C first.
            Some(x) => match addend_row_stride(x.shape(), &out) {
                Some(rs) => {
                    let mut c = recycle::overwritten(numel(&out));
                    kernels::addmm(a, rhs(nodes, b, tb), (&mut c, c_view), (x.data(), rs));
                    c
                }
                None => {
                    let mut c = expand(x, &out);
                    kernels::matmul(batch, a, rhs(nodes, b, tb), (&mut c, c_view), F::ONE);
                    c
                }
            },
            // Every element is written: a product with beta 0 never reads C.
            None => {
                let mut c = recycle::overwritten(numel(&out));
                kernels::matmul(batch, a, rhs(nodes, b, tb), (&mut c, c_view), F::ZERO);
                c
            }
        };
        Tensor::new_unchecked(out, c)
    }

    /// C = op(A)·op(B): dA = dC·op(B)ᵀ, dB = op(A)ᵀ·dC, written in each operand's stored
    /// layout, accumulated in place (GEMM with beta = 1) or, as an operand's first gradient,
    /// written over a fresh buffer (beta = 0); transposes are strides. An operand with a
    /// retained transpose in its chain gets its gradient in the caller's layout instead
    /// ([`retained_view`]), and the chain's own backward carries it to the source.
    pub(crate) fn backward<F: Float>(
        &self,
        me: usize,
        g: &Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let MatMul {
            a,
            b,
            ta,
            tb,
            add,
            operands,
        } = *self;
        let out = &nodes[me].shape;
        let gd = g.data();
        if let Some(x) = add {
            add_reduced(sink, nodes, x, g, out);
        }
        let (va, vb) = (nodes[a].value(), nodes[b].value());
        let batch = if out.len() == 3 { out[0] } else { 1 };
        let vg = View::of(out, false);
        let (opa, opb) = (View::of(va.shape(), ta), View::of(vb.shape(), tb));
        if let Some(v) = retained_view(nodes, operands[0], a) {
            if let Some(gv) = sink.acc(v) {
                let c = (gv, View::of(&nodes[v].shape, false));
                kernels::matmul(batch, (gd, vg), rhs(nodes, b, !tb), c, F::ONE);
            }
        } else if let Some((ga, beta)) = sink.acc_product(a) {
            let c = (ga, View::of(va.shape(), false));
            if ta {
                kernels::matmul(batch, (vb.data(), opb), Rhs::Plain(gd, vg.t()), c, beta);
            } else {
                kernels::matmul(batch, (gd, vg), rhs(nodes, b, !tb), c, beta);
            }
        }
        // A per-step product (a 2-D product of few rows, A as stored, B a matrix) may leave dB
        // to the sink, which puts off a parameter's to stack it with the other steps'. A batch
        // of one [1, m, n] is 3-D: its out[0] counts batches, not rows.
        let per_step =
            out.len() == 2 && vb.shape().len() == 2 && !ta && out[0] <= kernels::PER_STEP_ROWS;
        if let Some(v) = retained_view(nodes, operands[1], b) {
            if let Some(gv) = sink.acc(v) {
                let c = (gv, View::of(&nodes[v].shape, false));
                kernels::matmul(batch, (va.data(), opa.t()), Rhs::Plain(gd, vg), c, F::ONE);
            }
        } else if per_step && sink.defer_weight_grad(b, tb, gd, va.data()) {
            // Stacked; multiplied out when B is reached.
        } else if let Some((gb, beta)) = sink.acc_product(b) {
            let c = (gb, View::of(vb.shape(), false));
            if tb {
                kernels::matmul(batch, (gd, vg.t()), Rhs::Plain(va.data(), opa), c, beta);
            } else {
                kernels::matmul(batch, (va.data(), opa.t()), Rhs::Plain(gd, vg), c, beta);
            }
        }
    }

    /// [`backward`](MatMul::backward) recorded with tape ops, on the operands as the caller
    /// passed them (their transposes are recorded ops like any other): dA = dC·Bᵀ, dB = Aᵀ·dC,
    /// summed over a batch an operand was shared by.
    pub(crate) fn derivative<'t, F: Float>(&self, sink: &mut GraphSink<'t, F>, g: Var<'t, F>) {
        let MatMul {
            b: src,
            tb,
            add,
            operands: [a, b],
            ..
        } = *self;
        if let Some(x) = add {
            sink.add_reduced(x, g);
        }
        let (va, vb) = (sink.var(a), sink.var(b));
        let (sa, sb): (Shape, Shape) = (va.shape(), vb.shape());
        if sink.needs(a) {
            sink.add_reduced(a, g.matmul(vb.t()));
        }
        if !sink.needs(b) {
            return;
        }
        // A matrix B read by many 2-D products (a weight, by every time step) gets its gradient
        // at its source, stacked with the other products' rows, unless a transpose between them
        // is itself asked for.
        let through_asked = {
            let nodes = sink.tape().nodes();
            let asked = transposes(&nodes, b, src).any(|j| sink.is_wrt(j));
            asked
        };
        if sa.len() == 2 && sb.len() == 2 && !through_asked {
            sink.stack(src, tb, va, g);
        } else if sa.len() == 3 && sb.len() == 2 {
            // Every batch entry read the same B: one product over all entries' rows.
            let rows = sa[0] * sa[1];
            let a2 = va.reshape(&[rows, sa[2]]);
            let db = a2.t().matmul(g.reshape(&[rows, g.shape()[2]]));
            sink.add_reduced(b, db);
        } else {
            sink.add_reduced(b, va.t().matmul(g));
        }
    }
}
