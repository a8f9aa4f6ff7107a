//! The char_rnn example against hostile numbers: every flag at its extremes, runs that diverge,
//! sizes that cannot fit and checkpoints with impossible values. Each is a one-line error (or a
//! run that works); none is a panic, an abort or a checkpoint holding a non-finite weight.

use crate::char_rnn_app as app;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::support::char_rnn::{args, binary, scratch_dir, small_run as small, tiny_lines};
use app::{run, Error, Outcome};
use rewind::autograd::io::{load_tensors, save_tensors};

/// A directory of this test's own.
fn scratch() -> PathBuf {
    scratch_dir("rewind-char-rnn-inputs")
}

fn sample_args(checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["sample", "--checkpoint", checkpoint.to_str().unwrap()];
    a.extend_from_slice(extra);
    args(&a)
}

/// The run's result, with a panic turned into a test failure that names the arguments.
fn outcome(list: &[String]) -> Result<Outcome, Error> {
    catch_unwind(AssertUnwindSafe(|| run(list.to_vec())))
        .unwrap_or_else(|_| panic!("{list:?} panicked"))
}

/// The run's one-line error message.
fn one_line_error(list: &[String]) -> String {
    let message = match outcome(list) {
        Ok(o) => panic!("{list:?} must fail, but gave {o:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(message.lines().count(), 1, "{list:?}: {message}");
    message
}

/// Every weight of a checkpoint, and whether all are finite.
fn all_finite(path: &Path) -> bool {
    let file = load_tensors::<f32>(path).unwrap();
    file.tensors
        .values()
        .all(|t| t.data().iter().all(|x| x.is_finite()))
}

#[test]
fn a_learning_rate_beyond_f32_is_refused_as_f32_sees_it() {
    // 1e300 is a fine f64 but infinite in f32, the type the update is computed in; 1e-50 is 0.
    for lr in ["1e300", "1e-50"] {
        let message = one_line_error(&args(&["--lr", lr, "--clip", "0", "--save-every", "1"]));
        assert!(
            message.contains(&format!("--lr {lr}")) && message.contains("f32"),
            "{message}"
        );
    }
    assert!(matches!(
        run(args(&["--lr", "1e300"])),
        Err(Error::Usage(_))
    ));
}

#[test]
fn a_diverging_run_writes_nothing_non_finite_and_keeps_the_last_good_checkpoint() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    // Adam divides 1e38 by 1 - β1 = 0.1: the first update is infinite in f32 although the loss
    // and the gradients were finite.
    let fresh = dir.join("fresh.safetensors");
    let list = small(
        &data,
        &fresh,
        &[
            "--lr",
            "1e38",
            "--clip",
            "0",
            "--save-every",
            "1",
            "--steps",
            "5",
        ],
    );
    let message = one_line_error(&list);
    assert!(
        message.contains("diverged") && message.contains("no checkpoint was written"),
        "{message}"
    );
    assert!(
        !fresh.exists() || all_finite(&fresh),
        "a non-finite checkpoint was written"
    );

    // A run resumed with that learning rate stops and leaves its checkpoint as it was.
    let kept = dir.join("kept.safetensors");
    run(small(&data, &kept, &["--steps", "3"])).unwrap();
    let before = fs::read(&kept).unwrap();
    let resume = args(&[
        "--data",
        data.to_str().unwrap(),
        "--resume",
        kept.to_str().unwrap(),
        "--lr",
        "1e38",
        "--save-every",
        "1",
        "--steps",
        "6",
    ]);
    let message = one_line_error(&resume);
    assert!(
        message.contains("diverged") && message.contains("still holds step 3"),
        "{message}"
    );
    assert_eq!(fs::read(&kept).unwrap(), before);
}

#[test]
fn sample_refuses_a_checkpoint_with_a_non_finite_weight() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    run(small(&data, &ckpt, &["--steps", "2"])).unwrap();
    let mut file = load_tensors::<f32>(&ckpt).unwrap();
    file.tensors.get_mut("head.bias").unwrap().data_mut()[3] = f32::NAN;
    save_tensors(&ckpt, &file).unwrap();
    let message = one_line_error(&sample_args(&ckpt, &["--len", "20"]));
    assert!(message.contains("head.bias"), "{message}");
}

