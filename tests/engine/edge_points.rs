//! Derivatives at the edge points of each primitive (0 for powf, sqrt and ln; relu at 0; ties in
//! max; rows of -inf in softmax; 0/0; clamp at its bounds), against PyTorch's values.
//!
//! The expected values are PyTorch's conventions, from its derivative formulas
//! (tools/autograd/derivatives.yaml): pow's gradient is 0 for exponent 0, relu's and clamp's
//! masks are `x > 0` and `min <= x <= max`, max along a dimension sends the gradient to the index
//! it returns (the first maximum), where sends none to the side it did not choose.

use rewind::autograd::{Tape, Tensor};

fn t(data: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), &[data.len()]).unwrap()
}

/// Bit-for-bit equality that treats NaN as equal to NaN and tells -0 from 0 apart only by value.
#[track_caller]
fn assert_same(what: &str, got: &Tensor<f64>, expected: &[f64]) {
    assert_eq!(got.numel(), expected.len(), "{what}: length");
    for (i, (&g, &e)) in got.data().iter().zip(expected).enumerate() {
        let same = (g.is_nan() && e.is_nan()) || g == e || (g - e).abs() <= 1e-15 * e.abs();
        assert!(same, "{what}: element {i}: got {g}, PyTorch gives {e}");
    }
}

/// ∂(Σ f(x))/∂x at `x`.
fn grad_of_sum(
    x: &[f64],
    f: for<'t> fn(rewind::autograd::Var<'t, f64>) -> rewind::autograd::Var<'t, f64>,
) -> Tensor<f64> {
    let tape = Tape::new();
    let v = tape.var(t(x));
    f(v).sum().backward()[v].clone()
}

#[test]
fn powf_zero_has_a_zero_gradient_everywhere_including_x_zero() {
    // torch.pow(x, 0).sum().backward() → zeros, also at x = 0 (not 0·0^-1 = NaN).
    assert_same(
        "x^0",
        &grad_of_sum(&[0.0, 2.0, -3.0], |v| v.powf(0.0)),
        &[0.0, 0.0, 0.0],
    );
}

#[test]
fn powf_at_zero_follows_the_formula_elsewhere() {
    assert_same("x^2 at 0", &grad_of_sum(&[0.0], |v| v.powf(2.0)), &[0.0]);
    assert_same("x^1 at 0", &grad_of_sum(&[0.0], |v| v.powf(1.0)), &[1.0]);
    assert_same("x^3 at 0", &grad_of_sum(&[0.0], |v| v.powf(3.0)), &[0.0]);
    assert_same(
        "x^0.5 at 0",
        &grad_of_sum(&[0.0], |v| v.powf(0.5)),
        &[f64::INFINITY],
    );
    assert_same(
        "x^-1 at 0",
        &grad_of_sum(&[0.0], |v| v.powf(-1.0)),
        &[f64::NEG_INFINITY],
    );
}

#[test]
fn sqrt_and_ln_at_zero_are_infinite() {
    assert_same(
        "sqrt at 0",
        &grad_of_sum(&[0.0], |v| v.sqrt()),
        &[f64::INFINITY],
    );
    assert_same(
        "ln at 0",
        &grad_of_sum(&[0.0], |v| v.ln()),
        &[f64::INFINITY],
    );
}

#[test]
fn relu_at_zero_has_gradient_zero_and_nan_propagates() {
    assert_same(
        "relu'",
        &grad_of_sum(&[0.0, -0.0, 1.0, -1.0], |v| v.relu()),
        &[0.0, 0.0, 1.0, 0.0],
    );
    let tape = Tape::new();
    let y = tape.constant(t(&[f64::NAN, -1.0])).relu().value();
    assert_same("relu(NaN)", &y, &[f64::NAN, 0.0]);
}

