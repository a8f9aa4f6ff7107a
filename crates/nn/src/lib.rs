//! rewind-nn: layers and recurrent networks built as unrolled graphs of generic ops.
//!
//! Today it holds [`Module`], the trait through which optimizers and checkpoints see a model's
//! parameters; the layers and recurrent stacks come next.

mod module;

pub use module::{nested, Module};
