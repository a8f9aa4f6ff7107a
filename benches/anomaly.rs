//! What anomaly mode costs: one LSTM layer's forward, cross-entropy-like loss and backward
//! (B = 32, T = 64, H = 256, embedding-wide input), on a tape with anomaly mode off and on.
//! Off is the default path, which only reads a flag per op; on scans every value and gradient
//! and multiplies the per-step weight gradients out one by one instead of stacking them.
//!
//! Run: `cargo bench --bench anomaly`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::{Lstm, RecurrentConfig};

const T: usize = 64;
const B: usize = 32;
const H: usize = 256;

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::<f32>::new(RecurrentConfig::new(H, H), &mut rng);
    let x = Tensor::<f32>::uniform(&[T, B, H], -1.0, 1.0, &mut rng);
    let targets: Vec<i64> = (0..T * B).map(|i| (i % H) as i64).collect();
    let mut group = c.benchmark_group("lstm_layer_fwd_bwd_T64_B32_H256");
    group.sample_size(20);
    for (name, on) in [("anomaly_off", false), ("anomaly_on", true)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let tape = Tape::new();
                tape.detect_anomaly(on);
                let out = lstm.forward(&tape, tape.constant(x.clone()), None, None);
                let loss = out.output.reshape(&[T * B, H]).cross_entropy(&targets);
                black_box(loss.backward())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
