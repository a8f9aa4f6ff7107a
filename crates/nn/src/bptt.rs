//! Training a recurrent model over a long stream (a [`Source`]: token ids or feature vectors,
//! cut into parallel lanes and read in chunks) with one driver for every strategy of
//! backpropagation through time: full, truncated, Williams and Peng's TBPTT(k1, k2), randomized,
//! random-length and checkpointed, on one tape or with the batch in shards on every core. The
//! state it carries is a [`ModelState`] (carry.rs), the loss it takes a [`ChunkLoss`]
//! (chunk_loss.rs).

use std::cell::Cell as Slot;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::thread;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind_autograd::{Float, Grads, Param, Tape, Tensor};

use crate::carry::{Carry, ModelState};
use crate::chunk_loss::ChunkLoss;
use crate::collective::{all_reduce_grads, Collective, CollectiveError};
use crate::recurrent::{InSegment, Run};
use crate::stream::{pieces, Source, SourceChunk};

/// How gradients flow back through time in each update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    /// The whole (remaining) pass in one update.
    Full,
    /// Chunks of `k` steps; the state is carried across chunks and detached at each boundary.
    Truncated {
        /// Steps per chunk.
        k: usize,
    },
    /// Williams and Peng's TBPTT(k1, k2): every `k1` new steps, backpropagate through the last
    /// `k2` (k2 ≥ k1); the loss counts the `k1` new steps only.
    Overlapping {
        /// New steps per update.
        k1: usize,
        /// Steps backpropagated through.
        k2: usize,
    },
    /// Chunks of `k` steps where the gradient into each state is multiplied by ξ, 0 with
    /// probability 1 - π and 1/π with probability π (Tallec and Ollivier): unbiased, with long
    /// paths rare but weighted up. π = 1 is truncated BPTT.
    Randomized {
        /// Steps per chunk.
        k: usize,
        /// The probability π of keeping the gradient at each step.
        pi: f64,
    },
    /// Chunks of a length drawn uniformly from `min..=max`, so the cuts fall in different places
    /// each pass.
    RandomLength {
        /// Shortest chunk.
        min: usize,
        /// Longest chunk.
        max: usize,
    },
    /// Chunks of `k` steps whose recurrent stacks run in checkpointed segments of `every` steps
    /// (√k by default): the gradient of truncated BPTT with the stacks' insides held in
    /// O(k/every + every) memory. What the stacks output (and the head and loss made of it) is
    /// still held for the whole chunk; [`CheckpointedModel`](Strategy::CheckpointedModel) drops
    /// that too, for a model that looks at no later step. Any model, bidirectional included.
    Checkpointed {
        /// Steps per chunk.
        k: usize,
        /// Steps per checkpointed segment.
        every: Option<usize>,
    },
    /// Chunks of `k` steps, each run as a chain of segments of `every` steps (√k by default),
    /// the whole model call for a segment, its loss included, inside one checkpoint: the tape
    /// keeps each segment's final state and loss, and backward recomputes one segment at a
    /// time. The gradient of truncated BPTT in O(k/every + every) memory in all, the model's
    /// outputs included.
    ///
    /// The model sees one segment at a time, so this is for models whose output at a step
    /// depends on no later step: not for a bidirectional stack (use
    /// [`Checkpointed`](Strategy::Checkpointed) there). A bidirectional
    /// [`Recurrent`](crate::Recurrent) panics when run inside a segment; a model that reads later steps by other
    /// means (its own reversal of time) is not detected and gets another model's gradient.
    CheckpointedModel {
        /// Steps per chunk.
        k: usize,
        /// Steps per segment.
        every: Option<usize>,
    },
}

/// What one update produced.
#[derive(Debug)]
pub struct Update<F: Float = f32> {
    /// The gradients of the mean loss over the counted terms.
    pub grads: Grads<F>,
    /// That mean loss (nats per target for cross-entropy).
    pub loss: f64,
    /// Terms counted ([`ChunkLoss::terms`]): targets for cross-entropy, elements for a squared
    /// error.
    pub targets: usize,
    /// New steps consumed from the stream.
    pub steps: usize,
    /// The most bytes the update's tape held at once, forward and backward
    /// ([`TapeStats::peak_bytes`](rewind_autograd::TapeStats)).
    pub peak_bytes: usize,
}

