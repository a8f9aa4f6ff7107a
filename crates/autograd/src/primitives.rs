//! `Op`, the primitives a tape records, and their derivative table: `forward` and `backward` are
//! two matches over the same variants in the same order, so each derivative reads next to its
//! forward and a new op cannot compile without one. The arithmetic is the kernels'; all a
//! derivative sees of the backward pass is [`Sink`], and all a checkpoint sees of the tape is
//! [`Segment`].
//!
//! Backward always adds into the inputs' gradients (`+=`): that is what makes a value used twice,
//! such as a weight shared by every time step, come out right.

use std::any::Any;
use std::rc::Rc;

use smallvec::SmallVec;

use crate::custom::CustomOp;
use crate::float::Float;
use crate::kernels::activation;
use crate::kernels::axis::{self as ax, Window};
use crate::kernels::elementwise::{accumulate_reduced, binary, broadcast_index, expand};
use crate::kernels::sum;
use crate::kernels::{self, Rhs, View};
use crate::kernels::{cells, pool};
use crate::node::Node;
use crate::param::ParamId;
use crate::recycle;
use crate::shape::{broadcast_shape, broadcast_strides, for_each_broadcast, numel, Shape};
use crate::tensor::{zeroed, Tensor};

/// How a loss over many targets is reduced, as PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the targets that count (PyTorch's default); with class weights, the sum
    /// divided by the summed weights of the targets that count.
    #[default]
    Mean,
    /// The sum over the targets that count.
    Sum,
    /// No reduction: the loss of each target, of shape `[N]`, 0 where a target does not count.
    None,
}

/// One recorded primitive. Inputs are node indices on the same tape. A clone shares what it
/// saved (tensors are copy-on-write, a custom op and a region are shared).
#[derive(Clone)]
pub(crate) enum Op<F: Float> {
    /// A constant or a requested leaf.
    Leaf,
    /// A parameter's leaf.
    Param(ParamId),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Div(usize, usize),
    /// `scale·x + shift`: negation and every scalar-operand form of `+ - * /`.
    Affine {
        x: usize,
        scale: F,
        shift: F,
    },
    Powf {
        x: usize,
        p: F,
    },
    Exp(usize),
    Ln(usize),
    Sqrt(usize),
    Tanh(usize),
    Sigmoid(usize),
    Relu(usize),
    /// `x` clamped to `[min, max]` (either bound may be infinite).
    Clamp {
        x: usize,
        min: F,
        max: F,
    },
    /// `add + op(a) · op(b)`, `op` transposing the last two axes where the flag says, read by
    /// stride; `add`, when given, is broadcast to the product's shape and the product accumulated
    /// onto it (GEMM with beta = 1). `a` and `b` are the sources of `operands`, the nodes the
    /// caller passed, which may be chains of pending transposes.
    MatMul {
        a: usize,
        b: usize,
        ta: bool,
        tb: bool,
        add: Option<usize>,
        operands: [usize; 2],
    },
    /// LSTM, first half: c' = σ(f)⊙c + σ(i)⊙tanh(g) from `gates` [B, 4H] (blocks i f g o) and `c`
    /// [B, H]. `acts` keeps the activated gates, for backward and for `LstmHidden`.
    LstmCell {
        gates: usize,
        c: usize,
        acts: Tensor<F>,
    },
    /// LSTM, second half: h' = σ(o)⊙tanh(c'), from the `LstmCell` node `cell` (c' and σ(o)).
    LstmHidden {
        cell: usize,
        gates: usize,
        tanh_c: Tensor<F>,
    },
    /// GRU: h' = n + z⊙(h - n) from the projections `xp` = x W_ihᵀ + b_ih and
    /// `hp` = h W_hhᵀ + b_hh [B, 3H] (blocks r z n) and `h` [B, H]; `acts` keeps r, z, n.
    GruCell {
        xp: usize,
        hp: usize,
        h: usize,
        acts: Tensor<F>,
    },
    /// `Σ x / divisor` over all elements (`axis: None`) or along one axis; `divisor` is 1 for a
    /// sum and n for a mean. The sum accumulates in f64.
    Sum {
        x: usize,
        axis: Option<usize>,
        keepdim: bool,
        divisor: F,
    },
    MaxAxis {
        x: usize,
        axis: usize,
        keepdim: bool,
        argmax: Vec<usize>,
    },
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
    Softmax {
        x: usize,
        axis: usize,
    },
    LogSoftmax {
        x: usize,
        axis: usize,
    },
    /// Cross-entropy of logits [N, C] against class targets, each row's loss weighted by its
    /// target's class weight and smoothed by `smoothing` (see `Var::cross_entropy_with`); rows
    /// whose target is `ignore` do not count. Reduced by `reduction`: for a mean or a sum, the
    /// sum (accumulated in f64) is divided by `divisor` (the summed weights, for a mean).
    CrossEntropy {
        logits: usize,
        targets: Vec<i64>,
        ignore: i64,
        weight: Option<Vec<F>>,
        smoothing: F,
        reduction: Reduction,
        divisor: F,
    },
    /// `cond ≠ 0 ? a : b`, all three broadcast together.
    Where {
        cond: Tensor<F>,
        a: usize,
        b: usize,
    },
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

/// `total / divisor` for a reduced loss: a mean over counted targets whose weights sum to 0 is
/// 0/0 = NaN whatever the smoothed total is, as in PyTorch (whose unsmoothed part is 0/0).
fn mean_of<F: Float>(total: f64, divisor: F) -> f64 {
    if divisor == F::ZERO {
        f64::NAN
    } else {
        total / divisor.to_f64()
    }
}

fn unary<F: Float>(nodes: &Nodes<F>, x: usize, f: impl Fn(F) -> F) -> Tensor<F> {
    nodes[x].value().map(f)
}

/// An element-wise function with a slice kernel (exp, tanh, σ).
fn unary_slice<F: Float>(nodes: &Nodes<F>, x: usize, f: fn(&[F], &mut [F])) -> Tensor<F> {
    let v = nodes[x].value();
    let mut out = recycle::overwritten(v.numel());
    pool::elementwise(v.data(), &mut out, f);
    Tensor::new_unchecked(Shape::from_slice(v.shape()), out)
}

/// An element-wise binary op; generic over `f` so that it inlines into the loop.
fn bin<F: Float>(nodes: &Nodes<F>, a: usize, b: usize, f: impl Fn(F, F) -> F) -> Tensor<F> {
    let (va, vb) = (nodes[a].value(), nodes[b].value());
    let out = broadcast_shape(va.shape(), vb.shape()).expect("checked when recorded");
    binary(va, vb, &out, f)
}

fn reduced_shape(shape: &[usize], axis: Option<usize>, keepdim: bool) -> Shape {
    match (axis, keepdim) {
        (None, false) => Shape::new(),
        (None, true) => shape.iter().map(|_| 1).collect(),
        (Some(a), true) => shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if d == a { 1 } else { n })
            .collect(),
        (Some(a), false) => shape
            .iter()
            .enumerate()
            .filter(|&(d, _)| d != a)
            .map(|(_, &n)| n)
            .collect(),
    }
}

