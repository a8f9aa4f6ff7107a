//! One full training step — forward, cross-entropy, backward, global-norm clip 5, Adam — of an
//! embedding (V = 65) → one recurrent layer → linear readout model, B = 32, T = 64 (T = 32 at
//! H = 1024), for each cell at H = 128, 256, 512, 1024. Beside each, the matmuls of that step
//! alone (the per-step recurrent product and the hoisted ones, forward and backward, as GEMM
//! calls of the same shapes) so the step reads as a fraction of its GEMM time; and at H ≤ 512
//! the same step in f64 (`f64_step`), and the step with its batch in shards, one per core
//! (`sharded_step`).
//!
//! Run: `cargo bench --bench step`; compare with `python3 scripts/compare_pytorch.py`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{cores, kernel_path, Float, Param, Tape, Tensor};
use rewind::nn::{
    nested, Bptt, Carry, Embedding, GruCell, Linear, LstmCell, Module, Recurrent, RecurrentConfig,
    RnnCell, StandardCell, Strategy, Stream,
};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};

const V: usize = 65;
const B: usize = 32;

struct Model<C, F: Float = f32> {
    embed: Embedding<F>,
    rnn: Recurrent<C, F>,
    head: Linear<F>,
}

impl<F: Float, C: StandardCell<F>> Module<F> for Model<C, F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut p = nested("embed", self.embed.params());
        p.extend(nested("rnn", self.rnn.params()));
        p.extend(nested("head", self.head.params()));
        p
    }
}

/// The training step of `cell`, in `F`: the model at `hidden`, and a closure that runs one step.
fn train_step<F: Float, C: StandardCell<F> + 'static>(hidden: usize, t: usize) -> impl FnMut() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Model::<C, F> {
        embed: Embedding::init(V, hidden, &mut rng),
        rnn: Recurrent::init(RecurrentConfig::new(hidden, hidden), &mut rng),
        head: Linear::init(hidden, V, &mut rng),
    };
    let tokens: Vec<usize> = (0..(t + 1) * B).map(|_| rng.random_range(0..V)).collect();
    let targets: Vec<i64> = tokens[B..].iter().map(|&x| x as i64).collect();
    let mut opt = Adam::new(2e-3);
    move || {
        let tape = Tape::new();
        let x = model.embed.forward(&tape, &tokens[..t * B], &[t, B]);
        let out = model.rnn.forward(&tape, x, None, None);
        let logits = model.head.forward(&tape, out.output).reshape(&[t * B, V]);
        let mut grads = logits.cross_entropy(&targets).backward();
        clip_grad_norm(&mut grads, 5.0);
        opt.step(&mut model, &grads);
        black_box(&grads);
    }
}

/// The same step with the batch in shards, one per core ([`Bptt::step_sharded`] over the
/// step's `t` steps of `B` lanes, the whole sequence in one update): each shard on a tape of its
/// own, its products on its own thread.
fn sharded_step<C: StandardCell<f32> + Sync + 'static>(hidden: usize, t: usize) -> impl FnMut() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Model::<C, f32> {
        embed: Embedding::init(V, hidden, &mut rng),
        rnn: Recurrent::init(RecurrentConfig::new(hidden, hidden), &mut rng),
        head: Linear::init(hidden, V, &mut rng),
    };
    let tokens: Vec<usize> = (0..(t + 1) * B).map(|_| rng.random_range(0..V)).collect();
    let mut opt = Adam::new(2e-3);
    move || {
        let mut stream = Stream::new(tokens.clone(), B);
        let mut driver = Bptt::new(Strategy::Full, Carry::zeros(&model.rnn, B), 0);
        let m = &model;
        let update = driver
            .step_sharded(&mut stream, cores(), |tape, chunk, state, run| {
                let x = m
                    .embed
                    .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
                let out = m.rnn.forward_with(tape, x, Some(state), run);
                let rows = chunk.steps * chunk.lanes;
                let logits = m.head.forward(tape, out.output).reshape(&[rows, V]);
                (chunk.cross_entropy(logits), out.state)
            })
            .expect("one update");
        let mut grads = update.grads;
        clip_grad_norm(&mut grads, 5.0);
        opt.step(&mut model, &grads);
        black_box(&grads);
    }
}

