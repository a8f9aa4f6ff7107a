//! The three cells PyTorch ships: a vanilla RNN, an LSTM and a GRU step, each written in
//! PyTorch's equations (gate order, names and init) with the engine's ops, as [`Cell`]s like any
//! other: `addmm` for the recurrent product, and for the LSTM and GRU their element-wise half as
//! one fused op (`lstm_cell`, `gru_cell`), which equals the composed equations and is several
//! times cheaper.
//!
//! Their input projection ([`Cell::project`]: `x W_ihᵀ + b_ih`, plus `b_hh` where the cell adds
//! it straight to the gates) is one GEMM over every step of a sequence. A cell without biases
//! (PyTorch's `bias=False`) has no `b_ih`, `b_hh` parameters at all, and its equations drop them.
//! An LSTM cell may also project its h to fewer features (PyTorch's `proj_size`): one more
//! matmul after the fused op.

use rand::Rng;
use rewind_autograd::{Float, Param, Tape, Tensor, Var};

use crate::cell::{Cell, State, StatePart};
use crate::module::Module;

/// The activation of a vanilla RNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    /// tanh (PyTorch's default).
    #[default]
    Tanh,
    /// max(x, 0).
    Relu,
}

/// A cell with PyTorch's four parameters (`torch.nn.RNNCellBase`): W_ih [G·H, in], W_hh [G·H, H]
/// and, unless it has none, b_ih and b_hh [G·H], G gate blocks stacked by rows. These are the
/// cells a stack can build from a configuration alone ([`Recurrent::new`](crate::Recurrent::new)).
/// Their state is [`State`]: h, and c for the LSTM.
pub trait StandardCell<F: Float>: for<'t> Cell<F, State<'t> = State<'t, F>> + Sized {
    /// How many gate blocks are stacked in the weights: 1 (RNN), 4 (LSTM), 3 (GRU).
    const GATES: usize;

    /// The block of the forget gate, for a cell that has one (the LSTM's f, block 1).
    const FORGET_GATE: Option<usize> = None;

    /// Whether the cell can project its h with a `weight_hr` (PyTorch's `proj_size`: the LSTM).
    const PROJECTS: bool = false;

    /// The cell made of `params`; `nonlinearity` is read by the vanilla RNN only.
    fn from_params(params: CellParams<F>, nonlinearity: Nonlinearity) -> Self;

    /// The cell's parameters.
    fn cell_params(&self) -> &CellParams<F>;

    /// The cell's parameters, mutably.
    fn cell_params_mut(&mut self) -> &mut CellParams<F>;

    /// A cell with every weight and bias ~ U(-1/√H, 1/√H), as PyTorch initialises them.
    fn init<R: Rng + ?Sized>(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        rng: &mut R,
    ) -> Self {
        let params = CellParams::init(Self::GATES, input_size, hidden_size, None, true, rng);
        Self::from_params(params, nonlinearity)
    }

    /// The same cell with its forget gate's bias set to `value`: b_ih's forget block `value` and
    /// b_hh's 0, so the gate starts at σ(x W_ifᵀ + h W_hfᵀ + value). A forget bias of 1 keeps
    /// the cell state from decaying early in training (Gers et al. 2000; Jozefowicz et al.
    /// 2015). PyTorch has no such option (its issue 20102); this is rewind's addition.
    ///
    /// Panics unless the cell has a forget gate (the LSTM) and biases, and `value` is finite.
    #[track_caller]
    fn with_forget_bias(mut self, value: F) -> Self {
        let name = self.name();
        let Some(block) = Self::FORGET_GATE else {
            panic!("{name}: forget_bias needs a cell with a forget gate (an LSTM)");
        };
        assert!(
            value.is_finite(),
            "{name}: forget_bias must be finite, got {value:?}"
        );
        let h = self.hidden_size();
        let params = self.cell_params_mut();
        let (Some(b_ih), Some(b_hh)) = (&params.bias_ih, &params.bias_hh) else {
            panic!("{name}: forget_bias needs the biases b_ih and b_hh, and this cell has none");
        };
        b_ih.update(|b| b.data_mut()[block * h..(block + 1) * h].fill(value));
        b_hh.update(|b| b.data_mut()[block * h..(block + 1) * h].fill(F::ZERO));
        self
    }

    /// The same cell without `b_ih` and `b_hh` (PyTorch's `bias=False`): its gates are
    /// `x W_ihᵀ + h W_hhᵀ` (for the GRU's n, `x W_inᵀ + r ⊙ (h W_hnᵀ)`).
    fn without_bias(mut self) -> Self {
        let params = self.cell_params_mut();
        params.bias_ih = None;
        params.bias_hh = None;
        self
    }

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

    /// W_hr [P, H], if the cell projects its h (an LSTM with `proj_size`).
    fn weight_hr(&self) -> Option<&Param<F>> {
        self.cell_params().weight_hr.as_ref()
    }
}

