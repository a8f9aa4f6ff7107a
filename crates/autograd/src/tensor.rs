//! `Tensor`: an n-d array, row-major and contiguous, with reference-counted copy-on-write storage
//! that a tensor may view part of.

use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::check;
use crate::error::TensorError;
use crate::float::Float;
use crate::recycle;
use crate::shape::{checked_numel, numel, Shape};

/// An n-dimensional array of `F` (f32 by default), stored row-major and contiguous.
///
/// Its shape's dimensions multiply to a count that fits in a `usize`, even with a zero-sized
/// axis among them: every constructor checks that, and every op checks the shape it makes.
///
/// Cloning is cheap: the storage is shared and copied only when a clone is written to
/// ([`data_mut`](Tensor::data_mut)). That is how a parameter enters a tape without a copy and is
/// updated in place once the tape is gone.
///
/// When the last tensor sharing a storage is dropped, the buffer is kept for the next tensor of
/// the same length made on that thread (see [`set_buffer_cache_limit`](crate::set_buffer_cache_limit)).
#[derive(Clone)]
pub struct Tensor<F: Float = f32> {
    shape: Shape,
    /// Taken out only by `drop`, which gives it back to the recycler.
    data: ManuallyDrop<Arc<Vec<F>>>,
    /// Where this tensor's elements start in `data`: a window of leading rows (see
    /// [`Tensor::rows`]) shares its source's storage. The elements are
    /// `data[start..start + numel]`.
    start: usize,
}

impl<F: Float> Drop for Tensor<F> {
    fn drop(&mut self) {
        // SAFETY: `data` is taken once, here, and the tensor is not used again.
        let data = unsafe { ManuallyDrop::take(&mut self.data) };
        recycle::give_back(data);
    }
}

impl<F: Float> Tensor<F> {
    fn from_parts(shape: Shape, data: Vec<F>) -> Self {
        debug_assert_eq!(checked_numel(&shape), Some(data.len()));
        Tensor {
            shape,
            data: ManuallyDrop::new(recycle::share(data)),
            start: 0,
        }
    }

    /// True when this tensor's elements are the whole of its storage, not a window of it.
    fn is_whole(&self) -> bool {
        self.start == 0 && self.data.len() == numel(&self.shape)
    }

    /// A tensor of the given shape filled with `value`.
    ///
    /// Panics when the shape's dimensions multiply past `usize::MAX`, as do all constructors.
    #[track_caller]
    pub fn full(shape: &[usize], value: F) -> Self {
        let n = check::numel("full", shape);
        Self::from_parts(Shape::from_slice(shape), recycle::filled(n, value))
    }