// Issue 28, item 5: finite weights whose logits overflow f32 printed the same character for
// every seed and exited 0; non-finite logits are an error naming the step.
#[test]
fn sample_refuses_logits_that_overflow_naming_the_step() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    run(small(&data, &ckpt, &["--steps", "2"])).unwrap();
    let mut file = load_tensors::<f32>(&ckpt).unwrap();
    file.metadata.retain(|k, _| !k.starts_with("checksum."));
    // Row j of the head is ±f32::MAX and its bias f32::MAX: whatever the sign of Σ h, the logit
    // of the rows of that sign is beyond f32.
    let head = file.tensors.get_mut("head.weight").unwrap();
    let hidden = head.shape()[1];
    for (i, w) in head.data_mut().iter_mut().enumerate() {
        *w = if (i / hidden).is_multiple_of(2) {
            f32::MAX
        } else {
            -f32::MAX
        };
    }
    let bias = file.tensors.get_mut("head.bias").unwrap();
    bias.data_mut().iter_mut().for_each(|b| *b = f32::MAX);
    save_tensors(&ckpt, &file).unwrap();
    for seed in ["0", "1", "2"] {
        let message = one_line_error(&sample_args(&ckpt, &["--len", "20", "--seed", seed]));
        assert!(
            message.contains("logits") && message.contains("step 1 "),
            "{message}"
        );
    }
}

#[test]
fn a_loss_far_above_the_uniform_models_is_divergence() {
    // --lr 1e6 without clipping used to train on to a validation loss of ~7e5 nats/char (a
    // uniform guess over the 15 characters scores ln 15 = 2.7) and exit 0.
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    let list = small(
        &data,
        &ckpt,
        &[
            "--lr",
            "1e6",
            "--clip",
            "0",
            "--steps",
            "30",
            "--eval-every",
            "10",
        ],
    );
    let message = one_line_error(&list);
    assert!(message.contains("diverged"), "{message}");
    assert!(matches!(run(list), Err(Error::Training(_))));
}

#[test]
fn absurd_sizes_are_one_line_errors_naming_the_size_and_the_limit() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    let max = usize::MAX.to_string();
    let two62 = (1usize << 62).to_string();
    let train = |extra: &[&str]| small(&data, &ckpt, extra);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (train(&["--minutes", "1e18"]), "--minutes 1e18"),
        (train(&["--hidden", &max]), "--hidden"),
        (train(&["--embed", &max]), "--embed"),
        (train(&["--layers", &max]), "--layers"),
        (train(&["--hidden", "100000000"]), "--hidden"),
        (train(&["--batch", &two62, "--seq-len", "3"]), "--batch"),
        (train(&["--seq-len", &max]), "--seq-len"),
        (
            train(&["--seq-len", &max, "--bptt", "truncated"]),
            "--seq-len",
        ),
        (train(&["--seq-len", &max, "--bptt", "random"]), "--seq-len"),
        (train(&["--seq-len", &max, "--bptt", "full"]), "--seq-len"),
    ];
    for (list, flag) in &cases {
        let message = one_line_error(list);
        assert!(
            message.contains(flag) && message.contains("at most"),
            "{list:?}: {message}"
        );
    }
    run(train(&["--steps", "1"])).unwrap();
    // The issue's --len 1e11 aborted allocating 100 GB; on a machine with that much free it is
    // a valid (days long) run, so the test asks for 100 TB.
    for len in [max.as_str(), "100000000000000"] {
        let message = one_line_error(&sample_args(&ckpt, &["--len", len]));
        assert!(
            message.contains(&format!("--len {len}")) && message.contains("at most"),
            "{message}"
        );
    }
}