/// The driver: reads a [`Source`] (a token [`Stream`](crate::Stream), a
/// [`FeatureStream`](crate::FeatureStream), or a user's own) chunk by chunk, runs the model on a
/// fresh tape from the carried state, and returns the gradients of each update.
///
/// The model is a closure `(tape, chunk, initial_state, run) -> (loss, final_state)`: it must
/// start its recurrent stack from `initial_state`, pass `run`'s options (`grad_scale`,
/// `checkpoint_every`, `fresh_lanes`) to [`Recurrent::forward_with`](crate::Recurrent::forward_with), and return the chunk's
/// loss as a [`ChunkLoss`], a sum with its number of terms (usually
/// [`Chunk::cross_entropy`](crate::Chunk::cross_entropy) or
/// [`FeatureChunk::mse`](crate::FeatureChunk::mse)). The driver divides the update's summed
/// loss by its terms once, so the gradients are those of the mean loss over the update's counted
/// terms, however the model reduced and however the driver cut the chunk.
///
/// The carried state `K` is a [`Carry`] for a model around one [`Recurrent`](crate::Recurrent) stack of any cell,
/// or any [`ModelState`] state a model defines for itself.
///
/// A character model in chunks of 16 steps, its state carried and detached between them:
///
/// ```
/// use rand::{rngs::StdRng, SeedableRng};
/// use rewind_nn::{Bptt, Carry, Embedding, Linear, Lstm, RecurrentConfig, Strategy, Stream};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let (vocab, hidden, lanes) = (5, 8, 4);
/// let embed = Embedding::<f32>::init(vocab, 3, &mut rng);
/// let lstm = Lstm::init(RecurrentConfig::new(3, hidden), &mut rng);
/// let head = Linear::init(hidden, vocab, &mut rng);
/// let mut stream = Stream::new((0..400).map(|i| i * i % vocab).collect::<Vec<_>>(), lanes);
/// let mut driver = Bptt::new(Strategy::Truncated { k: 16 }, Carry::zeros(&lstm, lanes), 0);
/// while let Some(update) = driver.step(&mut stream, |tape, chunk, state, run| {
///     let x = embed.forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
///     let out = lstm.forward_with(tape, x, Some(state), run);
///     let logits = head.forward(tape, out.output).reshape(&[chunk.steps * lanes, vocab]);
///     (chunk.cross_entropy(logits), out.state)
/// }) {
///     assert!(update.loss > 0.0 && update.targets == update.steps * lanes);
///     // ... an optimizer step with update.grads
/// }
/// ```
///
/// A loss handed over bare does not compile, whatever its reduction: the driver cannot tell a
/// mean from a sum, and would divide a mean a second time.
///
/// ```compile_fail,E0308
/// # use rand::{rngs::StdRng, SeedableRng};
/// # use rewind_nn::{Bptt, Carry, Embedding, Linear, Lstm, RecurrentConfig, Strategy, Stream};
/// # let mut rng = StdRng::seed_from_u64(0);
/// # let (vocab, hidden, lanes) = (5, 8, 4);
/// # let embed = Embedding::<f32>::init(vocab, 3, &mut rng);
/// # let lstm = Lstm::init(RecurrentConfig::new(3, hidden), &mut rng);
/// # let head = Linear::init(hidden, vocab, &mut rng);
/// # let mut stream = Stream::new((0..400).map(|i| i * i % vocab).collect::<Vec<_>>(), lanes);
/// # let mut driver = Bptt::new(Strategy::Truncated { k: 16 }, Carry::zeros(&lstm, lanes), 0);
/// # let _ = (&embed, &head);
/// driver.step(&mut stream, |tape, chunk, state, run| {
///     let x = embed.forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
///     let out = lstm.forward_with(tape, x, Some(state), run);
///     let logits = head.forward(tape, out.output).reshape(&[chunk.steps * lanes, vocab]);
///     (logits.cross_entropy(&chunk.targets), out.state) // a mean, unlabelled
/// });
/// ```
///
/// A stack with a learned initial state (`RecurrentConfig::learn_initial_state`) starts from it
/// wherever a lane starts fresh: every lane in the first update of a pass (after
/// [`new`](Bptt::new) or [`restart`](Bptt::restart)), and a lane after
/// [`reset_lane`](Bptt::reset_lane). The driver marks those lanes in
/// [`Run::fresh_lanes`], so h_0 gets their gradient, and the optimizer updates it; later updates
/// start from the carried state, detached, and give h_0 nothing. This holds for a stack of any
/// cell, a user's included; a state a model carries by other means (its own [`ModelState`]) is the
/// model's to restart.
#[derive(Debug)]
pub struct Bptt<F: Float = f32, K = Carry<F>> {
    strategy: Strategy,
    rng: StdRng,
    /// Detached states by stream position (the last boundary; more for TBPTT(k1, k2)).
    states: BTreeMap<usize, Kept<K>>,
    /// The seed last given, and the updates since: what a sharded update seeds its shards'
    /// dropout from.
    seed: u64,
    updates: u64,
    precision: PhantomData<F>,
}

