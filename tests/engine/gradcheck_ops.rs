//! Every primitive checked against central finite differences in f64 (ε 1e-6, atol 1e-5,
//! rtol 1e-3), over random shapes, broadcasting, and values used more than once.

// Each check takes its inputs as a fresh slice; `&[x.clone()]` reads better here than from_ref.
#![allow(clippy::cloned_ref_to_slice_refs)]

use crate::support::gradcheck::{
    assert_close, away_from_zero, broadcastable_to, check, random_shape, rng, uniform, Cube,
};
use rewind::autograd::rand::Rng;
use rewind::autograd::{concat, stack, CrossEntropyOptions, Reduction, Tape, Tensor, Var};

const TRIALS: usize = 6;

#[test]
fn elementwise_binary_ops_with_broadcasting() {
    let mut r = rng(1);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let b = broadcastable_to(&s, &mut r);
        for (lhs, rhs) in [
            (s.clone(), s.clone()),
            (s.clone(), b.clone()),
            (b.clone(), s.clone()),
        ] {
            let x = uniform(&lhs, -1.0, 1.0, &mut r);
            let y = away_from_zero(&rhs, &mut r);
            check(|_, v| v[0] + v[1], &[x.clone(), y.clone()]);
            check(|_, v| v[0] - v[1], &[x.clone(), y.clone()]);
            check(|_, v| v[0] * v[1], &[x.clone(), y.clone()]);
            check(|_, v| v[0] / v[1], &[x.clone(), y.clone()]);
        }
    }
}

#[test]
fn scalar_operands_on_either_side_and_negation() {
    let mut r = rng(2);
    for _ in 0..TRIALS {
        let x = away_from_zero(&random_shape(&mut r, 4), &mut r);
        check(|_, v| -v[0], &[x.clone()]);
        check(|_, v| v[0] + 2.0, &[x.clone()]);
        check(|_, v| 2.0 + v[0], &[x.clone()]);
        check(|_, v| v[0] - 2.0, &[x.clone()]);
        check(|_, v| 2.0 - v[0], &[x.clone()]);
        check(|_, v| v[0] * 3.0, &[x.clone()]);
        check(|_, v| 3.0 * v[0], &[x.clone()]);
        check(|_, v| v[0] / 4.0, &[x.clone()]);
        check(|_, v| 4.0 / v[0], &[x.clone()]);
        check(|_, v| v[0].affine(-0.5, 0.25), &[x.clone()]);
    }
}

#[test]
fn unary_functions() {
    let mut r = rng(3);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let x = uniform(&s, -2.0, 2.0, &mut r);
        let pos = uniform(&s, 0.5, 2.0, &mut r);
        let off_kink = away_from_zero(&s, &mut r);
        check(|_, v| v[0].exp(), &[x.clone()]);
        check(|_, v| v[0].tanh(), &[x.clone()]);
        check(|_, v| v[0].sigmoid(), &[x.clone()]);
        check(|_, v| v[0].relu(), &[off_kink.clone()]);
        // ±[0.5, 1.5] against bounds at ±0.25 and ±2: both sides of each kink, none on it.
        check(|_, v| v[0].clamp(-0.25, 0.25), &[off_kink.clone()]);
        check(|_, v| v[0].clamp_min(0.25), &[off_kink.clone()]);
        check(|_, v| v[0].clamp_max(-0.25), &[off_kink.clone()]);
        check(|_, v| v[0].clamp(-2.0, 2.0), &[off_kink]);
        check(|_, v| v[0].ln(), &[pos.clone()]);
        check(|_, v| v[0].sqrt(), &[pos.clone()]);
        check(|_, v| v[0].powf(3.0), &[x.clone()]);
        check(|_, v| v[0].powf(-1.5), &[pos.clone()]);
        check(|_, v| v[0].powf(0.5), &[pos]);
    }
}

#[test]
fn matmul_two_d_batched_and_broadcast() {
    let mut r = rng(4);
    for _ in 0..TRIALS {
        let (b, m, k, n) = (
            r.random_range(1..=3),
            r.random_range(1..=4),
            r.random_range(1..=5),
            r.random_range(1..=4),
        );
        let a2 = uniform(&[m, k], -1.0, 1.0, &mut r);
        let b2 = uniform(&[k, n], -1.0, 1.0, &mut r);
        let a3 = uniform(&[b, m, k], -1.0, 1.0, &mut r);
        let b3 = uniform(&[b, k, n], -1.0, 1.0, &mut r);
        check(|_, v| v[0].matmul(v[1]), &[a2.clone(), b2.clone()]);
        check(|_, v| v[0].matmul(v[1]), &[a3.clone(), b3.clone()]);
        check(|_, v| v[0].matmul(v[1]), &[a3.clone(), b2.clone()]);
        check(|_, v| v[0].matmul(v[1]), &[a2.clone(), b3.clone()]);
    }
}

