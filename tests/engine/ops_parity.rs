//! rewind's ops against PyTorch where they follow its wider rules: matmul with 1-D operands and
//! broadcast batch dimensions, broadcast_to and expand (-1 keeps an axis), index_select along any
//! axis, negative axes, and cross_entropy (against class indices or class probabilities) and
//! nll_loss with class weights, ignore_index, label smoothing and every reduction, on inputs
//! [N, C], [C] and [N, C, d1, ...].
//!
//! The data is what `scripts/golden_ops.py` wrote (torch 2.15) into
//! tests/data/ops_golden.safetensors, every case in float64 and in float32. Each output and the
//! gradient of L = Σ_k Σ out_k ⊙ proj_k with respect to each input must match, measured per
//! tensor as max |ours - torch| / max |torch|: to 1e-12 in f64, 1e-5 in f32. Every case in the
//! file is run, so a case added to the script fails here until it is given its op.

use std::collections::BTreeSet;

use crate::support::golden;
use crate::support::panics::panic_of;
use rewind::autograd::io::TensorFile;
use rewind::autograd::{concat, stack, CrossEntropyOptions, Float, Reduction, Tape, Tensor, Var};
use rewind::nn::loss::{self, nll_loss_with, NllOptions};

struct Golden<F: Float> {
    file: TensorFile<F>,
    dtype: &'static str,
    tolerance: f64,
}

impl<F: Float> Golden<F> {
    fn load(dtype: &'static str, tolerance: f64) -> Self {
        Golden {
            file: golden::load("ops_golden.safetensors", "golden_ops.py"),
            dtype,
            tolerance,
        }
    }

    fn get(&self, case: &str, what: &str) -> Tensor<F> {
        golden::tensor(&self.file, &format!("{}.{case}.{what}", self.dtype))
    }

    fn has(&self, case: &str, what: &str) -> bool {
        let key = format!("{}.{case}.{what}", self.dtype);
        self.file.tensors.contains_key(&key)
    }

    /// The names of this dtype's cases of one family (`matmul`, `axes`, ...): every case has an
    /// input 0.
    fn cases(&self, family: &str) -> BTreeSet<String> {
        let dtype = format!("{}.", self.dtype);
        let cases: BTreeSet<String> = self
            .file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&dtype)?.strip_suffix(".in.0"))
            .filter(|case| case.starts_with(&format!("{family}.")))
            .map(str::to_string)
            .collect();
        assert!(!cases.is_empty(), "golden data has no {family} cases");
        cases
    }

    fn count(&self, case: &str, what: &str) -> usize {
        (0..)
            .take_while(|k| self.has(case, &format!("{what}.{k}")))
            .count()
    }

    #[track_caller]
    fn compare(&self, case: &str, what: &str, ours: &Tensor<F>) -> f64 {
        let theirs = self.get(case, what);
        assert_eq!(
            ours.shape(),
            theirs.shape(),
            "{} {case}.{what}: shapes differ",
            self.dtype
        );
        let scale = theirs
            .data()
            .iter()
            .fold(0f64, |m, &v| m.max(v.to_f64().abs()));
        let diff = ours
            .data()
            .iter()
            .zip(theirs.data())
            .fold(0f64, |m, (&a, &b)| m.max((a.to_f64() - b.to_f64()).abs()));
        let err = diff / scale.max(1e-300);
        assert!(
            err <= self.tolerance,
            "{} {case}.{what}: relative error {err:e} exceeds {:e}\nours {ours}\ntorch {theirs}",
            self.dtype,
            self.tolerance
        );
        err
    }

    /// Runs `f` on the case's inputs and compares its outputs and the inputs' gradients.
    fn run(&self, case: &str, f: impl for<'t> Fn(&[Var<'t, F>]) -> Vec<Var<'t, F>>) -> f64 {
        let tape = Tape::new();
        let inputs: Vec<Var<'_, F>> = (0..self.count(case, "in"))
            .map(|k| tape.var(self.get(case, &format!("in.{k}"))))
            .collect();
        let outputs = f(&inputs);
        assert_eq!(outputs.len(), self.count(case, "out"), "{case}: outputs");
        let mut worst = 0f64;
        let mut loss = tape.constant(Tensor::scalar(F::ZERO));
        for (k, o) in outputs.iter().enumerate() {
            worst = worst.max(self.compare(case, &format!("out.{k}"), &o.value()));
            let proj = tape.constant(self.get(case, &format!("proj.{k}")));
            loss = loss + (*o * proj).sum();
        }
        let grads = loss.backward();
        for (k, x) in inputs.iter().enumerate() {
            worst = worst.max(self.compare(case, &format!("grad.{k}"), &grads[*x]));
        }
        println!("{} {case:<36} {worst:.1e}", self.dtype);
        worst
    }

    fn targets(&self, case: &str) -> Vec<i64> {
        let t = self.get(case, "targets");
        t.data().iter().map(|v| v.to_f64() as i64).collect()
    }

    fn weight(&self, case: &str) -> Option<Tensor<F>> {
        self.has(case, "weight").then(|| self.get(case, "weight"))
    }
}

