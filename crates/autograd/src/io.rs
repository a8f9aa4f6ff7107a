//! Named tensors on disk as safetensors files, the format PyTorch's `safetensors.torch` writes.
//! Writes are atomic: a new temporary file beside the target, then a rename, so a failed save
//! never leaves a half-written file where a good one was.

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
    /// Floating-point tensors by name (F32 or F64 on disk).
    pub tensors: BTreeMap<String, Tensor<F>>,
    /// Integer tensors by name (I64, I32 or U8 on disk): token ids, lengths, masks. A name is
    /// in one map or the other.
    pub integers: BTreeMap<String, IntTensor>,
    /// The header's `__metadata__` entries.
    pub metadata: BTreeMap<String, String>,
}

impl<F: Float> Default for TensorFile<F> {
    fn default() -> Self {
        TensorFile {
            tensors: BTreeMap::new(),
            integers: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }
}

/// The elements of an integer tensor, in the type a file stores them as (PyTorch's int64,
/// int32 and uint8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Integers {
    /// int64 (PyTorch's default integer type: token ids, lengths).
    I64(Vec<i64>),
    /// int32.
    I32(Vec<i32>),
    /// uint8 (masks, bytes).
    U8(Vec<u8>),
}

impl Integers {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Integers::I64(v) => v.len(),
            Integers::I32(v) => v.len(),
            Integers::U8(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as an i64 (exact for each type).
    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Integers::I64(v) => v.clone(),
            Integers::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Integers::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Integers::I64(_) => Dtype::I64,
            Integers::I32(_) => Dtype::I32,
            Integers::U8(_) => Dtype::U8,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Integers::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Integers::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Integers::U8(v) => v.clone(),
        }
    }
}

/// An integer tensor: a row-major shape and its elements, kept in the type they were stored
/// in. Not for computing (a [`Tensor`] is); for what a model reads and writes beside its
/// weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntTensor {
    shape: Vec<usize>,
    values: Integers,
}

