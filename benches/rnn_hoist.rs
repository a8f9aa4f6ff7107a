//! The hoisted input projection: an LSTM layer's forward + backward when x·W_ihᵀ for all T steps
//! is one GEMM before the loop (what `Lstm::forward` does), against the naive form that projects
//! each step's input inside the loop (`Cell::forward`). B = 32, T = 64, H = 256, with in = 65
//! (one-hot characters) and in = 256 (an embedding as wide as the state).
//!
//! Run: `cargo bench --bench rnn_hoist`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{stack, Tape, Tensor};
use rewind::nn::{Cell, Lstm, RecurrentConfig, State};

const T: usize = 64;
const B: usize = 32;
const H: usize = 256;

fn bench(c: &mut Criterion) {
    for input in [65, 256] {
        bench_input(c, input);
    }
}

fn bench_input(c: &mut Criterion, input: usize) {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::<f32>::new(RecurrentConfig::new(input, H), &mut rng);
    let x = Tensor::<f32>::uniform(&[T, B, input], -1.0, 1.0, &mut rng);
    let mut group = c.benchmark_group(format!("lstm_layer_fwd_bwd_T64_B32_H256_in{input}"));
    group.sample_size(20);
    group.bench_function("hoisted", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let out = lstm.forward(&tape, tape.constant(x.clone()), None, None);
            black_box(out.output.sum().backward());
        })
    });
    group.bench_function("per_step", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let cell = lstm.cell(0, 0);
            let xs = tape.constant(x.clone());
            let zeros = || tape.constant(Tensor::zeros(&[B, H]));
            let mut state = State {
                h: zeros(),
                c: Some(zeros()),
            };
            let mut hs = Vec::with_capacity(T);
            for t in 0..T {
                let x_t = xs.narrow(0, t, 1).reshape(&[B, input]);
                state = cell.forward(&tape, x_t, state);
                hs.push(state.h);
            }
            black_box(stack(&hs, 0).sum().backward());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
