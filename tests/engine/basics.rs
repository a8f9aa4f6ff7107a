//! The engine's behaviour: hand-derived gradients, parameters and `Grads`, tape statistics, long
//! chains, tensors and their printing.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{
    gradcheck, CustomOp, Float, GradcheckOptions, Grads, Param, Tape, TapeStats, Tensor,
};

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

#[test]
fn hand_derived_scalar_expression() {
    // f(a, b) = a·b + sin-free tanh(a) ; with a = 2, b = -3:
    // ∂f/∂a = b + (1 - tanh²a) = -3 + 1 - tanh²(2);  ∂f/∂b = a = 2.
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::scalar(2.0));
    let b = tape.var(Tensor::scalar(-3.0));
    let f = a * b + a.tanh();
    let g = f.backward();
    assert_eq!(g[a].item(), -2.0 - 2f64.tanh().powi(2));
    assert_eq!(g[b].item(), 2.0);
}

#[test]
fn hand_derived_matmul_gradients() {
    // L = Σ (X·W), X = [[1, 2]], W = [[3], [4]]: ∂L/∂W = Xᵀ·1 = [[1], [2]], ∂L/∂X = 1·Wᵀ = [[3, 4]].
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0], &[1, 2]));
    let w = tape.var(t(&[3.0, 4.0], &[2, 1]));
    let g = x.matmul(w).sum().backward();
    assert_eq!(g[w].data(), &[1.0, 2.0]);
    assert_eq!(g[x].data(), &[3.0, 4.0]);
}

#[test]
fn hand_derived_broadcast_bias_sums_over_the_batch() {
    // y = x + b with x [3, 2] and b [2]: ∂Σy/∂b = [3, 3] (one per row).
    let tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::zeros(&[3, 2]));
    let b = tape.var(t(&[0.5, -0.5], &[2]));
    let g = (x + b).sum().backward();
    assert_eq!(g[b].data(), &[3.0, 3.0]);
}

#[test]
fn hand_derived_cross_entropy() {
    // Logits [0, 0] with target 1: loss = ln 2, ∂/∂logits = softmax - onehot = [0.5, -0.5].
    let tape = Tape::<f64>::new();
    let z = tape.var(Tensor::zeros(&[1, 2]));
    let loss = z.cross_entropy(&[1]);
    assert!((loss.item() - 2f64.ln()).abs() < 1e-15);
    assert_eq!(loss.backward()[z].data(), &[0.5, -0.5]);
}

#[test]
fn hand_derived_shared_weight_accumulates() {
    // h2 = w·(w·x): ∂h2/∂w = 2wx = 2·3·5 = 30. A reused value's gradient is the sum over its uses.
    let tape = Tape::<f64>::new();
    let w = tape.var(Tensor::scalar(3.0));
    let x = tape.constant(Tensor::scalar(5.0));
    assert_eq!((w * (w * x)).backward()[w].item(), 30.0);
}

#[test]
fn relu_derivative_at_zero_is_zero() {
    // As in PyTorch: relu'(0) = 0.
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[-1.0, 0.0, 2.0], &[3]));
    assert_eq!(x.relu().sum().backward()[x].data(), &[0.0, 0.0, 1.0]);
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::from_vec(vec![1000.0, 1000.0, -1000.0], &[3]).unwrap());
    let y = x.softmax(0).value();
    assert_eq!(y.data(), &[0.5, 0.5, 0.0]);
    let ls = x.log_softmax(0).value();
    assert!((ls.data()[0] + 2f32.ln()).abs() < 1e-6);
    assert!(ls.data()[2] == -2000.0 - 2f32.ln());
}

