//! The three trainers on one clock: Adam on small minibatches, Hessian-free on large gradient
//! batches and L-BFGS on one fixed training set (full batch), each given the same seconds of
//! training from the same initial weights, measured on the same held-out sequences every few
//! seconds (measurement not counted).

use std::time::{Duration, Instant};

use rewind::autograd::rand::rngs::StdRng;
use rewind::optim::{clip_grad_norm, Adam, Lbfgs, LineSearch, Optimizer};
use rewind::prelude::*;

use super::data::Batch;
use super::hf::{HessianFree, Report, Settings};
use super::model::Net;

/// A prediction within this of the target counts as right.
pub const TOLERANCE: f64 = 0.04;

/// The held-out mean squared error and the fraction of predictions within [`TOLERANCE`].
pub fn evaluate<F: Float>(net: &Net<F>, heldout: &Batch<F>) -> (f64, f64) {
    let tape = Tape::new();
    let forward = net.forward(&tape, heldout);
    let prediction = forward.prediction.value();
    let right = prediction
        .data()
        .iter()
        .zip(heldout.y.data())
        .filter(|(p, y)| (p.to_f64() - y.to_f64()).abs() < TOLERANCE)
        .count();
    (
        forward.loss.item().to_f64(),
        right as f64 / heldout.sequences() as f64,
    )
}

/// An optimiser that trains the network one update at a time on data it draws itself.
pub trait Trainer {
    /// "adam", "hf" or "lbfgs".
    fn name(&self) -> &'static str;

    /// One update; the training loss it saw (before the update).
    fn update(&mut self, net: &mut Net, rng: &mut StdRng) -> f64;

    /// Gauss-Newton products used so far.
    fn products(&self) -> usize;

    /// Gradients evaluated (forward and backward over a batch) in the first `updates` updates:
    /// one per update, unless the trainer evaluates more (L-BFGS's line search).
    fn evaluations(&self, updates: usize) -> usize {
        updates
    }

    /// The trainer's own state, for a progress line.
    fn status(&self) -> String;

    /// The trainer and its settings, in a line.
    fn describe(&self) -> String;
}

/// Adam on fresh minibatches, the global gradient norm clipped.
pub struct AdamTrainer {
    /// The optimiser.
    pub adam: Adam,
    /// Sequences per update.
    pub batch: usize,
    /// T.
    pub steps: usize,
    /// The largest gradient norm.
    pub clip: f64,
}

impl Trainer for AdamTrainer {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn update(&mut self, net: &mut Net, rng: &mut StdRng) -> f64 {
        let batch = Batch::draw(self.steps, self.batch, rng);
        let tape = Tape::new();
        let loss = net.forward(&tape, &batch).loss;
        let mut grads = loss.backward();
        clip_grad_norm(&mut grads, self.clip);
        self.adam.step(net, &grads);
        f64::from(loss.item())
    }

    fn products(&self) -> usize {
        0
    }

    fn status(&self) -> String {
        String::new()
    }

    fn describe(&self) -> String {
        format!(
            "adam: batches of {}, lr {}, gradient norm clipped at {}",
            self.batch,
            self.adam.lr(),
            self.clip
        )
    }
}

/// Hessian-free on a fresh gradient batch each outer iteration.
pub struct HfTrainer {
    /// The method and its state.
    pub hf: HessianFree,
    /// Sequences of each gradient batch.
    pub batch: usize,
    /// T.
    pub steps: usize,
    /// Gauss-Newton products used so far.
    pub products: usize,
    /// The last outer iteration's report.
    pub last: Option<Report>,
}

impl HfTrainer {
    /// A trainer from the method's settings.
    pub fn new(settings: Settings, batch: usize, steps: usize) -> Self {
        HfTrainer {
            hf: HessianFree::new(settings),
            batch,
            steps,
            products: 0,
            last: None,
        }
    }
}

impl Trainer for HfTrainer {
    fn name(&self) -> &'static str {
        "hf"
    }

    fn update(&mut self, net: &mut Net, rng: &mut StdRng) -> f64 {
        let batch = Batch::draw(self.steps, self.batch, rng);
        let report = self.hf.step(net, &batch);
        self.products += report.products;
        let loss = report.loss;
        self.last = Some(report);
        loss
    }

    fn products(&self) -> usize {
        self.products
    }

    fn status(&self) -> String {
        match &self.last {
            Some(r) => format!(
                "ρ {:>7.3}  λ {:.2e} → {:.2e}  CG {:>2} ({:?}), back to {:>2}, step {:.2}",
                r.rho,
                r.lambda,
                self.hf.lambda(),
                r.cg_iterations,
                r.stop,
                r.chosen,
                r.step
            ),
            None => String::new(),
        }
    }

    fn describe(&self) -> String {
        let s = self.hf.settings();
        format!(
            "hf: gradient on {} sequences, Gauss-Newton products on {}, CG ≤ {} iterations, λ \
             from {}, structural damping μ = {}",
            self.batch, s.curvature_batch, s.cg.max_iterations, s.lambda, s.structural
        )
    }
}

