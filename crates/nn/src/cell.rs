//! The recurrent cells: one time step of a vanilla RNN, an LSTM and a GRU, each written in the
//! equations of PyTorch (gate order, names and init) with the engine's ops: `addmm` for the
//! recurrent product, and for the LSTM and GRU their element-wise half as one fused op
//! (`lstm_cell`, `gru_cell`), which equals the composed equations and is several times cheaper.
//!
//! A cell's input projection ([`Cell::project`]: `x W_ihᵀ + b_ih`, plus `b_hh` where the cell adds
//! it straight to the gates) is computed by [`Cell::step`] for one step, or by a stack for all
//! time steps in one matmul before its loop, which then calls [`Cell::step_projected`]; the gate
//! equations live in one place, [`Cell::recur`]. A cell without biases (PyTorch's `bias=False`)
//! has no `b_ih`, `b_hh` parameters at all, and its equations drop them.

use rand::Rng;
use rewind_autograd::{Float, Param, Tape, Tensor, Var};

use crate::module::Module;

/// The recurrent state carried from step to step: h, and c for an LSTM.
#[derive(Clone, Copy, Debug)]
pub struct State<'t, F: Float = f32> {
    /// The hidden state [B, H].
    pub h: Var<'t, F>,
    /// The cell state [B, H] (LSTM only).
    pub c: Option<Var<'t, F>>,
}

/// The activation of a vanilla RNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    /// tanh (PyTorch's default).
    #[default]
    Tanh,
    /// max(x, 0).
    Relu,
}

/// One time step of a recurrent network.
pub trait Cell<F: Float>: Module<F> + Sized {
    /// How many gate blocks are stacked in the weights: 1 (RNN), 4 (LSTM), 3 (GRU).
    const GATES: usize;
    /// True when the state has a cell state c (LSTM).
    const HAS_CELL_STATE: bool;
    /// A short name for messages (`rnn`, `lstm`, `gru`).
    const NAME: &'static str;

    /// The cell made of `params` (W_ih [G·H, in], W_hh [G·H, H], biases [G·H] or none);
    /// `nonlinearity` is read by the vanilla RNN only.
    fn from_params(params: CellParams<F>, nonlinearity: Nonlinearity) -> Self;

    /// A cell with every weight and bias ~ U(-1/√H, 1/√H), as PyTorch initialises them.
    fn init<R: Rng + ?Sized>(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        rng: &mut R,
    ) -> Self {
        let params = CellParams::init(Self::GATES, input_size, hidden_size, true, rng);
        Self::from_params(params, nonlinearity)
    }

    /// The same cell without `b_ih` and `b_hh` (PyTorch's `bias=False`): its gates are
    /// `x W_ihᵀ + h W_hhᵀ` (for the GRU's n, `x W_inᵀ + r ⊙ (h W_hnᵀ)`).
    fn without_bias(mut self) -> Self {
        let params = self.cell_params_mut();
        params.bias_ih = None;
        params.bias_hh = None;
        self
    }

    /// What besides the weights defines a step (the RNN's nonlinearity), as a plain value, so a
    /// step can be re-run from [`recur`](Cell::recur) alone (checkpointed segments do that).
    type Kind: Copy + 'static;

    /// This cell's kind.
    fn kind(&self) -> Self::Kind;
    /// The cell's parameters.
    fn cell_params(&self) -> &CellParams<F>;
    /// The cell's parameters, mutably.
    fn cell_params_mut(&mut self) -> &mut CellParams<F>;

    /// W_ih [G·H, in].
    fn weight_ih(&self) -> &Param<F> {
        &self.cell_params().weight_ih
    }
    /// b_ih [G·H], if the cell has biases.
    fn bias_ih(&self) -> Option<&Param<F>> {
        self.cell_params().bias_ih.as_ref()
    }
    /// W_hh [G·H, H].
    fn weight_hh(&self) -> &Param<F> {
        &self.cell_params().weight_hh
    }
    /// b_hh [G·H], if the cell has biases.
    fn bias_hh(&self) -> Option<&Param<F>> {
        self.cell_params().bias_hh.as_ref()
    }