#[test]
fn params_are_leaves_indexed_by_param() {
    let w = Param::named("w", t(&[2.0], &[1]));
    let unused = Param::named("unused", t(&[1.0], &[1]));
    let tape = Tape::<f64>::new();
    let a = tape.param(&w);
    let b = tape.param(&w);
    assert_eq!(a.index(), b.index(), "one node per parameter per tape");
    tape.param(&unused);
    // L = w² + w: dL/dw = 2w + 1 = 5.
    let grads = (a * b + a).sum().backward();
    assert_eq!(grads[&w].data(), &[5.0]);
    assert!(grads.get(&unused).is_none());
    assert_eq!(grads.len(), 1);
}

#[test]
fn a_param_enters_the_tape_without_a_copy_and_updates_copy_on_write() {
    let w = Param::new(Tensor::<f32>::ones(&[4]));
    let tape = Tape::new();
    let v = tape.param(&w);
    assert!(v.value().shares_storage(&w.value()));
    w.update(|t| t.data_mut()[0] = 5.0);
    assert_eq!(
        v.value().data()[0],
        1.0,
        "the tape keeps the value it recorded"
    );
    assert_eq!(w.value().data()[0], 5.0);
}

#[test]
fn no_gradient_work_for_branches_without_parameters() {
    let p = Param::new(t(&[1.0, 2.0], &[2]));
    let tape = Tape::<f64>::new();
    let data = tape.constant(t(&[3.0, 4.0], &[2]));
    let side = data.exp().tanh();
    assert!(!side.requires_grad());
    let out = (tape.param(&p) * side).sum();
    assert!(out.requires_grad());
    let g = out.backward();
    assert_eq!(g[&p].data(), side.value().data());
}

#[test]
fn backward_with_a_seed_is_a_vector_jacobian_product() {
    // y = 3x element-wise; seed s gives ∂(s·y)/∂x = 3s.
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0, 3.0], &[3]));
    let y = x * 3.0;
    let g = y.backward_with(&t(&[1.0, 0.0, -2.0], &[3]));
    assert_eq!(g[x].data(), &[3.0, 0.0, -6.0]);
}

#[test]
fn retained_intermediate_gradients() {
    // h = 2x, L = h²: ∂L/∂h = 2h = 4x.
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.5));
    let h = (x * 2.0).retain_grad();
    let g = (h * h).backward();
    assert_eq!(g[h].item(), 6.0);
    assert_eq!(g[x].item(), 12.0);
}

#[test]
fn tape_statistics_count_nodes_and_owned_bytes() {
    let p = Param::new(Tensor::<f32>::zeros(&[100]));
    let tape = Tape::new();
    let empty = TapeStats {
        nodes: 0,
        bytes: 0,
        peak_bytes: 0,
    };
    assert_eq!(tape.stats(), empty);
    let w = tape.param(&p); // the model owns this storage
    let x = tape.constant(Tensor::zeros(&[10, 10])); // 400 bytes
    let y = x.reshape(&[100]); // a view: no new storage
    let z = (y * w).detach(); // 400 bytes for the product; detach shares it
    let _ = z;
    assert_eq!(
        tape.stats(),
        TapeStats {
            nodes: 5,
            bytes: 800,
            peak_bytes: 800
        }
    );
}

#[test]
fn a_hundred_thousand_step_chain_backprops_and_drops_without_recursion() {
    // h_t = tanh(h_{t-1}·w + x): 300,000 nodes, rewound in one loop and dropped flat.
    let w = Param::new(Tensor::<f32>::scalar(0.9));
    let tape = Tape::new();
    let wv = tape.param(&w);
    let x = tape.constant(Tensor::scalar(0.1));
    let mut h = tape.constant(Tensor::scalar(0.0));
    for _ in 0..100_000 {
        h = (h * wv + x).tanh();
    }
    let grads = h.backward();
    assert!(grads[&w].item().is_finite());
    assert!(tape.len() > 300_000);
    drop(grads);
    drop(tape);
}

