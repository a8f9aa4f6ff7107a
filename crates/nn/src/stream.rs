//! What the BPTT driver reads: a long stream cut into parallel lanes and read in time-major
//! chunks. A [`Stream`] holds token ids (the target of each token is the next one); a
//! [`FeatureStream`] holds feature vectors (the target is the next vector, or a target series of
//! its own). Both are [`Source`]s; a user's own kind of stream can be one too.

use std::ops::Range;

use rewind_autograd::{CrossEntropyOptions, Float, Reduction, Tensor, Var};

use crate::chunk_loss::ChunkLoss;

/// Token ids in the narrowest unsigned integer that holds every id of a vocabulary: one byte a
/// token for up to 256 symbols, two for up to 65,536, else four. A stream over a long text then
/// costs about a byte a character instead of a `usize`'s eight.
#[derive(Clone, Debug, PartialEq)]
pub enum Tokens {
    /// Ids below 2⁸.
    U8(Vec<u8>),
    /// Ids below 2¹⁶.
    U16(Vec<u16>),
    /// Ids below 2³².
    U32(Vec<u32>),
}

macro_rules! each_width {
    ($tokens:expr, $v:ident => $body:expr) => {
        match $tokens {
            Tokens::U8($v) => $body,
            Tokens::U16($v) => $body,
            Tokens::U32($v) => $body,
        }
    };
}

impl Tokens {
    /// No tokens yet, in the width for ids below `vocab`, with room for `capacity`.
    #[track_caller]
    pub fn for_vocab(vocab: usize, capacity: usize) -> Self {
        if vocab <= 1 << 8 {
            Tokens::U8(Vec::with_capacity(capacity))
        } else if vocab <= 1 << 16 {
            Tokens::U16(Vec::with_capacity(capacity))
        } else {
            assert!(
                vocab as u64 <= 1 << 32,
                "tokens: a vocabulary of {vocab} symbols needs ids wider than u32"
            );
            Tokens::U32(Vec::with_capacity(capacity))
        }
    }

    /// Appends `id`, which must fit the width chosen for the vocabulary.
    #[track_caller]
    pub fn push(&mut self, id: usize) {
        // A `match`, not `unwrap_or_else`: a closure would report its own line, not the caller's.
        each_width!(self, v => match id.try_into() {
            Ok(narrow) => v.push(narrow),
            Err(_) => panic!(
                "tokens: id {id} does not fit the vocabulary's width ({}: ids below {})",
                self.width_name(),
                self.bound()
            ),
        })
    }

    fn width_name(&self) -> &'static str {
        match self {
            Tokens::U8(_) => "u8",
            Tokens::U16(_) => "u16",
            Tokens::U32(_) => "u32",
        }
    }

    fn bound(&self) -> u64 {
        match self {
            Tokens::U8(_) => 1 << 8,
            Tokens::U16(_) => 1 << 16,
            Tokens::U32(_) => 1 << 32,
        }
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        each_width!(self, v => v.len())
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `index`.
    #[track_caller]
    pub fn get(&self, index: usize) -> usize {
        let len = self.len();
        if index >= len {
            panic!("tokens: index {index} out of range for {len} tokens");
        }
        each_width!(self, v => v[index] as usize)
    }

    /// The tokens from `at` on, removed from `self` (as `Vec::split_off`).
    #[track_caller]
    pub fn split_off(&mut self, at: usize) -> Tokens {
        match self {
            Tokens::U8(v) => Tokens::U8(v.split_off(at)),
            Tokens::U16(v) => Tokens::U16(v.split_off(at)),
            Tokens::U32(v) => Tokens::U32(v.split_off(at)),
        }
    }
}

impl From<Vec<usize>> for Tokens {
    /// The ids in the narrowest width that holds the largest.
    fn from(ids: Vec<usize>) -> Self {
        let vocab = ids.iter().max().map_or(0, |&m| m + 1);
        let mut tokens = Tokens::for_vocab(vocab, ids.len());
        for id in ids {
            tokens.push(id);
        }
        tokens
    }
}

/// A token stream cut into `lanes` contiguous lanes (lane b holds tokens b·L .. (b+1)·L), read
/// in time-major chunks. The target of each input is the token after it.
#[derive(Clone, Debug)]
pub struct Stream {
    tokens: Tokens,
    lanes: usize,
    lane_len: usize,
    position: usize,
}

