//! Shape misuse panics at the caller's line, naming the op and both shapes.

use crate::support::panics::panic_of;
use rewind::autograd::{concat, Tape, Tensor};
use rewind::nn::{ChunkLoss, FeatureStream};

/// A misuse, the line it is on, and the message it must panic with.
type Case<'a> = (Box<dyn FnOnce() + 'a>, u32, &'static str);

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape)
}

#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn misuse_panics_at_the_callers_line_with_op_and_shapes() {
    let tape = Tape::new();
    let a = tape.constant(zeros(&[2, 3]));
    let b = tape.constant(zeros(&[4, 5]));
    let c = tape.constant(zeros(&[4]));
    let cases: Vec<Case> = vec![
        (Box::new(|| { a.matmul(b); }), line!(), "matmul: inner dimensions differ: lhs [2, 3] vs rhs [4, 5]"),
        (Box::new(|| { let _ = a + c; }), line!(), "add: shapes cannot be broadcast together: lhs [2, 3] vs rhs [4]"),
        (Box::new(|| { let _ = a * b; }), line!(), "mul: shapes cannot be broadcast together: lhs [2, 3] vs rhs [4, 5]"),
        (Box::new(|| { a.reshape(&[4]); }), line!(), "reshape: cannot view [2, 3] (6 elements) as [4] (4 elements)"),
        (Box::new(|| { a.sum_axis(2, false); }), line!(), "sum_axis: axis 2 out of range for shape [2, 3]"),
        (Box::new(|| { a.narrow(1, 2, 2); }), line!(), "narrow: range 2..4 out of bounds along axis 1 of shape [2, 3]"),
        (Box::new(|| { concat(&[a, b], 0); }), line!(), "concat: shapes differ outside axis 0: [2, 3] vs [4, 5]"),
        (Box::new(|| { b.index_select(&[1, 4]); }), line!(), "index_select: index 4 out of range for 4 rows of shape [4, 5]"),
        (Box::new(|| { a.cross_entropy(&[0, 1, 2]); }), line!(), "cross_entropy: expected logits [N, C] and N targets: logits [2, 3] vs targets [3]"),
        (Box::new(|| { a.cross_entropy(&[0, 3]); }), line!(), "cross_entropy: target 3 at row 1 out of range for 3 classes (logits [2, 3])"),
        (Box::new(|| { a.permute(&[0, 0]); }), line!(), "permute: [0, 0] is not a permutation of the 2 axes of shape [2, 3]"),
        (Box::new(|| { a.backward(); }), line!(), "backward: output must be a scalar, got shape [2, 3]; use backward_with(seed)"),
        (Box::new(|| { a.backward_with(&zeros(&[3])); }), line!(), "backward_with: shapes differ: lhs [2, 3] vs rhs [3]"),
        (Box::new(|| { c.t(); }), line!(), "t: expected a 2-D or 3-D value, got shape [4]"),
        (Box::new(|| { a.log_softmax(-3); }), line!(), "log_softmax: axis -3 out of range for shape [2, 3]"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(
            file.ends_with("shape_errors.rs"),
            "{expected}: panicked in {file}, not at the caller"
        );
        assert_eq!(
            at, line,
            "{expected}: panicked at line {at}, the call is on line {line}"
        );
    }
}

/// A shape too large for a `usize` is misuse too, and panics at the caller's line like the rest
/// (tests/engine/shape_overflow.rs has every case; these follow the panic through the check
/// layer).
#[test]
#[cfg(target_pointer_width = "64")]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn overflowing_shapes_panic_at_the_callers_line() {
    let tape = Tape::new();
    let a = tape.constant(zeros(&[2, 3]));
    let big = 1 << 32;
    let cases: Vec<Case> = vec![
        (Box::new(|| { a.reshape(&[big, big]); }), line!(), "reshape: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"),
        (Box::new(|| { a.narrow(1, usize::MAX, 2); }), line!(), "narrow: range 18446744073709551615..18446744073709551617 out of bounds along axis 1 of shape [2, 3]"),
        (Box::new(|| { Tensor::<f32>::zeros(&[big, big]); }), line!(), "zeros: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"),
        (Box::new(|| { Tensor::<f32>::zeros(&[0]).reshape(&[big, big]); }), line!(), "reshape: shape [4294967296, 4294967296] is too large: its dimensions multiply past usize::MAX"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(file.ends_with("shape_errors.rs"), "{expected}: panicked in {file}");
        assert_eq!(at, line, "{expected}: panicked at line {at}, the call is on line {line}");
    }
}

