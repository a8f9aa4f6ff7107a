//! The finite-difference checks' shared pieces: gradcheck with the input shapes in its message,
//! and element-wise closeness of two tensors.

use rewind::autograd::{gradcheck, Tape, Tensor, Var};

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

/// Equal shapes and every element within `tol` (absolute).
#[track_caller]
pub fn assert_close(a: &Tensor<f64>, b: &Tensor<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.data().iter().zip(b.data()) {
        assert!((x - y).abs() <= tol, "{x} vs {y}");
    }
}
