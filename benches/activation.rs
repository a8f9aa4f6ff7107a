//! The gate activations alone: σ and tanh (forward, on a tape) over a `[32, 1024]` value, the
//! size of an LSTM layer's gates for a batch of 32 at H = 256. Per element, this is what each
//! time step of a recurrent layer pays for its activations.
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
