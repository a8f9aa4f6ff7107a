//! Anomaly mode: the first op whose value (forward) or whose inputs' gradients (backward) turn
//! non-finite is named, with its shapes and the line that recorded it. Off by default.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rewind::autograd::{Param, Tape, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected an anomaly panic");
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "`{p}` missing from: {message}");
    }
}

#[test]
fn a_forward_value_that_turns_non_finite_names_the_op_its_shapes_and_line() {
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.var(t(&[1.0, 0.0, 2.0, 3.0], &[2, 2]));
    let y = x.exp();
    let message = panic_message(|| {
        let _ = y.ln() * x.ln(); // the line named below
    });
    let line = line!() - 2;
    assert_mentions(
        &message,
        &[
            "anomaly",
            "`ln`",
            &format!("tests/engine/anomaly.rs:{line}"),
            "-inf",
            "[0, 1]",
            "[2, 2]",
        ],
    );
}

#[test]
fn values_already_non_finite_in_the_inputs_are_not_blamed_on_the_op() {
    // An attention-style mask: -inf on purpose, removed by softmax.
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.var(t(&[0.5, -0.2, 0.9], &[3]));
    let masked = x.masked_fill(&t(&[0.0, 1.0, 0.0], &[3]), f64::NEG_INFINITY);
    let loss = (masked.softmax(0) * tape.constant(t(&[1.0, 2.0, 3.0], &[3]))).sum();
    let g = loss.backward();
    assert!(g[x].data().iter().all(|v| v.is_finite()));
}

#[test]
fn a_gradient_that_turns_non_finite_names_the_op_whose_backward_made_it() {
    // sqrt(0) = 0 is finite, its derivative 1/(2·0) is not.
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.var(t(&[4.0, 0.0, 1.0], &[3]));
    let line = line!() + 1;
    let y = x.sqrt();
    let loss = (y * 3.0).sum();
    let message = panic_message(|| drop(loss.backward()));
    assert_mentions(
        &message,
        &[
            "anomaly",
            "backward of `sqrt`",
            &format!("tests/engine/anomaly.rs:{line}"),
            "inf",
            "[1]",
            "[3]",
        ],
    );
}

#[test]
fn a_weight_gradient_of_a_per_step_product_is_checked_too() {
    // Per-step products' weight gradients are stacked and multiplied out later; anomaly mode
    // checks them where they are made.
    let w = Param::named("w", t(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[2, 3]));
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.constant(t(&[1.0, f64::INFINITY, 0.0], &[1, 3]));
    let wv = tape.param(&w);
    let line = line!() + 1;
    let y = x.matmul(wv.t());
    let loss = y.sum();
    let message = panic_message(|| drop(loss.backward()));
    assert_mentions(
        &message,
        &[
            "backward of `matmul`",
            &format!("tests/engine/anomaly.rs:{line}"),
        ],
    );
}

#[test]
fn a_non_finite_seed_is_named() {
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.var(t(&[1.0, 2.0], &[2]));
    let y = x * 2.0;
    let message = panic_message(|| drop(y.backward_with(&t(&[f64::NAN, 1.0], &[2]))));
    assert_mentions(&message, &["anomaly", "seed", "NaN"]);
}

#[test]
fn off_by_default_non_finite_values_flow_silently() {
    let tape = Tape::new();
    let x = tape.var(t(&[0.0, 1.0], &[2]));
    let g = x.sqrt().sum().backward();
    assert_eq!(g[x].data()[0], f64::INFINITY);
}

#[test]
fn checkpointed_functions_are_checked_inside_too() {
    let tape = Tape::new();
    tape.detect_anomaly(true);
    let x = tape.var(t(&[1.0, -1.0], &[2]));
    let message = panic_message(|| {
        drop(tape.checkpoint(&[x], |_, v| vec![v[0].sqrt()]));
    });
    assert_mentions(&message, &["anomaly", "`sqrt`", "NaN", "[1]"]);
}
