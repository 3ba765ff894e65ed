//! Start-up with persistence on, before any listener opens: read the data directory's live
//! generation (each shard's newest snapshot that reads whole, then its journal segments), fold it
//! into one state, cut it by this run's shard count, and write it as the next generation (one
//! snapshot per shard, then the switch): the shards start from their part and journal from there.
//!
//! A torn or corrupt journal tail is cut at the last whole record (logged with the file and byte
//! offset); a snapshot that does not read whole falls back to the previous one; a data directory
//! that cannot be created, locked or written stops the start with its path and the reason.
//! Changing `shards` between runs re-homes the sessions here (a generation is always rewritten).
//!
//! Runs on the starting thread with blocking file calls (no executor is running yet).

use std::path::Path;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use shards::durable::{self, DataDir, DurableError, JournalWriter, ShardDir};

use crate::broker::home_shard;
use crate::config::PersistenceConfig;
use crate::persist::codec::{encode_header, FileKind};
use crate::persist::{DurableState, Reader};
use crate::protocol::TopicFilter;

use super::journal_task::JournalSetup;

/// Why persistence could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A file or directory operation failed (the message names the path).
    #[error("persistence: {0}")]
    Files(#[from] DurableError),
    /// The recovered state does not fit the file format (a record beyond its limits).
    #[error("persistence: cannot write the snapshot of shard {shard}: {reason}")]
    Snapshot { shard: usize, reason: String },
}

/// What one shard starts from.
pub(crate) struct ShardStart {
    /// Its persistent sessions and every retained message.
    pub state: DurableState,
    /// The other shards' recovered subscriptions: (shard, filter).
    pub remote_interest: Vec<(usize, TopicFilter)>,
    pub journal: JournalSetup,
}

/// The open data directory (its lock is held while this lives) and each shard's start.
pub(crate) struct Recovered {
    pub data_dir: DataDir,
    pub shards: Vec<ShardStart>,
}

