//! NADE against separately fitted conditionals (FVSBN) and independent pixels, on binarized 8×8
//! digits: test negative log-likelihood per image, and grids of real and sampled digits.
//!
//! ```text
//! cargo run --release --example nade
//! cargo run --release --example nade -- --hidden 64 --epochs 300 --seed 1 --out-dir /tmp
//! ```

mod app;
// The example's tests, compiled with it: `cargo test --example nade`.
#[cfg(test)]
mod tests;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