/// What an update reads, decided before any model runs.
struct Plan<C, F> {
    /// The new steps begin here.
    begin: usize,
    /// The new steps end here.
    end: usize,
    /// The state the update starts from was kept here.
    from: usize,
    chunk: C,
    fresh: Option<Vec<bool>>,
    xi: Option<Vec<F>>,
}

/// What one shard of a sharded update gives back from its thread.
struct ShardOutcome<F: Float, K> {
    sum: f64,
    terms: usize,
    grads: Grads<F>,
    last: K,
    kept: Vec<(usize, K)>,
    peak_bytes: usize,
}

/// A carried state, and the lanes that start fresh from it.
#[derive(Clone, Debug)]
struct Kept<K> {
    carry: K,
    /// Every lane starts fresh (the beginning of a pass).
    all_fresh: bool,
    /// Lanes reset since the state was kept.
    reset: Vec<usize>,
}

impl<K> Kept<K> {
    fn carried(carry: K) -> Self {
        Kept {
            carry,
            all_fresh: false,
            reset: Vec::new(),
        }
    }

    fn start(carry: K) -> Self {
        Kept {
            all_fresh: true,
            ..Kept::carried(carry)
        }
    }

    /// [`Run::fresh_lanes`] for `lanes` lanes, or `None` when no lane starts fresh.
    fn fresh_lanes(&self, lanes: usize) -> Option<Vec<bool>> {
        if !self.all_fresh && self.reset.is_empty() {
            return None;
        }
        let mut fresh = vec![self.all_fresh; lanes];
        for &lane in &self.reset {
            if let Some(f) = fresh.get_mut(lane) {
                *f = true;
            }
        }
        Some(fresh)
    }
}

impl<F: Float, K: ModelState<F>> Bptt<F, K> {
    /// A driver starting from `start` (usually [`Carry::zeros`]) at stream position 0; `seed`
    /// seeds the random strategies.
    #[track_caller]
    pub fn new(strategy: Strategy, start: K, seed: u64) -> Self {
        match strategy {
            Strategy::Truncated { k }
            | Strategy::Randomized { k, .. }
            | Strategy::Checkpointed { k, .. }
            | Strategy::CheckpointedModel { k, .. } => {
                assert!(k > 0, "bptt: chunks need at least one step")
            }
            Strategy::Overlapping { k1, k2 } => {
                assert!(
                    k1 > 0 && k2 >= k1,
                    "bptt: TBPTT(k1, k2) needs 0 < k1 <= k2, got ({k1}, {k2})"
                )
            }
            Strategy::RandomLength { min, max } => {
                assert!(
                    min > 0 && max >= min,
                    "bptt: random lengths need 0 < min <= max, got {min}..={max}"
                )
            }
            Strategy::Full => {}
        }
        if let Strategy::Checkpointed { every, .. } | Strategy::CheckpointedModel { every, .. } =
            strategy
        {
            assert!(
                every != Some(0),
                "bptt: checkpointed segments need at least one step, got every = Some(0)"
            );
        }
        if let Strategy::Randomized { pi, .. } = strategy {
            assert!(pi > 0.0 && pi <= 1.0, "bptt: π must be in (0, 1], got {pi}");
        }
        Bptt {
            strategy,
            rng: StdRng::seed_from_u64(seed),
            states: BTreeMap::from([(0, Kept::start(start))]),
            seed,
            updates: 0,
            precision: PhantomData,
        }
    }

