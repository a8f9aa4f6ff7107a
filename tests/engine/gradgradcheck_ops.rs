//! Every primitive's recorded derivative (`grad_graph`) checked in f64, reached through the public
//! `Var` API: its value against the plain backward pass, and its own derivatives against central
//! finite differences (`gradgradcheck`: ε 1e-6, atol 1e-5, rtol 1e-3). Third derivatives by the
//! same check of a recorded gradient, and in closed form.

// Each check takes its inputs as a fresh slice; `&[x.clone()]` reads better here than from_ref.
#![allow(clippy::cloned_ref_to_slice_refs)]

use crate::support::gradcheck::{
    assert_close, away_from_zero, broadcastable_to, check_second_order as check, random_shape, rng,
    uniform, Cube,
};
use rewind::autograd::{concat, stack, CrossEntropyOptions, Param, Reduction, Tape, Tensor, Var};

#[test]
fn binary_ops_broadcasting_either_way() {
    let mut r = rng(1);
    for _ in 0..3 {
        let s = random_shape(&mut r, 3);
        let b = broadcastable_to(&s, &mut r);
        for (lhs, rhs) in [
            (s.clone(), s.clone()),
            (s.clone(), b.clone()),
            (b.clone(), s.clone()),
        ] {
            let x = uniform(&lhs, -1.0, 1.0, &mut r);
            let y = away_from_zero(&rhs, &mut r);
            let xy = [x.clone(), y.clone()];
            check(|_, v| v[0] + v[1], &xy);
            check(|_, v| v[0] - v[1], &xy);
            check(|_, v| v[0] * v[1], &xy);
            check(|_, v| v[0] / v[1], &xy);
            // A value on both sides, and each op's result read again.
            check(|_, v| v[0] * v[0] / v[1], &xy);
            check(|_, v| (v[0] - v[1]) * (v[0] + v[1]) / (v[1] * v[1]), &xy);
        }
    }
}

#[test]
fn scalar_operands_on_either_side_and_affine() {
    let x = away_from_zero(&[2, 3], &mut rng(2));
    // Each affine form times x, so that its derivative's derivative is not zero.
    check(|_, v| -v[0] * v[0], &[x.clone()]);
    check(|_, v| (v[0] + 2.0) * v[0], &[x.clone()]);
    check(|_, v| (2.0 - v[0]) * v[0], &[x.clone()]);
    check(|_, v| (v[0] - 2.0) * v[0], &[x.clone()]);
    check(|_, v| (3.0 * v[0]) * v[0], &[x.clone()]);
    check(|_, v| (v[0] / 4.0) * v[0], &[x.clone()]);
    check(|_, v| 4.0 / v[0], &[x.clone()]);
    check(|_, v| v[0].affine(-0.5, 0.25).exp(), &[x.clone()]);
    check(|_, v| v[0].affine(-0.5, 0.25), &[x]);
}

#[test]
fn powf_at_several_exponents() {
    let x = uniform(&[2, 3], 0.5, 2.0, &mut rng(3));
    for p in [0.0, 1.0, 2.0, 0.5, -1.0, 3.0, -1.5] {
        check(|_, v| v[0].powf(p), &[x.clone()]);
        check(|_, v| v[0].powf(p) * v[0], &[x.clone()]);
    }
}

#[test]
fn unary_functions() {
    let mut r = rng(4);
    let x = uniform(&[2, 3], -2.0, 2.0, &mut r);
    let pos = uniform(&[2, 3], 0.5, 2.0, &mut r);
    check(|_, v| v[0].exp(), &[x.clone()]);
    check(|_, v| v[0].tanh(), &[x.clone()]);
    check(|_, v| v[0].sigmoid(), &[x.clone()]);
    check(|_, v| v[0].ln(), &[pos.clone()]);
    check(|_, v| v[0].sqrt(), &[pos.clone()]);
    // Each composed with itself: the derivative's derivative reads the output twice.
    check(|_, v| v[0].tanh().tanh(), &[x.clone()]);
    check(|_, v| v[0].sigmoid() * v[0].exp(), &[x.clone()]);
    check(|_, v| v[0].sqrt().ln(), &[pos.clone()]);
}

