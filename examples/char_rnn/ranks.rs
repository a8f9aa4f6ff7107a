//! `--mpi`: this process as one rank of a data-parallel run (`mpirun -np N char_rnn --mpi ...`).
//!
//! Each rank reads lanes `r·B/N .. (r+1)·B/N` of the stream's B lanes and carries their state;
//! the driver's `step_across` sums the gradients of all ranks once per step, so every rank takes
//! the update one process over all B lanes would (to f32 rounding). What else the ranks agree
//! on: their settings, text and resumed step at the start (a hash, compared), the schedule's
//! clock (rank 0's), when to stop (any rank's signal, clock or failed output stops all), the held-out loss (each rank scores its lanes, the sums
//! are added), and the carried state a checkpoint holds (every rank's lanes, gathered, so that a
//! resume on any number of ranks that divides B takes its lanes of it). Rank 0 alone prints,
//! writes the metrics and the checkpoint, and holds its lock.
//!
//! Dropout: rank r's shard i draws the masks of shard r·S + i of one process in N·S shards (S
//! shards a rank), so a run is reproducible from its seed and its numbers of ranks and shards.
//! Every rank's driver draws the same chunk lengths (`--bptt random`) from the same seed.
//!
//! Without `--mpi` a run is one rank of one, and nothing here talks to anything.

use std::ops::Range;
#[cfg(feature = "mpi")]
use std::time::Duration;

use rewind::nn::collective::{Collective, CollectiveError};
use rewind::nn::Carry;

use super::Error;

/// How long a rank waits for the others in one operation before it stops the run: longer than
/// any step or evaluation of a model this example trains. `REWIND_MPI_TIMEOUT` (seconds) sets
/// another.
#[cfg(feature = "mpi")]
fn timeout() -> Result<Duration, Error> {
    match std::env::var("REWIND_MPI_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(600)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "REWIND_MPI_TIMEOUT is {v:?}; expected a positive number of seconds"
                ))
            }),
    }
}

/// This process's place in the run.
pub struct Ranks {
    across: Option<Box<dyn Collective>>,
}

impl Ranks {
    /// One process alone.
    pub fn alone() -> Ranks {
        Ranks { across: None }
    }

    /// With `mpi`, this process's rank of the MPI job it was started in.
    pub fn start(mpi: bool) -> Result<Ranks, Error> {
        if !mpi {
            return Ok(Ranks::alone());
        }
        #[cfg(feature = "mpi")]
        {
            match rewind::nn::collective::Mpi::init(timeout()?) {
                Some(m) => Ok(Ranks {
                    across: Some(Box::new(m)),
                }),
                None => Err(Error::Usage(
                    "--mpi: MPI could not be initialised (is this process started by mpirun?)"
                        .into(),
                )),
            }
        }
        #[cfg(not(feature = "mpi"))]
        Err(Error::Usage(
            "--mpi needs char_rnn built with `--features mpi` (and an MPI library: scripts/install_mpi.sh)"
                .into(),
        ))
    }

    /// This rank (0 alone).
    pub fn rank(&self) -> usize {
        self.across.as_ref().map_or(0, |c| c.rank())
    }

    /// The number of ranks (1 alone).
    pub fn size(&self) -> usize {
        self.across.as_ref().map_or(1, |c| c.size())
    }

    /// True on the rank that prints and writes.
    pub fn lead(&self) -> bool {
        self.rank() == 0
    }

    /// The collective the driver sums gradients through, when there are other ranks.
    pub fn across(&self) -> Option<&dyn Collective> {
        self.across.as_deref()
    }

    /// This rank's lanes of `batch`, which the ranks divide evenly.
    pub fn lanes(&self, batch: usize) -> Range<usize> {
        let per = batch / self.size();
        self.rank() * per..(self.rank() + 1) * per
    }

    /// Refuses a batch the ranks cannot share evenly.
    pub fn check_batch(&self, batch: usize) -> Result<(), Error> {
        match batch.is_multiple_of(self.size()) {
            true => Ok(()),
            false => Err(Error::Usage(format!(
                "--batch {batch} cannot be shared evenly by {} ranks",
                self.size()
            ))),
        }
    }

