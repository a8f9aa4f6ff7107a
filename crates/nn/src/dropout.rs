//! `Dropout`: zeroes elements at random in training mode, seeded for reproducibility.

use std::cell::{Cell, RefCell};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_autograd::{Float, Tape, Tensor, Var};

/// In training mode, each element is zeroed with probability `p` and the rest are scaled by
/// 1/(1 - p), as `torch.nn.Dropout`; in evaluation mode it is the identity. The masks come from
/// a generator seeded at construction, so a run is reproducible.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: RefCell<StdRng>,
    training: Cell<bool>,
}

impl Dropout {
    /// Dropout with probability `p` in [0, 1), in training mode.
    #[track_caller]
    pub fn new(p: f64, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout: probability {p} is not in [0, 1)"
        );
        Dropout {
            p,
            rng: RefCell::new(StdRng::seed_from_u64(seed)),
            training: Cell::new(true),
        }
    }

    /// Restarts the mask generator from `seed` (to make a resumed run draw the masks an
    /// uninterrupted one would).
    pub fn reseed(&self, seed: u64) {
        *self.rng.borrow_mut() = StdRng::seed_from_u64(seed);
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Training mode (masks applied) or evaluation mode (identity).
    pub fn set_training(&self, training: bool) {
        self.training.set(training);
    }

    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.training.get()
    }

    /// Applies dropout to `x`.
    pub fn forward<'t, F: Float>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        if !self.training.get() || self.p == 0.0 {
            // The identity, as a node of its own: a gradient asked for at the result counts
            // only the paths through it.
            return x.reshape(&x.shape());
        }
        let shape = x.shape();
        let scale = F::from_f64(1.0 / (1.0 - self.p));
        let mut rng = self.rng.borrow_mut();
        let mask: Vec<F> = (0..rewind_autograd::numel(&shape))
            .map(|_| {
                if rng.random::<f64>() < self.p {
                    F::ZERO
                } else {
                    scale
                }
            })
            .collect();
        x * tape.constant(Tensor::from_vec(mask, &shape).expect("one per element"))
    }
}
