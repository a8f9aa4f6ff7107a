//! The attentive LSTM cell: an LSTM step, then attention from the new h over a window of the last
//! W hidden states that the cell's own state carries, and an output that reads both.
//!
//! ```text
//! h_t, c_t = LSTM(x_t, h_{t-1}, c_{t-1})                     (PyTorch's LSTM cell, reused)
//! q_t  = h_t W_qᵀ                       [A]
//! k_j  = h_j W_kᵀ                       [A]   (computed once, when h_j enters the window)
//! e_tj = v · tanh(q_t + k_j)                  additive (Bahdanau et al. 2015)
//! e_tj = q_t · k_j / √A                       scaled dot product (Luong et al. 2015;
//!                                             Vaswani et al. 2017)
//! α_t  = softmax_j(e_t), over the filled slots j ∈ {t-W, …, t-1} only (the rest are -inf)
//! ctx_t = Σ_j α_tj h_j                  [H]
//! out_t = tanh([h_t; ctx_t] W_cᵀ + b_c) [H]   (without attention: tanh(h_t W_cᵀ + b_c))
//! ```
//!
//! The window holds h_j and k_j for the last W steps, oldest first, and a 0/1 mask of the slots
//! that hold a state: at the start of a stream nothing is filled, and a step with no filled slot
//! at all has α = 0 and a zero context. Causal by construction: step t reads only states that
//! earlier steps wrote. Shapes: x [B, in], h and c [B, H], values [B, W, H], keys [B, W, A],
//! filled [B, W]; W_q, W_k [A, H], v [A], W_c [H, 2H] ([H, H] without attention), b_c [H].

use clap::ValueEnum;
use rewind::autograd::rand::Rng;
use rewind::nn::{Cell, CellState, LstmCell, Module, Nonlinearity, StandardCell, State, StatePart};
use rewind::prelude::*;

/// Which attention a cell has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// None: the output reads h_t alone (the baseline).
    None,
    /// Bahdanau's additive score v · tanh(q + k).
    Additive,
    /// The scaled dot product q · k / √A.
    Dot,
}

impl Kind {
    /// The flag's spelling: `none`, `additive`, `dot`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Additive => "additive",
            Kind::Dot => "dot",
        }
    }
}

/// How a query scores a past state.
#[derive(Debug)]
pub enum Score<F: Float> {
    /// e_j = v · tanh(q + k_j), with v [A].
    Additive {
        /// v [A].
        v: Param<F>,
    },
    /// e_j = q · k_j / √A.
    Dot,
}

/// Attention from h_t over a window of W past states.
#[derive(Debug)]
pub struct Attention<F: Float> {
    /// W_q [A, H].
    pub w_q: Param<F>,
    /// W_k [A, H].
    pub w_k: Param<F>,
    /// The score.
    pub score: Score<F>,
    /// W, the past states attended over.
    pub window: usize,
}

/// An LSTM step followed by attention over its own past hidden states.
#[derive(Debug)]
pub struct Attentive<F: Float = f32> {
    /// The LSTM step (PyTorch's parameters and equations).
    pub lstm: LstmCell<F>,
    /// The attention; `None` for the baseline that reads h_t alone.
    pub attention: Option<Attention<F>>,
    /// W_c [H, 2H] ([H, H] without attention).
    pub w_c: Param<F>,
    /// b_c [H].
    pub b_c: Param<F>,
}

/// The window of past states, each part batch first.
#[derive(Clone, Copy, Debug)]
pub struct Window<'t, F: Float> {
    /// h_{t-W} … h_{t-1}, oldest first [B, W, H].
    pub values: Var<'t, F>,
    /// Their keys k_j = h_j W_kᵀ [B, W, A].
    pub keys: Var<'t, F>,
    /// 1 where a slot holds a state, 0 where the stream has not reached it yet [B, W].
    pub filled: Var<'t, F>,
}

