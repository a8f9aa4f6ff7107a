//! Exact Hessians and Gauss-Newton matrices of small closed forms, built column by column from
//! `hvp` and `gnvp` against unit vectors and compared with their formulas to ~1e-12; and `hvp`
//! against finite differences of the plain gradient.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{CrossEntropyOptions, Reduction, Tape, Tensor, Var};

/// A matrix as its rows.
type Matrix = Vec<Vec<f64>>;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut StdRng) -> Tensor<f64> {
    Tensor::uniform(shape, lo, hi, rng)
}

/// One direction per variable, all zero but element `k` of all the variables' elements taken in
/// order: the k-th unit vector of the flattened parameter space.
fn unit(shapes: &[Vec<usize>], k: usize) -> Vec<Tensor<f64>> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|s| {
            let mut t = Tensor::zeros(s);
            if (offset..offset + t.numel()).contains(&k) {
                t.data_mut()[k - offset] = 1.0;
            }
            offset += t.numel();
            t
        })
        .collect()
}

/// The matrix whose k-th column is `product(e_k)`, flattened over the variables, for `n` unit
/// vectors e_k over variables of shapes `shapes`.
fn by_columns(
    shapes: &[Vec<usize>],
    product: impl Fn(&[Tensor<f64>]) -> Vec<Tensor<f64>>,
) -> Matrix {
    let n: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let mut m = vec![vec![0.0; n]; n];
    for k in 0..n {
        let column: Vec<f64> = product(&unit(shapes, k))
            .iter()
            .flat_map(|t| t.data().to_vec())
            .collect();
        for (row, v) in m.iter_mut().zip(column) {
            row[k] = v;
        }
    }
    m
}

/// The Hessian of `f` with respect to `wrt`, one `hvp` per column.
fn hessian<'t>(f: Var<'t, f64>, wrt: &[Var<'t, f64>]) -> Matrix {
    let shapes: Vec<Vec<usize>> = wrt.iter().map(|v| v.shape().to_vec()).collect();
    by_columns(&shapes, |e| f.hvp(wrt, e))
}

#[track_caller]
fn assert_matrix_close(got: &Matrix, expected: &Matrix, tol: f64) {
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        for (j, (a, b)) in g.iter().zip(e).enumerate() {
            assert!((a - b).abs() <= tol, "entry ({i}, {j}): {a} vs {b}");
        }
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// diag(p) - ppᵀ, the Hessian of log Σ exp at a point whose softmax is p.
fn softmax_curvature(p: &[f64]) -> Matrix {
    let n = p.len();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| if i == j { p[i] } else { 0.0 } - p[i] * p[j])
                .collect()
        })
        .collect()
}

fn matmul(a: &Matrix, b: &Matrix) -> Matrix {
    let (n, k, m) = (a.len(), b.len(), b[0].len());
    (0..n)
        .map(|i| {
            (0..m)
                .map(|j| (0..k).map(|l| a[i][l] * b[l][j]).sum())
                .collect()
        })
        .collect()
}

fn transpose(a: &Matrix) -> Matrix {
    (0..a[0].len())
        .map(|j| a.iter().map(|row| row[j]).collect())
        .collect()
}

#[test]
fn quadratic_hessian_is_the_symmetric_part_of_a() {
    // f = ½xᵀAx + bᵀx: H = (A + Aᵀ)/2, whatever x and b.
    let mut r = rng(1);
    let n = 4;
    let a = uniform(&[n, n], -1.0, 1.0, &mut r);
    let tape = Tape::<f64>::new();
    let x = tape.var(uniform(&[n], -1.0, 1.0, &mut r));
    let b = tape.constant(uniform(&[n], -1.0, 1.0, &mut r));
    let f = x.matmul(tape.constant(a.clone()).matmul(x)) * 0.5 + x.matmul(b);
    let expected: Matrix = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| 0.5 * (a.get(&[i, j]) + a.get(&[j, i])))
                .collect()
        })
        .collect();
    assert_matrix_close(&hessian(f, &[x]), &expected, 1e-15);
}