#[test]
fn gradcheck_reports_the_input_element_and_both_values() {
    /// Claims d(x²)/dx = x instead of 2x.
    struct WrongSquare;
    impl CustomOp<f64> for WrongSquare {
        fn name(&self) -> &str {
            "wrong_square"
        }
        fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
            inputs[0].map(|x| x * x)
        }
        fn backward(
            &self,
            inputs: &[&Tensor<f64>],
            _: &Tensor<f64>,
            g: &Tensor<f64>,
        ) -> Vec<Option<Tensor<f64>>> {
            let d = inputs[0]
                .data()
                .iter()
                .zip(g.data())
                .map(|(x, g)| x * g)
                .collect();
            vec![Some(Tensor::from_vec(d, inputs[0].shape()).unwrap())]
        }
    }
    let ok = t(&[0.0, 1.0], &[2]);
    let x = t(&[0.0, 1.0, 2.0, 3.0], &[2, 2]);
    let err = gradcheck(
        |tape, v| v[0] + tape.custom(WrongSquare, &[v[1]]).sum(),
        &[ok, x],
    )
    .unwrap_err();
    assert_eq!(err.input, 1);
    assert_eq!(err.element, vec![0, 1]);
    assert_eq!(err.analytical, 1.0);
    assert!((err.numerical - 2.0).abs() < 1e-6);
    assert_eq!(err.options, GradcheckOptions::default());
    let msg = err.to_string();
    assert!(msg.starts_with("gradcheck failed for input 1 at element [0, 1] (output element 0): analytical 1e0 vs numerical 2"), "{msg}");
}

/// A finite difference that is NaN or infinite sees nothing; the check fails there, naming the
/// input and the element, instead of passing. sqrt at 0 (x - ε < 0 makes f(x - ε) NaN), and a
/// custom sqrt whose backward is 2,000× too large probed within ε of 0: both used to pass.
#[test]
fn gradcheck_fails_where_the_finite_difference_is_not_finite() {
    struct WrongSqrt;
    impl CustomOp<f64> for WrongSqrt {
        fn name(&self) -> &str {
            "wrong_sqrt"
        }
        fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
            inputs[0].map(f64::sqrt)
        }
        fn backward(
            &self,
            _: &[&Tensor<f64>],
            out: &Tensor<f64>,
            g: &Tensor<f64>,
        ) -> Vec<Option<Tensor<f64>>> {
            // 2,000 × the true g / (2 √x).
            let d = out.data().iter().zip(g.data()).map(|(y, g)| 1000.0 * g / y);
            vec![Some(Tensor::from_vec(d.collect(), out.shape()).unwrap())]
        }
    }
    let ok = t(&[1.0], &[1]);
    let at_zero = t(&[1.0, 0.0], &[1, 2]);
    let err = gradcheck(|_, v| v[0] + v[1].sqrt().sum(), &[ok, at_zero]).unwrap_err();
    assert_eq!((err.input, err.element.clone()), (1, vec![0, 1]));
    assert!(!err.numerical.is_finite(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("gradcheck cannot check input 1 at element [0, 1] (output element 0): the finite difference is NaN"),
        "{msg}"
    );
    let err = gradcheck(
        |tape, v| tape.custom(WrongSqrt, &[v[0]]),
        &[t(&[5e-7], &[1])],
    )
    .unwrap_err();
    assert!(err.numerical.is_nan(), "{err}");
    // The second-order check sees the same: the recorded product's finite difference is NaN.
    let err = rewind::autograd::gradgradcheck(|_, v| v[0].sqrt(), &[t(&[5e-7], &[1])]).unwrap_err();
    assert!(err.numerical.is_nan(), "{err}");
}

