//! char_rnn as the ranks of an MPI job (`mpirun -np N char_rnn --mpi ...`): N ranks train as
//! one process over all the lanes, resume on another number of ranks, refuse ranks started
//! differently, and stop together, the checkpoint intact, when one is killed.
//!
//! Ignored by default: they need Open MPI (`scripts/install_mpi.sh`) and build char_rnn with the
//! feature `mpi` into `<target>/mpi`. `.ci/run` runs them (`--ignored char_rnn_mpi::`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rewind::autograd::io::load_tensors;

use crate::char_rnn_app::metrics;

use crate::support::char_rnn::{scratch_dir, tiny_text};

/// char_rnn built with the feature `mpi`, in a target directory of its own (so that it never
/// replaces the binary the other tests run).
fn mpi_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let target_dir = exe.parent().unwrap().parent().unwrap().parent().unwrap();
        let mpi_target = target_dir.join("mpi");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--features",
                "mpi",
                "--example",
                "char_rnn",
            ])
            .arg("--target-dir")
            .arg(&mpi_target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building char_rnn with --features mpi failed"
        );
        mpi_target.join("debug").join("examples").join("char_rnn")
    })
}

/// 2 ranks training on `data` without end, saving to `checkpoint` every 5 steps, with mpirun's
/// options `options`; returns once the first checkpoint is written.
fn endless_job(data: &Path, checkpoint: &Path, options: &[&str]) -> std::process::Child {
    let job = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .args(options)
        .arg(mpi_binary())
        .arg("--mpi")
        .args(flags(
            data,
            checkpoint,
            &["--steps", "1000000", "--save-every", "5"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(checkpoint);
    job
}

/// Returns once `checkpoint` exists (a running job has saved), failing after a minute.
fn wait_for(checkpoint: &Path) {
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint in a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One MPI job of two programs: rank 0 runs char_rnn with `rank0`'s flags, rank 1 with
/// `rank1`'s (mpirun's `-np 1 A : -np 1 B`).
fn two_programs(rank0: &[String], rank1: &[String]) -> Output {
    let mut command = Command::new("mpirun");
    command.args(["--allow-run-as-root", "--oversubscribe"]);
    for (i, flags) in [rank0, rank1].into_iter().enumerate() {
        if i > 0 {
            command.arg(":");
        }
        command
            .args(["-np", "1"])
            .arg(mpi_binary())
            .arg("--mpi")
            .args(flags);
    }
    command.output().expect("mpirun runs")
}

/// The process of rank `rank` of the job training to `checkpoint`: the one whose environment
/// says so.
fn rank_process(rank: usize, checkpoint: &Path) -> u32 {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0).any(|v| v == wanted.as_bytes())
                    && fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.contains(checkpoint.to_str().unwrap()))
            })
        })
        .unwrap_or_else(|| panic!("rank {rank} runs"))
}

/// `mpirun -np ranks char_rnn --mpi args...`, or char_rnn alone with `ranks` 0.
fn run(ranks: usize, args: &[String]) -> Output {
    let mut command = match ranks {
        0 => Command::new(mpi_binary()),
        n => {
            let mut c = Command::new("mpirun");
            c.args([
                "--allow-run-as-root",
                "--oversubscribe",
                "-np",
                &n.to_string(),
            ])
            .arg(mpi_binary())
            .arg("--mpi");
            c
        }
    };
    command.args(args).output().expect("mpirun runs")
}