    /// A tensor of zeros.
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        let n = check::numel("zeros", shape);
        Self::from_parts(Shape::from_slice(shape), zeroed(n))
    }

    /// A tensor of ones.
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Self {
        let n = check::numel("ones", shape);
        Self::from_parts(Shape::from_slice(shape), recycle::filled(n, F::ONE))
    }

    /// A 0-d tensor holding one value.
    pub fn scalar(value: F) -> Self {
        Self::from_parts(Shape::new(), vec![value])
    }

    /// A tensor of the given shape over `data`, in row-major order.
    ///
    /// Fails when `data` does not hold exactly as many elements as the shape, or when the shape's
    /// dimensions multiply past `usize::MAX`.
    pub fn from_vec(data: Vec<F>, shape: &[usize]) -> Result<Self, TensorError> {
        let Some(expected) = checked_numel(shape) else {
            return Err(TensorError::TooLarge {
                shape: shape.to_vec(),
            });
        };
        if data.len() != expected {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                found: data.len(),
            });
        }
        Ok(Self::from_parts(Shape::from_slice(shape), data))
    }

    /// A tensor of the given shape whose elements are `parts` laid end to end, in row-major order:
    /// a concatenation of slices, written once into a buffer that a dropped tensor of the same
    /// length left behind (when there is one), never zero-filled first. For a custom op that
    /// assembles its output from pieces of its inputs (a shift, a gather of rows) and would
    /// otherwise fill [`zeros`](Tensor::zeros) and then overwrite every element.
    ///
    /// Fails, as [`from_vec`](Tensor::from_vec) does, when the parts do not hold exactly as many
    /// elements as the shape, or when the shape's dimensions multiply past `usize::MAX`. The
    /// parts are counted first (their iterator is cloned), so a failure allocates nothing.
    ///
    /// ```
    /// use rewind_autograd::Tensor;
    /// let (a, b) = ([1.0f32, 2.0, 3.0], [4.0f32]);
    /// let t = Tensor::from_slices(&[2, 2], [&a[1..], &b[..], &a[..1]]).unwrap();
    /// assert_eq!(t.data(), &[2.0, 3.0, 4.0, 1.0]);
    /// assert!(Tensor::from_slices(&[2, 2], [&a[..]]).is_err());
    /// // Counted before anything is reserved: no attempt at 2⁴⁰ elements.
    /// assert!(Tensor::from_slices(&[1 << 40], [&a[..]]).is_err());
    /// ```
    pub fn from_slices<'a, I>(shape: &[usize], parts: I) -> Result<Self, TensorError>
    where
        I: IntoIterator<Item = &'a [F]>,
        I::IntoIter: Clone,
    {
        let Some(expected) = checked_numel(shape) else {
            return Err(TensorError::TooLarge {
                shape: shape.to_vec(),
            });
        };
        // Counted before anything is allocated: a shape far larger than its parts is an error,
        // not an attempt to reserve what it would hold.
        let parts = parts.into_iter();
        let found = parts
            .clone()
            .fold(0usize, |n, part| n.saturating_add(part.len()));
        if found != expected {
            return Err(TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                found,
            });
        }
        let mut data = recycle::with_capacity(expected);
        parts.for_each(|part| data.extend_from_slice(part));
        Ok(Self::from_parts(Shape::from_slice(shape), data))
    }

    /// The 1-d tensor `[0, 1, ..., n - 1]`. (A shape `[n]` always fits: nothing to check.)
    pub fn arange(n: usize) -> Self {
        Self::from_parts(Shape::from_slice(&[n]), (0..n).map(F::from_usize).collect())
    }

    /// Samples from U(low, high) drawn from `rng` (seed it for reproducible values).
    #[track_caller]
    pub fn uniform<R: Rng + ?Sized>(shape: &[usize], low: F, high: F, rng: &mut R) -> Self {
        let n = check::numel("uniform", shape);
        let (lo, hi) = (low.to_f64(), high.to_f64());
        assert!(
            lo.is_finite() && hi.is_finite(),
            "uniform: bounds must be finite, got low {lo} and high {hi}"
        );
        assert!(lo <= hi, "uniform: low {lo} exceeds high {hi}");
        let data = if lo == hi {
            vec![low; n]
        } else {
            let dist = Uniform::new(lo, hi).expect("uniform: bounds are finite and ordered");
            (0..n).map(|_| F::from_f64(dist.sample(rng))).collect()
        };
        Self::from_parts(Shape::from_slice(shape), data)
    }

    /// Samples from N(mean, std²) drawn from `rng` (seed it for reproducible values).
    #[track_caller]
    pub fn normal<R: Rng + ?Sized>(shape: &[usize], mean: F, std: F, rng: &mut R) -> Self {
        let n = check::numel("normal", shape);
        let dist = Normal::new(mean.to_f64(), std.to_f64())
            .unwrap_or_else(|e| panic!("normal: invalid std {std}: {e}"));
        let data = (0..n).map(|_| F::from_f64(dist.sample(rng))).collect();
        Self::from_parts(Shape::from_slice(shape), data)
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions (0 for a scalar).
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[F] {
        &self.data[self.start..self.start + numel(&self.shape)]
    }

    /// The elements, mutably; copies them first into storage of their own if the storage is
    /// shared with another tensor (or this tensor is a window of it).
    pub fn data_mut(&mut self) -> &mut [F] {
        if !self.is_whole() || Arc::get_mut(&mut self.data).is_none() {
            let own = recycle::share(recycle::copied(self.data()));
            // The old storage goes back to the recycler if this was its last owner.
            recycle::give_back(std::mem::replace(&mut *self.data, own));
            self.start = 0;
        }
        Arc::get_mut(&mut self.data)
            .expect("the storage was just made this tensor's own")
            .as_mut_slice()
    }

    /// The elements as an owned vector (no copy when this tensor is the whole storage and its
    /// only owner).
    pub fn into_vec(mut self) -> Vec<F> {
        if !self.is_whole() {
            return recycle::copied(self.data());
        }
        match Arc::get_mut(&mut self.data) {
            Some(owned) => std::mem::take(owned),
            None => self.data.to_vec(),
        }
    }

    /// This tensor with storage of exactly its own elements: itself when it is the whole of its
    /// storage, else a copy of its window (so that keeping it does not keep a larger buffer).
    pub(crate) fn compact(self) -> Self {
        if self.is_whole() {
            return self;
        }
        Self::from_parts(self.shape.clone(), recycle::copied(self.data()))
    }

    /// Rows `start..start + len` of the leading axis, sharing this tensor's storage: no copy
    /// (as a PyTorch view). Writing to either side through [`data_mut`](Tensor::data_mut) copies
    /// first, so neither ever sees the other's writes.
    #[track_caller]
    pub fn rows(&self, start: usize, len: usize) -> Self {
        let Some(&count) = self.shape.first() else {
            panic!("rows: a scalar has no rows");
        };
        if start.checked_add(len).is_none_or(|end| end > count) {
            panic!(
                "rows: rows {start}..{} out of range for shape {:?}",
                start.saturating_add(len),
                self.shape
            );
        }
        let row = numel(&self.shape[1..]);
        let mut shape = self.shape.clone();
        shape[0] = len;
        Tensor {
            shape,
            data: self.data.clone(),
            start: self.start + start * row,
        }
    }

    /// The element at a multi-dimensional index.
    #[track_caller]
    pub fn get(&self, index: &[usize]) -> F {
        let inside =
            index.len() == self.ndim() && index.iter().zip(&self.shape).all(|(i, d)| i < d);
        if !inside {
            panic!(
                "get: index {index:?} out of bounds for shape {:?}",
                self.shape
            );
        }
        // Below the element count, which fits: this cannot wrap.
        let flat = index
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (i, d)| acc * d + i);
        self.data()[flat]
    }

    /// The value of a tensor with exactly one element.
    #[track_caller]
    pub fn item(&self) -> F {
        if self.numel() != 1 {
            panic!(
                "item: tensor of shape {:?} has {} elements, not 1",
                self.shape,
                self.numel()
            );
        }
        self.data()[0]
    }

    /// The same storage viewed under another shape with as many elements.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Self {
        crate::check::reshape(&self.shape, shape);
        Tensor {
            shape: Shape::from_slice(shape),
            data: self.data.clone(),
            start: self.start,
        }
    }

    /// A new tensor with `f` applied to every element.
    pub fn map(&self, f: impl Fn(F) -> F) -> Self {
        let mut data = recycle::with_capacity(self.numel());
        data.extend(self.data().iter().map(|&x| f(x)));
        Self::from_parts(self.shape.clone(), data)
    }

    /// The same values converted to another element type.
    pub fn cast<G: Float>(&self) -> Tensor<G> {
        let mut data = recycle::with_capacity(self.numel());
        data.extend(self.data().iter().map(|x| G::from_f64(x.to_f64())));
        Tensor::from_parts(self.shape.clone(), data)
    }

    /// Bytes of its elements (of its window, for a view of part of a storage).
    pub fn nbytes(&self) -> usize {
        self.numel() * std::mem::size_of::<F>()
    }

    /// True when both tensors share one storage buffer (a view of part of it among them).
    pub fn shares_storage(&self, other: &Tensor<F>) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    pub(crate) fn new_unchecked(shape: Shape, data: Vec<F>) -> Self {
        Self::from_parts(shape, data)
    }
}

