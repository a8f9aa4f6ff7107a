//! The hessian_free example through the code its binary runs: conjugate gradient solves a known
//! system; the example's Gauss-Newton products (with and without structural damping) equal
//! Jᵀ·H_L·J·v assembled from finite-difference Jacobians; one Hessian-free iteration lowers the
//! training loss; λ follows the Levenberg-Marquardt rule; L-BFGS lowers its full-batch loss at
//! every iteration, to a stated bound; bad flags are one line; the three trainers run end to end. The CG solver's own tests live beside it in examples/hessian_free/cg.rs.

use crate::app;

use std::fs;
use std::path::PathBuf;

use app::cg::{self, Stop};
use app::data::Batch;
use app::hf::{adapt, flatten, gauss_newton, shaped, HessianFree, Settings};
use app::model::Net;
use app::train::{LbfgsTrainer, Trainer};
use app::{run, Error, Outcome};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::Module;
use rewind::prelude::*;

#[test]
fn cg_solves_a_known_spd_system() {
    // A = [[4, 1, 0], [1, 3, 1], [0, 1, 2]] (diagonally dominant, so positive definite) and
    // b = A·(1, -2, 3) = (2, -2, 4).
    let a = [[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]];
    let product = |v: &[f64]| -> Vec<f64> { a.iter().map(|row| cg::dot(row, v)).collect() };
    let solution = cg::solve(
        product,
        &[2.0, -2.0, 4.0],
        &[0.0; 3],
        &cg::Options::default(),
    );
    assert_eq!(solution.stop, Stop::Solved);
    // Exact arithmetic needs at most n = 3 steps.
    assert!(solution.last().iteration <= 3);
    for (x, want) in solution.last().x.iter().zip([1.0, -2.0, 3.0]) {
        assert!((x - want).abs() < 1e-12, "{x} vs {want}");
    }
    // φ(x*) = -½ bᵀx* = -½ (2 + 4 + 12) = -9.
    assert!((solution.last().value + 9.0).abs() < 1e-12);
}

/// H = 3 hidden units in f64, 2 sequences of 4 steps.
fn tiny() -> (Net<f64>, Batch<f64>) {
    let mut rng = StdRng::seed_from_u64(11);
    let net = Net::new(3, 1.1, &mut rng);
    (net, Batch::draw(4, 2, &mut rng))
}

/// The Jacobian of `outputs(net)` with respect to every parameter laid end to end, by central
/// differences: one row per output.
fn jacobian(net: &Net<f64>, outputs: impl Fn(&Net<f64>) -> Vec<f64>) -> Vec<Vec<f64>> {
    let h = 1e-6;
    let mut columns = Vec::new();
    for (_, p) in net.params() {
        for k in 0..p.value().numel() {
            let at = |delta: f64| {
                p.update(|t| t.data_mut()[k] += delta);
                let y = outputs(net);
                p.update(|t| t.data_mut()[k] -= delta);
                y
            };
            let (up, down) = (at(h), at(-h));
            columns.push(
                up.iter()
                    .zip(&down)
                    .map(|(u, d)| (u - d) / (2.0 * h))
                    .collect::<Vec<f64>>(),
            );
        }
    }
    let rows = columns[0].len();
    (0..rows)
        .map(|r| columns.iter().map(|c| c[r]).collect())
        .collect()
}

/// Jᵀ·(scale·J·v).
fn jt_j(j: &[Vec<f64>], v: &[f64], scale: f64) -> Vec<f64> {
    let jv: Vec<f64> = j.iter().map(|row| scale * cg::dot(row, v)).collect();
    (0..v.len())
        .map(|i| j.iter().zip(&jv).map(|(row, u)| row[i] * u).sum())
        .collect()
}

#[test]
fn gauss_newton_product_is_jt_hl_j_v_from_finite_differences() {
    let (net, batch) = tiny();
    let b = batch.sequences() as f64;
    let predictions = |n: &Net<f64>| {
        let tape = Tape::new();
        n.forward(&tape, &batch).prediction.value().into_vec()
    };
    let states = |n: &Net<f64>| {
        let tape = Tape::new();
        n.forward(&tape, &batch).hidden.value().into_vec()
    };
    let j = jacobian(&net, predictions);
    let j_h = jacobian(&net, states);
    let theta: Vec<Tensor<f64>> = net.params().iter().map(|(_, p)| p.value()).collect();
    let n = j[0].len();
    let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 17) as f64 - 8.0) / 8.0).collect();
    // L = (1/B) Σ (ŷ - y)²: H_L = (2/B)·I over the predictions.
    let fit = jt_j(&j, &v, 2.0 / b);
    for structural in [0.0, 0.7] {
        // The structural term w/(2B)·‖Δh‖² adds (w/B)·J_hᵀJ_h.
        let drift = jt_j(&j_h, &v, structural / b);
        let want: Vec<f64> = fit.iter().zip(&drift).map(|(a, d)| a + d).collect();
        let tape = Tape::new();
        let wrt: Vec<Var<f64>> = net.params().iter().map(|(_, p)| tape.param(p)).collect();
        let gn = gauss_newton(&net, &tape, &batch, &wrt, structural);
        let got = flatten(gn.product(&shaped(&v, &theta)).iter());
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-7 * scale,
                "structural {structural}, entry {i}: {g} vs {w}"
            );
        }
    }
}

