//! The ops on `Var` called as methods (`x.matmul(w)`, `x.tanh()`): each checks shapes
//! (panicking at the caller's line), records one node, and returns its `Var`. The derivatives
//! live beside each primitive's forward in `primitives/`; the operators (`a + b`) in `var_operators.rs`.

use smallvec::SmallVec;

use crate::check;
use crate::class_index::{classes, ClassIndex};
use crate::float::Float;
use crate::primitives::{product, Fused, Layout, MatMul, Op, Pointwise, Reduce, Reduction};
use crate::shape::{broadcast_shape, numel, Axis, Shape};
use crate::tape::Var;
use crate::tensor::Tensor;

/// Options of [`Var::cross_entropy_with`]: the keywords of PyTorch's `F.cross_entropy`, with its
/// defaults (no weights, ignore index -100, mean, no label smoothing).
///
/// ```
/// use rewind_autograd::{CrossEntropyOptions, Reduction, Tensor};
/// let options = CrossEntropyOptions {
///     weight: Some(Tensor::from_vec(vec![1.0, 2.0, 0.5], &[3]).unwrap()),
///     label_smoothing: 0.1,
///     reduction: Reduction::Sum,
///     ..Default::default()
/// };
/// # let _: CrossEntropyOptions<f32> = options;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyOptions<F: Float = f32> {
    /// A weight per class, of shape `[C]`; `None` weighs every class 1. It is data: no gradient
    /// flows to it.
    pub weight: Option<Tensor<F>>,
    /// Targets equal to this do not count: their loss is 0 and their weight is left out of the
    /// mean's divisor (PyTorch's default: -100). Class indices only: with probability targets
    /// it must be negative, as PyTorch requires, and then plays no part.
    pub ignore_index: i64,
    /// Mean (the default), sum, or none (the loss of each target, `[N]`).
    pub reduction: Reduction,
    /// ε in [0, 1]: the target distribution is (1 - ε)·one-hot + ε/C·uniform, or
    /// (1 - ε)·y + ε/C for probability targets y (0 by default).
    pub label_smoothing: F,
}

impl<F: Float> Default for CrossEntropyOptions<F> {
    fn default() -> Self {
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            label_smoothing: F::ZERO,
        }
    }
}

impl<'t, F: Float> Var<'t, F> {
    #[track_caller]
    fn unary(self, op: impl Into<Op<F>>) -> Self {
        self.tape().record(op, &[self.index()])
    }

    /// `scale·self + shift`, with scalar `scale` and `shift`; d = scale.
    #[track_caller]
    pub fn affine(self, scale: F, shift: F) -> Self {
        self.unary(Pointwise::Affine {
            x: self.index(),
            scale,
            shift,
        })
    }

    /// `self^p` element-wise; d = p·x^(p-1), and 0 when p = 0 (also at x = 0, as in PyTorch).
    #[track_caller]
    pub fn powf(self, p: F) -> Self {
        self.unary(Pointwise::Powf { x: self.index(), p })
    }

    /// `e^self`; d = e^x (the output, reused).
    #[track_caller]
    pub fn exp(self) -> Self {
        self.unary(Pointwise::Exp(self.index()))
    }

    /// Natural logarithm; d = 1/x.
    #[track_caller]
    pub fn ln(self) -> Self {
        self.unary(Pointwise::Ln(self.index()))
    }

    /// Square root; d = 1/(2y).
    #[track_caller]
    pub fn sqrt(self) -> Self {
        self.unary(Pointwise::Sqrt(self.index()))
    }

    /// Hyperbolic tangent; d = 1 - y².
    #[track_caller]
    pub fn tanh(self) -> Self {
        self.unary(Pointwise::Tanh(self.index()))
    }

    /// Logistic sigmoid 1/(1 + e^-x); d = y(1 - y).
    #[track_caller]
    pub fn sigmoid(self) -> Self {
        self.unary(Pointwise::Sigmoid(self.index()))
    }

    /// max(x, 0) (NaN stays NaN); d = 1 where x > 0, else 0 (0 at x = 0, as in PyTorch).
    #[track_caller]
    pub fn relu(self) -> Self {
        self.unary(Pointwise::Relu(self.index()))
    }

    /// `self` clamped to `[min, max]` element-wise (`min(max(x, min), max)`, as `torch.clamp`:
    /// every element is `max` when min > max, and NaN stays NaN); d = 1 where min ≤ x ≤ max, the
    /// bounds included, else 0.
    #[track_caller]
    pub fn clamp(self, min: F, max: F) -> Self {
        self.unary(Pointwise::Clamp {
            x: self.index(),
            min,
            max,
        })
    }

