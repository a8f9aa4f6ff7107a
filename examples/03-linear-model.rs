//! 03 · A linear model: `Linear` (PyTorch's `nn.Linear`, y = x Wᵀ + b), a mean squared error,
//! and an optimizer from `rewind::optim` doing 01's update for you; it recovers the weights that
//! made noisy data.
//!
//! Teaches: `Module` (a model is its list of named parameters), `Optimizer::step`, seeding, and
//! f32, the precision a model gets unless it asks for f64. Builds on
//! `02-tensors-and-broadcasting.rs`. Next: `04-rnn-by-hand.rs`, a recurrent network and
//! backpropagation through time.
//!
//! Run: `cargo run --example 03-linear-model`

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::Linear;
use rewind::optim::Sgd;
use rewind::prelude::*;

const N: usize = 64;
const TRUE_W: [f32; 3] = [2.0, -3.0, 0.5];
const TRUE_B: f32 = 1.0;

fn main() {
    let mut rng = StdRng::seed_from_u64(0);
    // Data: y = x·w + b + noise, for 64 points x drawn from U(-1, 1)³.
    let x = Tensor::<f32>::uniform(&[N, 3], -1.0, 1.0, &mut rng);
    let noise = Tensor::<f32>::normal(&[N, 1], 0.0, 0.05, &mut rng);
    let y: Vec<f32> = x
        .data()
        .chunks(3)
        .zip(noise.data())
        .map(|(row, e)| row.iter().zip(&TRUE_W).map(|(a, w)| a * w).sum::<f32>() + TRUE_B + e)
        .collect();
    let y = Tensor::from_vec(y, &[N, 1]).expect("one target per row");

    let mut model = Linear::new(3, 1, &mut rng); // W [1, 3] and b [1] ~ U(-1/√3, 1/√3)
    for (name, p) in model.params() {
        println!("parameter {name:<6} shape {:?}", p.shape());
    }
    println!("{} numbers to learn", model.num_params());

    let lr = 0.1;
    let mut sgd = Sgd::new(lr);
    let mut losses = Vec::new();
    for step in 0..=300 {
        let tape = Tape::new();
        let prediction = model.forward(&tape, tape.constant(x.clone())); // [64, 1]
        let loss = (prediction - tape.constant(y.clone())).powf(2.0).mean();
        let grads = loss.backward();
        losses.push(loss.item());
        if step % 50 == 0 {
            println!("step {step:>3}  mse {:.5}", loss.item());
        }
        let before = model.weight.value();
        sgd.step(&mut model, &grads);
        if step == 0 {
            // The optimizer's step is the update 01 wrote by hand: θ ← θ − lr·∂L/∂θ.
            let by_hand = &before - &(&grads[&model.weight] * lr as f32);
            assert!(model.weight.value().allclose(&by_hand), "SGD is θ − lr·g");
            println!("         SGD's first step is θ − lr·∂L/∂θ: checked");
        }
    }

    let w = model.weight.value();
    let b = model
        .bias
        .as_ref()
        .expect("Linear::new has a bias")
        .value()
        .item();
    println!("learned w = {w}, b = {b:.3}; the data came from w = {TRUE_W:?}, b = {TRUE_B}");
    for (learned, truth) in w.data().iter().zip(TRUE_W) {
        assert!((learned - truth).abs() < 0.05, "w: {learned} vs {truth}");
    }
    assert!((b - TRUE_B).abs() < 0.05, "b: {b} vs {TRUE_B}");
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    // The noise's variance, 0.05², is as low as the mean squared error can go.
    assert!(
        last < first / 100.0 && last < 0.005,
        "mse should fall: {first} → {last}"
    );
    println!("mse {first:.4} → {last:.5}, weights within 0.05 of the truth: checked");
}
