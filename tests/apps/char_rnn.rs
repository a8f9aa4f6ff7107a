//! The char_rnn example end to end, through the same code its binary runs: a small model's
//! loss falls on a tiny text; saving, resuming and continuing equals an uninterrupted run; every
//! bad input is a one-line error that leaves existing checkpoints alone.

use crate::char_rnn_app as app;

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::char_rnn::{args, scratch_dir, tiny_text, train_args};
use app::{run, Error, Outcome};
use rewind::autograd::io::load_tensors;

/// A directory of this test's own.
fn scratch() -> PathBuf {
    scratch_dir("rewind-char-rnn")
}

/// A small run on `data` saving to `checkpoint`, with the flags `extra` added.
fn small(data: &Path, checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let defaults = [
        ("--data", data.to_str().unwrap()),
        ("--checkpoint", checkpoint.to_str().unwrap()),
        ("--batch", "4"),
        ("--seq-len", "16"),
        ("--hidden", "32"),
        ("--embed", "8"),
    ];
    train_args(&defaults, extra)
}

#[test]
fn a_small_model_learns_a_tiny_text() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("model.safetensors");
    let out = run(small(
        &data,
        &ckpt,
        &["--steps", "150", "--eval-every", "150", "--lr", "1e-2"],
    ))
    .unwrap();
    let Outcome::Trained { step, val_loss } = out else {
        panic!("{out:?}")
    };
    assert_eq!(step, 150);
    // Uniform over the 14 characters would be ln 14 = 2.64 nats/char.
    assert!(val_loss < 1.2, "validation loss {val_loss} nats/char");
    let sample = run(args(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--prime",
        "the ",
        "--len",
        "40",
    ]))
    .unwrap();
    let Outcome::Sampled(text) = sample else {
        panic!()
    };
    assert_eq!(text.chars().count(), 40);
}

#[test]
fn saving_resuming_and_continuing_equals_an_uninterrupted_run() {
    for bptt in ["truncated", "random", "full"] {
        let dir = scratch();
        let data = tiny_text(&dir);
        let (whole, halves) = (
            dir.join("whole.safetensors"),
            dir.join("halves.safetensors"),
        );
        // In 3 shards whatever the cores: the dropout of each shard draws from its own stream,
        // which a resumed run must draw again.
        let extra = [
            "--layers",
            "2",
            "--shards",
            "3",
            "--dropout",
            "0.3",
            "--bptt",
            bptt,
            "--eval-every",
            "100",
        ];
        run(small(
            &data,
            &whole,
            &[&extra[..], &["--steps", "24"]].concat(),
        ))
        .unwrap();
        run(small(
            &data,
            &halves,
            &[&extra[..], &["--steps", "11"]].concat(),
        ))
        .unwrap();
        let resume = ["--resume", halves.to_str().unwrap()];
        run(args(
            &[
                &[
                    "--data",
                    data.to_str().unwrap(),
                    "--steps",
                    "24",
                    "--eval-every",
                    "100",
                    "--shards",
                    "3",
                ][..],
                &resume,
            ]
            .concat(),
        ))
        .unwrap();
        let (a, b) = (
            load_tensors::<f32>(&whole).unwrap(),
            load_tensors::<f32>(&halves).unwrap(),
        );
        assert_eq!(
            a.tensors.keys().collect::<Vec<_>>(),
            b.tensors.keys().collect::<Vec<_>>()
        );
        for (name, t) in &a.tensors {
            assert_eq!(
                t.data(),
                b.tensors[name].data(),
                "{bptt}: {name} differs after resuming"
            );
        }
        assert_eq!(a.metadata.get("run.step"), Some(&"24".to_string()));
        assert_eq!(a.metadata, b.metadata, "{bptt}");
    }
}

fn error_of(list: Vec<String>) -> Error {
    run(list).expect_err("the run must fail")
}