/// The attentive cell's state: the output first (what the layer outputs), the LSTM's h and c,
/// and the window (absent without attention).
#[derive(Clone, Copy, Debug)]
pub struct Attending<'t, F: Float> {
    /// out_t [B, H].
    pub out: Var<'t, F>,
    /// The LSTM's h_t [B, H].
    pub h: Var<'t, F>,
    /// The LSTM's c_t [B, H].
    pub c: Var<'t, F>,
    /// The last W states.
    pub window: Option<Window<'t, F>>,
}

impl<'t, F: Float> CellState<'t, F> for Attending<'t, F> {
    type On<'u> = Attending<'u, F>;

    fn parts(&self) -> Vec<Var<'t, F>> {
        let mut parts = vec![self.out, self.h, self.c];
        if let Some(w) = self.window {
            parts.extend([w.values, w.keys, w.filled]);
        }
        parts
    }

    #[track_caller]
    fn from_parts(parts: &[Var<'t, F>]) -> Self {
        let (out, h, c, window) = match *parts {
            [out, h, c] => (out, h, c, None),
            [out, h, c, values, keys, filled] => (
                out,
                h,
                c,
                Some(Window {
                    values,
                    keys,
                    filled,
                }),
            ),
            _ => panic!(
                "attentive: a state of 3 parts (out, h, c) or 6 (and values, keys, filled) \
                 expected; got {}",
                parts.len()
            ),
        };
        Attending { out, h, c, window }
    }
}

/// A parameter of `shape` ~ U(-1/√fan_in, 1/√fan_in), as PyTorch initialises a linear layer.
fn uniform<F: Float, R: Rng + ?Sized>(shape: &[usize], fan_in: usize, rng: &mut R) -> Param<F> {
    let k = F::from_f64(1.0 / (fan_in as f64).sqrt());
    Param::new(Tensor::uniform(shape, -k, k, rng))
}

impl<F: Float> Attentive<F> {
    /// A cell from `input` features to H = `hidden`, attending over the last `window` states
    /// with keys and queries of `key` features (A). The LSTM is initialised as PyTorch's, the
    /// rest as linear layers of their fan-in.
    pub fn new<R: Rng + ?Sized>(
        kind: Kind,
        input: usize,
        hidden: usize,
        window: usize,
        key: usize,
        rng: &mut R,
    ) -> Self {
        let lstm = LstmCell::init(input, hidden, Nonlinearity::Tanh, rng);
        let attention = match kind {
            Kind::None => None,
            Kind::Additive | Kind::Dot => Some(Attention {
                w_q: uniform(&[key, hidden], hidden, rng),
                w_k: uniform(&[key, hidden], hidden, rng),
                score: match kind {
                    Kind::Additive => Score::Additive {
                        v: uniform(&[key], key, rng),
                    },
                    _ => Score::Dot,
                },
                window,
            }),
        };
        let read = if attention.is_some() { 2 } else { 1 } * hidden;
        Attentive {
            lstm,
            attention,
            w_c: uniform(&[hidden, read], read, rng),
            b_c: uniform(&[hidden], read, rng),
        }
    }

    /// One step from this step's projected input `xp` [B, 4H], also returning the attention
    /// weights α [B, W] (oldest slot first), or `None` without attention.
    #[track_caller]
    pub fn step_with_weights<'t>(
        &self,
        tape: &'t Tape<F>,
        xp: Var<'t, F>,
        state: Attending<'t, F>,
    ) -> (Attending<'t, F>, Option<Var<'t, F>>) {
        let lstm = State {
            h: state.h,
            c: Some(state.c),
        };
        let State { h, c } = self.lstm.step(tape, xp, lstm);
        let c = c.expect("an LSTM step returns c");
        let (w_c, b_c) = (tape.param(&self.w_c).t(), tape.param(&self.b_c));
        match (&self.attention, state.window) {
            (None, None) => {
                let out = b_c.addmm(h, w_c).tanh();
                let next = Attending {
                    out,
                    h,
                    c,
                    window: None,
                };
                (next, None)
            }
            (Some(attention), Some(window)) => {
                let alpha = attention.weights(tape, h, window);
                let context = alpha.unsqueeze(1).matmul(window.values).squeeze(1);
                let out = b_c.addmm(concat(&[h, context], 1), w_c).tanh();
                let key = h.matmul(tape.param(&attention.w_k).t());
                let next = Attending {
                    out,
                    h,
                    c,
                    window: Some(window.push(h, key)),
                };
                (next, Some(alpha))
            }
            (attention, _) => {
                let with = if attention.is_some() {
                    "with"
                } else {
                    "without"
                };
                panic!("attentive: a cell {with} attention needs a state {with} a window")
            }
        }
    }
}

