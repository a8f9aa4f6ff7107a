//! A run's hold on its checkpoint path, from its start to its end: the lock file beside it, the
//! following of a symlink to the file it names, and the checks that the path can be saved to,
//! made before training rather than found out at the first save.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rewind::autograd::io::check_writable;

use super::Error;

/// A run's hold on its checkpoint path, from its start to its end: an OS lock on
/// `.<name>.char_rnn-lock` beside the checkpoint, which holds the run's pid and start time. The
/// OS releases it when the process ends, however it ends (kill -9 included), so a lock is never
/// stale. The run creates that file itself (exclusively, never through a symlink), or adopts one
/// a killed run left, recognised by its first line; any other file at that name stops the run
/// untouched. Only that file is ever removed.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

/// The first line of every lock file: what tells one a killed run left from a file of the user's.
const SIGNATURE: &str = "char_rnn lock";

/// Whether a path could be locked.
enum Claim {
    Taken(Lock),
    /// Another run holds it: its pid and start time, as [`holder`] words them.
    Held(String),
}

impl Lock {
    /// Takes `checkpoint` for this run, or fails naming the run that has it. Holding it, removes
    /// the temporary files a killed run left and checks that `checkpoint` can be written, so a
    /// path that cannot be saved to fails now, not after training.
    pub fn claim(checkpoint: &Path) -> Result<Lock, Error> {
        check_names_file(checkpoint)?;
        check_directory(checkpoint)?;
        match Lock::try_take(checkpoint)? {
            Claim::Taken(lock) => {
                prepare(checkpoint)?;
                Ok(lock)
            }
            Claim::Held(by) => Err(Error::Checkpoint(format!(
                "{} is in use by another run ({by}): wait for it to end, or pass another --checkpoint",
                checkpoint.display(),
            ))),
        }
    }

    /// The first of `char_rnn.safetensors`, `char_rnn-2.safetensors`, ... in `dir` that no file
    /// has and no run holds, claimed: two runs started together get two names.
    pub fn claim_default(dir: &Path) -> Result<(PathBuf, Lock), Error> {
        check_directory(&dir.join("char_rnn.safetensors"))?;
        let mut n = 1;
        loop {
            let name = match n {
                1 => "char_rnn.safetensors".to_string(),
                _ => format!("char_rnn-{n}.safetensors"),
            };
            let path = dir.join(name);
            if let Claim::Taken(lock) = Lock::try_take(&path)? {
                if fs::symlink_metadata(&path).is_err() {
                    prepare(&path)?;
                    return Ok((path, lock));
                }
            }
            n += 1;
        }
    }