#[test]
fn tensor_constructors() {
    assert_eq!(Tensor::<f32>::arange(4).data(), &[0.0, 1.0, 2.0, 3.0]);
    assert_eq!(Tensor::<f32>::full(&[2], 7.0).data(), &[7.0, 7.0]);
    assert_eq!(Tensor::<f64>::scalar(2.5).ndim(), 0);
    let a = Tensor::<f32>::normal(&[3], 0.0, 1.0, &mut StdRng::seed_from_u64(7));
    let b = Tensor::<f32>::normal(&[3], 0.0, 1.0, &mut StdRng::seed_from_u64(7));
    assert_eq!(a, b, "seeded sampling is reproducible");
    let u = Tensor::<f64>::uniform(&[1000], -0.5, 0.5, &mut StdRng::seed_from_u64(1));
    assert!(u.data().iter().all(|v| (-0.5..0.5).contains(v)));
    let m = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(m.get(&[1, 2]), 6.0);
    assert_eq!(m.reshape(&[3, 2]).get(&[2, 0]), 5.0);
}

#[test]
fn tensors_print_like_pytorch() {
    let m = Tensor::<f32>::from_vec(vec![1.0, 2.5, -3.25, 4.0], &[2, 2]).unwrap();
    assert_eq!(
        m.to_string(),
        "tensor([[ 1.0000,  2.5000],\n        [-3.2500,  4.0000]])"
    );
    assert_eq!(Tensor::<f32>::arange(3).to_string(), "tensor([0., 1., 2.])");
    assert_eq!(
        Tensor::<f64>::scalar(0.5).to_string(),
        "tensor(0.5000, dtype=torch.float64)"
    );
    let small = Tensor::<f32>::from_vec(vec![1e-5, 1.0], &[2]).unwrap();
    assert_eq!(small.to_string(), "tensor([1.0000e-05, 1.0000e+00])");
    let cube = Tensor::<f32>::arange(8).reshape(&[2, 2, 2]);
    assert_eq!(
        cube.to_string(),
        "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]])"
    );
    // Expected strings printed by PyTorch 2.15 for the same tensors.
    assert_eq!(
        Tensor::<f32>::arange(2000).to_string(),
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        1.9990e+03])"
    );
    assert_eq!(
        Tensor::<f32>::zeros(&[2, 2000]).to_string(),
        "tensor([[0., 0., 0.,  ..., 0., 0., 0.],\n        [0., 0., 0.,  ..., 0., 0., 0.]])"
    );
    let wide = Tensor::<f32>::from_vec(vec![123456.0, 1.5], &[2]).unwrap();
    assert_eq!(wide.to_string(), "tensor([1.2346e+05, 1.5000e+00])");
}

#[test]
fn checkpoint_recomputes_inside_backward_and_keeps_only_outputs() {
    // A chain of 8 checkpointed segments, each 16 steps of h = tanh(h·w + x), against the same
    // chain recorded whole: equal gradients, and the outer tape holds only segment outputs.
    let w = Param::new(Tensor::<f64>::from_vec(vec![0.3, -0.2, 0.5, 0.1], &[2, 2]).unwrap());
    let x = Tensor::<f64>::from_vec(vec![0.1, -0.4], &[1, 2]).unwrap();
    let whole = Tape::new();
    let (wv, xv) = (whole.param(&w), whole.constant(x.clone()));
    let mut h = whole.constant(Tensor::zeros(&[1, 2]));
    for _ in 0..128 {
        h = (h.matmul(wv) + xv).tanh();
    }
    let expected = h.sum().backward()[&w].clone();

    let tape = Tape::new();
    let (wv, xv) = (tape.param(&w), tape.constant(x));
    let mut h = tape.constant(Tensor::zeros(&[1, 2]));
    for _ in 0..8 {
        h = tape.checkpoint(&[h, wv, xv], |_, v| {
            let mut h = v[0];
            for _ in 0..16 {
                h = (h.matmul(v[1]) + v[2]).tanh();
            }
            vec![h]
        })[0];
    }
    let got = h.sum().backward()[&w].clone();
    for (a, b) in got.data().iter().zip(expected.data()) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
    assert!(
        tape.stats().bytes * 4 < whole.stats().bytes,
        "{:?} vs {:?}",
        tape.stats(),
        whole.stats()
    );
    assert!(
        tape.stats().peak_bytes > tape.stats().bytes,
        "recomputation is counted in the peak"
    );
}