#[test]
fn matmul_reads_transposed_operands_by_stride() {
    let mut r = rng(5);
    for _ in 0..TRIALS {
        let (b, m, k, n) = (
            r.random_range(1..=3),
            r.random_range(1..=4),
            r.random_range(1..=5),
            r.random_range(1..=4),
        );
        let at = uniform(&[k, m], -1.0, 1.0, &mut r);
        let bt = uniform(&[n, k], -1.0, 1.0, &mut r);
        let b2 = uniform(&[k, n], -1.0, 1.0, &mut r);
        let a2 = uniform(&[m, k], -1.0, 1.0, &mut r);
        let at3 = uniform(&[b, k, m], -1.0, 1.0, &mut r);
        let bt3 = uniform(&[b, n, k], -1.0, 1.0, &mut r);
        check(|_, v| v[0].matmul(v[1].t()), &[a2.clone(), bt.clone()]);
        check(|_, v| v[0].t().matmul(v[1]), &[at.clone(), b2.clone()]);
        check(|_, v| v[0].t().matmul(v[1].t()), &[at.clone(), bt.clone()]);
        check(
            |_, v| v[0].t().matmul(v[1].t()),
            &[at3.clone(), bt3.clone()],
        );
        check(|_, v| v[0].t().matmul(v[1]), &[at3.clone(), b2.clone()]);
        check(|_, v| v[0].matmul(v[1].t()), &[a2.clone(), bt3.clone()]);
        // A transpose read by matmul and by another op.
        check(
            |_, v| v[0].matmul(v[1].t()) + v[1].t().sum(),
            &[a2.clone(), bt.clone()],
        );
        // A double transpose is the original.
        check(|_, v| v[0].matmul(v[1].t().t()), &[a2.clone(), b2.clone()]);
    }
}

#[test]
fn addmm_adds_a_broadcast_value_to_the_product() {
    let mut r = rng(15);
    for _ in 0..TRIALS {
        let (m, k, n) = (
            r.random_range(1..=4),
            r.random_range(1..=5),
            r.random_range(1..=4),
        );
        let a = uniform(&[m, k], -1.0, 1.0, &mut r);
        let bt = uniform(&[n, k], -1.0, 1.0, &mut r);
        let addend = broadcastable_to(&[m, n], &mut r);
        let c = uniform(&addend, -1.0, 1.0, &mut r);
        check(
            |_, v| v[2].addmm(v[0], v[1].t()),
            &[a.clone(), bt.clone(), c.clone()],
        );
        // The same value as adding a matmul, to the last bit of a sum computed the same way.
        let tape = Tape::<f64>::new();
        let (a, bt, c) = (tape.var(a), tape.var(bt), tape.var(c));
        let fused = c.addmm(a, bt.t()).value();
        let composed = (c + a.matmul(bt.t())).value();
        assert_close(&fused, &composed, 1e-15);
    }
}

/// The LSTM and GRU element-wise halves as the composed equations of REFERENCE.md.
fn lstm_composed<'t>(gates: Var<'t, f64>, c: Var<'t, f64>) -> (Var<'t, f64>, Var<'t, f64>) {
    let g = gates.chunk(4, 1);
    let c = g[1].sigmoid() * c + g[0].sigmoid() * g[2].tanh();
    (g[3].sigmoid() * c.tanh(), c)
}

fn gru_composed<'t>(xp: Var<'t, f64>, hp: Var<'t, f64>, h: Var<'t, f64>) -> Var<'t, f64> {
    let (x, y) = (xp.chunk(3, 1), hp.chunk(3, 1));
    let r = (x[0] + y[0]).sigmoid();
    let z = (x[1] + y[1]).sigmoid();
    let n = (x[2] + r * y[2]).tanh();
    (1.0 - z) * n + z * h
}