impl IntTensor {
    /// `values` of `shape`, or an error when their counts differ.
    pub fn new(values: Integers, shape: &[usize]) -> Result<Self, crate::TensorError> {
        let expected =
            crate::shape::checked_numel(shape).ok_or_else(|| crate::TensorError::TooLarge {
                shape: shape.to_vec(),
            })?;
        if values.len() != expected {
            return Err(crate::TensorError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                found: values.len(),
            });
        }
        Ok(IntTensor {
            shape: shape.to_vec(),
            values,
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major, in their stored type.
    pub fn values(&self) -> &Integers {
        &self.values
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
    /// What was asked to be saved cannot be written as a file a reader loads (a tensor named
    /// `__metadata__`, the name the format keeps for its metadata); nothing was written.
    Unwritable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
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
            IoError::Unwritable { path, reason } => write!(
                f,
                "cannot save {}: {reason}; nothing was written",
                path.display()
            ),
            IoError::UnsupportedDtype { path, name, dtype } => write!(
                f,
                "{}: tensor `{name}` holds {dtype}; only F32, F64, I64, I32 and U8 can be loaded",
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

/// Writes `file` to `path` atomically, tensors in the element type `F` (F32 or F64) and integer
/// tensors in their own (I64, I32, U8), as `safetensors.torch` writes them. A tensor
/// named `__metadata__` (the name the format keeps for its metadata) is refused, and the bytes
/// are read back before they replace anything: a file no reader could load is never written.
pub fn save_tensors<F: Float>(path: &Path, file: &TensorFile<F>) -> Result<(), IoError> {
    let unwritable = |reason: String| IoError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    if file.tensors.contains_key("__metadata__") {
        return Err(unwritable(
            "a tensor is named `__metadata__`, the name safetensors keeps for the file's metadata; \
             rename it"
                .into(),
        ));
    }
    if let Some(name) = file.integers.keys().find(|n| file.tensors.contains_key(*n)) {
        return Err(unwritable(format!(
            "`{name}` names both a tensor and an integer tensor; a file holds one of each name"
        )));
    }
    if file.integers.contains_key("__metadata__") {
        return Err(unwritable(
            "an integer tensor is named `__metadata__`, the name safetensors keeps for the \
             file's metadata; rename it"
                .into(),
        ));
    }
    let floats = file
        .tensors
        .iter()
        .map(|(name, t)| (name, dtype_of::<F>(), t.shape(), to_bytes(t)));
    let integers = file
        .integers
        .iter()
        .map(|(name, t)| (name, t.values.dtype(), t.shape(), t.values.to_le_bytes()));
    let bytes: Vec<_> = floats.chain(integers).collect();
    let views = bytes.iter().map(|(name, dtype, shape, b)| {
        let view =
            TensorView::new(*dtype, shape.to_vec(), b).expect("a tensor's bytes match its shape");
        (name.to_string(), view)
    });
    let metadata: HashMap<String, String> = file.metadata.clone().into_iter().collect();
    let buffer = safetensors::serialize(views, Some(metadata))
        .map_err(|e| unwritable(format!("could not serialize: {e}")))?;
    SafeTensors::deserialize(&buffer)
        .map_err(|e| unwritable(format!("the serialized bytes do not read back: {e}")))?;
    write_atomic(path, &buffer)
}

/// Writes `bytes` to `path` atomically and durably: into a new temporary file beside it, flushed
/// to disk, renamed over `path`, and the directory flushed so that the rename survives a crash.
/// On failure the temporary file is removed and `path` is untouched.
///
/// The temporary file is created exclusively (never an existing file, never through a symlink)
/// under a name ending in 64 random bits, so nothing planted in advance can be written through.
/// One left by a killed process is named `.<name>.tmp-<hex>`: see [`remove_temporaries`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let os = |action, source| IoError::Os {
        path: path.to_path_buf(),
        action,
        source,
    };
    let (mut file, tmp) = create_temporary(path)?;
    let written = file
        .write_all(bytes)
        .map_err(|e| os("write", e))
        .and_then(|()| file.sync_all().map_err(|e| os("flush", e)))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| os("replace", e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_directory(path).map_err(|e| os("flush the directory of", e))
}

/// Checks that [`write_atomic`] can write `path`: it is not a directory, its directory exists,
/// and a temporary file can be created beside it (the directory is writable). Leaves nothing
/// behind.
pub fn check_writable(path: &Path) -> Result<(), IoError> {
    let refuse = |kind, why: &str| IoError::Os {
        path: path.to_path_buf(),
        action: "write",
        source: std::io::Error::new(kind, why),
    };
    if path.is_dir() {
        return Err(refuse(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if dir.is_some_and(|d| !d.is_dir()) {
        return Err(refuse(
            std::io::ErrorKind::NotFound,
            "its directory does not exist",
        ));
    }
    let (_, tmp) = create_temporary(path)?;
    let _ = fs::remove_file(tmp);
    Ok(())
}

/// Removes the temporary files that [`write_atomic`] calls on `path` left behind when their
/// process was killed: regular files named `.<name>.tmp-` and 16 hex digits, and nothing else
/// (a symlink, a directory or another name is left alone). Only safe while no other process
/// writes `path`: a live write's temporary looks the same.
pub fn remove_temporaries(path: &Path) -> Result<(), IoError> {
    let os = |action, source| IoError::Os {
        path: path.to_path_buf(),
        action,
        source,
    };
    let prefix = temporary_prefix(path);
    let entries = fs::read_dir(directory_of(path)).map_err(|e| os("list the directory of", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| os("list the directory of", e))?;
        // Only what write_atomic makes: a regular file (not a symlink, not a directory) named
        // the prefix and 16 hex digits. Anything else of a similar name is someone else's.
        let ours = entry.file_name().to_str().is_some_and(|n| {
            n.strip_prefix(&prefix).is_some_and(|suffix| {
                suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
            })
        });
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path()).map_err(|e| os("remove a temporary file beside", e))?;
        }
    }
    Ok(())
}

/// `.<name>.tmp-`: what every temporary file of `path` is named, before its random suffix.
fn temporary_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    format!(".{name}.tmp-")
}

/// A new file beside `path`, created exclusively under a random name.
fn create_temporary(path: &Path) -> Result<(fs::File, PathBuf), IoError> {
    let prefix = temporary_prefix(path);
    let mut last = None;
    // A clash of 64 random bits means someone is guessing; a few tries outlast them.
    for _ in 0..8 {
        let tmp = path.with_file_name(format!("{prefix}{:016x}", rand::random::<u64>()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(temporary_error(path, e)),
        }
    }
    Err(temporary_error(path, last.expect("a failed try")))
}

fn temporary_error(path: &Path, source: std::io::Error) -> IoError {
    IoError::Os {
        path: path.to_path_buf(),
        action: "create a temporary file beside",
        source,
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Flushes the directory entry of `path` to disk: without it, a crash just after a rename can
/// bring back the old file.
#[cfg(unix)]
fn sync_directory(path: &Path) -> std::io::Result<()> {
    fs::File::open(directory_of(path))?.sync_all()
}

/// Other systems cannot open a directory as a file; their rename is as durable as it gets.
#[cfg(not(unix))]
fn sync_directory(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Reads a safetensors file: F32 and F64 tensors converted to `F` into
/// [`tensors`](TensorFile::tensors), I64, I32 and U8 ones as they are into
/// [`integers`](TensorFile::integers).
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
        let integers = match view.dtype() {
            Dtype::I64 => Some(Integers::I64(
                view.data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            )),
            Dtype::I32 => Some(Integers::I32(
                view.data()
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            )),
            Dtype::U8 => Some(Integers::U8(view.data().to_vec())),
            _ => None,
        };
        if let Some(values) = integers {
            let tensor = IntTensor::new(values, view.shape()).map_err(|e| IoError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
            file.integers.insert(name, tensor);
            continue;
        }
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