#[test]
fn max_with_ties_sends_the_gradient_to_the_first_maximum() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0, 2.0, 0.0], &[2, 3]).unwrap());
    let g = x.max_axis(1, false).sum().backward();
    assert_same("max ties", &g[x], &[0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn softmax_and_log_softmax_with_minus_infinity_give_finite_gradients() {
    let inf = f64::INFINITY;
    let w = [0.3, -0.7, 1.1];
    // softmax([-inf, 0, 1]) = [0, 1/(1+e), e/(1+e)]; d/dx_j Σ w_k y_k = y_j (w_j - Σ w_k y_k).
    let (y1, y2) = (1.0 / (1.0 + 1f64.exp()), 1f64.exp() / (1.0 + 1f64.exp()));
    let dot = w[1] * y1 + w[2] * y2;
    let tape = Tape::new();
    let x = tape.var(t(&[-inf, 0.0, 1.0]));
    let s = x.softmax(0);
    assert_same("softmax", &s.value(), &[0.0, y1, y2]);
    let g = (s * tape.constant(t(&w))).sum().backward();
    assert_same(
        "softmax'",
        &g[x],
        &[0.0, y1 * (w[1] - dot), y2 * (w[2] - dot)],
    );

    // log_softmax: y_0 = -inf; d/dx_j Σ w_k y_k = w_j - softmax_j Σ w_k, so w_0 at the -inf.
    let tape = Tape::new();
    let x = tape.var(t(&[-inf, 0.0, 1.0]));
    let ls = x.log_softmax(0);
    assert_eq!(ls.value().data()[0], -inf);
    let g = ls.backward_with(&t(&w))[x].clone();
    let total: f64 = w.iter().sum();
    assert_same(
        "log_softmax'",
        &g,
        &[w[0], w[1] - y1 * total, w[2] - y2 * total],
    );
}

#[test]
fn a_row_of_minus_infinity_gives_nan_as_in_pytorch() {
    let tape = Tape::new();
    let x = tape.var(t(&[f64::NEG_INFINITY, f64::NEG_INFINITY]));
    assert_same("softmax", &x.softmax(0).value(), &[f64::NAN, f64::NAN]);
    assert_same(
        "log_softmax",
        &x.log_softmax(0).value(),
        &[f64::NAN, f64::NAN],
    );
}

#[test]
fn masked_fill_with_minus_infinity_then_softmax_masks_the_gradient() {
    let tape = Tape::new();
    let x = tape.var(t(&[0.5, -0.2, 0.9]));
    let mask = t(&[0.0, 1.0, 0.0]);
    let p = x.masked_fill(&mask, f64::NEG_INFINITY).softmax(0);
    let w = tape.constant(t(&[1.0, 2.0, -1.0]));
    let g = (p * w).sum().backward();
    let gx = &g[x];
    assert!(gx.data().iter().all(|v| v.is_finite()), "{gx}");
    assert_eq!(gx.data()[1], 0.0);
}

#[test]
fn where_sends_nothing_to_the_unchosen_side_even_when_it_is_nan() {
    // torch.where(cond, a, log(b)) with b < 0: log(b) is NaN, its gradient is 0.
    let tape = Tape::new();
    let a = tape.var(t(&[1.0, 2.0]));
    let b = tape.var(t(&[-1.0, -2.0]));
    let g = a.where_cond(&t(&[1.0, 1.0]), b.ln()).sum().backward();
    assert_same("where, chosen", &g[a], &[1.0, 1.0]);
    assert_same("where, unchosen", &g[b], &[0.0, 0.0]);
}

#[test]
fn zero_over_zero() {
    // a / b at a = b = 0: the value is NaN; PyTorch: da = g / b = inf, db = -g·(a/b)/b = NaN.
    let tape = Tape::new();
    let a = tape.var(t(&[0.0]));
    let b = tape.var(t(&[0.0]));
    let y = a / b;
    assert!(y.item().is_nan());
    let g = y.sum().backward();
    assert_same("d/da", &g[a], &[f64::INFINITY]);
    assert_same("d/db", &g[b], &[f64::NAN]);
}

#[test]
fn clamp_passes_the_gradient_at_its_bounds() {
    // torch.clamp(x, -1, 1): gradient 1 where -1 <= x <= 1, bounds included.
    let x = [-2.0, -1.0, 0.0, 1.0, 2.0];
    assert_same(
        "clamp'",
        &grad_of_sum(&x, |v| v.clamp(-1.0, 1.0)),
        &[0.0, 1.0, 1.0, 1.0, 0.0],
    );
    assert_same(
        "clamp_min'",
        &grad_of_sum(&x, |v| v.clamp_min(0.0)),
        &[0.0, 0.0, 1.0, 1.0, 1.0],
    );
    assert_same(
        "clamp_max'",
        &grad_of_sum(&x, |v| v.clamp_max(0.0)),
        &[1.0, 1.0, 1.0, 0.0, 0.0],
    );
    let tape = Tape::new();
    let y = tape
        .constant(t(&[-2.0, 0.5, 2.0, f64::NAN]))
        .clamp(-1.0, 1.0)
        .value();
    assert_same("clamp", &y, &[-1.0, 0.5, 1.0, f64::NAN]);
    // min > max: PyTorch sets every element to max, and no gradient passes.
    let tape = Tape::new();
    let y = tape.constant(t(&[-2.0, 0.5, 2.0])).clamp(1.0, -1.0).value();
    assert_same("clamp, min > max", &y, &[-1.0, -1.0, -1.0]);
    assert_same(
        "clamp', min > max",
        &grad_of_sum(&x, |v| v.clamp(1.0, -1.0)),
        &[0.0; 5],
    );
}

#[test]
fn cross_entropy_with_a_minus_infinity_logit_is_finite() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from_vec(vec![f64::NEG_INFINITY, 0.0, 1.0], &[1, 3]).unwrap());
    let loss = x.cross_entropy(&[2]);
    let expected = (1.0 + 1f64.exp()).ln() - 1.0;
    assert!((loss.item() - expected).abs() < 1e-15);
    let g = loss.backward();
    let y2 = 1f64.exp() / (1.0 + 1f64.exp());
    assert_same("d/dlogits", &g[x], &[0.0, 1.0 - y2, y2 - 1.0]);
}