/// Steps `start .. start + steps` of every lane: `inputs[t·lanes + b]` is lane b's token at
/// that step and `targets` the next token, or -100 where the step's loss does not count.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Input tokens [steps, lanes], time-major.
    pub inputs: Vec<usize>,
    /// Target tokens [steps, lanes] (-100: not counted).
    pub targets: Vec<i64>,
    /// Time steps.
    pub steps: usize,
    /// Parallel lanes (the batch).
    pub lanes: usize,
    /// The stream position of the first step.
    pub start: usize,
}

impl Stream {
    /// Cuts `tokens` into `lanes` lanes of equal length (the remainder is dropped).
    #[track_caller]
    pub fn new(tokens: impl Into<Tokens>, lanes: usize) -> Self {
        let tokens = tokens.into();
        assert!(lanes > 0, "stream: needs at least one lane");
        let lane_len = tokens.len() / lanes;
        assert!(
            lane_len >= 2,
            "stream: {} tokens are too few for {lanes} lanes of at least two tokens",
            tokens.len()
        );
        Stream {
            tokens,
            lanes,
            lane_len,
            position: 0,
        }
    }

    /// The number of lanes.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Steps in one pass over a lane (each step needs a next token as its target).
    pub fn steps(&self) -> usize {
        self.lane_len - 1
    }

    /// The next step to be read.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Steps left in this pass.
    pub fn remaining(&self) -> usize {
        self.steps() - self.position
    }

    /// Starts a new pass from the first step.
    pub fn rewind(&mut self) {
        Source::rewind(self)
    }

    /// Moves to `position` (to resume a pass where it stopped).
    #[track_caller]
    pub fn seek(&mut self, position: usize) {
        assert!(
            position <= self.steps(),
            "stream: position {position} past the end ({})",
            self.steps()
        );
        self.position = position;
    }

    /// Lanes `lanes` of this stream alone, at the same position: the share of one rank of a
    /// data-parallel run (see [`Bptt::step_across`](crate::Bptt::step_across)), whose lanes are
    /// those lanes of the whole stream, step for step.
    #[track_caller]
    pub fn select_lanes(&self, lanes: Range<usize>) -> Stream {
        assert!(
            lanes.start < lanes.end && lanes.end <= self.lanes,
            "stream: lanes {lanes:?} of a stream of {} lanes",
            self.lanes
        );
        let at = lanes.start * self.lane_len..lanes.end * self.lane_len;
        let tokens = match &self.tokens {
            Tokens::U8(v) => Tokens::U8(v[at].to_vec()),
            Tokens::U16(v) => Tokens::U16(v[at].to_vec()),
            Tokens::U32(v) => Tokens::U32(v[at].to_vec()),
        };
        Stream {
            tokens,
            lanes: lanes.len(),
            lane_len: self.lane_len,
            position: self.position,
        }
    }

    /// Steps `start .. start + steps` without moving the position.
    #[track_caller]
    pub fn chunk(&self, start: usize, steps: usize) -> Chunk {
        assert!(
            start + steps <= self.steps(),
            "stream: steps {start}..{} past the end ({})",
            start + steps,
            self.steps()
        );
        let mut inputs = Vec::with_capacity(steps * self.lanes);
        let mut targets = Vec::with_capacity(steps * self.lanes);
        for t in start..start + steps {
            for b in 0..self.lanes {
                let at = b * self.lane_len + t;
                inputs.push(self.tokens.get(at));
                targets.push(self.tokens.get(at + 1) as i64);
            }
        }
        Chunk {
            inputs,
            targets,
            steps,
            lanes: self.lanes,
            start,
        }
    }

    /// The next `steps` steps (fewer at the end of the pass), advancing; `None` when the pass is
    /// over.
    pub fn take(&mut self, steps: usize) -> Option<Chunk> {
        Source::take(self, steps)
    }
}

impl Chunk {
    /// The targets that count (those that are not -100).
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&t| t != -100).count()
    }

    /// The cross-entropy of `logits` `[steps·lanes, vocab]` (time-major rows, as `inputs`)
    /// against this chunk's targets, summed over those that count, with their number: the loss
    /// a model hands the driver.
    #[track_caller]
    pub fn cross_entropy<'t, F: Float>(&self, logits: Var<'t, F>) -> ChunkLoss<'t, F> {
        let sum = CrossEntropyOptions {
            reduction: Reduction::Sum,
            ..Default::default()
        };
        ChunkLoss::summed(
            logits.cross_entropy_with(&self.targets, sum),
            self.counted(),
        )
    }
}