    /// max(self, min) element-wise; d = 1 where x ≥ min.
    #[track_caller]
    pub fn clamp_min(self, min: F) -> Self {
        self.clamp(min, -F::neg_infinity())
    }

    /// min(self, max) element-wise; d = 1 where x ≤ max.
    #[track_caller]
    pub fn clamp_max(self, max: F) -> Self {
        self.clamp(F::neg_infinity(), max)
    }

    /// Matrix product under PyTorch's `matmul` rules:
    ///
    /// ```text
    /// [m, k]·[k, n] → [m, n]         [k]·[k] → []    (the dot product)
    /// [m, k]·[k] → [m]               [k]·[k, n] → [n]
    /// [2, 1, 3, 4]·[5, 4, 6] → [2, 5, 3, 6]
    /// ```
    ///
    /// A 1-D lhs is a row [1, k] and a 1-D rhs a column [k, 1], each removed from the result
    /// again. The axes before the last two are batch axes, and they broadcast; a 1-D or 2-D
    /// operand is shared by every batch entry.
    ///
    /// An operand that is a transpose of the last two axes ([`t`](Var::t)) is read by stride,
    /// never copied, so `x.matmul(w.t())` costs one GEMM. dA = dC·Bᵀ, dB = Aᵀ·dC, each summed
    /// over the batch axes along which its operand was broadcast.
    #[track_caller]
    pub fn matmul(self, rhs: Self) -> Self {
        self.tape().assert_owns("matmul", rhs);
        let (ls, rs) = (self.shape(), rhs.shape());
        let out = check::matmul_broadcast(&ls, &rs);
        let primitive = |s: &[usize]| (2..=3).contains(&s.len());
        if primitive(&ls) && primitive(&rs) && (ls.len() == 2 || rs.len() == 2 || ls[0] == rs[0]) {
            return self.mm(rhs);
        }
        // Everything else is reshaped to that primitive: a row or a column for a 1-D operand,
        // and one batch axis of the broadcast batch's size (or none, for an operand shared by
        // every entry); the result is reshaped back.
        let a = if ls.len() == 1 {
            self.unsqueeze(0)
        } else {
            self
        };
        let b = if rs.len() == 1 { rhs.unsqueeze(1) } else { rhs };
        let (sa, sb) = (a.shape(), b.shape());
        let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
            .expect("checked by matmul_broadcast");
        let y = a.as_batch(&batch).mm(b.as_batch(&batch));
        if y.shape() == out {
            y
        } else {
            y.reshape(&out)
        }
    }

    /// A matrix or a batch of them as a matmul operand over the broadcast batch axes `batch`:
    /// the matrix itself when its own batch holds one entry, else [Π batch, r, c], broadcast
    /// first if its own batch is smaller. A 2-D or 3-D value that is already so is passed as it
    /// is, so a pending transpose stays one.
    #[track_caller]
    fn as_batch(self, batch: &[usize]) -> Self {
        let s = self.shape();
        let n = s.len();
        let matrix = [s[n - 2], s[n - 1]];
        let own = numel(&s[..n - 2]);
        if own == 1 {
            return if n == 2 { self } else { self.reshape(&matrix) };
        }
        let entries = numel(batch);
        if own == entries && n == 3 {
            return self;
        }
        let full = if own == entries {
            self
        } else {
            let shape: Shape = batch.iter().chain(&matrix).copied().collect();
            self.broadcast_to(&shape)
        };
        full.reshape(&[entries, matrix[0], matrix[1]])
    }

    /// The matmul primitive: 2-D operands, or 3-D ones of one batch size, or a 3-D and a 2-D one.
    #[track_caller]
    fn mm(self, rhs: Self) -> Self {
        // Checked on the shapes as the caller sees them, so the message shows those.
        check::matmul(&self.shape(), false, &rhs.shape(), false);
        MatMul::record(self, rhs, None)
    }

    /// `self + a·b` as one op (PyTorch's `addmm`): the product is accumulated onto `self`,
    /// broadcast to the product's shape, so a bias or a precomputed projection costs no extra
    /// pass. Operands as for [`matmul`](Var::matmul); gradients as for `+` and `matmul`.
    #[track_caller]
    pub fn addmm(self, a: Self, b: Self) -> Self {
        self.tape().assert_owns("addmm", a);
        self.tape().assert_owns("addmm", b);
        let out = check::matmul(&a.shape(), false, &b.shape(), false);
        check::broadcasts_to("addmm", &self.shape(), &out);
        MatMul::record(a, b, Some(self))
    }

