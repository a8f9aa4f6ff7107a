//! `CustomOp`: how a user adds an op, with its derivative, without forking the engine.

use crate::float::Float;
use crate::tensor::Tensor;

/// A user-defined op. Record it with [`Tape::custom`](crate::Tape::custom).
///
/// `backward` receives the gradient of the loss with respect to the output and returns, for each
/// input in order, its vector-Jacobian product (same shape as that input), or `None` for an input
/// that gets no gradient. The engine accumulates these into the inputs' gradients.
pub trait CustomOp<F: Float>: 'static {
    /// A short name, used in error messages.
    fn name(&self) -> &str;

    /// Computes the output from the input values.
    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F>;

    /// Computes each input's gradient from the output's gradient.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad_output: &Tensor<F>,
    ) -> Vec<Option<Tensor<F>>>;
}
