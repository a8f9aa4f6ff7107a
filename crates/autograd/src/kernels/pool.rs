//! Worker threads kept alive to take a share of one matrix product, so that splitting a product
//! across the cores costs a few microseconds instead of a thread spawn: an RNN's per-step
//! products take 50-500 µs each and come one after another.
//!
//! One job runs at a time. A caller that finds the pool busy (another thread's product, or a
//! product inside a share) runs the whole job itself. A worker spins for a short while after
//! each share, since the next product of a time step usually follows within microseconds, then
//! parks until woken.
//!
//! Shares are claimed, not assigned: the caller and the workers each take the next unclaimed
//! share until none is left. A worker that the scheduler has put aside (another process on its
//! core) claims nothing, and the caller runs its share instead of waiting a whole time slice for
//! it to come back: on a busy machine a product runs at one core's speed, never at the
//! scheduler's.

use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use smallvec::SmallVec;

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// A caller that waits this long, and longer than its own shares took, for a share a worker
/// claimed has found the worker taken off its core mid-share by another process.
const PATIENCE: Duration = Duration::from_millis(1);

/// Then every job runs on its caller alone for this long (the first time; see [`SOLO_MAX`]): on a
/// loaded machine one core at full speed beats two threads that wait on each other's time slices.
/// The next job after it tries both threads again.
const SOLO: Duration = Duration::from_millis(50);

/// A worker held up again within [`SOLO`] of the solo period's end means the load is still
/// there: each such period is twice the one before, up to this, so that a long-lasting load costs
/// a failed try every 800 ms rather than every 50. A worker held up later starts again at `SOLO`.
const SOLO_MAX: Duration = Duration::from_millis(800);

/// A share of a job: called with the share's index, from 0 to `parts - 1`.
type Share<'a> = &'a (dyn Fn(usize) + Sync);

struct Pool {
    workers: OnceLock<Vec<Thread>>,
    /// Held by the caller whose job is running.
    busy: Mutex<()>,
    /// Bumped once per job; a worker looks for shares to claim once it sees the new epoch.
    epoch: AtomicU64,
    /// The running job's number (the epoch's low 32 bits), its number of shares and its next
    /// unclaimed share, packed as `number << 32 | parts << 16 | share`: a claim is one
    /// compare-and-swap, and a claim made for a job that has since finished fails on the number.
    claim: AtomicU64,
    /// The running job; written only while `busy` is held and no worker is running.
    job: UnsafeCell<Option<Share<'static>>>,
    /// Shares of the running job not yet finished.
    pending: AtomicUsize,
    /// Set when a worker's share panicked; the caller panics in turn.
    failed: AtomicBool,
    /// Until when (nanoseconds after [`clock`]'s start) jobs run on their callers alone.
    solo_until: AtomicU64,
    /// How long (nanoseconds) the latest solo period was.
    solo_period: AtomicU64,
}

/// Nanoseconds since the first call.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// SAFETY: `job` is written by the holder of `busy` before the epoch is bumped (Release), while no
// share of any job is pending. A worker reads it only after claiming a share of the current job
// (the claim's number matches, Acquire after the caller's Release), and that share keeps
// `pending` above zero until it is done; the caller waits for `pending` to reach zero, that is
// for every share to be done with the job, before it releases `busy` or writes `job` again.
unsafe impl Sync for Pool {}

/// The most shares one job is split into (they are counted in 16 bits).
pub(crate) const MAX_PARTS: usize = 1 << 15;

fn pack(job: u32, parts: usize, share: usize) -> u64 {
    debug_assert!(parts <= MAX_PARTS && share <= parts);
    (u64::from(job) << 32) | ((parts as u64) << 16) | share as u64
}

/// The threads the pool runs on, the caller's included: `REWIND_THREADS` when set, else every
/// core the process may use. Read once; any value but a whole number from 1 up panics, naming it.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| match std::env::var_os("REWIND_THREADS") {
        Some(v) if !v.is_empty() => v
            .to_str()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| {
                panic!("REWIND_THREADS is {v:?}; expected a whole number of threads, 1 or more")
            }),
        _ => thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

thread_local! {
    /// How many [`on_this_thread`] calls this thread is inside.
    static ALONE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with every kernel it calls kept on this thread: for work already spread over the
/// cores (the shards of a batch, one per thread), where handing each product to the pool would
/// only make the shards wait for each other. Nests; the setting ends with `f`, a panic included.
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            ALONE.with(|a| a.set(a.get() - 1));
        }
    }
    ALONE.with(|a| a.set(a.get() + 1));
    let _leave = Leave;
    f()
}

