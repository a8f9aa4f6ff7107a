//! Collectives: what the ranks of a data-parallel run say to each other. Each rank computes the
//! gradient of its own share of the batch; an all-reduce sums those gradients so that every rank
//! applies the same update; a broadcast starts every rank from rank 0's weights; a scalar
//! all-reduce sums losses and counts.
//!
//! [`Collective`] is the interface. [`Threads`] implements it between threads of one process
//! (no dependency; the ranks' tests and a single machine's runs use it); `Mpi`, with the cargo
//! feature `mpi`, between the processes of an MPI job (`mpirun -np N`), on one machine or many.
//! Among threads, every operation either completes on every rank or returns an error on every
//! rank still waiting in it: a rank that leaves (its [`ThreadRank`] dropped, as when its thread
//! panics) is named in the error, one that does not arrive within the group's timeout is listed
//! in it, and ranks that call different operations at once are refused. Under MPI, a rank that
//! waits past the timeout ends its process with an error naming itself and the operation, and
//! `mpirun` ends the others. Nobody waits forever.
//!
//! Gradients cross as one flat buffer per update ([`all_reduce_grads`]), in the order of the
//! model's parameters, not as one message per tensor.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rewind_autograd::{Float, Grads, Param, Tensor};

#[cfg(feature = "mpi")]
pub use crate::collective_mpi::Mpi;

/// Why a collective operation failed. Every rank that was waiting in the operation gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectiveError {
    /// A rank left the group (its handle was dropped, for instance when its thread panicked)
    /// before the operation completed.
    RankLeft {
        /// The rank that left.
        rank: usize,
    },
    /// Some ranks had not arrived when the timeout ran out.
    Timeout {
        /// The rank that gave up waiting.
        rank: usize,
        /// How long it waited.
        waited: Duration,
        /// The ranks it was waiting for.
        missing: Vec<usize>,
    },
    /// Ranks passed buffers of different lengths (or types) to one operation: they are not
    /// running the same model, or not the same step.
    Mismatch {
        /// The operation.
        op: &'static str,
        /// The rank whose buffer differed from the first to arrive.
        rank: usize,
        /// Its length.
        len: usize,
        /// The length the first rank to arrive passed.
        expected: usize,
    },
    /// Ranks called different operations at once (an all-reduce beside a broadcast, another
    /// root, another precision): they are not running the same program.
    Disagree {
        /// The rank whose call differed from the first to arrive.
        rank: usize,
        /// Its call.
        called: String,
        /// The first rank's call.
        expected: String,
    },
    /// A broadcast named a root that is not a rank of the group.
    NoSuchRoot {
        /// The root given.
        root: usize,
        /// The group's size.
        size: usize,
    },
}

impl fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectiveError::RankLeft { rank } => write!(
                f,
                "rank {rank} left the group during a collective operation (did it fail?)"
            ),
            CollectiveError::Timeout {
                rank,
                waited,
                missing,
            } => write!(
                f,
                "rank {rank} waited {:.1} s for rank(s) {missing:?}, which never arrived",
                waited.as_secs_f64()
            ),
            CollectiveError::Mismatch {
                op,
                rank,
                len,
                expected,
            } => write!(
                f,
                "{op}: rank {rank} passed {len} values where another rank passed {expected}; \
                 are the ranks running the same model and flags?"
            ),
            CollectiveError::Disagree {
                rank,
                called,
                expected,
            } => write!(
                f,
                "rank {rank} called {called} where another rank called {expected}; are the ranks running the same program?"
            ),
            CollectiveError::NoSuchRoot { root, size } => {
                write!(f, "broadcast from rank {root}, in a group of {size} ranks")
            }
        }
    }
}

impl std::error::Error for CollectiveError {}

/// The operations a data-parallel run needs from its ranks. All ranks call the same operations
/// in the same order, each with a buffer of the same length.
pub trait Collective {
    /// This rank, from 0 to `size() - 1`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Sums `values` element-wise over the ranks and leaves the sum in `values` on every rank.
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;

    /// [`all_reduce_f32`](Collective::all_reduce_f32) in f64.
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;

    /// Copies rank `root`'s `values` into every rank's `values`.
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<(), CollectiveError>;