    /// Restarts the generator of the random strategies from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
        self.seed = seed;
        self.updates = 0;
    }

    /// Replaces the carried state (to resume a run where it stopped, at `position`). No lane
    /// starts fresh from it: it is a state the run reached.
    pub fn resume_at(&mut self, position: usize, carry: K) {
        self.states = BTreeMap::from([(position, Kept::carried(carry))]);
    }

    /// The state carried into the next update.
    pub fn carry(&self) -> &K {
        &self
            .states
            .values()
            .next_back()
            .expect("a state is always kept")
            .carry
    }

    /// Zeroes one lane's carried state (its document ended); the lane starts fresh in the next
    /// update, from a learned initial state where the model has one.
    #[track_caller]
    pub fn reset_lane(&mut self, lane: usize) {
        for kept in self.states.values_mut() {
            kept.carry.reset_lane(lane);
            kept.reset.push(lane);
        }
    }

    /// Starts over from `start` at the stream's beginning (a new pass): every lane starts fresh.
    pub fn restart(&mut self, start: K) {
        self.states = BTreeMap::from([(0, Kept::start(start))]);
    }

    /// One update: reads the next chunk of `stream` and returns its gradients, or `None` when the
    /// pass is over.
    pub fn step<S, M>(&mut self, stream: &mut S, mut model: M) -> Option<Update<F>>
    where
        S: Source,
        M: for<'t> FnMut(
            &'t Tape<F>,
            &S::Chunk,
            K::Live<'t>,
            &Run<'_, F>,
        ) -> (ChunkLoss<'t, F>, K::Live<'t>),
    {
        let plan = self.plan(stream)?;
        let tape = Tape::new();
        let state = self.states[&plan.from].carry.on(&tape);
        let (total, last, kept) = run_update(
            self.strategy,
            &tape,
            &plan.chunk,
            state,
            plan.fresh.as_deref(),
            plan.xi.as_deref(),
            &mut model,
        );
        self.keep(plan.end, K::of(last), kept);
        let loss = total.mean();
        let grads = loss.backward();
        Some(Update {
            loss: loss.item().to_f64(),
            grads,
            targets: total.terms(),
            steps: plan.end - plan.begin,
            peak_bytes: tape.stats().peak_bytes,
        })
    }

    /// One update with its lanes cut into `shards` shards of consecutive lanes (at most one per
    /// lane), each run on a tape of its own by whichever of the cores ([`rewind_autograd::cores`])
    /// is free, its kernels kept on that thread; the gradients of the shards are summed once, in
    /// shard order, and divided by the update's terms. Data parallelism inside one process: no
    /// hand-off between threads at any time step, so the cores stay busy however small each
    /// step's products are.
    ///
    /// The update equals [`step`](Bptt::step)'s to rounding (the sums run in another order) under
    /// every strategy, a learned initial state and lane resets included, for any model whose
    /// lanes do not interact (each lane's loss depends on its own lanes' inputs and state, as in
    /// every recurrent stack; a model mixing lanes, such as a batch norm, would see only its
    /// shard). The model is shared by the threads, so it is `Fn + Sync`, and the carried state
    /// says how its lanes are cut and joined ([`ModelState::select_lanes`]).
    ///
    /// Dropout inside the model draws from a stream per shard, seeded from the driver's seed,
    /// the update's number and the shard's: a sharded run is reproducible from its seed and its
    /// number of shards, whichever thread runs a shard, and its masks are not those of an
    /// unsharded run.
    #[track_caller]
    pub fn step_sharded<S, M>(
        &mut self,
        stream: &mut S,
        shards: usize,
        model: M,
    ) -> Option<Update<F>>
    where
        S: Source,
        S::Chunk: Sync,
        K: Send + Sync,
        M: for<'t> Fn(
                &'t Tape<F>,
                &S::Chunk,
                K::Live<'t>,
                &Run<'_, F>,
            ) -> (ChunkLoss<'t, F>, K::Live<'t>)
            + Sync,
    {
        assert!(shards > 0, "bptt: step_sharded needs at least one shard");
        let update = self.step_in_shards(stream, shards, None, model)?;
        Some(update.expect("no collective, so no collective error"))
    }

    /// One update of a data-parallel run, on one of its ranks: `stream` holds this rank's lanes
    /// (for instance [`Stream::select_lanes`](crate::Stream::select_lanes) of the whole stream),
    /// run as [`step_sharded`](Bptt::step_sharded) runs them; then the gradients' sums over
    /// every parameter of `params` (in order, the same on every rank) travel as one flat buffer
    /// through `across`'s all-reduce, with the losses' sum and the number of terms, and the update
    /// is divided by the terms of all ranks. Every rank gets the same update, the one a single
    /// process would compute over all the lanes (to rounding: the sums run in another order), and
    /// carries its own lanes' state.
    ///
    /// Every rank must make the same calls: the same strategy and seed (random chunk lengths
    /// and truncation draws are the driver's, and must agree), streams of the same length, the
    /// same number of shards. Dropout inside the model draws, on rank r, shard i, from the stream
    /// of shard r·shards + i: N ranks of S shards each draw the masks of one process in N·S
    /// shards (`step_sharded`) over the same lanes when N·S divides the lanes evenly. A rank that
    /// fails or leaves makes this return the collective's error on the others; the driver has
    /// then read the chunk but not kept its state.
    #[track_caller]
    pub fn step_across<S, M>(
        &mut self,
        stream: &mut S,
        across: &dyn Collective,
        params: &[&Param<F>],
        shards: usize,
        model: M,
    ) -> Result<Option<Update<F>>, CollectiveError>
    where
        S: Source,
        S::Chunk: Sync,
        K: Send + Sync,
        M: for<'t> Fn(
                &'t Tape<F>,
                &S::Chunk,
                K::Live<'t>,
                &Run<'_, F>,
            ) -> (ChunkLoss<'t, F>, K::Live<'t>)
            + Sync,
    {
        assert!(shards > 0, "bptt: step_across needs at least one shard");
        self.step_in_shards(stream, shards, Some((across, params)), model)
            .transpose()
    }

    /// [`step_sharded`](Bptt::step_sharded), its sums all-reduced through `across` first when
    /// given ([`step_across`](Bptt::step_across)).
    fn step_in_shards<S, M>(
        &mut self,
        stream: &mut S,
        shards: usize,
        across: Option<(&dyn Collective, &[&Param<F>])>,
        model: M,
    ) -> Option<Result<Update<F>, CollectiveError>>
    where
        S: Source,
        S::Chunk: Sync,
        K: Send + Sync,
        M: for<'t> Fn(
                &'t Tape<F>,
                &S::Chunk,
                K::Live<'t>,
                &Run<'_, F>,
            ) -> (ChunkLoss<'t, F>, K::Live<'t>)
            + Sync,
    {
        let plan = self.plan(stream)?;
        let lanes = plan.chunk.lanes();
        let shards = shards.min(lanes);
        // Consecutive lanes, the first `lanes % shards` shards one lane longer.
        let cut = |i: usize| i * (lanes / shards) + i.min(lanes % shards);
        let ranges: Vec<Range<usize>> = (0..shards).map(|i| cut(i)..cut(i + 1)).collect();
        let start = &self.states[&plan.from].carry;
        let strategy = self.strategy;
        let seed = self.seed;
        let update = self.updates;
        // Rank r's shard i is shard r·shards + i of the whole batch: its own dropout stream.
        let first_shard = across.map_or(0, |(c, _)| c.rank() * shards);
        let run_shard = |i: usize| -> ShardOutcome<F, K> {
            // Its dropout draws from its own stream (`pull_shards` keeps its kernels on its thread).
            crate::dropout::drawing_from(shard_seed(seed, update, first_shard + i), || {
                let lanes = ranges[i].clone();
                let chunk = plan.chunk.select_lanes(lanes.clone());
                let fresh = plan.fresh.as_ref().map(|f| f[lanes.clone()].to_vec());
                let tape = Tape::new();
                let state = start.select_lanes(lanes).on(&tape);
                let (total, last, kept) = run_update(
                    strategy,
                    &tape,
                    &chunk,
                    state,
                    fresh.as_deref(),
                    plan.xi.as_deref(),
                    &mut &model,
                );
                let sum = total.sum();
                ShardOutcome {
                    sum: sum.item().to_f64(),
                    terms: total.terms(),
                    grads: sum.backward(),
                    last: K::of(last),
                    kept,
                    peak_bytes: tape.stats().peak_bytes,
                }
            })
        };
        let outcomes = pull_shards(shards, &run_shard);

        let (mut sum, mut terms, mut peak_bytes) = (0.0, 0, 0);
        let mut shard_grads = Vec::with_capacity(shards);
        let mut last = Vec::with_capacity(shards);
        let mut kept: BTreeMap<usize, Vec<K>> = BTreeMap::new();
        for outcome in outcomes {
            sum += outcome.sum;
            terms += outcome.terms;
            peak_bytes += outcome.peak_bytes;
            shard_grads.push(outcome.grads);
            last.push(outcome.last);
            for (position, state) in outcome.kept {
                kept.entry(position).or_default().push(state);
            }
        }
        // Summed in shard order, each parameter on whichever core is free.
        let mut grads = Grads::sum(&shard_grads);
        let mut terms = terms as f64;
        if let Some((across, params)) = across {
            let all = (|| {
                all_reduce_grads(across, &mut grads, params)?;
                let mut scalars = [sum, terms];
                across.all_reduce_f64(&mut scalars)?;
                Ok(scalars)
            })();
            match all {
                Ok([s, t]) => (sum, terms) = (s, t),
                Err(error) => return Some(Err(error)),
            }
        }
        grads.scale(F::from_f64(1.0 / terms));
        let kept = kept
            .into_iter()
            .map(|(p, states)| (p, K::join_lanes(states)));
        self.keep(plan.end, K::join_lanes(last), kept.collect());
        Some(Ok(Update {
            loss: sum / terms,
            grads,
            targets: terms as usize,
            steps: plan.end - plan.begin,
            peak_bytes,
        }))
    }

    /// Decides the next update: the steps it reads, the state it starts from, the lanes that
    /// start fresh and the strategy's random draws; advances `stream` past its new steps.
    fn plan<S: Source>(&mut self, stream: &mut S) -> Option<Plan<S::Chunk, F>> {
        let begin = stream.position();
        let new_steps = match self.strategy {
            Strategy::Full => stream.remaining(),
            Strategy::Truncated { k }
            | Strategy::Randomized { k, .. }
            | Strategy::Checkpointed { k, .. }
            | Strategy::CheckpointedModel { k, .. } => k,
            Strategy::Overlapping { k1, .. } => k1,
            Strategy::RandomLength { min, max } => self.rng.random_range(min..=max),
        }
        .min(stream.remaining());
        if new_steps == 0 {
            return None;
        }
        // TBPTT(k1, k2) starts k2 - k1 steps back, from a state kept then; the others start here.
        let back = match self.strategy {
            Strategy::Overlapping { k1, k2 } => (k2 - k1).min(begin),
            _ => 0,
        };
        let from = self.start_position(begin - back);
        let mut chunk = stream.chunk(from, begin + new_steps - from);
        chunk.exclude_first(begin - from);
        stream.seek(begin + new_steps);
        let fresh = self.states[&from].fresh_lanes(chunk.lanes());
        let xi = self.grad_scale(chunk.steps());
        Some(Plan {
            begin,
            end: begin + new_steps,
            from,
            chunk,
            fresh,
            xi,
        })
    }

    /// Keeps the state an update ended with at `end`, and those it passed for later overlapping
    /// updates, and forgets those no later update can start from.
    fn keep(&mut self, end: usize, last: K, passed: Vec<(usize, K)>) {
        for (position, state) in passed {
            self.states
                .entry(position)
                .or_insert_with(|| Kept::carried(state));
        }
        self.states.insert(end, Kept::carried(last));
        self.forget_before(end);
        self.updates += 1;
    }

    /// The latest kept state at or before `position`.
    fn start_position(&self, position: usize) -> usize {
        *self
            .states
            .range(..=position)
            .next_back()
            .expect("position 0 is kept")
            .0
    }

    /// Drops states no later update can start from.
    fn forget_before(&mut self, next: usize) {
        let keep_from = match self.strategy {
            Strategy::Overlapping { k1, k2 } => next.saturating_sub(k2 - k1),
            _ => next,
        };
        let keep_from = self.start_position(keep_from);
        self.states.retain(|&p, _| p >= keep_from);
    }

    fn grad_scale(&mut self, steps: usize) -> Option<Vec<F>> {
        let Strategy::Randomized { pi, .. } = self.strategy else {
            return None;
        };
        if pi == 1.0 {
            return None;
        }
        let keep = F::from_f64(1.0 / pi);
        Some(
            (0..steps)
                .map(|_| {
                    if self.rng.random::<f64>() < pi {
                        keep
                    } else {
                        F::ZERO
                    }
                })
                .collect(),
        )
    }
}

