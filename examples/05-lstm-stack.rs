//! 05 · An LSTM stack: `Lstm` is PyTorch's `nn.LSTM` (its equations, parameter names, shapes and
//! initialisation), and it is nothing but `LstmCell`s looped over time, layer after layer. Part 1
//! unrolls the cells by hand and checks the stack against them; part 2 trains a two-layer stack
//! with a linear head to recall the input it saw three steps earlier, which takes memory.
//!
//! ```text
//! i, f, o = σ(x W_i*ᵀ + b_i* + h W_h*ᵀ + b_h*)   g = tanh(x W_igᵀ + b_ig + h W_hgᵀ + b_hg)
//! c' = f ⊙ c + i ⊙ g                            h' = o ⊙ tanh(c')
//! ```
//! Shapes: input [T, B, in]; output [T, B, H], the last layer's h at every step; final h and c
//! [layers, B, H]. Gates are stacked by rows in the order i, f, g, o (`weight_ih_l0` is [4H, in]).
//! Builds on `04-rnn-by-hand.rs`. Next: `06-truncated-bptt.rs`, sequences longer than one tape.
//!
//! Run: `cargo run --example 05-lstm-stack`

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::{nested, Linear, Lstm, RecurrentConfig};
use rewind::optim::Adam;
use rewind::prelude::*;

fn main() {
    stack_is_its_cells_unrolled();
    learn_to_recall();
}

/// Part 1, in f64: the stack's output and final states against its own cells stepped by hand.
fn stack_is_its_cells_unrolled() {
    println!("1. A 2-layer LSTM stack, and the same cells unrolled by hand");
    let (steps, batch, input, hidden, layers) = (6, 2, 3, 4, 2);
    let mut rng = StdRng::seed_from_u64(0);
    let config = RecurrentConfig::new(input, hidden).num_layers(layers);
    let lstm = Lstm::<f64>::init(config, &mut rng);
    for (name, p) in lstm.params() {
        println!("   {name:<13} {:?}", p.shape());
    }
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::uniform(&[steps, batch, input], -1.0, 1.0, &mut rng));
    let out = lstm.forward(&tape, x, None, None); // None: h_0 = c_0 = 0
    let (output, h_n) = (out.output.shape(), out.state.h.shape());
    println!("   output {output:?}, final h {h_n:?}");

    // Layer 0 reads x_t; each layer above reads the h_t of the layer below.
    let mut seq: Vec<Var<f64>> = (0..steps).map(|t| x.select(0, t)).collect();
    for layer in 0..layers {
        let cell = lstm.cell(layer, 0); // direction 0: forward in time
        let mut state = cell.zero_state(&tape, batch);
        for x_t in seq.iter_mut() {
            state = cell.forward(&tape, *x_t, state);
            *x_t = state.h;
        }
        let c = state.c.expect("an LSTM state has c");
        assert_same("final h", out.state.h.select(0, layer), state.h);
        assert_same("final c", out.state.c.expect("c").select(0, layer), c);
    }
    assert_same("output", out.output, stack(&seq, 0));
    println!("   output and each layer's final (h, c) = the cells by hand, checked");
}

/// The stack and a readout, as one `Module` so that one optimizer updates both.
struct Recall {
    lstm: Lstm,
    head: Linear,
}

impl Module for Recall {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut all = nested("lstm", self.lstm.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// Part 2, in f32: inputs ±1 at random; the target at step t is the input of step t − 3.
fn learn_to_recall() {
    const DELAY: usize = 3;
    println!(
        "2. Training to output the input of {DELAY} steps before (always guessing 0 scores 1)"
    );
    let (steps, batch, hidden) = (16, 32, 24);
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = Recall {
        lstm: Lstm::new(RecurrentConfig::new(1, hidden).num_layers(2), &mut rng),
        head: Linear::new(hidden, 1, &mut rng),
    };
    let mut adam = Adam::new(1e-2);
    let mut losses = Vec::new();
    for update in 0..=150 {
        let bits = Tensor::uniform(&[steps, batch, 1], -1.0, 1.0, &mut rng).map(f32::signum);
        let tape = Tape::new();
        let out = model
            .lstm
            .forward(&tape, tape.constant(bits.clone()), None, None);
        let prediction = model
            .head
            .forward(&tape, out.output)
            .narrow(0, DELAY, steps - DELAY);
        let target = tape.constant(bits).narrow(0, 0, steps - DELAY);
        let loss = (prediction - target).powf(2.0).mean();
        let grads = loss.backward();
        adam.step(&mut model, &grads);
        losses.push(loss.item());
        if update % 25 == 0 {
            println!("   update {update:>3}  mse {:.4}", loss.item());
        }
    }
    let last = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.1,
        "the stack should learn to recall: mse {} → {last}",
        losses[0]
    );
    println!(
        "   mse {:.3} → {last:.4} (mean of the last 10): checked",
        losses[0]
    );
}

fn assert_same(what: &str, a: Var<f64>, b: Var<f64>) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let (a, b) = (a.value(), b.value());
    assert!(a.allclose_with(&b, 0.0, 1e-12), "{what}: {a} vs {b}");
}
