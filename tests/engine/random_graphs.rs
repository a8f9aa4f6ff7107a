//! Random graphs of ops (issue 11): each checked by f64 gradcheck, its retained gradients by
//! finite differences, and its f32 run against its f64 run.
//!
//! A seeded generator draws a small expression graph over the public API: inputs of 0 to 4 axes
//! (size-1 axes included, for broadcasting), `+ - * /` with broadcasting and scalars on either
//! side, unary functions, matmul (2-D, batched, with `t()` operands), reductions over random axes,
//! chains of views, concat and stack, index_select, softmax, where_cond and masked_fill, values
//! used more than once, and `retain_grad` on up to three intermediate nodes. The loss is
//! Σ (sink · w) over the nodes nothing else reads, with fixed random weights w. Values stay away
//! from the points where an op is not differentiable by construction: ln, sqrt, negative powers
//! and divisors only see values ≥ 0.25, and values whose bound grows past 8 are scaled down.
//!
//! A retained node v is checked against central differences of the same graph cut at v: v's
//! value becomes a new leaf and everything else is recomputed as before, so the derivative of the
//! loss in that leaf is ∂L/∂v with every path that does not pass through v held fixed, which is
//! what backward accumulates into v.
//!
//! `REWIND_RANDOM_CASES=N` runs N cases instead of the default; `REWIND_RANDOM_SEED=S` starts at
//! seed S. Case i uses seed S + i, so a failing seed with `REWIND_RANDOM_CASES=1` replays that
//! case alone (in part 4, which takes the last of the cases). The cases are shared out over four
//! tests that the harness runs side by side. Many cases:
//! `REWIND_RANDOM_CASES=20000 cargo test --release --test engine random_graphs::`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{GradcheckOptions, Tape};
use rewind::prelude::*;

/// Cases run by default: about two seconds in the test profile once they pass.
const DEFAULT_CASES: u64 = 5000;
const DEFAULT_SEED: u64 = 0x5eed_0011;
/// The largest node, in elements; with it a case's gradcheck takes milliseconds.
const CAP: usize = 96;
/// The largest input, in elements.
const INPUT_CAP: usize = 32;
/// Values with a larger bound are scaled down before an op reads them.
const TAME: f64 = 8.0;
/// The least value ln, sqrt, a negative power or a divisor sees.
const POSITIVE: f64 = 0.25;
/// f32 against f64: |a - b| ≤ F32_ATOL·(1 + max |b| over the tensor) + F32_RTOL·|b|. Over 200,000
/// passing cases the worst gradient error was 1.4e-6·(1 + max |b|) and the worst loss error
/// 5e-7·(1 + Σ |sink·w|), so these bounds leave a margin of about 15.
const F32_ATOL: f64 = 2e-5;
const F32_RTOL: f64 = 1e-4;
/// f32 against f64 for the loss: |a - b| ≤ LOSS_TOL·(1 + Σ |sink·w|).
const LOSS_TOL: f64 = 1e-5;