fn goldens(check: fn(&Golden<f64>), check32: fn(&Golden<f32>)) {
    check(&Golden::load("f64", 1e-12));
    check32(&Golden::load("f32", 1e-5));
}

/// The op of each `matmul.*` case of the script, operands transposed where it transposes them.
fn matmul_case<'t, F: Float>(case: &str, x: &[Var<'t, F>]) -> Var<'t, F> {
    let (a, b) = (x[0], x[1]);
    match case {
        "matmul.dot"
        | "matmul.mv"
        | "matmul.vm"
        | "matmul.v_batched"
        | "matmul.batched_v"
        | "matmul.v_nd"
        | "matmul.nd_v"
        | "matmul.broadcast"
        | "matmul.batch_of_one"
        | "matmul.nd_2d"
        | "matmul.2d_nd"
        | "matmul.nd_nd"
        | "matmul.nd_broadcast_both" => a.matmul(b),
        "matmul.transposed_v" | "matmul.batched_transposed_v" => a.t().matmul(b),
        "matmul.v_transposed" => a.matmul(b.t()),
        "matmul.broadcast_transposed" => a.transpose(-1, -2).matmul(b.t()),
        _ => panic!("no op for golden case {case}"),
    }
}

fn check_matmul<F: Float>(g: &Golden<F>) {
    for case in g.cases("matmul") {
        g.run(&case, |x| vec![matmul_case(&case, x)]);
    }
}

#[test]
fn matmul_with_one_d_and_broadcast_operands_matches_pytorch() {
    goldens(check_matmul, check_matmul);
}

/// The op of each `broadcast_to.*` case of the script: PyTorch's -1 (keep the axis) is `expand`'s.
fn broadcast_to_case<'t, F: Float>(case: &str, x: Var<'t, F>) -> Var<'t, F> {
    match case {
        "broadcast_to.inner_and_leading" => x.broadcast_to(&[2, 3, 5, 4]),
        "broadcast_to.one_element" => x.broadcast_to(&[3, 2]),
        "broadcast_to.minus_one_keeps_axes" => x.expand(&[2, -1, 5, -1]),
        "broadcast_to.expand_minus_one" => x.expand(&[4, 2, -1]),
        "broadcast_to.expand_minus_one_everywhere" => x.expand(&[-1, -1]),
        _ => panic!("no op for golden case {case}"),
    }
}

fn check_broadcast_to<F: Float>(g: &Golden<F>) {
    for case in g.cases("broadcast_to") {
        g.run(&case, |x| vec![broadcast_to_case(&case, x[0])]);
    }
}

#[test]
fn broadcast_to_and_expand_with_minus_one_match_pytorch() {
    goldens(check_broadcast_to, check_broadcast_to);
}

fn check_index_select<F: Float>(g: &Golden<F>) {
    for case in g.cases("index_select") {
        let axis: isize = match case.as_str() {
            "index_select.dim0" => 0,
            "index_select.dim1" => 1,
            "index_select.dim2" => 2,
            "index_select.dim_minus1" => -1,
            "index_select.dim_minus2" => -2,
            "index_select.dim_minus3" => -3,
            _ => panic!("no axis for golden case {case}"),
        };
        let indices: Vec<usize> = g
            .get(&case, "indices")
            .data()
            .iter()
            .map(|v| v.to_f64() as usize)
            .collect();
        g.run(&case, |x| vec![x[0].index_select_dim(axis, &indices)]);
    }
}

#[test]
fn index_select_along_every_axis_matches_pytorch() {
    goldens(check_index_select, check_index_select);
}

