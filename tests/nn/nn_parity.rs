//! rewind-nn against PyTorch: every recurrent configuration, cell, layer and loss, from the data
//! that `scripts/golden_nn.py` wrote (torch 2.15, float32). Outputs, final states and every
//! gradient must match to 1e-5, measured per tensor as max |ours - torch| / max |torch|.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::golden::{load, tensor, Cases};
use rewind::autograd::io::{load_tensors, TensorFile};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Grads, Tape, Tensor, Var};
use rewind::nn::loss::{bce_with_logits, cross_entropy, mse_loss, nll_loss};
use rewind::nn::{
    load_state_dict, Embedding, GruCell, Linear, Lstm, LstmCell, Module, Nonlinearity, Recurrent,
    RecurrentConfig, RnnCell, StackState, StandardCell, State,
};

const TOLERANCE: f64 = 1e-5;

struct Golden {
    file: TensorFile<f32>,
}

impl Golden {
    fn load() -> Self {
        Golden {
            file: load("nn_golden.safetensors", "golden_nn.py"),
        }
    }

    fn get(&self, key: &str) -> Tensor<f32> {
        tensor(&self.file, key)
    }

    fn has(&self, key: &str) -> bool {
        self.file.tensors.contains_key(key)
    }

    /// The parameters `{case}.param.*`, by their PyTorch names.
    fn params(&self, case: &str) -> BTreeMap<String, Tensor<f32>> {
        let prefix = format!("{case}.param.");
        self.file
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    }
}

impl Cases for Golden {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.file.metadata
    }
}

/// Collects the largest error of a case, failing on any tensor beyond the tolerance.
struct Errors<'g> {
    golden: &'g Golden,
    case: String,
    worst: f64,
}

impl Errors<'_> {
    fn compare(&mut self, what: &str, ours: &Tensor<f32>) {
        let theirs = self.golden.get(&format!("{}.{what}", self.case));
        assert_eq!(
            ours.shape(),
            theirs.shape(),
            "{}.{what}: shapes differ",
            self.case
        );
        let scale = theirs
            .data()
            .iter()
            .fold(0f64, |m, &v| m.max((v as f64).abs()));
        let diff = ours
            .data()
            .iter()
            .zip(theirs.data())
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
        let err = diff / scale.max(1e-30);
        assert!(
            err <= TOLERANCE,
            "{}.{what}: relative error {err:e} exceeds {TOLERANCE:e}",
            self.case
        );
        self.worst = self.worst.max(err);
    }

    fn compare_grads<M: Module<f32>>(&mut self, model: &M, grads: &Grads<f32>) {
        for (name, p) in model.params() {
            self.compare(&format!("grad.{name}"), &grads[p]);
        }
    }
}

fn projected<'t>(golden: &Golden, key: &str, y: Var<'t, f32>) -> Var<'t, f32> {
    (y * y.tape().constant(golden.get(key))).sum()
}

