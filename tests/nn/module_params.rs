//! A model declares its parameters once, in `Module::params`: that one list names them for saving
//! and loading, and an optimizer updates through it. A `Param` changes through `&Param` (`set`,
//! `update`), copy-on-write, so a tape that recorded the old value keeps it.

use crate::support::char_rnn::scratch_dir;
use crate::support::panics::panic_of;
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Grads, Param, Tape, Tensor};
use rewind::nn::{
    load_weights, nested, save_weights, state_dict, Embedding, Gru, Linear, Module, RecurrentConfig,
};
use rewind::optim::{Optimizer, Sgd};

/// An embedding, a GRU and a head, listed in that order.
struct Tagger {
    embed: Embedding,
    rnn: Gru,
    head: Linear,
}

impl Tagger {
    fn new(seed: u64) -> Self {
        let rng = &mut StdRng::seed_from_u64(seed);
        Tagger {
            embed: Embedding::new(7, 3, rng),
            rnn: Gru::new(RecurrentConfig::new(3, 4), rng),
            head: Linear::new(4, 2, rng),
        }
    }
}

impl Module for Tagger {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("embed", self.embed.params());
        p.extend(nested("rnn", self.rnn.params()));
        p.extend(nested("head", self.head.params()));
        p
    }
}

/// The same parts as `Tagger`, listed head first.
struct HeadFirst(Tagger);

impl Module for HeadFirst {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("head", self.0.head.params());
        p.extend(nested("embed", self.0.embed.params()));
        p.extend(nested("rnn", self.0.rnn.params()));
        p
    }
}