// Issue 28, item 12: the memory check counts the text itself and a long `--prime` (all its steps
// on one tape), and its limit is the least of MemAvailable, the rlimits and the cgroup's: under
// `ulimit -v` (1 GB here, far below this machine's free memory) each was an abort in allocation.
#[cfg(unix)]
#[test]
fn memory_beyond_an_rlimit_a_long_text_or_prime_is_a_one_line_error() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    let limited = |list: &[String]| {
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -v 1000000; exec \"$0\" \"$@\""])
            .arg(binary())
            .args(&list[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{list:?}: {:?}: {stderr}",
            out.status
        );
        assert_eq!(stderr.lines().count(), 1, "{list:?}: {stderr}");
        stderr
    };

    // Some 4 GB of weights, gradients and moments.
    let big = limited(&small(&data, &ckpt, &["--hidden", "4096", "--layers", "2"]));
    assert!(
        big.contains("--hidden") && big.contains("at most") && big.contains("ulimit -v"),
        "{big}"
    );

    // A 2 GB text (sparse: it takes no disk).
    let huge = dir.join("huge.txt");
    fs::File::create(&huge)
        .unwrap()
        .set_len(2_000_000_000)
        .unwrap();
    let text = limited(&small(&huge, &ckpt, &["--steps", "1"]));
    assert!(
        text.contains(huge.to_str().unwrap()) && text.contains("at most"),
        "{text}"
    );

    // Nor is a 2 GB file a checkpoint that fits; nor a device a checkpoint.
    let loaded = limited(&sample_args(&huge, &["--len", "5"]));
    assert!(
        loaded.contains(huge.to_str().unwrap()) && loaded.contains("at most"),
        "{loaded}"
    );
    let zero = one_line_error(&sample_args(Path::new("/dev/zero"), &["--len", "5"]));
    assert!(
        zero.contains("/dev/zero") && zero.contains("not a file"),
        "{zero}"
    );

    // A device is no text: /dev/zero would be read until memory ran out.
    let zero = one_line_error(&small(Path::new("/dev/zero"), &ckpt, &["--steps", "1"]));
    assert!(
        zero.contains("/dev/zero") && zero.contains("device"),
        "{zero}"
    );

    // 131,000 characters of prime on a 2 × 512 LSTM: some 14 GB of activations on one tape.
    run(small(
        &data,
        &ckpt,
        &[
            "--hidden",
            "512",
            "--layers",
            "2",
            "--steps",
            "1",
            "--batch",
            "2",
            "--seq-len",
            "8",
        ],
    ))
    .unwrap();
    let prime = "the cat sat on the mat.\n".repeat(131_000 / 24);
    let sampled = limited(&sample_args(&ckpt, &["--prime", &prime, "--len", "5"]));
    assert!(
        sampled.contains("--prime") && sampled.contains("at most"),
        "{sampled}"
    );
}

// Item 12: a cgroup's limit less its usage bounds the memory check, the tightest of the process's
// group and the groups above it, for cgroup v2 (`memory.max`, "max" for none) and v1.
#[test]
fn the_memory_limit_counts_every_cgroup_above_the_process() {
    let root = scratch();
    let write = |path: &str, value: &str| {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, value).unwrap();
    };
    write("a/memory.max", "1000000\n");
    write("a/memory.current", "400000\n");
    write("a/b/memory.max", "max\n");
    write("a/b/memory.current", "100\n");
    let v2 = app::memory::cgroup_left(&root, "0::/a/b\n").unwrap();
    assert_eq!(
        v2,
        (600_000, "the cgroup's memory.max less its memory.current")
    );

    write("memory/x/memory.limit_in_bytes", "9223372036854771712\n");
    write("memory/memory.limit_in_bytes", "5000\n");
    write("memory/memory.usage_in_bytes", "1000\n");
    let both = "4:memory:/x\n3:cpu,cpuacct:/y\n0::/a/b\n";
    let least = app::memory::cgroup_left(&root, both).unwrap();
    assert_eq!(least.0, 4000, "{least:?}");
    assert_eq!(app::memory::cgroup_left(&root, "0::/\n"), None);
}

