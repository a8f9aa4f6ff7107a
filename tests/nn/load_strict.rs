//! Loading layers and whole models straight from a file, no generator needed; the strict load
//! that lists missing, unexpected and misshapen tensors as PyTorch's `load_state_dict` does, and
//! the non-strict one that loads what matches and returns the rest. (A state_dict PyTorch wrote
//! loads with `Lstm::load` in nn_more_parity.rs.)

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Float, Param, Tensor};
use rewind::nn::{
    load_module, load_state_dict, load_state_dict_non_strict, load_weights_non_strict, nested,
    save_weights, Embedding, Gru, Linear, Lstm, Module, RecurrentConfig, Rnn, Unmatched,
    WeightsError,
};

/// A file in a directory of this test's own (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("rewind-load-{}-{test}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn same_params<F: Float>(a: &dyn Module<F>, b: &dyn Module<F>) {
    let (a, b) = (a.params(), b.params());
    assert_eq!(a.len(), b.len());
    for ((na, pa), (nb, pb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(pa.value(), pb.value(), "{na}");
    }
}

#[test]
fn every_layer_loads_from_a_file_without_a_generator() {
    let path = scratch("linear.safetensors");
    let linear = Linear::<f32>::new(5, 3, &mut rng(1));
    save_weights(&linear, &path).unwrap();
    same_params(&linear, &Linear::<f32>::load(5, 3, &path).unwrap());

    let bias_free = Linear::<f32>::new(5, 3, &mut rng(2)).without_bias();
    save_weights(&bias_free, &path).unwrap();
    let loaded = Linear::<f32>::load_without_bias(5, 3, &path).unwrap();
    assert!(loaded.bias.is_none());
    same_params(&bias_free, &loaded);

    let path = scratch("embedding.safetensors");
    let table = Embedding::<f32>::new(10, 4, &mut rng(3));
    save_weights(&table, &path).unwrap();
    same_params(&table, &Embedding::<f32>::load(10, 4, &path).unwrap());

    let config = RecurrentConfig::new(5, 4).num_layers(2).bidirectional(true);
    let path = scratch("rnn.safetensors");
    let rnn = Rnn::<f64>::init(config.bias(false), &mut rng(4));
    save_weights(&rnn, &path).unwrap();
    same_params(&rnn, &Rnn::<f64>::load(config.bias(false), &path).unwrap());

    let path = scratch("gru.safetensors");
    let gru = Gru::<f64>::init(config.learn_initial_state(true), &mut rng(5));
    save_weights(&gru, &path).unwrap();
    let loaded = Gru::<f64>::load(config.learn_initial_state(true), &path).unwrap();
    same_params(&gru, &loaded);

    let path = scratch("lstm.safetensors");
    let lstm = Lstm::<f32>::new(config, &mut rng(6));
    save_weights(&lstm, &path).unwrap();
    same_params(&lstm, &Lstm::<f32>::load(config, &path).unwrap());
}

/// A zero-initialised layer is what `load` fills: every parameter zero, the shapes of `new`.
#[test]
fn zeros_has_the_shapes_of_new_and_no_randomness() {
    let config = RecurrentConfig::new(3, 2).num_layers(2).bidirectional(true);
    let drawn = Lstm::<f64>::init(config, &mut rng(0));
    let zeros = Lstm::<f64>::zeros(config);
    for ((na, pa), (nb, pb)) in drawn.params().iter().zip(zeros.params()) {
        assert_eq!((na, pa.shape()), (&nb, pb.shape()));
        assert!(pb.value().data().iter().all(|&v| v == 0.0), "{nb}");
    }
    assert_eq!(Linear::<f64>::zeros(3, 2).num_params(), 8);
    assert_eq!(Embedding::<f64>::zeros(7, 2).num_params(), 14);
}

/// A model of the user's own.
struct Model {
    encoder: Lstm,
    head: Linear,
}

impl Model {
    fn new(rng: &mut StdRng) -> Self {
        Model {
            encoder: Lstm::new(RecurrentConfig::new(3, 4).bias(false), rng),
            head: Linear::new(4, 2, rng),
        }
    }
}