    /// The element-wise half of an LSTM step, fused into two ops: from the pre-activation gates
    /// `self` [B, 4H] (blocks i, f, g, o, PyTorch's order) and the cell state `c` [B, H], returns
    /// `(h', c')` with
    ///
    /// ```text
    /// c' = σ(f)⊙c + σ(i)⊙tanh(g)
    /// h' = σ(o)⊙tanh(c')
    /// ```
    ///
    /// It equals composing `chunk`, `sigmoid`, `tanh`, `*` and `+` (twelve ops), with one pass
    /// over the gates forward and one backward, the derivatives reusing the saved activations.
    #[track_caller]
    pub fn lstm_cell(self, c: Self) -> (Self, Self) {
        self.tape().assert_owns("lstm_cell", c);
        check::gates("lstm_cell", &self.shape(), 4, &c.shape());
        let tape = self.tape();
        let empty = || Tensor::zeros(&[0]);
        let cell = tape.record(
            Fused::LstmCell {
                gates: self.index(),
                c: c.index(),
                acts: empty(),
            },
            &[self.index(), c.index()],
        );
        let hidden = Fused::LstmHidden {
            cell: cell.index(),
            gates: self.index(),
            tanh_c: empty(),
        };
        (tape.record(hidden, &[cell.index(), self.index()]), cell)
    }

    /// The element-wise half of a GRU step, fused into one op: from the input projection
    /// `self` = x W_ihᵀ + b_ih and the hidden projection `hp` = h W_hhᵀ + b_hh [B, 3H] (blocks
    /// r, z, n, PyTorch's order) and the state `h` [B, H],
    ///
    /// ```text
    /// r = σ(x_r + h_r),  z = σ(x_z + h_z),  n = tanh(x_n + r⊙h_n)
    /// h' = (1 - z)⊙n + z⊙h
    /// ```
    ///
    /// It equals the composed equations, in one op whose backward reuses the saved r, z, n.
    #[track_caller]
    pub fn gru_cell(self, hp: Self, h: Self) -> Self {
        self.tape().assert_owns("gru_cell", hp);
        self.tape().assert_owns("gru_cell", h);
        check::same("gru_cell", &self.shape(), &hp.shape());
        check::gates("gru_cell", &self.shape(), 3, &h.shape());
        let op = Fused::GruCell {
            xp: self.index(),
            hp: hp.index(),
            h: h.index(),
            acts: Tensor::zeros(&[0]),
        };
        self.tape()
            .record(op, &[self.index(), hp.index(), h.index()])
    }

    /// `self` repeated along the axes where its shape has size 1 (or has no axis, at the front)
    /// to the shape `shape`, as NumPy broadcasting and PyTorch's `broadcast_to`. The gradient is
    /// summed over those axes. PyTorch's -1 for "keep this axis" is [`expand`](Var::expand)'s.
    #[track_caller]
    pub fn broadcast_to(self, shape: &[usize]) -> Self {
        self.broadcast_checked("broadcast_to", shape)
    }

    /// [`broadcast_to`](Var::broadcast_to) with PyTorch's `expand(*sizes)` sizes: -1 keeps the
    /// size of the input's axis in that place (the input's axes are the last ones), so a
    /// [3, 1] value expanded with `&[2, -1, 4]` becomes [2, 3, 4]. New leading axes need a size.
    /// The gradient is summed over the axes that were repeated.
    ///
    /// Panics, at the caller's line, on fewer sizes than axes, -1 in a new leading axis, a size
    /// below -1, or a shape the input does not broadcast to.
    #[track_caller]
    pub fn expand(self, sizes: &[isize]) -> Self {
        let shape = check::expand_sizes(&self.shape(), sizes);
        self.broadcast_checked("expand", &shape)
    }

    #[track_caller]
    fn broadcast_checked(self, op: &str, shape: &[usize]) -> Self {
        check::broadcast_to(op, &self.shape(), shape);
        if self.shape()[..] == *shape {
            // Still a node of its own: a gradient asked for at the result must not count the
            // paths that reach the input some other way.
            return self.reshape(shape);
        }
        self.unary(Layout::Expand {
            x: self.index(),
            shape: Shape::from_slice(shape),
        })
    }

    /// The transpose of the last two axes of a 2-D or 3-D value. It is computed only when an op
    /// other than `matmul` reads it.
    #[track_caller]
    pub fn t(self) -> Self {
        let n = self.shape().len();
        if !(2..=3).contains(&n) {
            panic!(
                "t: expected a 2-D or 3-D value, got shape {:?}",
                self.shape()
            );
        }
        self.transpose(n - 2, n - 1)
    }

