//! Errors a caller can cause with data, as opposed to shape misuse (which panics).

use std::fmt;

/// An error building a tensor from data the caller supplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorError {
    /// The data has a different number of elements than the shape asks for.
    LengthMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// The number of elements that shape holds.
        expected: usize,
        /// The number of elements supplied.
        found: usize,
    },
    /// The shape's dimensions multiply past `usize::MAX`, so no tensor can have it.
    TooLarge {
        /// The requested shape.
        shape: Vec<usize>,
    },
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::LengthMismatch {
                shape,
                expected,
                found,
            } => write!(
                f,
                "cannot build a tensor of shape {shape:?}: it holds {expected} elements but {found} were given"
            ),
            TensorError::TooLarge { shape } => write!(
                f,
                "cannot build a tensor of shape {shape:?}: its dimensions multiply past usize::MAX"
            ),
        }
    }
}

impl std::error::Error for TensorError {}
