//! Outputs written into recycled buffers are written in full.
//!
//! A product with beta 0, a cell's activations, `narrow` and `concat` take a recycled buffer
//! without clearing it, since they overwrite every element. Here the buffers they get hold NaN
//! from a first pass over NaN inputs, and the second pass must equal, bit for bit, the same pass
//! on a fresh thread whose buffers are all new.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{concat, Param, Tape, Tensor};
use rewind::nn::{Gru, Lstm, Module, RecurrentConfig};

/// The outputs and gradients of one pass: LSTM and GRU layers, a product with a weight and one
/// without, narrow and concat.
fn pass(fill: Option<f32>) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(7);
    let (t, b, i, h) = (5, 3, 4, 6);
    let lstm = Lstm::new(RecurrentConfig::new(i, h).num_layers(2), &mut rng);
    let gru = Gru::new(RecurrentConfig::new(i, h).bidirectional(true), &mut rng);
    let w = Param::new(Tensor::uniform(&[h, 2 * h], -1.0, 1.0, &mut rng));
    let mut x = Tensor::<f32>::uniform(&[t, b, i], -1.0, 1.0, &mut rng);
    let mut y = Tensor::<f32>::uniform(&[b, h, 3], -1.0, 1.0, &mut rng);
    if let Some(v) = fill {
        x.data_mut().fill(v);
        y.data_mut().fill(v);
    }
    let tape = Tape::new();
    let (xv, yv) = (tape.var(x), tape.var(y));
    let a = lstm.forward(&tape, xv, None, None).output;
    let g = gru.forward(&tape, xv, None, None).output;
    let last = a.narrow(0, t - 1, 1).reshape(&[b, h]);
    let p = last.matmul(tape.param(&w));
    let q = last.unsqueeze(1).matmul(yv).reshape(&[b, 3]);
    let joined = concat(&[p, q, g.narrow(0, 0, 1).reshape(&[b, 2 * h])], 1);
    let loss = (joined * joined).sum();
    let grads = loss.backward();
    let mut out = vec![joined.value().data().to_vec(), grads[xv].data().to_vec()];
    out.push(grads[yv].data().to_vec());
    out.push(grads[&w].data().to_vec());
    for (_, param) in lstm.params().into_iter().chain(gru.params()) {
        out.push(grads[param].data().to_vec());
    }
    out
}

fn bits(values: &[Vec<f32>]) -> Vec<Vec<u32>> {
    values
        .iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn outputs_over_buffers_holding_nan_equal_outputs_over_fresh_ones() {
    let fresh = std::thread::spawn(|| pass(None)).join().unwrap();
    assert!(fresh.iter().flatten().all(|v| v.is_finite()));
    let poisoned = pass(Some(f32::NAN));
    assert!(
        poisoned[0].iter().all(|v| v.is_nan()),
        "the first pass fills its buffers with NaN"
    );
    let again = pass(None);
    assert_eq!(bits(&again), bits(&fresh));
}