/// The seed of shard `shard`'s dropout in update `update` of a run seeded with `seed`: the three
/// mixed (SplitMix64's finaliser), so that neighbouring numbers give unrelated streams.
fn shard_seed(seed: u64, update: u64, shard: usize) -> u64 {
    let mut z = seed
        ^ update.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (shard as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `run(0)`, …, `run(shards - 1)` on this thread and the kernel pool's workers
/// ([`rewind_autograd::share_out`], which keeps each shard's kernels on its thread), each thread
/// taking the next shard not yet taken until none
/// is left (more shards than cores keep one slow core from holding up the rest), and returns the
/// outcomes in shard order. The workers outlive the update, so the buffers a shard's tape let go
/// are there for the same shard in the next one. A shard's panic is raised again here, with its
/// own message, once every shard has stopped.
fn pull_shards<T: Send>(shards: usize, run: &(dyn Fn(usize) -> T + Sync)) -> Vec<T> {
    let outcomes: Vec<Mutex<Option<thread::Result<T>>>> =
        (0..shards).map(|_| Mutex::new(None)).collect();
    rewind_autograd::share_out(shards, &|i| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(i)));
        *outcomes[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    });
    outcomes
        .into_iter()
        .map(|slot| {
            let outcome = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            match outcome.expect("every shard ran") {
                Ok(value) => value,
                Err(payload) => panic::resume_unwind(payload),
            }
        })
        .collect()
}