/// One checkpoint around a whole chain holds, at its peak, what the chain holds unchecked: its
/// values once while the function first runs, and once again while backward recomputes them (not
/// twice: the inner tape's own count still includes the values dropped after the first run).
/// Parameters are counted by neither tape, whether passed in or read inside the function.
#[test]
fn a_checkpoint_peak_counts_its_values_once_in_forward_and_in_backward() {
    const H: usize = 64;
    let spread = |n: usize, scale: f64| -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f64 / 101.0 - 0.5) * scale)
            .collect()
    };
    let w = Param::new(Tensor::<f64>::from_vec(spread(H * H, 0.3), &[H, H]).unwrap());
    let x = Tensor::from_vec(spread(H, 1.0), &[1, H]).unwrap();
    fn chain<'t>(
        mut h: rewind::autograd::Var<'t, f64>,
        w: rewind::autograd::Var<'t, f64>,
        x: rewind::autograd::Var<'t, f64>,
    ) -> rewind::autograd::Var<'t, f64> {
        for _ in 0..64 {
            h = (h.matmul(w) + x).tanh();
        }
        h
    }
    let whole = Tape::new();
    let (wv, xv) = (whole.param(&w), whole.constant(x.clone()));
    let h0 = whole.constant(Tensor::zeros(&[1, H]));
    let _ = chain(h0, wv, xv).sum().backward();
    let unchecked = whole.stats().peak_bytes as f64;

    for read_inside in [false, true] {
        let tape = Tape::new();
        let (wv, xv) = (tape.param(&w), tape.constant(x.clone()));
        let h0 = tape.constant(Tensor::zeros(&[1, H]));
        let h = match read_inside {
            false => tape.checkpoint(&[h0, wv, xv], |_, v| vec![chain(v[0], v[1], v[2])])[0],
            true => tape.checkpoint(&[h0, xv], |inner, v| {
                vec![chain(v[0], inner.param(&w), v[1])]
            })[0],
        };
        let forward = tape.stats().peak_bytes as f64;
        assert!(
            (0.9..=1.1).contains(&(forward / unchecked)),
            "W read inside {read_inside}: while the function ran, {forward} bytes, the unchecked chain {unchecked}"
        );
        let _ = h.sum().backward();
        let backward = tape.stats().peak_bytes as f64;
        assert!(
            (0.9..=1.1).contains(&(backward / unchecked)),
            "W read inside {read_inside}: during backward, {backward} bytes, the unchecked chain {unchecked}"
        );
    }
}

#[test]
fn checkpoint_runs_its_function_once_and_replays_the_record() {
    // f borrows a counter and reads the parameter itself; backward replays what f recorded
    // (twice, for two backward passes) without calling f again, and the parameter's gradient
    // reaches the caller's tape.
    let w = Param::new(Tensor::<f64>::from_vec(vec![0.3, -0.7], &[1, 2]).unwrap());
    let calls = std::cell::Cell::new(0);
    let tape = Tape::new();
    let x = tape.var(t(&[0.5, 2.0], &[1, 2]));
    let y = tape.checkpoint(&[x], |inner, v| {
        calls.set(calls.get() + 1);
        vec![(v[0] * inner.param(&w)).tanh().sum()]
    })[0];
    let first = y.backward();
    let second = y.backward();
    assert_eq!(calls.get(), 1);
    // ∂/∂x_j Σ tanh(x_j w_j) = w_j (1 - tanh²(x_j w_j)), and symmetrically for w.
    let (xs, ws): ([f64; 2], [f64; 2]) = ([0.5, 2.0], [0.3, -0.7]);
    for j in 0..2 {
        let slope = 1.0 - (xs[j] * ws[j]).tanh().powi(2);
        for g in [&first, &second] {
            assert!((g[x].data()[j] - ws[j] * slope).abs() < 1e-15);
            assert!((g[&w].data()[j] - xs[j] * slope).abs() < 1e-15);
        }
    }
}