/// A small run's flags on `data`, to `checkpoint`: no dropout, every step's row logged; `extra`
/// replaces any of these it gives.
fn flags(data: &Path, checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let defaults = [
        ("--data", data.to_str().unwrap()),
        ("--checkpoint", checkpoint.to_str().unwrap()),
        ("--layers", "2"),
        ("--hidden", "16"),
        ("--embed", "8"),
        ("--batch", "6"),
        ("--seq-len", "8"),
        ("--dropout", "0"),
        ("--eval-every", "10"),
        ("--log-every", "1"),
        ("--shards", "1"),
    ];
    let mut a: Vec<String> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|&(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn assert_ran(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every tensor of a checkpoint, by name, as f32 values.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let file = load_tensors::<f32>(path).unwrap();
    file.tensors
        .into_iter()
        .map(|(name, t)| (name, t.data().to_vec()))
        .collect()
}

/// The training loss of every row of a run's metrics file.
fn losses(checkpoint: &Path) -> Vec<f64> {
    metrics::read(&metrics::metrics_path(checkpoint))
        .unwrap()
        .iter()
        .map(|row| row.train_loss)
        .collect()
}

/// Two runs agree to f32 rounding: every training loss, and every tensor of their checkpoints
/// (weights, the optimizer's moments, the carried state of every lane).
fn assert_same_run(a: &Path, b: &Path, what: &str) {
    let close = |x: f64, y: f64| (x - y).abs() <= 2e-4 * (1.0 + y.abs());
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{what}: rows");
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert!(close(*x, *y), "{what}: row {i}: loss {x} vs {y}");
    }
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{what}: tensors"
    );
    for (name, va) in &ta {
        for (i, (x, y)) in va.iter().zip(&tb[name]).enumerate() {
            assert!(
                close(*x as f64, *y as f64),
                "{what}: {name}[{i}]: {x} vs {y}"
            );
        }
    }
}

/// N ranks × 6/N lanes train as one process over 6 lanes: after 50 steps, the same losses at
/// every step, the same held-out loss, and checkpoints equal to f32 rounding, carried state of
/// every lane included (rank 0 gathers it), for N = 1, 2, 3 (oversubscribed on 2 cores).
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn n_ranks_train_as_one_process_over_all_the_lanes() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let alone = dir.join("alone.safetensors");
    assert_ran(
        &run(0, &flags(&data, &alone, &["--steps", "50"])),
        "one process",
    );
    for n in [1, 2, 3] {
        let ranks = dir.join(format!("ranks{n}.safetensors"));
        let out = run(n, &flags(&data, &ranks, &["--steps", "50"]));
        assert_ran(&out, &format!("{n} ranks"));
        assert_same_run(&ranks, &alone, &format!("{n} ranks"));
        // Rank 0 alone prints: one final line, not N.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("step 50: validation").count(), 1, "{stdout}");
    }
}

/// With dropout, a run on N ranks is reproducible from its seed.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn with_dropout_a_run_on_n_ranks_repeats_itself() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    for path in [&a, &b] {
        let out = run(
            2,
            &flags(&data, path, &["--steps", "20", "--dropout", "0.25"]),
        );
        assert_ran(&out, "2 ranks with dropout");
    }
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(tensors(&a), tensors(&b));
}

/// With dropout (between layers and before the readout) and random chunk lengths (`--bptt
/// random`), 2 ranks of 1 shard each draw the chunk lengths and the dropout masks of one process
/// in 2 shards: the same run, to f32 rounding. (Each rank's driver draws the lengths from the
/// run's seed; rank r's shard i draws the masks of shard r·S + i.)
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn with_dropout_and_random_lengths_ranks_draw_what_shards_draw() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let extra = [
        "--steps",
        "30",
        "--dropout",
        "0.25",
        "--head-dropout",
        "0.1",
        "--input-dropout",
        "0.1",
        "--bptt",
        "random",
    ];
    let alone = dir.join("alone.safetensors");
    let mut sharded: Vec<&str> = extra.to_vec();
    sharded.extend(["--shards", "2"]);
    assert_ran(
        &run(0, &flags(&data, &alone, &sharded)),
        "one process, 2 shards",
    );
    let ranks = dir.join("ranks.safetensors");
    assert_ran(&run(2, &flags(&data, &ranks, &extra)), "2 ranks");
    assert_same_run(&ranks, &alone, "2 ranks against 2 shards");
}

/// A checkpoint of 2 ranks resumes on 3 (each takes its lanes of the gathered state) and ends
/// where one process running all 40 steps ends.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn a_run_resumes_on_another_number_of_ranks() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let alone = dir.join("alone.safetensors");
    assert_ran(
        &run(0, &flags(&data, &alone, &["--steps", "40"])),
        "one process",
    );
    let halves = dir.join("halves.safetensors");
    assert_ran(
        &run(2, &flags(&data, &halves, &["--steps", "20"])),
        "2 ranks",
    );
    let resumed = run(
        3,
        &flags(
            &data,
            &halves,
            &["--steps", "40", "--resume", halves.to_str().unwrap()],
        ),
    );
    assert_ran(&resumed, "resumed on 3 ranks");
    assert_same_run(&halves, &alone, "2 ranks, then 3");
}

