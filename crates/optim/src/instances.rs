//! The optimizers compiled here for f32 and f64, so that unoptimised crates link these copies;
//! see `rewind_autograd`'s module of the same name for why.

use crate::{Adagrad, Adam, Optimizer, RmsProp, Sgd};

/// One entry point, as a pointer, only so that the static below can list pointers of any type.
struct Root(#[allow(dead_code)] &'static dyn Sync);

macro_rules! roots {
    ($($F:ty),*) => {
        [$(
            Root(&(<Adam<$F> as Optimizer<$F>>::step as fn(_, _, _))),
            Root(&(<Sgd<$F> as Optimizer<$F>>::step as fn(_, _, _))),
            Root(&(<Adagrad<$F> as Optimizer<$F>>::step as fn(_, _, _))),
            Root(&(<RmsProp<$F> as Optimizer<$F>>::step as fn(_, _, _))),
        )*]
    };
}

#[used]
static ROOTS: [Root; 8] = roots!(f32, f64);