    /// Swaps two axes (negative ones count from the end).
    #[track_caller]
    pub fn transpose(self, a: impl Axis + std::fmt::Debug, b: impl Axis + std::fmt::Debug) -> Self {
        let shape = self.shape();
        let (a, b) = (
            check::axis("transpose", &shape, a),
            check::axis("transpose", &shape, b),
        );
        let mut perm: Shape = (0..shape.len()).collect();
        perm.swap(a, b);
        self.permute(&perm[..])
    }

    /// Reorders the axes: output axis i is input axis `perm[i]` (negative ones count from the
    /// end, as in PyTorch: `permute(&[-1, 0, 1])` moves the last axis first). Backward applies
    /// the inverse.
    #[track_caller]
    pub fn permute<A: Axis + std::fmt::Debug>(self, perm: &[A]) -> Self {
        let shape = self.shape();
        let perm = check::permutation(&shape, perm);
        if let Some(t) = product::pending_transpose(self, &perm) {
            return t;
        }
        self.unary(Layout::Permute {
            x: self.index(),
            perm,
        })
    }

    /// The sum of all elements, as a 0-d value.
    #[track_caller]
    pub fn sum(self) -> Self {
        self.reduce(None, false, F::ONE)
    }

    /// The mean of all elements, as a 0-d value.
    #[track_caller]
    pub fn mean(self) -> Self {
        let n = numel(&self.shape());
        self.reduce(None, false, F::from_usize(n))
    }

    /// `f` of a 0-d value read as one axis of size 1, as PyTorch reads `dim` 0 or -1 of a 0-d
    /// tensor: `f` runs on the value as [1] and its result comes back 0-d. `None` unless the
    /// value is 0-d and `axis` is 0 or -1.
    #[track_caller]
    fn along_scalar(self, axis: impl Axis, f: impl FnOnce(Self) -> Self) -> Option<Self> {
        if !self.shape().is_empty() || axis.resolve(1).is_none() {
            return None;
        }
        Some(f(self.reshape(&[1])).reshape(&[]))
    }

