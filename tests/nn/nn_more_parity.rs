//! Bias-free layers, unbatched recurrent input, gradients built by hand, loading without a
//! generator and the LSTM's projection, against PyTorch: the data `scripts/golden_nn_more.py`
//! wrote (torch 2.15) into tests/data/nn_more_golden.safetensors, every case in float64 and in
//! float32, and tests/data/nn_more_state_dict.safetensors, a bias-free LSTM's state_dict saved by
//! PyTorch; and likewise `scripts/golden_nn_round2.py` into tests/data/nn_round2_*.safetensors.
//! Each tensor must match to 1e-13 (float64) or 1e-5 (float32), measured as
//! max |ours - torch| / max |torch|.

use std::collections::BTreeMap;

use crate::support::golden::{self, data, tensor, Cases};
use crate::support::panics::panic_of;
use rewind::autograd::io::TensorFile;
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Float, Grads, Tape, Tensor, Var};
use rewind::nn::{
    load_state_dict, Carry, Cell, GruCell, Linear, Lstm, LstmCell, Module, Nonlinearity, Recurrent,
    RecurrentConfig, RnnCell, Run, StackState, StandardCell, State,
};
use rewind::optim::{Adam, Optimizer};

/// A golden file and the script that wrote it.
type Source = (&'static str, &'static str);

const MORE: Source = ("nn_more_golden.safetensors", "golden_nn_more.py");
const ROUND2: Source = ("nn_round2_golden.safetensors", "golden_nn_round2.py");

/// One dtype's half of a golden file: keys `{prefix}.{case}.{what}`.
struct Golden<F: Float> {
    file: TensorFile<F>,
    prefix: &'static str,
    tolerance: f64,
}

impl<F: Float> Golden<F> {
    fn load((name, script): Source, prefix: &'static str, tolerance: f64) -> Self {
        Golden {
            file: golden::load(name, script),
            prefix,
            tolerance,
        }
    }

    fn key(&self, case: &str, what: &str) -> String {
        format!("{}.{case}.{what}", self.prefix)
    }

    fn get(&self, case: &str, what: &str) -> Tensor<F> {
        tensor(&self.file, &self.key(case, what))
    }

    fn has(&self, case: &str, what: &str) -> bool {
        self.file.tensors.contains_key(&self.key(case, what))
    }

    /// The tensors `{prefix}.{case}.{group}.*`, by their PyTorch names.
    fn group(&self, case: &str, group: &str) -> BTreeMap<String, Tensor<F>> {
        let start = self.key(case, &format!("{group}."));
        self.file
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&start).map(|n| (n.to_string(), v.clone())))
            .collect()
    }

    fn params(&self, case: &str) -> BTreeMap<String, Tensor<F>> {
        self.group(case, "param")
    }

    fn errors(&self, case: &str) -> Errors<'_, F> {
        Errors {
            golden: self,
            case: case.into(),
            worst: 0.0,
        }
    }
}

impl<F: Float> Cases for Golden<F> {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.file.metadata
    }
}

/// Collects the largest error of a case, failing on any tensor beyond the tolerance.
struct Errors<'g, F: Float> {
    golden: &'g Golden<F>,
    case: String,
    worst: f64,
}

impl<F: Float> Errors<'_, F> {
    fn compare(&mut self, what: &str, ours: &Tensor<F>) {
        let theirs = self.golden.get(&self.case, what);
        let label = format!("{}.{}.{what}", self.golden.prefix, self.case);
        assert_eq!(ours.shape(), theirs.shape(), "{label}: shapes differ");
        let scale = theirs
            .data()
            .iter()
            .fold(0f64, |m, v| m.max(v.to_f64().abs()));
        let diff = ours
            .data()
            .iter()
            .zip(theirs.data())
            .fold(0f64, |m, (a, b)| m.max((a.to_f64() - b.to_f64()).abs()));
        let err = diff / scale.max(1e-30);
        let tolerance = self.golden.tolerance;
        assert!(
            err <= tolerance,
            "{label}: relative error {err:e} exceeds {tolerance:e}"
        );
        self.worst = self.worst.max(err);
    }

    fn compare_grads(&mut self, model: &dyn Module<F>, grads: &Grads<F>) {
        for (name, p) in model.params() {
            self.compare(&format!("grad.{name}"), &grads[p]);
        }
    }
}

