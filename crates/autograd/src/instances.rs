//! The engine's generic code, compiled here for f32 and f64.
//!
//! The engine is generic over its element type, so Rust compiles each function in the crate that
//! first names a concrete type: without this module, a test binary or an example built at
//! opt-level 0 would compile, and run, its own unoptimised copy of the tape. In builds at
//! opt-level 0 and 1, rustc lets a crate use the generic instances its dependencies already
//! compiled (shared generics), so naming the entry points here for f32 and f64 makes those crates
//! link this crate's copies, optimised with it (with the same modules in rewind-nn and
//! rewind-optim, `cargo test --workspace` after touching this crate took a median 49.5 s instead
//! of 58.5). Optimised builds do not share generics and compile their own copies, so the module
//! is compiled only with debug assertions, that is in the dev and test profiles.

use crate::grads::Grads;
use crate::primitives::{Nodes, Op};
use crate::shape::Shape;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// One entry point, as a pointer, only so that the static below can list pointers of any type.
struct Root(#[allow(dead_code)] &'static dyn Sync);

macro_rules! roots {
    ($($F:ty),*) => {
        [$(
            Root(&(Op::<$F>::forward as fn(&mut Op<$F>, &Nodes<$F>) -> Tensor<$F>)),
            Root(&(Var::<$F>::backward as fn(Var<'static, $F>) -> Grads<$F>)),
            Root(&(Tape::<$F>::record_op as fn(&'static Tape<$F>, Op<$F>, &[usize]) -> Var<'static, $F>)),
            Root(&(Tape::<$F>::shape as fn(&Tape<$F>, usize) -> Shape)),
        )*]
    };
}

#[used]
static ROOTS: [Root; 8] = roots!(f32, f64);
