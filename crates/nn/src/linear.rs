//! `Linear` and `Embedding`: the affine map and the lookup table.

use std::path::Path;

use rand::Rng;
use rewind_autograd::{Float, Param, Tape, Tensor, Var};

use crate::module::Module;
use crate::weights::{load_weights, WeightsError};

/// `y = x Wᵀ + b`, `W: [out, in]`, `b: [out]`, over the last axis of x (any leading axes), as
/// `torch.nn.Linear`. Init: W and b ~ U(-1/√in, 1/√in). Without a bias (PyTorch's
/// `bias=False`) it is `y = x Wᵀ`, and the layer has no `bias` parameter at all.
#[derive(Debug)]
pub struct Linear<F: Float = f32> {
    /// [out_features, in_features].
    pub weight: Param<F>,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Param<F>>,
}

impl Linear {
    /// An f32 layer: [`init`](Linear::init) in the precision a program gets without a type
    /// annotation, as `torch.nn.Linear` is float32. Another precision is
    /// `Linear::<f64>::init(in_features, out_features, &mut rng)`.
    pub fn new<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Self {
        Self::init(in_features, out_features, rng)
    }
}

impl<F: Float> Linear<F> {
    /// A layer from `in_features` to `out_features` in any precision, with a bias, every
    /// parameter ~ U(-1/√in, 1/√in) from `rng`, as PyTorch initialises one. With no input
    /// features the weight is empty and the bias zero (PyTorch's bound 0 for a fan-in of 0).
    pub fn init<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Self {
        let bound = if in_features == 0 {
            F::ZERO
        } else {
            F::from_f64(1.0 / (in_features as f64).sqrt())
        };
        Linear {
            weight: Param::named(
                "weight",
                Tensor::uniform(&[out_features, in_features], -bound, bound, rng),
            ),
            bias: Some(Param::named(
                "bias",
                Tensor::uniform(&[out_features], -bound, bound, rng),
            )),
        }
    }

    /// A layer from `in_features` to `out_features`, with a bias, every parameter zero: the
    /// layer to load weights into, built without a generator.
    pub fn zeros(in_features: usize, out_features: usize) -> Self {
        Linear {
            weight: Param::named("weight", Tensor::zeros(&[out_features, in_features])),
            bias: Some(Param::named("bias", Tensor::zeros(&[out_features]))),
        }
    }

    /// The layer with a bias whose `weight` `[out, in]` and `bias` `[out]` are read from the
    /// safetensors file at `path` (what PyTorch saves for `nn.Linear(in, out).state_dict()`).
    /// The file must hold exactly those; otherwise the error lists every missing, unexpected
    /// and misshapen name.
    pub fn load(
        in_features: usize,
        out_features: usize,
        path: impl AsRef<Path>,
    ) -> Result<Self, WeightsError> {
        let mut layer = Self::zeros(in_features, out_features);
        load_weights(&mut layer, path.as_ref())?;
        Ok(layer)
    }

    /// The layer without a bias (`nn.Linear(in, out, bias=False)`), its `weight` read from the
    /// file at `path`, strictly, as [`load`](Linear::load).
    pub fn load_without_bias(
        in_features: usize,
        out_features: usize,
        path: impl AsRef<Path>,
    ) -> Result<Self, WeightsError> {
        let mut layer = Self::zeros(in_features, out_features).without_bias();
        load_weights(&mut layer, path.as_ref())?;
        Ok(layer)
    }

    /// The same layer without a bias.
    pub fn without_bias(mut self) -> Self {
        self.bias = None;
        self
    }

    /// Applies the layer to x [..., in] giving [..., out].
    #[track_caller]
    pub fn forward<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        let (shape, weight) = (x.shape(), self.weight.shape());
        let (out, inp) = (weight[0], weight[1]);
        if shape.last() != Some(&inp) {
            panic!(
                "linear: input's last axis must be in_features: input {:?} vs weight {:?}",
                &shape[..],
                &weight[..]
            );
        }
        let rows = shape[..shape.len() - 1].iter().product();
        let mut y = x.reshape(&[rows, inp]).matmul(tape.param(&self.weight).t());
        if let Some(b) = &self.bias {
            y = y + tape.param(b);
        }
        let mut out_shape = shape.clone();
        *out_shape.last_mut().expect("non-empty") = out;
        y.reshape(&out_shape)
    }
}

impl<F: Float> Module<F> for Linear<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut p = vec![("weight".to_string(), &self.weight)];
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b)));
        p
    }
}