fn projected<'t, F: Float>(g: &Golden<F>, case: &str, what: &str, y: Var<'t, F>) -> Var<'t, F> {
    (y * y.tape().constant(g.get(case, &format!("proj_{what}")))).sum()
}

fn config<F: Float>(g: &Golden<F>, case: &str) -> RecurrentConfig {
    let mut config =
        RecurrentConfig::new(g.number(case, "input_size"), g.number(case, "hidden_size"))
            .num_layers(g.number(case, "num_layers"))
            .bidirectional(g.flag(case, "bidirectional"))
            .batch_first(g.flag(case, "batch_first"))
            .bias(g.flag(case, "bias"));
    if g.field(case, "nonlinearity") == "relu" {
        config = config.nonlinearity(Nonlinearity::Relu);
    }
    if g.metadata()[&format!("case.{case}")].contains("\"proj_size\"") {
        config = config.proj_size(g.number(case, "proj_size"));
    }
    config
}

/// Runs one stack case: PyTorch's parameters loaded strictly (so the names and the absence of
/// biases match too), then outputs, final states and every gradient compared; with
/// `checkpoint_every`, through checkpointed segments (which re-run the cell during backward).
fn run_stack<C: StandardCell<F>, F: Float>(
    g: &Golden<F>,
    case: &str,
    checkpoint_every: Option<usize>,
) -> f64 {
    let mut model = Recurrent::<C, F>::init(config(g, case), &mut StdRng::seed_from_u64(0));
    load_state_dict(&mut model, &g.params(case)).expect("PyTorch's names and shapes");
    let lengths: Option<Vec<usize>> = g.has(case, "lengths").then(|| {
        g.get(case, "lengths")
            .data()
            .iter()
            .map(|l| l.to_f64() as usize)
            .collect()
    });

    let tape = Tape::new();
    let input = tape.var(g.get(case, "input"));
    let h0 = g.has(case, "h0").then(|| tape.var(g.get(case, "h0")));
    let c0 = g.has(case, "c0").then(|| tape.var(g.get(case, "c0")));
    let initial = h0.map(|h| StackState { h, c: c0 });
    let run = Run {
        lengths: lengths.as_deref(),
        checkpoint_every,
        ..Run::default()
    };
    let out = model.forward_with(&tape, input, initial, &run);

    let mut e = g.errors(case);
    e.compare("output", &out.output.value());
    e.compare("h_n", &out.state.h.value());
    let mut loss =
        projected(g, case, "output", out.output) + projected(g, case, "h_n", out.state.h);
    if let Some(c) = out.state.c {
        e.compare("c_n", &c.value());
        loss = loss + projected(g, case, "c_n", c);
    }
    let grads = loss.backward();
    e.compare_grads(&model, &grads);
    e.compare("grad_input", &grads[input]);
    for (name, v) in [("grad_h0", h0), ("grad_c0", c0)] {
        if let Some(v) = v {
            e.compare(name, &grads[v]);
        }
    }
    e.worst
}

/// Every case plain and in checkpointed segments of 4 steps (6 = 4 + 2: one segment is short).
fn stacks<F: Float>(g: &Golden<F>, cases: &[&str]) {
    for &case in cases {
        for k in [None, Some(4)] {
            let worst = match g.field(case, "kind").as_str() {
                "rnn" => run_stack::<RnnCell<F>, F>(g, case, k),
                "lstm" => run_stack::<LstmCell<F>, F>(g, case, k),
                "gru" => run_stack::<GruCell<F>, F>(g, case, k),
                other => panic!("unknown kind {other}"),
            };
            let how = k.map_or("plain".into(), |k| format!("checkpoint_every {k}"));
            println!("{}.{case:<34} {how:<18} {worst:.2e}", g.prefix);
        }
    }
}

fn both_dtypes(source: Source, test: impl Fn(&Golden<f64>), test32: impl Fn(&Golden<f32>)) {
    test(&Golden::load(source, "f64", 1e-13));
    test32(&Golden::load(source, "f32", 1e-5));
}

const BIAS_FREE_STACKS: [&str; 6] = [
    "rnn_nobias_l1",
    "rnn_nobias_relu_l2_bi",
    "lstm_nobias_l1",
    "lstm_nobias_l2_bi_h0",
    "gru_nobias_l1",
    "gru_nobias_l2_bi_lengths",
];