#[test]
fn fused_lstm_cell_checks_and_equals_the_composed_step() {
    let mut r = rng(16);
    for _ in 0..TRIALS {
        let (b, h) = (r.random_range(1..=3), r.random_range(1..=4));
        let gates = uniform(&[b, 4 * h], -2.0, 2.0, &mut r);
        let c = uniform(&[b, h], -1.0, 1.0, &mut r);
        // Both outputs reach the loss, each with its own weight; and each alone.
        check(
            |_, v| {
                let (h, c) = v[0].lstm_cell(v[1]);
                h.sum() + (c * c).sum()
            },
            &[gates.clone(), c.clone()],
        );
        check(|_, v| v[0].lstm_cell(v[1]).0, &[gates.clone(), c.clone()]);
        check(|_, v| v[0].lstm_cell(v[1]).1, &[gates.clone(), c.clone()]);
        // Two steps chained, c' feeding the next step as in a layer.
        check(
            |_, v| {
                let (h1, c1) = v[0].lstm_cell(v[1]);
                let (h2, _) = (v[0] * 0.5).lstm_cell(c1);
                h1 * h2
            },
            &[gates.clone(), c.clone()],
        );
        let tape = Tape::<f64>::new();
        let (g, c) = (tape.var(gates), tape.var(c));
        let ((h1, c1), (h2, c2)) = (g.lstm_cell(c), lstm_composed(g, c));
        assert_close(&h1.value(), &h2.value(), 1e-15);
        assert_close(&c1.value(), &c2.value(), 1e-15);
        let fused = (h1.sum() + (c1 * c1).sum()).backward();
        let composed = (h2.sum() + (c2 * c2).sum()).backward();
        assert_close(&fused[g], &composed[g], 1e-14);
        assert_close(&fused[c], &composed[c], 1e-14);
    }
}

#[test]
fn fused_gru_cell_checks_and_equals_the_composed_step() {
    let mut r = rng(17);
    for _ in 0..TRIALS {
        let (b, h) = (r.random_range(1..=3), r.random_range(1..=4));
        let xp = uniform(&[b, 3 * h], -2.0, 2.0, &mut r);
        let hp = uniform(&[b, 3 * h], -2.0, 2.0, &mut r);
        let h0 = uniform(&[b, h], -1.0, 1.0, &mut r);
        check(
            |_, v| v[0].gru_cell(v[1], v[2]),
            &[xp.clone(), hp.clone(), h0.clone()],
        );
        let tape = Tape::<f64>::new();
        let (x, y, h) = (tape.var(xp), tape.var(hp), tape.var(h0));
        let (fused, composed) = (x.gru_cell(y, h), gru_composed(x, y, h));
        assert_close(&fused.value(), &composed.value(), 1e-15);
        let (gf, gc) = (
            (fused * fused).sum().backward(),
            (composed * composed).sum().backward(),
        );
        for v in [x, y, h] {
            assert_close(&gf[v], &gc[v], 1e-14);
        }
    }
}

#[test]
fn reductions_sum_mean_max() {
    let mut r = rng(6);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let x = uniform(&s, -1.0, 1.0, &mut r);
        check(|_, v| v[0].sum(), &[x.clone()]);
        check(|_, v| v[0].mean(), &[x.clone()]);
        for axis in 0..s.len() {
            for keepdim in [false, true] {
                check(|_, v| v[0].sum_axis(axis, keepdim), &[x.clone()]);
                check(|_, v| v[0].mean_axis(axis, keepdim), &[x.clone()]);
                check(|_, v| v[0].max_axis(axis, keepdim), &[x.clone()]);
            }
        }
        check(|_, v| v[0].sum_axis(-1, false), &[x.clone()]);
    }
}

#[test]
fn shape_ops_reshape_permute_narrow() {
    let mut r = rng(7);
    for _ in 0..TRIALS {
        let s = [
            r.random_range(1..=3),
            r.random_range(2..=4),
            r.random_range(1..=3),
        ];
        let x = uniform(&s, -1.0, 1.0, &mut r);
        let w = uniform(&s, -1.0, 1.0, &mut r);
        // Weighting by w makes every output element's gradient distinct.
        check(
            |t, v| v[0].reshape(&[s[0] * s[1], s[2]]) * t.constant(w.reshape(&[s[0] * s[1], s[2]])),
            &[x.clone()],
        );
        check(|_, v| v[0].flatten().unsqueeze(0).squeeze(0), &[x.clone()]);
        check(|_, v| v[0].permute(&[2, 0, 1]), &[x.clone()]);
        check(|_, v| v[0].transpose(0, 2), &[x.clone()]);
        check(|_, v| v[0].transpose(1, 2) * 2.0, &[x.clone()]);
        check(|_, v| v[0].t().exp(), &[x.clone()]);
        let start = r.random_range(0..s[1]);
        let len = r.random_range(1..=s[1] - start);
        check(|_, v| v[0].narrow(1, start, len), &[x.clone()]);
        check(|_, v| v[0].narrow(-1, 0, 1), &[x.clone()]);
    }
}

