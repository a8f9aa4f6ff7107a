//! The ranks of an MPI job (`mpirun -np N`) as a [`Collective`]: one process per rank, its
//! operations MPI's own `MPI_Allreduce` (sum) and `MPI_Bcast` on the world communicator, through
//! the `mpi` crate (rsmpi). Built with the cargo feature `mpi`, which needs an MPI library and
//! its headers (Debian: openmpi-bin, libopenmpi-dev) and libclang for the bindings.
//!
//! MPI's collectives have no timeout of their own: a watchdog thread ends this process with an
//! error naming its rank and the operation when one runs past the timeout, and `mpirun` then
//! stops the other ranks, so no rank waits forever. A rank that dies (killed, or failing) is
//! reported by `mpirun`, which stops the rest of the job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};
use mpi::Threading;

use crate::collective::{Collective, CollectiveError};

/// This process's rank of an MPI job. Made once per process ([`Mpi::init`]); MPI is finalised
/// when it is dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    watch: Arc<Watch>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

/// What the watchdog reads: when the operation under way started (milliseconds since `epoch`,
/// 0 when none is) and its name.
struct Watch {
    epoch: Instant,
    started: AtomicU64,
    rank: usize,
    size: usize,
    timeout: Duration,
    current: Mutex<&'static str>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.watch.rank, self.watch.size)
    }
}

impl Mpi {
    /// Initialises MPI for this process (once: a second call returns `None`, as does a process
    /// MPI cannot start in), with operations that give up after `timeout`.
    pub fn init(timeout: Duration) -> Option<Mpi> {
        // Only this thread calls MPI; the watchdog and the engine's workers never do.
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        let watch = Arc::new(Watch {
            epoch: Instant::now(),
            started: AtomicU64::new(0),
            rank: world.rank() as usize,
            size: world.size() as usize,
            timeout,
            current: Mutex::new(""),
        });
        let watched = Arc::clone(&watch);
        thread::Builder::new()
            .name("rewind-mpi-watchdog".into())
            .spawn(move || watched.run())
            .ok()?;
        Some(Mpi {
            world,
            watch,
            _universe: universe,
        })
    }

    /// Checks that every rank passes `len` values to operation `op`: the largest and the
    /// smallest length, all-reduced, must agree (MPI itself would abort on a mismatch). Every
    /// rank learns of a mismatch, and each names itself in the error with its own length.
    fn same_length(&self, op: &'static str, len: usize) -> Result<(), CollectiveError> {
        let mine = [len as i64, -(len as i64)];
        let mut all = [0i64; 2];
        self.watched(op, || {
            self.world
                .all_reduce_into(&mine[..], &mut all[..], SystemOperation::max())
        });
        let (longest, shortest) = (all[0] as usize, (-all[1]) as usize);
        if longest == shortest {
            return Ok(());
        }
        Err(CollectiveError::Mismatch {
            op,
            rank: self.rank(),
            len,
            expected: if len == longest { shortest } else { longest },
        })
    }

    /// Runs `f`, one collective operation named `op`, under the watchdog.
    fn watched<R>(&self, op: &'static str, f: impl FnOnce() -> R) -> R {
        *self.watch.current.lock().unwrap_or_else(|e| e.into_inner()) = op;
        let now = self.watch.epoch.elapsed().as_millis() as u64 + 1;
        self.watch.started.store(now, Ordering::Release);
        let result = f();
        self.watch.started.store(0, Ordering::Release);
        result
    }
}

impl Watch {
    /// Ends the process once an operation has run past the timeout.
    fn run(&self) {
        loop {
            thread::sleep(Duration::from_millis(100).min(self.timeout));
            let started = self.started.load(Ordering::Acquire);
            if started == 0 {
                continue;
            }
            let running = self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(started - 1));
            if running > self.timeout {
                let op = *self.current.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "error: rank {} of {}: {op} waited {:.1} s for the other ranks, which never \
                     arrived; stopping (is a rank dead, or unable to reach the others?)",
                    self.rank,
                    self.size,
                    running.as_secs_f64()
                );
                std::process::exit(3);
            }
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.watch.rank
    }

    fn size(&self) -> usize {
        self.watch.size
    }

    fn abort_all(&self, code: i32) -> ! {
        self.world.abort(code)
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

impl Mpi {
    /// `values` summed over the ranks by `MPI_Allreduce`.
    fn all_reduce<T: Equivalence + Copy>(&self, values: &mut [T]) -> Result<(), CollectiveError> {
        self.same_length("all_reduce", values.len())?;
        // MPI's send and receive buffers must differ.
        let send = values.to_vec();
        self.watched("all_reduce", || {
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        Ok(())
    }

    /// Rank `root`'s `values` on every rank, by `MPI_Bcast`.
    fn broadcast<T: Equivalence>(
        &self,
        values: &mut [T],
        root: usize,
    ) -> Result<(), CollectiveError> {
        let size = self.size();
        if root >= size {
            return Err(CollectiveError::NoSuchRoot { root, size });
        }
        self.same_length("broadcast", values.len())?;
        self.watched("broadcast", || {
            self.world
                .process_at_rank(root as i32)
                .broadcast_into(values)
        });
        Ok(())
    }
}