/// The op of each `axes.*` case of the script, with the same negative axes.
fn axes_case<'t, F: Float>(case: &str, x: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
    let a = x[0];
    let one = |v: Var<'t, F>| vec![v];
    match case {
        "axes.transpose" => one(a.transpose(-1, -3)),
        "axes.permute" => one(a.permute(&[-1, 0, -2])),
        "axes.sum_axis" => one(a.sum_axis(-2, false)),
        "axes.sum_axis_keepdim" => one(a.sum_axis(-1, true)),
        "axes.mean_axis" => one(a.mean_axis(-3, false)),
        "axes.max_axis" => one(a.max_axis(-2, true)),
        "axes.softmax" => one(a.softmax(-2)),
        "axes.log_softmax" => one(a.log_softmax(-1)),
        "axes.narrow" => one(a.narrow(-1, 1, 2)),
        "axes.chunk" => a.chunk(2, -1),
        "axes.split" => a.split(2, -2),
        "axes.concat" => one(concat(&[a, x[1]], -2)),
        "axes.stack_last" => one(stack(&[a, x[1]], -1)),
        "axes.stack_first" => one(stack(&[a, x[1]], -4)),
        "axes.stack_middle" => one(stack(&[a, x[1]], -2)),
        "axes.unsqueeze_last" => one(a.unsqueeze(-1)),
        "axes.unsqueeze_first" => one(a.unsqueeze(-4)),
        "axes.unsqueeze_middle" => one(a.unsqueeze(-3)),
        "axes.squeeze" => one(a.squeeze(-2)),
        _ => panic!("no op for golden case {case}"),
    }
}

fn check_axes<F: Float>(g: &Golden<F>) {
    for case in g.cases("axes") {
        g.run(&case, |x| axes_case(&case, x));
    }
}

#[test]
fn negative_axes_match_pytorch_in_every_op_that_takes_an_axis() {
    goldens(check_axes, check_axes);
}

/// The script's CROSS_ENTROPY, CROSS_ENTROPY_PROBS and NLL options of each case: (ignore_index, reduction,
/// label_smoothing); the class weights come with the data.
fn loss_options(case: &str) -> (i64, Reduction, f64) {
    let (mean, sum, none) = (Reduction::Mean, Reduction::Sum, Reduction::None);
    match case.split_once('.').map(|(_, c)| c) {
        Some("weight_mean") => (-100, mean, 0.0),
        Some("weight_sum") => (-100, sum, 0.0),
        Some("weight_none") | Some("none") => (-100, none, 0.0),
        Some("sum") => (-100, sum, 0.0),
        Some("ignore_weight_mean") => (-100, mean, 0.0),
        Some("ignore_custom_weight_mean") => (2, mean, 0.0),
        Some("ignore_custom_weight_sum") => (0, sum, 0.0),
        Some("ignore_none") if case.starts_with("nll") => (-100, none, 0.0),
        Some("smoothing") => (-100, mean, 0.1),
        Some("smoothing_weight_mean") => (-100, mean, 0.25),
        Some("smoothing_weight_ignore_mean") => (-100, mean, 0.2),
        Some("smoothing_weight_ignore_sum") => (-100, sum, 0.2),
        Some("smoothing_weight_ignore_none") => (3, none, 0.2),
        Some("smoothing_ignore_none") => (1, none, 0.3),
        Some("full_smoothing_weight") => (-100, mean, 1.0),
        Some("mean") => (-100, mean, 0.0),
        Some("smoothing_weight_none") => (-100, none, 0.2),
        Some("heavy_smoothing_weight_sum") => (-100, sum, 0.9),
        Some("unbatched_weight_mean") => (-100, mean, 0.0),
        Some("unbatched_smoothing_weight_none") => (-100, none, 0.2),
        Some("unbatched_smoothing_weight_mean") => (-100, mean, 0.25),
        Some("unbatched_none") => (-100, none, 0.0),
        Some("kdim_smoothing_weight_ignore_mean") => (-100, mean, 0.2),
        Some("kdim_smoothing_weight_mean") => (-100, mean, 0.1),
        Some("kdim_weight_ignore_mean") => (-100, mean, 0.0),
        Some("kdim_weight_ignore_none") => (3, none, 0.0),
        Some("kdim_weight_none") => (-100, none, 0.0),
        Some("kdim_sum") => (-100, sum, 0.0),
        _ => panic!("no options for golden case {case}"),
    }
}

fn check_cross_entropy<F: Float>(g: &Golden<F>) {
    for case in g.cases("ce") {
        let (ignore_index, reduction, smoothing) = loss_options(&case);
        let options = CrossEntropyOptions {
            weight: g.weight(&case),
            ignore_index,
            reduction,
            label_smoothing: F::from_f64(smoothing),
        };
        let targets = g.targets(&case);
        g.run(&case, |x| {
            vec![x[0].cross_entropy_with(&targets, options.clone())]
        });
    }
}