impl<F: Float> Attention<F> {
    /// α_t [B, W] for the query h_t [B, H] over `window`.
    fn weights<'t>(&self, tape: &'t Tape<F>, h: Var<'t, F>, window: Window<'t, F>) -> Var<'t, F> {
        let q = h.matmul(tape.param(&self.w_q).t());
        let e = match &self.score {
            Score::Additive { v } => (q.unsqueeze(1) + window.keys).tanh().matmul(tape.param(v)),
            Score::Dot => {
                let scale = F::from_f64(1.0 / (q.shape()[1] as f64).sqrt());
                window.keys.matmul(q.unsqueeze(2)).squeeze(2) * scale
            }
        };
        masked_softmax(e, &window.filled.value())
    }
}

/// softmax of the scores `e` [B, W] over each row's filled slots (`filled` [B, W] is 1 there),
/// the others set to -inf first; a row with no filled slot gets all-zero weights.
fn masked_softmax<'t, F: Float>(e: Var<'t, F>, filled: &Tensor<F>) -> Var<'t, F> {
    // A row that is -inf everywhere has a softmax of NaN (-inf minus its max, -inf), which no
    // mask multiplies away (0 · NaN is NaN). So an empty row keeps its finite scores, and its
    // weights are zeroed by its mask afterwards.
    let w = filled.shape()[1];
    let blocked: Vec<F> = filled
        .data()
        .chunks(w)
        .flat_map(|row| {
            let empty = row.iter().all(|&f| f == F::ZERO);
            row.iter().map(move |&f| {
                if f == F::ZERO && !empty {
                    F::ONE
                } else {
                    F::ZERO
                }
            })
        })
        .collect();
    let blocked = Tensor::from_vec(blocked, filled.shape()).expect("one per slot");
    let alpha = e.masked_fill(&blocked, F::neg_infinity()).softmax(1);
    alpha * e.tape().constant(filled.clone())
}

impl<'t, F: Float> Window<'t, F> {
    /// The window one step on: the oldest slot dropped, h [B, H] and its key [B, A] the newest.
    fn push(self, h: Var<'t, F>, key: Var<'t, F>) -> Self {
        let filled = h.tape().constant(Tensor::ones(&[h.shape()[0], 1]));
        Window {
            values: shift_in(self.values, h.unsqueeze(1)),
            keys: shift_in(self.keys, key.unsqueeze(1)),
            filled: shift_in(self.filled, filled),
        }
    }
}

/// `slots` [B, W, …] with its first slot dropped and `newest` [B, 1, …] appended.
fn shift_in<'t, F: Float>(slots: Var<'t, F>, newest: Var<'t, F>) -> Var<'t, F> {
    slots.tape().custom(ShiftIn, &[slots, newest])
}

/// The window shift as one op: `narrow` then `concat` would copy the whole window twice a step,
/// each time into a zeroed buffer, and copying the window is most of what attention adds to a
/// step. One copy made an update at W = 128, H = 256 about 1.2× faster, with the same values.
///
/// Both directions build their tensors with `Tensor::from_slices`, whose storage is a buffer
/// that the last update's tape let go, not a fresh `Vec`: a chunk keeps every step's window
/// alive, tens of megabytes that the allocator would otherwise take from the kernel again each
/// update, and the page faults of that first touch were 8% of the attentive step (`perf`, W = 32,
/// H = 256). Nor is that buffer zero-filled before the copy overwrites it: with `Tensor::zeros`
/// the fill was 2.7% of the attentive run's samples.
///
/// Forward: out[:, k] = slots[:, k + 1] for k < W - 1, out[:, W - 1] = newest[:, 0].
/// Backward: d slots[:, 0] = 0, d slots[:, k + 1] = g[:, k]; d newest[:, 0] = g[:, W - 1].
struct ShiftIn;

