//! What second-order products cost next to a gradient, for the LSTM of benches/step.rs
//! (embedding V = 65 → one LSTM layer → linear readout, cross-entropy, B = 32, T = 64): per
//! hidden size, the time of
//!
//! - `gradient`: forward and backward, as a training step computes them;
//! - `hvp`: forward, the backward recorded (`Var::hessian`), and one Hessian-vector product;
//! - `gnvp`: forward, the two recorded passes of `Var::gauss_newton`, and one Gauss-Newton
//!   product;
//! - `hvp_again` and `gnvp_again`: one more product at the same point, as conjugate gradient
//!   takes them (the recorded passes made once, outside the timing).
//!
//! Before timing, it prints the tape's bytes after the gradient, after recording the backward,
//! and at the peak of a product, so the memory side reads beside the time.
//!
//! Run: `cargo bench --bench second_order`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{Param, Tape, Tensor, Var};
use rewind::nn::{nested, Embedding, Linear, LstmCell, Module, Recurrent, RecurrentConfig};

const V: usize = 65;
const B: usize = 32;
const T: usize = 64;

struct Model {
    embed: Embedding,
    rnn: Recurrent<LstmCell<f32>>,
    head: Linear,
}

impl Module for Model {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("embed", self.embed.params());
        p.extend(nested("rnn", self.rnn.params()));
        p.extend(nested("head", self.head.params()));
        p
    }
}

struct Setup {
    model: Model,
    tokens: Vec<usize>,
    targets: Vec<i64>,
    direction: Vec<Tensor>,
}

impl Setup {
    fn new(hidden: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        let model = Model {
            embed: Embedding::new(V, hidden, &mut rng),
            rnn: Recurrent::new(RecurrentConfig::new(hidden, hidden), &mut rng),
            head: Linear::new(hidden, V, &mut rng),
        };
        let tokens: Vec<usize> = (0..(T + 1) * B).map(|_| rng.random_range(0..V)).collect();
        let targets = tokens[B..].iter().map(|&x| x as i64).collect();
        let direction = model
            .params()
            .iter()
            .map(|(_, p)| Tensor::normal(p.value().shape(), 0.0, 1.0, &mut rng))
            .collect();
        Setup {
            model,
            tokens,
            targets,
            direction,
        }
    }

    /// The logits and the loss on `tape`, and the parameters as that tape's nodes.
    fn forward<'t>(&self, tape: &'t Tape) -> (Var<'t>, Var<'t>, Vec<Var<'t>>) {
        let m = &self.model;
        let x = m.embed.forward(tape, &self.tokens[..T * B], &[T, B]);
        let out = m.rnn.forward(tape, x, None, None);
        let logits = m.head.forward(tape, out.output).reshape(&[T * B, V]);
        let loss = logits.cross_entropy(&self.targets);
        let params = m.params().iter().map(|(_, p)| tape.param(p)).collect();
        (logits, loss, params)
    }
}

fn report_memory(hidden: usize, s: &Setup) {
    let mb = |b: usize| b as f64 / 1e6;
    let tape = Tape::new();
    let (_, loss, _) = s.forward(&tape);
    black_box(loss.backward());
    let gradient = tape.stats();
    let tape = Tape::new();
    let (_, loss, params) = s.forward(&tape);
    let forward = tape.stats().bytes;
    let h = loss.hessian(&params);
    let recorded = tape.stats().bytes;
    black_box(h.product(&s.direction));
    let hvp = tape.stats();
    let tape = Tape::new();
    let (logits, loss, params) = s.forward(&tape);
    black_box(loss.gauss_newton(logits, &params).product(&s.direction));
    let gn = tape.stats();
    println!(
        "lstm H {hidden}: tape MB — forward {:.1}, gradient peak {:.1}; hvp: backward recorded {:.1} \
         (+{:.1}), peak {:.1}; gnvp: recorded {:.1}, peak {:.1}",
        mb(forward),
        mb(gradient.peak_bytes),
        mb(recorded),
        mb(recorded - forward),
        mb(hvp.peak_bytes),
        mb(gn.bytes),
        mb(gn.peak_bytes),
    );
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("second_order_lstm");
    group.sample_size(10);
    for hidden in [128, 256] {
        let s = Setup::new(hidden);
        report_memory(hidden, &s);
        group.bench_function(BenchmarkId::new("gradient", hidden), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (_, loss, _) = s.forward(&tape);
                black_box(loss.backward());
            })
        });
        group.bench_function(BenchmarkId::new("hvp", hidden), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (_, loss, params) = s.forward(&tape);
                black_box(loss.hvp(&params, &s.direction));
            })
        });
        group.bench_function(BenchmarkId::new("gnvp", hidden), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (logits, loss, params) = s.forward(&tape);
                black_box(loss.gnvp(logits, &params, &s.direction));
            })
        });
        let tape = Tape::new();
        let (logits, loss, params) = s.forward(&tape);
        let h = loss.hessian(&params);
        group.bench_function(BenchmarkId::new("hvp_again", hidden), |b| {
            b.iter(|| black_box(h.product(&s.direction)))
        });
        let g = loss.gauss_newton(logits, &params);
        group.bench_function(BenchmarkId::new("gnvp_again", hidden), |b| {
            b.iter(|| black_box(g.product(&s.direction)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