/// Recovers the state of `config.dir` for a run with `shards` shards (see the module docs).
pub(crate) fn recover(
    config: &PersistenceConfig,
    shards: usize,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let mut data_dir = DataDir::open(&config.dir)?;
    // One thread per shard directory, then per new shard: reading and writing a shard's files
    // are independent, and at a million queued messages each takes seconds.
    let shard_dirs = match data_dir.current() {
        Some(generation) => generation.shards()?,
        None => Vec::new(),
    };
    let states = std::thread::scope(|scope| {
        let readers: Vec<_> = shard_dirs
            .iter()
            .map(|dir| scope.spawn(move || read_shard(dir)))
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut merged = DurableState::merge(states);
    let report = merged.finish();
    let parts = merged.split(shards, |client_id| home_shard(client_id, shards));
    let filters: Vec<Vec<TopicFilter>> =
        parts.iter().map(DurableState::subscribed_filters).collect();

    let generation = data_dir.begin_generation(shards)?;
    let written = std::thread::scope(|scope| {
        let writers: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(shard, state)| {
                let shard_dir = generation.shard(shard);
                scope.spawn(move || write_shard(shard, state, shard_dir))
            })
            .collect();
        writers
            .into_iter()
            .map(|writer| {
                writer
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut starts = Vec::with_capacity(shards);
    let (mut sessions, mut queued) = (0, 0);
    for (shard, (state, shard_dir, writer)) in written.into_iter().enumerate() {
        sessions += state.sessions.len();
        queued += state
            .sessions
            .values()
            .map(|s| s.queue.len())
            .sum::<usize>();
        let remote_interest = filters
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != shard)
            .flat_map(|(other, filters)| filters.iter().map(move |f| (other, f.clone())))
            .collect();
        starts.push(ShardStart {
            state,
            remote_interest,
            journal: JournalSetup::new(config, shard_dir, writer),
        });
    }
    let retained = starts.first().map_or(0, |s| s.state.retained.len());
    data_dir.commit_generation(generation)?;
    log::info!(
        "persistence: {} (fsync {}): recovered {sessions} session(s), {queued} queued message(s), \
         {retained} retained message(s) in {} ms ({report})",
        config.dir.display(),
        config.fsync,
        started.elapsed().as_millis(),
    );
    Ok(Recovered {
        data_dir,
        shards: starts,
    })
}

/// Writes a new shard's part as its first snapshot and an empty first journal segment.
fn write_shard(
    shard: usize,
    state: DurableState,
    shard_dir: ShardDir,
) -> Result<(DurableState, ShardDir, JournalWriter), RecoveryError> {
    let mut bytes = BytesMut::new();
    state
        .encode_snapshot(&mut bytes)
        .map_err(|error| RecoveryError::Snapshot {
            shard,
            reason: error.to_string(),
        })?;
    durable::write_atomically(&shard_dir.snapshot_path(1), &bytes)?;
    let mut header = BytesMut::new();
    encode_header(FileKind::Journal, &mut header);
    durable::write_atomically(&shard_dir.journal_path(1), &header)?;
    let writer = JournalWriter::create(&shard_dir, 1)?;
    Ok((state, shard_dir, writer))
}

/// One shard directory's state: its newest snapshot that reads whole, then its journal segments
/// from that snapshot's number on, up to the first record that does not read (the segment is cut
/// there; later segments are not read: what they hold came after a gap).
fn read_shard(shard_dir: &ShardDir) -> Result<DurableState, RecoveryError> {
    let files = shard_dir.files()?;
    let mut state = DurableState::default();
    let mut from = 0;
    for snapshot in files.snapshots.iter().rev() {
        match read_snapshot(&snapshot.path) {
            Ok(read) => {
                state = read;
                from = snapshot.seq;
                break;
            }
            Err(reason) => log::error!(
                "persistence: {}: {reason}; using the snapshot before it",
                snapshot.path.display()
            ),
        }
    }
    let mut segments = files.journals.iter().filter(|j| j.seq >= from);
    for segment in segments.by_ref() {
        if !replay_segment(&segment.path, &mut state)? {
            break;
        }
    }
    for skipped in segments {
        log::error!(
            "persistence: {}: not read (it follows a cut journal)",
            skipped.path.display()
        );
    }
    Ok(state)
}

/// A snapshot file's state, or why it does not read whole.
fn read_snapshot(path: &Path) -> Result<DurableState, String> {
    let data = durable::read_file(path).map_err(|e| e.to_string())?;
    let (kind, reader) = Reader::open(Bytes::from(data)).map_err(|e| e.to_string())?;
    if kind != FileKind::Snapshot {
        return Err("not a snapshot file".to_string());
    }
    let mut state = DurableState::default();
    for record in reader {
        state.apply(&record.map_err(|e| e.to_string())?);
    }
    Ok(state)
}

/// Applies a journal segment's records to `state`; `false` when it had to be cut (a torn or
/// corrupt tail: truncated at the last whole record, logged).
fn replay_segment(path: &Path, state: &mut DurableState) -> Result<bool, RecoveryError> {
    let data = durable::read_file(path)?;
    if data.is_empty() {
        return Ok(true);
    }
    let reader = match Reader::open(Bytes::from(data)) {
        Ok((FileKind::Journal, reader)) => reader,
        Ok((FileKind::Snapshot, _)) => {
            log::error!(
                "persistence: {}: a snapshot named as a journal; not read",
                path.display()
            );
            return Ok(false);
        }
        Err(error) => {
            log::error!("persistence: {}: {error}; cut to nothing", path.display());
            durable::truncate(path, 0)?;
            return Ok(false);
        }
    };
    for record in reader {
        match record {
            Ok(record) => state.apply(&record),
            Err(error) => {
                let offset = error.offset;
                log::warn!(
                    "persistence: {}: journal cut at byte {offset} ({error}); the records before it are kept",
                    path.display()
                );
                durable::truncate(path, offset as u64)?;
                return Ok(false);
            }
        }
    }
    Ok(true)
}
