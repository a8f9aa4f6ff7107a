//! How much a steady-state training step allocates, counted by a global allocator: the figure
//! the speed work has to bring down (the goal is no allocation per node after the first step).
//! Today every recorded value and every gradient slot is a fresh buffer, so the test pins the
//! current figure from above and prints it, rather than asserting zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{Param, Tape};
use rewind::nn::{nested, Embedding, Linear, Lstm, Module, RecurrentConfig};
use rewind::optim::{clip_grad_norm, Adam, Optimizer};

/// Counts allocations made by any thread; the test reads the difference around one step.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Model {
    embed: Embedding,
    lstm: Lstm,
    head: Linear,
}

impl Module for Model {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = nested("embed", self.embed.params());
        p.extend(nested("rnn", self.lstm.params()));
        p.extend(nested("head", self.head.params()));
        p
    }
}

#[test]
fn allocations_per_node_of_a_steady_state_training_step() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Model {
        embed: Embedding::new(20, 8, &mut rng),
        lstm: Lstm::new(RecurrentConfig::new(8, 16), &mut rng),
        head: Linear::new(16, 20, &mut rng),
    };
    let (steps, batch) = (16, 4);
    let tokens: Vec<usize> = (0..(steps + 1) * batch).map(|i| (i * 7) % 20).collect();
    let targets: Vec<i64> = tokens[batch..].iter().map(|&t| t as i64).collect();
    let mut opt = Adam::new(1e-3);
    let mut step = || {
        let tape = Tape::new();
        let x = model
            .embed
            .forward(&tape, &tokens[..steps * batch], &[steps, batch]);
        let out = model.lstm.forward(&tape, x, None, None);
        let logits = model
            .head
            .forward(&tape, out.output)
            .reshape(&[steps * batch, 20]);
        let mut grads = logits.cross_entropy(&targets).backward();
        clip_grad_norm(&mut grads, 5.0);
        opt.step(&mut model, &grads);
        tape.len()
    };
    step(); // the first step creates the optimizer's buffers
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let nodes = step();
    let per_step = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let per_node = per_step as f64 / nodes as f64;
    println!(
        "steady-state step: {per_step} allocations for {nodes} nodes ({per_node:.2} per node)"
    );
    // Each node's value and (when it needs one) its gradient slot are fresh buffers, plus a few
    // small vectors per op: 3.65 per node today (1,207 for 331 nodes). This bound catches a regression; the goal
    // is to bring it towards 0.
    assert!(per_node < 5.0, "{per_node:.2} allocations per node");
}