// ---------------------------------------------------------------------------------------------
// The graph: a list of ops over earlier nodes, generic over the element type when built.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Arith {
    fn symbol(self) -> char {
        match self {
            Arith::Add => '+',
            Arith::Sub => '-',
            Arith::Mul => '*',
            Arith::Div => '/',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unary {
    Neg,
    Exp,
    Tanh,
    Sigmoid,
    Relu,
    Ln,
    Sqrt,
    Powf(f64),
    Affine(f64, f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Along {
    Sum,
    Mean,
    Max,
}

/// How [`FlawedCube`]'s derivative is wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    /// 2x² instead of 3x², in both precisions.
    Everywhere,
    /// 3.03x² in f32 only.
    InF32,
}

#[derive(Clone, Debug)]
enum Op {
    Input(usize),
    Binary(Arith, usize, usize),
    /// `v op s`.
    ScalarRhs(Arith, usize, f64),
    /// `s op v`.
    ScalarLhs(Arith, f64, usize),
    Unary(Unary, usize),
    MatMul(usize, usize),
    AddMm {
        c: usize,
        a: usize,
        b: usize,
    },
    Sum(usize),
    Mean(usize),
    Along {
        kind: Along,
        x: usize,
        axis: i32,
        keepdim: bool,
    },
    Reshape(usize, Vec<usize>),
    T(usize),
    Transpose(usize, i32, i32),
    Permute(usize, Vec<usize>),
    Narrow {
        x: usize,
        axis: i32,
        start: usize,
        len: usize,
    },
    Chunk {
        x: usize,
        chunks: usize,
        axis: i32,
        piece: usize,
    },
    Split {
        x: usize,
        size: usize,
        axis: i32,
        piece: usize,
    },
    Unsqueeze(usize, usize),
    Squeeze(usize, i32),
    Flatten(usize),
    Concat(Vec<usize>, i32),
    Stack(Vec<usize>, usize),
    IndexSelect(usize, Vec<usize>),
    Softmax(usize, i32),
    LogSoftmax(usize, i32),
    Where {
        cond: Tensor<f64>,
        a: usize,
        b: usize,
    },
    MaskedFill {
        x: usize,
        mask: Tensor<f64>,
        value: f64,
    },
    Cube(usize, Flaw),
}

impl Op {
    /// The nodes this op reads.
    fn operands(&self) -> Vec<usize> {
        match self {
            Op::Input(_) => vec![],
            Op::Binary(_, a, b) | Op::MatMul(a, b) | Op::Where { a, b, .. } => vec![*a, *b],
            Op::AddMm { c, a, b } => vec![*c, *a, *b],
            Op::Concat(xs, _) | Op::Stack(xs, _) => xs.clone(),
            Op::ScalarRhs(_, x, _)
            | Op::ScalarLhs(_, _, x)
            | Op::Unary(_, x)
            | Op::Sum(x)
            | Op::Mean(x)
            | Op::Along { x, .. }
            | Op::Reshape(x, _)
            | Op::T(x)
            | Op::Transpose(x, _, _)
            | Op::Permute(x, _)
            | Op::Narrow { x, .. }
            | Op::Chunk { x, .. }
            | Op::Split { x, .. }
            | Op::Unsqueeze(x, _)
            | Op::Squeeze(x, _)
            | Op::Flatten(x)
            | Op::IndexSelect(x, _)
            | Op::Softmax(x, _)
            | Op::LogSoftmax(x, _)
            | Op::MaskedFill { x, .. }
            | Op::Cube(x, _) => vec![*x],
        }
    }

    /// The op as the Rust that records it.
    fn describe(&self) -> String {
        let list = |xs: &[usize]| {
            let names: Vec<String> = xs.iter().map(|x| format!("v{x}")).collect();
            names.join(", ")
        };
        match self {
            Op::Input(j) => format!("tape.var(x{j})"),
            Op::Binary(op, a, b) => format!("v{a} {} v{b}", op.symbol()),
            Op::ScalarRhs(op, x, s) => format!("v{x} {} {s:?}", op.symbol()),
            Op::ScalarLhs(op, s, x) => format!("{s:?} {} v{x}", op.symbol()),
            Op::Unary(u, x) => match u {
                Unary::Neg => format!("-v{x}"),
                Unary::Exp => format!("v{x}.exp()"),
                Unary::Tanh => format!("v{x}.tanh()"),
                Unary::Sigmoid => format!("v{x}.sigmoid()"),
                Unary::Relu => format!("v{x}.relu()"),
                Unary::Ln => format!("v{x}.ln()"),
                Unary::Sqrt => format!("v{x}.sqrt()"),
                Unary::Powf(p) => format!("v{x}.powf({p:?})"),
                Unary::Affine(s, b) => format!("v{x}.affine({s:?}, {b:?})"),
            },
            Op::MatMul(a, b) => format!("v{a}.matmul(v{b})"),
            Op::AddMm { c, a, b } => format!("v{c}.addmm(v{a}, v{b})"),
            Op::Sum(x) => format!("v{x}.sum()"),
            Op::Mean(x) => format!("v{x}.mean()"),
            Op::Along {
                kind,
                x,
                axis,
                keepdim,
            } => {
                let name = match kind {
                    Along::Sum => "sum_axis",
                    Along::Mean => "mean_axis",
                    Along::Max => "max_axis",
                };
                format!("v{x}.{name}({axis}, {keepdim})")
            }
            Op::Reshape(x, s) => format!("v{x}.reshape(&{s:?})"),
            Op::T(x) => format!("v{x}.t()"),
            Op::Transpose(x, a, b) => format!("v{x}.transpose({a}, {b})"),
            Op::Permute(x, p) => format!("v{x}.permute(&{p:?})"),
            Op::Narrow {
                x,
                axis,
                start,
                len,
            } => format!("v{x}.narrow({axis}, {start}, {len})"),
            Op::Chunk {
                x,
                chunks,
                axis,
                piece,
            } => format!("v{x}.chunk({chunks}, {axis})[{piece}]"),
            Op::Split {
                x,
                size,
                axis,
                piece,
            } => format!("v{x}.split({size}, {axis})[{piece}]"),
            Op::Unsqueeze(x, a) => format!("v{x}.unsqueeze({a})"),
            Op::Squeeze(x, a) => format!("v{x}.squeeze({a})"),
            Op::Flatten(x) => format!("v{x}.flatten()"),
            Op::Concat(xs, axis) => format!("concat(&[{}], {axis})", list(xs)),
            Op::Stack(xs, axis) => format!("stack(&[{}], {axis})", list(xs)),
            Op::IndexSelect(x, idx) => format!("v{x}.index_select(&{idx:?})"),
            Op::Softmax(x, a) => format!("v{x}.softmax({a})"),
            Op::LogSoftmax(x, a) => format!("v{x}.log_softmax({a})"),
            Op::Where { cond, a, b } => format!("v{a}.where_cond(&{}, v{b})", literal(cond)),
            Op::MaskedFill { x, mask, value } => {
                format!("v{x}.masked_fill(&{}, {value:?})", literal(mask))
            }
            Op::Cube(x, flaw) => format!("tape.custom(FlawedCube(Flaw::{flaw:?}), &[v{x}])"),
        }
    }
}

/// A small constant tensor as the Rust that makes it.
fn literal(t: &Tensor<f64>) -> String {
    format!(
        "Tensor::from_vec(vec!{:?}, &{:?}).unwrap()",
        t.data(),
        t.shape()
    )
}

struct Node {
    op: Op,
    shape: Vec<usize>,
    retain: bool,
}

/// One random case: its inputs, its nodes in recording order, and the weights of the loss.
struct Graph {
    seed: u64,
    inputs: Vec<Tensor<f64>>,
    nodes: Vec<Node>,
    /// The nodes nothing else reads, and the fixed weights each enters the loss with.
    sinks: Vec<(usize, Tensor<f64>)>,
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<&[usize]> = self.inputs.iter().map(|x| x.shape()).collect();
        writeln!(
            f,
            "    // seed {}: inputs x_j uniform in [-1, 1] of shapes {shapes:?}",
            self.seed
        )?;
        for (i, node) in self.nodes.iter().enumerate() {
            let op = node.op.describe();
            let operator = matches!(
                node.op,
                Op::Binary(..) | Op::ScalarRhs(..) | Op::ScalarLhs(..) | Op::Unary(Unary::Neg, _)
            );
            let op = match (node.retain, operator) {
                (false, _) => op,
                (true, false) => format!("{op}.retain_grad()"),
                (true, true) => format!("({op}).retain_grad()"),
            };
            writeln!(f, "    let v{i} = {op}; // {:?}", node.shape)?;
        }
        let terms: Vec<String> = self
            .sinks
            .iter()
            .map(|(i, _)| format!("(v{i} * w{i}).sum()"))
            .collect();
        writeln!(
            f,
            "    let loss = {}; // w_i: fixed weights uniform in [-1, 1]",
            terms.join(" + ")
        )
    }
}

/// f32 and f64, with a scalar on the left of an operator (`2.0 - v`), which the engine
/// implements once per concrete type.
trait Real: Float {
    fn on_left<'t>(self, op: Arith, v: Var<'t, Self>) -> Var<'t, Self>;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            fn on_left<'t>(self, op: Arith, v: Var<'t, $t>) -> Var<'t, $t> {
                match op {
                    Arith::Add => self + v,
                    Arith::Sub => self - v,
                    Arith::Mul => self * v,
                    Arith::Div => self / v,
                }
            }
        }
    };
}

real!(f32);
real!(f64);

/// x³ with a derivative that is wrong on purpose: the checks must catch it.
struct FlawedCube(Flaw);

impl<F: Float> CustomOp<F> for FlawedCube {
    fn name(&self) -> &str {
        "flawed_cube"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F> {
        inputs[0].map(|x| x * x * x)
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad_output: &Tensor<F>,
    ) -> Vec<Option<Tensor<F>>> {
        let slope = F::from_f64(match self.0 {
            Flaw::Everywhere => 2.0,
            Flaw::InF32 if F::DTYPE == "float32" => 3.03,
            Flaw::InF32 => 3.0,
        });
        let x = inputs[0];
        let data = x
            .data()
            .iter()
            .zip(grad_output.data())
            .map(|(&x, &g)| g * slope * x * x)
            .collect();
        vec![Some(
            Tensor::from_vec(data, x.shape()).expect("the input's shape"),
        )]
    }
}

/// Records the graph on `tape` over `inputs` (one per graph input, then, when `cut` names a node,
/// a leaf that stands in for that node). Returns every node and the loss.
fn build<'t, F: Real>(
    g: &Graph,
    tape: &'t Tape<F>,
    inputs: &[Var<'t, F>],
    cut: Option<usize>,
) -> (Vec<Var<'t, F>>, Var<'t, F>) {
    let mut vs: Vec<Var<'t, F>> = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let v = if cut == Some(i) {
            inputs[g.inputs.len()]
        } else if node.retain {
            apply(&node.op, &vs, inputs, tape).retain_grad()
        } else {
            apply(&node.op, &vs, inputs, tape)
        };
        if v.shape()[..] != node.shape[..] {
            panic!(
                "v{i} = {} has shape {:?}, expected {:?}",
                node.op.describe(),
                v.shape(),
                node.shape
            );
        }
        vs.push(v);
    }
    let loss = g
        .sinks
        .iter()
        .map(|(i, w)| (vs[*i] * tape.constant(w.cast())).sum())
        .reduce(|a, b| a + b)
        .expect("a graph has a sink");
    (vs, loss)
}

