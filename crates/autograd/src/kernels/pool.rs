//! Worker threads kept alive to take a share of one matrix product, so that splitting a product
//! across the cores costs a few microseconds instead of a thread spawn: an RNN's per-step
//! products take 50-500 µs each and come one after another.
//!
//! One job runs at a time. A caller that finds the pool busy (another thread's product, or a
//! product inside a share) runs the whole job itself. A worker spins for a short while after
//! each share, since the next product of a time step usually follows within microseconds, then
//! parks until woken.

use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// A share of a job: called with the share's index, from 0 (the caller's) to `parts - 1`.
type Share<'a> = &'a (dyn Fn(usize) + Sync);

struct Pool {
    workers: OnceLock<Vec<Thread>>,
    /// Held by the caller whose job is running.
    busy: Mutex<()>,
    /// Bumped once per job; every worker runs its share of each job once it sees the new epoch.
    epoch: AtomicU64,
    /// The running job; written only while `busy` is held and no worker is running.
    job: UnsafeCell<Option<Share<'static>>>,
    /// Workers that have not yet finished their share of the running job.
    pending: AtomicUsize,
    /// Set when a worker's share panicked; the caller panics in turn.
    failed: AtomicBool,
}

// SAFETY: `job` is written by the holder of `busy` before the epoch is bumped (Release) and read
// by workers after they observe the new epoch (Acquire); the caller waits for `pending` to reach
// zero, that is for every worker to be done with the job, before it releases `busy`.
unsafe impl Sync for Pool {}

/// The number of threads a product may be split over: the cores, at most 4.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// Runs `share(0)`, …, `share(threads() - 1)`, share 0 on this thread and one on each worker when
/// the pool is free (else all here), and returns when all have finished.
pub(crate) fn run(share: Share<'_>) {
    let parts = threads();
    let pool = pool();
    let workers = pool.workers();
    let busy = match pool.busy.try_lock() {
        Ok(guard) if workers.len() + 1 == parts => Some(guard),
        _ => None,
    };
    let Some(_busy) = busy else {
        (0..parts).for_each(share);
        return;
    };
    // SAFETY: the lifetime is erased only for the duration of this call: workers read the job
    // after the epoch bump below and are done with it when `pending` reaches zero, which this
    // function waits for before returning.
    let erased = unsafe { std::mem::transmute::<Share<'_>, Share<'static>>(share) };
    // SAFETY: we hold `busy` and every worker has finished the previous job, so none reads `job`.
    unsafe { *pool.job.get() = Some(erased) };
    pool.pending.store(workers.len(), Ordering::Relaxed);
    pool.epoch.fetch_add(1, Ordering::Release);
    workers.iter().for_each(Thread::unpark);
    // The workers borrow from this frame: wait for them even if this thread's share panics.
    let mine = panic::catch_unwind(AssertUnwindSafe(|| share(0)));
    while pool.pending.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    if let Err(payload) = mine {
        panic::resume_unwind(payload);
    }
    if pool.failed.swap(false, Ordering::Relaxed) {
        panic!("a worker thread panicked in its share of a matrix product");
    }
}

fn pool() -> &'static Pool {
    static POOL: Pool = Pool {
        workers: OnceLock::new(),
        busy: Mutex::new(()),
        epoch: AtomicU64::new(0),
        job: UnsafeCell::new(None),
        pending: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    };
    &POOL
}

impl Pool {
    /// The workers, started on first use: one per core besides the caller's.
    fn workers(&'static self) -> &'static [Thread] {
        self.workers.get_or_init(|| {
            // No job has run yet: jobs wait for the workers.
            let epoch = self.epoch.load(Ordering::Acquire);
            (1..threads())
                .map_while(|index| {
                    thread::Builder::new()
                        .name(format!("rewind-gemm-{index}"))
                        .spawn(move || self.work(index, epoch))
                        .ok()
                        .map(|h| h.thread().clone())
                })
                .collect()
        })
    }

    /// A worker's loop: wait for a new epoch, run its share, report.
    fn work(&'static self, index: usize, mut seen: u64) {
        loop {
            let since = Instant::now();
            let mut now = seen;
            let mut spins = 0u32;
            while now == seen {
                spins = spins.wrapping_add(1);
                // Reading the clock costs more than a spin: look at it every 256th.
                if !spins.is_multiple_of(256) || since.elapsed() < SPIN {
                    std::hint::spin_loop();
                } else {
                    thread::park();
                }
                now = self.epoch.load(Ordering::Acquire);
            }
            seen = now;
            // SAFETY: the new epoch was published after `job` was written; see `Pool`.
            let share = unsafe { (*self.job.get()).expect("a job is posted before its epoch") };
            if panic::catch_unwind(AssertUnwindSafe(|| share(index))).is_err() {
                self.failed.store(true, Ordering::Relaxed);
            }
            self.pending.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every share of every job runs exactly once, with jobs posted from several threads at once
    /// (those that find the pool busy run their shares themselves).
    #[test]
    fn every_share_runs_once_under_concurrent_jobs() {
        let parts = threads();
        let callers: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    for _ in 0..500 {
                        let runs: Vec<AtomicUsize> =
                            (0..parts).map(|_| AtomicUsize::new(0)).collect();
                        run(&|p| {
                            runs[p].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().expect("a caller thread failed");
        }
    }

    /// A share that panics, on the caller's thread or a worker's, makes `run` panic after every
    /// share has finished, and the pool keeps working.
    #[test]
    fn a_panicking_share_panics_the_caller_and_leaves_the_pool_usable() {
        for bad in 0..threads() {
            let caught = panic::catch_unwind(|| run(&|p| assert_ne!(p, bad, "share {p} fails")));
            assert!(caught.is_err());
            let done = AtomicUsize::new(0);
            run(&|_| {
                done.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(done.load(Ordering::Relaxed), threads());
        }
    }
}