    /// [`broadcast_f32`](Collective::broadcast_f32) in f64.
    fn broadcast_f64(&self, values: &mut [f64], root: usize) -> Result<(), CollectiveError>;

    /// Stops every rank of the run now, with exit code `code`: for a rank that has failed while
    /// the others may be waiting for it. By default this process exits (which ends every rank of
    /// a [`Threads`] group with it); an MPI job's ranks are ended by MPI.
    fn abort_all(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    /// The sum of `x` over the ranks (losses, counts of targets), on every rank.
    fn all_reduce_scalar(&self, x: f64) -> Result<f64, CollectiveError> {
        let mut v = [x];
        self.all_reduce_f64(&mut v)?;
        Ok(v[0])
    }
}

/// `values` summed over the ranks, in the model's precision.
pub fn all_reduce<F: Float>(c: &dyn Collective, values: &mut [F]) -> Result<(), CollectiveError> {
    if let Some(v) = as_f32(values) {
        c.all_reduce_f32(v)
    } else {
        c.all_reduce_f64(as_f64(values).expect("Float is f32 or f64"))
    }
}

/// Rank `root`'s `values` on every rank, in the model's precision.
pub fn broadcast<F: Float>(
    c: &dyn Collective,
    values: &mut [F],
    root: usize,
) -> Result<(), CollectiveError> {
    if let Some(v) = as_f32(values) {
        c.broadcast_f32(v, root)
    } else {
        c.broadcast_f64(as_f64(values).expect("Float is f32 or f64"), root)
    }
}

fn as_f32<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    // SAFETY: F is f32 when the type ids match, so the slice is reinterpreted as itself.
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}

fn as_f64<F: Float>(x: &mut [F]) -> Option<&mut [f64]> {
    // SAFETY: as in `as_f32`.
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f64>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}

/// Sums `grads` over the ranks as one flat buffer: every parameter of `params` in order, then
/// one value per parameter counting the ranks that have its gradient, and each sum written back.
/// A parameter no rank has a gradient for stays without one (an optimizer leaves it alone, as
/// it would in one process); one that only some ranks have counts as zeros on the others.
/// Every rank passes the same parameters in the same order.
pub fn all_reduce_grads<F: Float>(
    c: &dyn Collective,
    grads: &mut Grads<F>,
    params: &[&Param<F>],
) -> Result<(), CollectiveError> {
    let sizes: Vec<usize> = params.iter().map(|p| p.value().numel()).collect();
    let total: usize = sizes.iter().sum();
    let mut flat = Vec::with_capacity(total + params.len());
    for (p, &n) in params.iter().zip(&sizes) {
        match grads.get(p) {
            Some(g) => flat.extend_from_slice(g.data()),
            None => flat.extend(std::iter::repeat_n(F::ZERO, n)),
        }
    }
    flat.extend(params.iter().map(|p| match grads.get(p) {
        Some(_) => F::ONE,
        None => F::ZERO,
    }));
    all_reduce(c, &mut flat)?;
    let (sums, holders) = flat.split_at(total);
    let mut at = 0;
    for ((p, &n), &held) in params.iter().zip(&sizes).zip(holders) {
        let sum = &sums[at..at + n];
        at += n;
        if held == F::ZERO {
            continue;
        }
        match grads.get_mut(p) {
            Some(g) => g.data_mut().copy_from_slice(sum),
            None => {
                let summed = Tensor::from_vec(sum.to_vec(), p.value().shape())
                    .expect("the parameter's own shape");
                grads
                    .insert(p, summed)
                    .expect("a gradient of the parameter's own shape");
            }
        }
    }
    Ok(())
}

/// Rank `root`'s weights on every rank: one flat buffer of every parameter in order.
pub fn broadcast_params<F: Float>(
    c: &dyn Collective,
    params: &[&Param<F>],
    root: usize,
) -> Result<(), CollectiveError> {
    let mut flat = Vec::new();
    for p in params {
        flat.extend_from_slice(p.value().data());
    }
    broadcast(c, &mut flat, root)?;
    let mut at = 0;
    for p in params {
        p.update(|t| {
            let n = t.numel();
            t.data_mut().copy_from_slice(&flat[at..at + n]);
            at += n;
        });
    }
    Ok(())
}

/// A buffer deposited by a rank, in either precision.
#[derive(Clone, Debug)]
enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F64(v) => v.len(),
        }
    }
}