#[test]
fn a_checkpoint_inside_a_checkpoint_replays_both() {
    // tanh(tanh(x·w)·w) with the inner tanh in its own region, against the same recorded whole.
    let w = Param::new(Tensor::<f64>::scalar(0.8));
    let whole = Tape::new();
    let x = whole.var(Tensor::scalar(0.4));
    let wv = whole.param(&w);
    let expected = ((x * wv).tanh() * wv).tanh().backward();
    let tape = Tape::new();
    let xv = tape.var(Tensor::scalar(0.4));
    let y = tape.checkpoint(&[xv], |outer, v| {
        let inner = outer.checkpoint(&[v[0]], |t, u| vec![(u[0] * t.param(&w)).tanh()])[0];
        vec![(inner * outer.param(&w)).tanh()]
    })[0];
    let got = y.backward();
    assert!((got[xv].item() - expected[x].item()).abs() < 1e-15);
    assert!((got[&w].item() - expected[&w].item()).abs() < 1e-15);
}

/// `A·Bᵀ` and its gradients against plain loops, at sizes on both sides of the point where a
/// product is split across threads: at least 2^21 flops (`2·m·k·n`, matmul.rs's
/// `PARALLEL_FLOPS`), split into bands of C's rows, or of its columns when C is wider than tall.
/// Each element is still one thread's whole sum, so it stays within rounding of the plain loop.
fn large_products_match_plain_loops<F: Float>(eps: f64) {
    let mut rng = StdRng::seed_from_u64(11);
    for (m, k, n) in [
        (64, 128, 127), // 2^21 - 16,384 flops: one thread
        (128, 128, 64), // 2^21: bands of rows
        (64, 128, 128), // 2^21: bands of columns
        (4, 512, 1024), // 2^22: bands of columns of a short C
    ] {
        let what = format!("{} {m}×{k}×{n}", F::DTYPE);
        let one = F::from_f64(1.0);
        let a = Tensor::<F>::uniform(&[m, k], -one, one, &mut rng);
        let bt = Tensor::<F>::uniform(&[n, k], -one, one, &mut rng);
        let (ad, bd) = (a.data(), bt.data());
        // A sum of rounded products is within `count·eps·Σ|term|` of the exact one; the plain
        // loop in f64 and the product under test each get that much.
        let near = |got: F, terms: &mut dyn Iterator<Item = f64>| {
            let (exact, size, count) = terms.fold((0.0, 0.0, 0.0), |(s, z, c), t: f64| {
                (s + t, z + t.abs(), c + 1.0)
            });
            (got.to_f64() - exact).abs() <= 2.0 * count * eps * size
        };
        let tape = Tape::new();
        let (av, bv) = (tape.var(a.clone()), tape.var(bt.clone()));
        let c = av.matmul(bv.t());
        let value = c.value();
        let cd = value.data();
        for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
            let mut terms = (0..k).map(|p| ad[i * k + p].to_f64() * bd[j * k + p].to_f64());
            assert!(near(cd[i * n + j], &mut terms), "{what}: C[{i}, {j}]");
        }
        // ∂ΣC/∂A[i, p] = Σ_j B[j, p] and ∂ΣC/∂B[j, p] = Σ_i A[i, p]: the backward products
        // cross the same threshold.
        let g = c.sum().backward();
        let (ga, gb) = (g[av].data(), g[bv].data());
        for p in 0..k {
            for i in 0..m {
                let mut terms = (0..n).map(|j| bd[j * k + p].to_f64());
                assert!(near(ga[i * k + p], &mut terms), "{what}: ∂A[{i}, {p}]");
            }
            for j in 0..n {
                let mut terms = (0..m).map(|i| ad[i * k + p].to_f64());
                assert!(near(gb[j * k + p], &mut terms), "{what}: ∂B[{j}, {p}]");
            }
        }
    }
}