/// Logits [N, C], unbatched [C] (one target; `None` gives a 0-d loss) and K-dimensional
/// [N, C, d1, d2] (targets [N, d1, d2], given flattened).
#[test]
fn cross_entropy_with_weights_ignore_index_smoothing_and_reductions_matches_pytorch() {
    goldens(check_cross_entropy, check_cross_entropy);
}

/// A cross-entropy against class probabilities: logits, probabilities, options.
type ProbsLoss<F> = for<'t> fn(Var<'t, F>, Var<'t, F>, CrossEntropyOptions<F>) -> Var<'t, F>;

/// Every `ce_probs` case through `loss`: input 0 is the logits, input 1 the class
/// probabilities, and both get their gradient.
fn check_probs_loss<F: Float>(g: &Golden<F>, loss: ProbsLoss<F>) {
    for case in g.cases("ce_probs") {
        let (ignore_index, reduction, smoothing) = loss_options(&case);
        let options = CrossEntropyOptions {
            weight: g.weight(&case),
            ignore_index,
            reduction,
            label_smoothing: F::from_f64(smoothing),
        };
        g.run(&case, |x| vec![loss(x[0], x[1], options.clone())]);
    }
}

fn check_cross_entropy_probs<F: Float>(g: &Golden<F>) {
    check_probs_loss(g, |x, y, options| x.cross_entropy_probs_with(y, options));
}

fn check_loss_cross_entropy_probs<F: Float>(g: &Golden<F>) {
    check_probs_loss(g, loss::cross_entropy_probs_with);
}

/// PyTorch's mean over probability targets divides by N, whatever the class weights: the
/// `ce_probs.weight_mean` and `ce_probs.smoothing_weight_mean` cases hold it to that. Logits
/// [N, C], unbatched [C] and K-dimensional [N, C, d1, d2], the targets of the logits' shape.
#[test]
fn cross_entropy_with_class_probability_targets_matches_pytorch() {
    goldens(check_cross_entropy_probs, check_cross_entropy_probs);
}

/// `rewind::nn::loss::cross_entropy_probs_with` is the op: every `ce_probs` case of
/// `scripts/golden_ops.py` matches PyTorch through it too, and
/// `loss::cross_entropy_probs(x, y)` is `x.cross_entropy_probs(y)` (PyTorch's defaults), bit for
/// bit, value and both gradients.
#[test]
fn loss_cross_entropy_probs_wrappers_match_pytorch() {
    goldens(
        check_loss_cross_entropy_probs,
        check_loss_cross_entropy_probs,
    );
    let logits = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.25, 0.0, -0.75], &[2, 3]).unwrap();
    let probs = Tensor::from_vec(vec![0.2, 0.3, 0.5, 1.0, 0.0, 0.0], &[2, 3]).unwrap();
    let run = |wrapped: bool| {
        let tape = Tape::new();
        let (x, y) = (tape.var(logits.clone()), tape.var(probs.clone()));
        let l = if wrapped {
            loss::cross_entropy_probs(x, y)
        } else {
            x.cross_entropy_probs(y)
        };
        let grads = l.backward();
        let wrt = |v| grads.wrt(v).expect("a gradient").data().to_vec();
        (l.value().item(), wrt(x), wrt(y))
    };
    assert_eq!(run(true), run(false));
}

fn check_nll<F: Float>(g: &Golden<F>) {
    for case in g.cases("nll") {
        let (ignore_index, reduction, _) = loss_options(&case);
        let options = NllOptions {
            weight: g.weight(&case),
            ignore_index,
            reduction,
        };
        let targets = g.targets(&case);
        g.run(&case, |x| {
            vec![nll_loss_with(x[0], &targets, options.clone())]
        });
    }
}

/// Log-probabilities [N, C], unbatched [C] and K-dimensional [N, C, d1, d2], as cross_entropy.
#[test]
fn nll_loss_with_weights_ignore_index_and_reductions_matches_pytorch() {
    goldens(check_nll, check_nll);
}