/// A problem small enough to run in a moment: T = 6, H = 8, 64 sequences.
fn small() -> (Net<f64>, Batch<f64>) {
    let mut rng = StdRng::seed_from_u64(5);
    let net = Net::new(8, 1.0, &mut rng);
    (net, Batch::draw(6, 64, &mut rng))
}

fn settings(lambda: f64) -> Settings {
    Settings {
        curvature_batch: 32,
        lambda,
        ..Settings::default()
    }
}

#[test]
fn one_hf_iteration_lowers_the_training_loss() {
    let (net, batch) = small();
    let before = net.loss(&batch);
    let mut hf = HessianFree::new(settings(1.0));
    let report = hf.step(&net, &batch);
    let after = net.loss(&batch);
    assert!((report.loss - before).abs() < 1e-12);
    assert!((report.loss_after - after).abs() < 1e-12);
    assert!(after < 0.9 * before, "loss {before} → {after}");
    assert!(report.step > 0.0 && report.products >= report.cg_iterations);
}

#[test]
fn lambda_follows_the_levenberg_marquardt_rule() {
    assert_eq!(adapt(1.0, 0.1), 1.5);
    assert_eq!(adapt(1.0, -3.0), 1.5);
    assert_eq!(adapt(1.0, f64::NAN), 1.5);
    assert_eq!(adapt(1.0, 0.5), 1.0);
    assert_eq!(adapt(3.0, 0.9), 2.0);

    // Heavily damped, the step is short and the quadratic model exact to first order: ρ ≈ 1,
    // and λ shrinks.
    let (net, batch) = small();
    let mut hf = HessianFree::new(settings(1e4));
    let report = hf.step(&net, &batch);
    assert!((report.rho - 1.0).abs() < 0.05, "ρ = {}", report.rho);
    assert_eq!(hf.lambda(), 1e4 * 2.0 / 3.0);

    // Barely damped, with the curvature taken on 2 sequences of T = 20: G has rank 2 at most,
    // CG steps far along directions it has no curvature for, and the loss rises (ρ < 0): λ
    // grows.
    let mut rng = StdRng::seed_from_u64(5);
    let net: Net<f64> = Net::new(8, 1.0, &mut rng);
    let batch = Batch::draw(20, 64, &mut rng);
    let mut hf = HessianFree::new(Settings {
        curvature_batch: 2,
        ..settings(1e-6)
    });
    let report = hf.step(&net, &batch);
    assert!(report.rho < 0.0, "ρ = {}", report.rho);
    assert_eq!(hf.lambda(), 1e-6 * 1.5);
}

/// The example's L-BFGS trainer (strong-Wolfe line search, one iteration per update) on the
/// small problem in f32 from seed 5, 64 fixed sequences of T = 6, H = 8: the loss each update
/// starts from never rises (the line search asks for sufficient decrease), falls from 0.914 at
/// the start to below 0.01 after 40 iterations (0.0054 here, after 88 evaluations of loss and
/// gradient), and two runs agree bit for bit.
#[test]
fn lbfgs_lowers_the_full_batch_loss_to_a_bound_deterministically() {
    let train = || {
        let mut rng = StdRng::seed_from_u64(5);
        let mut net: Net = Net::new(8, 1.0, &mut rng);
        let mut trainer = LbfgsTrainer::new(64, 6);
        let losses: Vec<f64> = (0..41)
            .map(|_| trainer.update(&mut net, &mut rng))
            .collect();
        (losses, trainer.evaluations(41))
    };
    let (losses, evaluations) = train();
    println!("L-BFGS losses {losses:?}, {evaluations} evaluations");
    assert!(losses[0] > 0.9, "starts at {}", losses[0]);
    for (k, pair) in losses.windows(2).enumerate() {
        assert!(
            pair[1] <= pair[0],
            "iteration {}: {} → {}",
            k + 1,
            pair[0],
            pair[1]
        );
    }
    assert!(losses[40] < 0.01, "after 40 iterations: {}", losses[40]);
    assert!(evaluations > 41, "{evaluations} evaluations");
    assert_eq!(train(), (losses, evaluations));
}

