//! `gradcheck`: compares the tape's gradients with central finite differences in f64, as
//! `torch.autograd.gradcheck` does.

use std::fmt;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// Tolerances of [`gradcheck_with`]. The defaults are torch.autograd.gradcheck's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// The finite-difference step ε in (f(x+ε) - f(x-ε)) / 2ε.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, against the numerical value.
    pub rtol: f64,
}

impl GradcheckOptions {
    /// Whether a derivative from backward agrees with one from finite differences:
    /// `|analytical - numerical| ≤ atol + rtol·|numerical|`, both finite. A NaN or infinite
    /// finite difference fails, since a check that cannot see must not pass (f undefined or
    /// infinite within ε of the point, as sqrt at 0).
    pub fn agrees(&self, analytical: f64, numerical: f64) -> bool {
        analytical.is_finite()
            && numerical.is_finite()
            && (analytical - numerical).abs() <= self.atol + self.rtol * numerical.abs()
    }
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The first Jacobian entry where the tape and finite differences disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckError {
    /// Which input (position in the slice given to `gradcheck`).
    pub input: usize,
    /// The element of that input, as a multi-dimensional index.
    pub element: Vec<usize>,
    /// The element of the output (flat, row-major).
    pub output: usize,
    /// ∂output/∂input from backward.
    pub analytical: f64,
    /// ∂output/∂input from central differences.
    pub numerical: f64,
    /// The tolerances that were applied.
    pub options: GradcheckOptions,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.numerical.is_finite() {
            return write!(
                f,
                "gradcheck cannot check input {} at element {:?} (output element {}): the finite difference is {} (analytical {:e}), so the function is undefined or infinite within eps = {:e} of the point; check it at a point farther from the edge of its domain, or with a smaller eps",
                self.input,
                self.element,
                self.output,
                self.numerical,
                self.analytical,
                self.options.eps
            );
        }
        write!(
            f,
            "gradcheck failed for input {} at element {:?} (output element {}): analytical {:e} vs numerical {:e} (atol {:e}, rtol {:e})",
            self.input,
            self.element,
            self.output,
            self.analytical,
            self.numerical,
            self.options.atol,
            self.options.rtol
        )
    }
}

impl std::error::Error for GradcheckError {}

/// Checks the gradient of `f` at `inputs` with the default tolerances (ε 1e-6, atol 1e-5,
/// rtol 1e-3): every entry of the Jacobian from backward must satisfy
/// `|analytical - numerical| ≤ atol + rtol·|numerical|` ([`GradcheckOptions::agrees`]), with
/// both finite: where f is NaN or infinite within ε of the point, the check fails, naming the
/// input and the element, rather than pass unseen.
///
/// `f` receives a fresh tape and one requested leaf per input, and may return a value of any
/// shape; each output element is checked.
///
/// ```
/// use rewind_autograd::{gradcheck, Tensor};
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]).unwrap();
/// gradcheck(|_, v| (v[0].tanh() * v[0]).sum(), &[x]).unwrap();
/// ```
pub fn gradcheck<Fun>(f: Fun, inputs: &[Tensor<f64>]) -> Result<(), GradcheckError>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    gradcheck_with(f, inputs, GradcheckOptions::default())
}

/// [`gradcheck`] with tolerances of your choice.
pub fn gradcheck_with<Fun>(
    f: Fun,
    inputs: &[Tensor<f64>],
    options: GradcheckOptions,
) -> Result<(), GradcheckError>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    compare(&f, inputs, &analytical_jacobian(&f, inputs), options)
}