#[test]
fn relu_and_clamp_away_from_their_kinks() {
    let x = away_from_zero(&[3, 4], &mut rng(5));
    // ±[0.5, 1.5] against bounds at ±0.25 and ±2: both sides of each kink, none on it.
    check(|_, v| v[0].relu(), &[x.clone()]);
    check(|_, v| v[0].relu() * v[0], &[x.clone()]);
    check(|_, v| v[0].clamp(-0.25, 0.25) * v[0], &[x.clone()]);
    check(|_, v| v[0].clamp_min(0.25).powf(2.0), &[x.clone()]);
    check(|_, v| v[0].clamp_max(-0.25).exp(), &[x.clone()]);
    check(|_, v| v[0].clamp(-2.0, 2.0).tanh(), &[x]);
}

/// `v[0]·v[1]`, through which every layout below is checked.
fn mm<'t>(_: &'t Tape<f64>, v: &[Var<'t, f64>]) -> Var<'t, f64> {
    v[0].matmul(v[1])
}

#[test]
fn matmul_in_every_operand_layout() {
    let mut r = rng(6);
    let (b, m, k, n) = (2, 2, 3, 2);
    let mut u = |shape: &[usize]| uniform(shape, -1.0, 1.0, &mut r);
    let (a2, at, b2, bt) = (u(&[m, k]), u(&[k, m]), u(&[k, n]), u(&[n, k]));
    let (a3, at3, b3, bt3) = (u(&[b, m, k]), u(&[b, k, m]), u(&[b, k, n]), u(&[b, n, k]));
    let (row, col) = (u(&[k]), u(&[k]));
    check(mm, &[a2.clone(), b2.clone()]);
    check(|_, v| v[0].matmul(v[1].t()), &[a2.clone(), bt.clone()]);
    check(|_, v| v[0].t().matmul(v[1]), &[at.clone(), b2.clone()]);
    check(|_, v| v[0].t().matmul(v[1].t()), &[at.clone(), bt.clone()]);
    // Batched, a weight shared by every batch entry (either side), and transposed 3-D operands.
    check(mm, &[a3.clone(), b3.clone()]);
    check(mm, &[a3.clone(), b2.clone()]);
    check(mm, &[a2.clone(), b3.clone()]);
    check(
        |_, v| v[0].t().matmul(v[1].t()),
        &[at3.clone(), bt3.clone()],
    );
    check(|_, v| v[0].matmul(v[1].t()), &[a3.clone(), bt.clone()]);
    check(|_, v| v[0].t().matmul(v[1]), &[at3.clone(), b2.clone()]);
    check(|_, v| v[0].matmul(v[1].t()), &[a2.clone(), bt3.clone()]);
    // 1-D operands: a row, a column, a dot product.
    check(mm, &[row.clone(), b2.clone()]);
    check(mm, &[a2.clone(), col.clone()]);
    check(mm, &[row.clone(), col.clone()]);
    check(mm, &[row, b3.clone()]);
    // Broadcast batch axes: [2, 1, m, k]·[3, k, n].
    let a4 = u(&[2, 1, m, k]);
    let b3x = u(&[3, k, n]);
    check(mm, &[a4, b3x]);
    // One value on both sides, and a product read by a nonlinearity.
    let sq = u(&[3, 3]);
    check(|_, v| v[0].matmul(v[0]), &[sq.clone()]);
    check(|_, v| v[0].matmul(v[0].t()).tanh(), &[sq.clone()]);
    check(|_, v| v[0].t().matmul(v[0].tanh()), &[sq]);
    check(|_, v| v[0].matmul(v[1]).tanh().matmul(v[1].t()), &[a3, b2]);
}

#[test]
fn a_transpose_read_by_other_ops_than_matmul() {
    let mut r = rng(7);
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let y = uniform(&[3, 3], -1.0, 1.0, &mut r);
    let x3 = uniform(&[2, 3, 2], -1.0, 1.0, &mut r);
    check(|_, v| v[0].t().tanh(), &[x.clone()]);
    check(|_, v| v[0].t().exp(), &[x3]);
    check(
        |_, v| v[0].matmul(v[1].t()).tanh().sum() + (v[1].t() * v[1]).sum(),
        &[x.clone(), y],
    );
    check(|_, v| v[0].t().t().sigmoid() * v[0], &[x]);
}

#[test]
fn addmm_with_a_broadcast_bias() {
    let mut r = rng(8);
    let (m, k, n) = (3, 2, 2);
    let a = uniform(&[m, k], -1.0, 1.0, &mut r);
    let a3 = uniform(&[2, m, k], -1.0, 1.0, &mut r);
    let wt = uniform(&[n, k], -1.0, 1.0, &mut r);
    for bias in [vec![n], vec![1, n], vec![m, 1], vec![m, n], vec![]] {
        let c = uniform(&bias, -1.0, 1.0, &mut r);
        check(
            |_, v| v[2].addmm(v[0], v[1].t()).tanh(),
            &[a.clone(), wt.clone(), c.clone()],
        );
        check(
            |_, v| v[2].addmm(v[0], v[1].t()),
            &[a3.clone(), wt.clone(), c.clone()],
        );
    }
}

#[test]
fn lstm_cell_both_outputs() {
    let mut r = rng(9);
    let (b, h) = (2, 2);
    let gates = uniform(&[b, 4 * h], -2.0, 2.0, &mut r);
    let c = uniform(&[b, h], -1.0, 1.0, &mut r);
    let gc = [gates, c];
    check(
        |_, v| {
            let (h, c) = v[0].lstm_cell(v[1]);
            stack(&[h, c], 0)
        },
        &gc,
    );
    check(|_, v| v[0].lstm_cell(v[1]).0, &gc);
    check(|_, v| v[0].lstm_cell(v[1]).1, &gc);
    // Two steps, c' feeding the next, h' read by the product with the second step's h'.
    check(
        |_, v| {
            let (h1, c1) = v[0].lstm_cell(v[1]);
            let (h2, _) = (v[0] * 0.5).lstm_cell(c1);
            h1 * h2
        },
        &gc,
    );
}

#[test]
fn gru_cell() {
    let mut r = rng(10);
    let (b, h) = (2, 2);
    let xp = uniform(&[b, 3 * h], -2.0, 2.0, &mut r);
    let hp = uniform(&[b, 3 * h], -2.0, 2.0, &mut r);
    let h0 = uniform(&[b, h], -1.0, 1.0, &mut r);
    let inputs = [xp, hp, h0];
    check(|_, v| v[0].gru_cell(v[1], v[2]), &inputs);
    check(|_, v| v[0].gru_cell(v[1], v[2]) * v[2], &inputs);
}

#[test]
fn sum_mean_and_max_all_and_by_axis() {
    let x = uniform(&[2, 3, 2], -1.0, 1.0, &mut rng(11));
    // A nonlinearity after each, so that the reduction's own derivative is read twice.
    check(|_, v| v[0].sum().tanh(), &[x.clone()]);
    check(|_, v| v[0].mean().tanh(), &[x.clone()]);
    for axis in 0..3 {
        for keepdim in [false, true] {
            check(|_, v| v[0].sum_axis(axis, keepdim).tanh(), &[x.clone()]);
            check(|_, v| v[0].mean_axis(axis, keepdim).tanh(), &[x.clone()]);
            // Uniform values are distinct: no ties for the maximum.
            check(|_, v| v[0].max_axis(axis, keepdim).powf(3.0), &[x.clone()]);
        }
    }
}

#[test]
fn reshape_broadcast_to_permute_transpose() {
    let mut r = rng(12);
    let x = uniform(&[2, 3, 2], -1.0, 1.0, &mut r);
    check(|_, v| v[0].reshape(&[3, 4]).tanh(), &[x.clone()]);
    check(|_, v| v[0].flatten().unsqueeze(0).tanh(), &[x.clone()]);
    check(|_, v| v[0].permute(&[2, 0, 1]).tanh(), &[x.clone()]);
    check(|_, v| v[0].transpose(0, 2).exp(), &[x.clone()]);
    check(|_, v| v[0].transpose(1, 2).tanh() * v[0].t(), &[x]);
    let col = uniform(&[3, 1], -1.0, 1.0, &mut r);
    let row = uniform(&[4], -1.0, 1.0, &mut r);
    check(|_, v| v[0].broadcast_to(&[2, 3, 4]).tanh(), &[col]);
    check(|_, v| v[0].broadcast_to(&[3, 4]).exp(), &[row.clone()]);
    check(|_, v| v[0].expand(&[2, 3, -1]).tanh(), &[row]);
}

#[test]
fn narrow_at_the_start_middle_end_and_whole() {
    let x = uniform(&[2, 5], -1.0, 1.0, &mut rng(13));
    for (start, len) in [(0, 2), (1, 3), (3, 2), (0, 5)] {
        check(|_, v| v[0].narrow(1, start, len).exp(), &[x.clone()]);
    }
    check(|_, v| v[0].narrow(0, 1, 1).tanh(), &[x.clone()]);
    check(
        |_, v| {
            let p = v[0].chunk(2, 1);
            p[0].narrow(1, 1, 2) * p[1]
        },
        &[x],
    );
}

#[test]
fn concat_and_stack() {
    let mut r = rng(14);
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let y = uniform(&[2, 2], -1.0, 1.0, &mut r);
    let z = uniform(&[2, 3], -1.0, 1.0, &mut r);
    check(
        |_, v| concat(&[v[0], v[1]], 1).tanh(),
        &[x.clone(), y.clone()],
    );
    check(
        |_, v| concat(&[v[0], v[1], v[0]], -1).exp(),
        &[x.clone(), y.clone()],
    );
    check(
        |_, v| concat(&[v[0], v[1]], 0) * concat(&[v[1], v[0]], 0),
        &[x.clone(), z.clone()],
    );
    for axis in 0..=2 {
        check(
            |_, v| stack(&[v[0], v[1]], axis).tanh(),
            &[x.clone(), z.clone()],
        );
    }
}

#[test]
fn index_select_with_repeated_indices() {
    let mut r = rng(15);
    let x = uniform(&[4, 3], -1.0, 1.0, &mut r);
    let x3 = uniform(&[2, 4, 2], -1.0, 1.0, &mut r);
    let idx = [3, 0, 3, 1, 3];
    check(
        |_, v| v[0].index_select(&idx) * v[0].index_select(&idx),
        &[x.clone()],
    );
    check(|_, v| v[0].index_select(&[1, 1]).tanh(), &[x.clone()]);
    check(
        |_, v| v[0].index_select_dim(1, &[2, 0, 2]).exp(),
        &[x.clone()],
    );
    check(
        |_, v| v[0].index_select_dim(1, &idx).powf(3.0),
        &[x3.clone()],
    );
    check(|_, v| v[0].index_select_dim(-1, &[1, 1, 0]).tanh(), &[x3]);
    // Its recorded derivative is an IndexAdd, whose own recorded derivative is an index_select:
    // the third derivative.
    check(
        |_, v| v[0].index_select(&idx).powf(3.0).sum().grad_graph(&[v[0]])[0],
        &[x],
    );
}

#[test]
fn softmax_and_log_softmax_along_every_axis() {
    let x = uniform(&[2, 3, 2], -2.0, 2.0, &mut rng(16));
    for axis in 0..3 {
        check(|_, v| v[0].softmax(axis), &[x.clone()]);
        check(|_, v| v[0].log_softmax(axis), &[x.clone()]);
    }
    check(|_, v| v[0].softmax(-1) * v[0], &[x.clone()]);
    check(|_, v| v[0].log_softmax(1).exp().log_softmax(0), &[x]);
}

#[test]
fn cross_entropy_with_weights_smoothing_ignore_index_and_each_reduction() {
    let mut r = rng(17);
    let (n, c) = (4, 3);
    let logits = uniform(&[n, c], -2.0, 2.0, &mut r);
    let targets: Vec<i64> = vec![2, 0, 1, 2];
    let with_ignored: Vec<i64> = vec![2, -100, 1, 0];
    let weight = Tensor::from_vec(vec![0.5, 2.0, 1.25], &[c]).unwrap();
    check(|_, v| v[0].cross_entropy(&targets), &[logits.clone()]);
    check(|_, v| v[0].cross_entropy(&with_ignored), &[logits.clone()]);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let plain = CrossEntropyOptions {
            reduction,
            ..Default::default()
        };
        let weighted = CrossEntropyOptions {
            weight: Some(weight.clone()),
            ..plain.clone()
        };
        let smoothed = CrossEntropyOptions {
            label_smoothing: 0.2,
            ..plain.clone()
        };
        // Target 1 ignored, with weights and smoothing.
        let everything = CrossEntropyOptions {
            weight: Some(weight.clone()),
            label_smoothing: 0.1,
            ignore_index: 1,
            reduction,
        };
        for options in [plain, weighted, smoothed, everything] {
            check(
                |_, v| v[0].cross_entropy_with(&targets, options.clone()),
                &[logits.clone()],
            );
        }
    }
    // Logits that are themselves computed, read again after the loss.
    check(
        |_, v| v[0].tanh().cross_entropy(&targets) * v[0].sum(),
        &[logits],
    );
}

