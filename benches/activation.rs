//! The gate activations alone: σ and tanh (forward, on a tape) over a `[32, 1024]` value, the
//! size of an LSTM layer's gates for a batch of 32 at H = 256. Per element, this is what each
//! time step of a recurrent layer pays for its activations.
//!
//! Beside them, a broadcast along a middle axis, as additive attention scores a query against
//! its window's keys (examples/attention, a shard of 16 lanes, W = 32, A = 64): `q [16, 1, 64] +
//! keys [16, 32, 64]`, forward, and forward and backward (the gradient summed back into q).
//!
//! Run: `cargo bench --bench activation`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{kernel_path, Tape, Tensor};

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::<f32>::uniform(&[32, 1024], -8.0, 8.0, &mut rng);
    println!("activation: kernels {}", kernel_path());
    let mut group = c.benchmark_group("activation");
    group.throughput(Throughput::Elements(x.numel() as u64));
    group.bench_function("sigmoid", |b| {
        b.iter(|| {
            let tape = Tape::new();
            black_box(tape.constant(x.clone()).sigmoid().value())
        })
    });
    group.bench_function("tanh", |b| {
        b.iter(|| {
            let tape = Tape::new();
            black_box(tape.constant(x.clone()).tanh().value())
        })
    });
    group.finish();

    let q = Tensor::<f32>::uniform(&[16, 1, 64], -1.0, 1.0, &mut rng);
    let keys = Tensor::<f32>::uniform(&[16, 32, 64], -1.0, 1.0, &mut rng);
    let mut group = c.benchmark_group("broadcast_add");
    group.throughput(Throughput::Elements(keys.numel() as u64));
    group.bench_function("forward", |b| {
        b.iter(|| {
            let tape = Tape::new();
            black_box((tape.constant(q.clone()) + tape.constant(keys.clone())).value())
        })
    });
    group.bench_function("forward_backward", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let (qv, kv) = (tape.var(q.clone()), tape.var(keys.clone()));
            black_box((qv + kv).sum().backward())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
