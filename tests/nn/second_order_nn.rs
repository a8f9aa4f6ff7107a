//! Second derivatives through rewind-nn's recurrent stacks and heads, checked in f64 against
//! central differences of the recorded gradient (`Var::grad_graph`), with
//! torch.autograd.gradgradcheck's tolerances (ε 1e-6, atol 1e-5, rtol 1e-3).
//!
//! Two checks cover the whole Hessian of each model's output contracted with a random u:
//! - `gradgradcheck` over the inputs and initial states (∂²/∂x², and the terms in u);
//! - `gradgradcheck_params` below over every parameter θ: the Jacobian in θ of the recorded
//!   gradient with respect to θ and the inputs (∂²/∂θ² and the mixed ∂²/∂θ∂x), entry by entry,
//!   against central differences taken by moving each parameter element, as `gradcheck_module`
//!   moves them for first derivatives.
//!
//! Every stack is two layers, bidirectional, over sequences of different lengths, small enough
//! (input 3, H 2, T 4, batch 2) that each Jacobian is a few hundred entries square.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::autograd::{concat, gradgradcheck, GradcheckOptions, Param, Tape, Tensor, Var};
use rewind::nn::loss::cross_entropy;
use rewind::nn::{
    nested, CellState, Gru, GruCell, Linear, Lstm, LstmCell, Module, Nonlinearity, Recurrent,
    RecurrentConfig, RnnCell, Run, StackState, StandardCell,
};

const T: usize = 4;
const BATCH: usize = 2;
const INPUT: usize = 3;
const HIDDEN: usize = 2;
const LENGTHS: [usize; BATCH] = [4, 2];

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uniform(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, rng)
}

/// Two layers, both directions.
fn config() -> RecurrentConfig {
    RecurrentConfig::new(INPUT, HIDDEN)
        .num_layers(2)
        .bidirectional(true)
}

/// Every value a stack returns, flattened into one vector: the output, then each state part.
fn flat<'t>(output: Var<'t, f64>, state: &[Var<'t, f64>]) -> Var<'t, f64> {
    let parts: Vec<Var<'t, f64>> = std::iter::once(output)
        .chain(state.iter().copied())
        .map(|v| v.flatten())
        .collect();
    concat(&parts, 0)
}

/// `gradgradcheck(f, inputs)`, panicking with the input's name.
#[track_caller]
fn second_order_in_inputs<Fun>(f: Fun, names: &[&str], inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    if let Err(e) = gradgradcheck(f, inputs) {
        let name = names
            .get(e.input)
            .copied()
            .unwrap_or("the output's gradient u");
        panic!("with respect to {name}: {e}");
    }
}

/// The second-order check in the parameters: for a fixed random u (normal, seeded) of f's output
/// shape, G(θ) = uᵀ·∂f/∂(θ, x), recorded with `grad_graph_with` and flattened, has its Jacobian in
/// θ taken by backward (one pass per entry of G) and by central differences (moving each
/// parameter element by ±ε); every entry must agree within atol + rtol·|numerical|.
///
/// `f` gets the model and the inputs `inputs` as leaves; the model reads its parameters with
/// `tape.param`, which is how they enter the recorded gradient.
#[track_caller]
fn gradgradcheck_params<M, Fun>(model: &M, f: Fun, inputs: &[Tensor<f64>])
where
    M: Module<f64>,
    Fun: for<'t> Fn(&'t Tape<f64>, &M, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let GradcheckOptions { eps, atol, rtol } = GradcheckOptions::default();
    let params = model.params();
    let u = {
        let tape = Tape::new();
        let xs: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.constant(x.clone())).collect();
        Tensor::normal(&f(&tape, model, &xs).shape(), 0.0, 1.0, &mut rng(0x5eed))
    };
    let recorded_gradient =
        |tape: &Tape<f64>| -> Tensor<f64> { gradient(tape, model, &f, inputs, &u).value() };

    // analytical[o][p] = ∂G_o/∂θ_p, θ_p every parameter element in order.
    let analytical: Vec<Vec<f64>> = {
        let tape = Tape::new();
        let g = gradient(&tape, model, &f, inputs, &u);
        // Finite differences of G only test G's derivative; G itself must be the gradient that
        // the plain backward pass (gradchecked on its own) gives.
        let plain = plain_gradient(model, &f, inputs, &u);
        let worst = max_relative_error(&g.value(), &plain);
        assert!(
            worst < 1e-12,
            "the recorded gradient differs from backward's by {worst:e}"
        );
        (0..g.shape()[0])
            .map(|o| {
                let mut seed = Tensor::zeros(&g.shape());
                seed.data_mut()[o] = 1.0;
                let grads = g.backward_with(&seed);
                params
                    .iter()
                    .flat_map(|(_, p)| match grads.get(p) {
                        Some(d) => d.data().to_vec(),
                        None => vec![0.0; p.value().numel()],
                    })
                    .collect()
            })
            .collect()
    };
    assert!(
        analytical.iter().flatten().any(|&a| a.abs() > 1e-3),
        "the second derivatives in θ are all (nearly) zero: the check would prove nothing"
    );

    let mut column = 0;
    for (name, p) in &params {
        for e in 0..p.value().numel() {
            let x = p.value().data()[e];
            set(p, e, x + eps);
            let plus = recorded_gradient(&Tape::new());
            set(p, e, x - eps);
            let minus = recorded_gradient(&Tape::new());
            set(p, e, x);
            for (o, row) in analytical.iter().enumerate() {
                let numerical = (plus.data()[o] - minus.data()[o]) / (2.0 * eps);
                let a = row[column];
                assert!(
                    (a - numerical).abs() <= atol + rtol * numerical.abs(),
                    "∂G_{o}/∂{name}[{e}]: analytical {a:e} vs numerical {numerical:e}"
                );
            }
            column += 1;
        }
    }
}

