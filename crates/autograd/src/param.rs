//! `Param`: a trainable tensor with a stable identity and an optional name.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::float::Float;
use crate::shape::Shape;
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
/// the [`Grads`](crate::Grads) returned by `backward` are indexed by it; an optimizer updates it
/// through [`update`](Param::update) or [`set`](Param::set).
///
/// As with PyTorch's parameters, the value can be changed through a shared reference: it sits
/// behind a lock, so a model lists its parameters once (`&Param`) for reading and updating alike,
/// and stays `Send + Sync`. The tensor is copy-on-write, so a tape that took the old value keeps
/// it unchanged whatever is done to the parameter afterwards.
///
/// A `Param` is deliberately not `Clone`: two parameters with one identity would share gradients.
pub struct Param<F: Float = f32> {
    id: ParamId,
    name: Option<String>,
    value: Mutex<Tensor<F>>,
}

impl<F: Float> Param<F> {
    /// A new, unnamed parameter holding `value`.
    pub fn new(value: Tensor<F>) -> Self {
        Param {
            id: ParamId::fresh(),
            name: None,
            value: Mutex::new(value),
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

    /// A snapshot of the current value: a clone that shares the storage (no data is copied), and
    /// that a later [`update`](Param::update) or [`set`](Param::set) leaves unchanged.
    pub fn value(&self) -> Tensor<F> {
        self.lock().clone()
    }

    /// Replaces the value with one of the same shape.
    #[track_caller]
    pub fn set(&self, value: Tensor<F>) {
        let mut current = self.lock();
        crate::check::same("Param::set", current.shape(), value.shape());
        *current = value;
    }

    /// Runs `f` on the value, for updating it in place (`t.data_mut()`). Copy-on-write: a tape or
    /// a snapshot still holding the old value keeps it unchanged. `f` must not touch this
    /// parameter again (the lock is held while it runs).
    pub fn update<R>(&self, f: impl FnOnce(&mut Tensor<F>) -> R) -> R {
        f(&mut self.lock())
    }

    /// The shape of the value.
    pub fn shape(&self) -> Shape {
        Shape::from_slice(self.lock().shape())
    }

    fn lock(&self) -> MutexGuard<'_, Tensor<F>> {
        // A poisoned lock only means a panic happened mid-update (in `update`'s `f`, or `set`'s
        // shape check before anything was written). The tensor is still a whole tensor of its
        // shape, so the value is taken as it stands rather than failing every later access.
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<F: Float> fmt::Debug for Param<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Param")
            .field("id", &self.id.0)
            .field("name", &self.name)
            .field("shape", &self.lock().shape())
            .finish()
    }
}