#[test]
fn matmul_names_batch_and_rank_errors() {
    let tape = Tape::new();
    let a = tape.constant(zeros(&[2, 3, 4]));
    let b = tape.constant(zeros(&[3, 4, 5]));
    let s = tape.constant(zeros(&[]));
    let (msg, ..) = panic_of(|| {
        a.matmul(b);
    });
    assert_eq!(
        msg,
        "matmul: batch dimensions cannot be broadcast together: lhs [2, 3, 4] vs rhs [3, 4, 5]"
    );
    let (msg, ..) = panic_of(|| {
        a.matmul(s);
    });
    assert_eq!(
        msg,
        "matmul: operands must be at least 1-D: lhs [2, 3, 4] vs rhs []"
    );
    // The message shows the transposed operand as the caller wrote it.
    let w = tape.constant(zeros(&[5, 3]));
    let x = tape.constant(zeros(&[2, 4]));
    let (msg, ..) = panic_of(|| {
        x.matmul(w.t());
    });
    assert_eq!(
        msg,
        "matmul: inner dimensions differ: lhs [2, 4] vs rhs [3, 5]"
    );
}

#[test]
fn ops_across_tapes_are_refused() {
    let (t1, t2) = (Tape::<f32>::new(), Tape::<f32>::new());
    let a = t1.constant(zeros(&[2]));
    let b = t2.constant(zeros(&[2]));
    let (msg, ..) = panic_of(|| {
        let _ = a + b;
    });
    assert_eq!(msg, "add: operands are on different tapes");
}

#[test]
fn from_vec_returns_a_typed_error() {
    let err = Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build a tensor of shape [2, 3]: it holds 6 elements but 5 were given"
    );
}

/// Misusing a token buffer, a stream, sequence lengths or the driver's lanes panics at the
/// caller's line too, not inside the library.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn token_stream_length_and_lane_misuse_panics_at_the_callers_line() {
    use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
    use rewind::nn::{Bptt, Carry, Gru, RecurrentConfig, Strategy, Stream, Tokens};
    let mut narrow = Tokens::for_vocab(10, 4);
    let few = Tokens::from(vec![1, 2, 3]);
    let gru: Gru = Gru::new(RecurrentConfig::new(3, 4), &mut StdRng::seed_from_u64(0));
    let mut driver: Bptt = Bptt::new(Strategy::Truncated { k: 3 }, Carry::zeros(&gru, 2), 0);
    let tape = Tape::new();
    let x = tape.constant(zeros(&[5, 2, 3]));
    let cases: Vec<Case> = vec![
        (Box::new(|| { gru.forward(&tape, x, None, Some(&[0, 5])); }), line!(), "gru: lengths [0, 5] must give each of the 2 sequences a length in 1..=5"),
        (Box::new(|| { driver.reset_lane(5); }), line!(), "reset_lane: lane 5 of 2"),
        (Box::new(|| { narrow.push(300); }), line!(), "tokens: id 300 does not fit the vocabulary's width (u8: ids below 256)"),
        (Box::new(|| { few.get(3); }), line!(), "tokens: index 3 out of range for 3 tokens"),
        (Box::new(|| { Stream::new(vec![1, 2, 3], 0); }), line!(), "stream: needs at least one lane"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(file.ends_with("shape_errors.rs"), "{expected}: panicked in {file}");
        assert_eq!(at, line, "{expected}: panicked at line {at}, the call is on line {line}");
    }
}

/// A stream of feature vectors and the losses a model hands the driver refuse what does not fit,
/// at the caller's line, naming both shapes.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn feature_streams_and_chunk_losses_refuse_misfits_at_the_callers_line() {
    let tape = Tape::new();
    let series = || zeros(&[12, 2]);
    let chunk = FeatureStream::next_vector(series(), 3).chunk(0, 2);
    let wrong = tape.constant(zeros(&[2, 3, 1]));
    let cases: Vec<Case> = vec![
        (Box::new(|| { FeatureStream::next_vector(zeros(&[12]), 3); }), line!(), "feature stream: the series must be [N, D] (a row per time step), got [12]"),
        (Box::new(|| { FeatureStream::paired(series(), zeros(&[11, 1]), 3); }), line!(), "feature stream: targets [11, 1] need one row per input row of [12, 2]"),
        (Box::new(|| { FeatureStream::paired(zeros(&[12]), zeros(&[12, 1]), 3); }), line!(), "feature stream: the series must be [N, D] (a row per time step), got [12]"),
        (Box::new(|| { FeatureStream::next_vector(series(), 7); }), line!(), "feature stream: 12 rows are too few for 7 lanes of at least 2"),
        (Box::new(|| { chunk.mse(wrong); }), line!(), "feature chunk mse: prediction [2, 3, 1] against targets [2, 3, 2]"),
        (Box::new(|| { ChunkLoss::summed(wrong, 6); }), line!(), "chunk loss: the loss must be one value, got shape [2, 3, 1]"),
        (Box::new(|| { series().narrow(1, 1, 2); }), line!(), "narrow: range 1..3 out of bounds along axis 1 of shape [12, 2]"),
        (Box::new(|| { Tensor::concat(&[series(), zeros(&[12, 3])], 0); }), line!(), "concat: shapes differ outside axis 0: [12, 2] vs [12, 3]"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(file.ends_with("shape_errors.rs"), "{expected}: panicked in {file}");
        assert_eq!(at, line, "{expected}: panicked at line {at}, the call is on line {line}");
    }
}
