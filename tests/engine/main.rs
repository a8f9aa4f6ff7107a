//! The engine's tests: the tape, tensors and their views, every op's gradient checked by finite
//! differences in f64 (first and second order), PyTorch's values for the ops, and shape errors.

#[path = "../support/mod.rs"]
mod support;

mod anomaly;
mod basics;
mod edge_points;
mod f32_defaults;
mod gradcheck_more;
mod gradcheck_ops;
mod gradgradcheck_ops;
mod grads_construct;
mod hessians;
mod ops_parity;
mod random_graphs;
mod recycled_outputs;
mod reductions;
mod second_order;
mod second_order_parity;
mod shape_errors;
mod shape_overflow;
mod views;