#[test]
fn a_time_limit_that_ends_before_the_first_step_says_nothing_was_saved() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    let message = one_line_error(&small(&data, &ckpt, &["--minutes", "1e-9"]));
    assert!(
        message.contains("before the first step") && message.contains("no checkpoint was written"),
        "{message}"
    );
    assert!(!ckpt.exists());
}

#[test]
fn a_resume_may_change_the_learning_rate() {
    // The hint after a divergence is to lower --lr; a resume must accept that.
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    run(small(&data, &ckpt, &["--steps", "3"])).unwrap();
    let resume = args(&[
        "--data",
        data.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
        "--lr",
        "5e-4",
        "--steps",
        "5",
    ]);
    let out = outcome(&resume).unwrap();
    assert!(matches!(out, Outcome::Trained { step: 5, .. }), "{out:?}");
    let saved = load_tensors::<f32>(&ckpt).unwrap();
    assert_eq!(saved.metadata["run.lr"], "0.0005");
    assert_eq!(saved.metadata["optimizer.scalar.lr"], "0.0005");
}

#[test]
fn an_unsorted_vocabulary_is_reported_as_such_not_as_a_bad_prime() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("c.safetensors");
    run(small(&data, &ckpt, &["--steps", "1"])).unwrap();
    let mut file = load_tensors::<f32>(&ckpt).unwrap();
    let reversed: String = file.metadata["vocab"].chars().rev().collect();
    file.metadata.insert("vocab".into(), reversed);
    save_tensors(&ckpt, &file).unwrap();
    let message = one_line_error(&sample_args(&ckpt, &["--len", "5"]));
    assert!(
        message.contains("vocabulary") && !message.contains("--prime"),
        "{message}"
    );
}

#[test]
fn a_negative_value_is_read_as_a_number_and_refused_by_range() {
    let cases = [
        (vec!["--lr", "-1"], "--lr -1 must be"),
        (vec!["--clip", "-1"], "--clip -1 must be"),
        (vec!["--dropout", "-0.5"], "--dropout -0.5 must be"),
        (
            vec!["sample", "--checkpoint", "x", "--temperature", "-1"],
            "--temperature -1 must be",
        ),
    ];
    for (list, expected) in cases {
        let message = one_line_error(&args(&list));
        assert!(message.contains(expected), "{list:?}: {message}");
    }
}

/// Counts the bytes the current thread holds on the heap, and the most it held since
/// [`reset_peak`].
struct PerThread;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = HELD.try_with(|held| {
        held.set(held.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(held.get())));
    });
}

// SAFETY: defers every call to the system allocator unchanged.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PerThread = PerThread;

/// Starts a new peak from what the thread holds now, and returns that.
fn reset_peak() -> isize {
    let held = HELD.with(Cell::get);
    PEAK.with(|p| p.set(held));
    held
}

#[test]
fn a_text_costs_at_most_two_bytes_a_character_beyond_itself() {
    // 8 MB of 40 symbols: token ids fit in a byte. The run holds the text while it reads it,
    // then the token ids and the training stream's copy of them; the model is a few hundred KB.
    let dir = scratch();
    let data = dir.join("big.txt");
    let line = "abcdefghijklmnopqrstuvwxyz .,;:!?0123456789\n";
    let text = line.repeat(8_000_000 / line.len());
    fs::write(&data, &text).unwrap();
    let ckpt = dir.join("c.safetensors");
    let list = args(&[
        "--data",
        data.to_str().unwrap(),
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--batch",
        "64",
        "--seq-len",
        "16",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--steps",
        "1",
    ]);
    let base = reset_peak();
    outcome(&list).unwrap();
    let peak = PEAK.with(Cell::get) - base;
    let chars = text.chars().count() as f64;
    let beyond = (peak as f64 - text.len() as f64) / chars;
    println!(
        "peak {peak} bytes for {chars} characters: {beyond:.2} bytes a character beyond the text"
    );
    assert!(
        beyond <= 2.0,
        "{beyond:.2} bytes a character beyond the text"
    );
}

