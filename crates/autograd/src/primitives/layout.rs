//! The primitives that move elements without arithmetic: reshape, broadcast, permute, narrow,
//! concat, and selecting or adding entries by index. Each one's derivative moves the gradient
//! back the other way: a narrow's is its window put back into zeros, a concat's is narrows.

use smallvec::SmallVec;

use super::{add_reduced, Nodes, Op, Sink};
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::axis::{self as ax, Window};
use crate::kernels::elementwise::expand;
use crate::recycle;
use crate::shape::{numel, Shape};
use crate::tape::Var;
use crate::tensor::{zeroed, Tensor};

/// A layout primitive.
#[derive(Clone)]
pub(crate) enum Layout {
    Reshape {
        x: usize,
        shape: Shape,
    },
    /// `x` broadcast to `shape`, as a new buffer.
    Expand {
        x: usize,
        shape: Shape,
    },
    Permute {
        x: usize,
        perm: Shape,
    },
    Narrow {
        x: usize,
        axis: usize,
        start: usize,
        len: usize,
    },
    Concat {
        xs: SmallVec<[usize; 4]>,
        axis: usize,
    },
    /// The entries of `x` along `axis` at `indices`.
    IndexSelect {
        x: usize,
        axis: usize,
        indices: Vec<usize>,
    },
    /// `index_select`'s backward as an op: zeros with `len` entries along `axis`, into which
    /// entry k of `x` along `axis` is added at `indices[k]` (PyTorch's `index_add` onto zeros).
    IndexAdd {
        x: usize,
        axis: usize,
        indices: Vec<usize>,
        len: usize,
    },
}