/// A lookup table of `num_embeddings` vectors of size `embedding_dim`, as `torch.nn.Embedding`.
/// Init: N(0, 1), with the `padding_idx` row zero. The padding row gets no gradient.
#[derive(Debug)]
pub struct Embedding<F: Float = f32> {
    /// [num_embeddings, embedding_dim].
    pub weight: Param<F>,
    /// The index whose row stays fixed (zero at init) and gets no gradient.
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// An f32 table: [`init`](Embedding::init) in the precision a program gets without a type
    /// annotation. Another precision is `Embedding::<f64>::init(num, dim, &mut rng)`.
    pub fn new<R: Rng + ?Sized>(num_embeddings: usize, embedding_dim: usize, rng: &mut R) -> Self {
        Self::init(num_embeddings, embedding_dim, rng)
    }
}

impl<F: Float> Embedding<F> {
    /// A table in any precision, every entry ~ N(0, 1) from `rng`, as PyTorch initialises one.
    pub fn init<R: Rng + ?Sized>(num_embeddings: usize, embedding_dim: usize, rng: &mut R) -> Self {
        Embedding {
            weight: Param::named(
                "weight",
                Tensor::normal(&[num_embeddings, embedding_dim], F::ZERO, F::ONE, rng),
            ),
            padding_idx: None,
        }
    }

    /// A table of zeros: the table to load weights into, built without a generator.
    pub fn zeros(num_embeddings: usize, embedding_dim: usize) -> Self {
        Embedding {
            weight: Param::named("weight", Tensor::zeros(&[num_embeddings, embedding_dim])),
            padding_idx: None,
        }
    }

    /// The table whose `weight` [num_embeddings, embedding_dim] is read from the safetensors file
    /// at `path` (what PyTorch saves for `nn.Embedding(n, dim).state_dict()`), strictly: the error
    /// lists every missing, unexpected and misshapen name. For a padding index, load into
    /// `Embedding::zeros(n, dim).with_padding_idx(i)` with [`load_weights`], which keeps the
    /// file's padding row as PyTorch does (`with_padding_idx` after loading would zero it).
    pub fn load(
        num_embeddings: usize,
        embedding_dim: usize,
        path: impl AsRef<Path>,
    ) -> Result<Self, WeightsError> {
        let mut table = Self::zeros(num_embeddings, embedding_dim);
        load_weights(&mut table, path.as_ref())?;
        Ok(table)
    }

    /// Marks `index` as padding: its row is zeroed and never updated.
    #[track_caller]
    pub fn with_padding_idx(mut self, index: usize) -> Self {
        let (n, dim) = (self.weight.shape()[0], self.weight.shape()[1]);
        assert!(
            index < n,
            "embedding: padding_idx {index} out of range for {n} embeddings"
        );
        self.weight
            .update(|w| w.data_mut()[index * dim..(index + 1) * dim].fill(F::ZERO));
        self.padding_idx = Some(index);
        self
    }

    /// The rows for `indices`, shaped `[shape..., embedding_dim]` where `shape` is the shape of the
    /// index array (e.g. [T, B]).
    #[track_caller]
    pub fn forward<'t>(&self, tape: &'t Tape<F>, indices: &[usize], shape: &[usize]) -> Var<'t, F> {
        let count: usize = shape.iter().product();
        if count != indices.len() {
            panic!(
                "embedding: {} indices do not fill shape {shape:?}",
                indices.len()
            );
        }
        let dim = self.weight.shape()[1];
        let mut rows = tape.param(&self.weight).index_select(indices);
        if let Some(pad) = self.padding_idx.filter(|p| indices.contains(p)) {
            let keep: Vec<F> = indices
                .iter()
                .map(|&i| if i == pad { F::ZERO } else { F::ONE })
                .collect();
            let keep = Tensor::from_vec(keep, &[indices.len(), 1]).expect("one per index");
            let pad_row = self.weight.value().data()[pad * dim..(pad + 1) * dim].to_vec();
            let pad_row = tape.constant(Tensor::from_vec(pad_row, &[1, dim]).expect("one row"));
            rows = rows.where_cond(&keep, pad_row);
        }
        let mut out_shape = shape.to_vec();
        out_shape.push(dim);
        rows.reshape(&out_shape)
    }
}

impl<F: Float> Module<F> for Embedding<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        vec![("weight".to_string(), &self.weight)]
    }
}