const UNBATCHED_STACKS: [&str; 5] = [
    "rnn_unbatched_l2_bi_h0",
    "lstm_unbatched_l1",
    "lstm_unbatched_nobias_l2_bi_h0",
    "gru_unbatched_batch_first_l2",
    "gru_unbatched_nobias_bi_h0",
];

#[test]
fn bias_free_stacks_match_pytorch() {
    both_dtypes(
        MORE,
        |g| stacks(g, &BIAS_FREE_STACKS),
        |g| stacks(g, &BIAS_FREE_STACKS),
    );
}

#[test]
fn unbatched_stacks_match_pytorch() {
    both_dtypes(
        MORE,
        |g| stacks(g, &UNBATCHED_STACKS),
        |g| stacks(g, &UNBATCHED_STACKS),
    );
}

/// PyTorch's `bias=False` stack has no bias parameters at all: its state_dict names are ours.
#[test]
fn bias_free_stacks_have_pytorchs_names() {
    let g = Golden::<f64>::load(MORE, "f64", 1e-13);
    let model = Lstm::<f64>::init(
        config(&g, "lstm_nobias_l2_bi_h0"),
        &mut StdRng::seed_from_u64(0),
    );
    let ours: Vec<String> = model.params().into_iter().map(|(n, _)| n).collect();
    let mut theirs: Vec<String> = g.params("lstm_nobias_l2_bi_h0").into_keys().collect();
    let mut sorted = ours.clone();
    sorted.sort();
    theirs.sort();
    assert_eq!(sorted, theirs);
    assert_eq!(ours.len(), 8, "w_ih and w_hh per layer and direction");
}

fn run_cell<C: StandardCell<F>, F: Float>(g: &Golden<F>, case: &str) -> f64 {
    let mut cell = C::init(
        g.number(case, "input_size"),
        g.number(case, "hidden_size"),
        Nonlinearity::Tanh,
        &mut StdRng::seed_from_u64(0),
    )
    .without_bias();
    assert!(cell.bias_ih().is_none() && cell.bias_hh().is_none());
    load_state_dict(&mut cell, &g.params(case)).expect("PyTorch's names and shapes");
    let tape = Tape::new();
    let x = tape.var(g.get(case, "x"));
    let h = tape.var(g.get(case, "h"));
    let c = (C::GATES == 4).then(|| tape.var(g.get(case, "c")));
    let next = cell.forward(&tape, x, State { h, c });
    compare_step(g, case, &cell, (x, h, c), next)
}

/// A cell's step against PyTorch's: h' (and c'), and the gradients of the projected loss with
/// respect to the parameters, x, h (and c). Returns the worst error.
fn compare_step<'t, C: StandardCell<F>, F: Float>(
    g: &Golden<F>,
    case: &str,
    cell: &C,
    (x, h, c): (Var<'t, F>, Var<'t, F>, Option<Var<'t, F>>),
    next: State<'t, F>,
) -> f64 {
    let mut e = g.errors(case);
    e.compare("h_next", &next.h.value());
    let mut loss = projected(g, case, "h", next.h);
    if let Some(cn) = next.c {
        e.compare("c_next", &cn.value());
        loss = loss + projected(g, case, "c", cn);
    }
    let grads = loss.backward();
    e.compare_grads(cell, &grads);
    e.compare("grad_x", &grads[x]);
    e.compare("grad_h", &grads[h]);
    if let Some(c) = c {
        e.compare("grad_c", &grads[c]);
    }
    e.worst
}

fn cells<F: Float>(g: &Golden<F>) {
    for (case, worst) in [
        (
            "rnn_cell_nobias",
            run_cell::<RnnCell<F>, F>(g, "rnn_cell_nobias"),
        ),
        (
            "lstm_cell_nobias",
            run_cell::<LstmCell<F>, F>(g, "lstm_cell_nobias"),
        ),
        (
            "gru_cell_nobias",
            run_cell::<GruCell<F>, F>(g, "gru_cell_nobias"),
        ),
    ] {
        println!("{}.{case:<34} {worst:.2e}", g.prefix);
    }
}

#[test]
fn bias_free_cells_match_pytorch() {
    both_dtypes(MORE, cells, cells);
}

