//! The ops' wider PyTorch rules checked against central finite differences in f64 (ε 1e-6, atol
//! 1e-5, rtol 1e-3), over random shapes: matmul with 1-D operands and broadcast batch
//! dimensions, broadcast_to, index_select along any axis, negative axes, and cross_entropy (class
//! indices or class probabilities) and nll_loss with class weights, ignore_index, label smoothing
//! and every reduction, on inputs [N, C], [C] and [N, C, d1, ...].

// Each check takes its inputs as a fresh slice; `&[x.clone()]` reads better here than from_ref.
#![allow(clippy::cloned_ref_to_slice_refs)]

use crate::support::gradcheck::{assert_close, check};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::{stack, CrossEntropyOptions, Param, Reduction, Tape, Tensor};
use rewind::nn::loss::{nll_loss_with, NllOptions};

const TRIALS: usize = 6;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uniform(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, rng)
}

/// Random batch dimensions (0 to 2 of them, each 1 to 3) and a copy with some set to 1 and some
/// leading ones dropped, so that the two broadcast together.
fn batch_pair(rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let n = rng.random_range(0..=2);
    let full: Vec<usize> = (0..n).map(|_| rng.random_range(1..=3)).collect();
    let drop = rng.random_range(0..=n);
    let other = full[drop..]
        .iter()
        .map(|&d| if rng.random_bool(0.5) { 1 } else { d })
        .collect();
    if rng.random_bool(0.5) {
        (full, other)
    } else {
        (other, full)
    }
}

fn with(batch: &[usize], matrix: &[usize]) -> Vec<usize> {
    batch.iter().chain(matrix).copied().collect()
}

#[test]
fn matmul_with_one_d_operands() {
    let mut r = rng(101);
    for _ in 0..TRIALS {
        let (m, k, n) = (
            r.random_range(1..=4),
            r.random_range(1..=5),
            r.random_range(1..=4),
        );
        let (batch, _) = batch_pair(&mut r);
        let u = uniform(&[k], &mut r);
        let v = uniform(&[k], &mut r);
        let a = uniform(&with(&batch, &[m, k]), &mut r);
        let b = uniform(&with(&batch, &[k, n]), &mut r);
        check(|_, x| x[0].matmul(x[1]), &[u.clone(), v.clone()]);
        check(|_, x| x[0].matmul(x[1]), &[a.clone(), v.clone()]);
        check(|_, x| x[0].matmul(x[1]), &[u.clone(), b.clone()]);
        // The same vector on both sides of a product.
        check(|_, x| x[0].matmul(x[0]), &[u.clone()]);
    }
}

#[test]
fn matmul_broadcasts_batch_dimensions_and_sums_their_gradients() {
    let mut r = rng(102);
    for _ in 0..TRIALS {
        let (m, k, n) = (
            r.random_range(1..=3),
            r.random_range(1..=4),
            r.random_range(1..=3),
        );
        let (ba, bb) = batch_pair(&mut r);
        let a = uniform(&with(&ba, &[m, k]), &mut r);
        let b = uniform(&with(&bb, &[k, n]), &mut r);
        check(|_, x| x[0].matmul(x[1]), &[a.clone(), b.clone()]);
        check(
            |_, x| x[1].transpose(-1, -2).matmul(x[0].transpose(-2, -1)),
            &[a.clone(), b.clone()],
        );
    }
    // The example: [2, 1, 3, 4]·[5, 4, 6] → [2, 5, 3, 6].
    let a = uniform(&[2, 1, 3, 4], &mut r);
    let b = uniform(&[5, 4, 6], &mut r);
    check(|_, x| x[0].matmul(x[1]), &[a, b]);
}

#[test]
fn matmul_reads_a_pending_transpose_beside_a_one_d_operand() {
    let mut r = rng(103);
    for _ in 0..TRIALS {
        let (b, m, k) = (
            r.random_range(1..=3),
            r.random_range(1..=4),
            r.random_range(1..=5),
        );
        let wt = uniform(&[k, m], &mut r);
        let wt3 = uniform(&[b, k, m], &mut r);
        let v = uniform(&[k], &mut r);
        let u = uniform(&[m], &mut r);
        check(|_, x| x[0].t().matmul(x[1]), &[wt.clone(), v.clone()]);
        check(|_, x| x[0].t().matmul(x[1]), &[wt3.clone(), v.clone()]);
        check(|_, x| x[1].matmul(x[0].t()), &[wt.clone(), u.clone()]);
    }
}