/// One update's model run on `tape`, as `strategy` cuts it: whole, in TBPTT(k1, k2)'s pieces
/// (returning the states at their boundaries), or in checkpointed segments.
fn run_update<'t, F, K, C, M>(
    strategy: Strategy,
    tape: &'t Tape<F>,
    chunk: &C,
    state: K::Live<'t>,
    fresh: Option<&[bool]>,
    xi: Option<&[F]>,
    model: &mut M,
) -> (ChunkLoss<'t, F>, K::Live<'t>, Vec<(usize, K)>)
where
    F: Float,
    K: ModelState<F>,
    C: SourceChunk,
    M: for<'s> FnMut(&'s Tape<F>, &C, K::Live<'s>, &Run<'_, F>) -> (ChunkLoss<'s, F>, K::Live<'s>),
{
    let root =
        |k: usize, every: Option<usize>| every.unwrap_or_else(|| (k as f64).sqrt().ceil() as usize);
    match strategy {
        Strategy::Overlapping { k1, k2 } => {
            run_kept::<F, K, C, M>(tape, chunk, state, fresh, gcd(k1, k2), model)
        }
        Strategy::CheckpointedModel { k, every } => {
            let (loss, last) =
                run_segments::<F, K, C, M>(tape, chunk, state, fresh, root(k, every), model);
            (loss, last, Vec::new())
        }
        _ => {
            let run = Run {
                grad_scale: xi,
                checkpoint_every: match strategy {
                    Strategy::Checkpointed { k, every } => Some(root(k, every)),
                    _ => None,
                },
                fresh_lanes: fresh,
                ..Run::default()
            };
            let (loss, last) = model(tape, chunk, state, &run);
            (loss, last, Vec::new())
        }
    }
}