/// The shape of `op(a) · op(b)`; the operands were checked when the op was recorded.
fn matmul_shape(a: &[usize], ta: bool, b: &[usize], tb: bool) -> Shape {
    crate::check::matmul(a, ta, b, tb)
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

/// `grad[i] += f(k, g[k])` element by element, for an input of the output's shape.
fn map_into<F: Float>(sink: &mut impl Sink<F>, i: usize, g: &[F], f: impl Fn(usize, F) -> F) {
    if let Some(gi) = sink.acc(i) {
        for (k, (d, &gk)) in gi.iter_mut().zip(g).enumerate() {
            *d += f(k, gk);
        }
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

/// Node `b`'s value as the right operand of a product, transposed if `tb`: a parameter is a
/// weight, which many products read.
fn rhs<F: Float>(nodes: &Nodes<F>, b: usize, tb: bool) -> Rhs<'_, F> {
    let node = &nodes[b];
    let (data, view) = (node.value().data(), View::of(&node.shape, tb));
    match node.op {
        Op::Param(_) => Rhs::Weight(data, view, node.packed(tb)),
        _ => Rhs::Plain(data, view),
    }
}

/// The matmul operand `v` itself when the chain of pending transposes from it to its `source`
/// holds a node that keeps its gradient (`retain_grad`); `None` when the gradient may go
/// straight to the source.
fn retained_view<F: Float>(nodes: &Nodes<F>, v: usize, source: usize) -> Option<usize> {
    let mut i = v;
    while i != source {
        if nodes[i].retain {
            return Some(v);
        }
        match &nodes[i].op {
            Op::Permute { x, .. } => i = *x,
            _ => unreachable!("a matmul operand's chain holds only transposes"),
        }
    }
    None
}

/// The activated gates an `LstmCell` node keeps.
fn lstm_acts<F: Float>(nodes: &Nodes<F>, cell: usize) -> &[F] {
    match &nodes[cell].op {
        Op::LstmCell { acts, .. } => acts.data(),
        _ => unreachable!("an LstmHidden node reads an LstmCell node"),
    }
}

impl<F: Float> Op<F> {
    /// The op's name as the API spells it, for messages.
    pub(crate) fn name(&self) -> &str {
        match self {
            Op::Leaf => "leaf",
            Op::Param(_) => "param",
            Op::Add(..) => "add",
            Op::Sub(..) => "sub",
            Op::Mul(..) => "mul",
            Op::Div(..) => "div",
            Op::Affine { .. } => "affine",
            Op::Powf { .. } => "powf",
            Op::Exp(_) => "exp",
            Op::Ln(_) => "ln",
            Op::Sqrt(_) => "sqrt",
            Op::Tanh(_) => "tanh",
            Op::Sigmoid(_) => "sigmoid",
            Op::Relu(_) => "relu",
            Op::Clamp { .. } => "clamp",
            Op::MatMul { add: None, .. } => "matmul",
            Op::MatMul { add: Some(_), .. } => "addmm",
            Op::LstmCell { .. } => "lstm_cell (c')",
            Op::LstmHidden { .. } => "lstm_cell (h')",
            Op::GruCell { .. } => "gru_cell",
            Op::Sum { .. } => "sum",
            Op::MaxAxis { .. } => "max_axis",
            Op::Reshape { .. } => "reshape",
            Op::Expand { .. } => "broadcast_to",
            Op::Permute { .. } => "permute",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::IndexSelect { .. } => "index_select",
            Op::IndexAdd { .. } => "index_add",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::Where { .. } => "where_cond",
            Op::Custom { op, .. } => op.name(),
            Op::Checkpoint { .. } => "checkpoint",
            Op::CheckpointOutput { .. } => "checkpoint output",
        }
    }

    /// The nodes this op reads (for a matmul, the sources it reads and the operands as passed).
    pub(crate) fn inputs(&self) -> SmallVec<[usize; 4]> {
        match self {
            Op::Leaf | Op::Param(_) => SmallVec::new(),
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                [*a, *b].into_iter().collect()
            }
            Op::Affine { x, .. }
            | Op::Powf { x, .. }
            | Op::Exp(x)
            | Op::Ln(x)
            | Op::Sqrt(x)
            | Op::Tanh(x)
            | Op::Sigmoid(x)
            | Op::Relu(x)
            | Op::Clamp { x, .. }
            | Op::Sum { x, .. }
            | Op::MaxAxis { x, .. }
            | Op::Reshape { x, .. }
            | Op::Expand { x, .. }
            | Op::Permute { x, .. }
            | Op::Narrow { x, .. }
            | Op::IndexSelect { x, .. }
            | Op::IndexAdd { x, .. }
            | Op::Softmax { x, .. }
            | Op::LogSoftmax { x, .. }
            | Op::CrossEntropy { logits: x, .. } => [*x].into_iter().collect(),
            Op::MatMul {
                a,
                b,
                add,
                operands,
                ..
            } => [*a, *b].into_iter().chain(*add).chain(*operands).collect(),
            Op::LstmCell { gates, c, .. } => [*gates, *c].into_iter().collect(),
            Op::LstmHidden { cell, gates, .. } => [*cell, *gates].into_iter().collect(),
            Op::GruCell { xp, hp, h, .. } => [*xp, *hp, *h].into_iter().collect(),
            Op::Where { a, b, .. } => [*a, *b].into_iter().collect(),
            Op::Concat { xs, .. } => xs.clone(),
            Op::Custom { inputs, .. } | Op::Checkpoint { inputs, .. } => inputs.clone(),
            Op::CheckpointOutput { checkpoint, .. } => [*checkpoint].into_iter().collect(),
        }
    }

    /// Renumbers every node this op reads through `f` (a region's record copied onto another
    /// tape).
    pub(crate) fn map_inputs(&mut self, f: impl Fn(usize) -> usize) {
        match self {
            Op::Leaf | Op::Param(_) => {}
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                (*a, *b) = (f(*a), f(*b));
            }
            Op::Affine { x, .. }
            | Op::Powf { x, .. }
            | Op::Exp(x)
            | Op::Ln(x)
            | Op::Sqrt(x)
            | Op::Tanh(x)
            | Op::Sigmoid(x)
            | Op::Relu(x)
            | Op::Clamp { x, .. }
            | Op::Sum { x, .. }
            | Op::MaxAxis { x, .. }
            | Op::Reshape { x, .. }
            | Op::Expand { x, .. }
            | Op::Permute { x, .. }
            | Op::Narrow { x, .. }
            | Op::IndexSelect { x, .. }
            | Op::IndexAdd { x, .. }
            | Op::Softmax { x, .. }
            | Op::LogSoftmax { x, .. }
            | Op::CrossEntropy { logits: x, .. } => *x = f(*x),
            Op::MatMul {
                a,
                b,
                add,
                operands,
                ..
            } => {
                (*a, *b) = (f(*a), f(*b));
                *add = add.map(&f);
                *operands = operands.map(&f);
            }
            Op::LstmCell { gates, c, .. } => (*gates, *c) = (f(*gates), f(*c)),
            Op::LstmHidden { cell, gates, .. } => (*cell, *gates) = (f(*cell), f(*gates)),
            Op::GruCell { xp, hp, h, .. } => (*xp, *hp, *h) = (f(*xp), f(*hp), f(*h)),
            Op::Where { a, b, .. } => (*a, *b) = (f(*a), f(*b)),
            Op::Concat { xs: inputs, .. }
            | Op::Custom { inputs, .. }
            | Op::Checkpoint { inputs, .. } => inputs.iter_mut().for_each(|i| *i = f(*i)),
            Op::CheckpointOutput { checkpoint, .. } => *checkpoint = f(*checkpoint),
        }
    }

    /// Bytes this op keeps besides its value, for backward (the fused cells' activations).
    pub(crate) fn saved_bytes(&self) -> usize {
        match self {
            Op::LstmCell { acts, .. } | Op::GruCell { acts, .. } => acts.nbytes(),
            Op::LstmHidden { tanh_c, .. } => tanh_c.nbytes(),
            _ => 0,
        }
    }

    /// Drops what forward saved for backward (a checkpointed region's insides between replays);
    /// forward saves it again.
    pub(crate) fn forget_saved(&mut self) {
        match self {
            Op::LstmCell { acts, .. } | Op::GruCell { acts, .. } => *acts = Tensor::zeros(&[0]),
            Op::LstmHidden { tanh_c, .. } => *tanh_c = Tensor::zeros(&[0]),
            Op::Checkpoint { outputs, .. } => outputs.clear(),
            _ => {}
        }
    }

    /// Computes this op's value from its inputs' values.
    pub(crate) fn forward(&mut self, nodes: &Nodes<F>) -> Tensor<F> {
        let val = |i: usize| nodes[i].value();
        match self {
            Op::Leaf | Op::Param(_) => unreachable!("leaves are recorded with their values"),
            Op::Add(a, b) => bin(nodes, *a, *b, |x, y| x + y),
            Op::Sub(a, b) => bin(nodes, *a, *b, |x, y| x - y),
            Op::Mul(a, b) => bin(nodes, *a, *b, |x, y| x * y),
            Op::Div(a, b) => bin(nodes, *a, *b, |x, y| x / y),
            Op::Affine { x, scale, shift } => unary(nodes, *x, |v| *scale * v + *shift),
            Op::Powf { x, p } => unary(nodes, *x, |v| v.powf(*p)),
            Op::Exp(x) => unary_slice(nodes, *x, activation::exp),
            Op::Ln(x) => unary(nodes, *x, F::ln),
            Op::Sqrt(x) => unary(nodes, *x, F::sqrt),
            Op::Tanh(x) => unary_slice(nodes, *x, activation::tanh),
            Op::Sigmoid(x) => unary_slice(nodes, *x, activation::sigmoid),
            // Written so that NaN passes through, as in PyTorch (`x > 0 ? x : 0` would zero it).
            Op::Relu(x) => unary(nodes, *x, |v| if v <= F::ZERO { F::ZERO } else { v }),
            // min(max(x, min), max) as PyTorch: with min > max every element is max; NaN stays.
            Op::Clamp { x, min, max } => unary(nodes, *x, |v| {
                let v = if v < *min { *min } else { v };
                if v > *max {
                    *max
                } else {
                    v
                }
            }),
            Op::MatMul {
                a, b, ta, tb, add, ..
            } => {
                let (va, vb) = (val(*a), val(*b));
                let out = matmul_shape(va.shape(), *ta, vb.shape(), *tb);
                let batch = if out.len() == 3 { out[0] } else { 1 };
                let a = (va.data(), View::of(va.shape(), *ta));
                let c_view = View::of(&out, false);
                let c = match add.map(&val) {
                    // An addend of the output's shape, or one row of it, is read in place by the
                    // kernel (C is then written whole); any other is broadcast into C first.
                    Some(x) => match addend_row_stride(x.shape(), &out) {
                        Some(rs) => {
                            let mut c = recycle::overwritten(numel(&out));
                            let b = rhs(nodes, *b, *tb);
                            kernels::addmm(a, b, (&mut c, c_view), (x.data(), rs));
                            c
                        }
                        None => {
                            let mut c = expand(x, &out);
                            let b = rhs(nodes, *b, *tb);
                            kernels::matmul(batch, a, b, (&mut c, c_view), F::ONE);
                            c
                        }
                    },
                    // Every element is written: a product with beta 0 never reads C.
                    None => {
                        let mut c = recycle::overwritten(numel(&out));
                        kernels::matmul(batch, a, rhs(nodes, *b, *tb), (&mut c, c_view), F::ZERO);
                        c
                    }
                };
                Tensor::new_unchecked(out, c)
            }
            Op::LstmCell { gates, c, acts } => {
                let (vg, vc) = (val(*gates), val(*c));
                // The cell kernels write every element of their outputs, a band of rows on each
                // thread.
                let mut a = recycle::overwritten(vg.numel());
                let mut c_next = recycle::overwritten(vc.numel());
                let (rows, h) = (vc.shape()[0], vc.shape()[1]);
                let (g, c) = (vg.data(), vc.data());
                pool::row_bands(rows, 4 * h, [&mut a, &mut c_next], |r, [a, c_next]| {
                    let (g, c) = (&g[r * 4 * h..][..a.len()], &c[r * h..][..c_next.len()]);
                    cells::lstm_cell(h, g, c, a, c_next);
                });
                *acts = Tensor::new_unchecked(Shape::from_slice(vg.shape()), a);
                Tensor::new_unchecked(Shape::from_slice(vc.shape()), c_next)
            }
            Op::LstmHidden { cell, tanh_c, .. } => {
                let c_next = val(*cell);
                let mut tc = recycle::overwritten(c_next.numel());
                let mut h_next = recycle::overwritten(c_next.numel());
                let (rows, h) = (c_next.shape()[0], c_next.shape()[1]);
                let (acts, c) = (lstm_acts(nodes, *cell), c_next.data());
                pool::row_bands(rows, h, [&mut tc, &mut h_next], |r, [tc, h_next]| {
                    let (a, c) = (&acts[r * 4 * h..][..4 * tc.len()], &c[r * h..][..tc.len()]);
                    cells::lstm_hidden(h, a, c, tc, h_next);
                });
                let shape = Shape::from_slice(c_next.shape());
                *tanh_c = Tensor::new_unchecked(shape.clone(), tc);
                Tensor::new_unchecked(shape, h_next)
            }
            Op::GruCell { xp, hp, h, acts } => {
                let (vx, vh) = (val(*xp), val(*h));
                let mut a = recycle::overwritten(vx.numel());
                let mut h_next = recycle::overwritten(vh.numel());
                let (rows, hs) = (vh.shape()[0], vh.shape()[1]);
                let (x, hp, h) = (vx.data(), val(*hp).data(), vh.data());
                pool::row_bands(rows, 3 * hs, [&mut a, &mut h_next], |r, [a, h_next]| {
                    let (x, hp) = (&x[r * 3 * hs..][..a.len()], &hp[r * 3 * hs..][..a.len()]);
                    cells::gru_cell(hs, x, hp, &h[r * hs..][..h_next.len()], a, h_next);
                });
                *acts = Tensor::new_unchecked(Shape::from_slice(vx.shape()), a);
                Tensor::new_unchecked(Shape::from_slice(vh.shape()), h_next)
            }
            Op::Sum {
                x,
                axis,
                keepdim,
                divisor,
            } => {
                let v = val(*x);
                let shape = reduced_shape(v.shape(), *axis, *keepdim);
                let data = match axis {
                    None => vec![F::from_f64(sum::sum(v.data()) / divisor.to_f64())],
                    Some(a) => ax::sum_axis(v.data(), v.shape(), *a, *divisor),
                };
                Tensor::new_unchecked(shape, data)
            }
            Op::MaxAxis {
                x,
                axis,
                keepdim,
                argmax,
            } => {
                let v = val(*x);
                let (data, arg) = ax::max_axis(v.data(), v.shape(), *axis);
                *argmax = arg;
                Tensor::new_unchecked(reduced_shape(v.shape(), Some(*axis), *keepdim), data)
            }
            Op::Reshape { x, shape } => val(*x).reshape(shape),
            Op::Expand { x, shape } => Tensor::new_unchecked(shape.clone(), expand(val(*x), shape)),
            Op::Permute { x, perm } => {
                let v = val(*x);
                let (shape, data) = ax::permute(v.data(), v.shape(), perm);
                Tensor::new_unchecked(shape, data)
            }
            Op::Narrow {
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
            Op::Concat { xs, axis } => {
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
            Op::IndexSelect { x, axis, indices } => {
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
            Op::IndexAdd {
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
            Op::Softmax { x, axis } => {
                let v = val(*x);
                Tensor::new_unchecked(v.shape().into(), ax::softmax(v.data(), v.shape(), *axis))
            }
            Op::LogSoftmax { x, axis } => {
                let v = val(*x);
                Tensor::new_unchecked(
                    v.shape().into(),
                    ax::log_softmax(v.data(), v.shape(), *axis),
                )
            }
            Op::CrossEntropy {
                logits,
                targets,
                ignore,
                weight,
                smoothing,
                reduction,
                divisor,
            } => {
                let v = val(*logits);
                let classes = v.shape()[1];
                let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
                let eps = *smoothing;
                let row_loss = |n: usize, t: i64, buf: &mut [F]| {
                    if t == *ignore {
                        return 0.0;
                    }
                    let row = &v.data()[n * classes..(n + 1) * classes];
                    let (m, log_sum) = ax::max_and_log_sum(row, buf);
                    // -log p_c = log Σ e^(x - m) - (x_c - m)
                    let nll = |c: usize| log_sum - (row[c] - m);
                    let t = t as usize;
                    if eps == F::ZERO {
                        return (w(t) * nll(t)).to_f64();
                    }
                    let smooth = (0..classes).map(|c| (w(c) * nll(c)).to_f64()).sum::<f64>();
                    ((F::ONE - eps) * w(t) * nll(t)).to_f64()
                        + (eps / F::from_usize(classes)).to_f64() * smooth
                };
                // Each row's loss in bands across the threads, then summed in row order here, so
                // the total does not depend on the split.
                let mut losses = recycle::scratch(targets.len(), 0.0f64);
                pool::row_bands(
                    targets.len(),
                    2 * classes,
                    [&mut losses[..]],
                    |first, [band]| {
                        let mut buf = recycle::scratch(classes, F::ZERO);
                        for (i, loss) in band.iter_mut().enumerate() {
                            *loss = row_loss(first + i, targets[first + i], &mut buf);
                        }
                    },
                );
                match reduction {
                    Reduction::None => {
                        let losses: Vec<F> = losses.iter().map(|&l| F::from_f64(l)).collect();
                        Tensor::new_unchecked(Shape::from_slice(&[targets.len()]), losses)
                    }
                    Reduction::Mean | Reduction::Sum => {
                        let total: f64 = losses.iter().sum();
                        Tensor::scalar(F::from_f64(mean_of(total, *divisor)))
                    }
                }
            }
            Op::Where { cond, a, b } => {
                let (va, vb) = (val(*a), val(*b));
                let out = broadcast_shape(cond.shape(), va.shape())
                    .and_then(|s| broadcast_shape(&s, vb.shape()))
                    .expect("checked when recorded");
                let s = [cond.shape(), va.shape(), vb.shape()].map(|s| broadcast_strides(s, &out));
                let (c, x, y) = (cond.data(), va.data(), vb.data());
                let mut data = zeroed(numel(&out));
                for_each_broadcast(&out, [&s[0], &s[1], &s[2]], |i, [ic, ia, ib]| {
                    data[i] = if c[ic] != F::ZERO { x[ia] } else { y[ib] };
                });
                Tensor::new_unchecked(out, data)
            }
            Op::Custom { op, inputs } => {
                let values: Vec<&Tensor<F>> = inputs.iter().map(|&i| val(i)).collect();
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
        let out = &nodes[me].shape;
        let gd = g.data();
        match self {
            Op::Leaf => sink.leaf(me, g),
            Op::Param(id) => sink.param(*id, g),
            // d(a + b) = da + db, each summed over the axes it was broadcast along.
            Op::Add(a, b) => {
                add_reduced(sink, nodes, *a, &g, out);
                add_reduced(sink, nodes, *b, &g, out);
            }
            Op::Sub(a, b) => {
                add_reduced(sink, nodes, *a, &g, out);
                if let Some(gb) = sink.acc(*b) {
                    accumulate_reduced(gb, &nodes[*b].shape, out, gd, |_, g| -g);
                }
            }
            // d(a·b) = b·da + a·db
            Op::Mul(a, b) => {
                for (x, y) in [(*a, *b), (*b, *a)] {
                    let yd = val(y).data();
                    if nodes[x].shape == *out && nodes[y].shape == *out {
                        // No broadcasting: one pass the compiler vectorizes.
                        if let Some(gx) = sink.acc(x) {
                            for ((d, &g), &v) in gx.iter_mut().zip(gd).zip(yd) {
                                *d += g * v;
                            }
                        }
                    } else if let Some(gx) = sink.acc(x) {
                        let other = broadcast_index(&nodes[y].shape, out);
                        accumulate_reduced(gx, &nodes[x].shape, out, gd, |i, g| {
                            g * yd[other.as_ref().map_or(i, |o| o[i])]
                        });
                    }
                }
            }
            // d(a/b) = da/b - ((a/b)/b)·db, in PyTorch's order of operations (0/0: inf and NaN).
            Op::Div(a, b) => {
                let bi = broadcast_index(&nodes[*b].shape, out);
                let bd = val(*b).data();
                let b_at = |i: usize| bd[bi.as_ref().map_or(i, |o| o[i])];
                if let Some(ga) = sink.acc(*a) {
                    accumulate_reduced(ga, &nodes[*a].shape, out, gd, |i, g| g / b_at(i));
                }
                if let Some(gb) = sink.acc(*b) {
                    let y = val(me).data();
                    accumulate_reduced(gb, &nodes[*b].shape, out, gd, |i, g| -g * (y[i] / b_at(i)));
                }
            }
            // d(s·x + t) = s·dx
            Op::Affine { x, scale, .. } => map_into(sink, *x, gd, |_, g| g * *scale),
            // d(x^p) = p·x^(p-1)·dx, and 0 for p = 0 even at x = 0 (not 0·0^-1 = NaN), as
            // PyTorch. At x = 0 with p < 1 the formula's ±inf stands, as in PyTorch.
            Op::Powf { x, p } => {
                let xd = val(*x).data();
                if *p == F::ZERO {
                    map_into(sink, *x, gd, |_, _| F::ZERO)
                } else {
                    map_into(sink, *x, gd, |i, g| g * *p * xd[i].powf(*p - F::ONE))
                }
            }
            // d(e^x) = y·dx
            Op::Exp(x) => {
                let y = val(me).data();
                map_into(sink, *x, gd, |i, g| g * y[i])
            }
            // d(ln x) = dx/x
            Op::Ln(x) => {
                let xd = val(*x).data();
                map_into(sink, *x, gd, |i, g| g / xd[i])
            }
            // d(√x) = dx/(2y)
            Op::Sqrt(x) => {
                let y = val(me).data();
                map_into(sink, *x, gd, |i, g| g / (y[i] + y[i]))
            }
            // d(tanh x) = (1 - y²)·dx
            Op::Tanh(x) => {
                let y = val(me).data();
                map_into(sink, *x, gd, |i, g| g * (F::ONE - y[i] * y[i]))
            }
            // d(σ(x)) = y(1 - y)·dx
            Op::Sigmoid(x) => {
                let y = val(me).data();
                map_into(sink, *x, gd, |i, g| g * y[i] * (F::ONE - y[i]))
            }
            // d(relu x) = [x > 0]·dx; the derivative at 0 is taken as 0, as in PyTorch.
            Op::Relu(x) => {
                let y = val(me).data();
                map_into(
                    sink,
                    *x,
                    gd,
                    |i, g| if y[i] > F::ZERO { g } else { F::ZERO },
                )
            }
            // d(clamp x) = [min ≤ x ≤ max]·dx: the bounds themselves pass the gradient, as in
            // PyTorch; NaN, and every x when min > max, pass none.
            Op::Clamp { x, min, max } => {
                let xd = val(*x).data();
                map_into(sink, *x, gd, |i, g| {
                    if *min <= xd[i] && xd[i] <= *max {
                        g
                    } else {
                        F::ZERO
                    }
                })
            }
            // C = op(A)·op(B): dA = dC·op(B)ᵀ, dB = op(A)ᵀ·dC, written in each operand's stored
            // layout, accumulated in place (GEMM with beta = 1) or, as an operand's first
            // gradient, written over a fresh buffer (beta = 0); transposes are strides. An
            // operand whose chain of pending transposes holds a retained node gets its gradient
            // in the caller's layout instead, and the chain's own backward carries it to the
            // source, so every retained view sees its whole gradient.
            Op::MatMul {
                a,
                b,
                ta,
                tb,
                add,
                operands,
            } => {
                if let Some(x) = add {
                    add_reduced(sink, nodes, *x, &g, out);
                }
                let (va, vb) = (val(*a), val(*b));
                let batch = if out.len() == 3 { out[0] } else { 1 };
                let vg = View::of(out, false);
                let (opa, opb) = (View::of(va.shape(), *ta), View::of(vb.shape(), *tb));
                let view_a = retained_view(nodes, operands[0], *a);
                let view_b = retained_view(nodes, operands[1], *b);
                if let Some(v) = view_a {
                    if let Some(gv) = sink.acc(v) {
                        let c = (gv, View::of(&nodes[v].shape, false));
                        kernels::matmul(batch, (gd, vg), rhs(nodes, *b, !*tb), c, F::ONE);
                    }
                } else if let Some((ga, beta)) = sink.acc_product(*a) {
                    let c = (ga, View::of(va.shape(), false));
                    if *ta {
                        kernels::matmul(batch, (vb.data(), opb), Rhs::Plain(gd, vg.t()), c, beta);
                    } else {
                        kernels::matmul(batch, (gd, vg), rhs(nodes, *b, !*tb), c, beta);
                    }
                }
                // A per-step product (a 2-D product of few rows, A as stored, B a matrix) may leave
                // dB to the sink, which puts off a parameter's to stack it with the other steps'.
                // A batch of one [1, m, n] is 3-D: its out[0] counts batches, not rows.
                let per_step = out.len() == 2
                    && vb.shape().len() == 2
                    && !*ta
                    && out[0] <= kernels::PER_STEP_ROWS;
                if let Some(v) = view_b {
                    if let Some(gv) = sink.acc(v) {
                        let c = (gv, View::of(&nodes[v].shape, false));
                        kernels::matmul(batch, (va.data(), opa.t()), Rhs::Plain(gd, vg), c, F::ONE);
                    }
                } else if per_step && sink.defer_weight_grad(*b, *tb, gd, va.data()) {
                    // Stacked; multiplied out when B is reached.
                } else if let Some((gb, beta)) = sink.acc_product(*b) {
                    let c = (gb, View::of(vb.shape(), false));
                    if *tb {
                        kernels::matmul(batch, (gd, vg.t()), Rhs::Plain(va.data(), opa), c, beta);
                    } else {
                        kernels::matmul(batch, (va.data(), opa.t()), Rhs::Plain(gd, vg), c, beta);
                    }
                }
            }
            // With i f g o the activated gates (`acts`), c' = f⊙c + i⊙g, and "pre" the gate before
            // its activation: d(i pre) = dc'⊙g⊙i(1 - i), d(f pre) = dc'⊙c⊙f(1 - f),
            // d(g pre) = dc'⊙i⊙(1 - g²), dc = dc'⊙f. kernels::cells runs each input's in one pass.
            // Rows are independent: the gate gradients run in bands of rows, as forward does.
            Op::LstmCell { gates, c, acts } => {
                let (rows, h) = (nodes[*c].shape[0], nodes[*c].shape[1]);
                let (a, cv) = (acts.data(), val(*c).data());
                if let Some(dg) = sink.acc(*gates) {
                    pool::row_bands(rows, 4 * h, [dg], |r, [dg]| {
                        let (g, c) = (&gd[r * h..], &cv[r * h..]);
                        cells::lstm_cell_dgates(h, g, &a[r * 4 * h..], c, dg);
                    });
                }
                // One multiply per element: not worth a hand-off.
                if let Some(dc) = sink.acc(*c) {
                    cells::lstm_cell_dc(h, gd, a, dc);
                }
            }
            // h' = o⊙tanh(c'): d(o pre) = dh'⊙tanh(c')⊙o(1 - o), dc' = dh'⊙o⊙(1 - tanh²(c')).
            Op::LstmHidden {
                cell,
                gates,
                tanh_c,
            } => {
                let (rows, h) = (out[0], out[1]);
                let (a, tc) = (lstm_acts(nodes, *cell), tanh_c.data());
                // Only the o block's h columns a row.
                if let Some(dg) = sink.acc(*gates) {
                    pool::row_bands(rows, h, [dg], |r, [dg]| {
                        let (g, tc) = (&gd[r * h..], &tc[r * h..]);
                        cells::lstm_hidden_dgates(h, g, &a[r * 4 * h..], tc, dg);
                    });
                }
                if let Some(dc) = sink.acc(*cell) {
                    cells::lstm_hidden_dc(h, gd, a, tc, dc);
                }
            }
            // With r z n the activated gates (`acts`) and h' = n + z⊙(h - n):
            // d(n pre) = dh'⊙(1 - z)⊙(1 - n²), d(z pre) = dh'⊙(h - n)⊙z(1 - z),
            // d(r pre) = d(n pre)⊙h_n⊙r(1 - r). Each pre-activation is x_k + h_k, but n's is
            // x_n + r⊙h_n: dxp = d(pre), dhp = d(pre) with its n block times r; dh = dh'⊙z.
            // Rows are independent: dxp and dhp run in bands of rows, as forward does.
            Op::GruCell { xp, hp, h, acts } => {
                let (rows, hs, a) = (out[0], out[1], acts.data());
                let (hpv, hv) = (val(*hp).data(), val(*h).data());
                let mut dxp = recycle::overwritten(a.len());
                pool::row_bands(rows, 3 * hs, [&mut dxp[..]], |r, [d]| {
                    let (g, a, hp) = (&gd[r * hs..], &a[r * 3 * hs..], &hpv[r * 3 * hs..]);
                    cells::gru_dxp(hs, g, a, hp, &hv[r * hs..], d);
                });
                if let Some(d) = sink.acc(*hp) {
                    pool::row_bands(rows, 3 * hs, [d], |r, [d]| {
                        let w = 3 * hs;
                        cells::gru_dhp(hs, &dxp[r * w..], &a[r * w..], d);
                    });
                }
                // One multiply per element: not worth a hand-off.
                if let Some(d) = sink.acc(*h) {
                    cells::gru_dh(hs, gd, a, d);
                }
                sink.add(*xp, Tensor::new_unchecked(nodes[*xp].shape.clone(), dxp));
            }
            // d(Σx / n) = dy / n broadcast back over the summed axis (divided, as PyTorch's mean).
            Op::Sum {
                x, axis, divisor, ..
            } => {
                if let Some(gx) = sink.acc(*x) {
                    match axis {
                        None => {
                            let g = gd[0] / *divisor;
                            gx.iter_mut().for_each(|v| *v += g)
                        }
                        Some(a) => {
                            let (outer, len, inner) =
                                crate::shape::split_at_axis(&nodes[*x].shape, *a);
                            for o in 0..outer {
                                for j in 0..len {
                                    let dst = &mut gx[(o * len + j) * inner..][..inner];
                                    for (d, &s) in dst.iter_mut().zip(&gd[o * inner..][..inner]) {
                                        *d += s / *divisor;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // The gradient flows to the (first) maximum of each lane only.
            Op::MaxAxis { x, argmax, .. } => {
                if let Some(gx) = sink.acc(*x) {
                    for (&at, &g) in argmax.iter().zip(gd) {
                        gx[at] += g;
                    }
                }
            }
            Op::Reshape { x, .. } => sink.add(*x, g.reshape(&nodes[*x].shape)),
            // Each element was repeated along the broadcast axes: its gradient sums over them.
            Op::Expand { x, .. } => add_reduced(sink, nodes, *x, &g, out),
            // The gradient goes back through the inverse permutation.
            Op::Permute { x, perm } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::permute_backward(gd, &nodes[*x].shape, perm, gx);
                }
            }
            Op::Narrow {
                x,
                axis,
                start,
                len,
            } => {
                if let Some(gx) = sink.acc(*x) {
                    Window::new(&nodes[*x].shape, *axis, *start, *len).scatter(gd, gx, true);
                }
            }
            Op::Concat { xs, axis } => {
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
            Op::IndexSelect { x, axis, indices } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::index_add(gd, out, *axis, indices, nodes[*x].shape[*axis], gx);
                }
            }
            // Each added entry reads its gradient back where it was added: an index_select.
            Op::IndexAdd {
                x, axis, indices, ..
            } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::index_select_add(gd, out, *axis, indices, gx);
                }
            }
            // dx_j = y_j (g_j - Σ_k g_k y_k)
            Op::Softmax { x, axis } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::softmax_backward(val(me).data(), gd, out, *axis, gx);
                }
            }
            // dx_j = g_j - softmax_j Σ_k g_k
            Op::LogSoftmax { x, axis } => {
                if let Some(gx) = sink.acc(*x) {
                    ax::log_softmax_backward(val(me).data(), gd, out, *axis, gx);
                }
            }
            // Per counted row, with p = softmax(x), w_t the target's weight and W = Σ_j w_j:
            // ∂l/∂x_c = (1 - ε)·w_t·(p_c - [c = t]) + (ε/C)·(W·p_c - w_c)
            //         = a·p_c - (1 - ε)·w_t·[c = t] - (ε/C)·w_c,  a = (1 - ε)·w_t + (ε/C)·W,
            // times the row's gradient: its own for `None`, else the output's over the divisor.
            Op::CrossEntropy {
                logits,
                targets,
                ignore,
                weight,
                smoothing,
                reduction,
                divisor,
            } => {
                if let Some(gx) = sink.acc(*logits) {
                    let v = val(*logits);
                    let classes = v.shape()[1];
                    let w = |c: usize| weight.as_ref().map_or(F::ONE, |w| w[c]);
                    let spread = *smoothing / F::from_usize(classes);
                    let all = match weight {
                        Some(w) => F::from_f64(sum::sum(w)),
                        None => F::from_usize(classes),
                    };
                    // Rows are independent: bands of them across the threads.
                    let rows = targets.len();
                    pool::row_bands(rows, 2 * classes, [gx], |first, [band]| {
                        let mut probs = recycle::scratch(classes, F::ZERO);
                        // (`max(1)`: with no classes the band is empty, and so is the loop.)
                        for (i, dst) in band.chunks_exact_mut(classes.max(1)).enumerate() {
                            let n = first + i;
                            let t = targets[n];
                            if t == *ignore {
                                continue;
                            }
                            let scale = match reduction {
                                Reduction::None => gd[n],
                                Reduction::Mean | Reduction::Sum => {
                                    F::from_f64(mean_of(gd[0].to_f64(), *divisor))
                                }
                            };
                            let (t, row) = (t as usize, &v.data()[n * classes..(n + 1) * classes]);
                            let (m, log_sum) = ax::max_and_log_sum(row, &mut probs);
                            // p = e^{(z - m) - ln Σ}, rounded as the log-probability then its exp.
                            for (p, &z) in probs.iter_mut().zip(row) {
                                *p = (z - m) - log_sum;
                            }
                            activation::exp_in_place(&mut probs);
                            let hit = (F::ONE - *smoothing) * w(t);
                            let a = hit + spread * all;
                            for (c, (d, &p)) in dst.iter_mut().zip(probs.iter()).enumerate() {
                                let target = if c == t { hit } else { F::ZERO };
                                *d += scale * (a * p - target - spread * w(c));
                            }
                        }
                    });
                }
            }
            // The gradient goes to whichever operand was chosen at each element.
            Op::Where { cond, a, b } => {
                let ci = broadcast_index(cond.shape(), out);
                let c = cond.data();
                let chosen = |i: usize| c[ci.as_ref().map_or(i, |o| o[i])] != F::ZERO;
                if let Some(ga) = sink.acc(*a) {
                    accumulate_reduced(ga, &nodes[*a].shape, out, gd, |i, g| {
                        if chosen(i) {
                            g
                        } else {
                            F::ZERO
                        }
                    });
                }
                if let Some(gb) = sink.acc(*b) {
                    accumulate_reduced(gb, &nodes[*b].shape, out, gd, |i, g| {
                        if chosen(i) {
                            F::ZERO
                        } else {
                            g
                        }
                    });
                }
            }
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
}