/// Probability targets: a composition of log_softmax, products and sums, so its recorded
/// derivative is theirs; second derivatives with respect to the logits, the targets and across.
#[test]
fn cross_entropy_with_class_probability_targets() {
    let mut r = rng(23);
    let logits = uniform(&[4, 3], -2.0, 2.0, &mut r);
    let target = uniform(&[4, 3], 0.0, 1.0, &mut r);
    let weight = Tensor::from_vec(vec![0.5, 2.0, 1.25], &[3]).unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let options = CrossEntropyOptions {
            weight: Some(weight.clone()),
            label_smoothing: 0.2,
            reduction,
            ..Default::default()
        };
        check(
            |_, v| v[0].cross_entropy_probs_with(v[1], options.clone()),
            &[logits.clone(), target.clone()],
        );
    }
    check(
        |_, v| v[0].cross_entropy_probs(v[1].softmax(-1)),
        &[logits, target],
    );
}

/// Unbatched [C] and K-dimensional [N, C, d] inputs reach the [N, C] loss through reshape and
/// permute, whose recorded derivatives carry the second order through.
#[test]
fn cross_entropy_on_unbatched_and_k_dimensional_logits() {
    let mut r = rng(24);
    let weight = Tensor::from_vec(vec![0.5, 2.0, 1.25], &[3]).unwrap();
    let one = uniform(&[3], -2.0, 2.0, &mut r);
    let kdim = uniform(&[2, 3, 2], -2.0, 2.0, &mut r);
    let probs = uniform(&[2, 3, 2], 0.0, 1.0, &mut r);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let options = CrossEntropyOptions {
            weight: Some(weight.clone()),
            label_smoothing: 0.2,
            reduction,
            ..Default::default()
        };
        check(
            |_, v| v[0].cross_entropy_with(&[1], options.clone()),
            &[one.clone()],
        );
        check(
            |_, v| v[0].cross_entropy_with(&[2, -100, 0, 1], options.clone()),
            &[kdim.clone()],
        );
        check(
            |_, v| v[0].cross_entropy_probs_with(v[1], options.clone()),
            &[kdim.clone(), probs.clone()],
        );
    }
}

