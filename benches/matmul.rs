//! The engine's own matmul (forward, `x.matmul(w.t())` as a layer computes it) on the shapes of an
//! RNN step, in GFLOP/s: the kernel crate plus what the engine adds (the output allocation, the
//! split of large products across cores). Compare with the kernel-only figures of
//! `benches/gemm.rs` and MKL's in benches/README.md.
//!
//! Run: `cargo bench --bench matmul`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Param, Tape, Tensor};

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

    // The per-step product with W a parameter, as a layer runs it: 16 steps on one tape, so W
    // is packed once for the small-row kernel (on CPUs with AVX-512) and read 16 times.
    let mut group = c.benchmark_group("per_step_x_wT_param");
    group.sample_size(20);
    const STEPS: usize = 16;
    for (m, k, n) in [
        (16, 256, 1024),
        (16, 1024, 256),
        (32, 128, 512),
        (32, 256, 1024),
        (32, 512, 2048),
        (32, 1024, 4096),
    ] {
        let x = Tensor::<f32>::uniform(&[m, k], -1.0, 1.0, &mut rng);
        let w = Param::new(Tensor::<f32>::uniform(&[n, k], -1.0, 1.0, &mut rng));
        group.throughput(Throughput::Elements((2 * m * n * k * STEPS) as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{m}x{k}x{n}")), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (x, w) = (tape.constant(x.clone()), tape.param(&w));
                for _ in 0..STEPS {
                    black_box(x.matmul(w.t()).value());
                }
            })
        });
    }
    group.finish();

    // The per-step weight gradient: dW [G·H, H] += dGᵀ [G·H, B] · h [B, H], inner size B = 32.
    let mut group = c.benchmark_group("per_step_weight_grad");
    group.sample_size(20);
    for (g, b, h) in [
        (512, 32, 128),
        (1024, 32, 256),
        (2048, 32, 512),
        (4096, 32, 1024),
    ] {
        let dg = Tensor::<f32>::uniform(&[b, g], -1.0, 1.0, &mut rng);
        let hs = Tensor::<f32>::uniform(&[b, h], -1.0, 1.0, &mut rng);
        group.throughput(Throughput::Elements((2 * g * b * h) as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{g}x{b}x{h}")),
            |bench| {
                bench.iter(|| {
                    let tape = Tape::new();
                    let y = tape
                        .constant(dg.clone())
                        .t()
                        .matmul(tape.constant(hs.clone()));
                    black_box(y.value());
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