/// With every target ignored, PyTorch's mean is 0/0 = NaN and its gradient 0 (torch 2.15, with and
/// without weights and smoothing), and so is a mean over no rows: so are these.
#[test]
fn a_mean_over_no_counted_targets_is_nan_with_a_zero_gradient() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.0, 1.0, -0.5], &[2, 3]).unwrap());
    let ignored = [-100, -100];
    let weight = Some(Tensor::from_vec(vec![0.5, 1.0, 2.0], &[3]).unwrap());
    let losses = [
        x.cross_entropy(&ignored),
        x.cross_entropy_with(
            &ignored,
            CrossEntropyOptions {
                weight: weight.clone(),
                label_smoothing: 0.2,
                ..Default::default()
            },
        ),
        nll_loss_with(
            x,
            &ignored,
            NllOptions {
                weight,
                ..Default::default()
            },
        ),
    ];
    for loss in losses {
        assert!(loss.item().is_nan());
        assert!(loss.backward()[x].data().iter().all(|&g| g == 0.0));
    }
    // Over no rows at all, probability targets' mean (Σ l_n / N) is 0/0 too (torch 2.15).
    let rows = tape.var(Tensor::zeros(&[0, 3]));
    let loss = rows.cross_entropy_probs(tape.constant(Tensor::zeros(&[0, 3])));
    assert!(loss.item().is_nan());
    assert_eq!(loss.backward()[rows].shape(), &[0, 3]);
}

/// Targets that count but whose class weights sum to 0: PyTorch's mean is 0/0 = NaN, smoothing
/// or not (its smoothed loss is (1 - ε)·nll + (ε/C)·smooth, and the nll part is 0/0), and its
/// gradient is NaN on every counted row and 0 on an ignored one (torch 2.15). Both the gradient
/// and the recorded derivative (`grad_graph`) say so.
#[test]
fn a_mean_over_counted_targets_of_zero_weight_is_nan_as_in_pytorch() {
    let tape = Tape::<f64>::new();
    let x = tape.var(
        Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3, 0.2, 0.1], &[3, 3]).unwrap(),
    );
    // Row 0 and row 2 count with weight 0; row 1 is ignored.
    let targets = [0, -100, 0];
    let weight = Some(Tensor::from_vec(vec![0.0, 1.0, 2.0], &[3]).unwrap());
    for eps in [0.0, 0.2, 1.0] {
        let loss = x.cross_entropy_with(
            &targets,
            CrossEntropyOptions {
                weight: weight.clone(),
                label_smoothing: eps,
                ..Default::default()
            },
        );
        assert!(loss.item().is_nan(), "ε = {eps}: loss {}", loss.item());
        let recorded = loss.grad_graph(&[x])[0].value();
        for (what, g) in [
            ("backward", loss.backward()[x].clone()),
            ("grad_graph", recorded),
        ] {
            for (i, d) in g.data().iter().enumerate() {
                if i / 3 == 1 {
                    assert_eq!(*d, 0.0, "ε = {eps}, {what}: ignored row, element {i}");
                } else {
                    assert!(
                        d.is_nan(),
                        "ε = {eps}, {what}: counted row, element {i}: {d}"
                    );
                }
            }
        }
    }
}