fn linear<F: Float>(g: &Golden<F>) {
    let case = "linear_nobias";
    let mut layer = Linear::<F>::init(5, 3, &mut StdRng::seed_from_u64(0)).without_bias();
    load_state_dict(&mut layer, &g.params(case)).expect("only `weight`");
    let tape = Tape::new();
    let x = tape.var(g.get(case, "input"));
    let y = layer.forward(&tape, x);
    let mut e = g.errors(case);
    e.compare("output", &y.value());
    let grads = projected(g, case, "output", y).backward();
    e.compare_grads(&layer, &grads);
    e.compare("grad_input", &grads[x]);
    println!("{}.{case:<34} {:.2e}", g.prefix, e.worst);
}

#[test]
fn bias_free_linear_matches_pytorch() {
    both_dtypes(MORE, linear, linear);
}

/// Two Adam steps fed gradients by name, as they would arrive from another process: the second
/// leaves out `weight_hh_l0_reverse`, which Adam then leaves alone, as torch does for a
/// parameter whose grad is None.
fn adam<F: Float>(g: &Golden<F>) {
    let case = "adam";
    let mut model = Lstm::<F>::from_state_dict(
        RecurrentConfig::new(5, 4)
            .num_layers(2)
            .bidirectional(true)
            .bias(false),
        &g.params(case),
    )
    .expect("PyTorch's names and shapes");
    let mut opt = Adam::new(0.01);
    let mut e = g.errors(case);
    for step in 0..2 {
        let fed = g.group(case, &format!("grads{step}"));
        assert_eq!(fed.len(), 8 - step);
        let grads = Grads::from_named(model.params(), fed).expect("the model's names and shapes");
        assert_eq!(grads.len(), 8 - step);
        opt.step(&mut model, &grads);
        for (name, p) in model.params() {
            e.compare(&format!("after{step}.{name}"), &p.value());
        }
    }
    println!("{}.{case:<34} {:.2e}", g.prefix, e.worst);
}

#[test]
fn an_optimizer_applies_gradients_given_by_name_as_pytorch_does() {
    both_dtypes(MORE, adam, adam);
}

/// A state_dict PyTorch saved from `nn.LSTM(5, 4, num_layers=2, bidirectional=True,
/// bias=False)` loads with `Lstm::load`, no generator needed, and reproduces PyTorch's outputs.
fn load<F: Float>(g: &Golden<F>) {
    let case = "load";
    let lstm = Lstm::<F>::load(
        RecurrentConfig::new(5, 4)
            .num_layers(2)
            .bidirectional(true)
            .bias(false),
        data("nn_more_state_dict.safetensors"),
    )
    .expect("a bias-free LSTM's state_dict");
    let tape = Tape::new();
    let out = lstm.forward(&tape, tape.constant(g.get(case, "input")), None, None);
    let mut e = g.errors(case);
    e.compare("output", &out.output.value());
    e.compare("h_n", &out.state.h.value());
    e.compare("c_n", &out.state.c.expect("an LSTM's c").value());
    println!("{}.{case:<34} {:.2e}", g.prefix, e.worst);
}

#[test]
fn a_bias_free_state_dict_from_pytorch_loads_without_a_generator() {
    both_dtypes(MORE, load, load);
}

/// Unbatched input takes an unbatched state and no lengths, and a sequence has at least one step
/// (as PyTorch's layers require); every other shape is refused at the caller's line with both
/// shapes named.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn misshapen_recurrent_input_panics_at_the_callers_line() {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::<f64>::init(RecurrentConfig::new(5, 4).num_layers(2), &mut rng);
    let tape = Tape::new();
    let zeros = |shape: &[usize]| tape.constant(Tensor::zeros(shape));
    let (x2, x3) = (zeros(&[6, 5]), zeros(&[6, 3, 5]));
    let state = |shape: &[usize]| Some(StackState { h: zeros(shape), c: Some(zeros(shape)) });
    type Case<'a> = (Box<dyn FnOnce() + 'a>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|| { lstm.forward(&tape, zeros(&[5]), None, None); }), line!(), "lstm: expected an input [T, B, 5] or unbatched [T, 5], got [5]"),
        (Box::new(|| { lstm.forward(&tape, zeros(&[6, 3, 7]), None, None); }), line!(), "lstm: expected an input [T, B, 5] or unbatched [T, 5], got [6, 3, 7]"),
        (Box::new(|| { lstm.forward(&tape, x2, state(&[2, 1, 4]), None); }), line!(), "lstm: initial h must be [2, 4] for an unbatched input [6, 5], got [2, 1, 4]"),
        (Box::new(|| { lstm.forward(&tape, x3, state(&[2, 4]), None); }), line!(), "lstm: initial h must be [2, 3, 4] for an input [6, 3, 5], got [2, 4]"),
        (Box::new(|| { lstm.forward(&tape, x2, None, Some(&[6])); }), line!(), "lstm: lengths need a batch; an unbatched input [6, 5] is one sequence of its own length"),
        (Box::new(|| { lstm.forward(&tape, zeros(&[0, 3, 5]), None, None); }), line!(), "lstm: the input [0, 3, 5] has no time steps; a sequence needs at least one"),
        (Box::new(|| { lstm.forward(&tape, zeros(&[0, 5]), None, None); }), line!(), "lstm: the input [0, 5] has no time steps; a sequence needs at least one"),
        (Box::new(|| { lstm.forward_with(&tape, zeros(&[0, 3, 5]), None, &Run { checkpoint_every: Some(2), ..Run::default() }); }), line!(), "lstm: the input [0, 3, 5] has no time steps; a sequence needs at least one"),
    ];
    for (f, line, expected) in cases {
        let (msg, _, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert_eq!(at, line, "{expected}: reported at line {at}, not the caller's {line}");
    }
}

