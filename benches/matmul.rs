//! The engine's own matmul (forward, `x.matmul(w.t())` as a layer computes it) on the shapes of an
//! RNN step, in GFLOP/s: the kernel crate plus what the engine adds (the output allocation, the
//! split of large products across cores). Compare with the kernel-only figures of
//! `benches/gemm.rs` and the machine's peak in benches/README.md.
//!
//! Run: `cargo bench --bench matmul`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Tape, Tensor};

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut group = c.benchmark_group("matmul_x_wT");
    group.sample_size(20);
    // (M, K, N): x [M, K] times W [N, K] transposed.
    for (m, k, n) in [
        (32, 256, 1024),
        (32, 512, 2048),
        (2048, 65, 1024),
        (2048, 256, 1024),
        (2048, 2048, 2048),
    ] {
        let x = Tensor::<f32>::uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Tensor::<f32>::uniform(&[n, k], -1.0, 1.0, &mut rng);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{m}x{k}x{n}")), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let y = tape
                    .constant(x.clone())
                    .matmul(tape.constant(w.clone()).t());
                black_box(y.value());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