    /// The input projection of `x` [N, in] (one step's rows, or every step's), one GEMM onto the
    /// bias: `x W_ihᵀ + b_ih + b_hh` for cells that add b_hh straight to the gates (RNN, LSTM: the
    /// default), so that a stack adds it once for all steps instead of once per step; a cell that
    /// uses b_hh elsewhere (GRU) overrides it. Without biases it is `x W_ihᵀ`.
    fn project<'t>(
        x: Var<'t, F>,
        w_ih: Var<'t, F>,
        b_ih: Option<Var<'t, F>>,
        b_hh: Option<Var<'t, F>>,
    ) -> Var<'t, F> {
        let bias = match (b_ih, b_hh) {
            (Some(b_ih), Some(b_hh)) => Some(b_ih + b_hh),
            (b_ih, b_hh) => b_ih.or(b_hh),
        };
        affine(x, w_ih, bias)
    }

    /// The cell's equations: one step from the input projection `xp` [B, G·H] made by
    /// [`project`](Cell::project), with W_hh and b_hh (if any) given as values on the tape.
    fn recur<'t>(
        kind: Self::Kind,
        w_hh: Var<'t, F>,
        b_hh: Option<Var<'t, F>>,
        xp: Var<'t, F>,
        state: State<'t, F>,
    ) -> State<'t, F>;

    /// One step given the input projection `xp` [B, G·H] made by [`project`](Cell::project).
    fn step_projected<'t>(
        &self,
        tape: &'t Tape<F>,
        xp: Var<'t, F>,
        state: State<'t, F>,
    ) -> State<'t, F> {
        let w_hh = tape.param(self.weight_hh());
        let b_hh = self.bias_hh().map(|b| tape.param(b));
        Self::recur(self.kind(), w_hh, b_hh, xp, state)
    }

    /// The hidden size H.
    fn hidden_size(&self) -> usize {
        self.weight_ih().shape()[0] / Self::GATES
    }

    /// One step from the input x [B, in].
    #[track_caller]
    fn step<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>, state: State<'t, F>) -> State<'t, F> {
        let w_ih = tape.param(self.weight_ih());
        let [b_ih, b_hh] = [self.bias_ih(), self.bias_hh()].map(|b| b.map(|b| tape.param(b)));
        let xp = Self::project(x, w_ih, b_ih, b_hh);
        self.step_projected(tape, xp, state)
    }
}

/// `x Wᵀ + b` as one GEMM onto the bias, or `x Wᵀ` without one.
fn affine<'t, F: Float>(x: Var<'t, F>, w: Var<'t, F>, b: Option<Var<'t, F>>) -> Var<'t, F> {
    match b {
        Some(b) => b.addmm(x, w.t()),
        None => x.matmul(w.t()),
    }
}

/// A cell's parameters, named as PyTorch names a cell's: two weights, and two biases unless the
/// cell has none (`bias=False`).
#[derive(Debug)]
pub struct CellParams<F: Float> {
    /// [G·H, in]
    pub weight_ih: Param<F>,
    /// [G·H, H]
    pub weight_hh: Param<F>,
    /// [G·H]
    pub bias_ih: Option<Param<F>>,
    /// [G·H]
    pub bias_hh: Option<Param<F>>,
}

impl<F: Float> CellParams<F> {
    /// Drawn ~ U(-1/√H, 1/√H) in PyTorch's order (W_ih, W_hh, b_ih, b_hh), biases only if `bias`.
    pub(crate) fn init<R: Rng + ?Sized>(
        gates: usize,
        input: usize,
        hidden: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let k = F::from_f64(1.0 / (hidden as f64).sqrt());
        let mut u =
            |name: &str, shape: &[usize]| Param::named(name, Tensor::uniform(shape, -k, k, rng));
        CellParams {
            weight_ih: u("weight_ih", &[gates * hidden, input]),
            weight_hh: u("weight_hh", &[gates * hidden, hidden]),
            bias_ih: bias.then(|| u("bias_ih", &[gates * hidden])),
            bias_hh: bias.then(|| u("bias_hh", &[gates * hidden])),
        }
    }

    /// Every parameter zero: the shapes of [`init`](CellParams::init), to be loaded.
    pub(crate) fn zeros(gates: usize, input: usize, hidden: usize, bias: bool) -> Self {
        let z = |name: &str, shape: &[usize]| Param::named(name, Tensor::zeros(shape));
        CellParams {
            weight_ih: z("weight_ih", &[gates * hidden, input]),
            weight_hh: z("weight_hh", &[gates * hidden, hidden]),
            bias_ih: bias.then(|| z("bias_ih", &[gates * hidden])),
            bias_hh: bias.then(|| z("bias_hh", &[gates * hidden])),
        }
    }

    fn list(&self) -> Vec<(String, &Param<F>)> {
        let mut out = vec![
            ("weight_ih".into(), &self.weight_ih),
            ("weight_hh".into(), &self.weight_hh),
        ];
        out.extend(self.bias_ih.iter().map(|b| ("bias_ih".into(), b)));
        out.extend(self.bias_hh.iter().map(|b| ("bias_hh".into(), b)));
        out
    }
}

macro_rules! cell_module {
    ($cell:ident) => {
        impl<F: Float> Module<F> for $cell<F> {
            fn params(&self) -> Vec<(String, &Param<F>)> {
                self.params.list()
            }
        }
    };
}