/// Runs `chunk` in pieces of `g` steps on one tape; returns the loss of every piece, the final
/// state, and the detached state at every piece boundary, for later overlapping updates. The
/// `fresh` lanes start fresh in the first piece.
fn run_kept<'t, F, K, C, M>(
    tape: &'t Tape<F>,
    chunk: &C,
    mut state: K::Live<'t>,
    fresh: Option<&[bool]>,
    g: usize,
    model: &mut M,
) -> (ChunkLoss<'t, F>, K::Live<'t>, Vec<(usize, K)>)
where
    F: Float,
    K: ModelState<F>,
    C: SourceChunk,
    M: for<'s> FnMut(&'s Tape<F>, &C, K::Live<'s>, &Run<'_, F>) -> (ChunkLoss<'s, F>, K::Live<'s>),
{
    let mut total = ChunkLoss::summed(tape.constant(Tensor::scalar(F::ZERO)), 0);
    let mut passed = Vec::new();
    for (i, piece) in pieces(chunk, g).enumerate() {
        let run = Run {
            fresh_lanes: fresh.filter(|_| i == 0),
            ..Run::default()
        };
        let (loss, next) = model(tape, &piece, state, &run);
        total = total + loss;
        state = next;
        passed.push((piece.start() + piece.steps(), K::of(next)));
    }
    (total, state, passed)
}

