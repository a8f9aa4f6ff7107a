//! Attention over past hidden states: a character-level LSTM language model whose readout at
//! step t also sees a context vector, an attention-weighted sum of its own hidden states of the
//! last W steps, with the window carried (and detached) across the chunks of truncated BPTT.
//!
//! Built on rewind's open `Cell`: the attentive top layer is a cell of this example's own
//! (`cell.rs`, `Attentive`), whose state holds the LSTM's h and c together with the window of the
//! last W hidden states, their keys and a mask of the slots filled so far. Because the window is
//! part of the cell's state, rewind's `Recurrent` stack runs it like any other state (in
//! checkpointed segments too), and a `Carry` of that state takes it from one chunk's tape to the
//! next as plain values, detached, like h and c; the empty window at the start of a stream is
//! simply the zero state, and `reset_lane` empties it. The layers below are rewind's plain LSTM,
//! so the model has two stacks, and `model.rs` says what the BPTT driver carries for the pair by
//! implementing `ModelState` for `LmCarry` (two `Carry`s). The alternative, a model that keeps its
//! own list of past states outside the stack, would redo by hand what the stack and `Carry`
//! already do for a state: carrying, detaching, masking and resetting.
//!
//! The price: a tape's values are immutable, so the window is a new [B, W, H] tensor every step.
//! At H = 256 and 32 lanes an update takes about 1.3× as long as without attention at W = 32
//! (benches/README.md); `--minutes` gives every model the same training clock, so that cost
//! counts.
//!
//! ```text
//! cargo run --release --example attention -- --attention none --minutes 10
//! cargo run --release --example attention -- --attention additive --window 32 --minutes 10 --svg attention.svg
//! cargo run --release --example attention -- --attention dot --window 128 --minutes 10
//! ```

mod app;
// The example's tests, compiled with it: `cargo test --example attention`.
#[cfg(test)]
mod tests;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