#[test]
fn large_products_split_across_threads_match_a_plain_loop() {
    large_products_match_plain_loops::<f64>(f64::EPSILON);
    large_products_match_plain_loops::<f32>(f32::EPSILON as f64);
}

#[test]
fn a_parameter_product_over_an_empty_inner_dimension_is_zero() {
    // x [2, 0] · W [0, 3]: every element is an empty sum, and both gradients are empty. (A
    // parameter read by few rows takes the packed kernel, which once failed to pack a weight
    // of no rows.)
    let w = Param::new(Tensor::<f32>::zeros(&[0, 3]));
    let tape = Tape::new();
    let x = tape.var(Tensor::<f32>::zeros(&[2, 0]));
    let y = x.matmul(tape.param(&w));
    assert_eq!(y.value().data(), &[0.0; 6]);
    let g = y.sum().backward();
    assert_eq!(g[x].shape(), &[2, 0]);
    assert_eq!(g[&w].shape(), &[0, 3]);
}

#[test]
fn cross_entropy_takes_targets_of_any_integer_type() {
    // A stream's tokens are usize; PyTorch's targets are i64 (with -100 to skip): both serve,
    // and give the same loss and gradient.
    let logits = t(&[0.3, -1.2, 2.0, 0.5, 0.1, -0.4], &[2, 3]);
    let run = |f: &dyn Fn(rewind::autograd::Var<'_, f64>) -> rewind::autograd::Var<'_, f64>| {
        let tape = Tape::new();
        let x = tape.var(logits.clone());
        let loss = f(x);
        (loss.item(), loss.backward()[x].clone())
    };
    let wide = run(&|x| x.cross_entropy(&[2i64, 0]));
    for other in [
        run(&|x| x.cross_entropy(&[2usize, 0])),
        run(&|x| x.cross_entropy(&[2u8, 0])),
        run(&|x| x.cross_entropy(&[2i32, 0])),
    ] {
        assert_eq!(other.0, wide.0);
        assert_eq!(other.1.data(), wide.1.data());
    }
}

#[test]
fn a_batched_parameter_on_the_right_of_a_matmul_gets_its_gradient() {
    // A parameter [1, 3, 2] read by a product of batch one (3-D, so its first axis counts
    // batches, not rows) once panicked in backward, where per-step weight gradients are stacked.
    let w = Param::new(t(&[0.1, -0.2, 0.3, 0.4, -0.5, 0.6], &[1, 3, 2]));
    let x = t(&[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], &[1, 2, 3]);
    let tape = Tape::new();
    let y = tape.constant(x).matmul(tape.param(&w));
    let g = y.sum().backward()[&w].clone();
    // ∂Σ(xW)/∂W[0, k, j] = Σ_i x[0, i, k]: column sums 0, 2.5, 5 of x, repeated along j.
    assert_eq!(g.shape(), &[1, 3, 2]);
    assert_eq!(g.data(), &[0.0, 0.0, 2.5, 2.5, 5.0, 5.0]);
}

/// In code generic over `F: Float`, `1.0 - z` cannot be written; `z.rsub(1.0)` and
/// `z.rdiv(1.0)` give what the concrete `1.0 - z` and `1.0 / z` give, with their gradients.
#[test]
fn rsub_and_rdiv_serve_code_generic_over_the_float() {
    use rewind::autograd::{Float, Var};
    fn gru_mix<'t, F: Float>(z: Var<'t, F>, n: Var<'t, F>, h: Var<'t, F>) -> Var<'t, F> {
        z.rsub(F::ONE) * n + z * h
    }
    let tape = Tape::<f64>::new();
    let z = tape.var(t(&[0.2, 0.7, -0.4], &[3]));
    let (n, h) = (
        tape.var(t(&[1.5, -2.0, 0.5], &[3])),
        tape.var(t(&[0.3, 0.1, 0.9], &[3])),
    );
    assert_eq!(gru_mix(z, n, h).value(), ((1.0 - z) * n + z * h).value());
    assert_eq!(z.rdiv(3.0).value(), (3.0 / z).value());
    gradcheck(
        |_, v| gru_mix(v[0], v[1], v[2]).sum() + v[0].rdiv(3.0).sum(),
        &[
            t(&[0.2, 0.7, -0.4], &[3]),
            t(&[1.5, -2.0, 0.5], &[3]),
            t(&[0.3, 0.1, 0.9], &[3]),
        ],
    )
    .unwrap();
}