impl Layout {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Layout::Reshape { .. } => "reshape",
            Layout::Expand { .. } => "broadcast_to",
            Layout::Permute { .. } => "permute",
            Layout::Narrow { .. } => "narrow",
            Layout::Concat { .. } => "concat",
            Layout::IndexSelect { .. } => "index_select",
            Layout::IndexAdd { .. } => "index_add",
        }
    }

    inputs_of!(|op| match op {
        Layout::Reshape { x, .. }
        | Layout::Expand { x, .. }
        | Layout::Permute { x, .. }
        | Layout::Narrow { x, .. }
        | Layout::IndexSelect { x, .. }
        | Layout::IndexAdd { x, .. } => [x].into_iter().collect(),
        Layout::Concat { xs, .. } => xs.into_iter().collect(),
    });

    pub(crate) fn forward<F: Float>(&self, nodes: &Nodes<F>) -> Tensor<F> {
        let val = |i: usize| nodes[i].value();
        match self {
            Layout::Reshape { x, shape } => val(*x).reshape(shape),
            Layout::Expand { x, shape } => {
                Tensor::new_unchecked(shape.clone(), expand(val(*x), shape))
            }
            Layout::Permute { x, perm } => {
                let v = val(*x);
                let (shape, data) = ax::permute(v.data(), v.shape(), perm);
                Tensor::new_unchecked(shape, data)
            }
            Layout::Narrow {
                x,
                axis,
                start,
                len,
            } => {
                let v = val(*x);
                let mut shape = Shape::from_slice(v.shape());
                shape[*axis] = *len;
                // With nothing but axes of one before `axis`, the window is contiguous: a view of
                // the input's storage, no copy (the per-step rows of a projected sequence).
                if numel(&v.shape()[..*axis]) == 1 {
                    let rows = [v.shape()[*axis], numel(&v.shape()[*axis + 1..])];
                    return v.reshape(&rows).rows(*start, *len).reshape(&shape);
                }
                // Gathered whole, not added into.
                let mut data = recycle::overwritten(numel(&shape));
                Window::new(v.shape(), *axis, *start, *len).gather(v.data(), &mut data, false);
                Tensor::new_unchecked(shape, data)
            }
            Layout::Concat { xs, axis } => {
                let shapes: Vec<&[usize]> = xs.iter().map(|&i| val(i).shape()).collect();
                let shape = crate::check::concat(&shapes, *axis);
                // The inputs' windows tile the output.
                let mut data = recycle::overwritten(numel(&shape));
                let mut start = 0;
                for &i in xs.iter() {
                    let v = val(i);
                    let len = v.shape()[*axis];
                    Window::new(&shape, *axis, start, len).scatter(v.data(), &mut data, false);
                    start += len;
                }
                Tensor::new_unchecked(shape, data)
            }
            Layout::IndexSelect { x, axis, indices } => {
                let v = val(*x);
                let (outer, len, inner) = crate::shape::split_at_axis(v.shape(), *axis);
                let mut data = recycle::with_capacity(outer * indices.len() * inner);
                for o in 0..outer {
                    for &r in indices.iter() {
                        data.extend_from_slice(&v.data()[(o * len + r) * inner..][..inner]);
                    }
                }
                let mut shape = Shape::from_slice(v.shape());
                shape[*axis] = indices.len();
                Tensor::new_unchecked(shape, data)
            }
            Layout::IndexAdd {
                x,
                axis,
                indices,
                len,
            } => {
                let v = val(*x);
                let mut shape = Shape::from_slice(v.shape());
                shape[*axis] = *len;
                let mut data = zeroed(numel(&shape));
                ax::index_add(v.data(), v.shape(), *axis, indices, *len, &mut data);
                Tensor::new_unchecked(shape, data)
            }
        }
    }

    /// Adds the inputs' gradients into `sink`, given `g` = ∂L/∂(node `me`'s value).
    pub(crate) fn backward<F: Float>(
        &self,
        me: usize,
        g: Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let out = &nodes[me].shape;
        let gd = g.data();
        match self {
            Layout::Reshape { x, .. } => sink.add(*x, g.reshape(&nodes[*x].shape)),
            // Each element was repeated along the broadcast axes: its gradient sums over them.
            Layout::Expand { x, .. } => add_reduced(sink, nodes, *x, &g, out),
            // The gradient goes back through the inverse permutation.
            Layout::Permute { x, perm } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::permute_backward(gd, &nodes[*x].shape, perm, gx);
                }
            }
            Layout::Narrow {
                x,
                axis,
                start,
                len,
            } => {
                if let Some(gx) = sink.acc(*x) {
                    Window::new(&nodes[*x].shape, *axis, *start, *len).scatter(gd, gx, true);
                }
            }
            Layout::Concat { xs, axis } => {
                let mut start = 0;
                for &i in xs.iter() {
                    let len = nodes[i].shape[*axis];
                    if let Some(gi) = sink.acc(i) {
                        Window::new(out, *axis, start, len).gather(gd, gi, true);
                    }
                    start += len;
                }
            }
            // Scatter-add: an entry selected twice gets both gradients.
            Layout::IndexSelect { x, axis, indices } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::index_add(gd, out, *axis, indices, nodes[*x].shape[*axis], gx);
                }
            }
            // Each added entry reads its gradient back where it was added: an index_select.
            Layout::IndexAdd {
                x, axis, indices, ..
            } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::index_select_add(gd, out, *axis, indices, gx);
                }
            }
        }
    }

    /// [`backward`](Layout::backward) recorded with tape ops.
    pub(crate) fn derivative<'t, F: Float>(&self, sink: &mut GraphSink<'t, F>, g: Var<'t, F>) {
        let tape = sink.tape();
        let shape_of = |j: usize| tape.shape(j);
        match self {
            Layout::Reshape { x, .. } => sink.add(*x, g.reshape(&shape_of(*x))),
            Layout::Expand { x, .. } => sink.add_reduced(*x, g),
            Layout::Permute { x, perm } => {
                let mut inverse = vec![0usize; perm.len()];
                perm.iter().enumerate().for_each(|(d, &p)| inverse[p] = d);
                sink.add(*x, g.permute(&inverse));
            }
            // The window's gradient, joined with the node's other windows' (zeros elsewhere)
            // when the node is reached.
            Layout::Narrow { x, axis, start, .. } => sink.add_window(*x, *axis, *start, g),
            Layout::Concat { xs, axis } => {
                let mut start = 0;
                for &i in xs.iter() {
                    let len = shape_of(i)[*axis];
                    if sink.needs(i) {
                        sink.add(i, g.narrow(*axis, start, len));
                    }
                    start += len;
                }
            }
            // Zeros into which each entry's gradient is added where it was selected: an
            // index_add, whose own derivative is an index_select.
            Layout::IndexSelect { x, axis, indices } => {
                let op = Layout::IndexAdd {
                    x: g.index(),
                    axis: *axis,
                    indices: indices.to_vec(),
                    len: shape_of(*x)[*axis],
                };
                sink.add(*x, g.tape().record(Op::Layout(op), &[g.index()]));
            }
            Layout::IndexAdd {
                x, axis, indices, ..
            } => sink.add(*x, g.index_select_dim(*axis, indices)),
        }
    }
}
