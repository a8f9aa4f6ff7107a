//! The char_rnn example's tests: a scratch directory per test, a tiny text, argument lists and
//! the example's binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A fresh directory `{prefix}-{process}-{test}` of the calling test's own (tests run in
/// parallel), emptied if a previous run left it.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir/tiny.txt`: two short sentences thirty times over, on one line.
pub fn tiny_text(dir: &Path) -> PathBuf {
    tiny(dir, " ")
}

/// `dir/tiny.txt`: two short sentences thirty times over, one a line.
pub fn tiny_lines(dir: &Path) -> PathBuf {
    tiny(dir, "\n")
}

fn tiny(dir: &Path, separator: &str) -> PathBuf {
    let path = dir.join("tiny.txt");
    let text = format!("the cat sat on the mat.{separator}the dog sat on the log.{separator}");
    fs::write(&path, text.repeat(30)).unwrap();
    path
}

/// The command line `char_rnn <list>`.
pub fn args(list: &[&str]) -> Vec<String> {
    std::iter::once("char_rnn")
        .chain(list.iter().copied())
        .map(String::from)
        .collect()
}

/// The command line of a training run: the flags `defaults`, less those `extra` gives, then
/// `extra`.
pub fn train_args(defaults: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let mut a: Vec<&str> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|&(flag, value)| [flag, value])
        .collect();
    a.extend_from_slice(extra);
    args(&a)
}

/// A small model's training run on `data` saving to `checkpoint` (batch 4 × 16 characters, 32
/// units, embedding 8, an evaluation every 1,000 steps), with the flags `extra` added.
pub fn small_run(data: &Path, checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let defaults = [
        ("--data", data.to_str().unwrap()),
        ("--checkpoint", checkpoint.to_str().unwrap()),
        ("--batch", "4"),
        ("--seq-len", "16"),
        ("--hidden", "32"),
        ("--embed", "8"),
        ("--eval-every", "1000"),
    ];
    train_args(&defaults, extra)
}

/// The example's binary, built once for this test run with this test's profile and target
/// directory.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "char_rnn", "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let profile = profile_dir.file_name().unwrap().to_str().unwrap();
        if profile != "debug" {
            cargo.args(["--profile", profile]);
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the char_rnn example failed");
        profile_dir.join("examples").join("char_rnn")
    })
}
