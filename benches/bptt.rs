//! Backward cost against sequence length: forward + backward time of an RNN, an LSTM and a GRU
//! character model (B = 32, H = 256, V = 65) for T = 16 … 1024, by full, truncated (k = 64) and
//! checkpointed BPTT. The tape's peak bytes print before the timings of each (cell, T).
//!
//! Run: `cargo bench --bench bptt` (all), or e.g. `cargo bench --bench bptt -- lstm/full`.

#[path = "support/bptt_grid.rs"]
mod grid;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use grid::{Bench, Mode, LENGTHS};
use rewind::nn::{GruCell, LstmCell, RnnCell, StandardCell};

fn cell<C: StandardCell<f32> + 'static>(c: &mut Criterion, name: &str) {
    let bench = Bench::<C>::new(*LENGTHS.last().unwrap());
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for mode in [Mode::Full, Mode::Truncated, Mode::Checkpointed] {
        for &t in &LENGTHS {
            let peak = bench.pass(t, mode).peak_bytes;
            println!(
                "{name}/{}/{t}: peak tape {:.1} MB",
                mode.name(),
                peak as f64 / 1e6
            );
            group.bench_with_input(BenchmarkId::new(mode.name(), t), &t, |b, &t| {
                b.iter(|| bench.pass(t, mode))
            });
        }
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    cell::<RnnCell<f32>>(c, "rnn");
    cell::<LstmCell<f32>>(c, "lstm");
    cell::<GruCell<f32>>(c, "gru");
}

criterion_group!(benches, bench);
criterion_main!(benches);