fn run_stack<C: StandardCell<f32>>(golden: &Golden, case: &str) -> f64 {
    let g = golden;
    let mut config =
        RecurrentConfig::new(g.number(case, "input_size"), g.number(case, "hidden_size"))
            .num_layers(g.number(case, "num_layers"))
            .bidirectional(g.flag(case, "bidirectional"))
            .batch_first(g.flag(case, "batch_first"));
    if g.field(case, "nonlinearity") == "relu" {
        config = config.nonlinearity(Nonlinearity::Relu);
    }
    let mut model = Recurrent::<C, f32>::new(config, &mut StdRng::seed_from_u64(0));
    load_state_dict(&mut model, &g.params(case)).expect("PyTorch's names and shapes");
    let lengths: Option<Vec<usize>> = g.has(&format!("{case}.lengths")).then(|| {
        g.get(&format!("{case}.lengths"))
            .data()
            .iter()
            .map(|&l| l as usize)
            .collect()
    });

    let tape = Tape::new();
    let input = tape.var(g.get(&format!("{case}.input")));
    let h0 = g
        .has(&format!("{case}.h0"))
        .then(|| tape.var(g.get(&format!("{case}.h0"))));
    let c0 = g
        .has(&format!("{case}.c0"))
        .then(|| tape.var(g.get(&format!("{case}.c0"))));
    let initial = h0.map(|h| StackState { h, c: c0 });
    let out = model.forward(&tape, input, initial, lengths.as_deref());

    let mut e = Errors {
        golden: g,
        case: case.into(),
        worst: 0.0,
    };
    e.compare("output", &out.output.value());
    e.compare("h_n", &out.state.h.value());
    let mut loss = projected(g, &format!("{case}.proj_output"), out.output)
        + projected(g, &format!("{case}.proj_h_n"), out.state.h);
    if let Some(c) = out.state.c {
        e.compare("c_n", &c.value());
        loss = loss + projected(g, &format!("{case}.proj_c_n"), c);
    }
    let grads = loss.backward();
    e.compare_grads(&model, &grads);
    e.compare("grad_input", &grads[input]);
    if let Some(h0) = h0 {
        e.compare("grad_h0", &grads[h0]);
    }
    if let Some(c0) = c0 {
        e.compare("grad_c0", &grads[c0]);
    }
    e.worst
}

fn run_cell<C: StandardCell<f32>>(golden: &Golden, case: &str, nonlinearity: Nonlinearity) -> f64 {
    let g = golden;
    let mut cell = C::init(
        g.number(case, "input_size"),
        g.number(case, "hidden_size"),
        nonlinearity,
        &mut StdRng::seed_from_u64(0),
    );
    load_state_dict(&mut cell, &g.params(case)).expect("PyTorch's names and shapes");
    let tape = Tape::new();
    let x = tape.var(g.get(&format!("{case}.x")));
    let h = tape.var(g.get(&format!("{case}.h")));
    let c = (C::GATES == 4).then(|| tape.var(g.get(&format!("{case}.c"))));
    let next = cell.forward(&tape, x, State { h, c });
    let mut e = Errors {
        golden: g,
        case: case.into(),
        worst: 0.0,
    };
    e.compare("h_next", &next.h.value());
    let mut loss = projected(g, &format!("{case}.proj_h"), next.h);
    if let Some(cn) = next.c {
        e.compare("c_next", &cn.value());
        loss = loss + projected(g, &format!("{case}.proj_c"), cn);
    }
    let grads = loss.backward();
    e.compare_grads(&cell, &grads);
    e.compare("grad_x", &grads[x]);
    e.compare("grad_h", &grads[h]);
    if let Some(c) = c {
        e.compare("grad_c", &grads[c]);
    }
    e.worst
}

#[test]
fn recurrent_stacks_match_pytorch() {
    let g = Golden::load();
    let mut table = Vec::new();
    for case in [
        "rnn_tanh_l1",
        "rnn_relu_l2",
        "rnn_tanh_bi",
        "rnn_lengths",
        "lstm_l1",
        "lstm_l2_h0",
        "lstm_bi_l2",
        "lstm_batch_first",
        "lstm_lengths",
        "gru_l1",
        "gru_l2_bi",
        "gru_lengths",
    ] {
        let worst = match g.field(case, "kind").as_str() {
            "rnn" => run_stack::<RnnCell<f32>>(&g, case),
            "lstm" => run_stack::<LstmCell<f32>>(&g, case),
            "gru" => run_stack::<GruCell<f32>>(&g, case),
            other => panic!("unknown kind {other}"),
        };
        table.push(format!("{case:<18} {worst:.2e}"));
    }
    println!(
        "stack parity (largest relative error over outputs, states and gradients):\n{}",
        table.join("\n")
    );
}

#[test]
fn cells_match_pytorch() {
    let g = Golden::load();
    let cases = [
        (
            "rnn_cell_tanh",
            run_cell::<RnnCell<f32>>(&g, "rnn_cell_tanh", Nonlinearity::Tanh),
        ),
        (
            "rnn_cell_relu",
            run_cell::<RnnCell<f32>>(&g, "rnn_cell_relu", Nonlinearity::Relu),
        ),
        (
            "lstm_cell",
            run_cell::<LstmCell<f32>>(&g, "lstm_cell", Nonlinearity::Tanh),
        ),
        (
            "gru_cell",
            run_cell::<GruCell<f32>>(&g, "gru_cell", Nonlinearity::Tanh),
        ),
    ];
    for (case, worst) in cases {
        println!("{case:<18} {worst:.2e}");
    }
}

