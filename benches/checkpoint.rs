//! Full against checkpointed BPTT: forward + backward time and the tape's peak bytes at T = 256,
//! 1024 and 4096, with checkpoints every √T steps, in two settings:
//!
//! - `lstm_fwd_bwd_B16_H128`: one LSTM layer (B = 16, in = 32, H = 128) whose summed output is
//!   the loss, checkpointed inside the layer (`Run::checkpoint_every`);
//! - `char_model_B16_H128`: a character model (embedding 65 → 32, that LSTM, readout to 65,
//!   cross-entropy) through the BPTT driver, full BPTT against `Strategy::CheckpointedModel`
//!   (each segment's whole model call, loss included, checkpointed).
//!
//! The peak bytes print once per T, before the timings.
//!
//! Run: `cargo bench --bench checkpoint`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::{
    Bptt, Carry, Chunk, ChunkLoss, Embedding, Linear, Lstm, RecurrentConfig, Run, StackState,
    Strategy, Stream,
};

const B: usize = 16;
const IN: usize = 32;
const H: usize = 128;
const VOCAB: usize = 65;

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

fn layer(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let lstm = Lstm::new(RecurrentConfig::new(IN, H), &mut rng);
    let mut group = c.benchmark_group("lstm_fwd_bwd_B16_H128");
    group.sample_size(10);
    for t in [256, 1024, 4096] {
        let x = Tensor::uniform(&[t, B, IN], -1.0, 1.0, &mut rng);
        let every = (t as f64).sqrt().round() as usize;
        let (full, ckpt) = (pass(&lstm, &x, None), pass(&lstm, &x, Some(every)));
        println!(
            "layer, T = {t:>4}: peak tape bytes full {:.1} MB, checkpointed every {every} {:.1} MB ({:.1}x less)",
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

/// Embedding, LSTM, readout: a character model as the driver runs it.
struct CharModel {
    embed: Embedding,
    lstm: Lstm,
    head: Linear,
}

impl CharModel {
    fn loss<'t>(
        &self,
        tape: &'t Tape,
        chunk: &Chunk,
        state: StackState<'t>,
        run: &Run<'_>,
    ) -> (ChunkLoss<'t>, StackState<'t>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let out = self.lstm.forward_with(tape, x, Some(state), run);
        let logits = self
            .head
            .forward(tape, out.output)
            .reshape(&[chunk.steps * chunk.lanes, VOCAB]);
        (chunk.cross_entropy(logits), out.state)
    }
}

/// One update over `t` steps of every lane; returns the tape's peak bytes.
fn update(model: &CharModel, tokens: &[usize], strategy: Strategy) -> usize {
    let mut stream = Stream::new(tokens.to_vec(), B);
    let mut driver = Bptt::new(strategy, Carry::zeros(&model.lstm, B), 0);
    let u = driver
        .step(&mut stream, |tape, chunk, state, run| {
            model.loss(tape, chunk, state, run)
        })
        .expect("the stream has steps");
    black_box(&u.grads);
    u.peak_bytes
}

fn model(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let model = CharModel {
        embed: Embedding::init(VOCAB, IN, &mut rng),
        lstm: Lstm::new(RecurrentConfig::new(IN, H), &mut rng),
        head: Linear::init(H, VOCAB, &mut rng),
    };
    let mut group = c.benchmark_group("char_model_B16_H128");
    group.sample_size(10);
    for t in [256, 1024, 4096] {
        // Lanes of t + 1 tokens: one update of t steps.
        let tokens: Vec<usize> = (0..B * (t + 1)).map(|i| (i * i + 7 * i) % VOCAB).collect();
        let every = (t as f64).sqrt().round() as usize;
        let full = Strategy::Full;
        let ckpt = Strategy::CheckpointedModel {
            k: t,
            every: Some(every),
        };
        let (full_bytes, ckpt_bytes) =
            (update(&model, &tokens, full), update(&model, &tokens, ckpt));
        println!(
            "model, T = {t:>4}: peak tape bytes full {:.1} MB, segments of {every} {:.2} MB ({:.1}x less)",
            full_bytes as f64 / 1e6,
            ckpt_bytes as f64 / 1e6,
            full_bytes as f64 / ckpt_bytes as f64
        );
        group.bench_with_input(BenchmarkId::new("full", t), &tokens, |b, tokens| {
            b.iter(|| update(&model, tokens, full))
        });
        group.bench_with_input(BenchmarkId::new("segments", t), &tokens, |b, tokens| {
            b.iter(|| update(&model, tokens, ckpt))
        });
    }
    group.finish();
}

criterion_group!(benches, layer, model);
criterion_main!(benches);
