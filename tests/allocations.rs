//! How much a steady-state training step allocates, counted by a global allocator.
//!
//! After the first steps, a step's values and gradients, its tape's node list and its backward
//! pass's gradient slots all come from the buffers the step before let go (the recycler behind
//! `Tensor`). What is left is a fixed number of allocations per step: a few per op that stacks
//! or concatenates a whole sequence, a few per layer, and the optimizer's per-parameter names.
//! None is per node: the count is the same at T = 16 as at T = 64, with four times the nodes.
//!
//! The general GEMM (matrixmultiply) allocates its packing buffer on every call, with the 32-byte
//! alignment of its kernels, which nothing in rewind asks for; those are counted apart and printed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{buffer_cache_bytes, set_buffer_cache_limit, Param, Tape};
use rewind::nn::{
    nested, Bptt, Carry, Cell, Embedding, Gru, Linear, Lstm, Module, Recurrent, RecurrentConfig,
    Rnn, Strategy, Stream,
};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};

/// Counts allocations made by any thread, rewind's own apart from the GEMM library's.
struct Counting;

static OWN: AtomicUsize = AtomicUsize::new(0);
static GEMM: AtomicUsize = AtomicUsize::new(0);
/// Bytes asked for by rewind's own allocations.
static OWN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// matrixmultiply's packing buffers are aligned to 32 or 64 bytes; rewind's buffers, vectors and
/// maps to at most 16.
fn count(layout: Layout) {
    if layout.align() >= 32 {
        GEMM.fetch_add(1, Ordering::Relaxed);
    } else {
        OWN.fetch_add(1, Ordering::Relaxed);
        OWN_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
    }
}

// SAFETY: defers every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// char_rnn's shape of model, small: embedding, a recurrent stack, a linear head.
struct Model<C> {
    embed: Embedding,
    rnn: Recurrent<C>,
    head: Linear,
}

impl<C: Cell> Module for Model<C> {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("embed", self.embed.params());
        p.extend(nested("rnn", self.rnn.params()));
        p.extend(nested("head", self.head.params()));
        p
    }
}

/// What one steady-state step allocated.
#[derive(Debug, PartialEq)]
struct Step {
    own: usize,
    gemm: usize,
    nodes: usize,
}

const VOCAB: usize = 20;
const BATCH: usize = 4;

/// Trains `model` on `steps` time steps (forward, cross-entropy, backward, clipping, Adam) until
/// its buffers are in place, then counts the next few steps and keeps the smallest count.
///
/// Why the smallest: the GEMM worker keeps buffers of its own, and it fills them the first time it
/// takes a band of some op, which may be any step (whichever thread is free takes a band). Such a
/// step counts a few allocations more, once (measured: +3 or +4 in one step of eight, in about one
/// run of four, with the cross-entropy in bands). A per-node allocation is in every step, so the
/// smallest count still shows it.
fn steady_state_step<C: Cell>(model: &mut Model<C>, steps: usize) -> Step {
    let tokens: Vec<usize> = (0..(steps + 1) * BATCH).map(|i| (i * 7) % VOCAB).collect();
    let targets: Vec<i64> = tokens[BATCH..].iter().map(|&t| t as i64).collect();
    let mut opt = Adam::new(1e-3);
    let mut step = || {
        let tape = Tape::new();
        let x = model
            .embed
            .forward(&tape, &tokens[..steps * BATCH], &[steps, BATCH]);
        let out = model.rnn.forward(&tape, x, None, None);
        let logits = model
            .head
            .forward(&tape, out.output)
            .reshape(&[steps * BATCH, VOCAB]);
        let mut grads = logits.cross_entropy(&targets).backward();
        clip_grad_norm(&mut grads, 5.0);
        opt.step(model, &grads);
        tape.len()
    };
    // The first step makes the optimizer's state; the second finds last step's buffers.
    step();
    step();
    // Made before counting, so that its own allocation is not counted.
    let mut counted = Vec::with_capacity(4);
    for _ in 0..4 {
        let (own, gemm) = (OWN.load(Ordering::Relaxed), GEMM.load(Ordering::Relaxed));
        let nodes = step();
        counted.push(Step {
            own: OWN.load(Ordering::Relaxed) - own,
            gemm: GEMM.load(Ordering::Relaxed) - gemm,
            nodes,
        });
    }
    println!("T {steps}: {counted:?}");
    counted
        .into_iter()
        .min_by_key(|s| s.own)
        .expect("four steps")
}