    /// The sum along `axis` (negative counts from the end), keeping it as size 1 when `keepdim`.
    /// A 0-d value has one axis, 0 or -1, as in PyTorch; so do the other ops along an axis.
    #[track_caller]
    pub fn sum_axis(self, axis: impl Axis + std::fmt::Debug, keepdim: bool) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v.sum_axis(0, keepdim)) {
            return y;
        }
        let a = check::axis("sum_axis", &self.shape(), axis);
        self.reduce(Some(a), keepdim, F::ONE)
    }

    /// The mean along `axis` (negative counts from the end), keeping it as size 1 when
    /// `keepdim`.
    #[track_caller]
    pub fn mean_axis(self, axis: impl Axis + std::fmt::Debug, keepdim: bool) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v.mean_axis(0, keepdim)) {
            return y;
        }
        let shape = self.shape();
        let a = check::axis("mean_axis", &shape, axis);
        self.reduce(Some(a), keepdim, F::from_usize(shape[a]))
    }

    #[track_caller]
    fn reduce(self, axis: Option<usize>, keepdim: bool, divisor: F) -> Self {
        self.unary(Reduce::Sum {
            x: self.index(),
            axis,
            keepdim,
            divisor,
        })
    }

    /// The maximum along `axis` (negative counts from the end); the gradient flows to the first
    /// maximum of each lane.
    #[track_caller]
    pub fn max_axis(self, axis: impl Axis + std::fmt::Debug, keepdim: bool) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v.max_axis(0, keepdim)) {
            return y;
        }
        let shape = self.shape();
        let a = check::axis("max_axis", &shape, axis);
        if shape[a] == 0 {
            panic!("max_axis: axis {a} of shape {shape:?} is empty");
        }
        self.unary(Reduce::MaxAxis {
            x: self.index(),
            axis: a,
            keepdim,
            argmax: Vec::new(),
        })
    }

    /// The same values under another shape with as many elements (no copy).
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Self {
        check::reshape(&self.shape(), shape);
        self.unary(Layout::Reshape {
            x: self.index(),
            shape: Shape::from_slice(shape),
        })
    }

    /// Inserts an axis of size 1 at `axis`, one of the ndim + 1 gaps: 0..=ndim, or -ndim - 1..=-1
    /// counted from the end, so -1 appends an axis after the last (as PyTorch).
    #[track_caller]
    pub fn unsqueeze(self, axis: impl Axis + std::fmt::Debug) -> Self {
        let mut shape = self.shape();
        let a = check::new_axis("unsqueeze", &shape, axis);
        shape.insert(a, 1);
        self.reshape(&shape)
    }

    /// Removes `axis` (negative counts from the end) if its size is 1, and otherwise leaves the
    /// shape as it is, as PyTorch's `squeeze(dim)` does; a 0-d value has the one axis 0 or -1.
    #[track_caller]
    pub fn squeeze(self, axis: impl Axis + std::fmt::Debug) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v) {
            return y;
        }
        let mut shape = self.shape();
        let a = check::axis("squeeze", &shape, axis);
        if shape[a] == 1 {
            shape.remove(a);
        }
        self.reshape(&shape)
    }

    /// All elements as one axis.
    #[track_caller]
    pub fn flatten(self) -> Self {
        let n = numel(&self.shape());
        self.reshape(&[n])
    }

    /// The slice `start..start + len` along `axis` (negative counts from the end). Backward adds
    /// into that range.
    #[track_caller]
    pub fn narrow(self, axis: impl Axis + std::fmt::Debug, start: usize, len: usize) -> Self {
        let shape = self.shape();
        let a = check::axis("narrow", &shape, axis);
        check::narrow(&shape, a, start, len);
        self.unary(Layout::Narrow {
            x: self.index(),
            axis: a,
            start,
            len,
        })
    }

    /// The entry `index` along `axis` (negative counts from the end), with that axis removed:
    /// `torch.select`, i.e. `narrow(axis, index, 1).squeeze(axis)`. One time step of a sequence
    /// `[T, B, H]` is `x.select(0, t)`. Backward adds into that entry.
    #[track_caller]
    pub fn select(self, axis: impl Axis + std::fmt::Debug, index: usize) -> Self {
        let shape = self.shape();
        let a = check::axis("select", &shape, axis);
        if index >= shape[a] {
            panic!("select: index {index} out of range for axis {a} of shape {shape:?}");
        }
        self.narrow(a, index, 1).squeeze(a)
    }

    /// `chunks` pieces of equal size along `axis` (negative counts from the end; the last piece
    /// smaller if it does not divide), as `torch.chunk`; an empty axis gives `chunks` empty
    /// pieces.
    #[track_caller]
    pub fn chunk(self, chunks: usize, axis: impl Axis + std::fmt::Debug) -> Vec<Self> {
        let shape = self.shape();
        let a = check::axis("chunk", &shape, axis);
        if chunks == 0 {
            panic!("chunk: cannot split shape {shape:?} into 0 chunks");
        }
        if shape[a] == 0 {
            // An empty axis gives `chunks` empty pieces, as PyTorch's chunk does.
            return vec![self.narrow(a, 0, 0); chunks];
        }
        self.split(shape[a].div_ceil(chunks).max(1), a)
    }

    /// Pieces of `size` along `axis` (negative counts from the end; the last piece smaller if it
    /// does not divide), as `torch.split`; an empty axis gives one empty piece.
    #[track_caller]
    pub fn split(self, size: usize, axis: impl Axis + std::fmt::Debug) -> Vec<Self> {
        let shape = self.shape();
        let a = check::axis("split", &shape, axis);
        if size == 0 {
            panic!("split: pieces of size 0 along axis {a} of shape {shape:?}");
        }
        if shape[a] == 0 {
            // One empty piece, as PyTorch's split gives.
            return vec![self.narrow(a, 0, 0)];
        }
        (0..shape[a])
            .step_by(size)
            .map(|start| self.narrow(a, start, size.min(shape[a] - start)))
            .collect()
    }

    /// Rows of the first axis, in the order of `indices` (an embedding lookup):
    /// [`index_select_dim`](Var::index_select_dim) along axis 0.
    #[track_caller]
    pub fn index_select(self, indices: &[usize]) -> Self {
        self.index_select_dim(0, indices)
    }

    /// The entries along `axis` (negative counts from the end) at `indices`, in their order and
    /// repeats allowed, as PyTorch's `index_select(dim, index)`: the result has the input's
    /// shape with `axis` of size `indices.len()`, and `out[.., k, ..] = x[.., indices[k], ..]`.
    /// Backward scatter-adds, so an entry selected twice gets both gradients.
    #[track_caller]
    pub fn index_select_dim(self, axis: impl Axis + std::fmt::Debug, indices: &[usize]) -> Self {
        let shape = self.shape();
        let a = check::axis("index_select", &shape, axis);
        check::indices("index_select", &shape, a, indices);
        self.unary(Layout::IndexSelect {
            x: self.index(),
            axis: a,
            indices: indices.to_vec(),
        })
    }

    /// softmax along `axis` (negative counts from the end), computed with the lane maximum
    /// subtracted. dx = y ⊙ (g - Σ g ⊙ y).
    #[track_caller]
    pub fn softmax(self, axis: impl Axis + std::fmt::Debug) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v.softmax(0)) {
            return y;
        }
        let a = check::axis("softmax", &self.shape(), axis);
        self.unary(Reduce::Softmax {
            x: self.index(),
            axis: a,
        })
    }

    /// log_softmax along `axis` (negative counts from the end): x - logsumexp(x).
    /// dx = g - softmax(x)·Σ g.
    #[track_caller]
    pub fn log_softmax(self, axis: impl Axis + std::fmt::Debug) -> Self {
        if let Some(y) = self.along_scalar(axis, |v| v.log_softmax(0)) {
            return y;
        }
        let a = check::axis("log_softmax", &self.shape(), axis);
        self.unary(Reduce::LogSoftmax {
            x: self.index(),
            axis: a,
        })
    }

    /// Cross-entropy of logits [N, C] against class indices, averaged over the targets that are
    /// not -100 (PyTorch's `F.cross_entropy` defaults). Unbatched logits `[C]` take one target,
    /// and K-dimensional ones [N, C, d1, ...] one per position, as at
    /// [`cross_entropy_with`](Var::cross_entropy_with); a sequence [T, B, V] is reshaped to
    /// [T·B, V]. Targets may be any integer type ([`ClassIndex`]): a stream's `usize` tokens as
    /// well as `i64`s.
    #[track_caller]
    pub fn cross_entropy<T: ClassIndex>(self, targets: &[T]) -> Self {
        self.cross_entropy_with(targets, CrossEntropyOptions::default())
    }

    /// Cross-entropy of logits x [N, C] against class indices t `[N]` with PyTorch's options
    /// ([`CrossEntropyOptions`]): class weights w `[C]` (1 without), an ignore index, label
    /// smoothing ε and a reduction. With log p = log_softmax(x) along C, each target that counts
    /// has the loss
    ///
    /// ```text
    /// l_n = (1 - ε)·w_t·(-log p_t) + (ε/C)·Σ_c w_c·(-log p_c)        (t = t_n)
    /// ```
    ///
    /// and an ignored one 0. `Mean` is Σ_n l_n / Σ_n w_(t_n) over the targets that count (with
    /// nothing counted, 0/0 = NaN, as PyTorch); `Sum` is Σ_n l_n; `None` returns l `[N]`.
    /// ∂l_n/∂x_c = (1 - ε)·w_t·(p_c - [c = t]) + (ε/C)·(p_c·Σ_j w_j - w_c), scaled as reduced.
    ///
    /// As PyTorch, the logits may also be one unbatched sample `[C]` with one target (`None`
    /// gives a 0-d loss), or K-dimensional [N, C, d1, ...] with a target per position of
    /// [N, d1, ...], given flattened in row-major order (`None` gives l `[N, d1, ...]`, and the
    /// mean runs over every position). Those are the [N, C] loss of the rows that moving C last
    /// and flattening gives, so the same formulas hold per position.
    ///
    /// Panics, at the caller's line, unless there is one target per position, each a class
    /// index or the ignore index, the weights are `[C]` and ε is in [0, 1].
    #[track_caller]
    pub fn cross_entropy_with<T: ClassIndex>(
        self,
        targets: &[T],
        options: CrossEntropyOptions<F>,
    ) -> Self {
        let targets = classes(targets);
        let shape = self.shape();
        let axis = check::class_targets("cross_entropy", &shape, &targets, options.ignore_index);
        if let Some(w) = &options.weight {
            check::class_weights("cross_entropy", &shape, w.shape());
        }
        check_smoothing(options.label_smoothing);
        if shape.len() == 2 {
            return self.cross_entropy_rows(targets, options);
        }
        // [C] is one row; [N, C, d1, ...] becomes the rows [N·d1·..., C] of its positions.
        let positions: Shape = (0..shape.len()).filter(|&d| d != axis).collect();
        let class_last = if shape.len() > 2 {
            let perm: Shape = positions.iter().copied().chain([axis]).collect();
            self.permute(&perm[..])
        } else {
            self
        };
        let reduction = options.reduction;
        let losses = class_last
            .reshape(&[targets.len(), shape[axis]])
            .cross_entropy_rows(targets, options);
        match reduction {
            Reduction::None => {
                let per_position: Shape = positions.iter().map(|&d| shape[d]).collect();
                losses.reshape(&per_position)
            }
            Reduction::Sum | Reduction::Mean => losses,
        }
    }

    /// The fused cross-entropy op over rows [N, C], targets and options already checked.
    #[track_caller]
    fn cross_entropy_rows(self, targets: Vec<i64>, options: CrossEntropyOptions<F>) -> Self {
        let eps = options.label_smoothing;
        let weight = options.weight.map(|w| w.data().to_vec());
        let divisor = match options.reduction {
            Reduction::Mean => {
                let counted = targets.iter().filter(|&&t| t != options.ignore_index);
                let total: f64 = match &weight {
                    Some(w) => counted.map(|&t| w[t as usize].to_f64()).sum(),
                    None => counted.count() as f64,
                };
                F::from_f64(total)
            }
            Reduction::Sum | Reduction::None => F::ONE,
        };
        self.unary(Reduce::CrossEntropy {
            logits: self.index(),
            targets,
            ignore: options.ignore_index,
            weight,
            smoothing: eps,
            reduction: options.reduction,
            divisor,
        })
    }

    /// Cross-entropy of logits [N, C] against class probabilities of the same shape, averaged
    /// over the N rows (PyTorch's `F.cross_entropy` given a floating-point target, with its
    /// defaults); unbatched `[C]` and K-dimensional `[N, C, d1, ...]` logits too. The math is at
    /// [`cross_entropy_probs_with`](Var::cross_entropy_probs_with).
    #[track_caller]
    pub fn cross_entropy_probs(self, target: Self) -> Self {
        self.cross_entropy_probs_with(target, CrossEntropyOptions::default())
    }

    /// Cross-entropy of logits x [N, C] against class probabilities y [N, C] with PyTorch's
    /// options ([`CrossEntropyOptions`]): class weights w `[C]` (1 without), label smoothing ε
    /// and a reduction. With log p = log_softmax(x) along C and q = (1 - ε)·y + ε/C,
    ///
    /// ```text
    /// l_n = -Σ_c w_c·q_nc·log p_nc
    /// ```
    ///
    /// `Mean` is Σ_n l_n / N: PyTorch divides by the number of rows here, not by the weights as
    /// it does for class indices (with N = 0, 0/0 = NaN). `Sum` is Σ_n l_n; `None` returns
    /// l `[N]`. The rows of y need not be distributions (PyTorch does not check that either).
    /// Unbatched logits `[C]` are one row (`None` gives a 0-d loss); K-dimensional ones
    /// [N, C, d1, ...] have a row at every position of [N, d1, ...], each summed along C, the
    /// mean taken over all N·d1·... of them and `None` giving l `[N, d1, ...]`.
    ///
    /// It is composed of `log_softmax`, products and sums, so the gradient reaches y as well as
    /// x, as in PyTorch: ∂l_n/∂x_c = p_c·Σ_j w_j·q_j - w_c·q_c and ∂l_n/∂y_c = -(1 - ε)·w_c·log p_c,
    /// and every higher derivative is recorded. Targets that are data enter as
    /// `tape.constant(y)`.
    ///
    /// Panics, at the caller's line, unless y has the logits' shape, the weights are `[C]`, ε is
    /// in [0, 1] and the ignore index is negative (PyTorch refuses one for probability targets).
    #[track_caller]
    pub fn cross_entropy_probs_with(self, target: Self, options: CrossEntropyOptions<F>) -> Self {
        let tape = self.tape();
        tape.assert_owns("cross_entropy", target);
        let shape = self.shape();
        let axis = check::prob_targets("cross_entropy", &shape, &target.shape());
        if let Some(w) = &options.weight {
            check::class_weights("cross_entropy", &shape, w.shape());
        }
        let eps = options.label_smoothing;
        check_smoothing(eps);
        if options.ignore_index >= 0 {
            panic!(
                "cross_entropy: ignore_index is not supported for probability targets, got {}",
                options.ignore_index
            );
        }
        let classes = shape[axis];
        let q = target.affine(F::ONE - eps, eps / F::from_usize(classes));
        let mut terms = self.log_softmax(axis) * q;
        if let Some(w) = options.weight {
            // [C, 1, ..., 1]: along the class axis, broadcast over the positions after it.
            let mut along: Shape = smallvec::smallvec![1; shape.len() - axis];
            along[0] = classes;
            terms = terms * tape.constant(w.reshape(&along));
        }
        let losses = -terms.sum_axis(axis, false);
        match options.reduction {
            Reduction::None => losses,
            Reduction::Sum => losses.sum(),
            Reduction::Mean => losses.mean(),
        }
    }

    /// `cond ≠ 0 ? self : other` element by element, all three broadcast together (PyTorch's
    /// `self.where(cond, other)`). The gradient goes to whichever side was chosen.
    #[track_caller]
    pub fn where_cond(self, cond: &Tensor<F>, other: Self) -> Self {
        self.tape().assert_owns("where_cond", other);
        let (a, b) = (self.shape(), other.shape());
        let ab = check::broadcast("where_cond", &a, &b);
        check::broadcast("where_cond", cond.shape(), &ab);
        self.tape().record(
            Pointwise::Where {
                cond: cond.clone(),
                a: self.index(),
                b: other.index(),
            },
            &[self.index(), other.index()],
        )
    }

    /// `value` where `mask ≠ 0`, else self; `mask` broadcasts to self's shape.
    #[track_caller]
    pub fn masked_fill(self, mask: &Tensor<F>, value: F) -> Self {
        let shape = self.shape();
        if check::broadcast("masked_fill", mask.shape(), &shape) != shape {
            panic!(
                "masked_fill: mask must broadcast to the value's shape: lhs {:?} vs rhs {:?}",
                mask.shape(),
                &shape[..]
            );
        }
        let fill = self.tape().constant(Tensor::scalar(value));
        fill.where_cond(mask, self)
    }

    /// The same value, with the gradient flowing back through it multiplied by `s`:
    /// `detach(x) + s·(x - detach(x))`. With s = 0 it is `detach`, with s = 1 the identity (one
    /// reshape node, so that the result is still a node of its own). Randomized truncation of
    /// BPTT scales the gradient into each state this way.
    #[track_caller]
    pub fn scale_grad(self, s: F) -> Self {
        if s == F::ONE {
            return self.reshape(&self.shape());
        }
        let stopped = self.detach();
        if s == F::ZERO {
            return stopped;
        }
        // Forward: stopped + s·0 = x exactly. Backward: s·g reaches x.
        stopped + (self - stopped) * s
    }

    /// The same value with no gradient flowing back through it (shares storage).
    #[track_caller]
    pub fn detach(self) -> Self {
        self.tape().constant_sharing(self.value())
    }
}

