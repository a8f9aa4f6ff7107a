//! The layers compiled here for f32 and f64, so that unoptimised crates link these copies; see
//! `rewind_autograd`'s module of the same name for why.

use rewind_autograd::Tape;

use crate::{Gru, Lstm, Rnn};

/// One entry point, as a pointer, only so that the static below can list pointers of any type.
struct Root(#[allow(dead_code)] &'static dyn Sync);

macro_rules! roots {
    ($($F:ty),*) => {
        [$(
            Root(&(Lstm::<$F>::forward_with as fn(_, &'static Tape<$F>, _, _, _) -> _)),
            Root(&(Gru::<$F>::forward_with as fn(_, &'static Tape<$F>, _, _, _) -> _)),
            Root(&(Rnn::<$F>::forward_with as fn(_, &'static Tape<$F>, _, _, _) -> _)),
        )*]
    };
}

#[used]
static ROOTS: [Root; 6] = roots!(f32, f64);