/// A vanilla RNN step (`torch.nn.RNNCell`): `h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`, or relu.
#[derive(Debug)]
pub struct RnnCell<F: Float = f32> {
    /// The weights and biases.
    pub params: CellParams<F>,
    /// tanh or relu.
    pub nonlinearity: Nonlinearity,
}

impl<F: Float> Cell<F> for RnnCell<F> {
    const GATES: usize = 1;
    const HAS_CELL_STATE: bool = false;
    const NAME: &'static str = "rnn";
    type Kind = Nonlinearity;

    fn from_params(params: CellParams<F>, nonlinearity: Nonlinearity) -> Self {
        RnnCell {
            params,
            nonlinearity,
        }
    }

    fn cell_params(&self) -> &CellParams<F> {
        &self.params
    }

    fn cell_params_mut(&mut self) -> &mut CellParams<F> {
        &mut self.params
    }

    fn kind(&self) -> Nonlinearity {
        self.nonlinearity
    }

    fn recur<'t>(
        kind: Nonlinearity,
        w_hh: Var<'t, F>,
        _: Option<Var<'t, F>>,
        xp: Var<'t, F>,
        state: State<'t, F>,
    ) -> State<'t, F> {
        let pre = xp.addmm(state.h, w_hh.t());
        let h = match kind {
            Nonlinearity::Tanh => pre.tanh(),
            Nonlinearity::Relu => pre.relu(),
        };
        State { h, c: None }
    }
}

cell_module!(RnnCell);

/// An LSTM step (`torch.nn.LSTMCell`), gates in the order i, f, g, o:
///
/// ```text
/// [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
/// i, f, o = σ(·);  g = tanh(·)
/// c' = f ⊙ c + i ⊙ g
/// h' = o ⊙ tanh(c')
/// ```
#[derive(Debug)]
pub struct LstmCell<F: Float = f32> {
    /// The weights and biases, gate blocks stacked by rows as i, f, g, o.
    pub params: CellParams<F>,
}

impl<F: Float> Cell<F> for LstmCell<F> {
    const GATES: usize = 4;
    const HAS_CELL_STATE: bool = true;
    const NAME: &'static str = "lstm";
    type Kind = ();

    fn from_params(params: CellParams<F>, _: Nonlinearity) -> Self {
        LstmCell { params }
    }

    fn cell_params(&self) -> &CellParams<F> {
        &self.params
    }

    fn cell_params_mut(&mut self) -> &mut CellParams<F> {
        &mut self.params
    }

    fn kind(&self) {}

    fn recur<'t>(
        _: (),
        w_hh: Var<'t, F>,
        _: Option<Var<'t, F>>,
        xp: Var<'t, F>,
        state: State<'t, F>,
    ) -> State<'t, F> {
        let gates = xp.addmm(state.h, w_hh.t());
        let (h, c) = gates.lstm_cell(state.c.expect("an LSTM state carries c"));
        State { h, c: Some(c) }
    }
}

cell_module!(LstmCell);

/// A GRU step (`torch.nn.GRUCell`), gates in the order r, z, n:
///
/// ```text
/// r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)
/// z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
/// n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))      (b_hn inside the product with r)
/// h' = (1 - z) ⊙ n + z ⊙ h
/// ```
#[derive(Debug)]
pub struct GruCell<F: Float = f32> {
    /// The weights and biases, gate blocks stacked by rows as r, z, n.
    pub params: CellParams<F>,
}

impl<F: Float> Cell<F> for GruCell<F> {
    const GATES: usize = 3;
    const HAS_CELL_STATE: bool = false;
    const NAME: &'static str = "gru";
    type Kind = ();

    fn from_params(params: CellParams<F>, _: Nonlinearity) -> Self {
        GruCell { params }
    }

    fn cell_params(&self) -> &CellParams<F> {
        &self.params
    }

    fn cell_params_mut(&mut self) -> &mut CellParams<F> {
        &mut self.params
    }

    fn kind(&self) {}

    fn project<'t>(
        x: Var<'t, F>,
        w_ih: Var<'t, F>,
        b_ih: Option<Var<'t, F>>,
        _: Option<Var<'t, F>>,
    ) -> Var<'t, F> {
        affine(x, w_ih, b_ih)
    }

    fn recur<'t>(
        _: (),
        w_hh: Var<'t, F>,
        b_hh: Option<Var<'t, F>>,
        xp: Var<'t, F>,
        state: State<'t, F>,
    ) -> State<'t, F> {
        // b_hn stays inside r ⊙ (h W_hnᵀ + b_hn), so b_hh goes with the hidden projection.
        let hp = affine(state.h, w_hh, b_hh);
        State {
            h: xp.gru_cell(hp, state.h),
            c: None,
        }
    }
}

cell_module!(GruCell);
