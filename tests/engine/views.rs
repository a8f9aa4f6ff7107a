//! Views (transposes, permutes, reshapes) read by any op, and chains of views, with `retain_grad`
//! anywhere along them: everything must behave as if every view were materialised.
//!
//! A transpose of the last two axes is recorded lazily so that a matmul can read its source by
//! stride; these tests pin down that the laziness is invisible.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{gradcheck, Tape, Tensor, Var};

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// A chain of views applied to a value.
type View = fn(Var<'_, f64>) -> Var<'_, f64>;

/// A copy of `v` recorded as an ordinary (materialised) node: `1·v + 0`.
fn materialised<'t>(v: Var<'t, f64>) -> Var<'t, f64> {
    v.affine(1.0, 0.0)
}

fn assert_close(what: &str, a: &Tensor<f64>, b: &Tensor<f64>) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn a_transpose_of_a_transpose_is_the_value_for_every_reader() {
    let x = random(&[3, 4], 1);
    let tape = Tape::new();
    let v = tape.var(x.clone());
    let tt = v.t().t();
    assert_eq!(tt.value(), x);
    let y = (tt.exp() * tt).sum();
    let g = y.backward();
    // d/dx Σ x e^x = e^x (1 + x)
    let expected = x.map(|a| a.exp() * (1.0 + a));
    assert_close("d/dx", &g[v], &expected);
}

#[test]
fn chains_of_views_read_by_any_op_match_finite_differences() {
    let x = random(&[2, 3, 4], 2);
    let chains: [(&str, View); 6] = [
        ("t().t()", |v| v.t().t()),
        ("transpose(1, 2).permute([2, 0, 1])", |v| {
            v.transpose(1, 2).permute(&[2, 0, 1])
        }),
        ("t().reshape", |v| v.t().reshape(&[6, 4])),
        ("t().t().t() then sum_axis", |v| {
            v.t().t().t().sum_axis(1, false)
        }),
        ("t().narrow", |v| v.t().narrow(1, 1, 2)),
        ("t().t() * t().t()", |v| v.t().t() * v.t().t()),
    ];
    for (name, chain) in chains {
        let weights = random(&chain(Tape::new().constant(x.clone())).shape(), 3);
        let result = gradcheck(
            |tape, v| (chain(v[0]).tanh() * tape.constant(weights.clone())).sum(),
            std::slice::from_ref(&x),
        );
        assert!(result.is_ok(), "{name}: {}", result.unwrap_err());
    }
}

/// Runs `graph` twice, once with `view` lazy and once with it materialised, each retaining the
/// view's gradient, and compares the retained gradient and the source's gradient.
fn retained_matches_materialised(
    name: &str,
    x: &Tensor<f64>,
    view: View,
    graph: for<'t> fn(&'t Tape<f64>, Var<'t, f64>) -> Var<'t, f64>,
) {
    let lazy = Tape::new();
    let xl = lazy.var(x.clone());
    let vl = view(xl).retain_grad();
    let gl = graph(&lazy, vl).backward();

    let plain = Tape::new();
    let xp = plain.var(x.clone());
    let vp = materialised(view(xp)).retain_grad();
    let gp = graph(&plain, vp).backward();

    let kept = gl
        .wrt(vl)
        .unwrap_or_else(|| panic!("{name}: the retained view got no gradient"));
    assert_close(&format!("{name}: retained view"), kept, &gp[vp]);
    assert_close(&format!("{name}: source"), &gl[xl], &gp[xp]);
}

#[test]
fn retain_grad_on_a_pending_transpose_read_by_matmul_gives_its_whole_gradient() {
    let w = random(&[5, 3], 4);
    let a = random(&[4, 3], 5);
    let b = random(&[3, 4], 6);
    retained_matches_materialised(
        "x·wᵀ",
        &w,
        |v| v.t(),
        |tape, wt| {
            let x = tape.constant(random(&[4, 3], 7));
            x.matmul(wt).tanh().sum()
        },
    );
    retained_matches_materialised(
        "aᵀ·x (left operand)",
        &a,
        |v| v.t(),
        |tape, at| {
            let x = tape.constant(random(&[4, 2], 8));
            at.matmul(x).tanh().sum()
        },
    );
    // The view read twice: by matmul and by an element-wise op.
    retained_matches_materialised(
        "bᵀ read twice",
        &b,
        |v| v.t(),
        |tape, bt| {
            let x = tape.constant(random(&[2, 4], 9));
            x.matmul(bt).sum() + (bt * bt).sum()
        },
    );
    // A chain of two pending transposes, the outer one retained.
    retained_matches_materialised(
        "(wᵀ)ᵀ",
        &w,
        |v| v.t().t(),
        |tape, w2| {
            let x = tape.constant(random(&[2, 3], 10));
            x.matmul(w2.t()).sum()
        },
    );
    // addmm reads its operands the same way.
    retained_matches_materialised(
        "addmm",
        &w,
        |v| v.t(),
        |tape, wt| {
            let x = tape.constant(random(&[4, 3], 11));
            let bias = tape.constant(random(&[5], 12));
            bias.addmm(x, wt).powf(2.0).sum()
        },
    );
}

