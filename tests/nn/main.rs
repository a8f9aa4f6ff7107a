//! The nn crate's tests: the layers against PyTorch's values and by finite differences, their
//! weights saved and loaded, and backpropagation through time under every strategy of the driver.

#[path = "../support/mod.rs"]
mod support;

// examples/custom_cell's peephole LSTM, a cell written outside the crates.
#[path = "../../examples/custom_cell/peephole.rs"]
mod peephole;

mod bptt_driver;
mod bptt_sharded_lengths;
mod bptt_strategies;
mod bptt_textbook;
mod checkpoint_rows;
mod collective;
mod custom_cell;
mod keep_states;
mod load_strict;
mod module_params;
mod nn_gradcheck;
mod nn_more_parity;
mod nn_parity;
mod nn_weights;
mod second_order_nn;