fn alone() -> bool {
    ALONE.with(|a| a.get() > 0)
}

/// The number of threads a job may be split over here: [`cores`], or 1 inside
/// [`on_this_thread`].
pub(crate) fn threads() -> usize {
    if alone() {
        1
    } else {
        cores()
    }
}

/// The number of threads to split a job over now: [`threads`], or 1 while jobs run on their
/// callers alone (see [`SOLO`]). The general GEMM asks, since its bands, run one after the other,
/// would each pack their operands again; cheaper shares are still cut, so their offsets stay
/// tested whatever the pool's state.
pub(crate) fn threads_now() -> usize {
    if pool().solo() {
        1
    } else {
        threads()
    }
}

/// Runs `share(0)`, …, `share(parts - 1)`, each once, on this thread and the workers, which
/// claim them one at a time while any is left (all here when the pool is busy), and returns when
/// all have finished. More shares than threads balance the load when a core is also running
/// something else: the thread that has the core takes the shares the other does not get to.
pub(crate) fn run(parts: usize, share: Share<'_>) {
    let parts = parts.min(MAX_PARTS);
    let pool = pool();
    let workers = pool.workers();
    // The mutex guards no data, only the right to post a job. A share's panic re-raised below
    // poisons it, yet leaves nothing half-done (every share had finished), so poisoning is
    // ignored: otherwise every later job would find the pool "busy" and run on one thread.
    let complete = workers.len() + 1 == cores() && parts > 1 && !alone() && !pool.solo();
    let busy = match pool.busy.try_lock() {
        Ok(guard) if complete => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) if complete => Some(poisoned.into_inner()),
        _ => None,
    };
    let Some(_busy) = busy else {
        (0..parts).for_each(share);
        return;
    };
    // SAFETY: the lifetime is erased only for the duration of this call: shares are claimed
    // and run before `pending` reaches zero, which this function waits for before returning.
    let erased = unsafe { std::mem::transmute::<Share<'_>, Share<'static>>(share) };
    // SAFETY: we hold `busy` and every share of the previous job has finished, so none reads `job`.
    unsafe { *pool.job.get() = Some(erased) };
    let number = pool.epoch.load(Ordering::Relaxed).wrapping_add(1) as u32;
    pool.pending.store(parts, Ordering::Relaxed);
    pool.claim.store(pack(number, parts, 0), Ordering::Relaxed);
    pool.epoch.fetch_add(1, Ordering::Release);
    workers.iter().for_each(Thread::unpark);
    // The workers borrow from this frame: run shares while any is left, then wait for those the
    // workers claimed, even if one of this thread's panicked.
    let posted = Instant::now();
    let mut panicked = None;
    while let Some(i) = pool.take(number) {
        let result = panic::catch_unwind(AssertUnwindSafe(|| share(i)));
        pool.pending.fetch_sub(1, Ordering::Release);
        if let Err(payload) = result {
            panicked.get_or_insert(payload);
        }
    }
    let own = posted.elapsed();
    while pool.pending.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    let waited = posted.elapsed() - own;
    if waited > PATIENCE.max(own) {
        pool.go_solo();
    }
    if let Some(payload) = panicked {
        panic::resume_unwind(payload);
    }
    if pool.failed.swap(false, Ordering::Relaxed) {
        panic!("a worker thread panicked in its share of a matrix product");
    }
}

/// Runs `share(0)`, …, `share(parts - 1)`, each once, on this thread and the pool's workers,
/// each thread taking the next share not yet taken, and returns when all have finished. For work
/// already cut to the cores' measure, such as the shards of a batch: each share runs with the
/// kernels it calls kept on its thread ([`on_this_thread`]). The workers live from one call to
/// the next, and so do their caches of buffers: a thread spawned for each call would start it
/// with none, and allocate and zero every buffer its share needs again.
///
/// As for a product's shares: on a pool that is busy (another thread's job, or a share of one)
/// or running jobs on their callers alone (a worker was held up by another process), every share
/// runs on this thread. A share's panic is raised again here once every share has finished.
pub fn share_out(parts: usize, share: &(dyn Fn(usize) + Sync)) {
    for first in (0..parts).step_by(MAX_PARTS) {
        let n = MAX_PARTS.min(parts - first);
        run(n, &|i| on_this_thread(|| share(first + i)));
    }
}

