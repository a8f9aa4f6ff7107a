//! The model (one-hot characters, one recurrent layer, a linear readout), the three ways of
//! computing the gradient of a window's loss, and the gradient's bias and variance against full.

use std::fmt;

use rewind::autograd::rand::Rng;
use rewind::nn::{
    nested, Bptt, Carry, Chunk, ChunkLoss, Linear, Module, Recurrent, RecurrentConfig, StackState,
    StandardCell, Strategy, Stream, Update,
};
use rewind::prelude::*;

/// A character language model: x_t one-hot over the vocabulary, h_t = cell(x_t, h_{t-1}),
/// logits_t = W h_t + b.
pub struct Net<C, F: Float> {
    /// The recurrent layer.
    pub rnn: Recurrent<C, F>,
    /// The readout.
    pub head: Linear<F>,
    vocab: usize,
}

impl<C: StandardCell<F>, F: Float> Net<C, F> {
    /// A net over `vocab` symbols with `hidden` units, initialised as PyTorch does.
    pub fn new<R: Rng + ?Sized>(vocab: usize, hidden: usize, rng: &mut R) -> Self {
        Net {
            rnn: Recurrent::init(RecurrentConfig::new(vocab, hidden), rng),
            head: Linear::init(hidden, vocab, rng),
            vocab,
        }
    }

    /// The cross-entropy of `chunk` (summed over its counted targets, with their number) and the
    /// final state, from `state`, with the gradient into the state entering step t multiplied by
    /// `xi[t]`.
    pub fn loss<'t>(
        &self,
        tape: &'t Tape<F>,
        chunk: &Chunk,
        state: StackState<'t, F>,
        xi: Option<&[F]>,
    ) -> (ChunkLoss<'t, F>, StackState<'t, F>) {
        let mut x = vec![F::ZERO; chunk.inputs.len() * self.vocab];
        for (i, &id) in chunk.inputs.iter().enumerate() {
            x[i * self.vocab + id] = F::ONE;
        }
        let x = Tensor::from_vec(x, &[chunk.steps, chunk.lanes, self.vocab])
            .expect("one-hot inputs fill their shape");
        let run = rewind::nn::Run {
            grad_scale: xi,
            ..Default::default()
        };
        let out = self
            .rnn
            .forward_with(tape, tape.constant(x), Some(state), &run);
        let hidden = self.rnn.config().hidden_size;
        let h = out.output.reshape(&[chunk.steps * chunk.lanes, hidden]);
        (chunk.cross_entropy(self.head.forward(tape, h)), out.state)
    }
}

impl<C: StandardCell<F>, F: Float> Module<F> for Net<C, F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut all = nested("rnn", self.rnn.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// How the gradient of one window's loss is computed. Every method reads the same windows and
/// makes one update per window; they differ only in which paths back through time count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Every path inside the window (D2L's "full computation" over a minibatch's sequence).
    Full,
    /// The window cut every `k` steps: no gradient flows into the state entering steps
    /// k, 2k, ….
    Truncated {
        /// Steps between cuts.
        k: usize,
    },
    /// Tallec and Ollivier: the gradient into each state is multiplied by ξ_t, 0 with
    /// probability 1 - π and 1/π with probability π (the driver's `Strategy::Randomized`).
    Randomized {
        /// The probability of keeping each step's gradient.
        pi: f64,
    },
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Full => write!(f, "full"),
            Method::Truncated { k } => write!(f, "truncated k={k}"),
            Method::Randomized { pi } => write!(f, "randomized pi={pi}"),
        }
    }
}

impl Method {
    /// The driver over windows of `window` steps, carrying the state across windows detached.
    pub fn driver<C: StandardCell<F>, F: Float>(
        &self,
        net: &Net<C, F>,
        window: usize,
        lanes: usize,
        seed: u64,
    ) -> Bptt<F> {
        let strategy = match *self {
            Method::Full | Method::Truncated { .. } => Strategy::Truncated { k: window },
            Method::Randomized { pi } => Strategy::Randomized { k: window, pi },
        };
        Bptt::new(strategy, Carry::zeros(&net.rnn, lanes), seed)
    }