/// A vector times a parameter takes the per-step path (the packed product, the stacked weight
/// gradient) and reads the transposed parameter by stride; its value and gradients are those of
/// the same product on plain leaves.
#[test]
fn vector_times_a_parameter_equals_the_product_on_leaves() {
    let mut r = rng(104);
    for (k, n) in [(3, 5), (7, 2), (16, 33)] {
        let w = uniform(&[n, k], &mut r);
        let v = uniform(&[k], &mut r);
        let p = Param::new(w.clone());
        let tape = Tape::<f64>::new();
        let (x, pw) = (tape.var(v.clone()), tape.param(&p));
        let y = x.matmul(pw.t());
        // The tape holds the vector and the product, never a copy of the transposed weight.
        assert_eq!(tape.stats().bytes, (k + n) * 8);
        let g = (y * y).sum().backward();

        let plain = Tape::<f64>::new();
        let (x2, w2) = (plain.var(v), plain.var(w));
        let y2 = x2.reshape(&[1, k]).matmul(w2.t()).reshape(&[n]);
        let g2 = (y2 * y2).sum().backward();
        assert_eq!(y.shape().as_slice(), &[n]);
        assert_close(&y.value(), &y2.value(), 1e-14);
        assert_close(&g[x], &g2[x2], 1e-14);
        assert_close(&g[&p], &g2[w2], 1e-14);
    }
}

#[test]
fn broadcast_to_sums_the_gradient_over_the_broadcast_axes() {
    let mut r = rng(105);
    for _ in 0..TRIALS {
        let (full, part) = batch_pair(&mut r);
        let (full, part) = (with(&full, &[2, 3]), with(&part, &[1, 3]));
        let x = uniform(&part, &mut r);
        check(|_, v| v[0].broadcast_to(&full), &[x.clone()]);
        // -1 keeps an axis of the input, as PyTorch's `expand`: here every one that is not 1.
        let lead = full.len() - part.len();
        let sizes: Vec<isize> = (0..full.len())
            .map(|d| match d.checked_sub(lead) {
                Some(i) if part[i] != 1 => -1,
                _ => full[d] as isize,
            })
            .collect();
        check(|_, v| v[0].expand(&sizes), &[x.clone()]);
    }
}

#[test]
fn index_select_along_every_axis_with_repeats() {
    let mut r = rng(106);
    for _ in 0..TRIALS {
        let shape = [
            r.random_range(1..=3),
            r.random_range(1..=4),
            r.random_range(1..=3),
        ];
        let x = uniform(&shape, &mut r);
        for axis in -3isize..3 {
            let len = shape[axis.rem_euclid(3) as usize];
            let idx: Vec<usize> = (0..4).map(|_| r.random_range(0..len)).collect();
            check(
                |_, v| v[0].index_select_dim(axis, &idx) * v[0].index_select_dim(axis, &idx),
                &[x.clone()],
            );
        }
        check(
            |_, v| v[0].index_select_dim(1, &[]).sum() + v[0].sum(),
            &[x.clone()],
        );
    }
}

#[test]
fn unsqueeze_and_stack_take_negative_axes_up_to_after_the_last() {
    let mut r = rng(107);
    let x = uniform(&[2, 3], &mut r);
    let y = uniform(&[2, 3], &mut r);
    for axis in -3isize..=2 {
        check(|_, v| v[0].unsqueeze(axis) * 2.0, &[x.clone()]);
        check(
            |_, v| stack(&[v[0], v[1], v[0]], axis),
            &[x.clone(), y.clone()],
        );
    }
    let tape = Tape::<f64>::new();
    let v = tape.constant(x);
    assert_eq!(v.unsqueeze(-1).shape().as_slice(), &[2, 3, 1]);
    assert_eq!(v.unsqueeze(-3).shape().as_slice(), &[1, 2, 3]);
    assert_eq!(stack(&[v, v], -1).shape().as_slice(), &[2, 3, 2]);
    assert_eq!(v.permute(&[-1, 0]).shape().as_slice(), &[3, 2]);
}