/// L-BFGS (rewind's `Lbfgs`, torch's `LBFGS` with `line_search_fn="strong_wolfe"`) on one
/// training set drawn at the first update and kept: full batch, so the loss it minimises is
/// deterministic. Each update is one L-BFGS iteration, its curvature history carried to the next.
pub struct LbfgsTrainer {
    /// The method and its history.
    pub lbfgs: Lbfgs,
    /// Sequences of the training set.
    pub batch: usize,
    /// T.
    pub steps: usize,
    /// The training set, once drawn.
    train: Option<Batch>,
}

impl LbfgsTrainer {
    /// Closure evaluations one iteration may take: torch's default budget for 20 iterations
    /// (max_iter·5/4), which bounds the line search.
    const MAX_EVALS: usize = 25;

    /// L-BFGS at torch's defaults (lr 1, history 100) with a strong-Wolfe line search, one
    /// iteration per update, on `batch` sequences of T = `steps`.
    pub fn new(batch: usize, steps: usize) -> Self {
        LbfgsTrainer {
            lbfgs: Lbfgs::new(1.0)
                .line_search(LineSearch::StrongWolfe)
                .max_iter(1)
                .max_eval(Self::MAX_EVALS),
            batch,
            steps,
            train: None,
        }
    }
}

impl Trainer for LbfgsTrainer {
    fn name(&self) -> &'static str {
        "lbfgs"
    }

    fn update(&mut self, net: &mut Net, rng: &mut StdRng) -> f64 {
        let train = self
            .train
            .get_or_insert_with(|| Batch::draw(self.steps, self.batch, rng));
        let loss = self.lbfgs.step(net, |net| {
            let tape = Tape::new();
            let loss = net.forward(&tape, train).loss;
            (loss.item(), loss.backward())
        });
        f64::from(loss)
    }

    fn products(&self) -> usize {
        0
    }

    fn evaluations(&self, _: usize) -> usize {
        self.lbfgs.counts().0
    }

    fn status(&self) -> String {
        let (evaluations, iterations) = self.lbfgs.counts();
        format!("{evaluations} evaluations in {iterations} iterations")
    }

    fn describe(&self) -> String {
        format!(
            "lbfgs: full batch of {} fixed sequences, one iteration per update, strong-Wolfe line \
             search of at most {} evaluations, lr {}",
            self.batch,
            Self::MAX_EVALS,
            self.lbfgs.lr()
        )
    }
}

/// A held-out measurement at a point of the training clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Seconds of training so far.
    pub seconds: f64,
    /// Updates so far.
    pub updates: usize,
    /// Held-out mean squared error.
    pub mse: f64,
    /// Held-out fraction within [`TOLERANCE`].
    pub accuracy: f64,
}

/// One trainer's run.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// The trainer's name.
    pub method: &'static str,
    /// Measurements, from before the first update to after the last.
    pub points: Vec<Point>,
    /// Gauss-Newton products used.
    pub products: usize,
    /// Gradients evaluated ([`Trainer::evaluations`]).
    pub evaluations: usize,
}

impl Curve {
    /// The last measurement.
    pub fn last(&self) -> &Point {
        self.points.last().expect("measured before training")
    }
}

/// How long to train and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Seconds of training.
    pub budget: f64,
    /// Stop after this many updates even if time remains.
    pub updates: Option<usize>,
    /// Seconds of training between measurements (and progress lines).
    pub every: f64,
}

/// Trains `net` with `trainer` until the clock runs out, measuring on `heldout`. Fails with
/// the update number when the training loss stops being finite.
pub fn run(
    trainer: &mut dyn Trainer,
    net: &mut Net,
    heldout: &Batch,
    clock: Clock,
    rng: &mut StdRng,
) -> Result<Curve, String> {
    let budget = Duration::try_from_secs_f64(clock.budget).unwrap_or(Duration::MAX);
    let every = Duration::try_from_secs_f64(clock.every).unwrap_or(Duration::MAX);
    let measure = |net: &Net, trained: Duration, updates| {
        let (mse, accuracy) = evaluate(net, heldout);
        Point {
            seconds: trained.as_secs_f64(),
            updates,
            mse,
            accuracy,
        }
    };
    let mut points = vec![measure(net, Duration::ZERO, 0)];
    let (mut trained, mut next, mut updates) = (Duration::ZERO, every, 0);
    while trained < budget && clock.updates.is_none_or(|n| updates < n) {
        let started = Instant::now();
        let loss = trainer.update(net, rng);
        trained += started.elapsed();
        updates += 1;
        if !loss.is_finite() {
            return Err(format!(
                "{} diverged at update {updates}: the training loss is {loss}",
                trainer.name()
            ));
        }
        let last = trained >= budget || clock.updates == Some(updates);
        if trained >= next || last {
            let point = measure(net, trained, updates);
            let line = format!(
                "{:<4} {:>6.1} s  update {updates:>6}  train mse {loss:.5}  held-out mse {:.5}  \
                 accuracy {:>5.1}%  {}",
                trainer.name(),
                point.seconds,
                point.mse,
                100.0 * point.accuracy,
                trainer.status()
            );
            println!("{}", line.trim_end());
            points.push(point);
            next = trained + every;
        }
    }
    Ok(Curve {
        method: trainer.name(),
        points,
        products: trainer.products(),
        evaluations: trainer.evaluations(updates),
    })
}
