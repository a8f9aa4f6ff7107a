//! `Tape::checkpoint_rows`: checkpointed segments writing their blocks of rows into one tensor.
//! Against the same segments joined by `concat`: the same values and gradients, bit for bit, the
//! rows held once, and misuse named at the caller's line.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{concat, gradcheck, stack, Param, Tape, Tensor, Var};

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// `n` steps from h = v[1] on the rows v[0]: their h's stacked, and the last.
fn segment<'s>(
    inner: &'s Tape<f64>,
    v: &[Var<'s, f64>],
    w: &Param<f64>,
    n: usize,
) -> Vec<Var<'s, f64>> {
    let mut h = v[1];
    let mut hs = Vec::new();
    for t in 0..n {
        h = (v[0].narrow(0, t, 1).squeeze(0) + h.matmul(inner.param(w))).tanh();
        hs.push(h);
    }
    vec![stack(&hs, 0), h]
}

/// Four steps of h ← tanh(x_t + h·W), [2, 3] rows of x per step, in segments of `lens` steps
/// taken in `order`: the output [steps, 2, 3] and the final h. With `rows` the segments write
/// into `checkpoint_rows`, otherwise their outputs are concatenated.
fn run<'t>(
    tape: &'t Tape<f64>,
    w: &Param<f64>,
    x: Var<'t, f64>,
    h: Var<'t, f64>,
    segments: &[(usize, usize)],
    rows: bool,
) -> (Var<'t, f64>, Var<'t, f64>) {
    let steps: usize = segments.iter().map(|&(_, n)| n).sum();
    let mut out = tape.checkpoint_rows(&[steps, 2, 3]);
    let mut pieces = Vec::new();
    let mut h = h;
    for &(first, n) in segments {
        let x_rows = x.narrow(0, first, n);
        if rows {
            h = out.checkpoint(first, &[x_rows, h], |t, v| segment(t, v, w, n))[0];
        } else {
            let got = tape.checkpoint(&[x_rows, h], |t, v| segment(t, v, w, n));
            pieces.push((first, got[0]));
            h = got[1];
        }
    }
    if rows {
        (out.finish(), h)
    } else {
        pieces.sort_by_key(|&(first, _)| first);
        let parts: Vec<_> = pieces.into_iter().map(|(_, p)| p).collect();
        (concat(&parts, 0), h)
    }
}

#[test]
fn rows_equal_the_concatenation_in_values_and_gradients_in_any_order() {
    let w = Param::new(random(&[3, 3], 1));
    let weights = random(&[4, 2, 3], 4);
    for segments in [
        vec![(0, 1), (1, 3)],
        vec![(0, 2), (2, 2)],
        // Written last rows first, as a layer running backwards in time does.
        vec![(2, 2), (0, 2)],
        vec![(3, 1), (1, 2), (0, 1)],
    ] {
        let result = |rows: bool| {
            let tape = Tape::new();
            let x = tape.var(random(&[4, 2, 3], 2));
            let h = tape.var(random(&[2, 3], 3));
            let (out, end) = run(&tape, &w, x, h, &segments, rows);
            let loss = (out * tape.constant(weights.clone())).sum() + end.sum();
            let grads = loss.backward();
            (
                out.value(),
                end.value(),
                grads[x].clone(),
                grads[h].clone(),
                grads[&w].clone(),
            )
        };
        let (with, without) = (result(true), result(false));
        assert_eq!(with.0, without.0, "{segments:?}: output");
        assert_eq!(with.1, without.1, "{segments:?}: final h");
        assert_eq!(with.2, without.2, "{segments:?}: ∂x");
        assert_eq!(with.3, without.3, "{segments:?}: ∂h0");
        assert_eq!(with.4, without.4, "{segments:?}: ∂W");
    }
}

#[test]
fn rows_match_finite_differences_inside_an_enclosing_checkpoint() {
    // The enclosing checkpoint replays the segments, whose rows the tape no longer holds.
    let w = Param::new(random(&[3, 3], 5));
    let result = gradcheck(
        |tape, v| {
            let out = tape.checkpoint(&[v[0], v[1]], |inner, v| {
                let (out, end) = run(inner, &w, v[0], v[1], &[(2, 2), (0, 2)], true);
                vec![out, end]
            });
            (out[0].tanh().sum() + out[1].sum()) * 0.5
        },
        &[random(&[4, 2, 3], 6), random(&[2, 3], 7)],
    );
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

#[test]
fn the_rows_are_held_once() {
    let w = Param::new(random(&[3, 3], 8));
    let held = |rows: bool| {
        let tape = Tape::new();
        let x = tape.constant(random(&[4, 2, 3], 9));
        let h = tape.constant(random(&[2, 3], 10));
        let before = tape.stats().bytes;
        let (out, end) = run(&tape, &w, x, h, &[(0, 2), (2, 2)], rows);
        let _ = (out, end);
        tape.stats().bytes - before
    };
    // Output [4, 2, 3] and two final states [2, 3] in f64; the concatenation adds the two
    // segments' outputs again.
    let (once, twice) = (held(true), held(false));
    assert_eq!(once, (24 + 2 * 6) * 8);
    assert_eq!(twice, once + 24 * 8);
}

#[test]
#[should_panic(expected = "checkpoint_rows: rows 1..3 overlap rows 0..2 written before")]
fn overlapping_blocks_are_named() {
    let w = Param::new(random(&[3, 3], 11));
    let tape = Tape::new();
    let x = tape.var(random(&[4, 2, 3], 12));
    let h = tape.var(random(&[2, 3], 13));
    run(&tape, &w, x, h, &[(0, 2), (1, 2)], true);
}

#[test]
#[should_panic(
    expected = "checkpoint_rows: a block of shape [2, 2, 3] written from row 3 does not fit a tensor of shape [4, 2, 3]"
)]
fn a_block_past_the_end_is_named() {
    let w = Param::new(random(&[3, 3], 14));
    let tape = Tape::new();
    let x = tape.var(random(&[5, 2, 3], 15));
    let h = tape.var(random(&[2, 3], 16));
    let mut out = tape.checkpoint_rows(&[4, 2, 3]);
    out.checkpoint(3, &[x.narrow(0, 0, 2), h], |inner, v| {
        let h = (v[1].matmul(inner.param(&w))).tanh();
        vec![stack(&[h, h], 0)]
    });
}

#[test]
#[should_panic(
    expected = "checkpoint_rows: 2 of the 4 rows of a tensor of shape [4, 2, 3] were written"
)]
fn unwritten_rows_are_named_at_finish() {
    let tape = Tape::<f64>::new();
    let x = tape.var(random(&[2, 2, 3], 17));
    let mut out = tape.checkpoint_rows(&[4, 2, 3]);
    out.checkpoint(0, &[x], |_, v| vec![v[0].tanh()]);
    out.finish();
}

#[test]
fn an_unfinished_tensor_gives_its_bytes_back() {
    let tape = Tape::<f32>::new();
    let before = tape.stats().bytes;
    let out = tape.checkpoint_rows(&[16, 4]);
    assert_eq!(tape.stats().bytes, before + 16 * 4 * 4);
    drop(out);
    assert_eq!(tape.stats().bytes, before);
}
