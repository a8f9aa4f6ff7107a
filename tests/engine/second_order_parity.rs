//! Hessian-vector products (`Var::hvp`) and Gauss-Newton-vector products (`Var::gnvp`) of LSTM and
//! GRU taggers against PyTorch, from the data `scripts/golden_hvp.py` wrote (torch 2.15, float64)
//! into tests/data/hvp_golden.safetensors: a recurrent stack (1 or 2 layers, one or two
//! directions, with and without packed variable lengths), a linear readout at every step and the
//! cross-entropy over the steps; H v and G v along a fixed random direction v over every
//! parameter. The loss, its gradient, H v and G v must match to 1e-12 (they do to about 1e-15),
//! measured per tensor as max |ours - torch| / max |torch|.

use std::collections::BTreeMap;

use crate::support::golden::{load, tensor, Cases};
use rewind::autograd::io::TensorFile;
use rewind::autograd::{Param, Tape, Tensor, Var};
use rewind::nn::loss::cross_entropy;
use rewind::nn::{
    load_state_dict, nested, GruCell, Linear, LstmCell, Module, Recurrent, RecurrentConfig,
    StandardCell,
};

const TOLERANCE: f64 = 1e-12;

struct Golden {
    file: TensorFile<f64>,
}

impl Golden {
    fn load() -> Self {
        Golden {
            file: load("hvp_golden.safetensors", "golden_hvp.py"),
        }
    }

    fn get(&self, case: &str, what: &str) -> Tensor<f64> {
        tensor(&self.file, &format!("{case}.{what}"))
    }

    /// The tensors `{case}.{group}.*`, by their PyTorch names.
    fn group(&self, case: &str, group: &str) -> BTreeMap<String, Tensor<f64>> {
        let prefix = format!("{case}.{group}.");
        self.file
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.clone())))
            .collect()
    }

    /// A tensor of whole numbers stored as floats.
    fn integers(&self, case: &str, what: &str) -> Vec<i64> {
        self.get(case, what)
            .data()
            .iter()
            .map(|&x| x as i64)
            .collect()
    }
}

impl Cases for Golden {
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.file.metadata
    }
}

/// PyTorch's `Tagger`: `rnn`, a recurrent stack, and `head`, a linear readout of its output.
struct Tagger<C> {
    rnn: Recurrent<C, f64>,
    head: Linear<f64>,
}

impl<C: StandardCell<f64>> Module<f64> for Tagger<C> {
    fn params(&self) -> Vec<(String, &Param<f64>)> {
        let mut all = nested("rnn", self.rnn.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// One case: the tagger loaded from PyTorch's state_dict, its inputs and targets, and v.
struct Case<C> {
    tagger: Tagger<C>,
    input: Tensor<f64>,
    targets: Vec<i64>,
    lengths: Option<Vec<usize>>,
    classes: usize,
}

impl<C: StandardCell<f64>> Case<C> {
    fn load(golden: &Golden, name: &'static str) -> Self {
        let g = golden;
        let config =
            RecurrentConfig::new(g.number(name, "input_size"), g.number(name, "hidden_size"))
                .num_layers(g.number(name, "num_layers"))
                .bidirectional(g.flag(name, "bidirectional"));
        let features = config.hidden_size * if config.bidirectional { 2 } else { 1 };
        let classes = g.number(name, "classes");
        let mut tagger = Tagger {
            rnn: Recurrent::zeros(config),
            head: Linear::zeros(features, classes),
        };
        load_state_dict(&mut tagger, &g.group(name, "param")).expect("PyTorch's names and shapes");
        Case {
            tagger,
            input: g.get(name, "input"),
            targets: g.integers(name, "targets"),
            lengths: g.flag(name, "has_lengths").then(|| {
                g.integers(name, "lengths")
                    .iter()
                    .map(|&l| l as usize)
                    .collect()
            }),
            classes,
        }
    }

    /// The logits [T·B, C] and the mean cross-entropy over the targets that count.
    fn forward<'t>(&self, tape: &'t Tape<f64>) -> (Var<'t, f64>, Var<'t, f64>) {
        let x = tape.constant(self.input.clone());
        let out = self
            .tagger
            .rnn
            .forward(tape, x, None, self.lengths.as_deref());
        let logits = self.tagger.head.forward(tape, out.output);
        let rows = self.targets.len();
        let logits = logits.reshape(&[rows, self.classes]);
        (logits, cross_entropy(logits, &self.targets))
    }

    /// Every parameter on `tape`, in the model's order.
    fn wrt<'t>(&self, tape: &'t Tape<f64>) -> Vec<Var<'t, f64>> {
        self.tagger
            .params()
            .into_iter()
            .map(|(_, p)| tape.param(p))
            .collect()
    }
}

