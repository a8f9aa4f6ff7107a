//! 02 · Tensors and broadcasting: n-d values, NumPy's broadcasting rules and what they mean for
//! gradients (a value repeated along an axis gets the sum over that axis), `matmul`, the panic a
//! shape mistake gives, and `gradcheck`, which tests any gradient against finite differences.
//!
//! Builds on `01-scalar-graph.rs`. Next: `03-linear-model.rs`, a layer and an optimizer.
//!
//! Run: `cargo run --example 02-tensors-and-broadcasting`

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use rewind::prelude::*;

fn main() {
    broadcasting();
    gradients_of_a_broadcast();
    shape_errors();
    finite_differences();
}

fn tensor(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).expect("as many values as the shape holds")
}

/// Part 1: shapes line up from the right; an axis of size 1, or a missing one, is repeated.
fn broadcasting() {
    println!("1. Broadcasting, on plain tensors (no tape)");
    let x = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]); // row-major: rows [1 2 3], [4 5 6]
    let row = tensor(&[1.0, 0.5, 0.0], &[3]); // repeated down the 2 rows
    let col = tensor(&[10.0, 20.0], &[2, 1]); // repeated across the 3 columns
    let y = &(&x * &row) + &col;
    println!("   x [2, 3] * row [3] + col [2, 1] = {y}");
    assert_eq!(y.data(), &[11.0, 11.0, 10.0, 24.0, 22.5, 20.0]);
}

/// Part 2: y = x Wᵀ + b (b repeated over the rows), L = ½ Σ y². By hand: ∂L/∂y = y, and
/// ∂L/∂b = Σ over rows of ∂L/∂y, ∂L/∂W = (∂L/∂y)ᵀ x, ∂L/∂x = (∂L/∂y) W.
fn gradients_of_a_broadcast() {
    println!("2. A broadcast bias gets its gradient summed over the rows it was repeated along");
    let (n, d_in, d_out) = (4, 3, 2);
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::arange(n * d_in).reshape(&[n, d_in]) / 4.0 - 1.0);
    let w = tape.var(tensor(&[0.2, -0.4, 0.1, 0.3, 0.5, -0.6], &[d_out, d_in]));
    let b = tape.var(tensor(&[0.05, -0.1], &[d_out]));
    let y = x.matmul(w.t()) + b; // [4, 3]·[3, 2] + [2] → [4, 2]
    let loss = (y * y).sum() * 0.5;
    let grads = loss.backward();
    println!("   y {:?}, ∂L/∂b = {}", y.shape(), grads[b]);

    let (xv, wv, yv) = (x.value(), w.value(), y.value());
    let (x_data, w_data, dy) = (xv.data(), wv.data(), yv.data());
    let (mut db, mut dw, mut dx) = (
        vec![0.0; d_out],
        vec![0.0; d_out * d_in],
        vec![0.0; n * d_in],
    );
    for i in 0..n {
        for j in 0..d_out {
            db[j] += dy[i * d_out + j];
            for k in 0..d_in {
                dw[j * d_in + k] += dy[i * d_out + j] * x_data[i * d_in + k];
                dx[i * d_in + k] += dy[i * d_out + j] * w_data[j * d_in + k];
            }
        }
    }
    for (name, tape_grad, hand) in [
        ("b", &grads[b], db),
        ("W", &grads[w], dw),
        ("x", &grads[x], dx),
    ] {
        let hand = tensor(&hand, tape_grad.shape());
        assert!(
            tape_grad.allclose_with(&hand, 0.0, 1e-12),
            "∂L/∂{name}: {tape_grad} vs {hand}"
        );
        println!("   ∂L/∂{name}: tape = hand to 1e-12, checked");
    }
}

/// Part 3: shapes are runtime values, so a mistake is a panic at the line that made it.
fn shape_errors() {
    println!("3. A shape mistake panics at your line, naming the op and both shapes");
    let report = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&report);
    panic::set_hook(Box::new(move |info| {
        *sink.lock().unwrap() = info.to_string()
    }));
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros(&[2, 3]));
    let b = tape.var(Tensor::zeros(&[4, 3]));
    let caught = panic::catch_unwind(AssertUnwindSafe(|| a + b));
    drop(panic::take_hook()); // the default report again, for any real failure below
    let report = report.lock().unwrap().clone();
    println!(
        "   a [2, 3] + b [4, 3] → {}",
        report.replace('\n', "\n     ")
    );
    assert!(caught.is_err(), "adding [2, 3] and [4, 3] panics");
    for needle in ["add", "[2, 3]", "[4, 3]", "02-tensors-and-broadcasting.rs"] {
        assert!(
            report.contains(needle),
            "the report names {needle}: {report}"
        );
    }
}

/// Part 4: gradcheck compares backward with central differences (f(x+ε) − f(x−ε))/2ε for every
/// input element, in f64, with PyTorch's tolerances. Use it on anything you write yourself.
fn finite_differences() {
    println!("4. gradcheck: every element of every input, against finite differences");
    let x = tensor(&[0.3, -1.2, 2.0, 0.7, 0.1, -0.4], &[2, 3]);
    let w = tensor(&[0.5, -0.3, 0.8, 0.2, 0.1, -0.9], &[2, 3]);
    let col = tensor(&[1.0, -1.0], &[2, 1]);
    gradcheck(
        |_, v| (v[0].matmul(v[1].t()) * v[2]).tanh().sum_axis(0, false),
        &[x, w, col],
    )
    .expect("backward agrees with finite differences");
    println!("   tanh((x Wᵀ) * col) summed over axis 0: gradcheck passed, checked");
}