/// `torch.nn.LSTM(5, 4, proj_size=P)`: h_t = W_hr (o_t ⊙ tanh(c_t)) has P features and c_t keeps
/// H, so the output is [T, B, D·P], h_n [D·L, B, P], c_n [D·L, B, H], and a layer above the first
/// reads D·P inputs. One layer; two bidirectional layers from a given (h0, c0); bias-free over
/// variable lengths; one unbatched sequence, batch-first. Each plain and checkpointed.
const PROJECTED_STACKS: [&str; 4] = [
    "lstm_proj2_l1",
    "lstm_proj3_l2_bi_h0",
    "lstm_proj2_nobias_l2_bi_lengths",
    "lstm_proj3_unbatched_batch_first_h0",
];

#[test]
fn projected_lstm_stacks_match_pytorch() {
    both_dtypes(
        ROUND2,
        |g| stacks(g, &PROJECTED_STACKS),
        |g| stacks(g, &PROJECTED_STACKS),
    );
}

/// The state_dict PyTorch saved from `nn.LSTM(5, 4, num_layers=2, bidirectional=True,
/// proj_size=3)` (with `weight_hr_l{k}` and `weight_hr_l{k}_reverse` [3, 4]) loads with
/// `Lstm::load` and reproduces PyTorch's outputs.
fn load_projected<F: Float>(g: &Golden<F>) {
    let case = "load_proj";
    let lstm = Lstm::<F>::load(
        RecurrentConfig::new(5, 4)
            .num_layers(2)
            .bidirectional(true)
            .proj_size(3),
        data("nn_round2_state_dict.safetensors"),
    )
    .expect("a projected LSTM's state_dict");
    let tape = Tape::new();
    let out = lstm.forward(&tape, tape.constant(g.get(case, "input")), None, None);
    let mut e = g.errors(case);
    e.compare("output", &out.output.value());
    e.compare("h_n", &out.state.h.value());
    e.compare("c_n", &out.state.c.expect("an LSTM's c").value());
    println!("{}.{case:<34} {:.2e}", g.prefix, e.worst);
}

#[test]
fn a_projected_state_dict_from_pytorch_loads_without_a_generator() {
    both_dtypes(ROUND2, load_projected, load_projected);
}

/// A projected stack run over the first 4 steps from `Carry::zeros` (h [1, 3, 2] of P features,
/// c [1, 3, 4] of H), then over the last 2 from the carried final state, ends in the h_n and c_n
/// PyTorch's run over all 6 steps gives ("lstm_proj2_l1").
fn carried<F: Float>(g: &Golden<F>) {
    let case = "lstm_proj2_l1";
    let lstm = Lstm::<F>::from_state_dict(config(g, case), &g.params(case))
        .expect("PyTorch's names and shapes");
    let x = g.get(case, "input");
    let first = Tape::new();
    let start = Carry::zeros(&lstm, 3).on(&first);
    assert_eq!(&start.h.shape()[..], &[1, 3, 2]);
    assert_eq!(&start.c.expect("c").shape()[..], &[1, 3, 4]);
    let head = first.constant(x.clone()).narrow(0, 0, 4);
    let carry = Carry::of(lstm.forward(&first, head, Some(start), None).state);
    let next = Tape::new();
    let tail = next.constant(x).narrow(0, 4, 2);
    let end = lstm.forward(&next, tail, Some(carry.on(&next)), None).state;
    let mut e = g.errors(case);
    e.compare("h_n", &end.h.value());
    e.compare("c_n", &end.c.expect("c").value());
    println!("{}.{case:<34} carried {:.2e}", g.prefix, e.worst);
}