/// A cell's parameters, named as PyTorch names those of one layer and direction of a stack: two
/// weights, two biases unless the cell has none (`bias=False`), and the projection of h if it
/// has one (`proj_size`, an LSTM's). h has P features with a projection, H without.
#[derive(Debug)]
pub struct CellParams<F: Float> {
    /// [G·H, in]
    pub weight_ih: Param<F>,
    /// [G·H, features of h]: [G·H, H], or [G·H, P] with a projection
    pub weight_hh: Param<F>,
    /// [G·H]
    pub bias_ih: Option<Param<F>>,
    /// [G·H]
    pub bias_hh: Option<Param<F>>,
    /// [P, H]: h = (o ⊙ tanh(c)) W_hrᵀ (LSTM only)
    pub weight_hr: Option<Param<F>>,
}

impl<F: Float> CellParams<F> {
    /// Drawn ~ U(-1/√H, 1/√H) in PyTorch's order (W_ih, W_hh, b_ih, b_hh, W_hr), biases only if
    /// `bias`, W_hr [P, H] only with a projection to `proj` = Some(P) features.
    pub(crate) fn init<R: Rng + ?Sized>(
        gates: usize,
        input: usize,
        hidden: usize,
        proj: Option<usize>,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        // Every tensor is empty when H = 0; PyTorch's bound is then 0.
        let k = if hidden == 0 {
            F::ZERO
        } else {
            F::from_f64(1.0 / (hidden as f64).sqrt())
        };
        let mut u =
            |name: &str, shape: &[usize]| Param::named(name, Tensor::uniform(shape, -k, k, rng));
        let h = proj.unwrap_or(hidden);
        CellParams {
            weight_ih: u("weight_ih", &[gates * hidden, input]),
            weight_hh: u("weight_hh", &[gates * hidden, h]),
            bias_ih: bias.then(|| u("bias_ih", &[gates * hidden])),
            bias_hh: bias.then(|| u("bias_hh", &[gates * hidden])),
            weight_hr: proj.map(|p| u("weight_hr", &[p, hidden])),
        }
    }

    /// Every parameter zero: the shapes of [`init`](CellParams::init), to be loaded.
    pub(crate) fn zeros(
        gates: usize,
        input: usize,
        hidden: usize,
        proj: Option<usize>,
        bias: bool,
    ) -> Self {
        let z = |name: &str, shape: &[usize]| Param::named(name, Tensor::zeros(shape));
        let h = proj.unwrap_or(hidden);
        CellParams {
            weight_ih: z("weight_ih", &[gates * hidden, input]),
            weight_hh: z("weight_hh", &[gates * hidden, h]),
            bias_ih: bias.then(|| z("bias_ih", &[gates * hidden])),
            bias_hh: bias.then(|| z("bias_hh", &[gates * hidden])),
            weight_hr: proj.map(|p| z("weight_hr", &[p, hidden])),
        }
    }

    fn list(&self) -> Vec<(String, &Param<F>)> {
        let mut out = vec![
            ("weight_ih".into(), &self.weight_ih),
            ("weight_hh".into(), &self.weight_hh),
        ];
        out.extend(self.bias_ih.iter().map(|b| ("bias_ih".into(), b)));
        out.extend(self.bias_hh.iter().map(|b| ("bias_hh".into(), b)));
        out.extend(self.weight_hr.iter().map(|w| ("weight_hr".into(), w)));
        out
    }

    /// The input size.
    fn input_size(&self) -> usize {
        self.weight_ih.shape()[1]
    }

    /// H, the features of each gate block (and of c).
    fn hidden_size(&self) -> usize {
        match &self.weight_hr {
            Some(w) => w.shape()[1],
            None => self.weight_hh.shape()[1],
        }
    }

    /// The features of h: P with a projection, H without.
    fn h_size(&self) -> usize {
        self.weight_hh.shape()[1]
    }

    /// `x W_ihᵀ + b_ih`, with `b_hh` too when `with_b_hh` (cells that add it straight to the
    /// gates, so that a stack adds it once for all steps instead of once per step); `x W_ihᵀ`
    /// without biases. One GEMM onto the bias.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>, with_b_hh: bool) -> Var<'t, F> {
        let param = |p: &Option<Param<F>>| p.as_ref().map(|p| tape.param(p));
        let bias = match (
            param(&self.bias_ih),
            param(&self.bias_hh).filter(|_| with_b_hh),
        ) {
            (Some(b_ih), Some(b_hh)) => Some(b_ih + b_hh),
            (b_ih, b_hh) => b_ih.or(b_hh),
        };
        affine(x, tape.param(&self.weight_ih), bias)
    }
}

