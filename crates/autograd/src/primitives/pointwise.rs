//! The element-wise primitives: arithmetic, the activations, clamp and `where`. Each derivative
//! is one generic function over [`Calc`], called with numbers inside the backward pass's loops
//! and with recorded `Var`s by `grad_graph`: the formula is written once for both.

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::{add_reduced, Nodes, Sink};
use crate::float::Float;
use crate::grad_graph::GraphSink;
use crate::kernels::activation;
use crate::kernels::elementwise::{accumulate_reduced, binary, broadcast_index};
use crate::kernels::pool;
use crate::recycle;
use crate::shape::{broadcast_shape, broadcast_strides, for_each_broadcast, numel, Shape};
use crate::tape::Var;
use crate::tensor::{zeroed, Tensor};

/// An element-wise primitive. Binary ones broadcast their operands together.
#[derive(Clone)]
pub(crate) enum Pointwise<F: Float> {
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
    /// `cond ≠ 0 ? a : b`, all three broadcast together.
    Where {
        cond: Tensor<F>,
        a: usize,
        b: usize,
    },
}

/// What a derivative is written over: plain numbers, inside the backward pass's loops over
/// elements (where the formula inlines into the loop), or recorded `Var`s for `grad_graph`
/// (where the same formula records ops that can be differentiated again).
pub(crate) trait Calc<F: Float>:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// `self · s`.
    fn times(self, s: F) -> Self;
    /// `1 - self`.
    fn one_minus(self) -> Self;
    /// `self^p`.
    fn pow(self, p: F) -> Self;
    /// `self` where `keep` holds of `by`, and 0 elsewhere; a recorded mask is a constant, whose
    /// own derivative is zero almost everywhere.
    fn kept_where(self, by: Self, keep: impl Fn(F) -> bool) -> Self;
}

impl<F: Float> Calc<F> for F {
    fn times(self, s: F) -> F {
        self * s
    }

    fn one_minus(self) -> F {
        F::ONE - self
    }

    fn pow(self, p: F) -> F {
        self.powf(p)
    }

    fn kept_where(self, by: F, keep: impl Fn(F) -> bool) -> F {
        if keep(by) {
            self
        } else {
            F::ZERO
        }
    }
}

impl<'t, F: Float> Calc<F> for Var<'t, F> {
    fn times(self, s: F) -> Self {
        self.affine(s, F::ZERO)
    }

    fn one_minus(self) -> Self {
        self.affine(-F::ONE, F::ONE)
    }

    fn pow(self, p: F) -> Self {
        self.powf(p)
    }

    fn kept_where(self, by: Self, keep: impl Fn(F) -> bool) -> Self {
        let mask = by.value().map(|v| if keep(v) { F::ONE } else { F::ZERO });
        self.where_cond(&mask, self.tape().constant(Tensor::scalar(F::ZERO)))
    }
}

// The derivatives, given g = ∂L/∂y for y = op(x): each returns its input's share of ∂L.

/// d(a·b) = b·da + a·db: g times the other operand.
fn d_mul<F: Float, C: Calc<F>>(g: C, other: C) -> C {
    g * other
}

/// d(a/b)/da = 1/b.
fn d_div_a<F: Float, C: Calc<F>>(g: C, b: C) -> C {
    g / b
}

/// d(a/b)/db = -(a/b)/b, in PyTorch's order of operations (0/0 gives its inf and NaN).
fn d_div_b<F: Float, C: Calc<F>>(g: C, y: C, b: C) -> C {
    -g * (y / b)
}

/// d(s·x + t) = s·dx.
fn d_affine<F: Float, C: Calc<F>>(g: C, scale: F) -> C {
    g.times(scale)
}

/// d(x^p) = p·x^(p-1)·dx for p ≠ 0 (p = 0 gives 0 even at x = 0, not 0·0^-1 = NaN, as
/// PyTorch). At x = 0 with p < 1 the formula's ±inf stands, as in PyTorch.
fn d_powf<F: Float, C: Calc<F>>(g: C, x: C, p: F) -> C {
    g.times(p) * x.pow(p - F::ONE)
}

