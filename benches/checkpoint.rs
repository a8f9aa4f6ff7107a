//! Full against checkpointed BPTT: forward + backward time and the tape's peak bytes of an LSTM
//! layer (B = 16, in = 32, H = 128) at T = 256, 1024 and 4096, with checkpoints every √T steps.
//! The peak bytes print once per T, before the timings.
//!
//! Run: `cargo bench --bench checkpoint`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::{Lstm, RecurrentConfig, Run};

const B: usize = 16;
const IN: usize = 32;
const H: usize = 128;

/// One forward and backward pass; returns the tape's peak bytes.
fn pass(lstm: &Lstm, x: &Tensor, every: Option<usize>) -> usize {
    let tape = Tape::new();
    let run = Run {
        checkpoint_every: every,
        ..Run::default()
    };
    let out = lstm.forward_with(&tape, tape.constant(x.clone()), None, &run);
    black_box(out.output.sum().backward());
    tape.stats().peak_bytes
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::new(RecurrentConfig::new(IN, H), &mut rng);
    let mut group = c.benchmark_group("lstm_fwd_bwd_B16_H128");
    group.sample_size(10);
    for t in [256, 1024, 4096] {
        let x = Tensor::uniform(&[t, B, IN], -1.0, 1.0, &mut rng);
        let every = (t as f64).sqrt().round() as usize;
        let (full, ckpt) = (pass(&lstm, &x, None), pass(&lstm, &x, Some(every)));
        println!(
            "T = {t:>4}: peak tape bytes full {:.1} MB, checkpointed every {every} {:.1} MB ({:.1}x less)",
            full as f64 / 1e6,
            ckpt as f64 / 1e6,
            full as f64 / ckpt as f64
        );
        group.bench_with_input(BenchmarkId::new("full", t), &x, |b, x| {
            b.iter(|| pass(&lstm, x, None))
        });
        group.bench_with_input(BenchmarkId::new("checkpointed", t), &x, |b, x| {
            b.iter(|| pass(&lstm, x, Some(every)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