/// Checks a projection's size as `torch.nn.LSTM` does: 0 < P < H.
#[track_caller]
pub(crate) fn check_proj_size(who: &str, proj: usize, hidden: usize) {
    assert!(
        proj > 0 && proj < hidden,
        "{who}: proj_size must be in 1..{hidden} (smaller than hidden_size, as PyTorch requires), \
         got {proj}"
    );
}

/// `x Wᵀ + b` as one GEMM onto the bias, or `x Wᵀ` without one.
fn affine<'t, F: Float>(x: Var<'t, F>, w: Var<'t, F>, b: Option<Var<'t, F>>) -> Var<'t, F> {
    match b {
        Some(b) => b.addmm(x, w.t()),
        None => x.matmul(w.t()),
    }
}

macro_rules! standard_cell {
    ($cell:ident, $gates:expr) => {
        standard_cell!($cell, $gates, None, false);
    };
    ($cell:ident, $gates:expr, $forget:expr, $projects:expr) => {
        impl<F: Float> Module<F> for $cell<F> {
            fn params(&self) -> Vec<(String, &Param<F>)> {
                self.params.list()
            }
        }

        impl<F: Float> StandardCell<F> for $cell<F> {
            const GATES: usize = $gates;
            const FORGET_GATE: Option<usize> = $forget;
            const PROJECTS: bool = $projects;

            #[track_caller]
            fn from_params(params: CellParams<F>, nonlinearity: Nonlinearity) -> Self {
                assert!(
                    $projects || params.weight_hr.is_none(),
                    "{}: only an LSTM projects its h; these parameters have a weight_hr",
                    stringify!($cell)
                );
                $cell::assemble(params, nonlinearity)
            }

            fn cell_params(&self) -> &CellParams<F> {
                &self.params
            }

            fn cell_params_mut(&mut self) -> &mut CellParams<F> {
                &mut self.params
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

impl<F: Float> RnnCell<F> {
    fn assemble(params: CellParams<F>, nonlinearity: Nonlinearity) -> Self {
        RnnCell {
            params,
            nonlinearity,
        }
    }

    /// The same cell with relu (or tanh) as its nonlinearity.
    pub fn with_nonlinearity(mut self, nonlinearity: Nonlinearity) -> Self {
        self.nonlinearity = nonlinearity;
        self
    }
}

impl RnnCell {
    /// An f32 tanh cell from `input` to `hidden` features, every weight and bias
    /// ~ U(-1/√H, 1/√H), as `torch.nn.RNNCell(input, hidden)`; `.with_nonlinearity(Relu)` for
    /// relu. Another precision is `RnnCell::<f64>::init(input, hidden, nonlinearity, &mut rng)`.
    pub fn new<R: Rng + ?Sized>(input: usize, hidden: usize, rng: &mut R) -> Self {
        Self::init(input, hidden, Nonlinearity::Tanh, rng)
    }
}

impl<F: Float> Cell<F> for RnnCell<F> {
    type State<'t> = State<'t, F>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }

    fn state_parts(&self) -> Vec<StatePart> {
        vec![StatePart::new("h", &[self.params.hidden_size()])]
    }

    fn name(&self) -> &'static str {
        "rnn"
    }

    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        self.params.project(tape, x, true)
    }

    fn step<'t>(&self, tape: &'t Tape<F>, xp: Var<'t, F>, state: State<'t, F>) -> State<'t, F> {
        let pre = xp.addmm(state.h, tape.param(&self.params.weight_hh).t());
        let h = match self.nonlinearity {
            Nonlinearity::Tanh => pre.tanh(),
            Nonlinearity::Relu => pre.relu(),
        };
        State { h, c: None }
    }
}

standard_cell!(RnnCell, 1);

/// An LSTM step (`torch.nn.LSTMCell`), gates in the order i, f, g, o:
///
/// ```text
/// [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
/// i, f, o = σ(·);  g = tanh(·)
/// c' = f ⊙ c + i ⊙ g
/// h' = o ⊙ tanh(c')
/// ```
///
/// With a projection (the cell of `torch.nn.LSTM(..., proj_size=P)`; built by
/// [`init_projected`](LstmCell::init_projected), or [`new_projected`](LstmCell::new_projected)
/// in f32), `h' = (o ⊙ tanh(c')) W_hrᵀ`: h has P features
/// and c keeps H, W_hh is [4H, P] and W_hr [P, H].
#[derive(Debug)]
pub struct LstmCell<F: Float = f32> {
    /// The weights and biases, gate blocks stacked by rows as i, f, g, o.
    pub params: CellParams<F>,
}

impl<F: Float> LstmCell<F> {
    fn assemble(params: CellParams<F>, _: Nonlinearity) -> Self {
        LstmCell { params }
    }

