//! A shard's journal task (persistence on): takes the records the core made since the last turn,
//! writes them to the shard's journal segment, syncs them as `persistence.fsync` says, tells the
//! core they are durable (the acknowledgements waiting for them go out), and every
//! `snapshot_interval` replaces the journal with a snapshot of the shard's state.
//!
//! One write per wake-up, however many loop turns made records meanwhile (group commit); with
//! `fsync: always` one `fdatasync` per write, with `batch` one per short delay, with `interval`
//! the acknowledgements wait for the write only and a sync follows every `fsync_interval`; with
//! `off` nothing is written between snapshots. With `interval` and `off` the connections the
//! turns flushed are woken after the write, so that the acknowledgements it releases share one
//! `send` with the rest of their output (`journal_ready` in `shard.rs`; a failed write wakes
//! them at once). A failed write or sync (full disk, I/O error) is
//! logged and counted, and retried until it succeeds: the acknowledgements that need it wait, the
//! rest of the shard keeps serving. Never an acknowledgement for what is not written.
//!
//! It knows no MQTT: records come from the core and go through `persist::codec`; files are the
//! `shards::durable` verbs.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shards::durable::{DurableError, JournalWriter, ShardDir};

use crate::config::{FsyncPolicy, PersistenceConfig};
use crate::persist::codec;

use super::bus_retry;
use super::shard::ShardRuntime;

/// How long `fsync: batch` gathers writes before one sync.
const BATCH_DELAY: Duration = Duration::from_millis(2);
/// Wait before retrying a failed write or sync.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What the journal task of one shard needs.
pub(crate) struct JournalSetup {
    pub dir: ShardDir,
    pub writer: JournalWriter,
    pub policy: FsyncPolicy,
    pub fsync_interval: Duration,
    pub snapshot_interval: Duration,
}

impl JournalSetup {
    pub fn new(config: &PersistenceConfig, dir: ShardDir, writer: JournalWriter) -> Self {
        JournalSetup {
            dir,
            writer,
            policy: config.fsync,
            fsync_interval: config.fsync_interval,
            snapshot_interval: config.snapshot_interval,
        }
    }
}

/// Runs until the shard stops; then writes and syncs what is left (a clean stop loses nothing,
/// whatever the policy) and returns.
pub(crate) async fn run(rt: Rc<ShardRuntime>, mut setup: JournalSetup) {
    let mut last_sync = Instant::now();
    let mut last_snapshot = Instant::now();
    let mut unsynced = false;
    loop {
        let stopping = rt.stopping.get();
        if !stopping {
            // With `interval` or `off` a wake-up goes straight to the write: the shard may
            // leave the flushes of the turn that made the records to this task (`apply`).
            let writes_at_once = matches!(setup.policy, FsyncPolicy::Interval | FsyncPolicy::Off);
            rt.journal_ready.set(writes_at_once);
            wait_for_records(&rt, &setup, unsynced).await;
            rt.journal_ready.set(false);
        }
        if setup.policy == FsyncPolicy::Batch && !stopping {
            shards::rt::sleep(BATCH_DELAY).await;
        }
        let taken = rt.core.borrow_mut().take_journal();
        if let Some((batch, bytes)) = taken {
            if setup.policy != FsyncPolicy::Off {
                write_bytes(&rt, &mut setup.writer, bytes).await;
                unsynced = true;
                if matches!(setup.policy, FsyncPolicy::Always | FsyncPolicy::Batch) || stopping {
                    sync(&rt, &mut setup.writer).await;
                    unsynced = false;
                    last_sync = Instant::now();
                }
            }
            rt.core.borrow_mut().handle_durable(batch);
            apply(&rt);
        }
        rt.flush_deferred();
        if unsynced && last_sync.elapsed() >= setup.fsync_interval {
            sync(&rt, &mut setup.writer).await;
            unsynced = false;
            last_sync = Instant::now();
        }
        let snapshot_due = last_snapshot.elapsed() >= setup.snapshot_interval;
        if snapshot_due || (stopping && setup.policy == FsyncPolicy::Off) {
            snapshot(&rt, &mut setup).await;
            unsynced = false;
            last_snapshot = Instant::now();
        }
        if stopping {
            if unsynced {
                sync(&rt, &mut setup.writer).await;
            }
            return;
        }
    }
}

