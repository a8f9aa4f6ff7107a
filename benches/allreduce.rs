//! The all-reduce a data-parallel step makes: one flat f32 buffer of every gradient of the
//! 2 × 256 character LSTM (embedding 64, V = 65: 880,705 values, 3.5 MB), summed over the ranks.
//! Prints the median and quartiles of 200 all-reduces, after 20 to warm up.
//!
//! ```text
//! cargo bench --bench allreduce                       # 2 and 3 ranks as threads
//! cargo build --release --features mpi --bench allreduce
//! mpirun -np 2 target/release/deps/allreduce-* --mpi # ranks as MPI processes
//! ```
//!
//! Not a criterion bench: every rank must run the same number of operations in step, which
//! criterion's adaptive sampling does not promise.

use std::time::{Duration, Instant};

use rewind::nn::collective::{Collective, Threads};

const VALUES: usize = 880_705;
const WARM: usize = 20;
const RUNS: usize = 200;

/// Times `RUNS` all-reduces on `c`: (25th, 50th, 75th percentile).
fn time(c: &dyn Collective) -> (Duration, Duration, Duration) {
    let mut buffer = vec![1.0f32; VALUES];
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..WARM + RUNS {
        let start = Instant::now();
        c.all_reduce_f32(&mut buffer)
            .expect("the ranks reach each other");
        if i >= WARM {
            times.push(start.elapsed());
        }
        buffer.fill(1.0);
    }
    times.sort();
    (times[RUNS / 4], times[RUNS / 2], times[3 * RUNS / 4])
}

fn report(what: &str, (q1, median, q3): (Duration, Duration, Duration)) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: all-reduce of {VALUES} f32 ({:.1} MB): median {:.2} ms (quartiles {:.2}-{:.2})",
        VALUES as f64 * 4.0 / 1e6,
        ms(median),
        ms(q1),
        ms(q3)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--mpi") {
        mpi_ranks();
        return;
    }
    for n in [2, 3] {
        let group = Threads::group(n, Duration::from_secs(60));
        let times = std::thread::scope(|s| {
            let runs: Vec<_> = group
                .into_iter()
                .map(|rank| s.spawn(move || time(&rank)))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).next().unwrap()
        });
        report(&format!("{n} ranks as threads"), times);
    }
}

#[cfg(feature = "mpi")]
fn mpi_ranks() {
    let mpi = rewind::nn::collective::Mpi::init(Duration::from_secs(60)).expect("MPI starts");
    let times = time(&mpi);
    if mpi.rank() == 0 {
        report(&format!("{} MPI ranks", mpi.size()), times);
    }
}

#[cfg(not(feature = "mpi"))]
fn mpi_ranks() {
    eprintln!("error: --mpi needs the bench built with `--features mpi`");
    std::process::exit(2);
}