/// Where the target of each step comes from in a [`FeatureStream`].
#[derive(Clone, Debug)]
enum FeatureTargets<F: Float> {
    /// The next vector of the series.
    Next,
    /// A series of its own, one row per input row.
    Given(Tensor<F>),
}

/// A series of feature vectors `[N, D]` cut into `lanes` contiguous lanes (lane b holds rows
/// b·L .. (b+1)·L), read in time-major chunks of `[steps, lanes, D]`: the continuous
/// counterpart of [`Stream`], for a model that reads measurements rather than tokens.
///
/// The target of a step is either the next vector ([`next_vector`](FeatureStream::next_vector):
/// forecasting, one step ahead) or the same row of a target series `[N, E]`
/// ([`paired`](FeatureStream::paired): a label for every input).
///
/// A GRU forecasting a sine wave one step ahead, trained in chunks of 10 steps:
///
/// ```
/// use rand::{rngs::StdRng, SeedableRng};
/// use rewind_autograd::Tensor;
/// use rewind_nn::{Bptt, Carry, FeatureStream, Gru, Linear, RecurrentConfig, Strategy};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let gru = Gru::init(RecurrentConfig::new(1, 8), &mut rng);
/// let head = Linear::init(8, 1, &mut rng);
/// let wave: Vec<f32> = (0..200).map(|t| (0.1 * t as f32).sin()).collect();
/// let mut stream = FeatureStream::next_vector(Tensor::from_vec(wave, &[200, 1]).unwrap(), 4);
/// let mut driver = Bptt::new(Strategy::Truncated { k: 10 }, Carry::zeros(&gru, 4), 0);
/// let update = driver
///     .step(&mut stream, |tape, chunk, state, run| {
///         let x = tape.constant(chunk.inputs.clone()); // [10, 4, 1]
///         let out = gru.forward_with(tape, x, Some(state), run);
///         (chunk.mse(head.forward(tape, out.output)), out.state)
///     })
///     .expect("the stream has steps");
/// assert_eq!(update.targets, 10 * 4); // the mean runs over every element
/// ```
#[derive(Clone, Debug)]
pub struct FeatureStream<F: Float = f32> {
    inputs: Tensor<F>,
    targets: FeatureTargets<F>,
    lanes: usize,
    lane_len: usize,
    position: usize,
}

/// Steps `start .. start + steps` of every lane of a [`FeatureStream`].
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureChunk<F: Float = f32> {
    /// Inputs `[steps, lanes, D]`, time-major (what [`Recurrent::forward`](crate::Recurrent)
    /// reads).
    pub inputs: Tensor<F>,
    /// Targets `[steps, lanes, E]`.
    pub targets: Tensor<F>,
    /// Time steps.
    pub steps: usize,
    /// Parallel lanes (the batch).
    pub lanes: usize,
    /// The stream position of the first step.
    pub start: usize,
    /// Leading steps that are context only: the model runs through them, but their loss does
    /// not count (TBPTT(k1, k2) replays steps an earlier update counted). 0 otherwise.
    pub context: usize,
}

impl<F: Float> FeatureStream<F> {
    /// A series `[N, D]` whose target at each step is the next vector.
    #[track_caller]
    pub fn next_vector(series: Tensor<F>, lanes: usize) -> Self {
        FeatureStream::cut(series, FeatureTargets::Next, lanes)
    }

    /// Inputs `[N, D]` with a target row `[N, E]` for each.
    #[track_caller]
    pub fn paired(inputs: Tensor<F>, targets: Tensor<F>, lanes: usize) -> Self {
        check_series(&inputs);
        assert!(
            targets.ndim() == 2 && targets.shape()[0] == inputs.shape()[0],
            "feature stream: targets {:?} need one row per input row of {:?}",
            targets.shape(),
            inputs.shape()
        );
        FeatureStream::cut(inputs, FeatureTargets::Given(targets), lanes)
    }

    #[track_caller]
    fn cut(inputs: Tensor<F>, targets: FeatureTargets<F>, lanes: usize) -> Self {
        check_series(&inputs);
        assert!(lanes > 0, "feature stream: needs at least one lane");
        let lane_len = inputs.shape()[0] / lanes;
        // A step needs its target: the next row, or the row beside it.
        let least = match targets {
            FeatureTargets::Next => 2,
            FeatureTargets::Given(_) => 1,
        };
        assert!(
            lane_len >= least,
            "feature stream: {} rows are too few for {lanes} lanes of at least {least}",
            inputs.shape()[0]
        );
        FeatureStream {
            inputs,
            targets,
            lanes,
            lane_len,
            position: 0,
        }
    }

