//! The finite-difference checks' shared pieces: gradcheck and gradgradcheck with the input shapes
//! in their messages, and element-wise closeness of two tensors.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{gradcheck, gradgradcheck, CustomOp, Tape, Tensor, Var};

/// `gradcheck(f, inputs)` with the default tolerances; a failure panics at the caller's line
/// with the input shapes.
#[track_caller]
pub fn check<Fun>(f: Fun, inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    if let Err(e) = gradcheck(f, inputs) {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        panic!("{e} (input shapes {shapes:?})");
    }
}

/// The recorded gradient (`grad_graph_with`) of `f` at `inputs`, for a seeded random output
/// gradient u, equals the plain backward pass's uᵀ·J to 1e-12 relative, far tighter than the
/// finite differences gradgradcheck holds it to; and `gradgradcheck(f, inputs)` passes with the
/// default tolerances. A failure panics at the caller's line with the input shapes.
#[track_caller]
pub fn check_second_order<Fun>(f: Fun, inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let tape = Tape::new();
    let xs: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(&tape, &xs);
    let u = Tensor::normal(&y.shape(), 0.0, 1.0, &mut StdRng::seed_from_u64(0x5eed));
    let plain = y.backward_with(&u);
    let recorded = y.grad_graph_with(tape.constant(u), &xs);
    for (k, (x, r)) in xs.iter().zip(recorded).enumerate() {
        let expected = plain
            .wrt(*x)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(&x.shape()));
        let got = r.value();
        assert_eq!(
            got.shape(),
            expected.shape(),
            "input {k} (input shapes {shapes:?})"
        );
        for (e, (a, b)) in got.data().iter().zip(expected.data()).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "recorded gradient of input {k} at element {e}: {a} vs backward's {b} (input shapes {shapes:?})"
            );
        }
    }
    if let Err(e) = gradgradcheck(f, inputs) {
        panic!("{e} (input shapes {shapes:?})");
    }
}

/// Equal shapes and every element within `tol` (absolute).
#[track_caller]
pub fn assert_close(a: &Tensor<f64>, b: &Tensor<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.data().iter().zip(b.data()) {
        assert!((x - y).abs() <= tol, "{x} vs {y}");
    }
}

/// A seeded generator: every test draws the same inputs on every run.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [lo, hi).
pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut StdRng) -> Tensor<f64> {
    Tensor::uniform(shape, lo, hi, rng)
}

/// A random shape of 1 to 3 axes, each of size 1 to `max`.
pub fn random_shape(rng: &mut StdRng, max: usize) -> Vec<usize> {
    let ndim = rng.random_range(1..=3);
    (0..ndim).map(|_| rng.random_range(1..=max)).collect()
}

/// A shape that broadcasts to `shape`: some axes set to 1, some leading axes dropped.
pub fn broadcastable_to(shape: &[usize], rng: &mut StdRng) -> Vec<usize> {
    let drop = rng.random_range(0..shape.len());
    shape[drop..]
        .iter()
        .map(|&d| if rng.random_bool(0.5) { 1 } else { d })
        .collect()
}

/// Values bounded away from zero: uniform in ±[0.5, 1.5].
pub fn away_from_zero(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    let mut t = uniform(shape, 0.5, 1.5, rng);
    for v in t.data_mut() {
        if rng.random_bool(0.5) {
            *v = -*v;
        }
    }
    t
}

/// y = x³ with its derivative 3x², written as a user op (whose derivative the tape cannot record
/// for grad_graph).
pub struct Cube;

impl CustomOp<f64> for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
        inputs[0].map(|x| x * x * x)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<f64>],
        _: &Tensor<f64>,
        g: &Tensor<f64>,
    ) -> Vec<Option<Tensor<f64>>> {
        let data = inputs[0]
            .data()
            .iter()
            .zip(g.data())
            .map(|(x, g)| 3.0 * x * x * g)
            .collect();
        vec![Some(Tensor::from_vec(data, inputs[0].shape()).unwrap())]
    }
}