/// G = uᵀ·∂f/∂(θ, x), flattened: the recorded gradient, every parameter's first, then the
/// inputs'.
fn gradient<'t, M, Fun>(
    tape: &'t Tape<f64>,
    model: &M,
    f: &Fun,
    inputs: &[Tensor<f64>],
    u: &Tensor<f64>,
) -> Var<'t, f64>
where
    M: Module<f64>,
    Fun: for<'s> Fn(&'s Tape<f64>, &M, &[Var<'s, f64>]) -> Var<'s, f64>,
{
    let xs: Vec<Var<'t, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let y = f(tape, model, &xs);
    let wrt: Vec<Var<'t, f64>> = model
        .params()
        .iter()
        .map(|(_, p)| tape.param(p))
        .chain(xs)
        .collect();
    let grads = y.grad_graph_with(tape.constant(u.clone()), &wrt);
    let flat: Vec<Var<'t, f64>> = grads.into_iter().map(|g| g.flatten()).collect();
    concat(&flat, 0)
}

/// uᵀ·∂f/∂(θ, x) from the plain backward pass, flattened as [`gradient`] flattens it.
fn plain_gradient<M, Fun>(
    model: &M,
    f: &Fun,
    inputs: &[Tensor<f64>],
    u: &Tensor<f64>,
) -> Tensor<f64>
where
    M: Module<f64>,
    Fun: for<'s> Fn(&'s Tape<f64>, &M, &[Var<'s, f64>]) -> Var<'s, f64>,
{
    let tape = Tape::new();
    let xs: Vec<Var<'_, f64>> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let grads = f(&tape, model, &xs).backward_with(u);
    let zeros = |n: usize| vec![0.0; n];
    let mut data = Vec::new();
    for (_, p) in model.params() {
        data.extend(
            grads
                .get(p)
                .map_or_else(|| zeros(p.value().numel()), |g| g.data().to_vec()),
        );
    }
    for (x, v) in inputs.iter().zip(&xs) {
        data.extend(
            grads
                .wrt(*v)
                .map_or_else(|| zeros(x.numel()), |g| g.data().to_vec()),
        );
    }
    let n = data.len();
    Tensor::from_vec(data, &[n]).expect("one vector")
}

/// max |a - b| / max |b|.
fn max_relative_error(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.data().iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = a
        .data()
        .iter()
        .zip(b.data())
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn set(p: &Param<f64>, element: usize, value: f64) {
    p.update(|t| t.data_mut()[element] = value);
}

/// A stack's output and final states from `v` = [x, h_0] (and c_0 for an LSTM), with `LENGTHS`.
fn stack_outputs<'t, C: StandardCell<f64>>(
    tape: &'t Tape<f64>,
    stack: &Recurrent<C, f64>,
    v: &[Var<'t, f64>],
) -> Var<'t, f64> {
    let initial = StackState {
        h: v[1],
        c: v.get(2).copied(),
    };
    let out = stack.forward(tape, v[0], Some(initial), Some(&LENGTHS));
    flat(out.output, &out.state.parts())
}

/// Both checks on a stack of `C` from `seed`, with h_0 (and c_0 when `has_c`) given.
fn check_stack<C: StandardCell<f64>>(config: RecurrentConfig, has_c: bool, seed: u64) {
    let mut r = rng(seed);
    let stack = Recurrent::<C, f64>::init(config, &mut r);
    let states = [4, BATCH, HIDDEN];
    let mut inputs = vec![
        uniform(&[T, BATCH, INPUT], &mut r),
        uniform(&states, &mut r),
    ];
    let mut names = vec!["x", "h_0"];
    if has_c {
        inputs.push(uniform(&states, &mut r));
        names.push("c_0");
    }
    second_order_in_inputs(|t, v| stack_outputs(t, &stack, v), &names, &inputs);
    gradgradcheck_params(&stack, stack_outputs, &inputs);
}

#[test]
fn rnn_tanh_stack_second_derivatives() {
    check_stack::<RnnCell<f64>>(config(), false, 1);
}

#[test]
fn rnn_relu_stack_second_derivatives() {
    check_stack::<RnnCell<f64>>(config().nonlinearity(Nonlinearity::Relu), false, 2);
}

#[test]
fn lstm_stack_second_derivatives() {
    check_stack::<LstmCell<f64>>(config(), true, 3);
}

#[test]
fn gru_stack_second_derivatives() {
    check_stack::<GruCell<f64>>(config(), false, 4);
}

/// A checkpointed run (segments of 2 steps, recomputed in backward) from the learned initial
/// state: the output and final states from `v` = [x].
fn checkpointed_outputs<'t, C: StandardCell<f64>>(
    tape: &'t Tape<f64>,
    stack: &Recurrent<C, f64>,
    v: &[Var<'t, f64>],
) -> Var<'t, f64> {
    let run = Run {
        lengths: Some(&LENGTHS),
        checkpoint_every: Some(2),
        ..Run::default()
    };
    let out = stack.forward_with(tape, v[0], None, &run);
    flat(out.output, &out.state.parts())
}

#[test]
fn checkpointed_lstm_and_gru_from_a_learned_initial_state_second_derivatives() {
    let mut r = rng(5);
    let config = config().learn_initial_state(true);
    let lstm = Lstm::<f64>::init(config, &mut r);
    let gru = Gru::<f64>::init(config, &mut r);
    // A learned initial state starts at zero; move it, so its second derivatives are general.
    for (name, p) in lstm.params().into_iter().chain(gru.params()) {
        if name.ends_with("_0") {
            p.set(uniform(&p.shape(), &mut r));
        }
    }
    let x = [uniform(&[T, BATCH, INPUT], &mut r)];
    second_order_in_inputs(|t, v| checkpointed_outputs(t, &lstm, v), &["x"], &x);
    gradgradcheck_params(&lstm, checkpointed_outputs, &x);
    second_order_in_inputs(|t, v| checkpointed_outputs(t, &gru, v), &["x"], &x);
    gradgradcheck_params(&gru, checkpointed_outputs, &x);
}

/// Class targets of five rows, one ignored.
const TARGETS: [i64; 5] = [0, 3, -100, 2, 1];

fn head_loss<'t>(tape: &'t Tape<f64>, head: &Linear<f64>, v: &[Var<'t, f64>]) -> Var<'t, f64> {
    cross_entropy(head.forward(tape, v[0]), &TARGETS)
}

#[test]
fn linear_cross_entropy_head_second_derivatives() {
    let mut r = rng(6);
    let head = Linear::<f64>::init(INPUT, 4, &mut r);
    let x = [uniform(&[TARGETS.len(), INPUT], &mut r)];
    second_order_in_inputs(|t, v| head_loss(t, &head, v), &["x"], &x);
    gradgradcheck_params(&head, head_loss, &x);
}

/// An LSTM tagger: a class for every step from a linear readout of the stack's output, the
/// cross-entropy averaged over the steps within each sequence's length.
struct Tagger {
    lstm: Lstm<f64>,
    head: Linear<f64>,
}

impl Module<f64> for Tagger {
    fn params(&self) -> Vec<(String, &Param<f64>)> {
        let mut all = nested("lstm", self.lstm.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

const CLASSES: usize = 3;

/// Step t of sequence b has the class (t + b) mod C, or -100 past the sequence's length.
fn tags() -> Vec<i64> {
    (0..T)
        .flat_map(|t| (0..BATCH).map(move |b| (t, b)))
        .map(|(t, b)| {
            if t < LENGTHS[b] {
                ((t + b) % CLASSES) as i64
            } else {
                -100
            }
        })
        .collect()
}

fn tagger_loss<'t>(tape: &'t Tape<f64>, m: &Tagger, v: &[Var<'t, f64>]) -> Var<'t, f64> {
    let out = m.lstm.forward(tape, v[0], None, Some(&LENGTHS));
    let logits = m.head.forward(tape, out.output);
    cross_entropy(logits.reshape(&[T * BATCH, CLASSES]), &tags())
}

#[test]
fn lstm_tagger_with_lengths_second_derivatives() {
    let mut r = rng(7);
    let tagger = Tagger {
        lstm: Lstm::<f64>::init(config(), &mut r),
        head: Linear::<f64>::init(2 * HIDDEN, CLASSES, &mut r),
    };
    let x = [uniform(&[T, BATCH, INPUT], &mut r)];
    second_order_in_inputs(|t, v| tagger_loss(t, &tagger, v), &["x"], &x);
    gradgradcheck_params(&tagger, tagger_loss, &x);
}