/// A product over an empty inner dimension is zeros (PyTorch's `empty(3, 0) @ empty(0, 4)`),
/// its gradients too, even when the buffers it is given last held NaN on an earlier tape.
#[test]
fn a_product_over_an_empty_inner_dimension_is_zeros_in_a_recycled_buffer() {
    for _ in 0..3 {
        // Leaves buffers of 12 elements full of NaN for the next tape to take.
        let tape = Tape::<f64>::new();
        let junk = tape.var(Tensor::full(&[3, 4], f64::NAN));
        let _ = junk.exp().backward_with(&Tensor::full(&[3, 4], f64::NAN));
        drop(tape);
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::zeros(&[3, 0]));
        let b = tape.var(Tensor::zeros(&[0, 4]));
        let c = a.matmul(b);
        assert_same("empty product", &c.value(), &[0.0; 12]);
        let w = tape.var(Tensor::zeros(&[4, 0]));
        let x = tape.var(Tensor::zeros(&[3, 4]));
        let y = x.matmul(w);
        assert_eq!(&y.shape()[..], &[3, 0]);
        let g = y.sum().backward();
        assert_same("its gradient", &g[w], &[]);
        assert_same("the other's gradient", &g[x], &[0.0; 12]);
    }
}

/// A product's gradients land in buffers that are not zeroed first (the product overwrites its
/// first contribution) and are added to after that: buffers full of NaN from an earlier tape
/// leave no trace, and an operand used twice gets both contributions.
#[test]
fn product_gradients_overwrite_recycled_buffers_then_accumulate() {
    let x0 = Tensor::from_vec((0..12).map(|i| i as f64 * 0.25 - 1.0).collect(), &[3, 4]).unwrap();
    let w0 = Tensor::from_vec((0..20).map(|i| 0.5 - i as f64 * 0.1).collect(), &[4, 5]).unwrap();
    // d/dx Σ (x·w) = 1·wᵀ, d/dw = xᵀ·1; with x also multiplied by a square m, its gradient adds
    // 1·mᵀ.
    let row_sums_w: Vec<f64> = (0..4)
        .map(|k| (0..5).map(|j| w0.data()[k * 5 + j]).sum())
        .collect();
    let col_sums_x: Vec<f64> = (0..4)
        .map(|k| (0..3).map(|i| x0.data()[i * 4 + k]).sum())
        .collect();
    for _ in 0..3 {
        let tape = Tape::<f64>::new();
        for n in [12, 16, 20] {
            let junk = tape.var(Tensor::full(&[n], f64::NAN));
            let _ = junk.exp().backward_with(&Tensor::full(&[n], f64::NAN));
        }
        drop(tape);
        let tape = Tape::<f64>::new();
        let (x, w) = (tape.var(x0.clone()), tape.var(w0.clone()));
        let g = x.matmul(w).sum().backward();
        let dx: Vec<f64> = (0..12).map(|e| row_sums_w[e % 4]).collect();
        let dw: Vec<f64> = (0..20).map(|e| col_sums_x[e / 5]).collect();
        assert_same("dx", &g[x], &dx);
        assert_same("dw", &g[w], &dw);
        let m = tape.var(Tensor::full(&[4, 4], 2.0));
        let g = (x.matmul(w).sum() + x.matmul(m).sum()).backward();
        let dx2: Vec<f64> = dx.iter().map(|d| d + 8.0).collect();
        assert_same("dx through two products", &g[x], &dx2);
    }
}

