//! The char_rnn example end to end: in this process, through the same code its binary runs, and
//! as the binary itself (killed, signalled, resumed, under memory limits, under `mpirun`).
//!
//! Its modules are compiled here as they are in the example; a test uses only part of them, hence
//! `dead_code` allowed. The other studies are tested as the examples themselves (`cargo test
//! --example attention`), which compiles each once.

#[path = "../support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../../examples/char_rnn/app.rs"]
mod char_rnn_app;

mod char_rnn;
mod char_rnn_checkpoints;
mod char_rnn_connectivity;
mod char_rnn_eval;
mod char_rnn_inputs;
mod char_rnn_metrics;
mod char_rnn_mpi;
mod char_rnn_recipe;
