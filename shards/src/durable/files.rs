//! The blocking file verbs of the data directory: read a whole file, replace one atomically,
//! truncate a torn tail, remove a file, sync a directory. Plain `std::fs`: used at start-up
//! (before any executor runs) and on a shard's blocking helper thread, never on a shard itself.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Context, DurableError};

/// The whole content of `path`.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DurableError> {
    std::fs::read(path).context(path, "read")
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file or the new one, whole:
/// writes `path.tmp`, fdatasyncs it, renames it over `path`, and fsyncs the directory (so the
/// rename itself survives a power loss). A stale `.tmp` from an earlier crash is overwritten.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let tmp = tmp_path(path);
    let written = (|| {
        // A stale tmp (from a crash) is removed, not reused: it might have another mode.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context(&tmp, "remove a stale temporary file")
            }
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .context(&tmp, "create")?;
        file.write_all(bytes).context(&tmp, "write")?;
        file.sync_data().context(&tmp, "fdatasync")
    })();
    if let Err(e) = written {
        // Best effort: a full disk should not also keep a half-written copy.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).context(path, "rename the new file into place")?;
    sync_dir(parent(path))
}

/// Cuts `path` to `len` bytes (the end of its last whole record, as the reader found it) and
/// fdatasyncs it, so the torn tail cannot come back after a crash.
pub fn truncate(path: &Path, len: u64) -> Result<(), DurableError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .context(path, "open for truncation")?;
    file.set_len(len).context(path, "truncate")?;
    file.sync_data().context(path, "fdatasync")
}

/// Removes the file `path` and fsyncs its directory; a file already gone is not an error.
pub fn remove_file(path: &Path) -> Result<(), DurableError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(path, "remove"),
    }
}

/// fsyncs the directory `dir`, making the creations, renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(dir, "fsync the directory")
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `path` with `.tmp` appended: where [`write_atomically`] writes first.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}