fn args(extra: &[&str]) -> Vec<String> {
    std::iter::once("hessian_free")
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn bad_flags_are_one_line_errors() {
    for (flags, says) in [
        (&["--method", "sgd"][..], "sgd"),
        (
            &["--seconds", "0"][..],
            "--seconds must be a positive number, got 0",
        ),
        (
            &["--lambda", "-1"][..],
            "--lambda must be a positive number, got -1",
        ),
        (&["--seq-len", "1"][..], "--seq-len must be at least 2"),
        (
            &["--cg-iterations", "0"][..],
            "--cg-iterations must be at least 1, got 0",
        ),
        (
            &["--grad-batch", "10", "--curvature-batch", "20"][..],
            "--curvature-batch 20 is more than --grad-batch 10",
        ),
        (
            &["--structural", "-0.5"][..],
            "--structural must be a number ≥ 0",
        ),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        match run(args(flags)) {
            Err(Error::Usage(m)) => {
                assert!(m.contains(says), "{flags:?}: {m}");
                assert_eq!(m.lines().count(), 1, "{flags:?}: {m}");
            }
            other => panic!("{flags:?}: expected a usage error, got {other:?}"),
        }
    }
    let err = run(args(&["--svg", "/no/such/dir/curves.svg"])).unwrap_err();
    assert!(matches!(err, Error::Output(_)), "{err:?}");
    assert_eq!(err.to_string().lines().count(), 1);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewind_hessian_free_{name}"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_three_trainers_run_end_to_end_and_draw_their_curves() {
    let svg = scratch("both").join("curves.svg");
    let _ = fs::remove_file(&svg);
    let outcome = run(args(&[
        "--updates",
        "2",
        "--seq-len",
        "8",
        "--hidden",
        "8",
        "--heldout",
        "50",
        "--grad-batch",
        "64",
        "--curvature-batch",
        "16",
        "--cg-iterations",
        "5",
        "--structural",
        "0.1",
        "--svg",
        svg.to_str().unwrap(),
    ]))
    .unwrap();
    let Outcome::Trained(summary) = outcome else {
        panic!("expected training")
    };
    let methods: Vec<&str> = summary.curves.iter().map(|c| c.method).collect();
    assert_eq!(methods, ["adam", "hf", "lbfgs"]);
    for c in &summary.curves {
        // Measured before the first update and after the last.
        assert_eq!(c.points.first().unwrap().updates, 0);
        assert_eq!(c.last().updates, 2);
        assert!(c.points.iter().all(|p| p.mse.is_finite()));
    }
    // The same initial weights and held-out set: the first measurements agree.
    assert_eq!(summary.curves[0].points[0], summary.curves[1].points[0]);
    assert_eq!(summary.curves[0].points[0], summary.curves[2].points[0]);
    assert_eq!(summary.curves[0].products, 0);
    assert!(summary.curves[1].products >= 2);
    assert_eq!(summary.curves[2].products, 0);
    // One gradient per Adam or HF update; L-BFGS's line search evaluates more.
    assert_eq!(summary.curves[0].evaluations, 2);
    assert_eq!(summary.curves[1].evaluations, 2);
    assert!(summary.curves[2].evaluations >= 2);
    let drawn = fs::read_to_string(&svg).unwrap();
    // Each method's curve is one 2-px line in its series colour through its measurements (the
    // frame, ticks, grid and legend swatches are lines of other widths).
    let curves: Vec<(&str, usize)> = drawn
        .split("<polyline")
        .skip(1)
        .filter(|line| line.contains("stroke-width=\"2\""))
        .map(|line| {
            let stroke = line
                .split("stroke=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let points = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (stroke, points.split_whitespace().count())
        })
        .collect();
    let measured: Vec<usize> = summary.curves.iter().map(|c| c.points.len()).collect();
    assert_eq!(
        curves,
        [
            ("#1F77B4", measured[0]),
            ("#D62728", measured[1]),
            ("#2CA02C", measured[2])
        ]
    );
    assert!(drawn.contains("Hessian-free") && drawn.contains("Adam") && drawn.contains("L-BFGS"));
    let table = app::table(&summary.curves);
    assert!(table.contains("gradient evaluations"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
}