/// Runs `chunk` in segments of `every` steps, each model call (its loss included) inside a
/// [`Tape::checkpoint`]: the tape keeps each segment's summed loss and final state, and during
/// backward recomputes one segment's insides at a time. Returns the loss of every segment and the
/// final state. The `fresh` lanes start fresh in the first segment.
fn run_segments<'t, F, K, C, M>(
    tape: &'t Tape<F>,
    chunk: &C,
    mut state: K::Live<'t>,
    fresh: Option<&[bool]>,
    every: usize,
    model: &mut M,
) -> (ChunkLoss<'t, F>, K::Live<'t>)
where
    F: Float,
    K: ModelState<F>,
    C: SourceChunk,
    M: for<'s> FnMut(&'s Tape<F>, &C, K::Live<'s>, &Run<'_, F>) -> (ChunkLoss<'s, F>, K::Live<'s>),
{
    let mut total = ChunkLoss::summed(tape.constant(Tensor::scalar(F::ZERO)), 0);
    // One segment covering the chunk shows the model every step, as truncation does.
    let cut = chunk.steps() > every;
    for (i, piece) in pieces(chunk, every).enumerate() {
        let run = Run {
            fresh_lanes: fresh.filter(|_| i == 0),
            ..Run::default()
        };
        // The count of terms is a plain number, the same in the recompute: kept aside.
        let terms = Slot::new(0);
        let outputs = tape.checkpoint(&K::vars(state), |inner, vars| {
            let _segment = cut.then(InSegment::enter);
            let (loss, next) = model(inner, &piece, K::from_vars(vars), &run);
            terms.set(loss.terms());
            let mut outputs = vec![loss.sum()];
            outputs.extend(K::vars(next));
            outputs
        });
        total = total + ChunkLoss::summed(outputs[0], terms.get());
        state = K::from_vars(&outputs[1..]);
    }
    (total, state)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