    /// A cell from `input` to `hidden` features whose h is projected to `proj` features, as the
    /// cells of `torch.nn.LSTM(input, hidden, proj_size=proj)` (`torch.nn.LSTMCell` has no
    /// projection): W_ih `[4H, in]`, W_hh `[4H, P]`, b_ih and b_hh `[4H]`, W_hr `[P, H]`, every one
    /// ~ U(-1/√H, 1/√H), drawn in that order. Its state is h [B, P] and c [B, H].
    ///
    /// Panics unless 0 < proj < hidden.
    #[track_caller]
    pub fn init_projected<R: Rng + ?Sized>(
        input: usize,
        hidden: usize,
        proj: usize,
        rng: &mut R,
    ) -> Self {
        check_proj_size("lstm", proj, hidden);
        LstmCell {
            params: CellParams::init(4, input, hidden, Some(proj), true, rng),
        }
    }
}

impl LstmCell {
    /// An f32 cell from `input` to `hidden` features, every weight and bias ~ U(-1/√H, 1/√H), as
    /// `torch.nn.LSTMCell(input, hidden)`. Another precision is
    /// `LstmCell::<f64>::init(input, hidden, Nonlinearity::default(), &mut rng)`.
    pub fn new<R: Rng + ?Sized>(input: usize, hidden: usize, rng: &mut R) -> Self {
        Self::init(input, hidden, Nonlinearity::Tanh, rng)
    }

    /// An f32 cell from `input` to `hidden` features whose h is projected to `proj` features,
    /// as the cells of `torch.nn.LSTM(input, hidden, proj_size=proj)`; the weights are
    /// [`init_projected`](LstmCell::init_projected)'s, which is the form for another precision.
    ///
    /// Panics unless 0 < proj < hidden.
    #[track_caller]
    pub fn new_projected<R: Rng + ?Sized>(
        input: usize,
        hidden: usize,
        proj: usize,
        rng: &mut R,
    ) -> Self {
        Self::init_projected(input, hidden, proj, rng)
    }
}

impl<F: Float> Cell<F> for LstmCell<F> {
    type State<'t> = State<'t, F>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }

    fn state_parts(&self) -> Vec<StatePart> {
        vec![
            StatePart::new("h", &[self.params.h_size()]),
            StatePart::new("c", &[self.params.hidden_size()]),
        ]
    }

    fn hidden_size(&self) -> usize {
        self.params.hidden_size()
    }

    fn name(&self) -> &'static str {
        "lstm"
    }

    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        self.params.project(tape, x, true)
    }

    #[track_caller]
    fn step<'t>(&self, tape: &'t Tape<F>, xp: Var<'t, F>, state: State<'t, F>) -> State<'t, F> {
        let c = state.c.expect("lstm: the state carries c as well as h");
        let gates = xp.addmm(state.h, tape.param(&self.params.weight_hh).t());
        let (h, c) = gates.lstm_cell(c);
        let h = match &self.params.weight_hr {
            Some(w_hr) => h.matmul(tape.param(w_hr).t()),
            None => h,
        };
        State { h, c: Some(c) }
    }
}

standard_cell!(LstmCell, 4, Some(1), true);

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

impl<F: Float> GruCell<F> {
    fn assemble(params: CellParams<F>, _: Nonlinearity) -> Self {
        GruCell { params }
    }
}

impl GruCell {
    /// An f32 cell from `input` to `hidden` features, every weight and bias ~ U(-1/√H, 1/√H), as
    /// `torch.nn.GRUCell(input, hidden)`. Another precision is
    /// `GruCell::<f64>::init(input, hidden, Nonlinearity::default(), &mut rng)`.
    pub fn new<R: Rng + ?Sized>(input: usize, hidden: usize, rng: &mut R) -> Self {
        Self::init(input, hidden, Nonlinearity::Tanh, rng)
    }
}

impl<F: Float> Cell<F> for GruCell<F> {
    type State<'t> = State<'t, F>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }

    fn state_parts(&self) -> Vec<StatePart> {
        vec![StatePart::new("h", &[self.params.hidden_size()])]
    }

    fn name(&self) -> &'static str {
        "gru"
    }

    // b_hn stays inside r ⊙ (h W_hnᵀ + b_hn), so b_hh goes with the hidden projection.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        self.params.project(tape, x, false)
    }

    fn step<'t>(&self, tape: &'t Tape<F>, xp: Var<'t, F>, state: State<'t, F>) -> State<'t, F> {
        let w_hh = tape.param(&self.params.weight_hh);
        let b_hh = self.params.bias_hh.as_ref().map(|b| tape.param(b));
        let hp = affine(state.h, w_hh, b_hh);
        State {
            h: xp.gru_cell(hp, state.h),
            c: None,
        }
    }
}

standard_cell!(GruCell, 3);