    /// One update on the next window of `stream`: its gradients and mean loss, or `None` at the
    /// end of the pass. `peak_bytes` rises to the tape's peak after the forward pass.
    pub fn update<C: StandardCell<F>, F: Float>(
        &self,
        net: &Net<C, F>,
        bptt: &mut Bptt<F>,
        stream: &mut Stream,
        peak_bytes: &mut usize,
    ) -> Option<Update<F>> {
        let method = *self;
        bptt.step(stream, |tape, chunk, state, run| {
            let cuts: Option<Vec<F>> = match method {
                Method::Truncated { k } => Some(
                    (0..chunk.steps)
                        .map(|t| if t % k == 0 { F::ZERO } else { F::ONE })
                        .collect(),
                ),
                _ => None,
            };
            let out = net.loss(tape, chunk, state, cuts.as_deref().or(run.grad_scale));
            *peak_bytes = (*peak_bytes).max(tape.stats().peak_bytes);
            out
        })
    }
}

/// Perplexity of `net` on `stream` (one pass from a zero state, carried across windows).
pub fn perplexity<C: StandardCell<F>, F: Float>(
    net: &Net<C, F>,
    stream: &mut Stream,
    window: usize,
) -> f64 {
    stream.rewind();
    let mut carry = Carry::zeros(&net.rnn, stream.lanes());
    let (mut total, mut count) = (0.0, 0usize);
    while let Some(chunk) = stream.take(window) {
        let tape = Tape::new();
        let (loss, state) = net.loss(&tape, &chunk, carry.on(&tape), None);
        total += loss.sum().item().to_f64();
        count += loss.terms();
        carry = Carry::of(state);
    }
    (total / count as f64).exp()
}

/// How far a method's gradient estimates lie from the full gradient g, over draws at fixed
/// weights on one window: mean squared distance E‖ĝ - g‖² = bias² + variance, with
/// bias² = ‖E ĝ - g‖² and variance = E‖ĝ - E ĝ‖² (the mean over the draws standing for E).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// ‖g‖², the scale the others are read against.
    pub full_sq: f64,
    /// Mean of ‖ĝ - g‖².
    pub msd: f64,
    /// ‖mean ĝ - g‖².
    pub bias_sq: f64,
    /// Mean of ‖ĝ - mean ĝ‖².
    pub variance: f64,
}

/// Every gradient of `net` as one f64 vector, in the module's parameter order.
pub fn flatten<F: Float>(net: &dyn Module<F>, grads: &Grads<F>) -> Vec<f64> {
    let mut flat = Vec::new();
    for (_, p) in net.params() {
        match grads.get(p) {
            Some(g) => flat.extend(g.data().iter().map(|v| v.to_f64())),
            None => flat.extend(std::iter::repeat_n(0.0, p.value().numel())),
        }
    }
    flat
}

/// The gradient of the window at stream step `position` (from a zero state) by `method`, for
/// the random draw `seed`.
pub fn estimate<C: StandardCell<F>, F: Float>(
    net: &Net<C, F>,
    method: Method,
    stream: &mut Stream,
    position: usize,
    window: usize,
    seed: u64,
) -> Vec<f64> {
    stream.seek(position);
    let mut bptt = method.driver(net, window, stream.lanes(), seed);
    let update = method
        .update(net, &mut bptt, stream, &mut 0)
        .expect("the window lies inside the stream");
    flatten(net, &update.grads)
}

/// `method`'s [`Spread`] against the full gradient over `draws` draws (seeds 0..draws) of the
/// window at `position`.
pub fn spread<C: StandardCell<F>, F: Float>(
    net: &Net<C, F>,
    method: Method,
    stream: &mut Stream,
    position: usize,
    window: usize,
    draws: usize,
) -> Spread {
    let full = estimate(net, Method::Full, stream, position, window, 0);
    // Deviations from g, so that identical estimates give exactly zero bias and variance.
    let deviations: Vec<Vec<f64>> = (0..draws as u64)
        .map(|seed| {
            let e = estimate(net, method, stream, position, window, seed);
            e.iter().zip(&full).map(|(x, g)| x - g).collect()
        })
        .collect();
    let n = deviations.len() as f64;
    let mut mean = vec![0.0; full.len()];
    for d in &deviations {
        for (m, v) in mean.iter_mut().zip(d) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let norm_sq = |a: &[f64]| a.iter().map(|x| x * x).sum::<f64>();
    Spread {
        full_sq: norm_sq(&full),
        msd: deviations.iter().map(|d| norm_sq(d)).sum::<f64>() / n,
        bias_sq: norm_sq(&mean),
        variance: deviations
            .iter()
            .map(|d| {
                d.iter()
                    .zip(&mean)
                    .map(|(x, m)| (x - m) * (x - m))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n,
    }
}
