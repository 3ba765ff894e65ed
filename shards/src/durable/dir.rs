//! The data directory: creating, probing and locking it ([`DataDir::open`]), its generations
//! (`CURRENT` names the live one; [`DataDir::begin_generation`] / [`DataDir::commit_generation`]
//! write the next and switch to it), and listing a generation's shard directories and, per shard,
//! its snapshots and journal segments in order. Blocking `std::fs`: used at start-up, before any
//! executor runs (and [`ShardDir::remove_before`] on a shard's blocking helper thread).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::files::{remove_file, sync_dir, tmp_path, write_atomically};
use super::{Context, DurableError};

const LOCK: &str = "LOCK";
const CURRENT: &str = "CURRENT";
const PROBE: &str = "PROBE.tmp";
const GEN_PREFIX: &str = "gen-";
const SHARD_PREFIX: &str = "shard-";

/// An open, locked data directory. The lock (`flock` on `dir/LOCK`) is held until it is dropped,
/// and released by the kernel if the process dies: a crashed broker never blocks the next start.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the `flock`.
    _lock: File,
    /// The generation `CURRENT` names; `None` in a new directory.
    current: Option<Generation>,
    /// The generation [`DataDir::begin_generation`] made, until it is committed.
    pending: Option<u64>,
}

impl DataDir {
    /// Opens the data directory `path`: creates it (mode 0700) if missing, takes its lock,
    /// checks that a file can be written and synced in it, and removes what an interrupted
    /// start left behind (generations other than the live one, `.tmp` files).
    ///
    /// Errors: [`DurableError::Locked`] when another broker has it open; [`DurableError::Io`]
    /// naming the path and the OS reason when it cannot be created or written;
    /// [`DurableError::Corrupt`] when `CURRENT` is unreadable or names a missing generation
    /// (nothing is removed then: the operator decides).
    pub fn open(path: &Path) -> Result<DataDir, DurableError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .context(path, "create the data directory")?;
        let lock = lock(path)?;
        probe(path)?;
        let current = read_current(path)?;
        let dir = DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            current,
            pending: None,
        };
        dir.remove_garbage()?;
        Ok(dir)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live generation, to recover from; `None` when nothing was ever committed.
    pub fn current(&self) -> Option<&Generation> {
        self.current.as_ref()
    }

    /// Creates the next generation's directories `gen-K+1/shard-0` .. `shard-{shards-1}` (empty;
    /// a leftover of the same number is removed first) and makes them durable. Write each
    /// shard's snapshot there, then [`commit_generation`](Self::commit_generation).
    pub fn begin_generation(&mut self, shards: usize) -> Result<Generation, DurableError> {
        let number = self.current.as_ref().map_or(1, |g| g.number + 1);
        let generation = Generation::new(&self.path, number);
        remove_dir_if_present(&generation.path)?;
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        builder
            .create(&generation.path)
            .context(&generation.path, "create the generation directory")?;
        for shard in 0..shards {
            let dir = generation.shard(shard);
            builder
                .create(&dir.path)
                .context(&dir.path, "create the shard directory")?;
        }
        sync_dir(&generation.path)?;
        sync_dir(&self.path)?;
        self.pending = Some(number);
        Ok(generation)
    }

    /// Makes `generation` the live one: writes `CURRENT` atomically (tmp, fdatasync, rename,
    /// fsync the directory), then removes the older generations (a failure there is logged: the
    /// next open removes them). On error the commit may be retried. Everything written into
    /// `generation` before this call must be durable already (see [`write_atomically`]).
    pub fn commit_generation(&mut self, generation: Generation) -> Result<(), DurableError> {
        if self.pending != Some(generation.number) || generation.path.parent() != Some(&self.path) {
            return Err(DurableError::Misuse {
                path: generation.path,
                reason: "is not the generation begun last in this directory".to_string(),
            });
        }
        let content = format!("{}\n", generation.number);
        write_atomically(&self.path.join(CURRENT), content.as_bytes())?;
        self.pending = None;
        self.current = Some(generation);
        // The switch is made: an old generation left behind is only space, removed next time.
        if let Err(e) = self.remove_garbage() {
            log::warn!("{e}; retried at the next start");
        }
        Ok(())
    }

    /// Removes every `gen-*` entry but the live generation, `CURRENT.tmp`, and `.tmp` files in
    /// the live generation's shard directories.
    fn remove_garbage(&self) -> Result<(), DurableError> {
        let live = self.current.as_ref().map(|g| g.number);
        let mut removed = false;
        for (name, path) in read_dir(&self.path)? {
            if name.starts_with(GEN_PREFIX) && (live.is_none() || parse_gen(&name) != live) {
                log::info!(
                    "{}: removing an unfinished or old generation",
                    path.display()
                );
                remove_dir_if_present(&path)?;
                removed = true;
            }
        }
        let current_tmp = tmp_path(&self.path.join(CURRENT));
        if current_tmp.exists() {
            remove_file(&current_tmp)?;
        }
        if removed {
            sync_dir(&self.path)?;
        }
        if let Some(generation) = &self.current {
            for shard in generation.shards()? {
                for (name, path) in read_dir(&shard.path)? {
                    if name.ends_with(".tmp") {
                        log::info!("{}: removing an unfinished write", path.display());
                        remove_file(&path)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One generation: `dir/gen-K`, with a directory per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    number: u64,
    path: PathBuf,
}

impl Generation {
    fn new(data_dir: &Path, number: u64) -> Generation {
        Generation {
            number,
            path: data_dir.join(format!("{GEN_PREFIX}{number}")),
        }
    }

    /// K.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// `dir/gen-K`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shard `shard`'s directory (whether or not it exists).
    pub fn shard(&self, shard: usize) -> ShardDir {
        ShardDir {
            shard,
            path: self.path.join(format!("{SHARD_PREFIX}{shard}")),
        }
    }

    /// The shard directories present, by shard number (the shard count of the broker that wrote
    /// them, which may differ from this one's).
    pub fn shards(&self) -> Result<Vec<ShardDir>, DurableError> {
        let mut shards: Vec<ShardDir> = read_dir(&self.path)?
            .into_iter()
            .filter_map(|(name, path)| {
                let shard = name.strip_prefix(SHARD_PREFIX)?;
                let shard = parse_number(shard)?;
                Some(ShardDir {
                    shard: usize::try_from(shard).ok()?,
                    path,
                })
            })
            .filter(|s| s.path.is_dir())
            .collect();
        shards.sort_by_key(|s| s.shard);
        Ok(shards)
    }
}

/// One shard's directory in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDir {
    shard: usize,
    path: PathBuf,
}

impl ShardDir {
    /// The shard's number.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// `dir/gen-K/shard-N`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where snapshot `seq` lives: the shard's state when journal segment `seq` began.
    pub fn snapshot_path(&self, seq: u64) -> PathBuf {
        self.path.join(format!("snapshot-{seq:08}.bin"))
    }

    /// Where journal segment `seq` lives.
    pub fn journal_path(&self, seq: u64) -> PathBuf {
        self.path.join(format!("journal-{seq:08}.log"))
    }

    /// The shard's snapshots and journal segments, each in `seq` order (other files ignored).
    pub fn files(&self) -> Result<ShardFiles, DurableError> {
        let mut files = ShardFiles::default();
        for (name, path) in read_dir(&self.path)? {
            let numbered = |prefix: &str, suffix: &str| {
                let seq = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                parse_number(seq).map(|seq| SeqFile {
                    seq,
                    path: path.clone(),
                })
            };
            if let Some(file) = numbered("snapshot-", ".bin") {
                files.snapshots.push(file);
            } else if let Some(file) = numbered("journal-", ".log") {
                files.journals.push(file);
            }
        }
        files.snapshots.sort_by_key(|f| f.seq);
        files.journals.sort_by_key(|f| f.seq);
        Ok(files)
    }

    /// Removes the snapshots and journal segments numbered below `seq` (once snapshot `seq` is
    /// durable, they are no longer needed). Blocking: from a shard, run it with
    /// [`crate::rt::spawn_blocking`].
    pub fn remove_before(&self, seq: u64) -> Result<(), DurableError> {
        let files = self.files()?;
        for file in files.snapshots.iter().chain(&files.journals) {
            if file.seq < seq {
                remove_file(&file.path)?;
            }
        }
        Ok(())
    }
}

/// A shard's files, each list in ascending `seq`. Recovery reads the newest snapshot that is
/// whole, then the journal segments from its `seq` on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardFiles {
    /// `snapshot-<seq>.bin` files.
    pub snapshots: Vec<SeqFile>,
    /// `journal-<seq>.log` segments.
    pub journals: Vec<SeqFile>,
}

/// A numbered file of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqFile {
    /// The number in its name.
    pub seq: u64,
    /// Its path.
    pub path: PathBuf,
}

/// Opens (creating) `dir/LOCK`, takes an exclusive non-blocking `flock` on it and writes this
/// process's pid into it (for the error another broker then reports).
fn lock(dir: &Path) -> Result<File, DurableError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .context(&path, "create the lock file")?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(DurableError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        return Err(err).context(&path, "lock");
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .context(&path, "write the lock file")?;
    Ok(file)
}

/// Creates, writes, fdatasyncs and removes a probe file: the directory is writable and the
/// file system takes data.
fn probe(dir: &Path) -> Result<(), DurableError> {
    let path = dir.join(PROBE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .context(&path, "create a file in the data directory")?;
    file.write_all(b"amqtt probe\n")
        .and_then(|()| file.sync_data())
        .context(&path, "write and sync a file in the data directory")?;
    std::fs::remove_file(&path).context(&path, "remove the probe file")
}

/// The generation `dir/CURRENT` names, which must exist; `None` without `CURRENT`.
fn read_current(dir: &Path) -> Result<Option<Generation>, DurableError> {
    let path = dir.join(CURRENT);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(&path, "read"),
    };
    let corrupt = |reason: String| DurableError::Corrupt {
        path: path.clone(),
        reason,
    };
    let number = parse_number(text.trim_end_matches('\n')).ok_or_else(|| {
        corrupt(format!(
            "expected a generation number, found {:?}",
            text.chars().take(40).collect::<String>()
        ))
    })?;
    let generation = Generation::new(dir, number);
    if !generation.path.is_dir() {
        return Err(corrupt(format!(
            "names generation {number}, but {} is not a directory",
            generation.path.display()
        )));
    }
    Ok(Some(generation))
}

/// The entries of `dir` with UTF-8 names, as (name, path).
fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, DurableError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).context(dir, "list the directory")? {
        let entry = entry.context(dir, "list the directory")?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

fn remove_dir_if_present(path: &Path) -> Result<(), DurableError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(path, "remove"),
    }
}

/// `gen-K` → K.
fn parse_gen(name: &str) -> Option<u64> {
    parse_number(name.strip_prefix(GEN_PREFIX)?)
}

/// A decimal number of digits only (no sign, no spaces).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
