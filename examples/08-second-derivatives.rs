//! 08 · Second derivatives: a gradient recorded on the tape (`grad_graph`, PyTorch's
//! `create_graph=True`) is a value like any other, and can be differentiated again. A
//! Hessian-vector product Hv = ∇(∇L · v) costs a few gradients and never forms H.
//!
//! Checked: (1) d²/dx² of x·σ(x) against the closed form; (2) `hvp` for logistic regression
//! against its closed-form Hessian Xᵀ diag(p(1 − p)) X / N; (3) `hvp` through an RNN, BPTT
//! differentiated a second time, against central differences of the gradient.
//! Builds on `06-truncated-bptt.rs`. Next: the studies, starting with `examples/char_rnn/`;
//! `examples/hessian_free/` trains an RNN with these products.
//!
//! Run: `cargo run --example 08-second-derivatives`

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::nn::{Linear, RecurrentConfig, Rnn};
use rewind::prelude::*;

fn main() {
    let mut rng = StdRng::seed_from_u64(8);

    // (1) y = x σ(x): y' = s + x s(1 − s), y'' = s(1 − s)(2 + x(1 − 2s)), s = σ(x).
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(0.7));
    let y = x * x.sigmoid();
    let dy = y.grad_graph(&[x])[0]; // a Var: recorded, so differentiable
    let d2y = dy.grad_graph(&[x])[0];
    let (x, s) = (0.7, 1.0 / (1.0 + (-0.7f64).exp()));
    let (dy_hand, d2y_hand) = (
        s + x * s * (1.0 - s),
        s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s)),
    );
    println!("(1) y'  tape {:.15}  hand {dy_hand:.15}", dy.item());
    println!("    y'' tape {:.15}  hand {d2y_hand:.15}", d2y.item());
    assert!((dy.item() - dy_hand).abs() < 1e-14 && (d2y.item() - d2y_hand).abs() < 1e-14);

    // (2) L(w) = mean over rows of softplus(z) − t·z, z = X w: the logistic loss for labels t.
    let (n, d) = (20, 3);
    let data = Tensor::<f64>::uniform(&[n, d], -2.0, 2.0, &mut rng);
    let labels = Tensor::<f64>::uniform(&[n, 1], 0.0, 1.0, &mut rng).map(f64::round);
    let v = Tensor::<f64>::uniform(&[d, 1], -1.0, 1.0, &mut rng);
    let tape = Tape::<f64>::new();
    let w = tape.var(Tensor::uniform(&[d, 1], -1.0, 1.0, &mut rng));
    let z = tape.constant(data.clone()).matmul(w);
    let loss = ((z.exp() + 1.0).ln() - z * tape.constant(labels)).mean();
    let hv = loss.hvp(&[w], std::slice::from_ref(&v)).remove(0);
    let (xs, p) = (data.data(), z.value().map(|z| 1.0 / (1.0 + (-z).exp())));
    let mut hand = vec![0.0; d]; // Σ_i x_i p_i(1 − p_i)(x_i · v) / N
    for (i, row) in xs.chunks(d).enumerate() {
        let xv: f64 = row.iter().zip(v.data()).map(|(a, b)| a * b).sum();
        let weight = p.data()[i] * (1.0 - p.data()[i]) * xv / n as f64;
        hand.iter_mut().zip(row).for_each(|(h, a)| *h += weight * a);
    }
    println!("(2) Hv tape {:?}\n       hand {hand:?}", hv.data());
    assert!(
        hv.data()
            .iter()
            .zip(&hand)
            .all(|(a, b)| (a - b).abs() < 1e-12),
        "Hv of the logistic loss"
    );

    // (3) Through time: an RNN stack and a linear head, L = mean squared error over every step.
    let rnn = Rnn::<f64>::init(RecurrentConfig::new(2, 4), &mut rng);
    let head = Linear::<f64>::init(4, 1, &mut rng);
    let params: Vec<&Param<f64>> = rnn
        .params()
        .into_iter()
        .chain(head.params())
        .map(|(_, p)| p)
        .collect();
    let (inputs, targets) = (
        Tensor::uniform(&[6, 3, 2], -1.0, 1.0, &mut rng),
        Tensor::uniform(&[6, 3, 1], -1.0, 1.0, &mut rng),
    );
    let v: Vec<Tensor<f64>> = params
        .iter()
        .map(|p| Tensor::uniform(&p.shape(), -1.0, 1.0, &mut rng))
        .collect();
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = params.iter().map(|p| tape.param(p)).collect();
    let hv = mse(&tape, &rnn, &head, &inputs, &targets).hvp(&vars, &v);
    // Central differences of the gradient along v: (∇L(θ + εv) − ∇L(θ − εv)) / 2ε → Hv.
    let eps = 1e-5;
    let gradient_at = |shift: f64| {
        let originals: Vec<Tensor<f64>> = params.iter().map(|p| p.value()).collect();
        params
            .iter()
            .zip(&v)
            .for_each(|(p, v)| p.set(&p.value() + &(v * shift)));
        let grads = mse(&Tape::new(), &rnn, &head, &inputs, &targets).backward();
        params.iter().zip(originals).for_each(|(p, o)| p.set(o));
        params.iter().map(|p| grads[*p].clone()).collect::<Vec<_>>()
    };
    let (plus, minus) = (gradient_at(eps), gradient_at(-eps));
    let mut worst: f64 = 0.0;
    for ((hv, plus), minus) in hv.iter().zip(&plus).zip(&minus) {
        let fd = &(plus - minus) / (2.0 * eps);
        for (a, b) in hv.data().iter().zip(fd.data()) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
    }
    println!(
        "(3) Hv through BPTT vs finite differences over {} parameters: worst error {worst:.1e}",
        params.len()
    );
    assert!(
        worst < 1e-7,
        "Hv through the RNN disagrees with finite differences: {worst:e}"
    );
    println!("every second derivative: checked");
}

/// The RNN's loss as a function, not a closure: its result borrows the tape it is given, and a
/// closure's return type cannot name that borrow.
fn mse<'t>(
    tape: &'t Tape<f64>,
    rnn: &Rnn<f64>,
    head: &Linear<f64>,
    x: &Tensor<f64>,
    y: &Tensor<f64>,
) -> Var<'t, f64> {
    let out = rnn.forward(tape, tape.constant(x.clone()), None, None);
    (head.forward(tape, out.output) - tape.constant(y.clone()))
        .powf(2.0)
        .mean()
}
