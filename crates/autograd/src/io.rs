//! Named tensors on disk as safetensors files, the format PyTorch's `safetensors.torch` writes.
//! Writes are atomic: a temporary file beside the target, then a rename, so a failed save never
//! leaves a half-written file where a good one was.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::float::Float;
use crate::tensor::Tensor;

/// The tensors and string metadata of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorFile<F: Float = f32> {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor<F>>,
    /// The header's `__metadata__` entries.
    pub metadata: BTreeMap<String, String>,
}

impl<F: Float> Default for TensorFile<F> {
    fn default() -> Self {
        TensorFile {
            tensors: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }
}

/// Why a file could not be read or written.
#[derive(Debug)]
pub enum IoError {
    /// The operating system refused (missing file, no permission, disk full).
    Os {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file (truncated, corrupt, not safetensors at all).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor holds an element type this engine does not read.
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its element type.
        dtype: String,
    },
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Os {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            IoError::Corrupt { path, reason } => write!(
                f,
                "{} is not a valid safetensors file ({reason}); was it truncated or written by another program?",
                path.display()
            ),
            IoError::UnsupportedDtype { path, name, dtype } => write!(
                f,
                "{}: tensor `{name}` holds {dtype}; only F32 and F64 can be loaded",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IoError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn dtype_of<F: Float>() -> Dtype {
    if std::mem::size_of::<F>() == 8 {
        Dtype::F64
    } else {
        Dtype::F32
    }
}

fn to_bytes<F: Float>(t: &Tensor<F>) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.nbytes());
    for &x in t.data() {
        match dtype_of::<F>() {
            Dtype::F64 => out.extend_from_slice(&x.to_f64().to_le_bytes()),
            _ => out.extend_from_slice(&(x.to_f64() as f32).to_le_bytes()),
        }
    }
    out
}

/// Writes `file` to `path` atomically, tensors in the element type `F` (F32 or F64).
pub fn save_tensors<F: Float>(path: &Path, file: &TensorFile<F>) -> Result<(), IoError> {
    let bytes: Vec<(String, Vec<u8>)> = file
        .tensors
        .iter()
        .map(|(name, t)| (name.clone(), to_bytes(t)))
        .collect();
    let views = file.tensors.iter().zip(&bytes).map(|((name, t), (_, b))| {
        let view = TensorView::new(dtype_of::<F>(), t.shape().to_vec(), b)
            .expect("a tensor's bytes match its shape");
        (name.clone(), view)
    });
    let metadata: HashMap<String, String> = file.metadata.clone().into_iter().collect();
    let buffer = safetensors::serialize(views, Some(metadata)).map_err(|e| IoError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("could not serialize: {e}"),
    })?;
    write_atomic(path, &buffer)
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, then renames it over
/// `path`. On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let os = |action, source| IoError::Os {
        path: path.to_path_buf(),
        action,
        source,
    };
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| os("create a temporary file beside", e))?;
        f.write_all(bytes).map_err(|e| os("write", e))?;
        f.sync_all().map_err(|e| os("flush", e))?;
        fs::rename(&tmp, path).map_err(|e| os("replace", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a safetensors file, converting F32 or F64 tensors to `F`.
pub fn load_tensors<F: Float>(path: &Path) -> Result<TensorFile<F>, IoError> {
    let bytes = fs::read(path).map_err(|source| IoError::Os {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    let corrupt = |e: safetensors::SafeTensorError| IoError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let st = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let mut file = TensorFile::default();
    if let Some(meta) = header.metadata() {
        file.metadata = meta.clone().into_iter().collect();
    }
    for (name, view) in st.tensors() {
        let data: Vec<F> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| F::from_f64(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| F::from_f64(f64::from_le_bytes(b.try_into().expect("8 bytes"))))
                .collect(),
            other => {
                return Err(IoError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        // safetensors accepts a shape of 0 bytes whatever its other dimensions ([0, 2³², 2³²]);
        // from_vec refuses one that no tensor can have, as a corrupt file.
        let tensor = Tensor::from_vec(data, view.shape()).map_err(|e| IoError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        file.tensors.insert(name, tensor);
    }
    Ok(file)
}
