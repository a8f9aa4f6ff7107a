//! A model's weights as a safetensors file with PyTorch's state_dict names, in both directions:
//! a file written from `model.state_dict()` in PyTorch loads into the matching model here,
//! strictly (every name, nothing else, each shape) or not (PyTorch's `strict=False`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rewind_autograd::io::{load_tensors, save_tensors, IoError, TensorFile};
use rewind_autograd::{Float, Tensor};

use crate::module::Module;

/// The model's parameters by name (`torch.nn.Module.state_dict`).
pub fn state_dict<F: Float>(model: &dyn Module<F>) -> BTreeMap<String, Tensor<F>> {
    model
        .params()
        .into_iter()
        .map(|(name, p)| (name, p.value()))
        .collect()
}

/// Sets every parameter from `tensors`, which must hold exactly the model's names with the
/// model's shapes (`torch.nn.Module.load_state_dict`, strict); otherwise nothing changes and the
/// error lists each problem: the missing names, then the unexpected ones, then the misshapen.
pub fn load_state_dict<F: Float>(
    model: &mut dyn Module<F>,
    tensors: &BTreeMap<String, Tensor<F>>,
) -> Result<(), WeightsError> {
    let fit = Fit::of(model, tensors);
    let problems: Vec<WeightProblem> = (fit.missing.into_iter())
        .chain(fit.unexpected)
        .chain(fit.shapes)
        .collect();
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch(problems));
    }
    for (name, p) in model.params() {
        p.set(tensors[&name].clone());
    }
    Ok(())
}

/// Sets the parameters whose names are in `tensors` and returns the names that did not match
/// (`load_state_dict(..., strict=False)`): the model's parameters the tensors lack, which keep
/// their values, and the tensors no parameter has, which are ignored. As in PyTorch, a tensor
/// whose shape differs from its parameter's is still an error, and then nothing changes.
pub fn load_state_dict_non_strict<F: Float>(
    model: &mut dyn Module<F>,
    tensors: &BTreeMap<String, Tensor<F>>,
) -> Result<Unmatched, WeightsError> {
    let fit = Fit::of(model, tensors);
    if !fit.shapes.is_empty() {
        return Err(WeightsError::Mismatch(fit.shapes));
    }
    for (name, p) in model.params() {
        if let Some(t) = tensors.get(&name) {
            p.set(t.clone());
        }
    }
    Ok(Unmatched {
        missing: fit
            .missing
            .into_iter()
            .map(WeightProblem::into_name)
            .collect(),
        unexpected: fit
            .unexpected
            .into_iter()
            .map(WeightProblem::into_name)
            .collect(),
    })
}

/// How a set of tensors fits a model: each kind of problem, in the order PyTorch lists them.
struct Fit {
    /// The model's parameters the tensors lack, in the model's order.
    missing: Vec<WeightProblem>,
    /// The tensors no parameter has, in name order.
    unexpected: Vec<WeightProblem>,
    /// The tensors whose shape is not their parameter's, in the model's order.
    shapes: Vec<WeightProblem>,
}

impl Fit {
    fn of<F: Float>(model: &dyn Module<F>, tensors: &BTreeMap<String, Tensor<F>>) -> Self {
        let params = model.params();
        let mut fit = Fit {
            missing: Vec::new(),
            unexpected: Vec::new(),
            shapes: Vec::new(),
        };
        for (name, p) in &params {
            let expected = p.shape().to_vec();
            match tensors.get(name) {
                None => fit.missing.push(WeightProblem::Missing {
                    name: name.clone(),
                    expected,
                }),
                Some(t) if t.shape() != expected => fit.shapes.push(WeightProblem::Shape {
                    name: name.clone(),
                    expected,
                    found: t.shape().to_vec(),
                }),
                Some(_) => {}
            }
        }
        for (name, t) in tensors {
            if !params.iter().any(|(n, _)| n == name) {
                fit.unexpected.push(WeightProblem::Unexpected {
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                });
            }
        }
        fit
    }
}

/// Writes the model's weights to `path` as safetensors (atomically: a failed save leaves any
/// earlier file intact).
pub fn save_weights<F: Float>(model: &dyn Module<F>, path: &Path) -> Result<(), WeightsError> {
    let file = TensorFile {
        tensors: state_dict(model),
        metadata: BTreeMap::from([("format".to_string(), "pt".to_string())]),
        ..TensorFile::default()
    };
    save_tensors(path, &file).map_err(WeightsError::Io)
}

/// Loads weights written by [`save_weights`] or by PyTorch's `safetensors.torch.save_file(model.state_dict(), path)`,
/// strictly, as [`load_state_dict`].
/// An integer tensor in the file is never a weight: it is a problem of its own, in the place
/// of the parameter it names, if any.
pub fn load_weights<F: Float>(model: &mut dyn Module<F>, path: &Path) -> Result<(), WeightsError> {
    let file = load_tensors::<F>(path).map_err(WeightsError::Io)?;
    if !file.integers.is_empty() {
        let fit = Fit::of(model, &file.tensors);
        let named = |p: &WeightProblem| file.integers.contains_key(p.name());
        let missing = fit.missing.into_iter().filter(|p| !named(p));
        let problems = missing
            .chain(integer_problems(&file))
            .chain(fit.unexpected)
            .chain(fit.shapes)
            .collect();
        return Err(WeightsError::Mismatch(problems));
    }
    load_state_dict(model, &file.tensors)
}