#[test]
fn where_cond_and_masked_fill() {
    let mut r = rng(18);
    let cond = Tensor::from_vec(vec![1.0, 0.0, 1.0], &[1, 3]).unwrap();
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let y = uniform(&[3], -1.0, 1.0, &mut r);
    let xy = [x.clone(), y.clone()];
    check(|_, v| v[0].where_cond(&cond, v[1]), &xy);
    check(|_, v| v[1].where_cond(&cond, v[0]), &xy);
    check(|_, v| (v[0] * v[0]).where_cond(&cond, v[1].exp()), &xy);
    check(|_, v| v[0].masked_fill(&cond, -7.0).tanh(), &[x]);
}

#[test]
fn detach_and_scale_grad_reach_every_order() {
    // Not a finite-difference check: the forward pass cannot see either. With t = tanh x,
    // f = Σ tanh(scale_grad(x, s)) has ∂f/∂x = s(1 - t²) and ∂²f/∂x² = s²·(-2t(1 - t²)): the
    // recorded gradient is itself scaled on its way back to x. f = Σ x²·detach(x) has
    // ∂f/∂x = 2x·x and ∂²f/∂x² = 2x, the detached factor a constant; f = Σ detach(x)·x has
    // ∂f/∂x = x, a constant, and ∂²f/∂x² = 0.
    let xs = [0.3, -1.1, 0.8];
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(xs.to_vec(), &[3]).unwrap());
    let s = 0.25;
    let dx = x.scale_grad(s).tanh().sum().grad_graph(&[x])[0];
    let d2x = dx.sum().grad_graph(&[x])[0];
    let stopped = (x * x * x.detach()).sum().grad_graph(&[x])[0];
    let stopped2 = stopped.sum().grad_graph(&[x])[0];
    let none = (x.scale_grad(0.0) * x).sum().grad_graph(&[x])[0];
    let none2 = none.sum().grad_graph(&[x])[0];
    for (i, &x) in xs.iter().enumerate() {
        let t = x.tanh();
        assert!((dx.value().data()[i] - s * (1.0 - t * t)).abs() < 1e-15);
        assert!((d2x.value().data()[i] - s * s * (-2.0 * t * (1.0 - t * t))).abs() < 1e-15);
        assert!((stopped.value().data()[i] - 2.0 * x * x).abs() < 1e-15);
        assert!((stopped2.value().data()[i] - 2.0 * x).abs() < 1e-15);
        assert_eq!(none.value().data()[i], x);
        assert_eq!(none2.value().data()[i], 0.0);
    }
}