#[test]
fn concat_stack_chunk_split() {
    let mut r = rng(8);
    for _ in 0..TRIALS {
        let s = [r.random_range(1..=3), r.random_range(1..=4)];
        let x = uniform(&s, -1.0, 1.0, &mut r);
        let y = uniform(&[s[0], 3], -1.0, 1.0, &mut r);
        let z = uniform(&s, -1.0, 1.0, &mut r);
        check(|_, v| concat(&[v[0], v[1]], 1), &[x.clone(), y.clone()]);
        check(
            |_, v| concat(&[v[0], v[1], v[0]], -1),
            &[x.clone(), y.clone()],
        );
        check(|_, v| concat(&[v[0], v[1]], 0), &[x.clone(), z.clone()]);
        for axis in 0..=2 {
            check(|_, v| stack(&[v[0], v[1]], axis), &[x.clone(), z.clone()]);
        }
        check(|_, v| v[0].chunk(2, 1)[0] * 3.0, &[y.clone()]);
        check(|_, v| v[0].chunk(2, 1)[1].exp(), &[y.clone()]);
        check(
            |_, v| {
                let p = v[0].split(2, 1);
                concat(&[p[1], p[0]], 1)
            },
            &[y.clone()],
        );
    }
}

#[test]
fn index_select_scatters_into_repeated_rows() {
    let mut r = rng(9);
    for _ in 0..TRIALS {
        let rows = r.random_range(2..=6);
        let x = uniform(&[rows, 3], -1.0, 1.0, &mut r);
        let idx: Vec<usize> = (0..5).map(|_| r.random_range(0..rows)).collect();
        check(
            |_, v| v[0].index_select(&idx) * v[0].index_select(&idx),
            &[x.clone()],
        );
        let x3 = uniform(&[rows, 2, 2], -1.0, 1.0, &mut r);
        check(|_, v| v[0].index_select(&[rows - 1, 0, rows - 1]), &[x3]);
    }
}

#[test]
fn softmax_and_log_softmax_along_every_axis() {
    let mut r = rng(10);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let x = uniform(&s, -3.0, 3.0, &mut r);
        for axis in 0..s.len() {
            check(|_, v| v[0].softmax(axis), &[x.clone()]);
            check(|_, v| v[0].log_softmax(axis), &[x.clone()]);
        }
    }
}

#[test]
fn cross_entropy_mean_sum_and_ignored_targets() {
    let mut r = rng(11);
    for _ in 0..TRIALS {
        let (n, c) = (r.random_range(1..=5), r.random_range(2..=6));
        let logits = uniform(&[n, c], -2.0, 2.0, &mut r);
        let mut targets: Vec<i64> = (0..n).map(|_| r.random_range(0..c as i64)).collect();
        check(|_, v| v[0].cross_entropy(&targets), &[logits.clone()]);
        let sum = CrossEntropyOptions {
            reduction: Reduction::Sum,
            ..Default::default()
        };
        check(
            |_, v| v[0].cross_entropy_with(&targets, sum.clone()),
            &[logits.clone()],
        );
        targets[0] = -100;
        if n > 1 {
            check(|_, v| v[0].cross_entropy(&targets), &[logits.clone()]);
        }
        let custom = CrossEntropyOptions {
            ignore_index: 1,
            reduction: Reduction::Mean,
            ..Default::default()
        };
        let all_counted: Vec<i64> = targets
            .iter()
            .map(|&t| if t == -100 { 0 } else { t })
            .collect();
        if all_counted.iter().any(|&t| t != 1) {
            check(
                |_, v| v[0].cross_entropy_with(&all_counted, custom.clone()),
                &[logits.clone()],
            );
        }
    }
}

