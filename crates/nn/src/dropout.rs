//! `Dropout`: zeroes elements at random in training mode, seeded for reproducibility.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_autograd::{Float, Tape, Tensor, Var};

/// In training mode, each element is zeroed with probability `p` and the rest are scaled by
/// 1/(1 - p), as `torch.nn.Dropout`; in evaluation mode it is the identity. The masks come from
/// a generator seeded at construction, so a run is reproducible.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: Mutex<StdRng>,
    training: AtomicBool,
}

thread_local! {
    /// The generator every dropout on this thread draws from instead of its own, inside
    /// [`drawing_from`].
    static SHARD_RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Runs `f` with every [`Dropout`] on this thread drawing its masks from one generator seeded
/// with `seed` instead of its own: each shard of a batch that the driver runs on its own thread
/// draws a stream of its own, the same whatever thread runs it, so a sharded run is reproducible
/// from its seed. The setting ends with `f`, a panic included.
pub(crate) fn drawing_from<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<StdRng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SHARD_RNG.with(|r| *r.borrow_mut() = self.0.take());
        }
    }
    let before = SHARD_RNG.with(|r| r.borrow_mut().replace(StdRng::seed_from_u64(seed)));
    let _restore = Restore(before);
    f()
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
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            training: AtomicBool::new(true),
        }
    }

    /// Restarts the mask generator from `seed` (to make a resumed run draw the masks an
    /// uninterrupted one would).
    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) = StdRng::seed_from_u64(seed);
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Training mode (masks applied) or evaluation mode (identity).
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Applies dropout to `x`.
    pub fn forward<'t, F: Float>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        if !self.is_training() || self.p == 0.0 {
            // The identity, as a node of its own: a gradient asked for at the result counts
            // only the paths through it.
            return x.reshape(&x.shape());
        }
        let shape = x.shape();
        let scale = F::from_f64(1.0 / (1.0 - self.p));
        let draw = |rng: &mut StdRng| -> Vec<F> {
            (0..rewind_autograd::numel(&shape))
                .map(|_| {
                    if rng.random::<f64>() < self.p {
                        F::ZERO
                    } else {
                        scale
                    }
                })
                .collect()
        };
        let mask = SHARD_RNG.with(|shard| match shard.borrow_mut().as_mut() {
            Some(rng) => draw(rng),
            None => draw(&mut self.rng.lock().unwrap_or_else(PoisonError::into_inner)),
        });
        x * tape.constant(Tensor::from_vec(mask, &shape).expect("one per element"))
    }
}
