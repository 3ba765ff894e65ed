//! [`JournalWriter`]: one shard's journal, appended and synced from the shard's event loop. Each
//! call runs on the shard's blocking helper thread ([`crate::rt::spawn_blocking`], on both
//! runtimes), so a `write` or an `fdatasync` (~1 ms here, up to 8) never stalls the shard's
//! other tasks; calls of one writer run one at a time, in order.
//!
//! Measured on the 2-CPU VM (ext4 on virtio, other builds running: load 6-10), 64 KiB per call
//! (`journal_measure_64k_appends_with_fdatasync` in `tests/journal.rs`; glommio / epoll):
//! - append + fdatasync: 175-330 calls/s, p50 4.0-4.2 ms, p99 8-12 ms, the same through the
//!   helper thread as blocking the shard (the hop is lost in the fdatasync), but only through the
//!   helper thread do the shard's other tasks run meanwhile;
//! - append only (`fsync: interval`): p50 28 / 23 µs through the helper thread, 14 µs direct
//!   (p99 100 / 40 µs vs 26 µs). The hop costs ~10-15 µs; it stays, because a `write` into a
//!   page cache under writeback pressure can block for milliseconds.
//!
//! - right after socket traffic on glommio the result used to wait out the poller's brief
//!   `epoll_pwait2` (4 KiB appends: p50 0.35 ms, vs 0.013 ms with no traffic); the poller now
//!   sleeps through glommio while a blocking call is in flight, and the p50 is 0.013 ms there too
//!   (`journal_measure_after_socket_traffic`).
//!
//! Preallocating the segment (`fallocate`, with or without `KEEP_SIZE`, or zero-filled) left the
//! append + fdatasync p50 at 4.0 ms, so segments are not preallocated, and a segment's length is
//! where its records end.
//!
//! A failed append (ENOSPC, EFBIG, EIO) leaves the segment at its last good length: the writer
//! remembers it and truncates back to it, so a retry appends where the failed call began and the
//! file holds no partial record. What this file must not do: know what the bytes are.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::dir::ShardDir;
use super::files::sync_dir;
use super::{Context, DurableError};
use crate::rt::spawn_blocking;

/// Appends to a shard's current journal segment (`journal-<seq>.log` in its shard directory).
///
/// Cancel-safe: a dropped call still runs to its end on the helper thread (the segment is shared
/// with it, behind a lock only that thread takes), and leaves the segment consistent for the calls
/// after it.
#[derive(Debug)]
pub struct JournalWriter {
    dir: ShardDir,
    segment: Arc<Mutex<Segment>>,
    /// The segment's number and length as of the last call that completed: read without
    /// taking the lock, which the helper thread may hold for an fdatasync.
    seq: u64,
    len: u64,
}

#[derive(Debug)]
struct Segment {
    file: File,
    path: PathBuf,
    seq: u64,
    /// Bytes known to be whole records: where the next append goes.
    len: u64,
    /// A failed append may have left bytes past `len` that could not be cut off yet.
    torn: bool,
    /// A sync failed: what it covered may be lost, so no later sync may claim success.
    sync_failed: bool,
}

impl JournalWriter {
    /// Opens segment `seq` in `shard_dir` (created if missing; appends go after what it holds)
    /// and makes its directory entry durable. Blocking: call it at start-up, or use
    /// [`roll`](Self::roll) from a shard.
    pub fn create(shard_dir: &ShardDir, seq: u64) -> Result<JournalWriter, DurableError> {
        let segment = Segment::open(shard_dir, seq)?;
        Ok(JournalWriter {
            dir: shard_dir.clone(),
            seq,
            len: segment.len,
            segment: Arc::new(Mutex::new(segment)),
        })
    }

