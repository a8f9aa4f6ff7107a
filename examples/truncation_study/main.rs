//! Full, truncated and randomized-truncation BPTT compared on The Time Machine with D2L's setup:
//! validation perplexity per epoch, time per epoch, peak tape memory, and the bias and variance
//! of each strategy's gradient against the full one at fixed weights.
//!
//! ```text
//! cargo run --release --example truncation_study
//! cargo run --release --example truncation_study -- --epochs 10 --seeds 5 --minutes 2
//! ```

mod app;
// The example's tests, compiled with it: `cargo test --example truncation_study`.
#[cfg(test)]
mod tests;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