/// Each integer tensor of `file`, as a problem for a load of weights.
fn integer_problems<F: Float>(file: &TensorFile<F>) -> impl Iterator<Item = WeightProblem> + '_ {
    file.integers
        .iter()
        .map(|(name, t)| WeightProblem::Integers {
            name: name.clone(),
            shape: t.shape().to_vec(),
        })
}

/// Loads the weights in the file at `path` whose names the model has, as
/// [`load_state_dict_non_strict`], and returns the names that did not match.
pub fn load_weights_non_strict<F: Float>(
    model: &mut dyn Module<F>,
    path: &Path,
) -> Result<Unmatched, WeightsError> {
    let file = load_tensors::<F>(path).map_err(WeightsError::Io)?;
    let params: Vec<String> = model.params().into_iter().map(|(n, _)| n).collect();
    let clashes: Vec<WeightProblem> = integer_problems(&file)
        .filter(|p| params.iter().any(|n| n == p.name()))
        .collect();
    if !clashes.is_empty() {
        return Err(WeightsError::Mismatch(clashes));
    }
    let mut unmatched = load_state_dict_non_strict(model, &file.tensors)?;
    unmatched.unexpected.extend(file.integers.keys().cloned());
    unmatched.unexpected.sort();
    Ok(unmatched)
}

/// Builds a model with `build` and loads every parameter from the file at `path`, strictly (as
/// [`load_weights`]): any [`Module`] loads with its own constructor, and the caller needs no
/// generator. `build` is handed one seeded with 0, whose draws the file then overwrites; a model
/// with parts that are not parameters (dropout's masks) keeps what that seed gave them.
///
/// ```no_run
/// use std::path::Path;
/// use rewind_nn::{load_module, Linear};
///
/// let head = load_module(Path::new("head.safetensors"), |rng| Linear::<f32>::new(16, 4, rng))?;
/// # Ok::<(), rewind_nn::WeightsError>(())
/// ```
pub fn load_module<F: Float, M: Module<F>>(
    path: &Path,
    build: impl FnOnce(&mut StdRng) -> M,
) -> Result<M, WeightsError> {
    let mut model = build(&mut StdRng::seed_from_u64(0));
    load_weights(&mut model, path)?;
    Ok(model)
}

/// What a non-strict load did not match (PyTorch's `missing_keys` and `unexpected_keys`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unmatched {
    /// The model's parameters that were not loaded, in the model's order.
    pub missing: Vec<String>,
    /// The tensors no parameter has, in name order.
    pub unexpected: Vec<String>,
}

/// Why weights could not be loaded.
#[derive(Debug)]
pub enum WeightsError {
    /// The file could not be read or written, or is not valid safetensors.
    Io(IoError),
    /// The tensors do not fit the model.
    Mismatch(Vec<WeightProblem>),
}

/// One way a set of tensors does not fit a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightProblem {
    /// The model has this parameter; the file does not.
    Missing {
        /// The parameter.
        name: String,
        /// Its shape in the model.
        expected: Vec<usize>,
    },
    /// The file has this tensor; the model has no such parameter.
    Unexpected {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
    },
    /// The file holds integers under this name (I64, I32 or U8), which no weight is.
    Integers {
        /// The tensor.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
    },
    /// Both have it, in different shapes.
    Shape {
        /// The parameter.
        name: String,
        /// Its shape in the model.
        expected: Vec<usize>,
        /// Its shape in the file.
        found: Vec<usize>,
    },
}

impl WeightProblem {
    /// The name of the parameter or tensor.
    fn into_name(self) -> String {
        self.name().to_string()
    }

    /// The name of the parameter or tensor.
    fn name(&self) -> &str {
        match self {
            WeightProblem::Missing { name, .. }
            | WeightProblem::Unexpected { name, .. }
            | WeightProblem::Integers { name, .. }
            | WeightProblem::Shape { name, .. } => name,
        }
    }
}

impl fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightProblem::Missing { name, expected } => {
                write!(f, "missing `{name}` (the model expects {expected:?})")
            }
            WeightProblem::Unexpected { name, shape } => {
                write!(
                    f,
                    "unexpected `{name}` {shape:?} (the model has no such parameter)"
                )
            }
            WeightProblem::Integers { name, shape } => write!(
                f,
                "`{name}` {shape:?} holds integers, and a weight is F32 or F64"
            ),
            WeightProblem::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "`{name}` has shape {found:?}, the model expects {expected:?}"
            ),
        }
    }
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io(e) => write!(f, "{e}"),
            WeightsError::Mismatch(problems) => {
                let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                write!(f, "the weights do not fit the model: {}", list.join("; "))
            }
        }
    }
}

impl std::error::Error for WeightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WeightsError::Io(e) => Some(e),
            WeightsError::Mismatch(_) => None,
        }
    }
}