    /// Rank 0's `value` on every rank (the others pass anything): the clock every rank's
    /// schedule reads.
    pub fn lead_value(&self, value: f64) -> Result<f64, Error> {
        let mut v = [if self.lead() { value } else { 0.0 }];
        self.sum(&mut v)?;
        Ok(v[0])
    }

    /// True on every rank when `flag` is true on any.
    pub fn any(&self, flag: bool) -> Result<bool, Error> {
        Ok(self.any_of([flag])?[0])
    }

    /// For each flag, true on every rank when it is true on any.
    pub fn any_of<const N: usize>(&self, flags: [bool; N]) -> Result<[bool; N], Error> {
        let Some(c) = &self.across else {
            return Ok(flags);
        };
        let mut n = flags.map(|f| if f { 1.0 } else { 0.0 });
        c.all_reduce_f64(&mut n).map_err(lost)?;
        Ok(n.map(|x| x > 0.0))
    }

    /// Stops every rank now, with exit code `code`: a rank that failed, so that the others do
    /// not wait for it.
    pub fn abort_all(&self, code: i32) -> ! {
        match &self.across {
            Some(c) => c.abort_all(code),
            None => std::process::exit(code),
        }
    }

    /// `values` summed over the ranks.
    pub fn sum(&self, values: &mut [f64]) -> Result<(), Error> {
        match &self.across {
            Some(c) => c.all_reduce_f64(values).map_err(lost),
            None => Ok(()),
        }
    }

    /// Refuses to start unless every rank has the same `settings` (a hash of the flags that
    /// shape the run and of the text): names the ranks that differ from rank 0.
    pub fn agree(&self, settings: u64) -> Result<(), Error> {
        let Some(c) = &self.across else {
            return Ok(());
        };
        // The hash in four 16-bit pieces, exact in f64; rank 0's are broadcast.
        let pieces =
            |h: u64| -> [f64; 4] { std::array::from_fn(|i| ((h >> (16 * i)) & 0xffff) as f64) };
        let mut lead = pieces(settings);
        c.broadcast_f64(&mut lead, 0).map_err(lost)?;
        let mut differs = vec![0.0; c.size()];
        differs[c.rank()] = if lead == pieces(settings) { 0.0 } else { 1.0 };
        c.all_reduce_f64(&mut differs).map_err(lost)?;
        let ranks: Vec<usize> = (0..c.size()).filter(|&r| differs[r] > 0.0).collect();
        match ranks.is_empty() {
            true => Ok(()),
            false => Err(Error::Usage(format!(
                "rank(s) {ranks:?} started with other flags or another text than rank 0: every rank must run the same command"
            ))),
        }
    }

    /// The carried state of all `batch` lanes from each rank's `mine`, on every rank: each
    /// rank's lanes in their place, zeros elsewhere, summed.
    pub fn gather(&self, mine: &Carry, batch: usize) -> Result<Carry, Error> {
        let Some(c) = &self.across else {
            return Ok(mine.clone());
        };
        let lanes = self.lanes(batch);
        let mut parts = Vec::new();
        for part in mine.parts() {
            // Each part is [layers, lanes, features]: this rank's lanes go in place.
            let shape = part.shape();
            let (layers, per, features) = (shape[0], shape[1], shape[2]);
            let mut all = vec![0.0f32; layers * batch * features];
            for l in 0..layers {
                for (i, lane) in lanes.clone().enumerate() {
                    let from = &part.data()[(l * per + i) * features..][..features];
                    all[(l * batch + lane) * features..][..features].copy_from_slice(from);
                }
            }
            c.all_reduce_f32(&mut all).map_err(lost)?;
            parts.push(
                rewind::autograd::Tensor::from_vec(all, &[layers, batch, features])
                    .expect("the state's shape"),
            );
        }
        Ok(Carry::from_parts(parts))
    }
}

/// A collective operation that failed: the other ranks are gone or unreachable.
fn lost(e: CollectiveError) -> Error {
    Error::Training(format!("the ranks lost each other: {e}"))
}