fn apply<'t, F: Real>(
    op: &Op,
    v: &[Var<'t, F>],
    inputs: &[Var<'t, F>],
    tape: &'t Tape<F>,
) -> Var<'t, F> {
    let f = F::from_f64;
    match op {
        Op::Input(j) => inputs[*j],
        Op::Binary(op, a, b) => match op {
            Arith::Add => v[*a] + v[*b],
            Arith::Sub => v[*a] - v[*b],
            Arith::Mul => v[*a] * v[*b],
            Arith::Div => v[*a] / v[*b],
        },
        Op::ScalarRhs(op, x, s) => match op {
            Arith::Add => v[*x] + f(*s),
            Arith::Sub => v[*x] - f(*s),
            Arith::Mul => v[*x] * f(*s),
            Arith::Div => v[*x] / f(*s),
        },
        Op::ScalarLhs(op, s, x) => f(*s).on_left(*op, v[*x]),
        Op::Unary(u, x) => {
            let x = v[*x];
            match u {
                Unary::Neg => -x,
                Unary::Exp => x.exp(),
                Unary::Tanh => x.tanh(),
                Unary::Sigmoid => x.sigmoid(),
                Unary::Relu => x.relu(),
                Unary::Ln => x.ln(),
                Unary::Sqrt => x.sqrt(),
                Unary::Powf(p) => x.powf(f(*p)),
                Unary::Affine(s, b) => x.affine(f(*s), f(*b)),
            }
        }
        Op::MatMul(a, b) => v[*a].matmul(v[*b]),
        Op::AddMm { c, a, b } => v[*c].addmm(v[*a], v[*b]),
        Op::Sum(x) => v[*x].sum(),
        Op::Mean(x) => v[*x].mean(),
        Op::Along {
            kind,
            x,
            axis,
            keepdim,
        } => match kind {
            Along::Sum => v[*x].sum_axis(*axis, *keepdim),
            Along::Mean => v[*x].mean_axis(*axis, *keepdim),
            Along::Max => v[*x].max_axis(*axis, *keepdim),
        },
        Op::Reshape(x, s) => v[*x].reshape(s),
        Op::T(x) => v[*x].t(),
        Op::Transpose(x, a, b) => v[*x].transpose(*a, *b),
        Op::Permute(x, p) => v[*x].permute(p),
        Op::Narrow {
            x,
            axis,
            start,
            len,
        } => v[*x].narrow(*axis, *start, *len),
        Op::Chunk {
            x,
            chunks,
            axis,
            piece,
        } => v[*x].chunk(*chunks, *axis)[*piece],
        Op::Split {
            x,
            size,
            axis,
            piece,
        } => v[*x].split(*size, *axis)[*piece],
        Op::Unsqueeze(x, a) => v[*x].unsqueeze(*a),
        Op::Squeeze(x, a) => v[*x].squeeze(*a),
        Op::Flatten(x) => v[*x].flatten(),
        Op::Concat(xs, axis) => {
            let xs: Vec<Var<'t, F>> = xs.iter().map(|&i| v[i]).collect();
            concat(&xs, *axis)
        }
        Op::Stack(xs, axis) => {
            let xs: Vec<Var<'t, F>> = xs.iter().map(|&i| v[i]).collect();
            stack(&xs, *axis)
        }
        Op::IndexSelect(x, idx) => v[*x].index_select(idx),
        Op::Softmax(x, a) => v[*x].softmax(*a),
        Op::LogSoftmax(x, a) => v[*x].log_softmax(*a),
        Op::Where { cond, a, b } => v[*a].where_cond(&cond.cast(), v[*b]),
        Op::MaskedFill { x, mask, value } => v[*x].masked_fill(&mask.cast(), f(*value)),
        Op::Cube(x, flaw) => tape.custom(FlawedCube(*flaw), &[v[*x]]),
    }
}

// ---------------------------------------------------------------------------------------------
// The generator: shapes are tracked here, and an interval per node bounds its values, so that
// ops with a restricted domain only see values inside it.

/// Bounds on a node's values.
#[derive(Clone, Copy, Debug)]
struct Range {
    lo: f64,
    hi: f64,
}

impl Range {
    const UNIT: Range = Range { lo: -1.0, hi: 1.0 };