/// Products with nothing to sum over: a batch of no matrices, and a weight applied to no rows.
/// PyTorch gives an empty output and a zero gradient for the weight; so does rewind.
#[test]
fn products_over_no_rows_give_empty_outputs_and_zero_weight_gradients() {
    let tape = Tape::<f64>::new();
    let w = rewind::autograd::Param::new(Tensor::full(&[4, 5], 1.0));
    let b = tape.var(Tensor::full(&[4, 5], 1.0));
    for right in [b, tape.param(&w)] {
        let a = tape.var(Tensor::zeros(&[0, 3, 4]));
        let c = a.matmul(right);
        assert_eq!(&c.shape()[..], &[0, 3, 5]);
        let g = c.sum().backward();
        assert_same("batched: a's gradient", &g[a], &[]);
    }
    let g = tape
        .var(Tensor::zeros(&[0, 3, 4]))
        .matmul(b)
        .sum()
        .backward();
    assert_same(
        "batched: the shared right side's gradient",
        &g[b],
        &[0.0; 20],
    );
    // A weight through the per-step path, whose gradient rows are stacked until the weight.
    let x = tape.var(Tensor::zeros(&[0, 4]));
    let g = x.matmul(tape.param(&w)).sum().backward();
    assert_same("the weight's gradient", &g[&w], &[0.0; 20]);
    let g = x.matmul(tape.param(&w).t().t()).sum().backward();
    assert_same("the weight's gradient, read transposed", &g[&w], &[0.0; 20]);
}

/// The fused cells over states of no columns ([B, 0], as `torch.empty(3, 0)` gives): empty
/// outputs and empty gradients, as every element-wise op on empty tensors, not a panic inside a
/// kernel.
#[test]
fn the_fused_cells_over_no_columns_give_empty_values_and_gradients() {
    let tape = Tape::<f64>::new();
    let (gates, c) = (
        tape.var(Tensor::zeros(&[3, 0])),
        tape.var(Tensor::zeros(&[3, 0])),
    );
    let (h, c_next) = gates.lstm_cell(c);
    assert_eq!(
        (&h.shape()[..], &c_next.shape()[..]),
        (&[3, 0][..], &[3, 0][..])
    );
    let grads = (h.sum() + c_next.sum()).backward();
    assert_eq!(
        (grads[gates].shape(), grads[c].shape()),
        (&[3, 0][..], &[3, 0][..])
    );

    let xp = tape.var(Tensor::zeros(&[3, 0]));
    let (hp, h0) = (
        tape.var(Tensor::zeros(&[3, 0])),
        tape.var(Tensor::zeros(&[3, 0])),
    );
    let h1 = xp.gru_cell(hp, h0);
    assert_eq!(&h1.shape()[..], &[3, 0]);
    let grads = h1.sum().backward();
    for v in [xp, hp, h0] {
        assert_eq!(grads[v].shape(), &[3, 0]);
    }
}

/// A layer of hidden size 0 is refused where it is built, as `torch.nn.LSTM(4, 0)` refuses it
/// (`hidden_size must be greater than zero`), not deep in its initialisation.
#[test]
#[should_panic(expected = "recurrent: hidden_size must be greater than zero, got 0")]
fn a_layer_of_hidden_size_zero_is_refused_where_it_is_built() {
    use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
    use rewind::nn::{Lstm, RecurrentConfig};
    Lstm::new(RecurrentConfig::new(4, 0), &mut StdRng::seed_from_u64(0));
}

/// Input size 0 is allowed, as `torch.nn.LSTM(0, 3)` allows it: the gates come from the biases
/// and the recurrence alone, and the input's gradient is empty. A stacked bidirectional LSTM, a
/// GRU and an RNN, forward and backward.
#[test]
fn layers_of_input_size_zero_run_forward_and_backward() {
    use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
    use rewind::nn::{Gru, Lstm, RecurrentConfig, Rnn};
    let mut rng = StdRng::seed_from_u64(0);
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros(&[5, 2, 0]));
    let config = RecurrentConfig::new(0, 3);
    let outputs = [
        Lstm::init(config.num_layers(2).bidirectional(true), &mut rng)
            .forward(&tape, x, None, None)
            .output,
        Gru::init(config, &mut rng)
            .forward(&tape, x, None, None)
            .output,
        Rnn::init(config, &mut rng)
            .forward(&tape, x, None, None)
            .output,
    ];
    for (out, width) in outputs.into_iter().zip([6, 3, 3]) {
        assert_eq!(&out.shape()[..], &[5, 2, width]);
        assert!(out.value().data().iter().all(|v| v.is_finite()));
        assert!(
            out.value().data().iter().any(|&v| v != 0.0),
            "the biases reach the output"
        );
        assert_eq!(out.sum().backward()[x].shape(), &[5, 2, 0]);
    }
}