/// Label smoothing ε in [0, 1], as PyTorch's `F.cross_entropy` requires (NaN is refused too).
#[track_caller]
fn check_smoothing<F: Float>(eps: F) {
    if !(F::ZERO..=F::ONE).contains(&eps) {
        panic!("cross_entropy: label_smoothing must be in [0, 1], got {eps:?}");
    }
}

/// Joins values along an existing `axis` (negative counts from the end); all other axes must
/// agree. Backward hands each input its slice of the gradient.
#[track_caller]
pub fn concat<'t, F: Float>(xs: &[Var<'t, F>], axis: impl Axis + std::fmt::Debug) -> Var<'t, F> {
    let Some(first) = xs.first() else {
        panic!("concat: needs at least one input");
    };
    let tape = first.tape();
    let shapes: Vec<Shape> = xs.iter().map(|v| v.shape()).collect();
    let a = check::axis("concat", &shapes[0], axis);
    for v in xs {
        tape.assert_owns("concat", *v);
    }
    let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
    check::concat(&refs, a);
    let indices: SmallVec<[usize; 4]> = xs.iter().map(|v| v.index()).collect();
    tape.record(
        Layout::Concat {
            xs: indices.clone(),
            axis: a,
        },
        &indices,
    )
}

/// Stacks values of one shape along a new `axis`, one of the ndim + 1 gaps: 0..=ndim, or
/// -ndim - 1..=-1 counted from the end, so -1 stacks along a new last axis (as PyTorch).
#[track_caller]
pub fn stack<'t, F: Float>(xs: &[Var<'t, F>], axis: impl Axis + std::fmt::Debug) -> Var<'t, F> {
    let Some(first) = xs.first() else {
        panic!("stack: needs at least one input");
    };
    let shape = first.shape();
    for v in xs {
        check::same("stack", &shape, &v.shape());
    }
    let a = check::new_axis("stack", &shape, axis);
    let expanded: Vec<Var<'t, F>> = xs.iter().map(|v| v.unsqueeze(a)).collect();
    concat(&expanded, a)
}