    /// The lock of `checkpoint`, or who holds it.
    fn try_take(checkpoint: &Path) -> Result<Claim, Error> {
        let path = lock_path(checkpoint);
        let failed = |e: std::io::Error| {
            Error::Checkpoint(format!(
                "cannot write the checkpoint {}: creating its lock file {} failed: {e}; {WRITABLE}",
                checkpoint.display(),
                path.display()
            ))
        };
        let foreign = |what: &str| {
            Error::Checkpoint(format!(
                "{} {what}, not a char_rnn lock file, and char_rnn leaves it alone: move it away or pass another --checkpoint",
                path.display()
            ))
        };
        // A lock file removed by its holder between our open and our lock, or one whose creator
        // has not signed it yet, is looked at again.
        for _ in 0..100 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    // A run that opened the new file to look at it lets go at once: it is empty.
                    file.lock().map_err(failed)?;
                    sign(&mut file).map_err(failed)?;
                    return Ok(Claim::Taken(Lock { file, path }));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed(e)),
            }
            let mut file = match open_existing(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) if is_symlink_error(&e) => return Err(foreign("is a symbolic link")),
                Err(e) if e.kind() == ErrorKind::IsADirectory => {
                    return Err(foreign("is a directory"))
                }
                Err(e) => return Err(failed(e)),
            };
            if !file.metadata().map_err(failed)?.is_file() {
                return Err(foreign("is not a regular file"));
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(Claim::Held(holder(&mut file))),
                Err(fs::TryLockError::Error(e)) => return Err(failed(e)),
            }
            if !still_at(&file, &path) {
                continue;
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            if text.is_empty() {
                let _ = file.unlock();
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            if !text.starts_with(SIGNATURE) {
                return Err(foreign("exists"));
            }
            // A killed run's lock: this run's now.
            sign(&mut file).map_err(failed)?;
            return Ok(Claim::Taken(Lock { file, path }));
        }
        Err(foreign("keeps changing or stays empty"))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked: a run that opened the file meanwhile finds, once it has the
        // lock, that the file is no longer at the path (`still_at`), and opens the path again. A
        // file put at the path by someone else since is not this run's to remove.
        if cfg!(unix) && still_at(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Opens the file at `path` to read and write, without following a symlink or waiting on a FIFO.
#[cfg(unix)]
fn open_existing(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_existing(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// True for the error of opening a symlink with `O_NOFOLLOW`.
#[cfg(unix)]
fn is_symlink_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_symlink_error(_: &std::io::Error) -> bool {
    false
}

/// Writes the signature, this process's pid and its start time into a lock file it holds, for a
/// run refused the path.
fn sign(lock: &mut File) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.seek(SeekFrom::Start(0))?;
    writeln!(
        lock,
        "{SIGNATURE}\npid {}\nstarted {}",
        std::process::id(),
        unix_time()
    )
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `.<name>.char_rnn-lock` beside `checkpoint`: hidden, and named after the program so that no
/// file of the user's has it by chance (`<name>.lock` was `Cargo.lock` for `--checkpoint Cargo`).
fn lock_path(checkpoint: &Path) -> PathBuf {
    let name = checkpoint
        .file_name()
        .expect("check_names_file saw a file name")
        .to_string_lossy();
    checkpoint.with_file_name(format!(".{name}.char_rnn-lock"))
}

/// True if `file` is still the file at `path`: its holder did not remove it while we waited.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Elsewhere a lock file is never removed, so it is always the path's.
#[cfg(not(unix))]
fn still_at(_: &File, _: &Path) -> bool {
    true
}

/// "pid 4242, started 35 s ago", from a lock file another run holds.
fn holder(lock: &mut File) -> String {
    let mut text = String::new();
    let _ = lock.read_to_string(&mut text);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    let Some(pid) = field("pid ") else {
        return "its lock file does not say which".to_string();
    };
    match field("started ").map(|s| unix_time().saturating_sub(s)) {
        Some(s) if s < 120 => format!("pid {pid}, started {s} s ago"),
        Some(s) if s < 7200 => format!("pid {pid}, started {} min ago", s / 60),
        Some(s) => format!("pid {pid}, started {} h ago", s / 3600),
        None => format!("pid {pid}"),
    }
}

/// `path`, or the file it names if it is a symlink (a link to a link is followed to its end).
/// A link to nothing is an error: what to write is ambiguous.
pub fn resolve(path: &Path) -> Result<PathBuf, Error> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_path_buf());
    }
    fs::canonicalize(path).map_err(|e| {
        let target = fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        Error::Checkpoint(format!(
            "{} is a symbolic link to {target}, which cannot be followed ({e}): name the checkpoint file itself",
            path.display()
        ))
    })
}

/// Under the lock: clears what a killed run left, and fails now if `checkpoint` cannot be saved.
fn prepare(checkpoint: &Path) -> Result<(), Error> {
    remove_stale_temporaries(checkpoint);
    check_writable(checkpoint).map_err(|e| Error::Checkpoint(format!("{e}; {WRITABLE}")))?;
    check_replaceable(checkpoint).map_err(|why| cannot_replace(checkpoint, &why))
}

/// Removes the temporary files a killed run's save left beside `checkpoint`: regular files named
/// as `write_atomic` names them, `.<name>.tmp-` and 16 hex digits. Anything else, a symlink
/// included, was not made by a save and is left alone. Best effort: a leftover wastes space but
/// endangers nothing.
fn remove_stale_temporaries(checkpoint: &Path) {
    let Some(name) = checkpoint.file_name() else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(directory_of(checkpoint)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let ours = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|suffix| {
                suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
            });
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn cannot_replace(checkpoint: &Path, why: &str) -> Error {
    Error::Checkpoint(format!(
        "cannot replace the checkpoint {}: {why}; pass another --checkpoint",
        checkpoint.display()
    ))
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A path with no file name (`/`, `..`) or ending in a slash names a directory, which a save
/// cannot rename a file to, whether or not one is there yet.
fn check_names_file(checkpoint: &Path) -> Result<(), Error> {
    let bytes = checkpoint.as_os_str().as_encoded_bytes();
    let trailing = bytes
        .last()
        .is_some_and(|&b| std::path::is_separator(b as char));
    match checkpoint.file_name() {
        Some(_) if !trailing => Ok(()),
        _ => Err(Error::Checkpoint(format!(
            "cannot write {}: it names a directory; {WRITABLE}",
            checkpoint.display()
        ))),
    }
}

/// Before anything is created in it: a directory marked immutable or append-only, where the
/// lock file, once made, could not be removed, nor a save renamed over the checkpoint.
fn check_directory(checkpoint: &Path) -> Result<(), Error> {
    match attribute(directory_of(checkpoint)) {
        Some(mark) => Err(cannot_replace(
            checkpoint,
            &format!("its directory is marked {mark} (see lsattr)"),
        )),
        None => Ok(()),
    }
}

/// A save renames a new file over the checkpoint; that fails, whatever the file's permission
/// bits, if the file is marked immutable or append-only, or if its directory is sticky (as /tmp
/// is) and neither it nor the file is ours. Nothing at `checkpoint` is fine.
#[cfg(unix)]
fn check_replaceable(checkpoint: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir_path = directory_of(checkpoint);
    let (Ok(file), Ok(dir)) = (fs::symlink_metadata(checkpoint), fs::metadata(dir_path)) else {
        return Ok(());
    };
    if let Some(mark) = attribute(checkpoint) {
        return Err(format!("it is marked {mark} (see lsattr)"));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // S_ISVTX, whose type (mode_t) differs between systems.
    let sticky = dir.permissions().mode() & 0o1000 != 0;
    // Root (CAP_FOWNER, strictly) may replace anything.
    if sticky && me != 0 && file.uid() != me && dir.uid() != me {
        return Err(format!(
            "it belongs to another user (uid {}) in a sticky directory, where only its owner may replace it",
            file.uid()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_replaceable(_: &Path) -> Result<(), String> {
    Ok(())
}

/// "immutable" or "append-only" if `path` carries that attribute (`chattr +i`, `chattr +a`);
/// `None` where attributes cannot be read.
#[cfg(target_os = "linux")]
fn attribute(path: &Path) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // From linux/fs.h.
    const FS_IMMUTABLE_FL: libc::c_int = 0x10;
    const FS_APPEND_FL: libc::c_int = 0x20;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel's type, whatever the ioctl number
    // says) into `flags`, which outlives the call; the descriptor is open.
    let read = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    match read {
        0 if flags & FS_IMMUTABLE_FL != 0 => Some("immutable"),
        0 if flags & FS_APPEND_FL != 0 => Some("append-only"),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn attribute(_: &Path) -> Option<&'static str> {
    None
}

const WRITABLE: &str = "--checkpoint must name a file in an existing, writable directory";