/// Every numeric flag at 0, 1, usize::MAX, 2⁶², 1e18, 1e300, NaN, inf and -1: a run that
/// works, or a one-line error; never a panic. NaN, inf and -1 are wrong for every flag.
#[test]
fn every_numeric_flag_at_its_extremes_is_a_result_never_a_panic() {
    let dir = scratch();
    let data = tiny_lines(&dir);
    let ckpt = dir.join("sampled.safetensors");
    run(small(&data, &ckpt, &["--steps", "2"])).unwrap();
    let max = usize::MAX.to_string();
    let two62 = (1usize << 62).to_string();
    let values = ["0", "1", &max, &two62, "1e18", "1e300", "NaN", "inf", "-1"];
    let train_flags = [
        "--layers",
        "--hidden",
        "--embed",
        "--dropout",
        "--head-dropout",
        "--input-dropout",
        "--seq-len",
        "--batch",
        "--lr",
        "--clip",
        "--steps",
        "--minutes",
        "--seed",
        "--save-every",
        "--eval-every",
    ];
    let sample_flags = ["--len", "--temperature", "--top-k", "--seed"];
    let mut n = 0;
    let mut cases = Vec::new();
    for flag in train_flags {
        for value in values {
            n += 1;
            let out = dir.join(format!("{n}.safetensors"));
            let mut extra = vec![flag, value];
            if flag != "--steps" && flag != "--minutes" {
                extra.extend(["--steps", "2"]);
            }
            // Valid but hours long: checked by the parser only.
            let long = (flag == "--steps" && (value == max || value == two62))
                || (flag == "--minutes" && value == "1");
            cases.push((small(&data, &out, &extra), value, long));
        }
    }
    for flag in sample_flags {
        for value in values {
            let mut extra = vec![flag, value];
            if flag != "--len" {
                extra.extend(["--len", "8"]);
            }
            cases.push((sample_args(&ckpt, &extra), value, false));
        }
    }
    for (list, value, long) in cases {
        if long {
            let parsed = catch_unwind(|| app::cli::parse(list.clone()))
                .unwrap_or_else(|_| panic!("{list:?} panicked"));
            assert!(parsed.is_ok(), "{list:?}: {:?}", parsed.err());
            continue;
        }
        match outcome(&list) {
            Ok(_) => assert!(
                !["NaN", "inf", "-1"].contains(&value),
                "{list:?} must be refused"
            ),
            Err(e) => {
                let message = e.to_string();
                assert_eq!(message.lines().count(), 1, "{list:?}: {message}");
                assert!(!message.is_empty(), "{list:?}");
            }
        }
    }
}

// A bad flag with standard error full (`2>/dev/full`) still exits with the usage error's status 2,
// where printing the message used to panic (status 101).
#[cfg(unix)]
#[test]
fn a_usage_error_with_standard_error_full_exits_two_without_a_panic() {
    let out = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" --no-such-flag 2>/dev/full"])
        .arg(binary())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
}

/// A usage error says which flag is wrong on its one line: a missing required flag is named
/// (clap lists it on the lines after the first), as is an unknown one and a bad value.
#[test]
fn a_usage_error_names_the_flag_on_its_one_line() {
    for (list, names) in [
        (args(&["sample"]), "--checkpoint"),
        (args(&["--no-such-flag"]), "--no-such-flag"),
        (args(&["--steps", "many"]), "--steps"),
    ] {
        let message = one_line_error(&list);
        assert!(message.contains(names), "{list:?}: {message}");
        assert!(!message.starts_with("error:"), "{message}");
    }
}