/// A random loss configuration: weights or none, an ignore index hit by some rows (never all),
/// a reduction and a label smoothing.
struct LossCase {
    logits: Tensor<f64>,
    targets: Vec<i64>,
    weight: Option<Tensor<f64>>,
    ignore_index: i64,
    reduction: Reduction,
    smoothing: f64,
}

fn loss_case(r: &mut StdRng) -> LossCase {
    let n = r.random_range(1..=5);
    loss_case_of(n, r)
}

/// A loss case of `n` rows, the rest drawn as [`loss_case`] draws it.
fn loss_case_of(n: usize, r: &mut StdRng) -> LossCase {
    let c = r.random_range(2..=6);
    let ignore_index = if r.random_bool(0.5) {
        -100
    } else {
        r.random_range(0..c as i64)
    };
    let mut targets: Vec<i64> = (0..n).map(|_| r.random_range(0..c as i64)).collect();
    for t in targets.iter_mut().skip(1) {
        if r.random_bool(0.3) {
            *t = ignore_index;
        }
    }
    if targets[0] == ignore_index {
        targets[0] = (ignore_index + 1).rem_euclid(c as i64);
    }
    LossCase {
        logits: Tensor::uniform(&[n, c], -2.0, 2.0, r),
        targets,
        weight: r
            .random_bool(0.7)
            .then(|| Tensor::uniform(&[c], 0.2, 2.0, r)),
        ignore_index,
        reduction: [Reduction::Mean, Reduction::Sum, Reduction::None][r.random_range(0..3)],
        smoothing: [0.0, 0.1, 0.5, 1.0][r.random_range(0..4)],
    }
}

/// A loss case over unbatched logits [C] or K-dimensional ones [N, C, d1, ...] (K = 1 or 2), its
/// targets one per entry of the shape without C, flattened; the rest drawn as [`loss_case`]
/// draws it. An unbatched target always counts (an ignored one has a NaN mean).
fn layout_case(r: &mut StdRng) -> LossCase {
    let (batch, extra): (Vec<usize>, Vec<usize>) = if r.random_bool(0.3) {
        (vec![], vec![])
    } else {
        let k = r.random_range(1..=2);
        (
            vec![r.random_range(1..=2)],
            (0..k).map(|_| r.random_range(1..=3)).collect(),
        )
    };
    let n = batch.iter().chain(&extra).product();
    let mut case = loss_case_of(n, r);
    let c = case.logits.shape()[1];
    let shape: Vec<usize> = batch.iter().chain(&[c]).chain(&extra).copied().collect();
    case.logits = case.logits.reshape(&shape);
    case
}

/// Unbatched [C] and K-dimensional [N, C, d1, ...] logits, for every option: the class axis is
/// moved last and the positions flattened into rows, and the gradient finds its way back.
#[test]
fn cross_entropy_and_nll_loss_on_unbatched_and_k_dimensional_inputs() {
    let mut r = rng(114);
    for _ in 0..4 * TRIALS {
        let case = layout_case(&mut r);
        let options = CrossEntropyOptions {
            weight: case.weight.clone(),
            ignore_index: case.ignore_index,
            reduction: case.reduction,
            label_smoothing: case.smoothing,
        };
        let nll = NllOptions {
            weight: case.weight.clone(),
            ignore_index: case.ignore_index,
            reduction: case.reduction,
        };
        let target = Tensor::uniform(case.logits.shape(), 0.0, 1.0, &mut r);
        let probs = CrossEntropyOptions {
            ignore_index: -100,
            ..options.clone()
        };
        let targets = case.targets.clone();
        check(
            |_, v| v[0].cross_entropy_with(&targets, options.clone()),
            &[case.logits.clone()],
        );
        check(
            |_, v| nll_loss_with(v[0], &targets, nll.clone()),
            &[case.logits.clone()],
        );
        check(
            |_, v| v[0].cross_entropy_probs_with(v[1], probs.clone()),
            &[case.logits.clone(), target],
        );
    }
}

