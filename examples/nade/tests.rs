//! The nade example through the same code its binary runs: NADE's O(DH) running sum gives the
//! conditionals and gradients of the naive loop that recomputes every hidden layer, its loss
//! passes gradcheck, every conditional reads only earlier pixels, and bad input is one line.

use crate::app;

use std::fs;
use std::path::{Path, PathBuf};

use app::model::{nade_logits, nll, Autoregressive, Fvsbn};
use app::{run, Error, Outcome};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::prelude::*;

/// Random binary data x [n, d] and NADE parameters W [h, d], c [h], V [d, h], b [d], in f64.
fn case(n: usize, d: usize, h: usize, seed: u64) -> [Tensor<f64>; 5] {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = (0..n * d)
        .map(|_| f64::from(u8::from(rng.random_bool(0.4))))
        .collect();
    [
        Tensor::from_vec(x, &[n, d]).unwrap(),
        Tensor::uniform(&[h, d], -1.0, 1.0, &mut rng),
        Tensor::uniform(&[h], -1.0, 1.0, &mut rng),
        Tensor::uniform(&[d, h], -1.0, 1.0, &mut rng),
        Tensor::uniform(&[d], -1.0, 1.0, &mut rng),
    ]
}

/// The definition read literally, O(D²H): for each d, a_d = c + Σ_{j<d} W[:, j] x_j from
/// scratch, then ℓ_d = b_d + V[d, :] · σ(a_d).
fn naive_logits<'t>(
    x: Var<'t, f64>,
    w: Var<'t, f64>,
    c: Var<'t, f64>,
    v: Var<'t, f64>,
    b: Var<'t, f64>,
) -> Var<'t, f64> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let h = c.shape()[0];
    let columns: Vec<Var<'t, f64>> = (0..d)
        .map(|k| {
            let a = if k == 0 {
                c.broadcast_to(&[n, h])
            } else {
                x.narrow(1, 0, k).matmul(w.narrow(1, 0, k).t()) + c
            };
            a.sigmoid().matmul(v.narrow(0, k, 1).t()) + b.narrow(0, k, 1)
        })
        .collect();
    concat(&columns, 1)
}

type Logits = for<'t> fn(
    Var<'t, f64>,
    Var<'t, f64>,
    Var<'t, f64>,
    Var<'t, f64>,
    Var<'t, f64>,
) -> Var<'t, f64>;

/// The logits and the gradients of the NLL in W, c, V, b.
fn logits_and_grads(f: Logits, inputs: &[Tensor<f64>; 5]) -> (Tensor<f64>, Vec<Tensor<f64>>) {
    let tape = Tape::new();
    let x = tape.constant(inputs[0].clone());
    let p: Vec<Var<'_, f64>> = inputs[1..].iter().map(|t| tape.var(t.clone())).collect();
    let logits = f(x, p[0], p[1], p[2], p[3]);
    let grads = nll(logits, x).backward();
    (
        logits.value(),
        p.iter().map(|&v| grads[v].clone()).collect(),
    )
}

fn max_abs_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn running_sum_gives_the_naive_loops_conditionals_and_gradients() {
    // The example's size (D = 64 pixels) with a small batch and hidden layer, and a tiny case.
    for (n, d, h, seed) in [(6, 64, 12, 1), (3, 5, 4, 2), (2, 2, 3, 3)] {
        let inputs = case(n, d, h, seed);
        let (fast, fast_grads) = logits_and_grads(nade_logits, &inputs);
        let (naive, naive_grads) = logits_and_grads(naive_logits, &inputs);
        assert!(
            max_abs_diff(&fast, &naive) <= 1e-12,
            "logits, n {n} d {d} h {h}"
        );
        for (name, (g, want)) in ["W", "c", "V", "b"]
            .iter()
            .zip(fast_grads.iter().zip(&naive_grads))
        {
            let diff = max_abs_diff(g, want);
            assert!(
                diff <= 1e-12,
                "d NLL / d {name}: differs by {diff:e} (n {n} d {d} h {h})"
            );
        }
    }
}

#[test]
fn nade_loss_passes_gradcheck() {
    let [x, w, c, v, b] = case(3, 5, 3, 4);
    gradcheck(
        move |tape, p| {
            nll(
                nade_logits(tape.constant(x.clone()), p[0], p[1], p[2], p[3]),
                tape.constant(x.clone()),
            )
        },
        &[w, c, v, b],
    )
    .unwrap();
}

/// ∂ℓ_d/∂x_j for every d and j, from one backward per d.
fn input_jacobian(
    f: impl for<'t> Fn(&'t Tape<f64>, Var<'t, f64>) -> Var<'t, f64>,
    x: &Tensor<f64>,
) -> Vec<Vec<f64>> {
    let d = x.shape()[1];
    (0..d)
        .map(|k| {
            let tape = Tape::new();
            let xv = tape.var(x.clone());
            let grads = f(&tape, xv).narrow(1, k, 1).sum().backward();
            grads[xv].data().to_vec()
        })
        .collect()
}

