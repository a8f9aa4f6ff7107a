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
use std::sync::{Mutex, OnceLock, TryLockError};
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
    // The mutex guards no data, only the right to post a job. A share's panic re-raised below
    // poisons it, yet leaves nothing half-done (every share had finished), so poisoning is
    // ignored: otherwise every later job would find the pool "busy" and run on one thread.
    let busy = match pool.busy.try_lock() {
        Ok(guard) if workers.len() + 1 == parts => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) if workers.len() + 1 == parts => {
            Some(poisoned.into_inner())
        }
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
    use std::collections::HashSet;
    use std::thread::ThreadId;

    /// The thread each share of one job ran on.
    fn threads_of_one_job() -> Vec<ThreadId> {
        let ran: Vec<Mutex<Option<ThreadId>>> = (0..threads()).map(|_| Mutex::new(None)).collect();
        run(&|p| {
            let previous = ran[p].lock().unwrap().replace(thread::current().id());
            assert!(previous.is_none(), "share {p} ran twice");
        });
        ran.into_iter()
            .map(|r| r.into_inner().unwrap().expect("every share runs"))
            .collect()
    }

    /// True once a job runs each share on a thread of its own. Another test's job may hold the
    /// pool for a while, and a job that finds it busy runs every share on its caller's thread, so
    /// this tries for up to two seconds.
    fn a_job_spreads_across_threads() -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let distinct: HashSet<ThreadId> = threads_of_one_job().into_iter().collect();
            if distinct.len() == threads() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Every share of every job runs exactly once, with jobs posted from several threads at once:
    /// a job that gets the pool runs share 0 on its caller and each other share on a worker of its
    /// own, one that finds it busy runs all its shares on its caller.
    #[test]
    fn every_share_runs_once_under_concurrent_jobs() {
        let parts = threads();
        let spread = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let me = thread::current().id();
                    for _ in 0..500 {
                        let ran = threads_of_one_job();
                        assert_eq!(ran[0], me, "share 0 runs on the caller");
                        let on_workers = ran[1..].iter().all(|&t| t != me);
                        let here = ran[1..].iter().all(|&t| t == me);
                        assert!(on_workers || here, "a job is split whole or not at all");
                        let distinct: HashSet<_> = ran.iter().collect();
                        assert!(here || distinct.len() == parts, "one worker per share");
                        if on_workers && parts > 1 {
                            spread.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(
            parts == 1 || spread.load(Ordering::Relaxed) > 0 || a_job_spreads_across_threads(),
            "no job ran on the workers"
        );
    }

    /// A share that panics, on the caller's thread or a worker's, makes `run` panic after every
    /// share has finished, and later jobs are still split across the threads.
    #[test]
    fn a_panicking_share_panics_the_caller_and_leaves_the_pool_usable() {
        for bad in 0..threads() {
            let caught = panic::catch_unwind(|| run(&|p| assert_ne!(p, bad, "share {p} fails")));
            assert!(caught.is_err());
            assert!(
                a_job_spreads_across_threads(),
                "after share {bad} panicked, jobs run on one thread"
            );
        }
    }
}