/// What PyTorch refuses is refused here too, at the caller's line, naming the op and the shapes
/// or the argument.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn misuse_of_the_wider_rules_panics_at_the_callers_line() {
    let tape = Tape::<f64>::new();
    let z = |shape: &[usize]| tape.constant(Tensor::zeros(shape));
    let (m, v, b4, k) = (z(&[2, 3]), z(&[4]), z(&[2, 1, 3, 4]), z(&[2, 3, 4]));
    let weighted = |w: &[usize], eps: f64| CrossEntropyOptions {
        weight: Some(Tensor::zeros(w)),
        label_smoothing: eps,
        ..Default::default()
    };
    let nll_weighted = |w: &[usize]| NllOptions { weight: Some(Tensor::zeros(w)), ..Default::default() };
    type Case<'a> = (Box<dyn FnOnce() + 'a>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|| { m.matmul(v); }), line!(), "matmul: inner dimensions differ: lhs [2, 3] vs rhs [4]"),
        (Box::new(|| { v.matmul(m); }), line!(), "matmul: inner dimensions differ: lhs [4] vs rhs [2, 3]"),
        (Box::new(|| { v.matmul(z(&[3])); }), line!(), "matmul: inner dimensions differ: lhs [4] vs rhs [3]"),
        (Box::new(|| { b4.matmul(z(&[3, 2, 4, 5])); }), line!(), "matmul: batch dimensions cannot be broadcast together: lhs [2, 1, 3, 4] vs rhs [3, 2, 4, 5]"),
        (Box::new(|| { z(&[]).matmul(v); }), line!(), "matmul: operands must be at least 1-D: lhs [] vs rhs [4]"),
        (Box::new(|| { m.broadcast_to(&[4, 3]); }), line!(), "broadcast_to: shape [2, 3] cannot be broadcast to [4, 3]"),
        (Box::new(|| { m.broadcast_to(&[3]); }), line!(), "broadcast_to: shape [2, 3] cannot be broadcast to [3]"),
        (Box::new(|| { m.expand(&[-1, 3, 4]); }), line!(), "expand: -1 is not allowed in the new leading axis 0: sizes [-1, 3, 4] for shape [2, 3]"),
        (Box::new(|| { m.expand(&[2, -2]); }), line!(), "expand: size -2 at axis 1 is neither a size nor -1: sizes [2, -2] for shape [2, 3]"),
        (Box::new(|| { m.expand(&[-1]); }), line!(), "expand: 1 sizes cannot broadcast shape [2, 3], which has 2 axes"),
        (Box::new(|| { m.expand(&[4, -1]); }), line!(), "expand: shape [2, 3] cannot be broadcast to [4, 3]"),
        (Box::new(|| { m.index_select_dim(1, &[0, 3]); }), line!(), "index_select: index 3 out of range for 3 entries along axis 1 of shape [2, 3]"),
        (Box::new(|| { m.index_select_dim(-3, &[0]); }), line!(), "index_select: axis -3 out of range for shape [2, 3]"),
        (Box::new(|| { m.unsqueeze(-4); }), line!(), "unsqueeze: axis -4 out of range for inserting an axis into shape [2, 3] (expected -3..=2)"),
        (Box::new(|| { m.unsqueeze(3); }), line!(), "unsqueeze: axis 3 out of range for inserting an axis into shape [2, 3] (expected -3..=2)"),
        (Box::new(|| { stack(&[v, v], -3); }), line!(), "stack: axis -3 out of range for inserting an axis into shape [4] (expected -2..=1)"),
        (Box::new(|| { m.permute(&[-1, 1]); }), line!(), "permute: [-1, 1] is not a permutation of the 2 axes of shape [2, 3]"),
        (Box::new(|| { m.permute(&[0, 1, 2]); }), line!(), "permute: [0, 1, 2] is not a permutation of the 2 axes of shape [2, 3]"),
        (Box::new(|| { m.sum_axis(-3, false); }), line!(), "sum_axis: axis -3 out of range for shape [2, 3]"),
        (Box::new(|| { m.cross_entropy_with(&[0, 1], weighted(&[4], 0.0)); }), line!(), "cross_entropy: expected class weights [C]: logits [2, 3] vs weight [4]"),
        (Box::new(|| { m.cross_entropy_with(&[0, 1], weighted(&[3], 1.5)); }), line!(), "cross_entropy: label_smoothing must be in [0, 1], got 1.5"),
        (Box::new(|| { m.cross_entropy_with(&[0, 1], weighted(&[3], f64::NAN)); }), line!(), "cross_entropy: label_smoothing must be in [0, 1], got NaN"),
        (Box::new(|| { m.cross_entropy_with(&[0, -100], CrossEntropyOptions { ignore_index: 1, ..Default::default() }); }), line!(), "cross_entropy: target -100 at row 1 out of range for 3 classes (logits [2, 3])"),
        (Box::new(|| { m.cross_entropy_probs(z(&[2, 4])); }), line!(), "cross_entropy: expected probability targets of the logits' shape: logits [2, 3] vs targets [2, 4]"),
        (Box::new(|| { m.cross_entropy_probs(z(&[3])); }), line!(), "cross_entropy: expected probability targets of the logits' shape: logits [2, 3] vs targets [3]"),
        (Box::new(|| { m.cross_entropy_probs_with(z(&[2, 3]), weighted(&[2], 0.0)); }), line!(), "cross_entropy: expected class weights [C]: logits [2, 3] vs weight [2]"),
        (Box::new(|| { m.cross_entropy_probs_with(z(&[2, 3]), weighted(&[3], -0.5)); }), line!(), "cross_entropy: label_smoothing must be in [0, 1], got -0.5"),
        (Box::new(|| { m.cross_entropy_probs_with(z(&[2, 3]), CrossEntropyOptions { ignore_index: 0, ..Default::default() }); }), line!(), "cross_entropy: ignore_index is not supported for probability targets, got 0"),
        (Box::new(|| { z(&[]).cross_entropy(&[0]); }), line!(), "cross_entropy: expected logits [C], [N, C] or [N, C, d1, ...]: logits [] vs targets [1]"),
        (Box::new(|| { v.cross_entropy(&[0, 1]); }), line!(), "cross_entropy: expected unbatched logits [C] and one target: logits [4] vs targets [2]"),
        (Box::new(|| { v.cross_entropy(&[4]); }), line!(), "cross_entropy: target 4 out of range for 4 classes (logits [4])"),
        (Box::new(|| { k.cross_entropy(&[0; 7]); }), line!(), "cross_entropy: expected logits [N, C, d1, ...] and N·d1·... targets: logits [2, 3, 4] vs targets [7]"),
        (Box::new(|| { k.cross_entropy(&[0, 0, 0, 0, 0, 0, 3, 0]); }), line!(), "cross_entropy: target 3 at [1, 2] out of range for 3 classes (logits [2, 3, 4])"),
        (Box::new(|| { k.cross_entropy_with(&[0; 8], weighted(&[4], 0.0)); }), line!(), "cross_entropy: expected class weights [C]: logits [2, 3, 4] vs weight [4]"),
        (Box::new(|| { z(&[]).cross_entropy_probs(z(&[])); }), line!(), "cross_entropy: expected logits [C], [N, C] or [N, C, d1, ...]: logits [] vs targets []"),
        (Box::new(|| { k.cross_entropy_probs(z(&[2, 4, 3])); }), line!(), "cross_entropy: expected probability targets of the logits' shape: logits [2, 3, 4] vs targets [2, 4, 3]"),
        (Box::new(|| { v.cross_entropy_probs_with(v, weighted(&[3], 0.0)); }), line!(), "cross_entropy: expected class weights [C]: logits [4] vs weight [3]"),
        (Box::new(|| { nll_loss_with(z(&[]), &[0], NllOptions::default()); }), line!(), "nll_loss: expected log-probabilities [C], [N, C] or [N, C, d1, ...]: input [] vs targets [1]"),
        (Box::new(|| { nll_loss_with(v, &[0, 1], NllOptions::default()); }), line!(), "nll_loss: expected unbatched log-probabilities [C] and one target: input [4] vs targets [2]"),
        (Box::new(|| { nll_loss_with(k, &[0; 9], NllOptions::default()); }), line!(), "nll_loss: expected log-probabilities [N, C, d1, ...] and N·d1·... targets: input [2, 3, 4] vs targets [9]"),
        (Box::new(|| { nll_loss_with(k, &[0, 0, 0, 0, 0, 0, 3, 0], NllOptions::default()); }), line!(), "nll_loss: target 3 at [1, 2] out of range for 3 classes"),
        (Box::new(|| { nll_loss_with(v, &[-1], NllOptions::default()); }), line!(), "nll_loss: target -1 out of range for 4 classes"),
        (Box::new(|| { nll_loss_with(k, &[0; 8], nll_weighted(&[4])); }), line!(), "nll_loss: expected class weights [C]: input [2, 3, 4] vs weight [4]"),
        (Box::new(|| { nll_loss_with(m, &[0, 1], nll_weighted(&[2])); }), line!(), "nll_loss: expected class weights [C]: input [2, 3] vs weight [2]"),
        (Box::new(|| { nll_loss_with(m, &[0, 1, 2], NllOptions::default()); }), line!(), "nll_loss: expected log-probabilities [N, C] and N targets: input [2, 3] vs targets [3]"),
        (Box::new(|| { nll_loss_with(m, &[3, 0], NllOptions { ignore_index: 0, ..Default::default() }); }), line!(), "nll_loss: target 3 at row 0 out of range for 3 classes"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert!(file.ends_with("ops_parity.rs"), "{msg}: did not panic at the caller's line");
        assert_eq!(msg, expected);
        assert_eq!(at, line, "{expected}: panicked at line {at}, the call is on line {line}");
    }
}