/// Element-wise work (transcendental functions, mostly) below which a kernel's rows stay on one
/// thread: about 10 µs, several times what handing a band to a worker costs.
pub(crate) const ROW_BAND_WORK: usize = 8192;

/// A band of rows: its first row's index, and its rows of each output.
type Band<'a, T, const N: usize> = (usize, [&'a mut [T]; N]);

/// Runs `f(first_row, band)` over bands of `rows` rows, shared among the threads as [`run`]'s
/// shares: each band holds its rows of every output in `outs` (each output `rows` rows of equal
/// width). `work` is the element-wise work per row: below [`ROW_BAND_WORK`] in all, or with one
/// row, `f` runs once on this thread over every row.
pub(crate) fn row_bands<T: Send, const N: usize>(
    rows: usize,
    work: usize,
    outs: [&mut [T]; N],
    f: impl Fn(usize, [&mut [T]; N]) + Sync,
) {
    let parts = if rows >= 2 && rows.saturating_mul(work) >= ROW_BAND_WORK {
        threads().min(rows)
    } else {
        1
    };
    if parts == 1 {
        f(0, outs);
        return;
    }
    let per = rows.div_ceil(parts);
    let widths = outs.each_ref().map(|o| o.len() / rows);
    // Each band behind its own lock: a share takes its band out once, so no two threads ever
    // hold the same rows, and no unsafe code is needed to hand them over.
    let mut bands: SmallVec<[Mutex<Option<Band<'_, T, N>>>; 4]> = SmallVec::new();
    let mut rest = outs;
    for first in (0..rows).step_by(per) {
        let n = per.min(rows - first);
        let band = std::array::from_fn(|j| {
            let (head, tail) = std::mem::take(&mut rest[j]).split_at_mut(n * widths[j]);
            rest[j] = tail;
            head
        });
        bands.push(Mutex::new(Some((first, band))));
    }
    run(bands.len(), &|k| {
        let taken = bands[k].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((first, band)) = taken {
            f(first, band);
        }
    });
}

/// Runs `f` over matching pieces of `x` and `out` (of equal length) that together cover both,
/// in bands across the threads when there are [`ROW_BAND_WORK`] elements or more (as
/// [`row_bands`] would split rows of a few hundred elements), else once over the whole.
pub(crate) fn elementwise<T: Send + Sync>(
    x: &[T],
    out: &mut [T],
    f: impl Fn(&[T], &mut [T]) + Sync,
) {
    const PIECE: usize = 256;
    assert_eq!(x.len(), out.len(), "elementwise: input and output lengths");
    let rows = out.len() / PIECE;
    let (head, tail) = out.split_at_mut(rows * PIECE);
    row_bands(rows, PIECE, [head], |first, [band]| {
        let start = first * PIECE;
        f(&x[start..start + band.len()], band);
    });
    f(&x[rows * PIECE..], tail);
}

fn pool() -> &'static Pool {
    static POOL: Pool = Pool::new(0);
    &POOL
}

impl Pool {
    /// A pool with no workers yet, no job running, and `claim` as its claim word.
    const fn new(claim: u64) -> Pool {
        Pool {
            workers: OnceLock::new(),
            busy: Mutex::new(()),
            epoch: AtomicU64::new(0),
            claim: AtomicU64::new(claim),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            solo_until: AtomicU64::new(0),
            solo_period: AtomicU64::new(0),
        }
    }

    /// True while jobs run on their callers alone (see [`SOLO`]).
    fn solo(&self) -> bool {
        let until = self.solo_until.load(Ordering::Relaxed);
        until != 0 && clock() < until
    }

    /// Sends jobs to their callers alone for [`SOLO`], or for twice the last period when the
    /// last one ended less than `SOLO` ago (see [`SOLO_MAX`]).
    fn go_solo(&self) {
        self.go_solo_at(clock());
    }

    /// [`go_solo`](Pool::go_solo) at the time `now` (on [`clock`]'s scale).
    fn go_solo_at(&self, now: u64) {
        let (base, max) = (SOLO.as_nanos() as u64, SOLO_MAX.as_nanos() as u64);
        let last_end = self.solo_until.load(Ordering::Relaxed);
        let period = if last_end != 0 && now < last_end.saturating_add(base) {
            self.solo_period
                .load(Ordering::Relaxed)
                .saturating_mul(2)
                .clamp(base, max)
        } else {
            base
        };
        self.solo_period.store(period, Ordering::Relaxed);
        self.solo_until
            .store(now.saturating_add(period), Ordering::Relaxed);
    }

