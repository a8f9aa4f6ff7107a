//! The example applications (char_rnn, attention, nade, truncation_study, hessian_free) through
//! the same code their binaries run, each compiled once here.
//!
//! An example's modules are compiled here as they are in the example; a test uses only part of
//! them, hence `dead_code` allowed on each.

// Each example is a binary of its own that includes examples/support/flags.rs; five of them in
// one test binary include it five times, once inside each example's module.
#![allow(clippy::duplicate_mod)]

#[path = "../support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../../examples/attention/app.rs"]
mod attention_app;

#[allow(dead_code)]
#[path = "../../examples/char_rnn/app.rs"]
mod char_rnn_app;

#[allow(dead_code)]
#[path = "../../examples/hessian_free/app.rs"]
mod hessian_free_app;

#[allow(dead_code)]
#[path = "../../examples/nade/app.rs"]
mod nade_app;

#[allow(dead_code)]
#[path = "../../examples/truncation_study/app.rs"]
mod truncation_study_app;

mod attention;
mod char_rnn;
mod char_rnn_checkpoints;
mod char_rnn_connectivity;
mod char_rnn_eval;
mod char_rnn_inputs;
mod char_rnn_metrics;
mod char_rnn_mpi;
mod char_rnn_recipe;
mod hessian_free;
mod nade;
mod truncation_study;
