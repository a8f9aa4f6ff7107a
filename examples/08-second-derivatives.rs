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
    twice_by_grad_graph();
    logistic_regression(&mut rng);
    through_time(&mut rng);
    println!("every second derivative: checked");
}

/// (1) y = x σ(x): y' = s + x s(1 − s), y'' = s(1 − s)(2 + x(1 − 2s)), s = σ(x).
fn twice_by_grad_graph() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(0.7));
    let y = x * x.sigmoid();
    let dy = y.grad_graph(&[x])[0]; // a Var: recorded, so it can be differentiated
    let d2y = dy.grad_graph(&[x])[0];
    let (x, s) = (0.7, 1.0 / (1.0 + (-0.7f64).exp()));
    let dy_hand = s + x * s * (1.0 - s);
    let d2y_hand = s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s));
    println!("(1) y'  tape {:.15}  hand {dy_hand:.15}", dy.item());
    println!("    y'' tape {:.15}  hand {d2y_hand:.15}", d2y.item());
    assert!((dy.item() - dy_hand).abs() < 1e-14 && (d2y.item() - d2y_hand).abs() < 1e-14);
}

/// (2) L(w) = mean over rows of softplus(z) − t·z, z = X w: the logistic loss for labels t.
fn logistic_regression(rng: &mut StdRng) {
    let (n, d) = (20, 3);
    let data = Tensor::<f64>::uniform(&[n, d], -2.0, 2.0, rng);
    let labels = Tensor::<f64>::uniform(&[n, 1], 0.0, 1.0, rng).map(f64::round);
    let v = Tensor::<f64>::uniform(&[d, 1], -1.0, 1.0, rng);
    let tape = Tape::<f64>::new();
    let w = tape.var(Tensor::uniform(&[d, 1], -1.0, 1.0, rng));
    let z = tape.constant(data.clone()).matmul(w);
    let loss = ((z.exp() + 1.0).ln() - z * tape.constant(labels)).mean();
    let hv = loss.hvp(&[w], std::slice::from_ref(&v)).remove(0);
    let p = z.value().map(|z| 1.0 / (1.0 + (-z).exp()));
    let mut hand = vec![0.0; d]; // Σ_i x_i p_i(1 − p_i)(x_i · v) / N
    for (row, p) in data.data().chunks(d).zip(p.data()) {
        let xv: f64 = row.iter().zip(v.data()).map(|(a, b)| a * b).sum();
        let weight = p * (1.0 - p) * xv / n as f64;
        hand.iter_mut().zip(row).for_each(|(h, a)| *h += weight * a);
    }
    println!("(2) Hv tape {:?}\n       hand {hand:?}", hv.data());
    let hand = Tensor::from_vec(hand, &[d, 1]).expect("d values");
    let agree = hv.allclose_with(&hand, 0.0, 1e-12);
    assert!(agree, "Hv of the logistic loss: {hv} vs {hand}");
}

/// (3) An RNN stack and a linear head, L the mean squared error over every step.
struct Sequences {
    rnn: Rnn<f64>,
    head: Linear<f64>,
    inputs: Tensor<f64>,
    targets: Tensor<f64>,
}

impl Sequences {
    fn params(&self) -> Vec<&Param<f64>> {
        let all = self.rnn.params().into_iter().chain(self.head.params());
        all.map(|(_, p)| p).collect()
    }

    /// A method, not a closure: the loss borrows the tape it is given, and a closure's return
    /// type cannot name that borrow.
    fn loss<'t>(&self, tape: &'t Tape<f64>) -> Var<'t, f64> {
        let x = tape.constant(self.inputs.clone());
        let out = self.rnn.forward(tape, x, None, None);
        let error = self.head.forward(tape, out.output) - tape.constant(self.targets.clone());
        (error * error).mean()
    }

    /// ∇L at θ + shift·v, then θ put back.
    fn gradient_at(&self, shift: f64, v: &[Tensor<f64>]) -> Vec<Tensor<f64>> {
        let params = self.params();
        let saved: Vec<Tensor<f64>> = params.iter().map(|p| p.value()).collect();
        for (p, v) in params.iter().zip(v) {
            p.set(&p.value() + &(v * shift));
        }
        let grads = self.loss(&Tape::new()).backward();
        for (p, saved) in params.iter().zip(saved) {
            p.set(saved);
        }
        params.iter().map(|p| grads[*p].clone()).collect()
    }
}

fn through_time(rng: &mut StdRng) {
    let problem = Sequences {
        rnn: Rnn::init(RecurrentConfig::new(2, 4), rng),
        head: Linear::init(4, 1, rng),
        inputs: Tensor::uniform(&[6, 3, 2], -1.0, 1.0, rng), // [T, B, in]
        targets: Tensor::uniform(&[6, 3, 1], -1.0, 1.0, rng),
    };
    let params = problem.params();
    let v: Vec<Tensor<f64>> = params
        .iter()
        .map(|p| Tensor::uniform(&p.shape(), -1.0, 1.0, rng))
        .collect();
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = params.iter().map(|p| tape.param(p)).collect();
    let hv = problem.loss(&tape).hvp(&vars, &v);
    // Central differences of the gradient along v: (∇L(θ + εv) − ∇L(θ − εv)) / 2ε → Hv.
    let eps = 1e-5;
    let (plus, minus) = (problem.gradient_at(eps, &v), problem.gradient_at(-eps, &v));
    for (i, (hv, (plus, minus))) in hv.iter().zip(plus.iter().zip(&minus)).enumerate() {
        let fd = &(plus - minus) / (2.0 * eps);
        let agree = hv.allclose_with(&fd, 1e-7, 1e-7);
        assert!(agree, "Hv of parameter {i}: {hv} vs {fd}");
    }
    println!(
        "(3) Hv through BPTT = central differences to 1e-7, all {} parameters",
        hv.len()
    );
}
