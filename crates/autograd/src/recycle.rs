//! Recycled buffers: the element storage of dropped tensors, kept per thread and handed to the
//! next tensor of the same length, so that a training loop's second step allocates nothing for its
//! values and gradients.
//!
//! Every step of a training loop records the same nodes with the same shapes, so the buffers the
//! last step's tape and gradients let go are exactly the ones the next step asks for. A buffer is
//! filed under its capacity and taken only by a request of exactly that length; the `Arc` that
//! shares it between tensors is kept too, as an empty shell. Buffers beyond the cache's limit are
//! freed, those that have gone unused the longest first.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;

/// The most bytes of buffers each thread keeps, per element type, until
/// [`set_buffer_cache_limit`] says otherwise.
const DEFAULT_LIMIT: usize = 1 << 30;

/// Empty `Arc`s kept at most: each is a few dozen bytes.
const MAX_SHELLS: usize = 1 << 16;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// Sets the most bytes of tensor storage each thread keeps for reuse, per element type (1 GiB
/// unless set). Buffers already kept beyond the new limit are freed as they are next passed over;
/// 0 turns the cache off.
///
/// The cache holds what the last training step let go, so that the next step's values and
/// gradients need no allocation. It never holds more than the largest step needed at once.
pub fn set_buffer_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Frees every buffer this thread keeps for reuse (both element types), for a program that has
/// finished its training loop and wants the memory back.
pub fn release_buffer_cache() {
    release::<f32>();
    release::<f64>();
    let _ = SPARES.try_with(|spares| spares.try_borrow_mut().map(|mut s| s.clear()));
}

/// Bytes of tensor storage this thread keeps for reuse (both element types).
pub fn buffer_cache_bytes() -> usize {
    cached_bytes::<f32>() + cached_bytes::<f64>()
}

/// One thread's free buffers of one element type.
pub struct Bin<T> {
    /// Free buffers by capacity, with the values they last held, and what is asked of each length.
    free: HashMap<usize, Bucket<T>>,
    /// `Arc`s that own nothing, for the next tensor.
    shells: Vec<Arc<Vec<T>>>,
    /// Bytes of capacity in `free`.
    bytes: usize,
    /// Counts the times this thread's last live tape was dropped: roughly, training steps.
    epoch: u64,
}

/// The free buffers of one length.
struct Bucket<T> {
    buffers: Vec<Vec<T>>,
    /// Buffers of this length asked for in this epoch.
    asked: usize,
    /// The most asked for in any one epoch: more are never kept, so a length that is given back
    /// but never asked for again (a batch the caller made) is not hoarded.
    demand: usize,
    /// The epoch in which a buffer was last asked for.
    used: u64,
}

/// An element type whose buffers are recycled: each has its own per-thread [`Bin`].
pub trait Recycle: Copy + Default + 'static {
    /// This thread's bin of free buffers of this type.
    fn bin() -> &'static LocalKey<RefCell<Bin<Self>>>;
}

thread_local! {
    static F32: RefCell<Bin<f32>> = RefCell::new(Bin::new());
    static F64: RefCell<Bin<f64>> = RefCell::new(Bin::new());
    /// Spare containers of any type, by type: see [`spare`] and [`keep_spare`].
    static SPARES: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
    /// Tapes alive on this thread (a tape is not `Send`).
    static LIVE_TAPES: Cell<usize> = const { Cell::new(0) };
}

impl Recycle for f32 {
    fn bin() -> &'static LocalKey<RefCell<Bin<f32>>> {
        &F32
    }
}

impl Recycle for f64 {
    fn bin() -> &'static LocalKey<RefCell<Bin<f64>>> {
        &F64
    }
}

impl<T> Bin<T> {
    fn new() -> Self {
        Bin {
            free: HashMap::new(),
            shells: Vec::new(),
            bytes: 0,
            epoch: 0,
        }
    }

