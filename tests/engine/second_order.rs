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