impl<F: Float> CustomOp<F> for ShiftIn {
    fn name(&self) -> &str {
        "shift_in"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Tensor<F> {
        let (slots, newest) = (inputs[0], inputs[1]);
        let (_, w, row) = slot_layout(slots);
        // Lane by lane: the slots after the oldest, then the newest.
        let parts = slots
            .data()
            .chunks_exact(w * row)
            .zip(newest.data().chunks_exact(row))
            .flat_map(|(slots, newest)| [&slots[row..], newest]);
        Tensor::from_slices(slots.shape(), parts).expect("a lane's slots shifted by one")
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Vec<Option<Tensor<F>>> {
        let (slots, newest) = (inputs[0], inputs[1]);
        let (_, w, row) = slot_layout(slots);
        let lanes = || {
            grad.data()
                .chunks_exact(w * row)
                .map(|g| g.split_at((w - 1) * row))
        };
        // The oldest slot's gradient is zero (it left the window); the others are the output's
        // slots one earlier.
        let zero = vec![F::ZERO; row];
        let d_slots = lanes().flat_map(|(kept, _)| [&zero[..], kept]);
        let d_slots = Tensor::from_slices(slots.shape(), d_slots).expect("a zero slot, then W - 1");
        let d_newest = lanes().map(|(_, left)| left);
        let d_newest = Tensor::from_slices(newest.shape(), d_newest).expect("one slot a lane");
        vec![Some(d_slots), Some(d_newest)]
    }
}

/// Lanes B, slots W, and the features of one slot, of a window part [B, W, …].
fn slot_layout<F: Float>(slots: &Tensor<F>) -> (usize, usize, usize) {
    let shape = slots.shape();
    let (lanes, w) = (shape[0], shape[1]);
    (lanes, w, slots.numel() / (lanes * w))
}

impl<F: Float> Module<F> for Attentive<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut all = self.lstm.params();
        if let Some(a) = &self.attention {
            all.push(("w_q".into(), &a.w_q));
            all.push(("w_k".into(), &a.w_k));
            if let Score::Additive { v } = &a.score {
                all.push(("v".into(), v));
            }
        }
        all.push(("w_c".into(), &self.w_c));
        all.push(("b_c".into(), &self.b_c));
        all
    }
}

impl<F: Float> Cell<F> for Attentive<F> {
    type State<'t> = Attending<'t, F>;

    fn input_size(&self) -> usize {
        self.lstm.input_size()
    }

    fn state_parts(&self) -> Vec<StatePart> {
        let h = self.lstm.hidden_size();
        let mut parts = vec![
            StatePart::new("out", &[h]),
            StatePart::new("h", &[h]),
            StatePart::new("c", &[h]),
        ];
        if let Some(a) = &self.attention {
            let (w, key) = (a.window, a.w_k.shape()[0]);
            parts.extend([
                StatePart::new("values", &[w, h]),
                StatePart::new("keys", &[w, key]),
                StatePart::new("filled", &[w]),
            ]);
        }
        parts
    }

    fn name(&self) -> &'static str {
        "attentive"
    }

    /// x W_ihᵀ + b_ih + b_hh for every step at once, as the LSTM does.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        self.lstm.project(tape, x)
    }

    fn step<'t>(
        &self,
        tape: &'t Tape<F>,
        xp: Var<'t, F>,
        state: Attending<'t, F>,
    ) -> Attending<'t, F> {
        self.step_with_weights(tape, xp, state).0
    }
}