/// What the ranks of a [`Threads`] group share.
struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    size: usize,
    timeout: Duration,
}

struct State {
    /// Operations completed so far.
    generation: u64,
    /// The call of the operation under way (the first rank's) and its buffers, by rank.
    call: Option<Call>,
    slots: Vec<Option<Buffer>>,
    /// The last completed operation's result.
    result: Option<Arc<Buffer>>,
    /// The first rank that left, once one has.
    left: Option<usize>,
    /// The first error an operation ended with, and that operation's generation: every later
    /// operation fails with it, and so does every rank still waiting in that one.
    failed: Option<(u64, CollectiveError)>,
}

/// Ranks as threads of one process: `Threads::group(n, timeout)` gives one [`ThreadRank`] per
/// rank, each moved into its thread. An all-reduce sums in rank order (rank 0's values, plus rank
/// 1's, …), so the result does not depend on which thread arrives first.
pub struct Threads;

impl Threads {
    /// `size` ranks (1 or more) whose operations give up after `timeout` without every rank.
    pub fn group(size: usize, timeout: Duration) -> Vec<ThreadRank> {
        assert!(size > 0, "collective: a group needs at least one rank");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                generation: 0,
                call: None,
                slots: vec![None; size],
                result: None,
                left: None,
                failed: None,
            }),
            arrived: Condvar::new(),
            size,
            timeout,
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }
}

/// One rank of a [`Threads`] group. Dropping it tells the other ranks it has left.
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl fmt::Debug for ThreadRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThreadRank({} of {})", self.rank, self.shared.size)
    }
}

impl ThreadRank {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deposits `mine` for the operation `call`, waits for every rank's, and returns what
    /// `combine` made of them (run once, by the last rank to arrive, over the buffers in rank
    /// order).
    fn exchange(
        &self,
        call: Call,
        mine: Buffer,
        combine: impl FnOnce(&[Buffer]) -> Result<Buffer, CollectiveError>,
    ) -> Result<Arc<Buffer>, CollectiveError> {
        let mut state = self.lock();
        if let Some((_, error)) = &state.failed {
            return Err(error.clone());
        }
        if let Some(rank) = state.left {
            return Err(CollectiveError::RankLeft { rank });
        }
        let generation = state.generation;
        let first = state.slots.iter().flatten().map(Buffer::len).next();
        let refused = match (&state.call, first) {
            (Some(expected), _) if *expected != call => Some(CollectiveError::Disagree {
                rank: self.rank,
                called: call.to_string(),
                expected: expected.to_string(),
            }),
            (_, Some(expected)) if expected != mine.len() => Some(CollectiveError::Mismatch {
                op: call.op,
                rank: self.rank,
                len: mine.len(),
                expected,
            }),
            _ => None,
        };
        if let Some(error) = refused {
            state.failed = Some((generation, error.clone()));
            state.left.get_or_insert(self.rank);
            self.shared.arrived.notify_all();
            return Err(error);
        }
        state.call.get_or_insert(call);
        state.slots[self.rank] = Some(mine);
        if state.slots.iter().all(Option::is_some) {
            let buffers: Vec<Buffer> = state.slots.iter_mut().map(|s| s.take().unwrap()).collect();
            state.call = None;
            let outcome = combine(&buffers);
            state.generation += 1;
            self.shared.arrived.notify_all();
            return match outcome {
                Ok(result) => {
                    let result = Arc::new(result);
                    state.result = Some(Arc::clone(&result));
                    Ok(result)
                }
                Err(error) => {
                    state.failed = Some((generation, error.clone()));
                    Err(error)
                }
            };
        }
        let start = Instant::now();
        loop {
            if state.generation != generation {
                // This operation completed (a later one may have failed since: not this one).
                return match &state.failed {
                    Some((g, error)) if *g == generation => Err(error.clone()),
                    _ => Ok(Arc::clone(
                        state.result.as_ref().expect("a completed result"),
                    )),
                };
            }
            if let Some((_, error)) = &state.failed {
                return Err(error.clone());
            }
            if let Some(rank) = state.left {
                return Err(CollectiveError::RankLeft { rank });
            }
            let waited = start.elapsed();
            if waited >= self.shared.timeout {
                let missing = (0..self.shared.size)
                    .filter(|&r| state.slots[r].is_none())
                    .collect();
                let error = CollectiveError::Timeout {
                    rank: self.rank,
                    waited,
                    missing,
                };
                // The group cannot complete this operation now: every rank that arrives later
                // gets the same error instead of waiting out its own timeout.
                state.failed = Some((generation, error.clone()));
                state.left.get_or_insert(self.rank);
                self.shared.arrived.notify_all();
                return Err(error);
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, self.shared.timeout - waited)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What a rank asked of the group: the operation, its root, and the values' precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Call {
    op: &'static str,
    root: Option<usize>,
    precision: &'static str,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.root {
            Some(root) => write!(f, "{} from rank {root} in {}", self.op, self.precision),
            None => write!(f, "{} in {}", self.op, self.precision),
        }
    }
}