impl Module for Model {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("encoder", self.encoder.params());
        p.extend(nested("head", self.head.params()));
        p
    }
}

#[test]
fn any_module_loads_through_its_own_constructor() {
    let path = scratch("model.safetensors");
    let saved = Model::new(&mut rng(7));
    save_weights(&saved, &path).unwrap();
    let loaded = load_module(&path, Model::new).unwrap();
    same_params(&saved, &loaded);

    let other = scratch("other.safetensors");
    save_weights(&Linear::<f32>::new(4, 2, &mut rng(8)), &other).unwrap();
    let err = load_module(&other, Model::new)
        .err()
        .expect("a Linear's file");
    assert!(err.to_string().contains("missing"), "{err}");
}

fn tensors(entries: &[(&str, &[usize])]) -> BTreeMap<String, Tensor<f32>> {
    entries
        .iter()
        .map(|&(n, s)| (n.to_string(), Tensor::full(s, 1.0)))
        .collect()
}

/// PyTorch's strict load: missing keys, then unexpected keys, then size mismatches, every one
/// named, and nothing loaded.
#[test]
fn a_strict_load_lists_missing_unexpected_and_misshapen_names() {
    let mut model = Model::new(&mut rng(9));
    let before = model.head.weight.value();
    let file = tensors(&[
        ("encoder.weight_ih_l0", &[16, 3]),
        ("encoder.bias_ih_l0", &[16]),
        ("head.weight", &[2, 5]),
        ("head.bias", &[2]),
    ]);
    let err = load_state_dict(&mut model, &file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the weights do not fit the model: missing `encoder.weight_hh_l0` (the model expects \
         [16, 4]); unexpected `encoder.bias_ih_l0` [16] (the model has no such parameter); \
         `head.weight` has shape [2, 5], the model expects [2, 4]"
    );
    let WeightsError::Mismatch(problems) = err else {
        panic!("a mismatch")
    };
    assert_eq!(problems.len(), 3);
    assert_eq!(
        model.head.weight.value(),
        before,
        "a failed load changes nothing"
    );
}

/// PyTorch's `strict=False`: what matches loads; the missing and unexpected names come back.
#[test]
fn a_non_strict_load_loads_what_matches_and_returns_the_rest() {
    let mut model = Model::new(&mut rng(10));
    let encoder_before = model.encoder.params()[0].1.value();
    let file = tensors(&[("head.weight", &[2, 4]), ("head.scale", &[2])]);
    let Unmatched {
        missing,
        unexpected,
    } = load_state_dict_non_strict(&mut model, &file).unwrap();
    assert_eq!(
        missing,
        ["encoder.weight_ih_l0", "encoder.weight_hh_l0", "head.bias"]
    );
    assert_eq!(unexpected, ["head.scale"]);
    assert_eq!(model.head.weight.value(), Tensor::full(&[2, 4], 1.0));
    assert_eq!(model.encoder.params()[0].1.value(), encoder_before);

    let path = scratch("partial.safetensors");
    save_weights(&Linear::<f32>::new(4, 2, &mut rng(11)), &path).unwrap();
    let mut head = Linear::<f32>::zeros(4, 2).without_bias();
    let unmatched = load_weights_non_strict(&mut head, &path).unwrap();
    assert!(unmatched.missing.is_empty());
    assert_eq!(unmatched.unexpected, ["bias"]);
}

/// As in PyTorch, a size mismatch fails even a non-strict load, and then nothing is loaded.
#[test]
fn a_non_strict_load_still_refuses_a_misshapen_tensor() {
    let mut model = Model::new(&mut rng(12));
    let before = model.head.bias.as_ref().unwrap().value();
    let file = tensors(&[("head.bias", &[2]), ("head.weight", &[4, 2])]);
    let err = load_state_dict_non_strict(&mut model, &file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the weights do not fit the model: `head.weight` has shape [4, 2], the model expects [2, 4]"
    );
    assert_eq!(model.head.bias.as_ref().unwrap().value(), before);
}