    /// The workers, started on first use: one per core besides the caller's.
    fn workers(&'static self) -> &'static [Thread] {
        self.workers.get_or_init(|| {
            // No job has run yet: jobs wait for the workers.
            let epoch = self.epoch.load(Ordering::Acquire);
            (1..cores())
                .map_while(|index| {
                    thread::Builder::new()
                        .name(format!("rewind-gemm-{index}"))
                        .spawn(move || self.work(epoch))
                        .ok()
                        .map(|h| h.thread().clone())
                })
                .collect()
        })
    }

    /// Claims the next share of job `number`: `None` once all are claimed or the job is no
    /// longer the running one.
    fn take(&self, number: u32) -> Option<usize> {
        let mut current = self.claim.load(Ordering::Acquire);
        loop {
            let share = (current & 0xffff) as usize;
            let parts = ((current >> 16) & 0xffff) as usize;
            if (current >> 32) as u32 != number || share >= parts {
                return None;
            }
            match self.claim.compare_exchange_weak(
                current,
                pack(number, parts, share + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(share),
                Err(now) => current = now,
            }
        }
    }

    /// A worker's loop: wait for a new epoch, run shares of its job while any is unclaimed.
    fn work(&'static self, mut seen: u64) {
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
            let number = now as u32;
            while let Some(i) = self.take(number) {
                // SAFETY: a share of the running job is claimed and pending; see `Pool`.
                let share = unsafe { (*self.job.get()).expect("a job is posted before its epoch") };
                if panic::catch_unwind(AssertUnwindSafe(|| share(i))).is_err() {
                    self.failed.store(true, Ordering::Relaxed);
                }
                self.pending.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::thread::ThreadId;

    /// The thread each share of one job ran on. Each share holds its thread for 100 µs, as long
    /// as a small product's band, or with `until_all_started` until every share has started (at
    /// most 100 ms), so that a share can only go to a thread that is free: a woken worker then
    /// claims one however long another process keeps it off its core.
    fn threads_of_one_job(until_all_started: bool) -> Vec<ThreadId> {
        let ran: Vec<Mutex<Option<ThreadId>>> = (0..threads()).map(|_| Mutex::new(None)).collect();
        let started = AtomicUsize::new(0);
        run(threads(), &|p| {
            let previous = ran[p].lock().unwrap().replace(thread::current().id());
            assert!(previous.is_none(), "share {p} ran twice");
            started.fetch_add(1, Ordering::SeqCst);
            let start = Instant::now();
            let held = |t: Duration| match until_all_started {
                true => {
                    started.load(Ordering::SeqCst) < threads() && t < Duration::from_millis(100)
                }
                false => t < Duration::from_micros(100),
            };
            while held(start.elapsed()) {
                std::hint::spin_loop();
            }
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
            // Whether jobs spread is the question here, not whether another test's held-up
            // worker sent them solo.
            pool().solo_until.store(0, Ordering::Relaxed);
            let distinct: HashSet<ThreadId> = threads_of_one_job(true).into_iter().collect();
            if distinct.len() == threads() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Every row of every output is handed to exactly one band, with its own index.
    #[test]
    fn row_bands_cover_every_row_once() {
        for rows in [1, 2, 3, 37, 64] {
            let (mut a, mut b) = (vec![0usize; rows * 3], vec![0usize; rows * 5]);
            row_bands(rows, ROW_BAND_WORK, [&mut a, &mut b], |first, [a, b]| {
                a.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v += first + i / 3 + 1);
                b.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v += first + i / 5 + 1);
            });
            assert!(
                a.iter().enumerate().all(|(i, &v)| v == i / 3 + 1),
                "{rows}: {a:?}"
            );
            assert!(
                b.iter().enumerate().all(|(i, &v)| v == i / 5 + 1),
                "{rows}: {b:?}"
            );
        }
    }

    /// `elementwise` hands every element to `f` once, in step with its input, at lengths below
    /// and above the banding threshold and off the piece size.
    #[test]
    fn elementwise_pieces_cover_every_element_once() {
        for n in [
            0,
            1,
            255,
            256,
            257,
            ROW_BAND_WORK - 1,
            ROW_BAND_WORK,
            3 * ROW_BAND_WORK + 77,
        ] {
            let x: Vec<usize> = (0..n).map(|i| 3 * i + 1).collect();
            let mut out = vec![0usize; n];
            elementwise(&x, &mut out, |x, out| {
                assert_eq!(x.len(), out.len());
                out.iter_mut().zip(x).for_each(|(o, &v)| *o += v);
            });
            assert!(
                out.iter().enumerate().all(|(i, &v)| v == 3 * i + 1),
                "length {n}"
            );
        }
    }

    /// Every share of every job runs exactly once, with jobs posted from several threads at once
    /// (a job that finds the pool busy runs all its shares on its caller), and jobs do spread
    /// over the threads.
    #[test]
    fn every_share_runs_once_under_concurrent_jobs() {
        let parts = threads();
        let spread = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        // threads_of_one_job asserts that no share runs twice and all run.
                        let ran = threads_of_one_job(false);
                        let distinct: HashSet<_> = ran.iter().collect();
                        if distinct.len() > 1 {
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

    /// A worker that holds a claimed share far longer than the caller took for its own (as when
    /// another process has its core) sends the next jobs to their callers alone, and `SOLO`
    /// later the pool is no longer solo. (On one core there is no worker and it never goes solo.)
    #[test]
    fn a_held_up_worker_makes_jobs_run_alone_for_a_while() {
        if threads() == 1 {
            // No worker, so nothing to be held up: jobs never go solo.
            run(1, &|_| thread::sleep(Duration::from_millis(2)));
            assert!(!pool().solo());
            return;
        }
        let caller = thread::current().id();
        let start = Instant::now();
        while !pool().solo() {
            assert!(start.elapsed() < Duration::from_secs(2), "never went solo");
            run(threads(), &|_| {
                if thread::current().id() != caller {
                    thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let alone = threads_of_one_job(false);
        assert!(alone.iter().all(|&t| t == caller), "{alone:?}");
        // The expiry, on a pool of its own: the shared one may be sent solo again at any time by
        // other tests' jobs, whose workers this busy process keeps taking off their cores.
        let own = Pool::new(0);
        assert!(!own.solo());
        own.go_solo();
        assert!(own.solo());
        thread::sleep(SOLO + Duration::from_millis(10));
        assert!(!own.solo(), "still alone after {SOLO:?}");
    }

    /// A worker held up again soon after a solo period ends doubles the next one, up to
    /// `SOLO_MAX`; one held up long after starts again at `SOLO`.
    #[test]
    fn a_load_that_lasts_lengthens_the_solo_periods() {
        let own = Pool::new(0);
        let ms = |t: u64| t * 1_000_000;
        let period = || Duration::from_nanos(own.solo_period.load(Ordering::Relaxed));
        let until = || own.solo_until.load(Ordering::Relaxed);
        own.go_solo_at(ms(1000));
        assert_eq!(period(), SOLO);
        assert_eq!(until(), ms(1050));
        // Held up 10 ms after the period ended: the load is still there.
        own.go_solo_at(ms(1060));
        assert_eq!(period(), 2 * SOLO);
        assert_eq!(until(), ms(1160));
        let mut now = ms(1170);
        for _ in 0..10 {
            own.go_solo_at(now);
            now = until() + ms(10);
        }
        assert_eq!(period(), SOLO_MAX);
        // Held up 60 ms after the last period's end: back to the shortest.
        own.go_solo_at(until() + ms(60));
        assert_eq!(period(), SOLO);
    }

    /// Shares are claimed once each, in order, and only for the running job: a worker that
    /// wakes after its job has finished claims nothing of the next.
    #[test]
    fn shares_are_claimed_once_and_only_for_the_running_job() {
        let pool = Pool::new(pack(7, 3, 0));
        assert_eq!(pool.take(6), None, "a finished job's number claims nothing");
        assert_eq!(pool.take(7), Some(0));
        assert_eq!(pool.take(7), Some(1));
        assert_eq!(pool.take(7), Some(2));
        assert_eq!(pool.take(7), None, "every share is claimed");
        // Claims from several threads at once: each share goes to exactly one of them.
        pool.claim.store(pack(8, 1000, 0), Ordering::Relaxed);
        let taken: Vec<Vec<usize>> = thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(i) = pool.take(8) {
                            mine.push(i);
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = taken.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    /// A share that panics, on the caller's thread or a worker's, makes `run` panic after every
    /// share has finished, and later jobs are still split across the threads.
    #[test]
    fn a_panicking_share_panics_the_caller_and_leaves_the_pool_usable() {
        for bad in 0..threads() {
            let caught =
                panic::catch_unwind(|| run(threads(), &|p| assert_ne!(p, bad, "share {p} fails")));
            assert!(caught.is_err());
            assert!(
                a_job_spreads_across_threads(),
                "after share {bad} panicked, jobs run on one thread"
            );
        }
    }
}
