//! A tour of the engine on 0-d tensors, micrograd-style: build an expression, rewind the tape,
//! read the gradients; then fit one neuron with a hand-written SGD loop.
//!
//! Run: `cargo run --release --example scalar`

use rewind::prelude::*;

fn main() {
    expression();
    println!();
    fit_a_neuron();
}

/// Part 1: an expression of two inputs and its gradients.
fn expression() {
    println!("1. An expression and its gradients");
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::scalar(-2.0));
    let b = tape.var(Tensor::scalar(3.0));
    // Every op records one node on the tape; `a` and `b` are read several times.
    let c = a * b + b.powf(2.0); // -6 + 9 = 3
    let d = (c / 2.0).tanh() * a - b.sigmoid(); // tanh(1.5)·(-2) - σ(3)
    let e = d * d + c.relu(); // squared, plus a relu branch
    println!("   e = {:.6}", e.item());
    let grads = e.backward();
    println!("   de/da = {:.6}", grads[a].item());
    println!("   de/db = {:.6}", grads[b].item());
    println!("   ({} nodes on the tape)", tape.len());
}

/// Part 2: a neuron y = tanh(w·x + b) fitted to four points by gradient descent. The gradients come
/// back as `Grads`, apart from the model; the update writes into the parameters in place.
fn fit_a_neuron() {
    println!("2. Fitting y = tanh(w1·x1 + w2·x2 + b) by SGD");
    let xs = [[2.0, 3.0], [3.0, -1.0], [0.5, 1.0], [1.0, 1.0]];
    let ys = [1.0, -1.0, -1.0, 1.0];
    let w1 = Param::named("w1", Tensor::scalar(0.1));
    let w2 = Param::named("w2", Tensor::scalar(-0.2));
    let b = Param::named("b", Tensor::scalar(0.0));
    let lr = 0.1;
    for step in 0..=300 {
        let tape = Tape::<f64>::new();
        let (pw1, pw2, pb) = (tape.param(&w1), tape.param(&w2), tape.param(&b));
        let mut loss = tape.constant(Tensor::scalar(0.0));
        for (x, &y) in xs.iter().zip(&ys) {
            let pred = (pw1 * x[0] + pw2 * x[1] + pb).tanh();
            loss = loss + (pred - y).powf(2.0);
        }
        let grads = loss.backward();
        if step % 50 == 0 {
            println!("   step {step:>3}  loss {:.5}", loss.item());
        }
        for p in [&w1, &w2, &b] {
            let g = grads[p].item();
            p.update(|t| t.data_mut()[0] -= lr * g);
        }
    }
    let (w1, w2, b) = (w1.value().item(), w2.value().item(), b.value().item());
    println!("   fitted w1 = {w1:.4}, w2 = {w2:.4}, b = {b:.4}");
    for (x, &y) in xs.iter().zip(&ys) {
        let pred = (w1 * x[0] + w2 * x[1] + b).tanh();
        println!("   x = {x:?}  target {y:+.1}  prediction {pred:+.4}");
    }
}
