//! Hessian-free optimisation of a recurrent network beside Adam and L-BFGS, at equal wall-clock,
//! after Martens & Sutskever (2011), "Learning recurrent neural networks with Hessian-free
//! optimization": a tanh RNN learns the adding problem (two marked values among T, the target
//! their sum), trained once by Adam on small minibatches, once by Hessian-free optimisation and
//! once by L-BFGS, each for the same seconds from the same initial weights. The table gives each
//! method's held-out loss against seconds and against gradient evaluations.
//!
//! L-BFGS (`train.rs`, rewind's `Lbfgs`, torch's `LBFGS(line_search_fn="strong_wolfe")`) is
//! full batch: one training set of `--grad-batch` sequences, drawn once, and one quasi-Newton
//! iteration per update, its strong-Wolfe line search evaluating the loss and gradient through a
//! closure as often as it needs (at most 25 times).
//!
//! Hessian-free, per outer iteration (`hf.rs`): the gradient on a large batch; the Gauss-Newton
//! matrix G = Jᵀ·H_L·J of the loss on a smaller curvature minibatch, used only through products
//! G·v (rewind's `GaussNewton`, three backward passes each); truncated conjugate gradient
//! (`cg.rs`) on the damped model ½δᵀ(G + λI)δ + ∇fᵀδ, warm-started from the last solution decayed
//! by 0.95 and stopped by Martens' relative-progress rule; backtracking over the kept CG iterates;
//! λ adapted by the Levenberg-Marquardt rule from the reduction ratio ρ; and an Armijo line
//! search on the chosen step. CG is not preconditioned. Structural damping, Martens &
//! Sutskever's penalty λμ/2·Σ_t ‖Δh_t‖² on the linearised change of the hidden states, is part of
//! the curvature CG sees (`hf::gauss_newton`), μ = 0.1 by default; without it (`--structural 0`)
//! λ settles high, CG stops early, and at T = 100 the method crawls.
//!
//! ```text
//! cargo run --release --example hessian_free -- --seconds 300 --svg examples/hessian_free/curves.svg
//! cargo run --release --example hessian_free -- --method hf --structural 0 --seconds 150
//! cargo run --release --example hessian_free -- --method lbfgs --seconds 60
//! ```

mod app;
// The example's tests, compiled with it: `cargo test --example hessian_free`.
#[cfg(test)]
mod tests;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