#[test]
fn checkpoint_with_params_and_a_nested_checkpoint() {
    let mut r = rng(19);
    let w = Param::new(uniform(&[3, 3], -1.0, 1.0, &mut r));
    let b = Param::new(uniform(&[3], -0.5, 0.5, &mut r));
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let h = uniform(&[2, 3], -1.0, 1.0, &mut r);
    check(
        |t, v| {
            t.checkpoint(&[v[0], v[1]], |inner, v| {
                let a = (v[0].matmul(inner.param(&w)) + inner.param(&b)).tanh();
                let y = inner.checkpoint(&[a, v[1]], |inner2, u| {
                    vec![(u[0] * u[1]).matmul(inner2.param(&w).t()).sigmoid()]
                })[0];
                vec![y * v[1], a]
            })
            .into_iter()
            .map(|o| o.sum())
            .reduce(|p, q| p * q)
            .unwrap()
        },
        &[x, h],
    );
}

#[test]
fn checkpointed_hvp_equals_the_hvp_without_the_checkpoint_params_included() {
    // gradgradcheck perturbs only the inputs; the parameters' second derivatives are checked
    // here, against the same function recorded without checkpoints.
    let mut r = rng(20);
    let w = Param::new(uniform(&[3, 3], -1.0, 1.0, &mut r));
    let b = Param::new(uniform(&[3], -0.5, 0.5, &mut r));
    let x = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let dirs = [
        uniform(&[2, 3], -1.0, 1.0, &mut r),
        uniform(&[3, 3], -1.0, 1.0, &mut r),
        uniform(&[3], -1.0, 1.0, &mut r),
    ];
    fn step<'s>(
        tape: &'s Tape<f64>,
        x: Var<'s, f64>,
        w: &Param<f64>,
        b: &Param<f64>,
    ) -> Var<'s, f64> {
        (x.matmul(tape.param(w)) + tape.param(b)).tanh()
    }
    let hvp = |checkpointed: bool| {
        let tape = Tape::<f64>::new();
        let x = tape.var(x.clone());
        let (pw, pb) = (tape.param(&w), tape.param(&b));
        // W passed in as an input and read as a parameter inside, by the nested region.
        let y = if checkpointed {
            tape.checkpoint(&[x, pw], |inner, v| {
                let a = (v[0].matmul(v[1]) + inner.param(&b)).tanh();
                vec![inner.checkpoint(&[a], |inner2, u| vec![step(inner2, u[0], &w, &b)])[0]]
            })[0]
        } else {
            step(&tape, step(&tape, x, &w, &b), &w, &b)
        };
        (y * y).sum().hvp(&[x, pw, pb], &dirs)
    };
    let (plain, recomputed) = (hvp(false), hvp(true));
    for (p, q) in plain.iter().zip(&recomputed) {
        assert!(p.data().iter().any(|&v| v.abs() > 1e-3));
        assert_close(p, q, 1e-14);
    }
}