/// Gradients of shards of one batch add up to the batch's: `Grads::sum` (per parameter, across
/// the cores, in the parts' order) and `accumulate` (one part at a time) both give the gradient
/// of the summed loss, a parameter only one part has included, and refuse parts whose shapes
/// disagree.
#[test]
fn gradients_of_shards_sum_to_the_batchs() {
    let w = Param::named("w", t(&[0.5, -1.0, 2.0, 0.25], &[2, 2]));
    let b = Param::named("b", t(&[0.1, -0.2], &[2]));
    let x = t(&[1.0, 2.0, -1.0, 0.5, 3.0, -2.0], &[3, 2]);
    let loss_of = |rows: std::ops::Range<usize>| {
        let tape = Tape::new();
        let xs = tape.constant(x.narrow(0, rows.start, rows.len()));
        let y = xs.matmul(tape.param(&w)) + tape.param(&b);
        (y.tanh() * y).sum().backward()
    };
    let whole = loss_of(0..3);
    let parts = [loss_of(0..1), loss_of(1..3)];
    let summed = Grads::sum(&parts);
    let mut accumulated = Grads::default();
    parts.iter().for_each(|p| accumulated.accumulate(p));
    for grads in [&summed, &accumulated] {
        for p in [&w, &b] {
            for (x, y) in grads[p].data().iter().zip(whole[p].data()) {
                assert!((x - y).abs() < 1e-14, "{:?}: {x} vs {y}", p.name());
            }
        }
    }
    let mut scaled = Grads::sum(&parts);
    scaled.scale(0.5);
    assert_eq!(scaled[&w].data()[0], 0.5 * summed[&w].data()[0]);

    // Parts with different parameters sum side by side.
    let (mut one, mut other) = (Grads::default(), Grads::default());
    one.insert(&b, t(&[1.0, 2.0], &[2])).unwrap();
    other.insert(&w, t(&[1.0; 4], &[2, 2])).unwrap();
    let both = Grads::sum(&[one, other]);
    assert_eq!(
        (both.len(), both[&b].data(), both[&w].data()),
        (2, &[1.0, 2.0][..], &[1.0; 4][..])
    );
}

/// A plain tensor's `narrow` and `concat` are `torch.narrow` and `torch.cat`: pieces along any
/// axis (negative counting from the end) join back into the whole.
#[test]
fn plain_tensors_narrow_and_concat_as_torch() {
    let x = t(&(0..24).map(f64::from).collect::<Vec<_>>(), &[2, 3, 4]);
    for axis in [0isize, 1, 2, -1] {
        let size = x.shape()[axis.rem_euclid(3) as usize];
        let head = x.narrow(axis, 0, 1);
        let tail = x.narrow(axis, 1, size - 1);
        assert_eq!(Tensor::concat(&[head, tail], axis), x, "axis {axis}");
    }
    let lanes = x.narrow(1, 1, 2);
    assert_eq!(lanes.shape(), &[2, 2, 4]);
    assert_eq!(&lanes.data()[..4], &[4.0, 5.0, 6.0, 7.0]);
    assert_eq!(&lanes.data()[8..12], &[16.0, 17.0, 18.0, 19.0]);
}