#[test]
fn retain_grad_in_the_middle_of_a_chain_read_by_matmul() {
    let w = random(&[3, 5], 13);
    let lazy = Tape::new();
    let wl = lazy.var(w.clone());
    let mid = wl.t().retain_grad();
    let x = lazy.constant(random(&[2, 3], 14));
    let gl = x.matmul(mid.t()).sum().backward();

    let plain = Tape::new();
    let wp = plain.var(w.clone());
    let midp = materialised(wp.t()).retain_grad();
    let xp = plain.constant(random(&[2, 3], 14));
    let gp = xp.matmul(materialised(midp.t())).sum().backward();

    let kept = gl
        .wrt(mid)
        .expect("the middle of the chain got no gradient");
    assert_close("middle", kept, &gp[midp]);
    assert_close("source", &gl[wl], &gp[wp]);
}

#[test]
fn retain_grad_after_the_matmul_was_recorded() {
    let w = random(&[4, 3], 15);
    let tape = Tape::new();
    let wv = tape.var(w.clone());
    let wt = wv.t();
    let x = tape.constant(random(&[2, 3], 16));
    let loss = x.matmul(wt).sum();
    let wt = wt.retain_grad();
    let g = loss.backward();
    // d/d(wᵀ) Σ x·wᵀ = xᵀ·1: column sums of x repeated along each row.
    let kept = g.wrt(wt).expect("no gradient for the retained transpose");
    assert_eq!(kept.shape(), &[3, 4]);
    assert_close("d/dwᵀ transposed back", &kept_t(kept), &g[wv]);
}

fn kept_t(t: &Tensor<f64>) -> Tensor<f64> {
    let tape = Tape::new();
    tape.constant(t.clone()).t().value()
}