fn steps_for(hidden: usize) -> usize {
    if hidden == 1024 {
        32
    } else {
        64
    }
}

fn cell<C: StandardCell<f32> + Sync + 'static, D: StandardCell<f64> + 'static>(
    c: &mut Criterion,
    name: &str,
) {
    let mut group = c.benchmark_group(format!("step_{name}"));
    group.sample_size(10);
    for hidden in [128, 256, 512, 1024] {
        let t = steps_for(hidden);
        let mut rng = StdRng::seed_from_u64(1);
        // The step's GEMM flops: forward x·W_ihᵀ, h·W_hhᵀ and the readout, 2·m·n·k each, and
        // backward twice that (each product's two gradients). Criterion's "elem/s" is FLOP/s.
        let flops = 3 * 2 * t * B * hidden * (2 * C::GATES * hidden + V);
        println!(
            "step_{name} H {hidden}: kernels {} ({:.2} GFLOP per step in GEMMs; thrpt below is GFLOP/s)",
            kernel_path(),
            flops as f64 / 1e9
        );
        group.throughput(Throughput::Elements(flops as u64));
        let mut step = train_step::<f32, C>(hidden, t);
        group.bench_function(BenchmarkId::new("train_step", hidden), |b| {
            b.iter(&mut step)
        });
        let mut step = sharded_step::<C>(hidden, t);
        group.bench_function(BenchmarkId::new("sharded_step", hidden), |b| {
            b.iter(&mut step)
        });
        // The same step in f64, as gradient checks and exact studies run it (the packed kernel
        // for the per-step products; the general GEMM for the rest, and scalar activations).
        // H ≤ 512 only, to keep the run short.
        if hidden <= 512 {
            let mut step = train_step::<f64, D>(hidden, t);
            group.bench_function(BenchmarkId::new("f64_step", hidden), |b| b.iter(&mut step));
        }
        // The step's matmuls alone: per step h·W_hhᵀ forward and its two backward products (W_hh
        // a parameter, as in the layer, so the same kernels run), the hoisted x·W_ihᵀ with its
        // weight gradient, and the readout with its two gradients.
        let g = C::GATES * hidden;
        let h = Tensor::<f32>::uniform(&[B, hidden], -1.0, 1.0, &mut rng);
        let w = Param::new(Tensor::<f32>::uniform(&[g, hidden], -1.0, 1.0, &mut rng));
        let x = Tensor::<f32>::uniform(&[t * B, hidden], -1.0, 1.0, &mut rng);
        let head = Tensor::<f32>::uniform(&[V, hidden], -1.0, 1.0, &mut rng);
        group.bench_function(BenchmarkId::new("matmuls_only", hidden), |b| {
            b.iter(|| {
                let tape = Tape::new();
                let (hv, wv) = (tape.var(h.clone()), tape.param(&w));
                for _ in 0..t {
                    let y = hv.matmul(wv.t());
                    black_box(y.sum().backward());
                }
                let (xv, wi) = (tape.constant(x.clone()), tape.var(w.value()));
                black_box(xv.matmul(wi.t()).sum().backward());
                let (xo, wo) = (tape.var(x.clone()), tape.var(head.clone()));
                black_box(xo.matmul(wo.t()).sum().backward());
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    cell::<LstmCell<f32>, LstmCell<f64>>(c, "lstm");
    cell::<GruCell<f32>, GruCell<f64>>(c, "gru");
    cell::<RnnCell<f32>, RnnCell<f64>>(c, "rnn");
}

criterion_group!(benches, bench);
criterion_main!(benches);