fn names(model: &dyn Module) -> Vec<String> {
    model.params().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn params_names_every_parameter_once_in_declaration_order() {
    let model = Tagger::new(0);
    assert_eq!(
        names(&model),
        [
            "embed.weight",
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.bias_hh_l0",
            "head.weight",
            "head.bias",
        ]
    );
    // 7·3 + 12·3 + 12·4 + 12 + 12 + 2·4 + 2
    assert_eq!(model.num_params(), 139);
}

/// What is saved is `params()` under its names; what is loaded is matched by name, whatever
/// order the loading model lists its parameters in.
#[test]
fn save_and_load_round_trip_through_the_names_params_gives() {
    let path = scratch_dir("rewind-module-params").join("tagger.safetensors");
    let saved = Tagger::new(1);
    save_weights(&saved, &path).unwrap();
    let file: Vec<String> = state_dict(&saved).into_keys().collect();
    let mut sorted = names(&saved);
    sorted.sort();
    assert_eq!(file, sorted, "the file holds exactly the listed names");

    let mut same = Tagger::new(2);
    load_weights(&mut same, &path).unwrap();
    let mut reordered = HeadFirst(Tagger::new(3));
    load_weights(&mut reordered, &path).unwrap();
    for (name, p) in saved.params() {
        let find = |m: &dyn Module| {
            let params = m.params();
            let (_, q) = params.iter().find(|(n, _)| *n == name).expect("same names");
            q.value()
        };
        assert_eq!(find(&same), p.value(), "{name}");
        assert_eq!(
            find(&reordered),
            p.value(),
            "{name} (listed in another order)"
        );
    }
}

/// SGD with lr 0.5 and every gradient 1 moves each listed parameter by exactly -0.5: each is
/// updated, and only once.
#[test]
fn an_optimizer_step_through_dyn_module_updates_every_listed_parameter_once() {
    let mut model = Tagger::new(4);
    let before: Vec<Tensor> = model.params().iter().map(|(_, p)| p.value()).collect();
    let ones = model
        .params()
        .into_iter()
        .map(|(name, p)| (name, Tensor::ones(&p.shape())));
    let grads = Grads::from_named(model.params(), ones).unwrap();
    let dyn_model: &mut dyn Module = &mut model;
    Sgd::new(0.5).step(dyn_model, &grads);
    for ((name, p), old) in model.params().into_iter().zip(&before) {
        let expected = old.map(|w| w - 0.5);
        assert_eq!(p.value(), expected, "{name}");
    }
}

#[test]
#[rustfmt::skip] // the `line!()` must stay on the line of the call
fn setting_a_value_of_another_shape_panics_at_the_callers_line_naming_both_shapes() {
    let p = Param::named("weight", Tensor::<f32>::zeros(&[2, 3]));
    let (msg, file, line) = panic_of(|| p.set(Tensor::ones(&[3, 2]))); let expected = line!();
    assert_eq!(msg, "Param::set: shapes differ: lhs [2, 3] vs rhs [3, 2]");
    assert!(file.ends_with("module_params.rs"), "panicked in {file}, not at the caller");
    assert_eq!(line, expected);
    // The panic happened with the value locked; it is still there, unchanged, and settable.
    assert_eq!(p.value(), Tensor::zeros(&[2, 3]));
    p.set(Tensor::ones(&[2, 3]));
    assert_eq!(p.value(), Tensor::ones(&[2, 3]));
}

/// `update` writes copy-on-write: a tape that recorded w = [1, 2] keeps it, and the backward of
/// Σ w² gives 2w at the recorded value, not at the updated one.
#[test]
fn update_leaves_the_value_a_tape_recorded_unchanged() {
    let w = Param::new(Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    let snapshot = w.value();
    let tape = Tape::new();
    let v = tape.param(&w);
    let loss = (v * v).sum();
    w.update(|t| t.data_mut().fill(10.0));
    assert_eq!(w.value().data(), &[10.0, 10.0]);
    assert_eq!(v.value().data(), &[1.0, 2.0], "the tape's value");
    assert_eq!(snapshot.data(), &[1.0, 2.0], "an earlier snapshot");
    assert_eq!(loss.backward()[&w].data(), &[2.0, 4.0]);
}

/// The lock keeps a parameter, and a layer made of parameters, shareable across threads.
#[test]
fn params_and_layers_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Param>();
    send_sync::<Linear>();
    send_sync::<Embedding>();
}

/// An embedding whose table is also the output projection, listed under both names.
struct Tied {
    embed: Embedding,
}

impl Module for Tied {
    fn params(&self) -> Vec<(String, &Param)> {
        vec![
            ("embed.weight".into(), &self.embed.weight),
            ("head.weight".into(), &self.embed.weight),
        ]
    }
}

/// A weight listed twice gets one step, as PyTorch's `named_parameters` lists a tied weight once:
/// its gradient already holds both uses.
#[test]
fn a_tied_weight_listed_under_two_names_is_stepped_once() {
    let mut model = Tied {
        embed: Embedding::new(3, 2, &mut StdRng::seed_from_u64(5)),
    };
    let before = model.embed.weight.value();
    let mut grads = Grads::default();
    grads
        .insert(&model.embed.weight, Tensor::ones(&[3, 2]))
        .unwrap();
    Sgd::new(0.5).step(&mut model, &grads);
    assert_eq!(model.embed.weight.value(), before.map(|w| w - 0.5));
}

/// A configuration is a value to copy, as PyTorch's keyword arguments are: one builds several
/// stacks without `.clone()`.
#[test]
fn a_recurrent_config_is_copy() {
    fn twice<T: Copy>(t: T) -> (T, T) {
        (t, t)
    }
    let config = RecurrentConfig::new(3, 4).num_layers(2);
    let (a, b) = twice(config);
    assert_eq!((a, b), (config, config));
}

/// Standalone cells as PyTorch builds and steps them: `GruCell::new(in, hidden, rng)` draws what
/// `init` draws (no nonlinearity argument a GRU would ignore), and a step takes h alone (RNN,
/// GRU) or the pair (h, c) (LSTM), giving what the `State` form gives. The paths the compiler
/// prints in its hints (`rewind::rewind_nn::Cell`) resolve.
#[test]
fn standalone_cells_build_and_step_as_in_pytorch() {
    use rewind::nn::{GruCell, LstmCell, Nonlinearity, RnnCell, StandardCell, State};
    use rewind::rewind_nn::Cell;
    let seeded = || StdRng::seed_from_u64(5);
    let gru = GruCell::new(3, 4, &mut seeded());
    let same = GruCell::<f32>::init(3, 4, Nonlinearity::Tanh, &mut seeded());
    for ((_, a), (_, b)) in gru.params().iter().zip(same.params()) {
        assert_eq!(a.value(), b.value());
    }
    let rnn = RnnCell::new(3, 4, &mut seeded()).with_nonlinearity(Nonlinearity::Relu);
    assert_eq!(rnn.nonlinearity, Nonlinearity::Relu);
    let lstm = LstmCell::new(3, 4, &mut seeded());
    let tape = Tape::new();
    let x = tape.constant(Tensor::uniform(&[2, 3], -1.0, 1.0, &mut seeded()));
    let h = tape.constant(Tensor::uniform(&[2, 4], -1.0, 1.0, &mut seeded()));
    let c = tape.constant(Tensor::uniform(&[2, 4], -1.0, 1.0, &mut seeded()));
    let h_only = State { h, c: None };
    assert_eq!(
        gru.forward(&tape, x, h).h.value(),
        gru.forward(&tape, x, h_only).h.value()
    );
    assert_eq!(
        rnn.forward(&tape, x, h).h.value(),
        rnn.forward(&tape, x, h_only).h.value()
    );
    let pair = lstm.forward(&tape, x, (h, c));
    let state = lstm.forward(&tape, x, State { h, c: Some(c) });
    assert_eq!(pair.h.value(), state.h.value());
    assert_eq!(pair.c.unwrap().value(), state.c.unwrap().value());
}

/// `LstmCell::new_projected(in, hidden, proj, rng)` is the f32 shorthand of
/// `LstmCell::<f32>::init_projected`, as `new` is of the unprojected cell: the same parameters,
/// names and shapes (`weight_hr` [P, H]), drawn from the same generator, and a step gives h
/// [B, P] and c [B, H]. A projection not smaller than the hidden size is refused at the caller's
/// line, as `torch.nn.LSTM(proj_size=)` refuses it.
#[test]
fn a_projected_lstm_cell_has_an_f32_shorthand() {
    use rewind::nn::{LstmCell, Nonlinearity, StandardCell};
    use rewind::rewind_nn::Cell;
    let seeded = || StdRng::seed_from_u64(11);
    let cell = LstmCell::new_projected(3, 4, 2, &mut seeded());
    let same = LstmCell::<f32>::init_projected(3, 4, 2, &mut seeded());
    let (a, b) = (cell.params(), same.params());
    assert_eq!(a.len(), 5);
    for ((name, p), (same_name, q)) in a.iter().zip(&b) {
        assert_eq!(name, same_name);
        assert_eq!(p.value(), q.value(), "{name}");
    }
    assert_eq!(a[4].0, "weight_hr");
    assert_eq!(a[4].1.value().shape(), &[2, 4]);
    let unprojected = LstmCell::<f32>::init(3, 4, Nonlinearity::Tanh, &mut seeded());
    assert_ne!(
        a[1].1.value().shape(),
        unprojected.params()[1].1.value().shape()
    );
    let tape = Tape::new();
    let x = tape.constant(Tensor::uniform(&[5, 3], -1.0, 1.0, &mut seeded()));
    let h = tape.constant(Tensor::zeros(&[5, 2]));
    let c = tape.constant(Tensor::zeros(&[5, 4]));
    let next = cell.forward(&tape, x, (h, c));
    assert_eq!(next.h.value().shape(), &[5, 2]);
    assert_eq!(next.c.unwrap().value().shape(), &[5, 4]);
    let line = line!() + 1;
    let (msg, file, at) = panic_of(|| drop(LstmCell::new_projected(3, 4, 4, &mut seeded())));
    assert_eq!(
        msg,
        "lstm: proj_size must be in 1..4 (smaller than hidden_size, as PyTorch requires), got 4"
    );
    assert!(
        file.ends_with("module_params.rs") && at == line,
        "panicked at {file}:{at}"
    );
}

/// `forget_bias(1.0)` (rewind's addition; PyTorch's issue 20102) starts every LSTM cell's forget
/// gate at bias 1: b_ih's forget block (rows H..2H) is 1 and b_hh's 0, and every other number is
/// what PyTorch's initialisation draws from the same generator. A standalone cell takes it too,
/// and a cell without a forget gate or without biases refuses it at the caller's line.
#[test]
fn a_forget_bias_sets_the_forget_blocks_and_draws_the_rest_as_pytorch() {
    use rewind::nn::{Gru, Lstm, LstmCell, StandardCell};
    let h = 4;
    let config = RecurrentConfig::new(3, h).num_layers(2).bidirectional(true);
    let plain = Lstm::<f64>::init(config, &mut StdRng::seed_from_u64(9));
    let biased = Lstm::<f64>::init(config.forget_bias(1.0), &mut StdRng::seed_from_u64(9));
    for ((name, a), (_, b)) in plain.params().iter().zip(biased.params()) {
        let (a, b) = (a.value(), b.value());
        for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
            let forget = name.starts_with("bias") && (h..2 * h).contains(&i);
            match (forget, name.starts_with("bias_ih")) {
                (true, true) => assert_eq!(*y, 1.0, "{name}[{i}]"),
                (true, false) => assert_eq!(*y, 0.0, "{name}[{i}]"),
                (false, _) => assert_eq!(x, y, "{name}[{i}]"),
            }
        }
    }
    let cell = LstmCell::new(3, h, &mut StdRng::seed_from_u64(9)).with_forget_bias(1.0);
    assert_eq!(
        cell.params.bias_ih.as_ref().unwrap().value().data()[h..2 * h],
        [1.0; 4]
    );
    let gru = RecurrentConfig::new(3, h).forget_bias(1.0);
    let (msg, file, _) = panic_of(|| {
        Gru::<f64>::init(gru, &mut StdRng::seed_from_u64(0));
    });
    assert_eq!(
        msg,
        "recurrent: forget_bias needs a cell with a forget gate (an LSTM), not GruCell<f64>"
    );
    assert!(file.ends_with("module_params.rs"), "{file}");
    let (msg, _, _) = panic_of(|| {
        Lstm::<f64>::init(
            config.forget_bias(1.0).bias(false),
            &mut StdRng::seed_from_u64(0),
        );
    });
    assert_eq!(
        msg,
        "recurrent: forget_bias needs biases, and bias is false"
    );
}

