//! Durable files: the broker's data directory, its generations, and the per-shard journal
//! writer. It stores and returns bytes; what they mean (records, snapshots, their checksums) is
//! the caller's, so nothing here knows MQTT.
//!
//! On disk:
//! ```text
//! dir/LOCK                      flock(LOCK_EX) held while a DataDir is open; holds the owner's pid
//! dir/CURRENT                   "K\n": the live generation (replaced atomically)
//! dir/gen-K/shard-N/            one directory per shard of generation K
//!     snapshot-<seq>.bin        a shard's state when journal segment <seq> began
//!     journal-<seq>.log         appended records, segments in <seq> order
//! ```
//! Each start of the broker reads generation K and writes generation K+1 (a snapshot per shard)
//! with [`DataDir::begin_generation`], then switches to it with [`DataDir::commit_generation`]: a
//! crash before the switch leaves K live, and K+1 is removed at the next [`DataDir::open`].
//!
//! - `dir.rs`: [`DataDir`] (create, probe, lock, generations), [`Generation`], [`ShardDir`] and
//!   the files of one shard in order ([`ShardFiles`], [`SeqFile`]).
//! - `files.rs`: the file verbs: [`read_file`], [`write_atomically`] (snapshots and `CURRENT`:
//!   tmp, fdatasync, rename, fsync the directory), [`truncate`] (a torn tail), [`remove_file`].
//! - `journal.rs`: [`JournalWriter`]: appends and syncs a shard's journal segment from the shard's
//!   event loop without blocking it (the work runs on the shard's blocking helper thread).
//!
//! Start-up (reading, generations) runs before any executor, with plain blocking `std::fs`; only
//! the journal writer is used at run time. Every error is a [`DurableError`] naming the path.

use std::io;
use std::path::{Path, PathBuf};

mod dir;
mod files;
mod journal;
#[cfg(test)]
mod tests;

pub use dir::{DataDir, Generation, SeqFile, ShardDir, ShardFiles};
pub use files::{read_file, remove_file, truncate, write_atomically};
pub use journal::JournalWriter;

/// Why a durable-file operation failed; every variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// A system call on `path` failed (`action` says which step, `source` what the OS said:
    /// ENOSPC, EIO, EACCES, ...).
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "create the data directory".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another [`DataDir`] of this one) holds the directory's lock.
    #[error(
        "{}: the data directory is in use by another broker{}; one broker per directory",
        path.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid the holder wrote into `LOCK`, when readable.
        holder: Option<u32>,
    },
    /// A call out of order (a bug of the caller), refused before touching any file: committing
    /// a generation that was not begun last, rolling to a segment number that is not higher.
    #[error("{}: {reason}", path.display())]
    Misuse {
        /// The file or directory it would have concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file this module writes has content it never writes (e.g. `CURRENT` is not a number,
    /// or names a generation whose directory is missing). Nothing is removed then.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl DurableError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DurableError::Io { path, .. }
            | DurableError::Locked { path, .. }
            | DurableError::Misuse { path, .. }
            | DurableError::Corrupt { path, .. } => path,
        }
    }

    /// The operating system's error, for an [`Io`](DurableError::Io) error (e.g. to tell a full
    /// disk, `io::ErrorKind::StorageFull`, from others).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            DurableError::Io { source, .. } => Some(source),
            DurableError::Locked { .. }
            | DurableError::Misuse { .. }
            | DurableError::Corrupt { .. } => None,
        }
    }
}

/// Maps an `io::Result` to a [`DurableError::Io`] on `path` doing `action`.
pub(crate) trait Context<T> {
    fn context(self, path: &Path, action: &'static str) -> Result<T, DurableError>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, path: &Path, action: &'static str) -> Result<T, DurableError> {
        self.map_err(|source| DurableError::Io {
            path: path.to_path_buf(),
            action,
            source,
        })
    }
}