    /// The number of lanes.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Steps in one pass over a lane.
    pub fn steps(&self) -> usize {
        match self.targets {
            FeatureTargets::Next => self.lane_len - 1,
            FeatureTargets::Given(_) => self.lane_len,
        }
    }

    /// Steps `start .. start + steps` without moving the position.
    #[track_caller]
    pub fn chunk(&self, start: usize, steps: usize) -> FeatureChunk<F> {
        assert!(
            start + steps <= self.steps(),
            "feature stream: steps {start}..{} past the end ({})",
            start + steps,
            self.steps()
        );
        let (series, shift) = match &self.targets {
            FeatureTargets::Next => (&self.inputs, 1),
            FeatureTargets::Given(targets) => (targets, 0),
        };
        FeatureChunk {
            inputs: self.gather(&self.inputs, start, steps),
            targets: self.gather(series, start + shift, steps),
            steps,
            lanes: self.lanes,
            start,
            context: 0,
        }
    }

    /// Rows `from .. from + steps` of every lane of `series`, time-major `[steps, lanes, width]`.
    fn gather(&self, series: &Tensor<F>, from: usize, steps: usize) -> Tensor<F> {
        let width = series.shape()[1];
        let rows = series.data();
        let mut out = Vec::with_capacity(steps * self.lanes * width);
        for t in from..from + steps {
            for b in 0..self.lanes {
                let row = b * self.lane_len + t;
                out.extend_from_slice(&rows[row * width..][..width]);
            }
        }
        Tensor::from_vec(out, &[steps, self.lanes, width]).expect("rows of the series' width")
    }
}

/// Panics, at the caller's line, unless `series` is `[N, D]`.
#[track_caller]
fn check_series<F: Float>(series: &Tensor<F>) {
    assert!(
        series.ndim() == 2,
        "feature stream: the series must be [N, D] (a row per time step), got {:?}",
        series.shape()
    );
}

impl<F: Float> FeatureChunk<F> {
    /// The steps whose loss counts.
    pub fn counted(&self) -> Range<usize> {
        self.context..self.steps
    }

    /// The squared error of `prediction` `[steps, lanes, E]` against the targets, summed over
    /// every element of the steps that count, with their number: the driver's mean is then
    /// PyTorch's `F.mse_loss` over those elements.
    #[track_caller]
    pub fn mse<'t>(&self, prediction: Var<'t, F>) -> ChunkLoss<'t, F> {
        let shape = prediction.shape();
        assert!(
            shape[..] == *self.targets.shape(),
            "feature chunk mse: prediction {:?} against targets {:?}",
            &shape[..],
            self.targets.shape()
        );
        let counted = self.counted();
        let target = prediction.tape().constant(self.targets.clone());
        let error = (prediction - target).narrow(0, counted.start, counted.len());
        let terms = error.shape().iter().product();
        ChunkLoss::summed((error * error).sum(), terms)
    }
}

/// What the [`Bptt`](crate::Bptt) driver reads: a stream of steps over parallel lanes, read in
/// chunks. [`Stream`] (token ids) and [`FeatureStream`] (feature vectors) are sources; a user's
/// own kind of stream becomes one by saying how to cut it.
pub trait Source {
    /// What one update reads.
    type Chunk: SourceChunk;

    /// The next step to be read.
    fn position(&self) -> usize;

    /// Steps left in this pass.
    fn remaining(&self) -> usize;

    /// Steps `start .. start + steps` of every lane, without moving the position.
    fn chunk(&self, start: usize, steps: usize) -> Self::Chunk;

    /// Moves to `position` (to resume a pass where it stopped).
    fn seek(&mut self, position: usize);

    /// Starts a new pass from the first step.
    fn rewind(&mut self) {
        self.seek(0);
    }

    /// The next `steps` steps (fewer at the end of the pass), advancing; `None` when the pass is
    /// over.
    fn take(&mut self, steps: usize) -> Option<Self::Chunk> {
        let n = steps.min(self.remaining());
        if n == 0 {
            return None;
        }
        let chunk = self.chunk(self.position(), n);
        self.seek(self.position() + n);
        Some(chunk)
    }
}

/// A chunk as the driver handles it: cut into pieces (TBPTT(k1, k2), checkpointed segments) and
/// told which leading steps are context only.
pub trait SourceChunk: Sized {
    /// Time steps.
    fn steps(&self) -> usize;