    fn bound(self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    fn union(self, o: Range) -> Range {
        Range {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    /// The range of f over self, for an increasing f.
    fn increasing(self, f: impl Fn(f64) -> f64) -> Range {
        Range {
            lo: f(self.lo),
            hi: f(self.hi),
        }
    }

    /// The range of a·b over a in self, b in o.
    fn times(self, o: Range) -> Range {
        let p = [
            self.lo * o.lo,
            self.lo * o.hi,
            self.hi * o.lo,
            self.hi * o.hi,
        ];
        Range {
            lo: p.iter().copied().fold(f64::INFINITY, f64::min),
            hi: p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// The range of x² (not of x·y: the two factors are one value).
    fn square(self) -> Range {
        let lo = if self.lo <= 0.0 && self.hi >= 0.0 {
            0.0
        } else {
            self.lo.abs().min(self.hi.abs()).powi(2)
        };
        Range {
            lo,
            hi: self.bound().powi(2),
        }
    }

    fn reciprocal(self) -> Range {
        assert!(self.lo > 0.0 || self.hi < 0.0, "a divisor's range holds 0");
        Range {
            lo: 1.0 / self.hi,
            hi: 1.0 / self.lo,
        }
    }

    fn scaled(self, s: f64) -> Range {
        self.times(Range { lo: s, hi: s })
    }

    fn arith(self, op: Arith, o: Range) -> Range {
        match op {
            Arith::Add => Range {
                lo: self.lo + o.lo,
                hi: self.hi + o.hi,
            },
            Arith::Sub => Range {
                lo: self.lo - o.hi,
                hi: self.hi - o.lo,
            },
            Arith::Mul => self.times(o),
            Arith::Div => self.times(o.reciprocal()),
        }
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The shape both broadcast to under NumPy rules.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(n).map_or(1, |j| s[j]);
    (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn resolve(axis: i32, ndim: usize) -> usize {
    if axis < 0 {
        (axis + ndim as i32) as usize
    } else {
        axis as usize
    }
}

struct Gen {
    rng: StdRng,
    inputs: Vec<Tensor<f64>>,
    nodes: Vec<Node>,
    range: Vec<Range>,
}

/// The graph of one case: one input, then one to eight random steps (each one op, or a few).
fn generate(seed: u64) -> Graph {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        inputs: Vec::new(),
        nodes: Vec::new(),
        range: Vec::new(),
    };
    let s = g.input_shape();
    g.input(&s);
    for _ in 0..g.rng.random_range(1..=8) {
        g.step();
    }
    g.finish(seed)
}

impl Gen {
    fn emit(&mut self, op: Op, shape: Vec<usize>, range: Range) -> usize {
        assert!(
            shape.len() <= 4 && numel(&shape) <= CAP,
            "the generator made {shape:?} for {}",
            op.describe()
        );
        self.nodes.push(Node {
            op,
            shape,
            retain: false,
        });
        self.range.push(range);
        self.nodes.len() - 1
    }

    fn shape(&self, x: usize) -> Vec<usize> {
        self.nodes[x].shape.clone()
    }

    fn coin(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn choose(&mut self, xs: &[usize]) -> usize {
        xs[self.rng.random_range(0..xs.len())]
    }

    /// An axis of `ndim`, as a non-negative or a negative index.
    fn axis(&mut self, ndim: usize) -> i32 {
        let a = self.rng.random_range(0..ndim) as i32;
        if self.coin(0.5) {
            a
        } else {
            a - ndim as i32
        }
    }

    fn scalar(&mut self) -> f64 {
        let s = (self.rng.random_range(0.5..2.0) * 100.0_f64).round() / 100.0;
        if self.coin(0.5) {
            s
        } else {
            -s
        }
    }

    fn input_shape(&mut self) -> Vec<usize> {
        loop {
            let ndim = self.rng.random_range(0..=4);
            let s: Vec<usize> = (0..ndim)
                .map(|_| {
                    if self.rng.random_bool(0.25) {
                        1
                    } else {
                        self.rng.random_range(1..=4)
                    }
                })
                .collect();
            if numel(&s) <= INPUT_CAP {
                return s;
            }
        }
    }

    fn input(&mut self, shape: &[usize]) -> usize {
        let value = Tensor::uniform(shape, -1.0, 1.0, &mut self.rng);
        self.inputs.push(value);
        self.emit(
            Op::Input(self.inputs.len() - 1),
            shape.to_vec(),
            Range::UNIT,
        )
    }

    /// A node whose shape passes `ok`: often the latest, else any, else a new input.
    fn pick_where(&mut self, ok: impl Fn(&[usize]) -> bool) -> usize {
        let fits: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| ok(&self.nodes[i].shape))
            .collect();
        let last = self.nodes.len() - 1;
        let x = if fits.is_empty() || self.coin(0.15) {
            let s = loop {
                let s = self.input_shape();
                if ok(&s) {
                    break s;
                }
            };
            self.input(&s)
        } else if fits.contains(&last) && self.coin(0.5) {
            last
        } else {
            self.choose(&fits)
        };
        self.tame(x)
    }

    fn pick(&mut self) -> usize {
        self.pick_where(|_| true)
    }

    /// x, or x scaled down by a power of two when its values may exceed `TAME`.
    fn tame(&mut self, x: usize) -> usize {
        let b = self.range[x].bound();
        if b <= TAME {
            return x;
        }
        let d = 2f64.powi((b / 4.0).log2().ceil() as i32);
        self.scalar_rhs(Arith::Div, x, d)
    }

    /// x, or a positive function of it (≥ `POSITIVE`) when x may be smaller.
    fn positive(&mut self, x: usize) -> usize {
        if self.range[x].lo >= POSITIVE {
            return x;
        }
        match self.rng.random_range(0..3) {
            0 => {
                let sq = self.binary(Arith::Mul, x, x);
                self.scalar_rhs(Arith::Add, sq, 1.0)
            }
            1 => {
                let s = self.unary(Unary::Sigmoid, x);
                self.scalar_lhs(Arith::Add, 0.5, s)
            }
            _ => {
                let t = self.unary(Unary::Tanh, x);
                self.unary(Unary::Exp, t)
            }
        }
    }

    // Emitters: one node each, with its shape and range; no randomness.

    fn binary(&mut self, op: Arith, a: usize, b: usize) -> usize {
        let shape = broadcast(&self.nodes[a].shape, &self.nodes[b].shape).expect("broadcasts");
        let range = if a == b && op == Arith::Mul {
            self.range[a].square()
        } else {
            self.range[a].arith(op, self.range[b])
        };
        self.emit(Op::Binary(op, a, b), shape, range)
    }

    fn scalar_rhs(&mut self, op: Arith, x: usize, s: f64) -> usize {
        let range = self.range[x].arith(op, Range { lo: s, hi: s });
        self.emit(Op::ScalarRhs(op, x, s), self.shape(x), range)
    }

    fn scalar_lhs(&mut self, op: Arith, s: f64, x: usize) -> usize {
        let range = Range { lo: s, hi: s }.arith(op, self.range[x]);
        self.emit(Op::ScalarLhs(op, s, x), self.shape(x), range)
    }

    fn unary(&mut self, u: Unary, x: usize) -> usize {
        let r = self.range[x];
        let range = match u {
            Unary::Neg => r.scaled(-1.0),
            Unary::Exp => r.increasing(f64::exp),
            Unary::Tanh => r.increasing(f64::tanh),
            Unary::Sigmoid => r.increasing(|v| 1.0 / (1.0 + (-v).exp())),
            Unary::Relu => r.increasing(|v| v.max(0.0)),
            Unary::Ln => r.increasing(f64::ln),
            Unary::Sqrt => r.increasing(f64::sqrt),
            Unary::Powf(p) if r.lo > 0.0 => {
                let (a, b) = (r.lo.powf(p), r.hi.powf(p));
                Range {
                    lo: a.min(b),
                    hi: a.max(b),
                }
            }
            Unary::Powf(2.0) => r.square(),
            // Odd powers: increasing everywhere.
            Unary::Powf(p) => r.increasing(|v| v.powf(p)),
            Unary::Affine(s, b) => r.scaled(s).arith(Arith::Add, Range { lo: b, hi: b }),
        };
        self.emit(Op::Unary(u, x), self.shape(x), range)
    }

    fn matmul(&mut self, a: usize, b: usize, c: Option<usize>) -> usize {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
        let batch = if sa.len() == 3 {
            vec![sa[0]]
        } else if sb.len() == 3 {
            vec![sb[0]]
        } else {
            vec![]
        };
        let shape: Vec<usize> = batch.into_iter().chain([m, n]).collect();
        let bound = k as f64 * self.range[a].bound() * self.range[b].bound();
        let range = Range {
            lo: -bound,
            hi: bound,
        };
        match c {
            None => self.emit(Op::MatMul(a, b), shape, range),
            Some(c) => {
                let range = range.arith(Arith::Add, self.range[c]);
                self.emit(Op::AddMm { c, a, b }, shape, range)
            }
        }
    }

    /// A view of x: its range, with a new shape.
    fn view(&mut self, op: Op, x: usize, shape: Vec<usize>) -> usize {
        let range = self.range[x];
        self.emit(op, shape, range)
    }

    fn t(&mut self, x: usize) -> usize {
        let mut s = self.shape(x);
        let n = s.len();
        s.swap(n - 2, n - 1);
        self.view(Op::T(x), x, s)
    }

    fn transpose(&mut self, x: usize, a: i32, b: i32) -> usize {
        let mut s = self.shape(x);
        let n = s.len();
        s.swap(resolve(a, n), resolve(b, n));
        self.view(Op::Transpose(x, a, b), x, s)
    }

    fn permute(&mut self, x: usize, perm: Vec<usize>) -> usize {
        let s = self.shape(x);
        let out = perm.iter().map(|&p| s[p]).collect();
        self.view(Op::Permute(x, perm), x, out)
    }

    fn along(&mut self, kind: Along, x: usize, axis: i32, keepdim: bool) -> usize {
        let mut s = self.shape(x);
        let a = resolve(axis, s.len());
        let r = self.range[x];
        let range = match kind {
            Along::Sum => r.scaled(s[a] as f64),
            Along::Mean | Along::Max => r,
        };
        if keepdim {
            s[a] = 1;
        } else {
            s.remove(a);
        }
        let op = Op::Along {
            kind,
            x,
            axis,
            keepdim,
        };
        self.emit(op, s, range)
    }

    // Steps: one random op, with operands drawn from the graph or made fresh.

    fn step(&mut self) {
        match self.rng.random_range(0..22) {
            0..=3 => self.step_binary(),
            4..=5 => self.step_scalar(),
            6..=8 => self.step_unary(),
            9..=11 => self.step_matmul(),
            12..=13 => self.step_reduce(),
            14..=16 => self.step_views(),
            17 => self.step_join(),
            18 => self.step_index_select(),
            19 => self.step_softmax(),
            _ => self.step_select(),
        }
    }

    fn step_binary(&mut self) {
        let op = [Arith::Add, Arith::Sub, Arith::Mul, Arith::Div][self.rng.random_range(0..4)];
        let a = self.pick();
        let b = self.partner(a);
        let (a, b) = if self.coin(0.5) { (a, b) } else { (b, a) };
        let b = if op == Arith::Div {
            self.positive(b)
        } else {
            b
        };
        self.binary(op, a, b);
    }

    /// A node that broadcasts with x: an existing one (x itself included), or a new input.
    fn partner(&mut self, x: usize) -> usize {
        let s = self.shape(x);
        let fits: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| {
                broadcast(&s, &self.nodes[j].shape)
                    .is_some_and(|o| o.len() <= 4 && numel(&o) <= CAP)
            })
            .collect();
        if !fits.is_empty() && self.coin(0.4) {
            let j = self.choose(&fits);
            return self.tame(j);
        }
        let p = self.partner_shape(&s, true);
        self.input(&p)
    }

    /// A shape that broadcasts with s: leading axes dropped, axes set to 1, and (if `grow`) size-1
    /// axes widened and axes prepended.
    fn partner_shape(&mut self, s: &[usize], grow: bool) -> Vec<usize> {
        loop {
            let mut p = s.to_vec();
            if self.coin(0.3) {
                let k = self.rng.random_range(0..=p.len());
                p.drain(..k);
            }
            for i in 0..p.len() {
                if self.coin(0.3) {
                    p[i] = 1;
                } else if grow && p[i] == 1 && self.coin(0.3) {
                    p[i] = self.rng.random_range(2..=4);
                }
            }
            while grow && p.len() < 4 && self.coin(0.15) {
                let d = self.rng.random_range(1..=4);
                p.insert(0, d);
            }
            let fits = broadcast(s, &p)
                .is_some_and(|o| o.len() <= 4 && numel(&o) <= CAP && (grow || o[..] == s[..]));
            if fits {
                return p;
            }
        }
    }

    fn step_scalar(&mut self) {
        let op = [Arith::Add, Arith::Sub, Arith::Mul, Arith::Div][self.rng.random_range(0..4)];
        let x = self.pick();
        let s = self.scalar();
        if self.coin(0.5) {
            self.scalar_rhs(op, x, s);
        } else {
            let x = if op == Arith::Div {
                self.positive(x)
            } else {
                x
            };
            self.scalar_lhs(op, s, x);
        }
    }

    fn step_unary(&mut self) {
        let x = self.pick();
        let u = match self.rng.random_range(0..9) {
            0 => Unary::Neg,
            1 => Unary::Exp,
            2 => Unary::Tanh,
            3 => Unary::Sigmoid,
            4 => Unary::Relu,
            5 => Unary::Ln,
            6 => Unary::Sqrt,
            7 => Unary::Powf(0.0),
            _ => Unary::Affine(self.scalar(), self.scalar()),
        };
        let x = match u {
            Unary::Exp if self.range[x].hi > 2.0 => self.unary(Unary::Tanh, x),
            Unary::Ln | Unary::Sqrt => self.positive(x),
            Unary::Powf(_) if self.coin(0.5) => self.positive(x),
            _ => x,
        };
        let u = match u {
            Unary::Powf(_) if self.range[x].lo >= POSITIVE => {
                Unary::Powf([0.5, -1.0, 1.5, -0.5, 2.5][self.rng.random_range(0..5)])
            }
            Unary::Powf(_) => Unary::Powf([2.0, 3.0][self.rng.random_range(0..2)]),
            u => u,
        };
        self.unary(u, x);
    }

    /// x read through an even or odd number of `t()`s: none or two, one or three.
    fn through_t(&mut self, x: usize, odd: bool) -> usize {
        let mut x = x;
        let count = match (odd, self.coin(0.25)) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        for _ in 0..count {
            x = self.t(x);
        }
        x
    }

    fn step_matmul(&mut self) {
        let a = self.pick_where(|s| (2..=3).contains(&s.len()));
        let odd = self.coin(0.35);
        let a = self.through_t(a, odd);
        let sa = self.shape(a);
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let n = self.rng.random_range(1..=4);
        let rhs_batch = match sa.len() {
            3 if self.coin(0.7) => vec![sa[0]],
            2 if self.coin(0.3) => vec![self.rng.random_range(1..=3)],
            _ => vec![],
        };
        let out_batch = match (sa.len(), rhs_batch.first()) {
            (3, _) => sa[0],
            (_, Some(&b)) => b,
            _ => 1,
        };
        let want: Vec<usize> = rhs_batch.iter().copied().chain([k, n]).collect();
        if out_batch * m * n > CAP || numel(&want) > CAP {
            return;
        }
        let b = self.matmul_rhs(&want);
        if self.coin(0.25) {
            let out: Vec<usize> = self.matmul_shape(a, b);
            let shape = self.partner_shape(&out, false);
            let same: Vec<usize> = (0..self.nodes.len())
                .filter(|&j| self.nodes[j].shape == shape)
                .collect();
            let c = if !same.is_empty() && self.coin(0.5) {
                let j = self.choose(&same);
                self.tame(j)
            } else {
                self.input(&shape)
            };
            self.matmul(a, b, Some(c));
        } else {
            self.matmul(a, b, None);
        }
    }

    fn matmul_shape(&self, a: usize, b: usize) -> Vec<usize> {
        let (sa, sb) = (&self.nodes[a].shape, &self.nodes[b].shape);
        let batch = if sa.len() == 3 {
            Some(sa[0])
        } else if sb.len() == 3 {
            Some(sb[0])
        } else {
            None
        };
        batch
            .into_iter()
            .chain([sa[sa.len() - 2], sb[sb.len() - 1]])
            .collect()
    }

    /// A right operand of shape `want`: an existing node of that shape or of its transpose (read
    /// through `t()`), or a new input, itself possibly stored transposed.
    fn matmul_rhs(&mut self, want: &[usize]) -> usize {
        let n = want.len();
        let mut flipped = want.to_vec();
        flipped.swap(n - 2, n - 1);
        let with = |s: &[usize]| -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&j| self.nodes[j].shape[..] == s[..])
                .collect()
        };
        let (direct, transposed) = (with(want), with(&flipped));
        match self.rng.random_range(0..4) {
            0 if !direct.is_empty() => {
                let j = self.choose(&direct);
                let j = self.tame(j);
                self.through_t(j, false)
            }
            1 if !transposed.is_empty() => {
                let j = self.choose(&transposed);
                let j = self.tame(j);
                self.through_t(j, true)
            }
            2 => {
                let x = self.input(&flipped);
                self.through_t(x, true)
            }
            _ => {
                let x = self.input(want);
                self.through_t(x, false)
            }
        }
    }

    fn step_reduce(&mut self) {
        let x = self.pick();
        let n = self.nodes[x].shape.len();
        match self.rng.random_range(0..5) {
            0 => {
                let range = self.range[x].scaled(numel(&self.nodes[x].shape) as f64);
                self.emit(Op::Sum(x), vec![], range);
            }
            1 => {
                let range = self.range[x];
                self.emit(Op::Mean(x), vec![], range);
            }
            _ if n == 0 => {
                let range = self.range[x];
                self.emit(Op::Mean(x), vec![], range);
            }
            _ => {
                let kind = [Along::Sum, Along::Mean, Along::Max][self.rng.random_range(0..3)];
                let axis = self.axis(n);
                let keepdim = self.coin(0.5);
                self.along(kind, x, axis, keepdim);
            }
        }
    }

    /// Two to four views in a row, each of the one before.
    fn step_views(&mut self) {
        let mut x = self.pick();
        for _ in 0..self.rng.random_range(2..=4) {
            x = self.random_view(x);
        }
    }

    fn random_view(&mut self, x: usize) -> usize {
        let s = self.shape(x);
        let n = s.len();
        loop {
            match self.rng.random_range(0..12) {
                0 => {
                    let to = self.factorization(numel(&s));
                    return self.view(Op::Reshape(x, to.clone()), x, to);
                }
                1..=2 if (2..=3).contains(&n) => return self.t(x),
                3..=4 if n >= 2 => {
                    let (a, b) = if self.coin(0.4) {
                        (-1, -2)
                    } else {
                        (self.axis(n), self.axis(n))
                    };
                    return self.transpose(x, a, b);
                }
                5 if n >= 2 => {
                    let mut perm: Vec<usize> = (0..n).collect();
                    if self.coin(0.4) {
                        perm.swap(n - 2, n - 1);
                    } else {
                        for i in (1..n).rev() {
                            let j = self.rng.random_range(0..=i);
                            perm.swap(i, j);
                        }
                    }
                    return self.permute(x, perm);
                }
                6 if n >= 1 => {
                    let axis = self.axis(n);
                    let size = s[resolve(axis, n)];
                    let start = self.rng.random_range(0..size);
                    let len = self.rng.random_range(1..=size - start);
                    let mut out = s.clone();
                    out[resolve(axis, n)] = len;
                    let op = Op::Narrow {
                        x,
                        axis,
                        start,
                        len,
                    };
                    return self.view(op, x, out);
                }
                7 if n >= 1 => {
                    let axis = self.axis(n);
                    let size = s[resolve(axis, n)];
                    let chunks = self.rng.random_range(1..=4);
                    let piece_size = size.div_ceil(chunks).max(1);
                    let piece = self.rng.random_range(0..size.div_ceil(piece_size));
                    let mut out = s.clone();
                    out[resolve(axis, n)] = piece_size.min(size - piece * piece_size);
                    let op = Op::Chunk {
                        x,
                        chunks,
                        axis,
                        piece,
                    };
                    return self.view(op, x, out);
                }
                8 if n >= 1 => {
                    let axis = self.axis(n);
                    let size = s[resolve(axis, n)];
                    let piece_size = self.rng.random_range(1..=size);
                    let piece = self.rng.random_range(0..size.div_ceil(piece_size));
                    let mut out = s.clone();
                    out[resolve(axis, n)] = piece_size.min(size - piece * piece_size);
                    let op = Op::Split {
                        x,
                        size: piece_size,
                        axis,
                        piece,
                    };
                    return self.view(op, x, out);
                }
                9 if n < 4 => {
                    let a = self.rng.random_range(0..=n);
                    let mut out = s.clone();
                    out.insert(a, 1);
                    return self.view(Op::Unsqueeze(x, a), x, out);
                }
                10 if s.contains(&1) => {
                    let ones: Vec<usize> = (0..n).filter(|&i| s[i] == 1).collect();
                    let a = self.choose(&ones);
                    let axis = if self.coin(0.5) {
                        a as i32
                    } else {
                        a as i32 - n as i32
                    };
                    let mut out = s.clone();
                    out.remove(a);
                    return self.view(Op::Squeeze(x, axis), x, out);
                }
                11 => return self.view(Op::Flatten(x), x, vec![numel(&s)]),
                _ => continue,
            }
        }
    }

    /// A random shape of 0 to 4 axes with `count` elements.
    fn factorization(&mut self, count: usize) -> Vec<usize> {
        let ndim = self.rng.random_range(usize::from(count > 1)..=4);
        let mut shape = vec![1; ndim];
        let (mut rest, mut p) = (count, 2);
        while rest > 1 {
            if rest % p == 0 {
                let i = self.rng.random_range(0..ndim);
                shape[i] *= p;
                rest /= p;
            } else {
                p += 1;
            }
        }
        shape
    }

    /// concat or stack of x with one or two others: x itself, existing nodes that fit, or new
    /// inputs.
    fn step_join(&mut self) {
        let stacking = self.coin(0.4);
        let x = if stacking {
            self.pick_where(|s| s.len() < 4)
        } else {
            self.pick_where(|s| !s.is_empty())
        };
        let s = self.shape(x);
        let n = s.len();
        let axis = if stacking {
            self.rng.random_range(0..=n) as i32
        } else {
            self.axis(n)
        };
        let a = resolve(axis, n);
        let fits =
            |t: &[usize]| t.len() == n && (0..n).all(|d| t[d] == s[d] || (!stacking && d == a));
        // Elements per unit of width along the axis: the result's size is the widths' sum times it.
        let (unit, width) = if stacking {
            (numel(&s), 1)
        } else {
            (numel(&s) / s[a], s[a])
        };
        let mut xs = vec![x];
        let mut total = width;
        for _ in 0..self.rng.random_range(1..=2) {
            let others: Vec<usize> = (0..self.nodes.len())
                .filter(|&j| fits(&self.nodes[j].shape))
                .collect();
            let (y, w) = match self.rng.random_range(0..3) {
                0 => (Some(x), width),
                1 => {
                    let j = self.choose(&others);
                    (Some(j), if stacking { 1 } else { self.nodes[j].shape[a] })
                }
                _ if stacking => (None, 1),
                _ => (None, self.rng.random_range(1..=4)),
            };
            if (total + w) * unit > CAP {
                break;
            }
            total += w;
            let y = match y {
                Some(j) => self.tame(j),
                None => {
                    let mut t = s.clone();
                    if !stacking {
                        t[a] = w;
                    }
                    self.input(&t)
                }
            };
            let at = self.rng.random_range(0..=xs.len());
            xs.insert(at, y);
        }
        let range = xs
            .iter()
            .map(|&i| self.range[i])
            .reduce(Range::union)
            .expect("one at least");
        let mut out = s.clone();
        if stacking {
            out.insert(a, xs.len());
            self.emit(Op::Stack(xs, a), out, range);
        } else {
            out[a] = xs.iter().map(|&i| self.nodes[i].shape[a]).sum();
            self.emit(Op::Concat(xs, axis), out, range);
        }
    }

    fn step_index_select(&mut self) {
        let x = self.pick_where(|s| !s.is_empty());
        let s = self.shape(x);
        let len = self.rng.random_range(1..=4);
        if len * numel(&s[1..]) > CAP {
            return;
        }
        let idx: Vec<usize> = (0..len).map(|_| self.rng.random_range(0..s[0])).collect();
        let mut out = s.clone();
        out[0] = len;
        self.view(Op::IndexSelect(x, idx), x, out);
    }

    fn step_softmax(&mut self) {
        let x = self.pick_where(|s| !s.is_empty());
        let s = self.shape(x);
        let axis = self.axis(s.len());
        if self.coin(0.5) {
            self.emit(Op::Softmax(x, axis), s, Range { lo: 0.0, hi: 1.0 });
        } else {
            let r = self.range[x];
            let spread = r.hi - r.lo + (s[resolve(axis, s.len())] as f64).ln();
            self.emit(
                Op::LogSoftmax(x, axis),
                s,
                Range {
                    lo: -spread,
                    hi: 0.0,
                },
            );
        }
    }

    /// where_cond between two nodes, or masked_fill of one, under a random 0/1 condition (its
    /// "true" entries not always 1).
    fn step_select(&mut self) {
        let a = self.pick();
        let sa = self.shape(a);
        if self.coin(0.5) {
            let b = self.partner(a);
            let ab = broadcast(&sa, &self.nodes[b].shape).expect("partners broadcast");
            let cs = self.partner_shape(&ab, true);
            let cond = self.condition(&cs);
            let shape = broadcast(&ab, &cs).expect("broadcasts");
            let range = self.range[a].union(self.range[b]);
            self.emit(Op::Where { cond, a, b }, shape, range);
        } else {
            let ms = self.partner_shape(&sa, false);
            let mask = self.condition(&ms);
            let value = self.scalar();
            let range = self.range[a].union(Range {
                lo: value,
                hi: value,
            });
            self.emit(Op::MaskedFill { x: a, mask, value }, sa, range);
        }
    }

    fn condition(&mut self, shape: &[usize]) -> Tensor<f64> {
        let data = (0..numel(shape))
            .map(|_| match self.rng.random_range(0..6) {
                0..=2 => 0.0,
                3 => -1.0,
                4 => 0.5,
                _ => 1.0,
            })
            .collect();
        Tensor::from_vec(data, shape).expect("numel matches")
    }

    /// Marks up to three intermediate nodes retain_grad, and weights the sinks into the loss.
    fn finish(mut self, seed: u64) -> Graph {
        let inner: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !matches!(self.nodes[i].op, Op::Input(_)))
            .collect();
        if !inner.is_empty() {
            for _ in 0..self.rng.random_range(0..=3) {
                let i = self.choose(&inner);
                self.nodes[i].retain = true;
            }
        }
        let mut read = vec![false; self.nodes.len()];
        for node in &self.nodes {
            for j in node.op.operands() {
                read[j] = true;
            }
        }
        let mut sinks = Vec::new();
        for i in (0..self.nodes.len()).filter(|&i| !read[i]) {
            let w = Tensor::uniform(&self.nodes[i].shape, -1.0, 1.0, &mut self.rng);
            sinks.push((i, w));
        }
        Graph {
            seed,
            inputs: self.inputs,
            nodes: self.nodes,
            sinks,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// One check that failed on a case.
struct Problem {
    check: &'static str,
    message: String,
}

/// What one backward pass over the graph gave, widened to f64.
struct Run {
    loss: f64,
    /// Σ |sink·w| over the loss's terms: the scale of its rounding error.
    scale: f64,
    grads: Vec<Tensor<f64>>,
    retained: Vec<Retained>,
}

struct Retained {
    node: usize,
    /// Read after backward; reading it can panic on its own.
    value: Result<Tensor<f64>, String>,
    grad: Option<Tensor<f64>>,
}

fn run<F: Real>(g: &Graph) -> Run {
    let tape = Tape::<F>::new();
    let inputs: Vec<Var<'_, F>> = g.inputs.iter().map(|x| tape.var(x.cast())).collect();
    let (vs, loss) = build(g, &tape, &inputs, None);
    let grads = loss.backward();
    let wide = |t: &Tensor<F>| t.cast::<f64>();
    let scale = g
        .sinks
        .iter()
        .map(|(i, w)| {
            let v = wide(&vs[*i].value());
            v.data()
                .iter()
                .zip(w.data())
                .map(|(a, b)| (a * b).abs())
                .sum::<f64>()
        })
        .sum();
    Run {
        loss: loss.item().to_f64(),
        scale,
        grads: inputs
            .iter()
            .zip(&g.inputs)
            .map(|(v, x)| grads.wrt(*v).map_or_else(|| Tensor::zeros(x.shape()), wide))
            .collect(),
        retained: (0..g.nodes.len())
            .filter(|&i| g.nodes[i].retain)
            .map(|i| Retained {
                node: i,
                value: guarded(|| wide(&vs[i].value())),
                grad: grads.wrt(vs[i]).map(wide),
            })
            .collect(),
    }
}

/// The loss as a function of the value of `node`: the graph cut there, `at` standing in for it.
fn cut_loss(g: &Graph, node: usize, at: &Tensor<f64>) -> f64 {
    let tape = Tape::<f64>::new();
    let mut inputs: Vec<Var<'_, f64>> = g.inputs.iter().map(|x| tape.constant(x.clone())).collect();
    inputs.push(tape.var(at.clone()));
    build(g, &tape, &inputs, Some(node)).1.item()
}

/// The first element where |actual - expected| > atol + rtol·|expected|, as (index, actual,
/// expected).
fn mismatch(
    actual: &Tensor<f64>,
    expected: &Tensor<f64>,
    atol: f64,
    rtol: f64,
) -> Option<(Vec<usize>, f64, f64)> {
    let (a, e) = (actual.data(), expected.data());
    let i = (0..e.len()).find(|&i| {
        let bad = (a[i] - e[i]).abs() > atol + rtol * e[i].abs();
        bad || a[i].is_nan() != e[i].is_nan()
    })?;
    Some((unflatten(i, expected.shape()), a[i], e[i]))
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// Backward's gradient of a retained node against central differences of the graph cut there,
/// with gradcheck's ε and tolerances. Returns which elements the loss is smooth in.
///
/// An element where the loss has a kink is skipped: one-sided differences (step 1e-7) that
/// disagree mean an exact tie of a max or an exact 0 under relu, which the graph can make on
/// purpose (`stack(&[v, v])`, `v - v`), and any one-sided derivative is a fair answer there.
/// Moving an input moves tied values together, so gradcheck of the inputs has no such points.
fn check_retained(g: &Graph, r: &Retained) -> Result<Vec<bool>, String> {
    let value = r
        .value
        .as_ref()
        .map_err(|panic| format!("reading the value of v{}: {panic}", r.node))?;
    let Some(kept) = &r.grad else {
        return Err(format!(
            "backward kept no gradient for v{} (marked retain_grad)",
            r.node
        ));
    };
    let o = GradcheckOptions::default();
    let tol = |d: f64| o.atol + o.rtol * d.abs();
    let moved = |e: usize, dx: f64| {
        let mut probe = value.clone();
        probe.data_mut()[e] += dx;
        cut_loss(g, r.node, &probe)
    };
    let here = cut_loss(g, r.node, value);
    let mut smooth = Vec::with_capacity(value.numel());
    for e in 0..value.numel() {
        let h = 1e-7;
        let (right, left) = ((moved(e, h) - here) / h, (here - moved(e, -h)) / h);
        smooth.push((right - left).abs() <= tol(right.abs().max(left.abs())));
        let central = (moved(e, o.eps) - moved(e, -o.eps)) / (2.0 * o.eps);
        let analytical = kept.data()[e];
        let off = (analytical - central).abs();
        if smooth[e] && (off > tol(central) || off.is_nan()) {
            return Err(format!(
                "retained gradient of v{} at {:?}: backward {analytical:e} vs finite differences {central:e}",
                r.node,
                unflatten(e, value.shape())
            ));
        }
    }
    Ok(smooth)
}

/// The f32 run against the f64 one. A retained gradient is compared only where the f64 check
/// found the loss smooth (`smooth`, when it got that far): at a tie the two precisions may round
/// to different winners.
fn compare_f32(low: &Run, reference: &Run, smooth: &[Option<Vec<bool>>]) -> Vec<String> {
    let mut out = Vec::new();
    let tol = LOSS_TOL * (1.0 + reference.scale);
    if (low.loss - reference.loss).abs() > tol || low.loss.is_nan() {
        out.push(format!(
            "loss: f32 {:e} vs f64 {:e} (tolerance {tol:e})",
            low.loss, reference.loss
        ));
    }
    let close = |a: &Tensor<f64>, b: &Tensor<f64>| {
        let largest = b.data().iter().fold(0.0, |m: f64, x| m.max(x.abs()));
        mismatch(a, b, F32_ATOL * (1.0 + largest), F32_RTOL)
    };
    for (j, (a, b)) in low.grads.iter().zip(&reference.grads).enumerate() {
        if let Some((at, x, y)) = close(a, b) {
            out.push(format!(
                "gradient of x{j} at {at:?}: f32 {x:e} vs f64 {y:e}"
            ));
        }
    }
    for ((a, b), smooth) in low.retained.iter().zip(&reference.retained).zip(smooth) {
        match (&a.grad, &b.grad) {
            (Some(x), Some(y)) => {
                let mut x = x.clone();
                for (e, ok) in smooth.iter().flatten().enumerate() {
                    if !ok {
                        x.data_mut()[e] = y.data()[e];
                    }
                }
                if let Some((at, x, y)) = close(&x, y) {
                    out.push(format!(
                        "retained gradient of v{} at {at:?}: f32 {x:e} vs f64 {y:e}",
                        a.node
                    ));
                }
            }
            (None, Some(_)) => out.push(format!(
                "the f32 backward kept no gradient for v{} (marked retain_grad)",
                a.node
            )),
            _ => {}
        }
    }
    out
}

/// Every check on one graph; an empty list when all pass.
fn check_graph(g: &Graph) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut fail = |check: &'static str, message: String| problems.push(Problem { check, message });
    let checked = guarded(|| gradcheck(|tape, v| build(g, tape, v, None).1, &g.inputs));
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail("f64 gradcheck", e.to_string()),
        Err(panic) => fail("f64 gradcheck", panic),
    }
    let reference = match guarded(|| run::<f64>(g)) {
        Ok(r) => r,
        Err(panic) => {
            fail("f64 backward", panic);
            return problems;
        }
    };
    let mut smooth = Vec::new();
    for r in &reference.retained {
        smooth.push(match guarded(|| check_retained(g, r)) {
            Ok(Ok(mask)) => Some(mask),
            Ok(Err(m)) => {
                fail("retained gradient", m);
                None
            }
            Err(panic) => {
                fail(
                    "retained gradient",
                    format!("the graph cut at v{} {panic}", r.node),
                );
                None
            }
        });
    }
    match guarded(|| run::<f32>(g)) {
        Ok(low) => compare_f32(&low, &reference, &smooth)
            .into_iter()
            .for_each(|m| fail("f32 against f64", m)),
        Err(panic) => fail("f32 backward", panic),
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Running cases: panics are caught (and kept quiet) so that every case runs and the report
// groups what failed.

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs f, turning a panic into its message and location.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            let at = info
                .location()
                .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked: {message}{at}")));
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panicked".to_string())
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: expected a non-negative integer, found {s:?}")),
        Err(_) => default,
    }
}

struct Failure {
    graph: Graph,
    problems: Vec<Problem>,
}

/// A failure's kind: its check and its message with every number (and index list) masked.
fn class(p: &Problem) -> String {
    let chars: Vec<char> = p.message.chars().collect();
    let mut masked = String::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
        if starts(i) || (chars[i] == '-' && starts(i + 1)) {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "+-.".contains(chars[i]))
            {
                i += 1;
            }
            masked.push('#');
        } else {
            masked.push(chars[i]);
            i += 1;
        }
    }
    while masked.contains("#, #") {
        masked = masked.replace("#, #", "#");
    }
    format!("[{}] {masked}", p.check)
}

/// Every failure, grouped by kind, with the smallest graph of each kind in full.
fn report(failures: &[Failure], cases: u64, seed: u64) -> String {
    let mut kinds: BTreeMap<String, Vec<&Failure>> = BTreeMap::new();
    for f in failures {
        for p in &f.problems {
            let entry = kinds.entry(class(p)).or_default();
            if entry
                .last()
                .is_none_or(|last| last.graph.seed != f.graph.seed)
            {
                entry.push(f);
            }
        }
    }
    let mut out = format!(
        "{} of {cases} random graphs failed (seeds {seed}..{}); \
         REWIND_RANDOM_SEED=<seed> REWIND_RANDOM_CASES=1 replays one. {} kinds:\n",
        failures.len(),
        seed.wrapping_add(cases),
        kinds.len()
    );
    for (kind, cases) in &kinds {
        let seeds: Vec<String> = cases
            .iter()
            .take(12)
            .map(|f| f.graph.seed.to_string())
            .collect();
        let more = if cases.len() > 12 { ", ..." } else { "" };
        let smallest = cases
            .iter()
            .min_by_key(|f| (f.graph.nodes.len(), f.graph.seed))
            .expect("a kind has a case");
        out += &format!(
            "\n== {} case(s): {kind}\n   seeds {}{more}\n   smallest, seed {}:\n{}",
            cases.len(),
            seeds.join(", "),
            smallest.graph.seed,
            smallest.graph
        );
        for p in &smallest.problems {
            out += &format!("    [{}] {}\n", p.check, p.message);
        }
    }
    out
}

/// The default cases run as this many tests, so that the harness spreads them over the cores
/// beside the other tests instead of leaving one test to run alone at the end.
const PARTS: u64 = 4;

/// Part `part` of `PARTS`: cases `cases·part/PARTS` up to `cases·(part+1)/PARTS`.
fn check_part(part: u64) {
    let seed = env_u64("REWIND_RANDOM_SEED", DEFAULT_SEED);
    let cases = env_u64("REWIND_RANDOM_CASES", DEFAULT_CASES);
    let (first, end) = (cases * part / PARTS, cases * (part + 1) / PARTS);
    let mut failures = Vec::new();
    for case in first..end {
        let graph = generate(seed.wrapping_add(case));
        let problems = check_graph(&graph);
        if !problems.is_empty() {
            failures.push(Failure { graph, problems });
        }
    }
    if let Ok(path) = std::env::var("RG_DUMP") {
        let mut out = String::new();
        for f in &failures {
            out += &format!("@@@ {}\n{}", f.graph.seed, f.graph);
            for p in &f.problems {
                out += &format!("!!! [{}] {}\n", p.check, p.message);
            }
        }
        std::fs::write(format!("{path}.{part}"), out).unwrap();
    }
    if !failures.is_empty() {
        panic!(
            "{}",
            report(&failures, end - first, seed.wrapping_add(first))
        );
    }
}

#[test]
fn random_graphs_pass_gradcheck_retained_gradients_match_and_f32_agrees_with_f64_part_1() {
    check_part(0);
}

#[test]
fn random_graphs_pass_gradcheck_retained_gradients_match_and_f32_agrees_with_f64_part_2() {
    check_part(1);
}

#[test]
fn random_graphs_pass_gradcheck_retained_gradients_match_and_f32_agrees_with_f64_part_3() {
    check_part(2);
}

#[test]
fn random_graphs_pass_gradcheck_retained_gradients_match_and_f32_agrees_with_f64_part_4() {
    check_part(3);
}

#[test]
fn the_same_seed_draws_the_same_graph() {
    for seed in 0..20 {
        let (a, b) = (generate(seed), generate(seed));
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.inputs, b.inputs);
    }
}

/// A graph that reads x through a retained tanh, then the op `cube` with the given flaw.
fn graph_with_cube(flaw: Flaw) -> Graph {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(7),
        inputs: Vec::new(),
        nodes: Vec::new(),
        range: Vec::new(),
    };
    let x = g.input(&[2, 3]);
    let t = g.unary(Unary::Tanh, x);
    let c = g.view(Op::Cube(t, flaw), t, vec![2, 3]);
    g.along(Along::Sum, c, -1, false);
    let mut graph = g.finish(7);
    for node in &mut graph.nodes {
        node.retain = matches!(node.op, Op::Unary(Unary::Tanh, _));
    }
    graph
}

#[test]
fn a_wrong_derivative_fails_gradcheck_and_the_retained_gradient_check() {
    let problems = check_graph(&graph_with_cube(Flaw::Everywhere));
    let checks: Vec<&str> = problems.iter().map(|p| p.check).collect();
    assert_eq!(checks, ["f64 gradcheck", "retained gradient"]);
}

#[test]
fn a_derivative_wrong_only_in_f32_fails_the_comparison_with_f64() {
    let problems = check_graph(&graph_with_cube(Flaw::InF32));
    let checks: Vec<&str> = problems.iter().map(|p| p.check).collect();
    assert_eq!(checks, ["f32 against f64", "f32 against f64"]);
}
