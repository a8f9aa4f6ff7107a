//! 06 · Truncated BPTT with carried state: a sequence too long for one tape is read in chunks of
//! k steps, each on a tape of its own. The state at the end of a chunk is carried into the next
//! as plain values (`Carry::of`, then `carry.on(&tape)`: constants on the new tape), so the
//! forward pass is the whole sequence's, while the gradient stops at every boundary and each
//! update backpropagates through k steps only.
//!
//! Checked: (1) the chunks' outputs equal one forward pass over the whole sequence; (2) a chunk's
//! gradient equals the whole sequence's on one tape with the state detached at the boundary, and
//! differs from full BPTT's by the paths the cut drops; (3) the library's driver, `Bptt` with
//! `Strategy::Truncated { k }`, is this loop, update for update.
//! Builds on `05-lstm-stack.rs`. Next: `07-your-own-cell.rs`.
//!
//! Run: `cargo run --example 06-truncated-bptt`

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::{Bptt, Carry, FeatureStream, Linear, Lstm, RecurrentConfig, Strategy};
use rewind::prelude::*;

fn main() {
    let (lanes, hidden, k) = (2, 6, 8);
    let mut rng = StdRng::seed_from_u64(6);
    let lstm = Lstm::<f64>::init(RecurrentConfig::new(1, hidden), &mut rng);
    let head = Linear::<f64>::init(hidden, 1, &mut rng);
    let mut params = lstm.params();
    params.extend(head.params());
    // A sine wave cut into 2 lanes (the batch) of 30 values; each step's target is the next value.
    let wave: Vec<f64> = (0..60).map(|t| (0.3 * t as f64).sin()).collect();
    let mut stream = FeatureStream::next_vector(Tensor::from_vec(wave, &[60, 1]).unwrap(), lanes);
    let steps = stream.steps();
    println!("{lanes} lanes of {steps} steps, in chunks of k = {k}");

    let mut carry = Carry::zeros(&lstm, lanes);
    let (mut outputs, mut chunk_grads) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.take(k) {
        let tape = Tape::new();
        let x = tape.constant(chunk.inputs.clone()); // [steps, lanes, 1]
        let start = carry.on(&tape); // constants: no gradient flows back past them
        assert!(!start.h.requires_grad(), "a carried state is detached");
        let out = lstm.forward(&tape, x, Some(start), None);
        let loss = chunk.mse(head.forward(&tape, out.output)).mean();
        chunk_grads.push(loss.backward()); // BPTT back to this chunk's first step, no further
        outputs.push(out.output.value());
        carry = Carry::of(out.state); // the values go on; this tape and its graph are dropped
        println!("steps from {:>2}: mse {:.4}", chunk.start, loss.item());
    }

    // (1) ModelState state: the chunks computed what one pass over the whole sequence computes.
    let tape = Tape::new();
    let whole = stream.chunk(0, steps).inputs;
    let full = lstm.forward(&tape, tape.constant(whole), None, None);
    assert_close("output", &Tensor::concat(&outputs, 0), &full.output.value());
    assert_close("final h", carry.h(), &full.state.h.value());
    println!("(1) chunk by chunk with the state carried = the whole sequence at once: checked");

    // (2) Detached gradients: the second chunk's loss, on one tape after the first chunk.
    let (first, second) = (stream.chunk(0, k), stream.chunk(k, k));
    let grads_of_second = |detach: bool| {
        let tape = Tape::new();
        let out = lstm.forward(&tape, tape.constant(first.inputs.clone()), None, None);
        let state = out.state.map(|v| if detach { v.detach() } else { v });
        let x = tape.constant(second.inputs.clone());
        let out = lstm.forward(&tape, x, Some(state), None);
        second
            .mse(head.forward(&tape, out.output))
            .mean()
            .backward()
    };
    let (detached, through) = (grads_of_second(true), grads_of_second(false));
    for (name, p) in &params {
        assert_close(name, &chunk_grads[1][*p], &detached[*p]);
    }
    let (name, w_hh) = &params[1]; // PyTorch's order: weight_ih_l0, weight_hh_l0, ...
    assert_eq!(name, "weight_hh_l0");
    let (cut, all) = (&detached[*w_hh], &through[*w_hh]);
    let dropped = norm(&(cut - all)) / norm(all);
    println!("(2) chunk 2's gradient = one tape's with the state detached at step {k}: checked");
    println!("    full BPTT's differs by ‖Δ ∂L/∂W_hh‖ / ‖∂L/∂W_hh‖ = {dropped:.3}");
    assert!(dropped > 1e-3, "the paths into chunk 1 carry gradient");

    // (3) The driver does the same loop; a model is a closure from (tape, chunk, state, run).
    stream.rewind();
    let mut driver = Bptt::new(Strategy::Truncated { k }, Carry::zeros(&lstm, lanes), 0);
    let mut updates = 0;
    while let Some(update) = driver.step(&mut stream, |tape, chunk, state, run| {
        let out = lstm.forward_with(tape, tape.constant(chunk.inputs.clone()), Some(state), run);
        (chunk.mse(head.forward(tape, out.output)), out.state)
    }) {
        for (name, p) in &params {
            assert_close(name, &update.grads[*p], &chunk_grads[updates][*p]);
        }
        updates += 1;
    }
    assert_eq!(updates, chunk_grads.len());
    assert_close("carried h", driver.carry().h(), carry.h());
    println!("(3) Bptt with Strategy::Truncated {{ k: {k} }}: the same {updates} updates, checked");
}

fn norm(t: &Tensor<f64>) -> f64 {
    t.data().iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn assert_close(what: &str, a: &Tensor<f64>, b: &Tensor<f64>) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    assert!(a.allclose_with(b, 1e-12, 1e-12), "{what}: {a} vs {b}");
}