/// `proj_size(P)` (`torch.nn.LSTM(..., proj_size=P)`) adds `weight_hr_l{k}` [P, H] to each layer
/// and direction, after the four others in torch's order (weight_ih, weight_hh, bias_ih,
/// bias_hh, weight_hr), every one drawn ~ U(-1/√H, 1/√H) from the generator in that order, as
/// torch's `reset_parameters` walks `_flat_weights`. weight_hh is [4H, P] (it reads h, now of P
/// features) and the second layer reads D·P inputs.
#[test]
fn a_projected_lstm_draws_weight_hr_last_in_each_layer_and_direction() {
    use rewind::nn::Lstm;
    let (h, p) = (4, 3);
    let config = RecurrentConfig::new(5, h)
        .num_layers(2)
        .bidirectional(true)
        .proj_size(p);
    let lstm = Lstm::<f64>::init(config, &mut StdRng::seed_from_u64(3));
    let mut rng = StdRng::seed_from_u64(3);
    let k = 1.0 / (h as f64).sqrt();
    let mut expected = Vec::new();
    for layer in 0..2 {
        let input = if layer == 0 { 5 } else { 2 * p };
        for suffix in ["", "_reverse"] {
            for (name, shape) in [
                ("weight_ih", vec![4 * h, input]),
                ("weight_hh", vec![4 * h, p]),
                ("bias_ih", vec![4 * h]),
                ("bias_hh", vec![4 * h]),
                ("weight_hr", vec![p, h]),
            ] {
                let drawn = Tensor::<f64>::uniform(&shape, -k, k, &mut rng);
                expected.push((format!("{name}_l{layer}{suffix}"), drawn));
            }
        }
    }
    let ours: Vec<(String, Tensor<f64>)> = lstm
        .params()
        .into_iter()
        .map(|(name, p)| (name, p.value()))
        .collect();
    assert_eq!(ours, expected);
}