/// Waits until the core has records (the shard notifies after each turn that made some), the
/// shard stops, or a sync or snapshot falls due.
async fn wait_for_records(rt: &Rc<ShardRuntime>, setup: &JournalSetup, unsynced: bool) {
    let tick = if unsynced {
        setup.fsync_interval.min(setup.snapshot_interval)
    } else {
        setup.snapshot_interval.min(Duration::from_secs(1))
    };
    let notified = std::future::poll_fn(|cx| {
        if rt.journal_notify.poll_notified(cx) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    futures_lite::future::or(notified, async {
        shards::rt::sleep(tick).await;
    })
    .await;
}

/// Appends `bytes` (framed records), retrying a failed write until it succeeds (or the shard
/// stops: then the records are lost with the process, and were never acknowledged).
async fn write_bytes(rt: &Rc<ShardRuntime>, writer: &mut JournalWriter, bytes: Bytes) {
    let len = bytes.len() as u64;
    loop {
        // On the shard's thread: one `write(2)` into the page cache (see `append_now`).
        match writer.append_now(&bytes) {
            Ok(()) => {
                rt.stats.borrow_mut().journal_bytes += len;
                return;
            }
            Err(error) => {
                if !failed(rt, "write", &error).await {
                    return;
                }
            }
        }
    }
}

async fn sync(rt: &Rc<ShardRuntime>, writer: &mut JournalWriter) {
    loop {
        match writer.sync().await {
            Ok(()) => {
                rt.stats.borrow_mut().journal_syncs += 1;
                return;
            }
            Err(error) => {
                if !failed(rt, "sync", &error).await {
                    return;
                }
            }
        }
    }
}

/// Logs and counts a failed file operation, then waits before the retry; `false` when the shard
/// is stopping (no retry).
async fn failed(rt: &Rc<ShardRuntime>, what: &str, error: &DurableError) -> bool {
    rt.stats.borrow_mut().journal_errors += 1;
    log::error!(
        "shard {}: journal {what} failed: {error}; QoS 1/2 acknowledgements that need it wait, retrying",
        rt.id
    );
    // What the shard left to this write to flush goes out now (QoS 0, other acknowledgements).
    rt.flush_deferred();
    if rt.stopping.get() {
        return false;
    }
    shards::rt::sleep(RETRY_AFTER).await;
    true
}

/// Replaces the journal with a snapshot: the records not yet taken go to the current segment
/// first, the snapshot (taken in the same instant) is written atomically as
/// `snapshot-<next segment>`, the journal rolls to that segment, and the files before the previous
/// snapshot are removed (that one stays, in case the newest cannot be read).
async fn snapshot(rt: &Rc<ShardRuntime>, setup: &mut JournalSetup) {
    let (taken, state) = {
        let mut core = rt.core.borrow_mut();
        (core.take_journal(), core.snapshot_records())
    };
    if let Some((batch, bytes)) = taken {
        if setup.policy != FsyncPolicy::Off {
            write_bytes(rt, &mut setup.writer, bytes).await;
            sync(rt, &mut setup.writer).await;
        }
        rt.core.borrow_mut().handle_durable(batch);
        apply(rt);
    }
    let previous = setup.writer.seq();
    let next = previous + 1;
    let mut bytes = BytesMut::new();
    codec::encode_header(codec::FileKind::Snapshot, &mut bytes);
    for record in &state {
        if let Err(error) = codec::encode(record, &mut bytes) {
            log::error!("shard {}: snapshot record not written: {error}", rt.id);
        }
    }
    let path = setup.dir.snapshot_path(next);
    let written =
        shards::rt::spawn_blocking(move || shards::durable::write_atomically(&path, &bytes)).await;
    if let Err(error) = written {
        rt.stats.borrow_mut().journal_errors += 1;
        log::error!(
            "shard {}: snapshot not written: {error}; the journal goes on",
            rt.id
        );
        return;
    }
    if let Err(error) = setup.writer.roll(next).await {
        log::error!(
            "shard {}: journal segment {next} not started: {error}",
            rt.id
        );
        return;
    }
    // Every segment opens with the file header (recovery reads no segment without one).
    let mut header = BytesMut::new();
    codec::encode_header(codec::FileKind::Journal, &mut header);
    write_bytes(rt, &mut setup.writer, header.freeze()).await;
    let dir = setup.dir.clone();
    let removed = shards::rt::spawn_blocking(move || dir.remove_before(previous)).await;
    if let Err(error) = removed {
        log::warn!("shard {}: old journal files not removed: {error}", rt.id);
    }
    rt.stats.borrow_mut().snapshots_written += 1;
    log::debug!(
        "shard {}: snapshot {next} written ({} records)",
        rt.id,
        state.len()
    );
}

/// Applies the core's actions (acknowledgements released, confirmations for other shards); the
/// connections it flushes are woken together with those whose flush waited for this write.
fn apply(rt: &Rc<ShardRuntime>) {
    let blocked = rt.apply_actions();
    bus_retry::send_blocked_later(rt, blocked);
}