/// Collects the largest error of a case, failing on any tensor beyond the tolerance.
struct Errors<'g> {
    golden: &'g Golden,
    case: &'static str,
    worst: f64,
}

impl Errors<'_> {
    fn compare(&mut self, what: &str, ours: &Tensor<f64>) {
        let theirs = self.golden.get(self.case, what);
        assert_eq!(
            ours.shape(),
            theirs.shape(),
            "{}.{what}: shapes differ",
            self.case
        );
        let scale = theirs.data().iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff = ours
            .data()
            .iter()
            .zip(theirs.data())
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        let err = diff / scale.max(f64::MIN_POSITIVE);
        assert!(
            err <= TOLERANCE,
            "{}.{what}: relative error {err:e} exceeds {TOLERANCE:e}",
            self.case
        );
        self.worst = self.worst.max(err);
    }

    /// `ours[k]` against `{group}.{name}` for each parameter's name, in the model's order.
    fn compare_all(&mut self, group: &str, names: &[String], ours: &[Tensor<f64>]) {
        assert_eq!(names.len(), ours.len());
        for (name, t) in names.iter().zip(ours) {
            self.compare(&format!("{group}.{name}"), t);
        }
    }
}

/// The loss, its gradient, H v and G v of case `name`, each on a fresh tape; returns the worst
/// relative error.
fn check<C: StandardCell<f64>>(golden: &Golden, name: &'static str) -> f64 {
    let case = Case::<C>::load(golden, name);
    let names: Vec<String> = case.tagger.params().into_iter().map(|(n, _)| n).collect();
    let directions = golden.group(name, "v");
    let v: Vec<Tensor<f64>> = names.iter().map(|n| directions[n].clone()).collect();
    let mut errors = Errors {
        golden,
        case: name,
        worst: 0.0,
    };

    let tape = Tape::new();
    let (_, loss) = case.forward(&tape);
    errors.compare("loss", &loss.value().reshape(&[1]));
    let grads = loss.backward();
    let grad: Vec<Tensor<f64>> = case
        .tagger
        .params()
        .iter()
        .map(|(_, p)| grads[*p].clone())
        .collect();
    errors.compare_all("grad", &names, &grad);

    let tape = Tape::new();
    let (_, loss) = case.forward(&tape);
    errors.compare_all("hv", &names, &loss.hvp(&case.wrt(&tape), &v));

    let tape = Tape::new();
    let (logits, loss) = case.forward(&tape);
    errors.compare_all("gv", &names, &loss.gnvp(logits, &case.wrt(&tape), &v));
    errors.worst
}

#[test]
fn lstm_one_layer_hvp_and_gnvp_match_pytorch() {
    check::<LstmCell<f64>>(&Golden::load(), "lstm_l1");
}

#[test]
fn lstm_two_layers_bidirectional_hvp_and_gnvp_match_pytorch() {
    check::<LstmCell<f64>>(&Golden::load(), "lstm_l2_bi");
}

#[test]
fn lstm_two_layers_bidirectional_with_lengths_hvp_and_gnvp_match_pytorch() {
    check::<LstmCell<f64>>(&Golden::load(), "lstm_l2_bi_lengths");
}

#[test]
fn gru_two_layers_bidirectional_with_lengths_hvp_and_gnvp_match_pytorch() {
    check::<GruCell<f64>>(&Golden::load(), "gru_l2_bi_lengths");
}
