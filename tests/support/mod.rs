//! Helpers shared by the integration tests, each included with `mod support;`.
// Every test binary compiles all of this module and uses only part of it.
#![allow(dead_code)]

pub mod char_rnn;
pub mod golden;
pub mod gradcheck;
pub mod panics;
pub mod trajectories;
