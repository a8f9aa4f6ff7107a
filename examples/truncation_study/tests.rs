//! The truncation_study example through the same code its binary runs: the gradient-spread
//! measurement gives nothing for full BPTT against itself, randomized truncation is unbiased and
//! regular truncation is not, D2L's tokens, and bad input is one line.

use crate::app;

use std::fs;
use std::path::PathBuf;

use app::data::tokenize;
use app::study::{spread, Method, Net};
use app::{run, Error, Outcome};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::nn::{RnnCell, Stream};

const VOCAB: usize = 5;
const WINDOW: usize = 6;

/// A tanh RNN with 4 hidden units over 5 symbols, in f64, and a random stream of 2 lanes.
fn tiny() -> (Net<RnnCell<f64>, f64>, Stream) {
    let mut rng = StdRng::seed_from_u64(7);
    let net = Net::new(VOCAB, 4, &mut rng);
    let tokens: Vec<usize> = (0..40).map(|_| rng.random_range(0..VOCAB)).collect();
    (net, Stream::new(tokens, 2))
}

#[test]
fn full_against_itself_has_zero_bias_and_variance() {
    let (net, mut stream) = tiny();
    let s = spread(&net, Method::Full, &mut stream, 3, WINDOW, 5);
    assert!(s.full_sq > 0.0);
    assert_eq!((s.msd, s.bias_sq, s.variance), (0.0, 0.0, 0.0));
}

/// With n draws of an unbiased estimator, E‖mean − g‖² = variance / n; the tolerance allows four
/// times that. The bias must also be far below regular truncation's, which has the same cuts on
/// average (π = 0.5: a cut every second step).
#[test]
fn randomized_truncation_is_unbiased_on_a_tiny_model() {
    let (net, mut stream) = tiny();
    let draws = 4000;
    let s = spread(
        &net,
        Method::Randomized { pi: 0.5 },
        &mut stream,
        3,
        WINDOW,
        draws,
    );
    assert!(s.variance > 0.0, "ξ draws must vary the estimate");
    assert!(
        s.bias_sq <= 4.0 * s.variance / draws as f64,
        "bias² {:.3e} exceeds 4·variance/n = {:.3e}",
        s.bias_sq,
        4.0 * s.variance / draws as f64
    );
    assert!((s.msd - (s.bias_sq + s.variance)).abs() <= 1e-9 * s.msd);
    let truncated = spread(&net, Method::Truncated { k: 2 }, &mut stream, 3, WINDOW, 1);
    assert!(s.bias_sq < truncated.bias_sq / 100.0);
}

#[test]
fn regular_truncation_is_biased_and_deterministic() {
    let (net, mut stream) = tiny();
    let s = spread(&net, Method::Truncated { k: 2 }, &mut stream, 3, WINDOW, 3);
    assert!(s.bias_sq > 1e-6 * s.full_sq, "bias² {:.3e}", s.bias_sq);
    assert!(
        s.variance <= 1e-12 * s.bias_sq,
        "variance {:.3e}",
        s.variance
    );
    assert!((s.msd - s.bias_sq).abs() <= 1e-12 * s.msd);
}

#[test]
fn tokens_are_d2l_lowercase_letters_and_one_space_per_gap() {
    // space 0, a..z 1..26
    assert_eq!(tokenize("  Hi, It's 42!\n"), [8, 9, 0, 9, 20, 0, 19]);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewind_truncation_study_{name}"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(extra: &[&str]) -> Vec<String> {
    std::iter::once("truncation_study")
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
}

fn usage(extra: &[&str]) -> String {
    match run(args(extra)) {
        Err(Error::Usage(m)) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_one_line() {
    let err = run(args(&["--data", "/no/such/text.txt", "--out-dir", "."])).unwrap_err();
    let Error::Data(m) = &err else {
        panic!("expected a data error, got {err:?}")
    };
    assert!(
        m.starts_with("cannot read the text /no/such/text.txt"),
        "{m}"
    );
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn bad_flags_are_one_line() {
    for (flags, says) in [
        (&["--strategies", "full,everything"][..], "everything"),
        (&["--epochs", "0"][..], "--epochs must be at least 1, got 0"),
        (&["--pi", "1.5"][..], "--pi must be in (0, 1], got 1.5"),
        (
            &["--minutes", "-1"][..],
            "--minutes must be a positive number, got -1",
        ),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let m = usage(flags);
        assert!(m.contains(says), "{flags:?}: {m}");
        assert_eq!(m.lines().count(), 1, "{flags:?}: {m}");
    }
}

/// An output that cannot be written (here a directory stands where the figure goes) is found
/// before the study runs, not after it has trained every model.
#[test]
fn an_output_that_cannot_be_written_fails_before_the_study() {
    let dir = scratch("unwritable");
    fs::create_dir_all(dir.join("truncation_study.svg")).unwrap();
    let out = dir.to_str().unwrap();
    let err = run(args(&["--data", "/no/such/text.txt", "--out-dir", out])).unwrap_err();
    let Error::Output(m) = &err else {
        panic!("expected an output error before reading the data, got {err:?}")
    };
    assert!(
        m.contains("truncation_study.svg") && m.contains("it is a directory"),
        "{m}"
    );
}

#[test]
fn a_tiny_study_writes_its_figure_and_tables() {
    let dir = scratch("tiny");
    let text = dir.join("text.txt");
    fs::write(
        &text,
        "The Time Traveller was expounding a recondite matter to us. ".repeat(12),
    )
    .unwrap();
    let outcome = run(args(&[
        "--data",
        text.to_str().unwrap(),
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--hidden",
        "4",
        "--seq",
        "5",
        "--batch",
        "2",
        "--k",
        "2",
        "--draws",
        "3",
        "--out-dir",
        dir.to_str().unwrap(),
    ]))
    .unwrap();
    let Outcome::Measured {
        curves,
        grads,
        svg,
        tables,
    } = outcome
    else {
        panic!("expected a measurement")
    };
    // 2 cells × 2 optimizers × 3 strategies × 2 seeds, each validated after both epochs.
    assert_eq!(curves.len(), 24);
    assert!(curves
        .iter()
        .all(|c| c.points.len() == 2 && c.peak_bytes > 0));
    assert_eq!(grads.len(), 2 * 3 * 2);
    let drawn = fs::read_to_string(svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert!(drawn.contains("val perplexity"));
    for c in &curves {
        let panel = format!("{:?}, {:?}", c.cell, c.optim);
        assert!(drawn.contains(&panel), "no panel {panel}");
        assert!(
            drawn.contains(&c.method.to_string()),
            "no legend for {}",
            c.method
        );
    }
    // A faint line per run and a thick one through each strategy's mean in each of the 4
    // panels, plus the 3 legend swatches (the frame and ticks are black lines).
    let lines = |style: &str| {
        drawn
            .split("<polyline")
            .skip(1)
            .filter(|l| l.split('>').next().unwrap().contains(style))
            .count()
    };
    assert_eq!(
        lines("opacity=\"0.35\""),
        curves.len(),
        "a faint line per run"
    );
    assert_eq!(
        lines("stroke-width=\"3\""),
        4 * 3 + 3,
        "a mean per strategy and panel"
    );
    assert!(fs::read_to_string(tables)
        .unwrap()
        .contains("| Gru | Adam | randomized pi=0.9 |"));
}