/// Plain tensors computed with off any tape, against PyTorch (scripts/golden_tensor_ops.py):
/// the operators with broadcasting and scalars on either side, comparisons as masks, max and
/// min with their indices (a NaN wins its lane, a tie keeps the first), topk and allclose.
#[test]
fn plain_tensor_arithmetic_comparisons_and_reductions_match_pytorch() {
    let g = golden::load::<f64>("tensor_ops_golden.safetensors", "golden_tensor_ops.py");
    let t = |name: &str| golden::tensor(&g, name);
    let same = |name: &str, got: &Tensor<f64>| {
        let want = t(name);
        assert_eq!(got.shape(), want.shape(), "{name}: shape");
        for (i, (x, y)) in got.data().iter().zip(want.data()).enumerate() {
            assert!(
                x == y || (x.is_nan() && y.is_nan()),
                "{name}[{i}]: {x} vs {y}"
            );
        }
    };
    let as_floats = |v: Vec<usize>, shape: &[usize]| {
        Tensor::from_vec(v.into_iter().map(|i| i as f64).collect(), shape).unwrap()
    };
    let (a, b, c) = (t("a"), t("b"), t("c"));
    same("a+b", &(&a + &b));
    same("a-b", &(a.clone() - &b));
    same("a*b", &(&a * b.clone()));
    same("a/b", &(a.clone() / b.clone()));
    same("a*c", &(&a * &c));
    same("2-a", &(2.0 - &a));
    same("2/a", &(2.0 / &a));
    same("-a", &-&a);
    same("a+0.5", &(&a + 0.5));
    same("a>b", &a.gt(&b));
    same("a>=b", &a.ge(&b));
    same("a<b", &a.lt(&b));
    same("a<=b", &a.le(&b));
    same("a==b", &a.eq_elem(&b));
    same("a!=b", &a.ne_elem(&b));
    same("a>0", &a.gt(0.0));
    let clean = Tensor::from_vec(a.data()[4..].to_vec(), &[2, 4]).unwrap();
    same("max", &Tensor::from_vec(vec![clean.max()], &[1]).unwrap());
    same("min", &Tensor::from_vec(vec![clean.min()], &[1]).unwrap());
    same("max_nan", &Tensor::from_vec(vec![a.max()], &[1]).unwrap());
    for d in [0usize, 1] {
        let lanes = [a.shape()[1 - d]];
        for (name, (values, indices)) in
            [("max", a.max_axis(d, false)), ("min", a.min_axis(d, false))]
        {
            same(&format!("{name}.{d}.values"), &values);
            same(&format!("{name}.{d}.indices"), &as_floats(indices, &lanes));
        }
        same(&format!("argmax.{d}"), &as_floats(a.argmax(d), &lanes));
        same(&format!("argmin.{d}"), &as_floats(a.argmin(d), &lanes));
        let (values, indices) = t("d").topk(2, d);
        let shape = values.shape().to_vec();
        same(&format!("topk2.{d}.values"), &values);
        same(&format!("topk2.{d}.indices"), &as_floats(indices, &shape));
    }
    let v = |x: &[f64], shape: &[usize]| Tensor::from_vec(x.to_vec(), shape).unwrap();
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let pairs = [
        (v(&[1.0, 2.0], &[2]), v(&[1.0 + 1e-6, 2.0], &[2])),
        (v(&[1.0, 2.0], &[2]), v(&[1.0 + 1e-4, 2.0], &[2])),
        (v(&[0.0], &[1]), v(&[1e-9], &[1])),
        (v(&[inf, -inf], &[2]), v(&[inf, -inf], &[2])),
        (v(&[inf], &[1]), v(&[-inf], &[1])),
        (v(&[nan], &[1]), v(&[nan], &[1])),
        (v(&[1.0, 2.0], &[2, 1]), v(&[1.0, 1.0], &[2])),
    ];
    let close: Vec<f64> = pairs
        .iter()
        .map(|(x, y)| f64::from(u8::from(x.allclose(y))))
        .collect();
    same("allclose", &v(&close, &[pairs.len()]));
    assert_eq!(a.max_axis(1, true).0.shape(), &[3, 1]);
}

