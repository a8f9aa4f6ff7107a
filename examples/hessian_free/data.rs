//! The adding problem (Hochreiter & Schmidhuber, 1997): at each of T steps a value in [0, 1] and
//! a marker; exactly two steps are marked, one in each half, and the target is the sum of their
//! two values. A model that ignores the inputs can do no better than predicting the mean, 1.0,
//! whose mean squared error is 1/6.

use rewind::autograd::rand::{Rng, RngCore};
use rewind::prelude::*;

/// Sequences of the adding problem.
#[derive(Clone, Debug)]
pub struct Batch<F: Float = f32> {
    /// [T, B, 2]: (value, marker) per step, time-major.
    pub x: Tensor<F>,
    /// [B, 1]: the sum of the two marked values.
    pub y: Tensor<F>,
}

impl<F: Float> Batch<F> {
    /// `batch` fresh sequences of `steps` steps (at least 2) drawn from `rng`.
    pub fn draw(steps: usize, batch: usize, rng: &mut dyn RngCore) -> Self {
        assert!(steps >= 2, "adding problem: needs T ≥ 2 steps, got {steps}");
        let mut x = vec![F::from_f64(0.0); steps * batch * 2];
        let mut y = vec![F::from_f64(0.0); batch];
        for b in 0..batch {
            let first = rng.random_range(0..steps / 2);
            let second = rng.random_range(steps / 2..steps);
            for t in 0..steps {
                let v: f64 = rng.random();
                x[(t * batch + b) * 2] = F::from_f64(v);
                if t == first || t == second {
                    x[(t * batch + b) * 2 + 1] = F::from_f64(1.0);
                    y[b] = F::from_f64(y[b].to_f64() + v);
                }
            }
        }
        Batch {
            x: Tensor::from_vec(x, &[steps, batch, 2]).expect("sizes match"),
            y: Tensor::from_vec(y, &[batch, 1]).expect("sizes match"),
        }
    }

    /// The number of sequences, B.
    pub fn sequences(&self) -> usize {
        self.y.shape()[0]
    }

    /// The first `n` sequences.
    pub fn head(&self, n: usize) -> Self {
        let (steps, batch) = (self.x.shape()[0], self.sequences());
        assert!(
            n <= batch,
            "adding problem: {n} sequences asked of a batch of {batch}"
        );
        let mut x = Vec::with_capacity(steps * n * 2);
        for t in 0..steps {
            x.extend_from_slice(&self.x.data()[t * batch * 2..(t * batch + n) * 2]);
        }
        Batch {
            x: Tensor::from_vec(x, &[steps, n, 2]).expect("sizes match"),
            y: Tensor::from_vec(self.y.data()[..n].to_vec(), &[n, 1]).expect("sizes match"),
        }
    }
}