/// d(e^x) = y·dx: the output reused.
fn d_exp<F: Float, C: Calc<F>>(g: C, y: C) -> C {
    g * y
}

/// d(ln x) = dx/x.
fn d_ln<F: Float, C: Calc<F>>(g: C, x: C) -> C {
    g / x
}

/// d(√x) = dx/(2y).
fn d_sqrt<F: Float, C: Calc<F>>(g: C, y: C) -> C {
    g / (y + y)
}

/// d(tanh x) = (1 - y²)·dx.
fn d_tanh<F: Float, C: Calc<F>>(g: C, y: C) -> C {
    g * (y * y).one_minus()
}

/// d(σ(x)) = y(1 - y)·dx.
fn d_sigmoid<F: Float, C: Calc<F>>(g: C, y: C) -> C {
    g * y * y.one_minus()
}

/// d(relu x) = [y > 0]·dx: the derivative at 0 is taken as 0, as in PyTorch (and NaN passes
/// none).
fn d_relu<F: Float, C: Calc<F>>(g: C, y: C) -> C {
    g.kept_where(y, |v| v > F::ZERO)
}

/// d(clamp x) = [min ≤ x ≤ max]·dx: the bounds themselves pass the gradient, as in PyTorch;
/// NaN, and every x when min > max, pass none.
fn d_clamp<F: Float, C: Calc<F>>(g: C, x: C, min: F, max: F) -> C {
    g.kept_where(x, |v| min <= v && v <= max)
}

