//! `Param`: a trainable tensor with a stable identity and an optional name.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::float::Float;
use crate::tensor::Tensor;

/// A parameter's identity: unique for the life of the process, increasing in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(u64);

impl ParamId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ParamId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A trainable tensor. `tape.param(&p)` puts it on a tape as a leaf (without copying its data);
/// the [`Grads`](crate::Grads) returned by `backward` are indexed by it; an optimizer updates it in
/// place through [`value_mut`](Param::value_mut) once the tape is gone.
///
/// A `Param` is deliberately not `Clone`: two parameters with one identity would share gradients.
pub struct Param<F: Float = f32> {
    id: ParamId,
    name: Option<String>,
    value: Tensor<F>,
}

impl<F: Float> Param<F> {
    /// A new, unnamed parameter holding `value`.
    pub fn new(value: Tensor<F>) -> Self {
        Param {
            id: ParamId::fresh(),
            name: None,
            value,
        }
    }

    /// A new parameter with a name (a model uses PyTorch's dotted names, e.g. `weight_ih_l0`).
    pub fn named(name: impl Into<String>, value: Tensor<F>) -> Self {
        Param {
            name: Some(name.into()),
            ..Param::new(value)
        }
    }

    /// The stable identity.
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// The name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The current value.
    pub fn value(&self) -> &Tensor<F> {
        &self.value
    }

    /// The value, for updating in place (copy-on-write: a tape still holding the old value keeps
    /// it unchanged).
    pub fn value_mut(&mut self) -> &mut Tensor<F> {
        &mut self.value
    }

    /// Replaces the value with one of the same shape.
    #[track_caller]
    pub fn set(&mut self, value: Tensor<F>) {
        crate::check::same("Param::set", self.value.shape(), value.shape());
        self.value = value;
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
}

impl<F: Float> fmt::Debug for Param<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Param")
            .field("id", &self.id.0)
            .field("name", &self.name)
            .field("shape", &self.value.shape())
            .finish()
    }
}