/// Ranks started with different flags are refused at the start, naming the rank that differs.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn ranks_started_differently_are_refused() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let ck = dir.join("c.safetensors");
    let out = two_programs(
        &flags(&data, &ck, &["--steps", "5"]),
        &flags(&data, &ck, &["--steps", "5", "--seed", "7"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank(s) [1] started with other flags"),
        "{stderr}"
    );
    assert!(!ck.exists(), "nothing was trained, so nothing is saved");
}

/// A rank killed (kill -9) mid-run stops every rank, the job's error names it, and the last
/// checkpoint is intact: one process resumes from it.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn a_killed_rank_stops_the_run_and_the_checkpoint_survives() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let ck = dir.join("k.safetensors");
    let job = endless_job(&data, &ck, &[]);
    let rank1 = rank_process(1, &ck);
    Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let out = job.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the job took a minute to stop"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 1"), "{stderr}");
    // The checkpoint loads and resumes, in one process.
    let step = |s: &str| -> usize {
        s.lines()
            .filter_map(|l| l.strip_prefix("resuming "))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap()
    };
    let resumed = run(
        0,
        &flags(
            &data,
            &ck,
            &["--resume", ck.to_str().unwrap(), "--minutes", "0.01"],
        ),
    );
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(step(&stdout) >= 5, "{stdout}");
}

/// A rank that cannot read its text stops every rank at once, with an error naming it and the
/// file; nothing is saved.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn a_rank_that_cannot_read_its_data_stops_every_rank() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let ck = dir.join("d.safetensors");
    let missing = dir.join("missing.txt");
    let start = Instant::now();
    let out = two_programs(
        &flags(&data, &ck, &["--steps", "5"]),
        &flags(&missing, &ck, &["--steps", "5"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the ranks waited"
    );
    assert!(
        stderr.contains("rank 1: cannot read") && stderr.contains("missing.txt"),
        "{stderr}"
    );
    assert!(!ck.exists(), "nothing was trained, so nothing is saved");
}

/// A rank that stops answering (stopped by SIGSTOP, as a machine cut off from the network would
/// be) makes the others give up after the timeout (`REWIND_MPI_TIMEOUT`, 3 s here) with an error
/// naming the waiting rank and the operation, and the job ends: no rank waits forever.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn a_rank_that_stops_answering_ends_the_run_after_the_timeout() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let ck = dir.join("t.safetensors");
    let job = endless_job(&data, &ck, &["-x", "REWIND_MPI_TIMEOUT=3"]);
    let rank1 = rank_process(1, &ck);
    Command::new("kill")
        .args(["-STOP", &rank1.to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let out = job.wait_with_output().unwrap();
    // Whatever happened, leave no stopped process behind.
    let _ = Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status();
    let waited = stopped.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    assert!(
        stderr.contains("rank 0 of 2") && stderr.contains("never arrived"),
        "{stderr}"
    );
}

/// A checkpoint another run holds: rank 0 cannot take its lock, and every rank stops at once
/// with rank 0's error, instead of the others waiting for it until the timeout.
#[test]
#[ignore = "needs Open MPI; run by .ci/run"]
fn a_checkpoint_in_use_stops_every_rank_at_once() {
    let dir = scratch_dir("rewind-mpi");
    let data = tiny_text(&dir);
    let ck = dir.join("busy.safetensors");
    let mut holder = Command::new(mpi_binary())
        .args(flags(
            &data,
            &ck,
            &["--steps", "1000000", "--save-every", "5"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ck);
    let started = Instant::now();
    let out = run(2, &flags(&data, &ck, &["--steps", "5", "--overwrite"]));
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("rank 0: ") && stderr.contains("in use by another run"),
        "{stderr}"
    );
}