#[test]
fn log_sum_exp_hessian_is_diag_p_minus_p_pt() {
    let xs = uniform(&[5], -2.0, 2.0, &mut rng(2));
    let expected = softmax_curvature(&softmax(xs.data()));
    let tape = Tape::<f64>::new();
    let x = tape.var(xs);
    // Two ways: ln Σ exp x, and x_0 - log_softmax(x)_0.
    let lse = x.exp().sum().ln();
    let through_log_softmax = (x - x.log_softmax(0)).narrow(0, 0, 1).sum();
    assert_matrix_close(&hessian(lse, &[x]), &expected, 1e-12);
    assert_matrix_close(&hessian(through_log_softmax, &[x]), &expected, 1e-12);
}

#[test]
fn tanh_chain_hessian_in_x_and_w() {
    // f = tanh(s), s = Σ_j w_j·t_j, t = tanh x. With y = f, φ = 1 - y², d_i = 1 - t_i²:
    // f_ab = -2yφ·s_a·s_b + φ·s_ab, where s_x_i = w_i·d_i, s_w_i = t_i and
    // s_x_i x_j = δ_ij·w_i·(-2t_i·d_i), s_x_i w_j = δ_ij·d_i, s_w_i w_j = 0.
    let mut r = rng(3);
    let n = 3;
    let (xs, ws) = (
        uniform(&[n], -1.5, 1.5, &mut r),
        uniform(&[n], -1.5, 1.5, &mut r),
    );
    let tape = Tape::<f64>::new();
    let (x, w) = (tape.var(xs.clone()), tape.var(ws.clone()));
    let f = (w * x.tanh()).sum().tanh();

    let t: Vec<f64> = xs.data().iter().map(|v| v.tanh()).collect();
    let d: Vec<f64> = t.iter().map(|t| 1.0 - t * t).collect();
    let wd = ws.data();
    let y = f.item();
    let phi = 1.0 - y * y;
    // s_a for a over (x_0 .. x_n-1, w_0 .. w_n-1), and s_ab.
    let s1: Vec<f64> = (0..n).map(|i| wd[i] * d[i]).chain(t.clone()).collect();
    let s2 = |a: usize, b: usize| match (a < n, b < n) {
        _ if a % n != b % n => 0.0,
        (true, true) => wd[a] * (-2.0 * t[a] * d[a]),
        (true, false) | (false, true) => d[a % n],
        (false, false) => 0.0,
    };
    let expected: Matrix = (0..2 * n)
        .map(|a| {
            (0..2 * n)
                .map(|b| -2.0 * y * phi * s1[a] * s1[b] + phi * s2(a, b))
                .collect()
        })
        .collect();
    assert_matrix_close(&hessian(f, &[x, w]), &expected, 1e-12);
}

/// The Hessian of a cross-entropy in its logits z [N, C]: block n is
/// a_n·(diag(p_n) - p_n·p_nᵀ)/divisor, p_n = softmax(z_n), where a_n is the row's total target
/// weight, (1 - ε)·w_t + (ε/C)·Σ_c w_c (0 for an ignored row).
fn cross_entropy_hessian(z: &Tensor<f64>, a: &[f64], divisor: f64) -> Matrix {
    let (rows, classes) = (z.shape()[0], z.shape()[1]);
    let mut h = vec![vec![0.0; rows * classes]; rows * classes];
    for n in 0..rows {
        let p = softmax(&z.data()[n * classes..(n + 1) * classes]);
        for (i, row) in softmax_curvature(&p).iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                h[n * classes + i][n * classes + j] = a[n] * v / divisor;
            }
        }
    }
    h
}