    /// A free buffer of capacity `n`, if any; counts the request either way.
    fn take(&mut self, n: usize) -> Option<Vec<T>> {
        let bucket = self.free.entry(n).or_insert_with(|| Bucket {
            buffers: Vec::new(),
            asked: 0,
            demand: 0,
            used: 0,
        });
        bucket.asked += 1;
        bucket.demand = bucket.demand.max(bucket.asked);
        bucket.used = self.epoch;
        let buffer = bucket.buffers.pop()?;
        self.bytes -= bytes_of::<T>(n);
        Some(buffer)
    }

    /// Files `buffer` for reuse, values and all, if its length is asked for and the cache has
    /// room.
    fn keep(&mut self, buffer: Vec<T>) {
        let capacity = buffer.capacity();
        let size = bytes_of::<T>(capacity);
        let wanted = self
            .free
            .get(&capacity)
            .is_some_and(|b| b.buffers.len() < b.demand);
        if size == 0 || !wanted {
            return;
        }
        let limit = LIMIT.load(Ordering::Relaxed);
        if self.bytes + size > limit {
            self.evict(limit.saturating_sub(size));
            if self.bytes + size > limit {
                return;
            }
        }
        let bucket = self.free.get_mut(&capacity).expect("checked above");
        bucket.buffers.push(buffer);
        self.bytes += size;
    }

    /// Frees the buffers of the lengths asked for least recently, until at most `target` bytes
    /// are kept.
    fn evict(&mut self, target: usize) {
        while self.bytes > target {
            let oldest = self
                .free
                .iter_mut()
                .filter(|(_, b)| !b.buffers.is_empty())
                .min_by_key(|(_, b)| b.used);
            let Some((&capacity, bucket)) = oldest else {
                return;
            };
            self.bytes -= bytes_of::<T>(capacity) * bucket.buffers.len();
            bucket.buffers = Vec::new();
        }
    }

    fn next_epoch(&mut self) {
        self.epoch += 1;
        self.free.values_mut().for_each(|b| b.asked = 0);
    }
}

fn bytes_of<T>(capacity: usize) -> usize {
    capacity.saturating_mul(std::mem::size_of::<T>())
}

/// Runs `f` on this thread's bin for `T`, or returns `None` while the thread is exiting.
fn with_bin<T: Recycle, R>(f: impl FnOnce(&mut Bin<T>) -> R) -> Option<R> {
    T::bin()
        .try_with(|bin| bin.try_borrow_mut().ok().map(|mut bin| f(&mut bin)))
        .ok()
        .flatten()
}

/// A buffer of `n` elements, each `value`: recycled when one of that length is free.
pub(crate) fn filled<T: Recycle>(n: usize, value: T) -> Vec<T> {
    let mut buffer = with_capacity(n);
    buffer.resize(n, value);
    buffer
}

/// An empty buffer with room for exactly `n` elements: recycled when one of that length is free.
/// Fill it to `n` before it becomes a tensor's storage.
pub(crate) fn with_capacity<T: Recycle>(n: usize) -> Vec<T> {
    if let Some(mut buffer) = with_bin(|bin: &mut Bin<T>| bin.take(n)).flatten() {
        buffer.clear();
        return buffer;
    }
    let mut buffer = Vec::with_capacity(n);
    // Escapes, as far as the optimiser knows, so that allocating and filling are not folded
    // into a calloc. A fresh mapping of zero pages turns the first write after a read of each page
    // (`+=` into a gradient) into a copy-on-write fault whose TLB flush interrupts every other core
    // running this process (the GEMM workers); on a long tape that costs more than the backward.
    std::hint::black_box(buffer.as_mut_ptr());
    buffer
}