#[test]
#[should_panic(expected = "grad_graph: the custom op `cube`")]
fn grad_graph_through_a_custom_op_panics_naming_it() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap());
    tape.custom(Cube, &[x.tanh()]).sum().grad_graph(&[x]);
}

#[test]
fn backward_over_a_recorded_gradient_equals_hvp() {
    // f = Σ_i exp(x_i)·x_i: H = diag(e^x (x + 2)).
    let xs = Tensor::from_vec(vec![0.4, -0.7, 1.2], &[3]).unwrap();
    let v = Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]).unwrap();
    let tape = Tape::<f64>::new();
    let x = tape.var(xs.clone());
    let f = (x.exp() * x).sum();
    let g = f.grad_graph(&[x])[0];
    let by_backward = (g * tape.constant(v.clone())).sum().backward()[x].clone();
    let by_hvp = f.hvp(&[x], &[v.clone()]).remove(0);
    let expected: Vec<f64> = (0..3)
        .map(|i| xs.data()[i].exp() * (xs.data()[i] + 2.0) * v.data()[i])
        .collect();
    assert_close(&by_backward, &by_hvp, 1e-15);
    assert_close(&by_hvp, &Tensor::from_vec(expected, &[3]).unwrap(), 1e-14);
}

#[test]
fn third_derivatives_in_closed_form() {
    // tanh: t' = 1 - t², t'' = -2t(1 - t²), t''' = -2(1 - t²)(1 - 3t²).
    let xs = [0.3, -1.1, 0.8];
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(xs.to_vec(), &[3]).unwrap());
    let d1 = x.tanh().sum().grad_graph(&[x])[0];
    let d2 = d1.sum().grad_graph(&[x])[0];
    let d3 = d2.sum().grad_graph(&[x])[0];
    for (i, &x) in xs.iter().enumerate() {
        let t = x.tanh();
        assert!((d1.value().data()[i] - (1.0 - t * t)).abs() < 1e-15);
        assert!((d2.value().data()[i] + 2.0 * t * (1.0 - t * t)).abs() < 1e-15);
        assert!((d3.value().data()[i] + 2.0 * (1.0 - t * t) * (1.0 - 3.0 * t * t)).abs() < 1e-14);
    }
    // f = x²·y³: f_x = 2xy³, f_xy = 6xy², f_xyy = 12xy, and f_xyx = 6y².
    let (a, b) = (0.7, -1.3);
    let x = tape.var(Tensor::scalar(a));
    let y = tape.var(Tensor::scalar(b));
    let f = x.powf(2.0) * y.powf(3.0);
    let fx = f.grad_graph(&[x])[0];
    let fxy = fx.grad_graph(&[y])[0];
    let [fxyx, fxyy] = fxy.grad_graph(&[x, y])[..] else {
        unreachable!()
    };
    assert!((fx.item() - 2.0 * a * b.powi(3)).abs() < 1e-14);
    assert!((fxy.item() - 6.0 * a * b * b).abs() < 1e-14);
    assert!((fxyy.item() - 12.0 * a * b).abs() < 1e-14);
    assert!((fxyx.item() - 6.0 * b * b).abs() < 1e-14);
}