#[test]
fn cross_entropy_hessian_in_the_logits() {
    let (n, c) = (3, 4);
    let logits = uniform(&[n, c], -2.0, 2.0, &mut rng(4));
    let tape = Tape::<f64>::new();
    let z = tape.var(logits.clone());
    // Mean over rows: (diag(p) - ppᵀ)/N per row, whatever the targets.
    let mean = z.cross_entropy(&[2, 0, 3]);
    let expected = cross_entropy_hessian(&logits, &[1.0; 3], n as f64);
    assert_matrix_close(&hessian(mean, &[z]), &expected, 1e-12);
    // Weights w, smoothing ε = 0.1, row 1 ignored, summed: a_n = 0.9·w_t + (0.1/4)·Σ w.
    let w = [0.5, 2.0, 1.0, 1.5];
    let options = CrossEntropyOptions {
        weight: Some(Tensor::from_vec(w.to_vec(), &[c]).unwrap()),
        label_smoothing: 0.1,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let summed = z.cross_entropy_with(&[2, -100, 3], options.clone());
    let all: f64 = w.iter().sum();
    let a = [0.9 * w[2] + 0.025 * all, 0.0, 0.9 * w[3] + 0.025 * all];
    let expected = cross_entropy_hessian(&logits, &a, 1.0);
    assert_matrix_close(&hessian(summed, &[z]), &expected, 1e-12);
    // The same averaged: divided by the counted targets' weights, w_2 + w_3.
    let averaged = z.cross_entropy_with(
        &[2, -100, 3],
        CrossEntropyOptions {
            reduction: Reduction::Mean,
            ..options
        },
    );
    let expected = cross_entropy_hessian(&logits, &a, w[2] + w[3]);
    assert_matrix_close(&hessian(averaged, &[z]), &expected, 1e-12);
}

/// z = tanh(x·Wᵀ + b) for x [N, D], W [C, D], b [C], and its Jacobian in (W, b) flattened:
/// row n·C + c, columns W_kj at k·D + j, then b_k at C·D + k. With d = 1 - z²,
/// ∂z_nc/∂W_kj = [c = k]·d_nc·x_nj and ∂z_nc/∂b_k = [c = k]·d_nc.
fn tanh_layer_jacobian(x: &Tensor<f64>, z: &Tensor<f64>) -> Matrix {
    let (rows, dim, classes) = (x.shape()[0], x.shape()[1], z.shape()[1]);
    let mut jac = vec![vec![0.0; classes * dim + classes]; rows * classes];
    for n in 0..rows {
        for c in 0..classes {
            let d = 1.0 - z.get(&[n, c]).powi(2);
            let row = &mut jac[n * classes + c];
            for j in 0..dim {
                row[c * dim + j] = d * x.get(&[n, j]);
            }
            row[classes * dim + c] = d;
        }
    }
    jac
}

#[test]
fn gnvp_is_jt_hl_j_for_a_tanh_layer_with_squared_error_and_cross_entropy() {
    let mut r = rng(5);
    let (n, d, c) = (3, 2, 3);
    let x = uniform(&[n, d], -1.0, 1.0, &mut r);
    let target = uniform(&[n, c], -1.0, 1.0, &mut r);
    let (w0, b0) = (
        uniform(&[c, d], -1.0, 1.0, &mut r),
        uniform(&[c], -1.0, 1.0, &mut r),
    );
    let shapes = [vec![c, d], vec![c]];
    let tape = Tape::<f64>::new();
    let (w, b) = (tape.var(w0), tape.var(b0));
    let z = (tape.constant(x.clone()).matmul(w.t()) + b).tanh();
    let jac = tanh_layer_jacobian(&x, &z.value());
    let jt = transpose(&jac);

    // Squared error, mean over the N·C outputs: H_L = 2/(N·C)·I.
    let squared = (z - tape.constant(target)).powf(2.0).mean();
    let scale = 2.0 / (n * c) as f64;
    let g_squared: Matrix = matmul(&jt, &jac)
        .into_iter()
        .map(|row| row.into_iter().map(|v| scale * v).collect())
        .collect();
    let gnvp = by_columns(&shapes, |e| squared.gnvp(z, &[w, b], e));
    assert_matrix_close(&gnvp, &g_squared, 1e-12);
    // It is not the Hessian, which adds tanh's curvature times the residual.
    let h = by_columns(&shapes, |e| squared.hvp(&[w, b], e));
    let apart = h.iter().flatten().zip(g_squared.iter().flatten());
    assert!(apart.map(|(p, q)| (p - q).abs()).fold(0.0, f64::max) > 1e-2);

    // Cross-entropy on z as logits: H_L = blockdiag(diag(p_n) - p_n·p_nᵀ)/N.
    let entropy = z.cross_entropy(&[0, 2, 1]);
    let h_l = cross_entropy_hessian(&z.value(), &[1.0; 3], n as f64);
    let g_entropy = matmul(&jt, &matmul(&h_l, &jac));
    let gnvp = by_columns(&shapes, |e| entropy.gnvp(z, &[w, b], e));
    assert_matrix_close(&gnvp, &g_entropy, 1e-12);
}

/// One LSTM step and a linear read-out under cross-entropy, in the parameters
/// p = (w_ih [8, 3], w_hh [8, 2], w_out [2, 3]), with data (x [2, 3], h [2, 2], c [2, 2]).
fn lstm_loss<'t>(tape: &'t Tape<f64>, p: &[Var<'t, f64>], data: &[Tensor<f64>]) -> Var<'t, f64> {
    let [x, h, c] = [0, 1, 2].map(|k| tape.constant(data[k].clone()));
    let gates = x.matmul(p[0].t()) + h.matmul(p[1].t());
    let (h, c) = gates.lstm_cell(c);
    (h.matmul(p[2]) + c.sum_axis(1, true)).cross_entropy(&[1, 2])
}

#[test]
fn hvp_equals_central_differences_of_the_gradient() {
    let mut r = rng(6);
    let data = [
        uniform(&[2, 3], -1.0, 1.0, &mut r),
        uniform(&[2, 2], -1.0, 1.0, &mut r),
        uniform(&[2, 2], -1.0, 1.0, &mut r),
    ];
    let shapes = [[8, 3], [8, 2], [2, 3]];
    let theta: Vec<Tensor<f64>> = shapes
        .iter()
        .map(|s| uniform(s, -1.0, 1.0, &mut r))
        .collect();
    let v: Vec<Tensor<f64>> = shapes
        .iter()
        .map(|s| uniform(s, -1.0, 1.0, &mut r))
        .collect();
    let gradient = |step: f64| -> Vec<Tensor<f64>> {
        let tape = Tape::<f64>::new();
        let p: Vec<Var<'_, f64>> = theta
            .iter()
            .zip(&v)
            .map(|(t, v)| {
                let moved: Vec<f64> = t
                    .data()
                    .iter()
                    .zip(v.data())
                    .map(|(t, v)| t + step * v)
                    .collect();
                tape.var(Tensor::from_vec(moved, t.shape()).unwrap())
            })
            .collect();
        let grads = lstm_loss(&tape, &p, &data).backward();
        p.iter().map(|v| grads[*v].clone()).collect()
    };
    let eps = 1e-5;
    let (plus, minus) = (gradient(eps), gradient(-eps));
    let tape = Tape::<f64>::new();
    let p: Vec<Var<'_, f64>> = theta.iter().map(|t| tape.var(t.clone())).collect();
    let hv = lstm_loss(&tape, &p, &data).hvp(&p, &v);
    for ((hv, plus), minus) in hv.iter().zip(&plus).zip(&minus) {
        for ((h, p), m) in hv.data().iter().zip(plus.data()).zip(minus.data()) {
            let numerical = (p - m) / (2.0 * eps);
            assert!((h - numerical).abs() < 1e-8, "{h} vs {numerical}");
        }
    }
    assert!(hv.iter().flat_map(|t| t.data()).any(|h| h.abs() > 1e-2));
}
