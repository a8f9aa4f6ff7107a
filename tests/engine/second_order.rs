//! Second derivatives: `grad_graph`, `hvp`, `gnvp` and `gradgradcheck`.

use rewind_autograd::{gradgradcheck, Tape, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

#[test]
fn smoke_elementwise() {
    let x = t(&[0.3, -1.2, 2.0, 0.7], &[2, 2]);
    let y = t(&[1.3, 0.2, -0.5, 0.9], &[2, 2]);
    gradgradcheck(
        |_, v| (v[0].tanh() * v[1]).exp() / (v[1] * v[1] + 1.0),
        &[x.clone(), y.clone()],
    )
    .unwrap();
    gradgradcheck(
        |_, v| v[0].matmul(v[1].t()).softmax(1),
        &[x.clone(), y.clone()],
    )
    .unwrap();
    gradgradcheck(
        |_, v| v[0].matmul(v[1]).log_softmax(0).sum_axis(1, false),
        &[x, y],
    )
    .unwrap();
}

#[test]
fn smoke_hvp() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, -2.0], &[2]));
    let f = x.powf(3.0).sum();
    let hv = f.hvp(&[x], &[t(&[1.0, 1.0], &[2])]);
    assert_eq!(hv[0].data(), &[6.0, -12.0]);
}

#[test]
#[should_panic(expected = "variable 1 needs no gradient (a constant)")]
fn a_constant_among_the_variables_is_refused() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[1.0, 2.0], &[2]));
    let c = tape.constant(t(&[3.0], &[1]));
    let f = (x * c).powf(2.0).sum();
    f.hvp(&[x, c], &[t(&[1.0, 0.0], &[2]), t(&[1.0], &[1])]);
}

/// The element-wise derivatives are written once, as generic functions that `backward` runs on
/// numbers and `grad_graph` on recorded `Var`s (crates/autograd/src/primitives/pointwise.rs):
/// the two passes must then agree to the bit, in f32, broadcast operands and all. A derivative
/// edited in one pass only fails here.
#[test]
fn pointwise_first_derivatives_agree_bit_for_bit_in_both_passes() {
    use rewind_autograd::Var;
    let xs: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.37).collect();
    let x = Tensor::from_vec(xs, &[3, 4]).unwrap();
    let pos = x.map(|v| v.abs() + 0.25);
    let row = Tensor::from_vec(vec![0.7f32, -1.3, 2.1, 0.45], &[1, 4]).unwrap();
    let w = Tensor::from_vec((0..12).map(|i| 1.0 - i as f32 * 0.19).collect(), &[3, 4]).unwrap();
    type Op = for<'t> fn(Var<'t, f32>, Var<'t, f32>) -> Var<'t, f32>;
    let ops: [(&str, Op, bool); 15] = [
        ("add", |a, b| a + b, false),
        ("sub", |a, b| a - b, false),
        ("mul", |a, b| a * b, false),
        ("div", |a, b| a / b, false),
        ("affine", |a, _| a * 1.7 - 0.3, false),
        ("powf", |a, _| a.powf(2.5), true),
        ("powf 0", |a, _| a.powf(0.0), true),
        ("exp", |a, _| a.exp(), false),
        ("ln", |a, _| a.ln(), true),
        ("sqrt", |a, _| a.sqrt(), true),
        ("tanh", |a, _| a.tanh(), false),
        ("sigmoid", |a, _| a.sigmoid(), false),
        ("relu", |a, _| a.relu(), false),
        ("clamp", |a, _| a.clamp(-0.5, 0.8), false),
        ("neg", |a, _| -a, false),
    ];
    for (name, op, positive) in ops {
        let a_value = if positive { &pos } else { &x };
        let tape = Tape::<f32>::new();
        let (a, b) = (tape.var(a_value.clone()), tape.var(row.clone()));
        let loss = (op(a, b) * tape.constant(w.clone())).sum();
        let grads = loss.backward();
        let recorded = loss.grad_graph(&[a, b]);
        for (k, v) in [a, b].into_iter().enumerate() {
            let Some(plain) = grads.wrt(v) else {
                continue;
            };
            let recorded = recorded[k].value();
            let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(plain), bits(&recorded), "{name}: operand {k}");
        }
    }
}