#[test]
fn where_and_masked_fill() {
    let mut r = rng(12);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let cs = broadcastable_to(&s, &mut r);
        let mut cond = Tensor::<f64>::zeros(&cs);
        for c in cond.data_mut() {
            *c = if r.random_bool(0.5) { 1.0 } else { 0.0 };
        }
        let x = uniform(&s, -1.0, 1.0, &mut r);
        let y = uniform(&broadcastable_to(&s, &mut r), -1.0, 1.0, &mut r);
        check(|_, v| v[0].where_cond(&cond, v[1]), &[x.clone(), y.clone()]);
        check(|_, v| v[1].where_cond(&cond, v[0]), &[x.clone(), y.clone()]);
        check(|_, v| v[0].masked_fill(&cond, -7.0), &[x.clone()]);
    }
}

#[test]
fn values_used_more_than_once_accumulate() {
    let mut r = rng(13);
    for _ in 0..TRIALS {
        let s = random_shape(&mut r, 4);
        let x = uniform(&s, -1.0, 1.0, &mut r);
        check(|_, v| v[0] * v[0] + v[0].tanh() * v[0] - v[0], &[x.clone()]);
        check(
            |_, v| {
                let h = v[0].sigmoid();
                h * h * h
            },
            &[x.clone()],
        );
        let m = uniform(&[3, 3], -1.0, 1.0, &mut r);
        check(|_, v| v[0].matmul(v[0]), &[m.clone()]);
        check(|_, v| v[0].matmul(v[0].t()), &[m.clone()]);
        check(|_, v| (v[0].matmul(v[0]) + v[0]).tanh().matmul(v[0]), &[m]);
    }
}

#[test]
fn detach_stops_the_gradient() {
    let x = Tensor::from_vec(vec![0.3, -0.8], &[2]).unwrap();
    // d/dx [x · detach(x)] = detach(x) = x, not 2x.
    let tape = Tape::<f64>::new();
    let v = tape.var(x.clone());
    let g = (v * v.detach()).sum().backward();
    assert_eq!(g[v].data(), &[0.3, -0.8]);
}

#[test]
fn custom_op_gradient_checks() {
    let mut r = rng(14);
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    check(|t, v| t.custom(Cube, &[v[0]]) * v[0], &[x]);
}

/// Large enough that the cells' kernels run in bands of rows on every thread (37 rows, odd, so
/// the bands differ in size), forward and backward (the LSTM's gate gradients, the GRU's dxp and
/// dhp): still equal to the composed step.
#[test]
fn fused_cells_split_across_threads_equal_the_composed_step() {
    let mut r = rng(18);
    let (b, h) = (37, 256);
    let tape = Tape::<f64>::new();
    let gates = tape.var(uniform(&[b, 4 * h], -2.0, 2.0, &mut r));
    let c = tape.var(uniform(&[b, h], -1.0, 1.0, &mut r));
    let ((h1, c1), (h2, c2)) = (gates.lstm_cell(c), lstm_composed(gates, c));
    assert_close(&h1.value(), &h2.value(), 1e-15);
    assert_close(&c1.value(), &c2.value(), 1e-15);
    // Upstream gradients that differ from row to row, so a band reading another's rows shows.
    let w = tape.var(uniform(&[b, h], -1.0, 1.0, &mut r));
    let fused = ((h1 * w).sum() + (c1 * c1).sum()).backward();
    let composed = ((h2 * w).sum() + (c2 * c2).sum()).backward();
    assert_close(&fused[gates], &composed[gates], 1e-14);
    assert_close(&fused[c], &composed[c], 1e-14);
    let xp = tape.var(uniform(&[b, 3 * h], -2.0, 2.0, &mut r));
    let hp = tape.var(uniform(&[b, 3 * h], -2.0, 2.0, &mut r));
    let h0 = tape.var(uniform(&[b, h], -1.0, 1.0, &mut r));
    let (fused_h, composed_h) = (xp.gru_cell(hp, h0), gru_composed(xp, hp, h0));
    assert_close(&fused_h.value(), &composed_h.value(), 1e-15);
    let w = tape.var(uniform(&[b, h], -1.0, 1.0, &mut r));
    let (fused, composed) = (
        (fused_h * w).sum().backward(),
        (composed_h * w).sum().backward(),
    );
    for v in [xp, hp, h0] {
        assert_close(&fused[v], &composed[v], 1e-14);
    }
}
