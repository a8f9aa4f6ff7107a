//! Second-order products built on [`Var::grad_graph`]: the Hessian-vector product and the
//! Gauss-Newton vector product, each costing a few gradients and never forming a matrix.

use crate::backward::gradients_at;
use crate::float::Float;
use crate::tape::Var;
use crate::tensor::Tensor;

impl<'t, F: Float> Var<'t, F> {
    /// The Hessian-vector product H·v of this scalar with respect to `wrt`, by double backward:
    /// the gradient g = ∂self/∂wrt is recorded ([`grad_graph`](Var::grad_graph)), and one more
    /// backward pass of ⟨g, v⟩ gives ∂⟨g, v⟩/∂wrt = H·v (Pearlmutter's identity). `v` holds one
    /// tensor per `wrt`, of its shape; the result likewise. For several products at one point
    /// (conjugate gradient), [`hessian`](Var::hessian) records the gradient once.
    ///
    /// What is differentiated is the gradient as recorded: where `scale_grad` (or a stack run
    /// with `grad_scale`, randomized truncation) scales a gradient on its way back, the second
    /// pass goes through the scaling again, and H·v is not the Hessian of the loss.
    ///
    /// ```
    /// use rewind_autograd::{Tape, Tensor};
    /// // f(x) = Σ x_i³: H = diag(6 x_i).
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap());
    /// let f = x.powf(3.0).sum();
    /// let hv = f.hvp(&[x], &[Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap()]);
    /// assert_eq!(hv[0].data(), &[6.0, -12.0]);
    /// ```
    #[track_caller]
    pub fn hvp(self, wrt: &[Var<'t, F>], v: &[Tensor<F>]) -> Vec<Tensor<F>> {
        self.hessian(wrt).product(v)
    }

    /// This scalar's Hessian with respect to `wrt`, as an operator: the gradient is recorded
    /// once, and each [`product`](Hessian::product) is one backward pass through it.
    #[track_caller]
    pub fn hessian(self, wrt: &[Var<'t, F>]) -> Hessian<'t, F> {
        check_variables("hessian", wrt);
        Hessian {
            wrt: wrt.to_vec(),
            grads: self.grad_graph(wrt),
        }
    }

    /// The Gauss-Newton vector product G·v = Jᵀ·H_L·J·v for this scalar loss L computed from the
    /// network output `output`: J = ∂output/∂wrt, H_L = ∂²L/∂output². G is the Hessian with the
    /// network's own curvature left out, positive semi-definite when L is convex in the output
    /// (squared error, cross-entropy on logits): what Hessian-free optimisation multiplies by.
    /// For several products at one point, [`gauss_newton`](Var::gauss_newton).
    ///
    /// ```
    /// use rewind_autograd::{Tape, Tensor};
    /// // L = ½‖W x‖², output z = W x: G = Jᵀ J, and for v = W itself, G·v = (W x) xᵀ.
    /// let tape = Tape::<f64>::new();
    /// let w = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap());
    /// let x = tape.constant(Tensor::from_vec(vec![3.0, 4.0], &[2, 1]).unwrap());
    /// let z = w.matmul(x);
    /// let loss = (z * z).sum() * 0.5;
    /// let gv = loss.gnvp(z, &[w], &[w.value()]);
    /// assert_eq!(gv[0].data(), &[33.0, 44.0]); // (1·3 + 2·4)·[3, 4]
    /// ```
    #[track_caller]
    pub fn gnvp(self, output: Var<'t, F>, wrt: &[Var<'t, F>], v: &[Tensor<F>]) -> Vec<Tensor<F>> {
        self.gauss_newton(output, wrt).product(v)
    }

    /// The Gauss-Newton matrix of this scalar loss computed from `output`, with respect to
    /// `wrt`, as an operator ([`gnvp`](Var::gnvp)): the two recorded passes it needs are made
    /// once, and each [`product`](GaussNewton::product) is three backward passes.
    #[track_caller]
    pub fn gauss_newton(self, output: Var<'t, F>, wrt: &[Var<'t, F>]) -> GaussNewton<'t, F> {
        let tape = self.tape();
        tape.assert_owns("gauss_newton", output);
        check_variables("gauss_newton", wrt);
        if crate::shape::numel(&self.shape()) != 1 {
            panic!(
                "gauss_newton: the loss must be a scalar, got shape {:?}",
                self.shape()
            );
        }
        let u = tape.var(Tensor::zeros(&output.shape()));
        GaussNewton {
            wrt: wrt.to_vec(),
            output,
            u,
            jt_u: output.grad_graph_with(u, wrt),
            loss_grad: self.grad_graph(&[output])[0],
        }
    }
}

/// A scalar's Hessian at the point recorded on its tape, as an operator: the gradient recorded
/// as `Var`s ([`Var::hessian`]).
pub struct Hessian<'t, F: Float = f32> {
    wrt: Vec<Var<'t, F>>,
    grads: Vec<Var<'t, F>>,
}