    /// Appends all of `bytes` to the segment (short writes are continued). On error the segment
    /// is cut back to its length before the call, so the same bytes may be appended again.
    pub async fn append<B>(&mut self, bytes: B) -> Result<(), DurableError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        self.run(move |segment| segment.append(bytes.as_ref()))
            .await
    }

    /// [`append`](Self::append) on the calling thread: a `write(2)` into the page cache, which
    /// takes microseconds (14 µs for 64 KiB here) where the trip to the helper thread and back
    /// cost a context switch each way. It can block while the kernel throttles writeback: for a
    /// caller that syncs on the helper thread anyway. Never call it while an async call of this
    /// writer is pending (the segment's lock would be held by the helper thread).
    pub fn append_now(&mut self, bytes: &[u8]) -> Result<(), DurableError> {
        let mut segment = lock(&self.segment);
        let result = segment.append(bytes);
        (self.seq, self.len) = (segment.seq, segment.len);
        result
    }

    /// Forces what was appended to disk (`fdatasync`). After a failed sync the kernel may have
    /// dropped the unsynced pages, and a later sync could succeed without them: so every sync
    /// of this segment fails from then on, until [`roll`](Self::roll) starts a new one (append
    /// the records not known durable there again).
    pub async fn sync(&mut self) -> Result<(), DurableError> {
        self.run(Segment::sync).await
    }

    /// [`append`](Self::append) then [`sync`](Self::sync), in one trip to the helper thread.
    pub async fn append_and_sync<B>(&mut self, bytes: B) -> Result<(), DurableError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        self.run(move |segment| {
            segment.append(bytes.as_ref())?;
            segment.sync()
        })
        .await
    }

    /// Syncs the current segment and continues in a new one, `journal-<new_seq>.log` (after a
    /// snapshot `new_seq` was written); `new_seq` must be above the current number. The old
    /// segment stays until [`remove_before`](Self::remove_before).
    pub async fn roll(&mut self, new_seq: u64) -> Result<(), DurableError> {
        if new_seq <= self.seq {
            return Err(DurableError::Misuse {
                path: self.dir.journal_path(new_seq),
                reason: format!(
                    "a new segment must be numbered above the current one ({})",
                    self.seq
                ),
            });
        }
        let dir = self.dir.clone();
        self.run(move |segment| {
            segment.sync()?;
            *segment = Segment::open(&dir, new_seq)?;
            Ok(())
        })
        .await
    }

    /// Removes the snapshots and segments of this shard numbered below `seq`, never the current
    /// segment (see [`ShardDir::remove_before`]).
    pub async fn remove_before(&self, seq: u64) -> Result<(), DurableError> {
        let seq = seq.min(self.seq);
        let dir = self.dir.clone();
        spawn_blocking(move || dir.remove_before(seq)).await
    }

    /// The current segment's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The current segment's path.
    pub fn path(&self) -> PathBuf {
        self.dir.journal_path(self.seq)
    }

    /// Bytes appended to the current segment (its length before any failed append).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the current segment holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `job` on the segment, on the helper thread.
    async fn run<F>(&mut self, job: F) -> Result<(), DurableError>
    where
        F: FnOnce(&mut Segment) -> Result<(), DurableError> + Send + 'static,
    {
        let segment = Arc::clone(&self.segment);
        let (result, seq, len) = spawn_blocking(move || {
            let mut segment = lock(&segment);
            let result = job(&mut segment);
            (result, segment.seq, segment.len)
        })
        .await;
        (self.seq, self.len) = (seq, len);
        result
    }

    /// [`append`](Self::append) (then [`sync`](Self::sync) if `sync`) on the calling thread,
    /// blocking it: only to measure what the helper thread costs.
    #[cfg(test)]
    pub(crate) fn append_here(&mut self, bytes: &[u8], sync: bool) -> Result<(), DurableError> {
        let mut segment = lock(&self.segment);
        let result = segment
            .append(bytes)
            .and_then(|()| if sync { segment.sync() } else { Ok(()) });
        self.len = segment.len;
        result
    }
}

/// The segment, even if a job panicked while holding it (its state is then still consistent:
/// `len` only grows after a whole write).
fn lock(segment: &Mutex<Segment>) -> MutexGuard<'_, Segment> {
    segment
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Segment {
    fn open(dir: &ShardDir, seq: u64) -> Result<Segment, DurableError> {
        let path = dir.journal_path(seq);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .context(&path, "open the journal segment")?;
        let len = file
            .metadata()
            .context(&path, "read the journal segment's length")?
            .len();
        sync_dir(dir.path())?;
        Ok(Segment {
            file,
            path,
            seq,
            len,
            torn: false,
            sync_failed: false,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), DurableError> {
        if self.torn {
            self.cut_back().context(&self.path, "cut a failed append")?;
        }
        // Positional: a retry after a failure writes at the same place whatever happened.
        match self.file.write_all_at(bytes, self.len) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                if self.cut_back().is_err() {
                    log::warn!(
                        "{}: cannot cut back a failed append yet; retried before the next one",
                        self.path.display()
                    );
                }
                Err(e).context(&self.path, "append to the journal")
            }
        }
    }

    fn sync(&mut self) -> Result<(), DurableError> {
        if self.sync_failed {
            return Err(DurableError::Io {
                path: self.path.clone(),
                action: "fdatasync the journal (an earlier sync failed: roll to a new segment)",
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        let synced = self.file.sync_data();
        self.sync_failed = synced.is_err();
        synced.context(&self.path, "fdatasync the journal")
    }

    /// Truncates the file to `len`, the end of the last whole append.
    fn cut_back(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.len)?;
        self.torn = false;
        Ok(())
    }
}