/// Cross-entropy over [N, C, d1, ...] is cross-entropy over the rows [N·d1·..., C] that moving
/// the class axis last and flattening gives, the per-position losses reshaped to [N, d1, ...].
#[test]
fn k_dimensional_cross_entropy_is_the_flattened_rows_loss() {
    let mut r = rng(115);
    let (n, c, d) = (2, 4, [3, 2]);
    let logits = Tensor::uniform(&[n, c, d[0], d[1]], -2.0, 2.0, &mut r);
    let targets: Vec<i64> = (0..n * d[0] * d[1])
        .map(|i| {
            if i % 5 == 2 {
                -100
            } else {
                r.random_range(0..c as i64)
            }
        })
        .collect();
    let weight = Tensor::uniform(&[c], 0.2, 2.0, &mut r);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let options = CrossEntropyOptions {
            weight: Some(weight.clone()),
            reduction,
            label_smoothing: 0.3,
            ..Default::default()
        };
        let tape = Tape::<f64>::new();
        let x = tape.var(logits.clone());
        let loss = x.cross_entropy_with(&targets, options.clone());
        let rows = x
            .permute(&[0, 2, 3, 1])
            .reshape(&[n * d[0] * d[1], c])
            .cross_entropy_with(&targets, options);
        let rows = match reduction {
            Reduction::None => rows.reshape(&[n, d[0], d[1]]),
            _ => rows,
        };
        assert_close(&loss.value(), &rows.value(), 1e-15);
        let seed = Tensor::uniform(&loss.shape(), -1.0, 1.0, &mut r);
        assert_close(
            &loss.backward_with(&seed)[x],
            &rows.backward_with(&seed)[x],
            1e-15,
        );
    }
}

#[test]
fn cross_entropy_with_weights_ignore_index_smoothing_and_every_reduction() {
    let mut r = rng(108);
    for _ in 0..4 * TRIALS {
        let case = loss_case(&mut r);
        let options = CrossEntropyOptions {
            weight: case.weight.clone(),
            ignore_index: case.ignore_index,
            reduction: case.reduction,
            label_smoothing: case.smoothing,
        };
        let targets = case.targets.clone();
        check(
            |_, v| v[0].cross_entropy_with(&targets, options.clone()),
            &[case.logits.clone()],
        );
    }
}

/// Cross-entropy with label smoothing ε is (1 - ε)·nll(log_softmax) plus ε/C times the weighted
/// sum of every class's -log p, with the same reduction: the fused op equals that composition.
#[test]
fn smoothed_cross_entropy_equals_its_composition_from_nll() {
    let mut r = rng(109);
    for _ in 0..4 * TRIALS {
        let case = loss_case(&mut r);
        assert_equals_composition(case, &mut r);
    }
}

/// The same with thousands of rows, which the fused op's forward and backward split into bands
/// of rows across the threads.
#[test]
fn smoothed_cross_entropy_in_bands_of_rows_equals_its_composition() {
    let mut r = rng(111);
    for _ in 0..TRIALS {
        let case = loss_case_of(2100, &mut r);
        assert_equals_composition(case, &mut r);
    }
}

fn assert_equals_composition(case: LossCase, r: &mut StdRng) {
    {
        let (n, c) = (case.logits.shape()[0], case.logits.shape()[1]);
        let tape = Tape::<f64>::new();
        let x = tape.var(case.logits.clone());
        let fused = x.cross_entropy_with(
            &case.targets,
            CrossEntropyOptions {
                weight: case.weight.clone(),
                ignore_index: case.ignore_index,
                reduction: case.reduction,
                label_smoothing: case.smoothing,
            },
        );
        let log_p = x.log_softmax(-1);
        let nll = nll_loss_with(
            log_p,
            &case.targets,
            NllOptions {
                weight: case.weight.clone(),
                ignore_index: case.ignore_index,
                reduction: case.reduction,
            },
        );
        // Σ_c w_c (-log p_c) per counted row, reduced as the nll is: a mean divides by the summed
        // weights of the counted targets.
        let w = case
            .weight
            .clone()
            .unwrap_or_else(|| Tensor::full(&[c], 1.0));
        let counted: Vec<f64> = case
            .targets
            .iter()
            .map(|&t| (t != case.ignore_index) as u8 as f64)
            .collect();
        let mask = tape.constant(Tensor::from_vec(counted.clone(), &[n, 1]).unwrap());
        let smooth = -(log_p * tape.constant(w.clone()) * mask).sum_axis(-1, false);
        let smooth = match case.reduction {
            Reduction::None => smooth,
            Reduction::Sum => smooth.sum(),
            Reduction::Mean => {
                let total: f64 = case
                    .targets
                    .iter()
                    .filter(|&&t| t != case.ignore_index)
                    .map(|&t| w.data()[t as usize])
                    .sum();
                smooth.sum() / total
            }
        };
        let eps = case.smoothing;
        let composed = nll * (1.0 - eps) + smooth * (eps / c as f64);
        // Relative to the loss's size: a sum over thousands of rows rounds in another order.
        let size = composed
            .value()
            .data()
            .iter()
            .fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(&fused.value(), &composed.value(), 1e-12 * size);
        let seed = Tensor::uniform(&fused.shape(), -1.0, 1.0, r);
        let g1 = fused.backward_with(&seed);
        let g2 = composed.backward_with(&seed);
        assert_close(&g1[x], &g2[x], 1e-12);
    }
}