#[test]
fn every_conditional_reads_only_earlier_pixels() {
    let [x, w, c, v, b] = case(1, 6, 3, 5);
    let fvsbn = Fvsbn::<f64>::new(6);
    fvsbn.w.set(Tensor::uniform(
        &[6, 6],
        -1.0,
        1.0,
        &mut StdRng::seed_from_u64(6),
    ));
    for jacobian in [
        input_jacobian(
            |tape, xv| {
                nade_logits(
                    xv,
                    tape.constant(w.clone()),
                    tape.constant(c.clone()),
                    tape.constant(v.clone()),
                    tape.constant(b.clone()),
                )
            },
            &x,
        ),
        input_jacobian(|tape, xv| fvsbn.logits(tape, xv), &x),
    ] {
        for (k, row) in jacobian.iter().enumerate() {
            assert!(
                row[k..].iter().all(|&g| g == 0.0),
                "ℓ_{k} depends on x_≥{k}: {row:?}"
            );
            assert!(
                row[..k].iter().all(|&g| g != 0.0),
                "ℓ_{k} ignores an earlier pixel: {row:?}"
            );
        }
    }
}

/// A directory of this test's own (tests run in parallel).
fn scratch() -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("rewind-nade-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `lines` digits in the file's format: 64 pixels 0..16 and a label.
fn digits_csv(dir: &Path, lines: usize) -> PathBuf {
    let path = dir.join("digits.csv");
    let text: String = (0..lines)
        .map(|i| {
            let pixels: Vec<String> = (0..64)
                .map(|k| ((i * 7 + k * 3) % 17).to_string())
                .collect();
            format!("{},{}\n", pixels.join(","), i % 10)
        })
        .collect();
    fs::write(&path, text).unwrap();
    path
}

fn run_with(dir: &Path, data: &Path, extra: &[&str]) -> Result<Outcome, Error> {
    let base = [
        "nade",
        "--data",
        data.to_str().unwrap(),
        "--out-dir",
        dir.to_str().unwrap(),
    ];
    run(base.iter().chain(extra))
}

#[test]
fn a_tiny_run_measures_three_models_and_writes_both_grids() {
    let dir = scratch();
    let data = digits_csv(&dir, 20);
    let outcome = run_with(
        &dir,
        &data,
        &["--epochs", "2", "--hidden", "3", "--samples", "2"],
    )
    .unwrap();
    let Outcome::Measured {
        rows,
        real_svg,
        samples_svg,
    } = outcome
    else {
        panic!("expected a measured run, got {outcome:?}");
    };
    let params: Vec<usize> = rows.iter().map(|r| r.params).collect();
    assert_eq!(params, [64, 64 + 64 * 63 / 2, 2 * 64 * 3 + 64 + 3]);
    assert!(rows
        .iter()
        .all(|r| r.test_nll.is_finite() && r.test_nll > 0.0));
    let captions = [vec!["test digits"], rows.iter().map(|r| r.model).collect()];
    for (path, captions) in [real_svg, samples_svg].iter().zip(captions) {
        let drawn = fs::read_to_string(path).unwrap();
        let name = path.display();
        assert!(
            drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"),
            "{name}"
        );
        for caption in &captions {
            assert!(drawn.contains(caption), "{name} lacks the row {caption}");
        }
        // The background, a grey square behind each of the 2 images of a row, and a lit pixel.
        assert!(
            drawn.matches("<rect").count() > 1 + 2 * captions.len(),
            "{name} draws no pixel"
        );
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = scratch();
    let good = digits_csv(&dir, 5);
    let malformed = dir.join("malformed.csv");
    let text = fs::read_to_string(&good).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "0,1,2";
    fs::write(&malformed, lines.join("\n")).unwrap();
    let out_of_range = dir.join("range.csv");
    fs::write(&out_of_range, format!("17{}\n", ",0".repeat(64))).unwrap();
    let missing = dir.join("absent.csv");
    fs::create_dir_all(dir.join("taken")).unwrap();

    let cases: Vec<(Result<Outcome, Error>, &str)> = vec![
        (run_with(&dir, &missing, &[]), "cannot read"),
        (
            run_with(&dir, &malformed, &[]),
            "malformed.csv:3: expected 65 comma-separated values",
        ),
        (
            run_with(&dir, &out_of_range, &[]),
            "range.csv:1: pixel 1 is \"17\", expected an integer 0..=16",
        ),
        (
            run_with(&dir, &good, &["--hidden", "0"]),
            "--hidden must be at least 1, got 0",
        ),
        (
            run_with(&dir, &good, &["--lr", "-1"]),
            "--lr must be a positive number, got -1",
        ),
        (
            run_with(&dir, &good, &["--epochs", "many"]),
            "invalid value 'many' for '--epochs",
        ),
        (
            run_with(&missing, &good, &[]),
            "is not an existing directory",
        ),
        // Found before training: a directory stands where the samples' grid goes.
        (
            run_with(&dir, &good, &["--samples-svg", "taken"]),
            "taken: it is a directory",
        ),
    ];
    for (result, expected) in cases {
        let message = result.expect_err(expected).to_string();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert!(!message.contains('\n'), "{message:?} is more than one line");
    }
}