fn model<C: Cell>(make: fn(RecurrentConfig, &mut StdRng) -> Recurrent<C>) -> Model<C> {
    let mut rng = StdRng::seed_from_u64(0);
    Model {
        embed: Embedding::new(VOCAB, 8, &mut rng),
        rnn: make(RecurrentConfig::new(8, 16).num_layers(2), &mut rng),
        head: Linear::new(16, VOCAB, &mut rng),
    }
}

/// The step at T = 16 and at T = 64, on fresh models of one kind.
fn at_two_lengths<C: Cell>(make: fn(RecurrentConfig, &mut StdRng) -> Recurrent<C>) -> (Step, Step) {
    let short = steady_state_step(&mut model(make), 16);
    let long = steady_state_step(&mut model(make), 64);
    (short, long)
}

/// Measures one kind of model at two lengths.
type Measure = fn() -> (Step, Step);

// One test, so that no other test's thread allocates while a step is counted.
#[test]
fn a_steady_state_step_allocates_a_fixed_number_independent_of_t_and_of_nodes() {
    let cells: [(&str, Measure); 3] = [
        ("LSTM", || at_two_lengths(Lstm::new)),
        ("GRU", || at_two_lengths(Gru::new)),
        ("RNN", || at_two_lengths(Rnn::new)),
    ];
    sharded_updates_reuse_their_shards_buffers();
    for (name, measure) in cells {
        let (short, long) = measure();
        println!("{name}: T 16 {short:?}, T 64 {long:?}");
        assert!(long.nodes > 3 * short.nodes, "{name}: {short:?} {long:?}");
        assert_eq!(
            short.own, long.own,
            "{name}: allocations per step grow with T: {short:?} then {long:?}"
        );
        // Measured: 115 (LSTM), 108 (GRU), 108 (RNN) for 2 layers and 9 parameters; about 60 of
        // them are the parameter names `Module::params` builds for the optimizer.
        assert!(short.own <= 120, "{name}: {short:?}");
    }
    assert!(buffer_cache_bytes() > 0, "nothing was kept for reuse");

    // Without the cache, every value and gradient is a new buffer again: the count above is the
    // recycler's doing, and this test can tell.
    set_buffer_cache_limit(0);
    let (short, long) = at_two_lengths(Lstm::new);
    println!("LSTM without the buffer cache: T 16 {short:?}, T 64 {long:?}");
    assert_eq!(buffer_cache_bytes(), 0);
    assert!(
        long.own > short.own + long.nodes - short.nodes,
        "{short:?} {long:?}"
    );
}

/// The shards of a sharded update run on threads that live from one update to the next, so the
/// buffers a shard's tape let go are there for the next update's shards: in steady state an
/// update allocates a small part of what its tapes hold at their peak (the gradients a worker
/// hands to the caller, which keeps them). With a thread spawned per update, the thread's
/// shard allocated its whole tape again every time.
fn sharded_updates_reuse_their_shards_buffers() {
    const LANES: usize = 8;
    let mut model = model(Lstm::new);
    let text: Vec<usize> = (0..40_000).map(|i| (i * 7 + i / 13) % VOCAB).collect();
    let mut stream = Stream::new(text, LANES);
    let mut driver = Bptt::new(
        Strategy::Truncated { k: 64 },
        Carry::zeros(&model.rnn, LANES),
        0,
    );
    let mut opt = Adam::new(1e-3);
    let mut update = |model: &mut Model<_>| {
        let before = OWN_BYTES.load(Ordering::Relaxed);
        let mut u = driver
            .step_sharded(&mut stream, 2, |tape, chunk, state, run| {
                let x = model
                    .embed
                    .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
                let out = model.rnn.forward_with(tape, x, Some(state), run);
                let logits = model.head.forward(tape, out.output);
                let flat = logits.reshape(&[chunk.steps * chunk.lanes, VOCAB]);
                (chunk.cross_entropy(flat), out.state)
            })
            .expect("the text holds every update");
        clip_grad_norm(&mut u.grads, 5.0);
        opt.step(model, &u.grads);
        (OWN_BYTES.load(Ordering::Relaxed) - before, u.peak_bytes)
    };
    for _ in 0..3 {
        update(&mut model);
    }
    let counted: Vec<(usize, usize)> = (0..4).map(|_| update(&mut model)).collect();
    println!("sharded updates (bytes allocated, peak bytes of the tapes): {counted:?}");
    for (allocated, peak) in counted {
        assert!(
            allocated < peak / 4,
            "a steady sharded update allocated {allocated} bytes; its tapes peaked at {peak}"
        );
    }
}
