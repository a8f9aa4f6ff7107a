//! A peephole LSTM cell, written outside the crates against rewind's public API: the gates i, f
//! and o also look at the cell state, as in Gers, Schraudolph and Schmidhuber (2002) and Graves
//! (2013). PyTorch has no such cell.
//!
//! ```text
//! [a_i a_f a_g a_o] = x W_ihᵀ + b + h W_hhᵀ          (gate blocks stacked by rows, H each)
//! i  = σ(a_i + w_ci ⊙ c)
//! f  = σ(a_f + w_cf ⊙ c)
//! g  = tanh(a_g)
//! c' = f ⊙ c + i ⊙ g
//! o  = σ(a_o + w_co ⊙ c')                               (o looks at the new cell state)
//! h' = o ⊙ tanh(c')
//! ```
//!
//! Shapes: x [B, in], h and c [B, H], W_ih [4H, in], W_hh [4H, H], b [4H], and the peephole
//! weights w_ci, w_cf, w_co [H] (diagonal, so each unit sees only its own cell). Every parameter
//! starts ~ U(-1/√H, 1/√H), as PyTorch starts an LSTM's.

use rewind::autograd::rand::Rng;
use rewind::nn::{Cell, Module, State, StatePart};
use rewind::prelude::*;

/// The peephole LSTM step.
#[derive(Debug)]
pub struct Peephole<F: Float = f32> {
    /// W_ih [4H, in], rows i, f, g, o.
    pub weight_ih: Param<F>,
    /// W_hh [4H, H], rows i, f, g, o.
    pub weight_hh: Param<F>,
    /// b [4H].
    pub bias: Param<F>,
    /// w_ci [H]: the input gate's view of c.
    pub w_ci: Param<F>,
    /// w_cf [H]: the forget gate's view of c.
    pub w_cf: Param<F>,
    /// w_co [H]: the output gate's view of c'.
    pub w_co: Param<F>,
}

impl<F: Float> Peephole<F> {
    /// A cell from `input_size` features to H = `hidden`, every parameter ~ U(-1/√H, 1/√H).
    pub fn new<R: Rng + ?Sized>(input_size: usize, hidden: usize, rng: &mut R) -> Self {
        let k = F::from_f64(1.0 / (hidden as f64).sqrt());
        let mut u =
            |name: &str, shape: &[usize]| Param::named(name, Tensor::uniform(shape, -k, k, rng));
        Peephole {
            weight_ih: u("weight_ih", &[4 * hidden, input_size]),
            weight_hh: u("weight_hh", &[4 * hidden, hidden]),
            bias: u("bias", &[4 * hidden]),
            w_ci: u("w_ci", &[hidden]),
            w_cf: u("w_cf", &[hidden]),
            w_co: u("w_co", &[hidden]),
        }
    }
}

impl<F: Float> Module<F> for Peephole<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let all = [
            &self.weight_ih,
            &self.weight_hh,
            &self.bias,
            &self.w_ci,
            &self.w_cf,
            &self.w_co,
        ];
        all.into_iter()
            .map(|p| (p.name().expect("named").to_string(), p))
            .collect()
    }
}

impl<F: Float> Cell<F> for Peephole<F> {
    type State<'t> = State<'t, F>;

    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    fn state_parts(&self) -> Vec<StatePart> {
        let h = self.weight_hh.shape()[1];
        vec![StatePart::new("h", &[h]), StatePart::new("c", &[h])]
    }

    fn name(&self) -> &'static str {
        "peephole"
    }

    /// x W_ihᵀ + b for every step at once: one GEMM onto the bias.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        tape.param(&self.bias)
            .addmm(x, tape.param(&self.weight_ih).t())
    }

    fn step<'t>(&self, tape: &'t Tape<F>, xp: Var<'t, F>, state: State<'t, F>) -> State<'t, F> {
        let h = self.weight_hh.shape()[1];
        let c = state.c.expect("peephole: the state carries c");
        let a = xp.addmm(state.h, tape.param(&self.weight_hh).t());
        let gate = |k: usize| a.narrow(1, k * h, h);
        let i = (gate(0) + c * tape.param(&self.w_ci)).sigmoid();
        let f = (gate(1) + c * tape.param(&self.w_cf)).sigmoid();
        let g = gate(2).tanh();
        let c_next = f * c + i * g;
        let o = (gate(3) + c_next * tape.param(&self.w_co)).sigmoid();
        State {
            h: o * c_next.tanh(),
            c: Some(c_next),
        }
    }
}
