//! A model's weights as a safetensors file with PyTorch's state_dict names, in both directions:
//! a file written from `model.state_dict()` in PyTorch loads into the matching model here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rewind_autograd::io::{load_tensors, save_tensors, IoError, TensorFile};
use rewind_autograd::{Float, Tensor};

use crate::module::Module;

/// The model's parameters by name (`torch.nn.Module.state_dict`).
pub fn state_dict<F: Float>(model: &dyn Module<F>) -> BTreeMap<String, Tensor<F>> {
    model
        .params()
        .into_iter()
        .map(|(name, p)| (name, p.value().clone()))
        .collect()
}

/// Sets every parameter from `tensors`, which must hold exactly the model's names with the
/// model's shapes; otherwise nothing changes and the error lists each problem.
pub fn load_state_dict<F: Float>(
    model: &mut dyn Module<F>,
    tensors: &BTreeMap<String, Tensor<F>>,
) -> Result<(), WeightsError> {
    let mut problems = Vec::new();
    let mut params = model.params_mut();
    for (name, p) in &params {
        match tensors.get(name) {
            None => problems.push(WeightProblem::Missing {
                name: name.clone(),
                expected: p.shape().to_vec(),
            }),
            Some(t) if t.shape() != p.shape() => problems.push(WeightProblem::Shape {
                name: name.clone(),
                expected: p.shape().to_vec(),
                found: t.shape().to_vec(),
            }),
            Some(_) => {}
        }
    }
    for (name, t) in tensors {
        if !params.iter().any(|(n, _)| n == name) {
            problems.push(WeightProblem::Unexpected {
                name: name.clone(),
                shape: t.shape().to_vec(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch(problems));
    }
    for (name, p) in params.iter_mut() {
        p.set(tensors[name].clone());
    }
    Ok(())
}

/// Writes the model's weights to `path` as safetensors (atomically: a failed save leaves any
/// earlier file intact).
pub fn save_weights<F: Float>(model: &dyn Module<F>, path: &Path) -> Result<(), WeightsError> {
    let file = TensorFile {
        tensors: state_dict(model),
        metadata: BTreeMap::from([("format".to_string(), "pt".to_string())]),
    };
    save_tensors(path, &file).map_err(WeightsError::Io)
}

/// Loads weights written by [`save_weights`] or by PyTorch's `safetensors.torch.save_file(model.state_dict(), path)`.
pub fn load_weights<F: Float>(model: &mut dyn Module<F>, path: &Path) -> Result<(), WeightsError> {
    let file = load_tensors::<F>(path).map_err(WeightsError::Io)?;
    load_state_dict(model, &file.tensors)
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
