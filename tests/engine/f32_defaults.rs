//! A program that names no float type gets f32, as PyTorch gets float32: the layers' `new`
//! constructors are f32 (as `HashMap::new` is the default hasher's), and what they touch follows.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{Embedding, Gru, Linear, Lstm, Module, RecurrentConfig, Rnn};
use rewind::prelude::*;

/// Whether `value` is of type `U`.
fn is<U: 'static, T: 'static>(_: &T) -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>()
}

#[test]
fn constructors_alone_give_f32() {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::new(RecurrentConfig::new(8, 16), &mut rng);
    let gru = Gru::new(RecurrentConfig::new(8, 16), &mut rng);
    let rnn = Rnn::new(RecurrentConfig::new(8, 16), &mut rng);
    let head = Linear::new(16, 4, &mut rng);
    let embed = Embedding::new(10, 8, &mut rng);
    assert!(is::<Lstm<f32>, _>(&lstm));
    assert!(is::<Gru<f32>, _>(&gru));
    assert!(is::<Rnn<f32>, _>(&rnn));
    assert!(is::<Linear<f32>, _>(&head));
    assert!(is::<Embedding<f32>, _>(&embed));
}

#[test]
fn float_literals_follow_the_model_into_f32() {
    // The README's recurrent example: nothing names a float type, and literals such as -1.0
    // would fall back to f64 if nothing else fixed the type.
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::new(RecurrentConfig::new(8, 16).num_layers(2), &mut rng);
    let head = Linear::new(16, 4, &mut rng);
    let x = Tensor::uniform(&[5, 3, 8], -1.0, 1.0, &mut rng);
    let tape = Tape::new();
    let out = lstm.forward(&tape, tape.constant(x.clone()), None, None);
    let logits = head.forward(&tape, out.output).reshape(&[15, 4]);
    let loss = logits.cross_entropy(&[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]) * 0.5;
    let grads = loss.backward();
    assert!(is::<Tensor<f32>, _>(&x));
    assert!(is::<f32, _>(&loss.item()));
    assert_eq!(grads.len(), lstm.params().len() + head.params().len());
}