/// Class-probability targets: the gradient reaches the logits and the targets, which need not be
/// distributions (PyTorch does not check that either), with weights, smoothing and every
/// reduction.
#[test]
fn cross_entropy_with_class_probability_targets_reaches_logits_and_targets() {
    let mut r = rng(112);
    for _ in 0..4 * TRIALS {
        let case = loss_case(&mut r);
        let target = Tensor::uniform(case.logits.shape(), -0.5, 1.5, &mut r);
        let options = CrossEntropyOptions {
            weight: case.weight.clone(),
            reduction: case.reduction,
            label_smoothing: case.smoothing,
            ..Default::default()
        };
        check(
            |_, v| v[0].cross_entropy_probs_with(v[1], options.clone()),
            &[case.logits.clone(), target],
        );
    }
}

/// One-hot probability targets are the class indices they mark, so the two forms agree, but for
/// a weighted mean: over probabilities PyTorch divides by N, over indices by the targets'
/// summed weights. Both forms are written here by hand from that definition.
#[test]
fn one_hot_probability_targets_equal_class_indices_but_for_the_weighted_mean() {
    let mut r = rng(113);
    for _ in 0..4 * TRIALS {
        let mut case = loss_case(&mut r);
        case.ignore_index = -100;
        let (n, c) = (case.logits.shape()[0], case.logits.shape()[1]);
        let targets: Vec<i64> = (0..n).map(|_| r.random_range(0..c as i64)).collect();
        let one_hot: Vec<f64> = (0..n * c)
            .map(|i| f64::from(u8::from(i % c == targets[i / c] as usize)))
            .collect();
        let tape = Tape::<f64>::new();
        let x = tape.var(case.logits.clone());
        let y = tape.constant(Tensor::from_vec(one_hot, &[n, c]).unwrap());
        let options = CrossEntropyOptions {
            weight: case.weight.clone(),
            reduction: case.reduction,
            label_smoothing: case.smoothing,
            ..Default::default()
        };
        let probs = x.cross_entropy_probs_with(y, options.clone());
        let indices = x.cross_entropy_with(&targets, options);
        let rescale = match (&case.weight, case.reduction) {
            (Some(w), Reduction::Mean) => {
                targets.iter().map(|&t| w.data()[t as usize]).sum::<f64>() / n as f64
            }
            _ => 1.0,
        };
        let expected = indices * rescale;
        let size = expected
            .value()
            .data()
            .iter()
            .fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(&probs.value(), &expected.value(), 1e-12 * size);
        let seed = Tensor::uniform(&probs.shape(), -1.0, 1.0, &mut r);
        assert_close(
            &probs.backward_with(&seed)[x],
            &expected.backward_with(&seed)[x],
            1e-12 * rescale.max(1.0),
        );
    }
}

#[test]
fn nll_loss_with_weights_ignore_index_and_every_reduction() {
    let mut r = rng(110);
    for _ in 0..4 * TRIALS {
        let case = loss_case(&mut r);
        let options = NllOptions {
            weight: case.weight.clone(),
            ignore_index: case.ignore_index,
            reduction: case.reduction,
        };
        let targets = case.targets.clone();
        check(
            |_, v| nll_loss_with(v[0], &targets, options.clone()),
            &[case.logits.clone()],
        );
    }
}
