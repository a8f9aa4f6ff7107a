//! The loss contract between the BPTT driver and a model: a chunk's loss as a sum and its number
//! of terms ([`ChunkLoss`]), so that an update's gradient is that of the mean loss however the
//! driver cut the chunk.

use std::ops::Add;

use rewind_autograd::{Float, Tensor, Var};

/// A chunk's loss as the [`Bptt`](crate::Bptt) driver takes it: a sum over the terms that count, and how many
/// terms there are. The driver adds the sums of every piece of an update and divides by the total
/// number of terms once, so an update's gradient is that of the mean loss whatever the model's
/// reduction was, and however the driver cut the chunk.
///
/// A model says which reduction it computed, and the type keeps a mean from being taken for a
/// sum (or the reverse): [`summed`](ChunkLoss::summed) for `reduction="sum"`,
/// [`averaged`](ChunkLoss::averaged) for PyTorch's default mean. The chunks build it for the
/// usual losses: [`Chunk::cross_entropy`](crate::Chunk::cross_entropy) for token streams and
/// [`FeatureChunk::mse`](crate::FeatureChunk::mse) for feature streams.
///
/// ```
/// use rewind_autograd::{Tape, Tensor};
/// use rewind_nn::ChunkLoss;
///
/// let tape = Tape::<f64>::new();
/// let errors = tape.constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0], &[4]).unwrap());
/// // The same loss, reduced either way, is the same to the driver.
/// let by_sum = ChunkLoss::summed(errors.sum(), 4);
/// let by_mean = ChunkLoss::averaged(errors.mean(), 4);
/// assert_eq!(by_sum.mean().item(), 3.0);
/// assert_eq!(by_mean.mean().item(), 3.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ChunkLoss<'t, F: Float = f32> {
    sum: Var<'t, F>,
    terms: usize,
}

impl<'t, F: Float> ChunkLoss<'t, F> {
    /// A loss summed over `terms` terms (PyTorch's `reduction="sum"`).
    #[track_caller]
    pub fn summed(sum: Var<'t, F>, terms: usize) -> Self {
        let shape = sum.shape();
        assert!(
            shape.iter().product::<usize>() == 1,
            "chunk loss: the loss must be one value, got shape {:?}",
            &shape[..]
        );
        let sum = if shape.is_empty() {
            sum
        } else {
            sum.reshape(&[])
        };
        ChunkLoss { sum, terms }
    }

    /// A loss averaged over `terms` terms (PyTorch's default `reduction="mean"`): the driver
    /// counts it as `mean · terms`. A mean over no terms (NaN, as PyTorch's) adds nothing.
    #[track_caller]
    pub fn averaged(mean: Var<'t, F>, terms: usize) -> Self {
        let tape = mean.tape();
        let sum = if terms == 0 {
            tape.constant(Tensor::scalar(F::ZERO))
        } else {
            mean * F::from_f64(terms as f64)
        };
        ChunkLoss::summed(sum, terms)
    }

    /// The sum over the terms.
    pub fn sum(&self) -> Var<'t, F> {
        self.sum
    }

    /// The number of terms.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// The mean over the terms (NaN over none, as PyTorch's mean of nothing).
    pub fn mean(&self) -> Var<'t, F> {
        self.sum * F::from_f64(1.0 / self.terms as f64)
    }
}

/// Two losses over separate terms (two pieces of a chunk, two halves of a batch): the sums and the
/// counts add. Two losses over the same terms (a main loss and an auxiliary one) are
/// `ChunkLoss::summed(a.sum() + b.sum(), a.terms())`.
impl<'t, F: Float> Add for ChunkLoss<'t, F> {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        ChunkLoss {
            sum: self.sum + other.sum,
            terms: self.terms + other.terms,
        }
    }
}