impl<F: Float> PartialEq for Tensor<F> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data() == other.data()
    }
}

/// `n` zeros, in a recycled buffer when one is free (and never the allocator's zeroed pages: see
/// [`recycle::with_capacity`]).
pub(crate) fn zeroed<F: Float>(n: usize) -> Vec<F> {
    recycle::filled(n, F::ZERO)
}

/// PyTorch's print options: at most this many elements are printed in full.
const PRINT_THRESHOLD: usize = 1000;
/// With more, each axis shows this many items at either end around `...`.
const EDGE_ITEMS: usize = 3;
/// Lines wrap at this many columns.
const PRINT_LINE_WIDTH: usize = 80;

impl<F: Float> fmt::Display for Tensor<F> {
    /// Prints as PyTorch does: `tensor([[1.0000, 2.5000], ...])`, integral values as `1.`,
    /// scientific notation for very large or small magnitudes, `...` past 1000 elements, and an
    /// empty tensor as `tensor([], size=(2, 0))` (the size left out for shape `[0]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor(")?;
        if self.numel() == 0 {
            // No axis is walked: an empty tensor's other axes may be as long as 2⁶³.
            f.write_str("[]")?;
            if self.ndim() != 1 {
                let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
                write!(f, ", size=({})", dims.join(", "))?;
            }
        } else {
            let summarize = self.numel() > PRINT_THRESHOLD;
            let shown: Vec<F> = shown_values(self, summarize);
            let style = NumberStyle::for_values(&shown);
            let width = shown
                .iter()
                .map(|&x| style.format(x).len())
                .max()
                .unwrap_or(0);
            if self.ndim() == 0 {
                f.write_str(&style.format(self.data()[0]))?;
            } else {
                write_axis(f, self, 0, 0, summarize, &style, width)?;
            }
        }
        if F::DTYPE != "float32" {
            write!(f, ", dtype=torch.{}", F::DTYPE)?;
        }
        f.write_str(")")
    }
}