#[test]
fn third_derivatives_checked_through_recorded_gradients() {
    // gradgradcheck of a function that is itself a recorded gradient: its third derivatives
    // against finite differences of its second.
    let mut r = rng(21);
    let a = uniform(&[2, 3], -1.0, 1.0, &mut r);
    let w = uniform(&[3, 2], -1.0, 1.0, &mut r);
    let aw = [a.clone(), w.clone()];
    check(
        |_, v| v[0].matmul(v[1]).tanh().sum().grad_graph(&[v[0], v[1]])[1],
        &aw,
    );
    check(
        |_, v| {
            v[0].matmul(v[1])
                .softmax(1)
                .powf(2.0)
                .sum()
                .grad_graph(&[v[0]])[0]
        },
        &aw,
    );
    check(
        |_, v| v[0].matmul(v[1]).cross_entropy(&[1, 0]).grad_graph(&[v[1]])[0],
        &aw,
    );
    check(
        |_, v| {
            v[0].log_softmax(0)
                .max_axis(1, false)
                .sum()
                .grad_graph(&[v[0]])[0]
        },
        &[a.clone()],
    );
    check(
        |_, v| {
            (v[0].sigmoid().sqrt().ln() / v[0].exp())
                .sum()
                .grad_graph(&[v[0]])[0]
        },
        &[a.clone()],
    );
    let gates = uniform(&[2, 8], -2.0, 2.0, &mut r);
    let c = uniform(&[2, 2], -1.0, 1.0, &mut r);
    check(
        |_, v| {
            let (h, c) = v[0].lstm_cell(v[1]);
            (h * c).sum().grad_graph(&[v[0], v[1]])[0]
        },
        &[gates, c],
    );
    let xp = uniform(&[1, 6], -2.0, 2.0, &mut r);
    let hp = uniform(&[1, 6], -2.0, 2.0, &mut r);
    let h = uniform(&[1, 2], -1.0, 1.0, &mut r);
    check(
        |_, v| {
            v[0].gru_cell(v[1], v[2])
                .powf(2.0)
                .sum()
                .grad_graph(&[v[1]])[0]
        },
        &[xp, hp, h],
    );
}

#[test]
fn checkpoint_given_one_value_twice() {
    let x = uniform(&[2, 2], -1.0, 1.0, &mut rng(22));
    check(
        |t, v| t.checkpoint(&[v[0], v[0]], |_, u| vec![(u[0] * u[1]).tanh()])[0],
        &[x],
    );
}