impl<F: Float> Pointwise<F> {
    /// The op's name as the API spells it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Pointwise::Add(..) => "add",
            Pointwise::Sub(..) => "sub",
            Pointwise::Mul(..) => "mul",
            Pointwise::Div(..) => "div",
            Pointwise::Affine { .. } => "affine",
            Pointwise::Powf { .. } => "powf",
            Pointwise::Exp(_) => "exp",
            Pointwise::Ln(_) => "ln",
            Pointwise::Sqrt(_) => "sqrt",
            Pointwise::Tanh(_) => "tanh",
            Pointwise::Sigmoid(_) => "sigmoid",
            Pointwise::Relu(_) => "relu",
            Pointwise::Clamp { .. } => "clamp",
            Pointwise::Where { .. } => "where_cond",
        }
    }

    inputs_of!(|op| match op {
        Pointwise::Add(a, b)
        | Pointwise::Sub(a, b)
        | Pointwise::Mul(a, b)
        | Pointwise::Div(a, b)
        | Pointwise::Where { a, b, .. } => [a, b].into_iter().collect(),
        Pointwise::Affine { x, .. }
        | Pointwise::Powf { x, .. }
        | Pointwise::Exp(x)
        | Pointwise::Ln(x)
        | Pointwise::Sqrt(x)
        | Pointwise::Tanh(x)
        | Pointwise::Sigmoid(x)
        | Pointwise::Relu(x)
        | Pointwise::Clamp { x, .. } => [x].into_iter().collect(),
    });

    pub(crate) fn forward(&self, nodes: &Nodes<F>) -> Tensor<F> {
        match self {
            Pointwise::Add(a, b) => bin(nodes, *a, *b, |x, y| x + y),
            Pointwise::Sub(a, b) => bin(nodes, *a, *b, |x, y| x - y),
            Pointwise::Mul(a, b) => bin(nodes, *a, *b, |x, y| x * y),
            Pointwise::Div(a, b) => bin(nodes, *a, *b, |x, y| x / y),
            Pointwise::Affine { x, scale, shift } => unary(nodes, *x, |v| *scale * v + *shift),
            Pointwise::Powf { x, p } => unary(nodes, *x, |v| v.powf(*p)),
            Pointwise::Exp(x) => unary_slice(nodes, *x, activation::exp),
            Pointwise::Ln(x) => unary(nodes, *x, F::ln),
            Pointwise::Sqrt(x) => unary(nodes, *x, F::sqrt),
            Pointwise::Tanh(x) => unary_slice(nodes, *x, activation::tanh),
            Pointwise::Sigmoid(x) => unary_slice(nodes, *x, activation::sigmoid),
            // Written so that NaN passes through, as in PyTorch (`x > 0 ? x : 0` would zero it).
            Pointwise::Relu(x) => unary(nodes, *x, |v| if v <= F::ZERO { F::ZERO } else { v }),
            // min(max(x, min), max) as PyTorch: with min > max every element is max; NaN stays.
            Pointwise::Clamp { x, min, max } => unary(nodes, *x, |v| {
                let v = if v < *min { *min } else { v };
                if v > *max {
                    *max
                } else {
                    v
                }
            }),
            Pointwise::Where { cond, a, b } => {
                let (va, vb) = (nodes[*a].value(), nodes[*b].value());
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
        }
    }

    /// Adds the inputs' gradients into `sink`, given `g` = ∂L/∂y for node `me`, y its value.
    pub(crate) fn backward(
        &self,
        me: usize,
        g: &Tensor<F>,
        nodes: &Nodes<F>,
        sink: &mut impl Sink<F>,
    ) {
        let out = &nodes[me].shape;
        let gd = g.data();
        let val = |i: usize| nodes[i].value().data();
        match self {
            // Each operand's gradient summed over the axes it was broadcast along.
            Pointwise::Add(a, b) => {
                add_reduced(sink, nodes, *a, g, out);
                add_reduced(sink, nodes, *b, g, out);
            }
            Pointwise::Sub(a, b) => {
                add_reduced(sink, nodes, *a, g, out);
                if let Some(gb) = sink.acc(*b) {
                    accumulate_reduced(gb, &nodes[*b].shape, out, gd, |_, g| -g);
                }
            }
            Pointwise::Mul(a, b) => {
                for (x, other) in [(*a, *b), (*b, *a)] {
                    let od = val(other);
                    if nodes[x].shape == *out && nodes[other].shape == *out {
                        // No broadcasting: one pass the compiler vectorizes.
                        if let Some(gx) = sink.acc(x) {
                            for ((d, &g), &v) in gx.iter_mut().zip(gd).zip(od) {
                                *d += d_mul(g, v);
                            }
                        }
                    } else if let Some(gx) = sink.acc(x) {
                        let at = broadcast_index(&nodes[other].shape, out);
                        accumulate_reduced(gx, &nodes[x].shape, out, gd, |i, g| {
                            d_mul(g, od[at.as_ref().map_or(i, |o| o[i])])
                        });
                    }
                }
            }
            Pointwise::Div(a, b) => {
                let bi = broadcast_index(&nodes[*b].shape, out);
                let bd = val(*b);
                let b_at = |i: usize| bd[bi.as_ref().map_or(i, |o| o[i])];
                if let Some(ga) = sink.acc(*a) {
                    accumulate_reduced(ga, &nodes[*a].shape, out, gd, |i, g| d_div_a(g, b_at(i)));
                }
                if let Some(gb) = sink.acc(*b) {
                    let y = val(me);
                    accumulate_reduced(gb, &nodes[*b].shape, out, gd, |i, g| {
                        d_div_b(g, y[i], b_at(i))
                    });
                }
            }
            Pointwise::Affine { x, scale, .. } => {
                map_into(sink, *x, gd, |_, g| d_affine(g, *scale))
            }
            Pointwise::Powf { x, p } => {
                let xd = val(*x);
                match *p == F::ZERO {
                    true => map_into(sink, *x, gd, |_, _| F::ZERO),
                    false => map_into(sink, *x, gd, |i, g| d_powf(g, xd[i], *p)),
                }
            }
            Pointwise::Exp(x) => {
                let y = val(me);
                map_into(sink, *x, gd, |i, g| d_exp(g, y[i]))
            }
            Pointwise::Ln(x) => {
                let xd = val(*x);
                map_into(sink, *x, gd, |i, g| d_ln(g, xd[i]))
            }
            Pointwise::Sqrt(x) => {
                let y = val(me);
                map_into(sink, *x, gd, |i, g| d_sqrt(g, y[i]))
            }
            Pointwise::Tanh(x) => {
                let y = val(me);
                map_into(sink, *x, gd, |i, g| d_tanh(g, y[i]))
            }
            Pointwise::Sigmoid(x) => {
                let y = val(me);
                map_into(sink, *x, gd, |i, g| d_sigmoid(g, y[i]))
            }
            Pointwise::Relu(x) => {
                let y = val(me);
                map_into(sink, *x, gd, |i, g| d_relu(g, y[i]))
            }
            Pointwise::Clamp { x, min, max } => {
                let xd = val(*x);
                map_into(sink, *x, gd, |i, g| d_clamp(g, xd[i], *min, *max))
            }
            // The gradient goes to whichever operand was chosen at each element.
            Pointwise::Where { cond, a, b } => {
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
        }
    }

    /// [`backward`](Pointwise::backward) recorded with tape ops, by the same formulas.
    pub(crate) fn derivative<'t>(&self, sink: &mut GraphSink<'t, F>, me: usize, g: Var<'t, F>) {
        let y = sink.var(me);
        match self {
            Pointwise::Add(a, b) => {
                sink.add_reduced(*a, g);
                sink.add_reduced(*b, g);
            }
            Pointwise::Sub(a, b) => {
                sink.add_reduced(*a, g);
                sink.add_reduced(*b, -g);
            }
            Pointwise::Mul(a, b) => {
                let (va, vb) = (sink.var(*a), sink.var(*b));
                if sink.needs(*a) {
                    sink.add_reduced(*a, d_mul(g, vb));
                }
                if sink.needs(*b) {
                    sink.add_reduced(*b, d_mul(g, va));
                }
            }
            Pointwise::Div(a, b) => {
                let vb = sink.var(*b);
                if sink.needs(*a) {
                    sink.add_reduced(*a, d_div_a(g, vb));
                }
                if sink.needs(*b) {
                    sink.add_reduced(*b, d_div_b(g, y, vb));
                }
            }
            Pointwise::Affine { x, scale, .. } => sink.add(*x, d_affine(g, *scale)),
            // Nothing for p = 0: the gradient of x stays zero.
            Pointwise::Powf { x, p } => {
                if *p != F::ZERO {
                    sink.add(*x, d_powf(g, sink.var(*x), *p));
                }
            }
            Pointwise::Exp(x) => sink.add(*x, d_exp(g, y)),
            Pointwise::Ln(x) => sink.add(*x, d_ln(g, sink.var(*x))),
            Pointwise::Sqrt(x) => sink.add(*x, d_sqrt(g, y)),
            Pointwise::Tanh(x) => sink.add(*x, d_tanh(g, y)),
            Pointwise::Sigmoid(x) => sink.add(*x, d_sigmoid(g, y)),
            Pointwise::Relu(x) => sink.add(*x, d_relu(g, y)),
            Pointwise::Clamp { x, min, max } => {
                sink.add(*x, d_clamp(g, sink.var(*x), *min, *max));
            }
            Pointwise::Where { cond, a, b } => {
                let zero = sink.scalar(F::ZERO);
                if sink.needs(*a) {
                    sink.add_reduced(*a, g.where_cond(cond, zero));
                }
                if sink.needs(*b) {
                    sink.add_reduced(*b, zero.where_cond(cond, g));
                }
            }
        }
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

/// `grad[i] += f(k, g[k])` element by element, for an input of the output's shape.
fn map_into<F: Float>(sink: &mut impl Sink<F>, i: usize, g: &[F], f: impl Fn(usize, F) -> F) {
    if let Some(gi) = sink.acc(i) {
        for (k, (d, &gk)) in gi.iter_mut().zip(g).enumerate() {
            *d += f(k, gk);
        }
    }
}