/// softmax and log_softmax along an axis of size 0 give an empty result and an empty gradient,
/// as PyTorch's do (they used to panic inside the kernels); so does a sum with an empty operand
/// repeated along the leading axes, `[2, 0] + [0]`. Chunks and splits of an empty axis are
/// PyTorch's too.
#[test]
fn softmax_log_softmax_and_broadcasts_over_empty_axes_give_empty_results() {
    for (shape, axis) in [
        ([2, 0, 3], 1),
        ([2, 0, 3], 0),
        ([2, 3, 0], 2),
        ([0, 3, 2], -1),
    ] {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::zeros(&shape));
        for y in [x.softmax(axis), x.log_softmax(axis)] {
            assert_eq!(&y.shape()[..], &shape[..]);
            assert_eq!(y.sum().backward()[x].shape(), &shape[..]);
        }
    }
    // torch.zeros(3, 0).chunk(3, 1) is three empty pieces; .split(1, 1) is one.
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros(&[3, 0]));
    let pieces: Vec<Vec<usize>> = x.chunk(3, 1).iter().map(|p| p.shape().to_vec()).collect();
    assert_eq!(pieces, vec![vec![3, 0]; 3]);
    assert_eq!(x.split(1, 1).len(), 1);
    let (a, b) = (
        tape.var(Tensor::zeros(&[2, 0])),
        tape.var(Tensor::zeros(&[0])),
    );
    let s = a + b;
    assert_eq!(&s.shape()[..], &[2, 0]);
    let g = s.sum().backward();
    assert_eq!((g[a].shape(), g[b].shape()), (&[2, 0][..], &[0][..]));
}

/// No input features is allowed, as `torch.nn.Linear(0, 3)` allows it: the weight is empty, the
/// bias zero (PyTorch's bound for a fan-in of 0), and the output the bias. Likewise a standalone
/// cell of hidden size 0 builds with empty weights.
#[test]
fn a_linear_layer_of_no_input_features_outputs_its_bias() {
    use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
    use rewind::nn::{Linear, LstmCell, Nonlinearity, StandardCell};
    let mut rng = StdRng::seed_from_u64(0);
    let linear = Linear::<f64>::init(0, 3, &mut rng);
    let tape = Tape::<f64>::new();
    let y = linear.forward(&tape, tape.var(Tensor::zeros(&[2, 0])));
    assert_eq!(y.value(), Tensor::zeros(&[2, 3]));
    let cell = LstmCell::<f64>::init(4, 0, Nonlinearity::Tanh, &mut rng);
    assert_eq!(cell.params.weight_hh.value().shape(), &[0, 0]);
}

/// A 0-d value has one axis, 0 or -1, as in PyTorch: along it, sums, means and the maximum are
/// the value itself (gradient 1), softmax is 1 and log_softmax 0 (gradient 0), all 0-d, keepdim
/// or not; squeeze of it is the value. (torch 2.15: `torch.tensor(1.5).sum(0)` and so on; axis 1
/// is out of range there too.) squeeze of an axis whose size is not 1 leaves the shape as it is.
#[test]
fn ops_along_the_one_axis_of_a_zero_d_value_and_squeeze_of_a_longer_axis_follow_pytorch() {
    type Along = fn(rewind::autograd::Var<'_, f64>) -> rewind::autograd::Var<'_, f64>;
    let cases: [(&str, Along, f64, f64); 7] = [
        ("sum_axis(0)", |v| v.sum_axis(0, false), 1.5, 3.0),
        ("sum_axis(-1, keepdim)", |v| v.sum_axis(-1, true), 1.5, 3.0),
        ("mean_axis(0)", |v| v.mean_axis(0, false), 1.5, 3.0),
        ("max_axis(0)", |v| v.max_axis(0, false), 1.5, 3.0),
        ("softmax(0)", |v| v.softmax(0), 1.0, 0.0),
        ("log_softmax(-1)", |v| v.log_softmax(-1), 0.0, 0.0),
        ("squeeze(0)", |v| v.squeeze(0), 1.5, 3.0),
    ];
    for (name, op, value, grad) in cases {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::scalar(1.5));
        let y = op(x);
        assert_eq!((&y.shape()[..], y.item()), (&[][..], value), "{name}");
        assert_eq!((y * 3.0).backward()[x].item(), grad, "{name}");
    }
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::zeros(&[2, 3]));
    assert_eq!(&x.squeeze(1).shape()[..], &[2, 3]);
    assert_eq!(&x.unsqueeze(1).squeeze(1).shape()[..], &[2, 3]);
}