    /// Parallel lanes.
    fn lanes(&self) -> usize;

    /// The stream position of the first step.
    fn start(&self) -> usize;

    /// Steps `first .. first + steps` as a chunk of their own.
    fn piece(&self, first: usize, steps: usize) -> Self;

    /// Makes the first `steps` steps context only: the model still runs through them, but their
    /// loss must not count.
    fn exclude_first(&mut self, steps: usize);

    /// Lanes `lanes` alone, every step: one shard of the batch (see
    /// [`Bptt::step_sharded`](crate::Bptt::step_sharded)).
    fn select_lanes(&self, lanes: Range<usize>) -> Self;
}

impl Source for Stream {
    type Chunk = Chunk;

    fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        Stream::remaining(self)
    }

    fn chunk(&self, start: usize, steps: usize) -> Chunk {
        Stream::chunk(self, start, steps)
    }

    fn seek(&mut self, position: usize) {
        Stream::seek(self, position)
    }
}

impl SourceChunk for Chunk {
    fn steps(&self) -> usize {
        self.steps
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn start(&self) -> usize {
        self.start
    }

    fn piece(&self, first: usize, steps: usize) -> Chunk {
        let rows = first * self.lanes..(first + steps) * self.lanes;
        Chunk {
            inputs: self.inputs[rows.clone()].to_vec(),
            targets: self.targets[rows].to_vec(),
            steps,
            lanes: self.lanes,
            start: self.start + first,
        }
    }

    /// Their targets become -100, which [`Chunk::cross_entropy`] and PyTorch's losses skip.
    fn exclude_first(&mut self, steps: usize) {
        self.targets[..steps * self.lanes].fill(-100);
    }

    fn select_lanes(&self, lanes: Range<usize>) -> Chunk {
        let rows = (0..self.steps).flat_map(|t| lanes.clone().map(move |b| t * self.lanes + b));
        let (inputs, targets) = rows.map(|i| (self.inputs[i], self.targets[i])).unzip();
        Chunk {
            inputs,
            targets,
            steps: self.steps,
            lanes: lanes.len(),
            start: self.start,
        }
    }
}

/// How a feature stream is read: [`take`](Source::take), [`rewind`](Source::rewind) and the rest
/// come with the trait.
impl<F: Float> Source for FeatureStream<F> {
    type Chunk = FeatureChunk<F>;

    fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        self.steps() - self.position
    }

    fn chunk(&self, start: usize, steps: usize) -> FeatureChunk<F> {
        FeatureStream::chunk(self, start, steps)
    }

    #[track_caller]
    fn seek(&mut self, position: usize) {
        assert!(
            position <= self.steps(),
            "feature stream: position {position} past the end ({})",
            self.steps()
        );
        self.position = position;
    }
}

impl<F: Float> SourceChunk for FeatureChunk<F> {
    fn steps(&self) -> usize {
        self.steps
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn start(&self) -> usize {
        self.start
    }

    fn piece(&self, first: usize, steps: usize) -> FeatureChunk<F> {
        let take = |t: &Tensor<F>| {
            let row = t.numel() / self.steps;
            let mut shape = t.shape().to_vec();
            shape[0] = steps;
            Tensor::from_vec(t.data()[first * row..][..steps * row].to_vec(), &shape)
                .expect("whole steps")
        };
        FeatureChunk {
            inputs: take(&self.inputs),
            targets: take(&self.targets),
            steps,
            lanes: self.lanes,
            start: self.start + first,
            context: self.context.saturating_sub(first).min(steps),
        }
    }

    /// Sets [`context`](FeatureChunk::context), which [`FeatureChunk::mse`] leaves out.
    fn exclude_first(&mut self, steps: usize) {
        self.context = self.context.max(steps);
    }

    fn select_lanes(&self, lanes: Range<usize>) -> FeatureChunk<F> {
        FeatureChunk {
            inputs: self.inputs.narrow(1, lanes.start, lanes.len()),
            targets: self.targets.narrow(1, lanes.start, lanes.len()),
            lanes: lanes.len(),
            ..self.clone()
        }
    }
}

/// This chunk cut into consecutive pieces of `steps` steps (the last may be shorter).
pub(crate) fn pieces<C: SourceChunk>(chunk: &C, steps: usize) -> impl Iterator<Item = C> + '_ {
    (0..chunk.steps())
        .step_by(steps)
        .map(move |first| chunk.piece(first, steps.min(chunk.steps() - first)))
}