#[test]
fn a_projected_stack_carries_its_state_across_chunks() {
    both_dtypes(ROUND2, carried, carried);
}

/// One step of a built-in cell on unbatched input, as `torch.nn.GRUCell(x, h)` with x [5] and
/// h [4] gives h' [4] (and `torch.nn.LSTMCell(x, (h, c))` gives (h' [4], c' [4])): the values
/// and every gradient, with respect to the parameters and to x, h and c.
fn run_unbatched_cell<C: StandardCell<F>, F: Float>(g: &Golden<F>, case: &str) -> f64 {
    let mut cell = C::init(5, 4, Nonlinearity::Tanh, &mut StdRng::seed_from_u64(0));
    load_state_dict(&mut cell, &g.params(case)).expect("PyTorch's names and shapes");
    let tape = Tape::new();
    let x = tape.var(g.get(case, "x"));
    let h = tape.var(g.get(case, "h"));
    let c = (C::GATES == 4).then(|| tape.var(g.get(case, "c")));
    let next = match c {
        Some(c) => cell.forward(&tape, x, (h, c)),
        None => cell.forward(&tape, x, h),
    };
    compare_step(g, case, &cell, (x, h, c), next)
}

fn unbatched_cells<F: Float>(g: &Golden<F>) {
    for (case, worst) in [
        (
            "rnn_cell_unbatched",
            run_unbatched_cell::<RnnCell<F>, F>(g, "rnn_cell_unbatched"),
        ),
        (
            "lstm_cell_unbatched",
            run_unbatched_cell::<LstmCell<F>, F>(g, "lstm_cell_unbatched"),
        ),
        (
            "gru_cell_unbatched",
            run_unbatched_cell::<GruCell<F>, F>(g, "gru_cell_unbatched"),
        ),
    ] {
        println!("{}.{case:<34} {worst:.2e}", g.prefix);
    }
}

#[test]
fn cells_step_unbatched_input_as_pytorch_does() {
    both_dtypes(ROUND2, unbatched_cells, unbatched_cells);
}

/// An unbatched input [in] takes an unbatched state, a batched input [B, in] a state of B rows,
/// and the input has the cell's features; anything else is refused at the caller's line with
/// both shapes named (PyTorch: "Expected hidden to be 1D for unbatched input").
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn misshapen_cell_input_panics_at_the_callers_line() {
    let mut rng = StdRng::seed_from_u64(0);
    let gru = GruCell::<f64>::init(5, 4, Nonlinearity::Tanh, &mut rng);
    let lstm = LstmCell::<f64>::init(5, 4, Nonlinearity::Tanh, &mut rng);
    let tape = Tape::new();
    let zeros = |shape: &[usize]| tape.constant(Tensor::zeros(shape));
    type Case<'a> = (Box<dyn FnOnce() + 'a>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|| { gru.forward(&tape, zeros(&[5]), zeros(&[1, 4])); }), line!(), "gru: an unbatched input [5] needs an unbatched state, h [4]; got h [1, 4]"),
        (Box::new(|| { gru.forward(&tape, zeros(&[3, 5]), zeros(&[4])); }), line!(), "gru: an input [3, 5] needs a state of 3 rows, h [3, 4]; got h [4]"),
        (Box::new(|| { lstm.forward(&tape, zeros(&[5]), (zeros(&[4]), zeros(&[2, 4]))); }), line!(), "lstm: an unbatched input [5] needs an unbatched state, c [4]; got c [2, 4]"),
        (Box::new(|| { gru.forward(&tape, zeros(&[6]), zeros(&[4])); }), line!(), "gru: expected an input [B, 5] or unbatched [5], got [6]"),
        (Box::new(|| { gru.forward(&tape, zeros(&[2, 3, 5]), zeros(&[4])); }), line!(), "gru: expected an input [B, 5] or unbatched [5], got [2, 3, 5]"),
    ];
    for (f, line, expected) in cases {
        let (msg, _, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert_eq!(at, line, "{expected}: reported at line {at}, not the caller's {line}");
    }
}