impl Drop for ThreadRank {
    fn drop(&mut self) {
        let mut state = self.lock();
        state.left.get_or_insert(self.rank);
        self.shared.arrived.notify_all();
    }
}

/// The element-wise sum of `buffers` in rank order (rank 0's values, plus rank 1's, …); buffers
/// of different lengths, or another precision, are a mismatch.
fn sum_in_rank_order<T: Element>(
    op: &'static str,
    buffers: &[Buffer],
) -> Result<Buffer, CollectiveError> {
    let expected = buffers[0].len();
    let mut parts = Vec::with_capacity(buffers.len());
    for (rank, buffer) in buffers.iter().enumerate() {
        match T::unwrap(buffer) {
            Some(values) if values.len() == expected => parts.push(values),
            _ => {
                return Err(CollectiveError::Mismatch {
                    op,
                    rank,
                    len: buffer.len(),
                    expected,
                })
            }
        }
    }
    let mut sum = parts[0].clone();
    for part in &parts[1..] {
        sum.iter_mut().zip(part.iter()).for_each(|(s, &x)| *s += x);
    }
    Ok(T::wrap(sum))
}

/// A value a [`Buffer`] holds: f32 or f64.
trait Element: Copy + std::ops::AddAssign {
    const NAME: &'static str;
    fn wrap(values: Vec<Self>) -> Buffer;
    fn unwrap(buffer: &Buffer) -> Option<&Vec<Self>>;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn wrap(values: Vec<f32>) -> Buffer {
        Buffer::F32(values)
    }
    fn unwrap(buffer: &Buffer) -> Option<&Vec<f32>> {
        match buffer {
            Buffer::F32(v) => Some(v),
            Buffer::F64(_) => None,
        }
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn wrap(values: Vec<f64>) -> Buffer {
        Buffer::F64(values)
    }
    fn unwrap(buffer: &Buffer) -> Option<&Vec<f64>> {
        match buffer {
            Buffer::F64(v) => Some(v),
            Buffer::F32(_) => None,
        }
    }
}

impl ThreadRank {
    /// `values` summed over the ranks, in rank order.
    fn all_reduce<T: Element>(&self, values: &mut [T]) -> Result<(), CollectiveError> {
        let op = "all_reduce";
        let call = Call {
            op,
            root: None,
            precision: T::NAME,
        };
        let sum = self.exchange(call, T::wrap(values.to_vec()), |buffers| {
            sum_in_rank_order::<T>(op, buffers)
        })?;
        values.copy_from_slice(T::unwrap(&sum).expect("a sum in the precision of its terms"));
        Ok(())
    }

    /// Rank `root`'s `values` on every rank.
    fn broadcast<T: Element>(&self, values: &mut [T], root: usize) -> Result<(), CollectiveError> {
        let size = self.shared.size;
        if root >= size {
            return Err(CollectiveError::NoSuchRoot { root, size });
        }
        let call = Call {
            op: "broadcast",
            root: Some(root),
            precision: T::NAME,
        };
        let from = self.exchange(call, T::wrap(values.to_vec()), |buffers| {
            Ok(buffers[root].clone())
        })?;
        values.copy_from_slice(T::unwrap(&from).expect("the root's values, in their precision"));
        Ok(())
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.all_reduce(values)
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.all_reduce(values)
    }

    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        self.broadcast(values, root)
    }

    fn broadcast_f64(&self, values: &mut [f64], root: usize) -> Result<(), CollectiveError> {
        self.broadcast(values, root)
    }
}