/// Misuse of the plain-tensor operations panics at the caller's line, naming the op and the
/// shapes, as on a tape.
#[test]
#[rustfmt::skip] // each case's `line!()` must stay on the line of its call
fn plain_tensor_misuse_panics_at_the_callers_line() {
    let (a, b) = (Tensor::<f64>::zeros(&[2, 3]), Tensor::<f64>::zeros(&[4]));
    let empty = Tensor::<f64>::zeros(&[0, 3]);
    type Case<'a> = (Box<dyn FnOnce() + 'a>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|| { let _ = &a + &b; }), line!(), "add: shapes cannot be broadcast together: lhs [2, 3] vs rhs [4]"),
        (Box::new(|| { a.gt(&b); }), line!(), "gt: shapes cannot be broadcast together: lhs [2, 3] vs rhs [4]"),
        (Box::new(|| { a.topk(4, 1); }), line!(), "topk: k = 4 exceeds the 3 elements along axis 1 of shape [2, 3]"),
        (Box::new(|| { empty.argmax(0); }), line!(), "argmax: axis 0 of shape [0, 3] is empty"),
        (Box::new(|| { empty.max(); }), line!(), "max: the tensor of shape [0, 3] is empty"),
        (Box::new(|| { a.argmax(2); }), line!(), "argmax: axis 2 out of range for shape [2, 3]"),
    ];
    for (f, line, expected) in cases {
        let (msg, file, at) = panic_of(f);
        assert_eq!(msg, expected);
        assert!(file.ends_with("ops_parity.rs"), "{expected}: panicked in {file}");
        assert_eq!(at, line, "{expected}: panicked at line {at}, the call is on line {line}");
    }
}