impl<F: Float> fmt::Debug for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} shape={:?}", self.shape)
    }
}

fn shown_values<F: Float>(t: &Tensor<F>, summarize: bool) -> Vec<F> {
    if !summarize {
        return t.data().to_vec();
    }
    let mut out = Vec::new();
    collect_shown(t, 0, 0, &mut out);
    out
}

fn collect_shown<F: Float>(t: &Tensor<F>, axis: usize, offset: usize, out: &mut Vec<F>) {
    let stride = numel(&t.shape[axis + 1..]);
    for i in shown_indices(t.shape[axis], true) {
        if axis + 1 == t.ndim() {
            out.push(t.data()[offset + i]);
        } else {
            collect_shown(t, axis + 1, offset + i * stride, out);
        }
    }
}

fn shown_indices(len: usize, summarize: bool) -> Vec<usize> {
    if summarize && len > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS).chain(len - EDGE_ITEMS..len).collect()
    } else {
        (0..len).collect()
    }
}

fn write_axis<F: Float>(
    f: &mut fmt::Formatter<'_>,
    t: &Tensor<F>,
    axis: usize,
    offset: usize,
    summarize: bool,
    style: &NumberStyle,
    width: usize,
) -> fmt::Result {
    let indices = shown_indices(t.shape[axis], summarize);
    let gap = |n: usize| n > 0 && indices[n - 1] + 1 != indices[n];
    let indent = "tensor(".len() + axis;
    if axis + 1 == t.ndim() {
        let mut items = Vec::with_capacity(indices.len() + 1);
        for (n, &i) in indices.iter().enumerate() {
            if gap(n) {
                items.push(" ...".to_string());
            }
            items.push(format!("{:>width$}", style.format(t.data()[offset + i])));
        }
        // As PyTorch: as many items per line as fit in 80 columns after the indent.
        let per_line = (PRINT_LINE_WIDTH.saturating_sub(indent) / (width + 2)).max(1);
        let lines: Vec<String> = items.chunks(per_line).map(|l| l.join(", ")).collect();
        let separator = format!(",\n{}", " ".repeat(indent + 1));
        return write!(f, "[{}]", lines.join(&separator));
    }
    let stride = numel(&t.shape[axis + 1..]);
    let separator = format!(
        ",{}\n{}",
        "\n".repeat(t.ndim() - axis - 2),
        " ".repeat(indent + 1)
    );
    f.write_str("[")?;
    for (n, &i) in indices.iter().enumerate() {
        if n > 0 {
            f.write_str(&separator)?;
        }
        if gap(n) {
            write!(f, "...{separator}")?;
        }
        write_axis(f, t, axis + 1, offset + i * stride, summarize, style, width)?;
    }
    f.write_str("]")
}

/// How PyTorch chooses to print a tensor's numbers, decided once for all of them.
enum NumberStyle {
    /// Every value is integral: `3.`
    Integral,
    /// Fixed point with four decimals: `0.5000`
    Fixed,
    /// Scientific with four decimals: `1.0000e-05`
    Scientific,
}

impl NumberStyle {
    fn for_values<F: Float>(values: &[F]) -> Self {
        let finite: Vec<f64> = values
            .iter()
            .map(|x| x.to_f64())
            .filter(|x| x.is_finite())
            .collect();
        let nonzero: Vec<f64> = finite
            .iter()
            .map(|x| x.abs())
            .filter(|&x| x > 0.0)
            .collect();
        let max = nonzero.iter().cloned().fold(0.0, f64::max);
        let min = nonzero.iter().cloned().fold(f64::INFINITY, f64::min);
        let wide = !nonzero.is_empty() && (max / min > 1000.0 || max > 1e8);
        if finite.iter().all(|x| x.fract() == 0.0) {
            if wide {
                Self::Scientific
            } else {
                Self::Integral
            }
        } else if wide || min < 1e-4 {
            Self::Scientific
        } else {
            Self::Fixed
        }
    }

    fn format<F: Float>(&self, x: F) -> String {
        let v = x.to_f64();
        if v.is_nan() {
            return "nan".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "inf".into() } else { "-inf".into() };
        }
        match self {
            Self::Integral => format!("{v:.0}."),
            Self::Fixed => format!("{v:.4}"),
            Self::Scientific => {
                let s = format!("{v:.4e}");
                // Rust writes `1.0000e-5`; PyTorch writes `1.0000e-05`.
                match s.split_once('e') {
                    Some((mantissa, exp)) => {
                        let (sign, digits) = match exp.strip_prefix('-') {
                            Some(d) => ('-', d),
                            None => ('+', exp),
                        };
                        format!("{mantissa}e{sign}{digits:0>2}")
                    }
                    None => s,
                }
            }
        }
    }
}