/// A buffer of `n` elements for an output its caller writes in full before anything reads it
/// (a product with beta 0, a cell's activations): a recycled one keeps the values it last held,
/// which saves filling it first; a new one is zero-filled.
pub(crate) fn overwritten<T: Recycle>(n: usize) -> Vec<T> {
    match with_bin(|bin: &mut Bin<T>| bin.take(n)).flatten() {
        Some(buffer) if buffer.len() == n => buffer,
        Some(mut buffer) => {
            buffer.clear();
            buffer.resize(n, T::default());
            buffer
        }
        None => filled(n, T::default()),
    }
}

/// A copy of `values` in a recycled buffer.
pub(crate) fn copied<T: Recycle>(values: &[T]) -> Vec<T> {
    let mut buffer = with_capacity(values.len());
    buffer.extend_from_slice(values);
    buffer
}

/// `buffer` as shared storage, in a recycled `Arc` when one is free.
pub(crate) fn share<T: Recycle>(buffer: Vec<T>) -> Arc<Vec<T>> {
    match with_bin(|bin: &mut Bin<T>| bin.shells.pop()).flatten() {
        Some(mut shell) => {
            *Arc::get_mut(&mut shell).expect("a kept shell has no other owner") = buffer;
            shell
        }
        None => Arc::new(buffer),
    }
}

/// Lets go of shared storage: when this was its last owner, the buffer and the `Arc` are kept
/// for reuse.
pub(crate) fn give_back<T: Recycle>(mut storage: Arc<Vec<T>>) {
    let Some(buffer) = Arc::get_mut(&mut storage) else {
        return;
    };
    let buffer = std::mem::take(buffer);
    with_bin(|bin: &mut Bin<T>| {
        bin.keep(buffer);
        if bin.shells.len() < MAX_SHELLS {
            bin.shells.push(storage);
        }
    });
}

/// A working buffer, filled with `value`, that goes back to the recycler when dropped.
pub(crate) fn scratch<T: Recycle>(n: usize, value: T) -> Scratch<T> {
    Scratch(filled(n, value))
}

/// See [`scratch`].
pub(crate) struct Scratch<T: Recycle>(Vec<T>);

impl<T: Recycle> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Recycle> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Recycle> Drop for Scratch<T> {
    fn drop(&mut self) {
        give_back_buffer(std::mem::take(&mut self.0));
    }
}

/// Keeps a buffer that no tensor owns (a packed weight, a stack of rows) for reuse.
pub(crate) fn give_back_buffer<T: Recycle>(buffer: Vec<T>) {
    with_bin(|bin: &mut Bin<T>| bin.keep(buffer));
}

/// Counts a new tape on this thread.
pub(crate) fn tape_made() {
    let _ = LIVE_TAPES.try_with(|n| n.set(n.get() + 1));
}

/// Counts a dropped tape; when it was the thread's last, a new epoch begins (a training step's
/// tapes, a checkpoint's inner ones among them, make one epoch).
pub(crate) fn tape_dropped() {
    let last = LIVE_TAPES
        .try_with(|n| {
            n.set(n.get().saturating_sub(1));
            n.get() == 0
        })
        .unwrap_or(false);
    if last {
        with_bin(|bin: &mut Bin<f32>| bin.next_epoch());
        with_bin(|bin: &mut Bin<f64>| bin.next_epoch());
    }
}

fn release<T: Recycle>() {
    with_bin(|bin: &mut Bin<T>| {
        bin.free.values_mut().for_each(|b| b.buffers = Vec::new());
        bin.shells.clear();
        bin.bytes = 0;
    });
}

fn cached_bytes<T: Recycle>() -> usize {
    with_bin(|bin: &mut Bin<T>| bin.bytes).unwrap_or(0)
}

