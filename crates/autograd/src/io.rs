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

/// Writes `file` to `path` atomically, tensors in the element type `F` (F32 or F64). A tensor
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
