//! The network: a one-layer tanh RNN over the (value, marker) inputs and a linear readout of its
//! last hidden state, trained on the mean squared error.

use rewind::autograd::rand::Rng;
use rewind::nn::{nested, spectral_radius, Linear, Module, Recurrent, RecurrentConfig, RnnCell};
use rewind::prelude::*;

use super::data::Batch;

/// `h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)`, `h_0 = 0`, and the prediction
/// `ŷ = h_T wᵀ + b` [B, 1].
#[derive(Debug)]
pub struct Net<F: Float = f32> {
    /// The recurrent layer, input 2 (value, marker), H hidden units.
    pub rnn: Recurrent<RnnCell<F>, F>,
    /// The readout [1, H].
    pub head: Linear<F>,
}

/// What a forward pass gives: the prediction, every hidden state, and the loss.
pub struct Forward<'t, F: Float> {
    /// ŷ [B, 1].
    pub prediction: Var<'t, F>,
    /// h_1 … h_T [T, B, H].
    pub hidden: Var<'t, F>,
    /// (1/B) Σ_b (ŷ_b - y_b)².
    pub loss: Var<'t, F>,
}

impl<F: Float> Net<F> {
    /// A network with `hidden` units initialised as PyTorch does, then W_hh scaled to spectral
    /// radius `radius` (the knob that decides how far back gradients reach at the start).
    pub fn new<R: Rng + ?Sized>(hidden: usize, radius: f64, rng: &mut R) -> Self {
        let net = Net {
            rnn: Recurrent::<RnnCell<F>, F>::init(RecurrentConfig::new(2, hidden), rng),
            head: Linear::init(hidden, 1, rng),
        };
        let w_hh = &net.rnn.cell(0, 0).params.weight_hh;
        let now = spectral_radius(&w_hh.value(), 400);
        let scale = F::from_f64(radius / now);
        w_hh.update(|w| w.data_mut().iter_mut().for_each(|v| *v *= scale));
        net
    }

    /// The forward pass over `batch` on `tape`.
    pub fn forward<'t>(&self, tape: &'t Tape<F>, batch: &Batch<F>) -> Forward<'t, F> {
        let out = self
            .rnn
            .forward(tape, tape.constant(batch.x.clone()), None, None);
        let last = out.state.h.reshape(&[batch.sequences(), self.hidden()]);
        let prediction = self.head.forward(tape, last);
        let loss = (prediction - tape.constant(batch.y.clone()))
            .powf(F::from_f64(2.0))
            .mean();
        Forward {
            prediction,
            hidden: out.output,
            loss,
        }
    }

    /// H.
    pub fn hidden(&self) -> usize {
        self.rnn.config().hidden_size
    }

    /// The loss on `batch`, forward only.
    pub fn loss(&self, batch: &Batch<F>) -> f64 {
        let tape = Tape::new();
        self.forward(&tape, batch).loss.item().to_f64()
    }
}

impl<F: Float> Module<F> for Net<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut p = nested("rnn", self.rnn.params());
        p.extend(nested("head", self.head.params()));
        p
    }
}