#[test]
fn linear_and_embedding_match_pytorch() {
    let g = Golden::load();
    let mut linear = Linear::<f32>::new(5, 3, &mut StdRng::seed_from_u64(0));
    load_state_dict(&mut linear, &g.params("linear")).unwrap();
    let tape = Tape::new();
    let x = tape.var(g.get("linear.input"));
    let y = linear.forward(&tape, x);
    let mut e = Errors {
        golden: &g,
        case: "linear".into(),
        worst: 0.0,
    };
    e.compare("output", &y.value());
    let grads = projected(&g, "linear.proj_output", y).backward();
    e.compare_grads(&linear, &grads);
    e.compare("grad_input", &grads[x]);
    println!("{:<18} {:.2e}", "linear", e.worst);

    let mut emb = Embedding::<f32>::new(10, 4, &mut StdRng::seed_from_u64(0)).with_padding_idx(0);
    load_state_dict(&mut emb, &g.params("embedding")).unwrap();
    let idx: Vec<usize> = g
        .get("embedding.indices")
        .data()
        .iter()
        .map(|&i| i as usize)
        .collect();
    let tape = Tape::new();
    let y = emb.forward(&tape, &idx, &[2, 5]);
    let mut e = Errors {
        golden: &g,
        case: "embedding".into(),
        worst: 0.0,
    };
    e.compare("output", &y.value());
    let grads = projected(&g, "embedding.proj_output", y).backward();
    e.compare_grads(&emb, &grads);
    println!("{:<18} {:.2e}", "embedding", e.worst);
}

#[test]
fn losses_match_pytorch() {
    let g = Golden::load();
    let targets = |case: &str| -> Vec<i64> {
        g.get(&format!("{case}.targets"))
            .data()
            .iter()
            .map(|&t| t as i64)
            .collect()
    };
    for case in ["cross_entropy", "nll", "mse", "bce_with_logits"] {
        let tape = Tape::new();
        let x = tape.var(g.get(&format!("{case}.input")));
        let loss = match case {
            "cross_entropy" => cross_entropy(x, &targets(case)),
            "nll" => nll_loss(x, &targets(case)),
            "mse" => mse_loss(x, tape.constant(g.get("mse.target"))),
            _ => bce_with_logits(x, tape.constant(g.get("bce_with_logits.target"))),
        };
        let mut e = Errors {
            golden: &g,
            case: case.into(),
            worst: 0.0,
        };
        e.compare("loss", &loss.value().reshape(&[1]));
        e.compare("grad_input", &loss.backward()[x]);
        println!("{case:<18} {:.2e}", e.worst);
    }
}

#[test]
fn a_state_dict_written_by_pytorch_loads_and_runs() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut lstm = Lstm::<f32>::new(
        RecurrentConfig::new(5, 4).num_layers(2).bidirectional(true),
        &mut StdRng::seed_from_u64(0),
    );
    rewind::nn::load_weights(&mut lstm, &data.join("torch_lstm_state_dict.safetensors")).unwrap();
    let expected: TensorFile<f32> =
        load_tensors(&data.join("torch_lstm_expected.safetensors")).unwrap();
    let tape = Tape::new();
    let out = lstm.forward(
        &tape,
        tape.constant(expected.tensors["input"].clone()),
        None,
        None,
    );
    for (name, ours) in [
        ("output", out.output),
        ("h_n", out.state.h),
        ("c_n", out.state.c.unwrap()),
    ] {
        let theirs = &expected.tensors[name];
        let diff = ours
            .value()
            .data()
            .iter()
            .zip(theirs.data())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "{name}: differs from PyTorch by {diff}");
    }
}