/// `jac[input][output][element]`, a Jacobian of `f` at `inputs` computed some other way, against
/// central finite differences of `f`: the first entry out of tolerance, if any.
fn compare<Fun>(
    f: &Fun,
    inputs: &[Tensor<f64>],
    analytical: &[Vec<Vec<f64>>],
    options: GradcheckOptions,
) -> Result<(), GradcheckError>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let outputs = analytical.first().map_or(0, |rows| rows.len());
    let mut probe: Vec<Tensor<f64>> = inputs.to_vec();
    for (j, input) in inputs.iter().enumerate() {
        for e in 0..input.numel() {
            let x = input.data()[e];
            probe[j].data_mut()[e] = x + options.eps;
            let plus = evaluate(f, &probe);
            probe[j].data_mut()[e] = x - options.eps;
            let minus = evaluate(f, &probe);
            probe[j].data_mut()[e] = x;
            for o in 0..outputs {
                let numerical = (plus.data()[o] - minus.data()[o]) / (2.0 * options.eps);
                let a = analytical[j][o][e];
                if !options.agrees(a, numerical) {
                    return Err(GradcheckError {
                        input: j,
                        element: unflatten(e, input.shape()),
                        output: o,
                        analytical: a,
                        numerical,
                        options,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks the second derivatives of `f` at `inputs` against finite differences of its recorded
/// gradient, as `torch.autograd.gradgradcheck` does, with its defaults (ε 1e-6, atol 1e-5,
/// rtol 1e-3): [`gradcheck`] of the function (inputs, u) ↦ uᵀ·∂f/∂inputs, the vector-Jacobian
/// product recorded with [`Var::grad_graph_with`], where u, the output's gradient, is a random
/// normal tensor (seeded, so the check is the same on every run) taken as one more input. Every
/// entry of its Jacobian is checked: ∂²f/∂inputs² contracted with u, and the mixed terms in u.
///
/// First, the recorded product's value itself is checked against finite differences of ⟨u, f⟩
/// (an error there names output 0 and never u). PyTorch has no such step, since its recorded
/// backward is its backward; here it is other code, and a wrong formula in it would otherwise
/// pass, being differentiated as consistently as a right one.
///
/// ```
/// use rewind_autograd::{gradgradcheck, Tensor};
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]).unwrap();
/// gradgradcheck(|_, v| v[0].tanh() * v[0].sigmoid(), &[x]).unwrap();
/// ```
pub fn gradgradcheck<Fun>(f: Fun, inputs: &[Tensor<f64>]) -> Result<(), GradcheckError>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    gradgradcheck_with(f, inputs, GradcheckOptions::default())
}

/// [`gradgradcheck`] with tolerances of your choice. An error's `input` counts the output's
/// gradient u as the input after the last of `inputs`.
pub fn gradgradcheck_with<Fun>(
    f: Fun,
    inputs: &[Tensor<f64>],
    options: GradcheckOptions,
) -> Result<(), GradcheckError>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let shape = evaluate(&f, inputs).shape().to_vec();
    let mut rng = StdRng::seed_from_u64(0x09ad_99ad);
    let u = Tensor::normal(&shape, 0.0, 1.0, &mut rng);
    let dot = for_every_tape(|tape, xs| (f(tape, xs) * tape.constant(u.clone())).sum());
    compare(&dot, inputs, &recorded_vjp(&f, inputs, &u), options)?;
    let n = inputs.len();
    let vjp = for_every_tape(|tape, vars| {
        let (xs, u) = vars.split_at(n);
        let grads = f(tape, xs).grad_graph_with(u[0], xs);
        let flat: Vec<Var<'_, f64>> = grads.into_iter().map(|g| g.flatten()).collect();
        crate::var_methods::concat(&flat, 0)
    });
    let mut all = inputs.to_vec();
    all.push(u);
    gradcheck_with(vjp, &all, options)
}

/// Gives a closure the signature gradcheck takes (a lifetime for every tape), which the compiler
/// does not infer for a closure by itself.
fn for_every_tape<Fun>(f: Fun) -> Fun
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    f
}

/// uᵀ·∂f/∂inputs as [`Var::grad_graph_with`] records it, as the Jacobian of ⟨u, f⟩: one output
/// per input.
fn recorded_vjp<Fun>(f: &Fun, inputs: &[Tensor<f64>], u: &Tensor<f64>) -> Vec<Vec<Vec<f64>>>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let seed = tape.constant(u.clone());
    f(&tape, &vars)
        .grad_graph_with(seed, &vars)
        .into_iter()
        .map(|g| vec![g.value().data().to_vec()])
        .collect()
}

fn evaluate<Fun>(f: &Fun, inputs: &[Tensor<f64>]) -> Tensor<f64>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    f(&tape, &vars).value()
}

/// `jac[input][output][element]` = ∂output/∂input[element], one backward pass per output element.
fn analytical_jacobian<Fun>(f: &Fun, inputs: &[Tensor<f64>]) -> Vec<Vec<Vec<f64>>>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let tape = Tape::new();
    let vars: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let out = f(&tape, &vars);
    let shape = out.shape();
    let n_out = crate::shape::numel(&shape);
    let mut jac = vec![Vec::with_capacity(n_out); inputs.len()];
    for o in 0..n_out {
        let mut seed = Tensor::zeros(&shape);
        seed.data_mut()[o] = 1.0;
        let grads = out.backward_with(&seed);
        for (j, v) in vars.iter().enumerate() {
            let row = grads
                .wrt(*v)
                .map_or_else(|| vec![0.0; inputs[j].numel()], |g| g.data().to_vec());
            jac[j].push(row);
        }
    }
    jac
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}