impl<'t, F: Float> Hessian<'t, F> {
    /// H·v, one tensor per variable: ∂⟨g, v⟩/∂wrt by one backward pass.
    #[track_caller]
    pub fn product(&self, v: &[Tensor<F>]) -> Vec<Tensor<F>> {
        check_directions("Hessian::product", &self.wrt, v);
        backward_to(inner(&self.grads, v), &self.wrt)
    }

    /// The gradient ∂f/∂wrt at this point.
    pub fn gradient(&self) -> Vec<Tensor<F>> {
        self.grads.iter().map(|g| g.value()).collect()
    }
}

/// A loss's Gauss-Newton matrix G = Jᵀ·H_L·J at the point recorded on its tape, as an operator
/// ([`Var::gauss_newton`]).
pub struct GaussNewton<'t, F: Float = f32> {
    wrt: Vec<Var<'t, F>>,
    output: Var<'t, F>,
    /// A leaf standing for the output's gradient: Jᵀ·u is linear in it.
    u: Var<'t, F>,
    /// Jᵀ·u, recorded.
    jt_u: Vec<Var<'t, F>>,
    /// ∂L/∂output, recorded.
    loss_grad: Var<'t, F>,
}

impl<'t, F: Float> GaussNewton<'t, F> {
    /// G·v, one tensor per variable. J·v by the double-backward trick (⟨Jᵀ·u, v⟩ differentiated
    /// with respect to u), H_L·(J·v) by differentiating ⟨∂L/∂output, J·v⟩ in the output, and
    /// Jᵀ·(H_L·J·v) by a backward pass from the output.
    #[track_caller]
    pub fn product(&self, v: &[Tensor<F>]) -> Vec<Tensor<F>> {
        check_directions("GaussNewton::product", &self.wrt, v);
        let jv = backward_to(inner(&self.jt_u, v), &[self.u]).remove(0);
        let hjv = backward_to(inner(&[self.loss_grad], &[jv]), &[self.output]).remove(0);
        let tape = self.output.tape();
        let found = gradients_at(tape, self.output.index(), hjv, &indices(&self.wrt));
        zeros_where_none(found, &self.wrt)
    }

    /// The loss's gradient ∂L/∂wrt at this point (one plain backward pass).
    pub fn gradient(&self) -> Vec<Tensor<F>> {
        let dl = self.loss_grad.value();
        let tape = self.output.tape();
        let found = gradients_at(tape, self.output.index(), dl, &indices(&self.wrt));
        zeros_where_none(found, &self.wrt)
    }
}

/// Panics at the caller's line when a variable needs no gradient: a constant's second
/// derivatives are not followed by the backward passes a product takes (PyTorch refuses too).
#[track_caller]
fn check_variables<F: Float>(op: &str, wrt: &[Var<'_, F>]) {
    if wrt.is_empty() {
        panic!("{op}: no variables given");
    }
    if let Some(k) = wrt.iter().position(|w| !w.requires_grad()) {
        panic!(
            "{op}: variable {k} needs no gradient (a constant); record it with tape.var or tape.param"
        );
    }
}

/// Panics at the caller's line unless `v` holds one tensor of each `wrt`'s shape.
#[track_caller]
fn check_directions<F: Float>(op: &str, wrt: &[Var<'_, F>], v: &[Tensor<F>]) {
    if wrt.len() != v.len() {
        panic!(
            "{op}: {} directions for {} variables; give one per variable",
            v.len(),
            wrt.len()
        );
    }
    for (k, (w, d)) in wrt.iter().zip(v).enumerate() {
        if w.shape()[..] != *d.shape() {
            panic!(
                "{op}: direction {k} has shape {:?}, its variable {:?}",
                d.shape(),
                &w.shape()[..]
            );
        }
    }
}

/// Σ_k ⟨xs_k, vs_k⟩ as a scalar Var, the vs constants.
fn inner<'t, F: Float>(xs: &[Var<'t, F>], vs: &[Tensor<F>]) -> Var<'t, F> {
    let tape = xs[0].tape();
    xs.iter()
        .zip(vs)
        .map(|(&x, v)| (x * tape.constant(v.clone())).sum())
        .reduce(|a, b| a + b)
        .expect("at least one variable")
}

fn indices<F: Float>(vars: &[Var<'_, F>]) -> Vec<usize> {
    vars.iter().map(|v| v.index()).collect()
}

/// The plain backward pass of the scalar `root` to the nodes `wrt`, zeros where none arrives.
fn backward_to<'t, F: Float>(root: Var<'t, F>, wrt: &[Var<'t, F>]) -> Vec<Tensor<F>> {
    let seed = Tensor::ones(&root.shape());
    let found = gradients_at(root.tape(), root.index(), seed, &indices(wrt));
    zeros_where_none(found, wrt)
}

fn zeros_where_none<F: Float>(found: Vec<Option<Tensor<F>>>, wrt: &[Var<'_, F>]) -> Vec<Tensor<F>> {
    found
        .into_iter()
        .zip(wrt)
        .map(|(g, w)| g.unwrap_or_else(|| Tensor::zeros(&w.shape())))
        .collect()
}
