//! 01 · A scalar graph, micrograd-style: record an expression on a tape, rewind the tape, read
//! the gradients, and check each one against the chain rule worked by hand; then fit one neuron
//! with a gradient-descent loop written out.
//!
//! Teaches: `Tape`, `Var`, `backward`, `Grads`, `Param`, and why a value read twice gets the sum
//! of its paths' gradients. Next: `02-tensors-and-broadcasting.rs`, the same engine on n-d arrays.
//!
//! Run: `cargo run --example 01-scalar-graph`

use rewind::prelude::*;

fn main() {
    expression();
    fit_a_neuron();
}

/// Part 1: e = d² + relu(c), where d = tanh(c/2)·a − σ(b) and c = a·b + b².
fn expression() {
    println!("1. An expression and its gradients");
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::scalar(-2.0));
    let b = tape.var(Tensor::scalar(3.0));
    // Each op computes its value now and records one node; nothing is differentiated yet.
    let c = a * b + b.powf(2.0);
    let d = (c / 2.0).tanh() * a - b.sigmoid();
    let e = d * d + c.relu();
    println!("   e = {:.6}, {} nodes on the tape", e.item(), tape.len());
    let grads = e.backward(); // one loop over the nodes, last to first
    let (tape_a, tape_b) = (grads[a].item(), grads[b].item());
    println!("   from the tape: de/da = {tape_a:+.12}  de/db = {tape_b:+.12}");

    // The chain rule by hand, from e back to the inputs.
    let (a, b) = (-2.0f64, 3.0f64);
    let c = a * b + b * b;
    let (t, s) = ((c / 2.0).tanh(), 1.0 / (1.0 + (-b).exp()));
    let de_dd = 2.0 * (t * a - s);
    // c reaches e along two paths, through d and through the relu: its gradient is their sum.
    // That sum is the `+=` every backward does, and why reusing a value is safe.
    let de_dc = de_dd * a * (1.0 - t * t) / 2.0 + if c > 0.0 { 1.0 } else { 0.0 };
    let de_da = de_dd * t + de_dc * b; // a: in d directly, and through c = a·b + b²
    let de_db = de_dd * -(s * (1.0 - s)) + de_dc * (a + 2.0 * b); // b: in σ(b), and through c
    println!("   by hand:       de/da = {de_da:+.12}  de/db = {de_db:+.12}");
    assert_close("de/da", tape_a, de_da);
    assert_close("de/db", tape_b, de_db);
}

/// Part 2: y = tanh(w1·x1 + w2·x2 + b) fitted to four points. A `Param` outlives the tapes: each
/// step records a fresh tape that reads it, and the update writes into it in place.
fn fit_a_neuron() {
    println!("2. Fitting y = tanh(w1·x1 + w2·x2 + b) by gradient descent");
    let xs = [[2.0, 3.0], [3.0, -1.0], [0.5, 1.0], [1.0, 1.0]];
    let ys = [1.0, -1.0, -1.0, 1.0];
    let w1 = Param::named("w1", Tensor::scalar(0.1));
    let w2 = Param::named("w2", Tensor::scalar(-0.2));
    let b = Param::named("b", Tensor::scalar(0.0));
    let lr = 0.1;
    let mut losses = Vec::new();
    for step in 0..=300 {
        let tape = Tape::<f64>::new();
        let (pw1, pw2, pb) = (tape.param(&w1), tape.param(&w2), tape.param(&b));
        let mut loss = tape.constant(Tensor::scalar(0.0));
        for (x, &y) in xs.iter().zip(&ys) {
            let prediction = (pw1 * x[0] + pw2 * x[1] + pb).tanh();
            loss = loss + (prediction - y).powf(2.0);
        }
        let grads = loss.backward();
        losses.push(loss.item());
        if step % 60 == 0 {
            println!("   step {step:>3}  loss {:.5}", loss.item());
        }
        // What an optimizer does (03 uses one): θ ← θ − lr·∂L/∂θ.
        for p in [&w1, &w2, &b] {
            let g = grads[p].item();
            p.update(|t| t.data_mut()[0] -= lr * g);
        }
    }
    let (w1, w2, b) = (w1.value().item(), w2.value().item(), b.value().item());
    println!("   fitted w1 = {w1:.4}, w2 = {w2:.4}, b = {b:.4}");
    for (x, &y) in xs.iter().zip(&ys) {
        let prediction = (w1 * x[0] + w2 * x[1] + b).tanh();
        println!("   x = {x:?}  target {y:+.1}  prediction {prediction:+.4}");
        assert!(prediction * y > 0.0, "{x:?} should land on the side of {y}");
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < first / 10.0,
        "loss should fall tenfold: {first} → {last}"
    );
    println!("   loss {first:.4} → {last:.4}: checked");
}

fn assert_close(what: &str, tape: f64, hand: f64) {
    assert!(
        (tape - hand).abs() <= 1e-12 * hand.abs().max(1.0),
        "{what}: tape {tape} vs hand {hand}"
    );
    println!("   {what}: tape = hand to 1e-12, checked");
}