/// A spare, emptied `Vec<S>` kept by [`keep_spare`] (the tape's node list, a backward pass's
/// gradient slots), or a new one.
pub(crate) fn spare<S: 'static>() -> Vec<S> {
    SPARES
        .try_with(|spares| {
            let mut spares = spares.try_borrow_mut().ok()?;
            let list = spares.get_mut(&TypeId::of::<Vec<Vec<S>>>())?;
            list.downcast_mut::<Vec<Vec<S>>>()?.pop()
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `list`'s allocation for the next [`spare`] of its type. Its elements are dropped first,
/// outside the store, since dropping them may give buffers back.
pub(crate) fn keep_spare<S: 'static>(mut list: Vec<S>) {
    list.clear();
    if list.capacity() == 0 {
        return;
    }
    let _ = SPARES.try_with(|spares| {
        let Ok(mut spares) = spares.try_borrow_mut() else {
            return;
        };
        let entry = spares
            .entry(TypeId::of::<Vec<Vec<S>>>())
            .or_insert_with(|| Box::new(Vec::<Vec<S>>::new()));
        if let Some(lists) = entry.downcast_mut::<Vec<Vec<S>>>() {
            // A few: a tape's list, a backward pass's slots, a checkpoint's inner tape.
            if lists.len() < 4 {
                lists.push(list);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn storage(t: &Tensor<f32>) -> *const f32 {
        t.data().as_ptr()
    }

    #[test]
    fn a_dropped_tensors_buffer_goes_to_the_next_of_its_length() {
        let first = Tensor::<f32>::zeros(&[3, 37]);
        let at = storage(&first);
        drop(first);
        let second = Tensor::<f32>::ones(&[111]);
        assert_eq!(storage(&second), at);
        assert!(
            second.data().iter().all(|&x| x == 1.0),
            "refilled, not stale"
        );
        let other_length = Tensor::<f32>::zeros(&[112]);
        assert_ne!(storage(&other_length), at);
    }

    #[test]
    fn shared_storage_is_kept_only_when_its_last_owner_drops() {
        let a = Tensor::<f32>::zeros(&[53]);
        let b = a.reshape(&[53, 1]);
        let at = storage(&a);
        drop(a);
        let c = Tensor::<f32>::zeros(&[53]);
        assert_ne!(storage(&c), at, "b still owns the buffer");
        assert_eq!(b.data().len(), 53);
        drop(b);
        let d = Tensor::<f32>::zeros(&[53]);
        assert_eq!(storage(&d), at);
        drop(c);
    }

    #[test]
    fn writing_to_a_shared_tensor_copies_into_a_recycled_buffer() {
        let spares = [Tensor::<f64>::zeros(&[29]), Tensor::zeros(&[29])];
        let at = spares.each_ref().map(|t| t.data().as_ptr());
        drop(spares);
        let a = Tensor::<f64>::full(&[29], 2.0);
        let mut b = a.clone();
        b.data_mut()[0] = 5.0;
        assert!(at.contains(&b.data().as_ptr()) && at.contains(&a.data().as_ptr()));
        assert_eq!((a.data()[0], b.data()[0], b.data()[1]), (2.0, 5.0, 2.0));
    }

    #[test]
    fn a_length_never_asked_for_is_not_kept() {
        let before = cached_bytes::<f32>();
        let made_by_the_caller = Tensor::<f32>::from_vec(vec![1.0; 4099], &[4099]).unwrap();
        drop(made_by_the_caller);
        assert_eq!(cached_bytes::<f32>(), before);
    }

    #[test]
    fn the_cache_holds_no_more_than_its_limit() {
        // Other tests here use buffers far below this limit, so setting it does not disturb them.
        set_buffer_cache_limit(64 << 10);
        let big: Vec<Tensor<f32>> = (0..2).map(|_| Tensor::zeros(&[10_007])).collect();
        let small = Tensor::<f32>::zeros(&[10_009]);
        drop(big);
        assert_eq!(cached_bytes::<f32>(), 40_028, "one of the two fits");
        drop(small);
        assert_eq!(
            cached_bytes::<f32>(),
            40_036,
            "the least recently asked for went"
        );
        set_buffer_cache_limit(DEFAULT_LIMIT);
        release_buffer_cache();
        assert_eq!(buffer_cache_bytes(), 0);
    }
}
