//! 07 · Your own cell: implement `Module` (its parameters) and `Cell` (one step) for a cell the
//! library does not have, and it gets 05's stacks of layers and 06's `Carry` and `Bptt` driver.
//! Backward needs nothing from you: the step is ordinary ops.
//!
//! The cell is the minimal gated unit (Zhou et al. 2016), one gate f where an LSTM has three:
//! ```text
//! f  = σ(x W_fᵀ + b_f + h U_fᵀ)
//! h̃  = tanh(x W_hᵀ + b_h + (f ⊙ h) U_hᵀ)
//! h' = (1 − f) ⊙ h + f ⊙ h̃
//! ```
//! Checked: gradcheck of a two-layer stack of it; then, in 05's loop with only the cell changed,
//! it learns 05's recall task. For a state of two parts (h and c), a bidirectional stack and
//! checkpointed BPTT, read `examples/custom_cell/` (a peephole LSTM). Next:
//! `08-second-derivatives.rs`.
//!
//! Run: `cargo run --example 07-your-own-cell`

use rewind::autograd::rand::{rngs::StdRng, Rng, SeedableRng};
use rewind::nn::{gradcheck_module, nested, Linear, Recurrent, RecurrentConfig, StatePart};
use rewind::optim::Adam;
use rewind::prelude::*;

/// W_x = [W_f; W_h] [2H, in] and b = [b_f; b_h] [2H], the x side of both stacked by rows;
/// U_f and U_h [H, H].
struct Mgu<F: Float> {
    w_x: Param<F>,
    b: Param<F>,
    u_f: Param<F>,
    u_h: Param<F>,
}

impl<F: Float> Mgu<F> {
    fn new(input: usize, hidden: usize, rng: &mut impl Rng) -> Self {
        let k = F::from_f64(1.0 / (hidden as f64).sqrt()); // U(-1/√H, 1/√H), as PyTorch's cells
        let mut draw = |shape: &[usize]| Param::new(Tensor::uniform(shape, -k, k, rng));
        Mgu {
            w_x: draw(&[2 * hidden, input]),
            b: draw(&[2 * hidden]),
            u_f: draw(&[hidden, hidden]),
            u_h: draw(&[hidden, hidden]),
        }
    }
}

impl<F: Float> Module<F> for Mgu<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let names = ["w_x", "b", "u_f", "u_h"].map(String::from);
        names
            .into_iter()
            .zip([&self.w_x, &self.b, &self.u_f, &self.u_h])
            .collect()
    }
}

impl<F: Float> Cell<F> for Mgu<F> {
    type State<'t> = Var<'t, F>; // h alone

    fn input_size(&self) -> usize {
        self.w_x.shape()[1]
    }

    fn state_parts(&self) -> Vec<StatePart> {
        vec![StatePart::new("h", &[self.u_f.shape()[0]])]
    }

    /// x W_xᵀ + b for every step of the sequence in one product; `step` gets its own rows.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        x.matmul(tape.param(&self.w_x).t()) + tape.param(&self.b)
    }

    fn step<'t>(&self, tape: &'t Tape<F>, xp: Var<'t, F>, h: Var<'t, F>) -> Var<'t, F> {
        let hidden = h.shape()[1];
        let f = (xp.narrow(1, 0, hidden) + h.matmul(tape.param(&self.u_f).t())).sigmoid();
        let candidate =
            (xp.narrow(1, hidden, hidden) + (f * h).matmul(tape.param(&self.u_h).t())).tanh();
        h + f * (candidate - h) // (1 − f) ⊙ h + f ⊙ h̃, written without a scalar on the left
    }
}

/// A stack of the cells and a readout, one `Module` for the optimizer (as in 05).
struct Model {
    rnn: Recurrent<Mgu<f32>>,
    head: Linear,
}

impl Module for Model {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut all = nested("rnn", self.rnn.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let config = RecurrentConfig::new(2, 3).num_layers(2);
    let mut stack = Recurrent::with_cells(config, |i, h| Mgu::<f64>::new(i, h, &mut rng));
    let x = Tensor::uniform(&[5, 2, 2], -1.0, 1.0, &mut rng); // [T, B, in]
    gradcheck_module(&mut stack, |tape, s| {
        let out = s.forward(tape, tape.constant(x.clone()), None, None);
        (out.output * out.output).sum() + out.state.sum() // every step's output, and h_n
    })
    .expect("the cell's gradients agree with finite differences");
    println!("gradcheck of a 2-layer stack of the cell, every parameter: checked");

    // 05's task with the cell swapped: output the ±1 input of 3 steps before.
    const DELAY: usize = 3;
    let (steps, batch, hidden) = (16, 32, 16);
    let config = RecurrentConfig::new(1, hidden).num_layers(2);
    let mut model = Model {
        rnn: Recurrent::with_cells(config, |input, hidden| Mgu::new(input, hidden, &mut rng)),
        head: Linear::new(hidden, 1, &mut rng),
    };
    let mut adam = Adam::new(1e-2);
    let mut losses = Vec::new();
    for update in 0..=200 {
        let bits = Tensor::uniform(&[steps, batch, 1], -1.0, 1.0, &mut rng).map(f32::signum);
        let tape = Tape::new();
        let (rnn, head) = (&model.rnn, &model.head);
        let out = rnn.forward(&tape, tape.constant(bits.clone()), None, None);
        let prediction = head
            .forward(&tape, out.output)
            .narrow(0, DELAY, steps - DELAY);
        let target = tape.constant(bits).narrow(0, 0, steps - DELAY);
        let loss = (prediction - target).powf(2.0).mean();
        adam.step(&mut model, &loss.backward());
        losses.push(loss.item());
        if update % 40 == 0 {
            println!("update {update:>3}  mse {:.4}", loss.item());
        }
    }
    let first = losses[0];
    let last = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    assert!(last < 0.1, "the stack should learn: mse {first} → {last}");
    println!("mse {first:.3} → {last:.4} (mean of the last 10): checked");
}