#[test]
fn batched_transposes_of_transposes() {
    let x = random(&[2, 3, 4], 17);
    let y = random(&[2, 3, 5], 18);
    let result = gradcheck(
        |_, v| {
            let xt = v[0].t().t().t(); // [2, 4, 3]
            (xt.matmul(v[1]).sigmoid() + xt.t().sum_axis(-1, true).sum()).sum()
        },
        &[x, y],
    );
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

#[test]
fn select_takes_one_index_along_an_axis_and_drops_the_axis() {
    // torch.select(x, dim, i) = x.narrow(dim, i, 1).squeeze(dim)
    let x = random(&[2, 3, 4], 19);
    let tape = Tape::new();
    let v = tape.constant(x.clone());
    let s = v.select(1, 2);
    assert_eq!(s.shape().as_slice(), &[2, 4]);
    assert_eq!(s.value(), v.narrow(1, 2, 1).squeeze(1).value());
    assert_eq!(
        v.select(-1, 0).value(),
        v.narrow(2, 0, 1).squeeze(2).value()
    );
    let result = gradcheck(
        |tape, v| (v[0].select(0, 1).tanh() * tape.constant(random(&[3, 4], 20))).sum(),
        std::slice::from_ref(&x),
    );
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

#[test]
#[should_panic(expected = "select: index 3 out of range for axis 1 of shape [2, 3, 4]")]
fn select_out_of_range_names_the_index_axis_and_shape() {
    let tape = Tape::new();
    tape.constant(random(&[2, 3, 4], 21)).select(1, 3);
}

#[test]
fn rows_share_the_storage_and_a_write_to_either_side_copies_first() {
    let x = Tensor::<f64>::from_vec((0..24).map(f64::from).collect(), &[4, 3, 2]).unwrap();
    let mid = x.rows(1, 2);
    assert_eq!(mid.shape(), &[2, 3, 2]);
    assert!(mid.shares_storage(&x));
    assert_eq!(mid.data(), &x.data()[6..18]);
    assert_eq!(mid.nbytes(), 12 * 8);
    // A window of a window, and a reshape of one, read the right elements.
    let last = mid.rows(1, 1).reshape(&[6]);
    assert_eq!(last.data(), &x.data()[12..18]);
    assert_eq!(last.get(&[5]), 17.0);
    assert_eq!(mid.get(&[1, 0, 1]), 13.0);
    // Writing to the view copies its window first: the source is untouched.
    let mut written = mid.clone();
    written.data_mut()[0] = -1.0;
    assert_eq!(written.data()[..2], [-1.0, 7.0]);
    assert_eq!(written.numel(), 12);
    assert!(!written.shares_storage(&x));
    assert_eq!(x.get(&[1, 0, 0]), 6.0);
    assert_eq!(mid.data()[0], 6.0);
    // And writing to the source leaves the view as it was.
    let mut source = x.clone();
    source.data_mut()[6] = 100.0;
    assert_eq!(mid.data()[0], 6.0);
    assert_eq!(mid.clone().into_vec(), x.data()[6..18].to_vec());
    assert_eq!(
        mid,
        Tensor::from_vec(x.data()[6..18].to_vec(), &[2, 3, 2]).unwrap()
    );
    assert_eq!(x.rows(4, 0).numel(), 0);
}

#[test]
#[should_panic(expected = "rows: rows 3..5 out of range for shape [4, 2]")]
fn rows_out_of_range_name_the_rows_and_the_shape() {
    Tensor::<f32>::zeros(&[4, 2]).rows(3, 2);
}

#[test]
fn narrow_over_leading_rows_is_a_view_that_the_tape_does_not_count_twice() {
    let x = random(&[5, 3, 4], 11);
    let tape = Tape::new();
    let v = tape.var(x.clone());
    let before = tape.stats().bytes;
    // Contiguous windows: rows of the leading axis, or any axis after axes of one.
    let rows = v.narrow(0, 1, 3);
    let inner = rows.narrow(0, 2, 1).narrow(1, 1, 2);
    assert_eq!(tape.stats().bytes, before, "the windows copied their input");
    assert!(rows.value().shares_storage(&x));
    assert!(inner.value().shares_storage(&x));
    assert_eq!(rows.value().data(), &x.data()[12..48]);
    assert_eq!(inner.value().data(), &x.data()[40..48]);
    // A window that is not contiguous is gathered, and counted.
    let cols = v.narrow(1, 1, 2);
    assert_eq!(tape.stats().bytes, before + cols.value().nbytes());
    assert_eq!(cols.value().get(&[4, 0, 3]), x.get(&[4, 1, 3]));
}

#[test]
fn windows_of_rows_read_by_any_op_match_finite_differences() {
    let x = random(&[4, 3, 2], 12);
    let w = random(&[2, 5], 13);
    let result = gradcheck(
        |_, v| {
            let rows = v[0].narrow(0, 1, 2);
            let step = rows.narrow(0, 1, 1).reshape(&[3, 2]);
            // A product reading a window by stride, an elementwise op, and overlapping windows
            // whose gradients add into one input.
            materialised(
                step.matmul(v[1]).tanh().sum() + (rows * rows).sum() + v[0].narrow(0, 0, 3).sum(),
            )
        },
        &[x, w],
    );
    assert!(result.is_ok(), "{}", result.unwrap_err());
}

/// An op whose result equals its input (a broadcast or reshape to the shape it has, an identity
/// permute, a narrow of everything, one piece, `scale_grad(1)`, dropout in evaluation mode) is
/// still a node of its own: the gradient at the result counts only the paths through it.
/// x = [[1, 2, 3], [4, 5, 6]], y = op(x), L = Σ 3y + Σ 5x: ∂L/∂y = 3 everywhere (PyTorch's
/// `retain_grad` on `x.broadcast_to(x.shape)` gives 3, not 8), and ∂L/∂x = 8.
#[test]
fn an_op_that_returns_its_input_unchanged_is_still_its_own_node() {
    let dropout = rewind::nn::Dropout::new(0.5, 7);
    dropout.set_training(false);
    let no_dropout = rewind::nn::Dropout::new(0.0, 7);
    type Identity = Box<dyn for<'t> Fn(Var<'t, f64>) -> Var<'t, f64>>;
    let ops: Vec<(&str, Identity)> = vec![
        (
            "broadcast_to(same shape)",
            Box::new(|v| v.broadcast_to(&[2, 3])),
        ),
        ("reshape(same shape)", Box::new(|v| v.reshape(&[2, 3]))),
        ("permute([0, 1])", Box::new(|v| v.permute(&[0, 1]))),
        ("transpose(1, 1)", Box::new(|v| v.transpose(1, 1))),
        ("narrow(0, 0, 2)", Box::new(|v| v.narrow(0, 0, 2))),
        (
            "unsqueeze(0).squeeze(0)",
            Box::new(|v| v.unsqueeze(0).squeeze(0)),
        ),
        (
            "flatten().reshape",
            Box::new(|v| v.flatten().reshape(&[2, 3])),
        ),
        ("chunk(1, 0)[0]", Box::new(|v| v.chunk(1, 0)[0])),
        ("split(5, 1)[0]", Box::new(|v| v.split(5, 1)[0])),
        (
            "index_select([0, 1])",
            Box::new(|v| v.index_select(&[0, 1])),
        ),
        (
            "concat([x])",
            Box::new(|v| rewind::autograd::concat(&[v], 0)),
        ),
        ("t().t()", Box::new(|v| v.t().t())),
        ("scale_grad(1)", Box::new(|v| v.scale_grad(1.0))),
        (
            "dropout in evaluation mode",
            Box::new(move |v| dropout.forward(v.tape(), v)),
        ),
        (
            "dropout with p = 0",
            Box::new(move |v| no_dropout.forward(v.tape(), v)),
        ),
    ];
    let x0 = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    for (name, op) in &ops {
        let tape = Tape::new();
        let x = tape.var(x0.clone());
        let y = op(x).retain_grad();
        assert_eq!(y.value(), x0, "{name}: the value changed");
        let loss = (y * 3.0).sum() + (x * 5.0).sum();
        let g = loss.backward();
        assert!(
            g[y].data().iter().all(|&d| d == 3.0),
            "{name}: dL/dy = {:?}, expected 3 everywhere",
            g[y].data()
        );
        assert!(
            g[x].data().iter().all(|&d| d == 8.0),
            "{name}: dL/dx = {:?}",
            g[x].data()
        );
    }
}