#[test]
fn each_bad_input_is_a_one_line_error() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("c.safetensors");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (args(&["--data", &path("absent.txt")]), "cannot read"),
        (args(&["--layers", "0"]), "--layers 0 must be at least 1"),
        (args(&["--shards", "0"]), "--shards must be at least 1"),
        (
            args(&["--dropout", "1.5"]),
            "--dropout 1.5 must be in [0, 1)",
        ),
        (
            args(&["--cell", "transformer"]),
            "invalid value 'transformer' for '--cell",
        ),
        (
            args(&["--steps", "ten"]),
            "invalid value 'ten' for '--steps",
        ),
        (
            args(&[
                "sample",
                "--checkpoint",
                &path("c.safetensors"),
                "--temperature",
                "0",
            ]),
            "--temperature 0 must be positive",
        ),
    ];
    fs::write(dir.join("bad.txt"), [0xff, 0xfe, 0x00]).unwrap();
    fs::write(dir.join("empty.txt"), "").unwrap();
    fs::write(dir.join("short.txt"), "hello").unwrap();
    let more: Vec<(Vec<String>, &str)> = vec![
        (small(&dir.join("bad.txt"), &ckpt, &[]), "is not UTF-8 text"),
        (
            small(&dir.join("empty.txt"), &ckpt, &[]),
            "is empty: there is nothing to learn from",
        ),
        (
            small(&dir.join("short.txt"), &ckpt, &[]),
            "has 5 characters",
        ),
        (
            args(&["sample", "--checkpoint", &path("short.txt")]),
            "is not a valid safetensors file",
        ),
    ];
    for (list, expected) in cases.into_iter().chain(more) {
        let message = error_of(list.clone()).to_string();
        assert!(message.contains(expected), "{list:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    assert!(matches!(
        error_of(args(&["--layers", "0"])),
        Error::Usage(_)
    ));

    // A checkpoint of another vocabulary or shape.
    run(small(
        &data,
        &ckpt,
        &["--steps", "3", "--eval-every", "100"],
    ))
    .unwrap();
    let other = dir.join("other.txt");
    fs::write(&other, "abcdefghij".repeat(300)).unwrap();
    let resume_other = args(&[
        "--data",
        other.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
    ]);
    assert!(error_of(resume_other)
        .to_string()
        .contains("was trained on a vocabulary of 14 characters"));
    let reshape = args(&[
        "--data",
        data.to_str().unwrap(),
        "--resume",
        ckpt.to_str().unwrap(),
        "--hidden",
        "64",
    ]);
    assert!(error_of(reshape)
        .to_string()
        .contains("--hidden differs from the checkpoint"));
    let prime = args(&[
        "sample",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--prime",
        "xyz",
    ]);
    assert!(error_of(prime).to_string().contains("--prime contains 'x'"));
}

#[test]
fn a_failing_run_never_overwrites_an_existing_checkpoint() {
    let dir = scratch();
    let data = tiny_text(&dir);
    let ckpt = dir.join("kept.safetensors");
    run(small(
        &data,
        &ckpt,
        &["--steps", "2", "--eval-every", "100"],
    ))
    .unwrap();
    let before = fs::read(&ckpt).unwrap();
    // Without --resume or --overwrite, an existing checkpoint is refused...
    let again = error_of(small(&data, &ckpt, &["--steps", "2"])).to_string();
    assert!(again.contains("exists: pass --resume"), "{again}");
    // ...and a run that fails on its input does not touch it, even with --overwrite.
    let _ = error_of(small(&dir.join("absent.txt"), &ckpt, &["--overwrite"]));
    assert_eq!(fs::read(&ckpt).unwrap(), before);
}

#[test]
fn with_no_data_it_learns_the_built_in_tinyshakespeare() {
    // The text every clone trains on by default, so the README's figures are what a newcomer
    // sees: 1,115,394 characters over 65 symbols, the first line a speaker's name.
    let corpus = app::data::Corpus::load(None).unwrap();
    assert_eq!(corpus.vocab.len(), 65);
    assert_eq!(corpus.train.len() + corpus.val.len(), 1_115_394);
    assert!(
        corpus.source.contains("tinyshakespeare"),
        "{}",
        corpus.source
    );
    assert!(app::data::TINY_SHAKESPEARE.starts_with("First Citizen:\n"));
}