/// A projection must be smaller than H and positive (as PyTorch requires), and only an LSTM
/// has one; each refusal names the value, at the caller's line.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn a_projection_out_of_range_or_on_another_cell_panics_at_the_callers_line() {
    use rewind::nn::{Gru, Lstm, LstmCell, Recurrent, Rnn};
    let config = RecurrentConfig::new(5, 4);
    let rng = || StdRng::seed_from_u64(0);
    type Case = (Box<dyn FnOnce()>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(move || { Lstm::<f64>::init(config.proj_size(4), &mut rng()); }), line!(), "recurrent: proj_size must be in 1..4 (smaller than hidden_size, as PyTorch requires), got 4"),
        (Box::new(move || { Lstm::<f64>::zeros(config.proj_size(0)); }), line!(), "recurrent: proj_size must be in 1..4 (smaller than hidden_size, as PyTorch requires), got 0"),
        (Box::new(move || { Gru::<f64>::init(config.proj_size(2), &mut rng()); }), line!(), "recurrent: proj_size needs an LSTM, not GruCell<f64>"),
        (Box::new(move || { Rnn::<f64>::zeros(config.proj_size(2)); }), line!(), "recurrent: proj_size needs an LSTM, not RnnCell<f64>"),
        (Box::new(move || { Recurrent::with_cells(config.proj_size(5), |i, h| LstmCell::<f64>::init_projected(i, h, 2, &mut rng())); }), line!(), "recurrent: proj_size must be in 1..4 (smaller than hidden_size, as PyTorch requires), got 5"),
        (Box::new(move || { LstmCell::<f64>::init_projected(5, 4, 4, &mut rng()); }), line!(), "lstm: proj_size must be in 1..4 (smaller than hidden_size, as PyTorch requires), got 4"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(file.ends_with("module_params.rs"), "{expected}: reported in {file}");
        assert_eq!(at, line, "{expected}: reported at line {at}, not the caller's {line}");
    }
}
