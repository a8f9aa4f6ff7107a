//! `ClassIndex`: the integer types a class target may be given in, so that a stream's tokens
//! (`usize`) and PyTorch-style targets (`i64`, with -100 for "does not count") both serve.

/// An integer that names a class: every signed and unsigned width. Negative values are only
/// meaningful as an ignore index.
pub trait ClassIndex: Copy {
    /// The index as an `i64`, the type the losses compare against their ignore index.
    fn class(self) -> i64;
}

macro_rules! lossless {
    ($($t:ty),*) => {$(
        impl ClassIndex for $t {
            fn class(self) -> i64 {
                i64::from(self)
            }
        }
    )*};
}

lossless!(i8, i16, i32, i64, u8, u16, u32);

impl ClassIndex for usize {
    #[track_caller]
    fn class(self) -> i64 {
        i64::try_from(self).unwrap_or_else(|_| panic!("class index {self} does not fit an i64"))
    }
}

impl ClassIndex for u64 {
    #[track_caller]
    fn class(self) -> i64 {
        i64::try_from(self).unwrap_or_else(|_| panic!("class index {self} does not fit an i64"))
    }
}

impl ClassIndex for isize {
    fn class(self) -> i64 {
        self as i64
    }
}

/// The targets as `i64`s.
#[track_caller]
pub(crate) fn classes<T: ClassIndex>(targets: &[T]) -> Vec<i64> {
    targets.iter().map(|t| t.class()).collect()
}
