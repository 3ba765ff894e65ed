//! The `persistence:` block: where the broker keeps its journal and snapshots, and how often it
//! forces them to disk. Its raw schema (what the YAML may hold), its defaults and its checks live
//! here together (with aMQTT's `SessionDBPlugin` settings, which configure it from `plugins:`),
//! because nothing else in the configuration depends on them; the parsing itself
//! (key paths and positions in errors) is `raw.rs`'s, the wiring into [`BrokerConfig`] `build.rs`'s.
//!
//! Durations are numbers of seconds, integer or fractional, like every other duration of this
//! configuration (`sys_interval`, `connect_timeout`): `fsync_interval: 0.5`, `snapshot_interval:
//! 600`. What must not live here: opening the directory or any other I/O (the server does that at
//! start, through `shards::durable`).

use serde::Deserialize;

use super::scalars::Bool;
use super::*;

/// Default `persistence.dir`: relative to the broker's working directory, as Mosquitto's
/// `persistence_location` (empty: the working directory) and aMQTT's `amqtt.db` are. Services set
/// an absolute path (`deploy/`: `/var/lib/amqtt`).
pub const DEFAULT_PERSISTENCE_DIR: &str = "data";
/// Default `persistence.fsync_interval`.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default `persistence.snapshot_interval`.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(600);

/// `persistence:`: the per-shard journal and snapshots (off by default: state lives in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// `enabled`: keep sessions, subscriptions, queued and retained messages across restarts.
    pub enabled: bool,
    /// `dir`: the data directory (created with mode 0700 if missing; one broker per directory).
    pub dir: PathBuf,
    /// `fsync`: when journal writes are forced to disk.
    pub fsync: FsyncPolicy,
    /// `fsync_interval`: the period of [`FsyncPolicy::Interval`] (more than zero).
    pub fsync_interval: Duration,
    /// `snapshot_interval`: how often each shard writes a snapshot and starts a new journal
    /// segment (more than zero).
    pub snapshot_interval: Duration,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: false,
            dir: PathBuf::from(DEFAULT_PERSISTENCE_DIR),
            fsync: FsyncPolicy::Interval,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }
}

/// `persistence.fsync`: what an acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every loop turn's records are written and `fdatasync`ed before the acks they cover go out.
    Always,
    /// As `always`, grouped over a short delay: fewer syncs, a little more ack latency.
    Batch,
    /// Acks wait for `write()` only; the journal is synced every `fsync_interval`. Survives a
    /// killed broker; a power loss loses at most one interval (Redis's `appendfsync everysec`).
    Interval,
    /// No journal: snapshots only, every `snapshot_interval` and at a clean stop.
    Off,
}

impl FsyncPolicy {
    /// The name used in the configuration: `always`, `batch`, `interval` or `off`.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Off => "off",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `persistence:` as written, before defaults and checks.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of persistence keys (enabled, dir, fsync, ...)"
)]
pub(super) struct RawPersistence {
    enabled: Option<Bool>,
    dir: Option<String>,
    fsync: Option<FsyncPolicy>,
    fsync_interval: Option<Seconds>,
    snapshot_interval: Option<Seconds>,
}

impl RawPersistence {
    /// `enabled: true` in `dir`, the rest default (what aMQTT's `SessionDBPlugin` asks for).
    pub(super) fn enabled_in(dir: String) -> RawPersistence {
        RawPersistence {
            enabled: Some(Bool(true)),
            dir: Some(dir),
            ..RawPersistence::default()
        }
    }
}

/// The checked `persistence:` block (the defaults when it is absent or empty).
pub(super) fn persistence_config(
    raw: Option<&RawPersistence>,
    origin: &str,
) -> Result<PersistenceConfig, ConfigError> {
    let defaults = PersistenceConfig::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: format!("persistence.{key}"),
        reason,
    };
    let positive = |key: &str, value: Option<Seconds>, default: Duration| {
        value.map_or(Ok(default), |secs| {
            duration(secs, false).map_err(|reason| invalid(key, reason))
        })
    };
    let dir = match raw.dir.as_deref() {
        None => defaults.dir,
        Some(dir) if dir.trim().is_empty() => {
            return Err(invalid(
                "dir",
                "must name a directory (for example /var/lib/amqtt)".to_string(),
            ))
        }
        Some(dir) => PathBuf::from(dir),
    };
    Ok(PersistenceConfig {
        enabled: raw.enabled.map_or(defaults.enabled, |b| b.0),
        dir,
        fsync: raw.fsync.unwrap_or(defaults.fsync),
        fsync_interval: positive(
            "fsync_interval",
            raw.fsync_interval,
            defaults.fsync_interval,
        )?,
        snapshot_interval: positive(
            "snapshot_interval",
            raw.snapshot_interval,
            defaults.snapshot_interval,
        )?,
    })
}

/// The settings of aMQTT's `amqtt.contrib.persistence.SessionDBPlugin` (`raw/plugins.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SessionDb {
    file: Option<String>,
    clear_on_shutdown: Option<Bool>,
    /// aMQTT 0.11's (unused there too); accepted.
    retain_interval: Option<Seconds>,
}

/// `SessionDBPlugin`: our `persistence:`, in the directory of its `file`.
pub(super) fn session_db(key: &str, settings: SessionDb, origin: &str) -> RawPersistence {
    let file = settings.file.unwrap_or_else(|| "amqtt.db".to_string());
    let dir = match Path::new(&file).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.display().to_string(),
        _ => ".".to_string(),
    };
    log::info!(
        "{origin}: {key}: amqtt-rs keeps sessions and retained messages in its own journal, in \
         the directory of '{file}' ({dir}), not in an SQLite file"
    );
    if settings.clear_on_shutdown != Some(Bool(false)) {
        log::info!(
            "{origin}: {key}: clear_on_shutdown is not applied: amqtt-rs keeps the state across \
             clean restarts too"
        );
    }
    if settings.retain_interval.is_some() {
        log::info!("{origin}: {key}: retain_interval is not used: every change is journaled");
    }
    RawPersistence::enabled_in(dir)
}
