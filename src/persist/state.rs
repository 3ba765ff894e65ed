//! The fold: [`DurableState`], the state a shard's records describe, built by applying them in
//! order, and what a broker core is restored from.
//!
//! Must not: read bytes (the codec does), know shards' runtime or the broker (the home-shard
//! function is a parameter where it is needed, in `reshard.rs`).
//!
//! # Rules
//! - Every record is idempotent: applied twice in a row, or replayed from a journal over a snapshot
//!   that already holds some of its effects (a "fuzzy" snapshot), it leaves the same state. That is
//!   why [`Record::Enqueue`] of a message already queued for the session changes nothing, and
//!   [`Record::Done`] of one no longer there neither.
//! - Nothing in a record panics the fold: a record about a client id with no open session, an
//!   `Enqueue` of a [`MsgId`] no `Message` record named, are skipped and counted in the
//!   [`ReplayReport`].
//! - A session exists from its `SessionOpen` until its `SessionDrop`, empty or not.
//! - Retained messages: the highest version `(clock, shard)` of a topic wins; a deletion is kept as
//!   a tombstone (so that it beats an older set read later, from another shard's files) until
//!   [`DurableState::finish`].
//! - [`MsgId`]s name messages within one shard's files: the fold keeps every `Message` record in a
//!   map by id until `finish`, and queue entries hold clones of the message (`Bytes`: no copy).
//!   In a state, one id names one message (an id stored again with other content is refused).
//!
//! # Recovery, in order
//! 1. Per shard: `DurableState::default()`, then [`apply`](DurableState::apply) the newest valid
//!    snapshot's records, then the journal's.
//! 2. [`DurableState::merge`] the shards' states (sessions by client id, retained by version;
//!    message ids renumbered, as two shards' ids collide).
//! 3. [`DurableState::finish`]: tombstones and the message map go; the report for the log.
//! 4. [`DurableState::split`] by the home shard of the current shard count; restore each part.
//! 5. Each shard starts its files afresh with a snapshot of its part (the ids as they are: the
//!    restored core names its queued messages by them) and numbers new messages from
//!    [`DurableState::next_msg_id`], so that its journal and snapshot agree on every id.

use std::collections::hash_map::Entry;
use std::collections::{vec_deque, BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use super::record::{MsgId, Record};
use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

/// The fold's maps hash with foldhash (seeded per process), not SipHash: folding a million queued
/// messages looks ids and client ids up several million times.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Which update of a retained topic is newer: the highest `(clock, shard)` wins (the broker's
/// retained version, compared field by field in this order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetainVersion {
    pub clock: u64,
    pub shard: u32,
}

/// The newest update of one retained topic: a message, or a deletion (a tombstone, until
/// [`DurableState::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub message: Option<Message>,
    pub version: RetainVersion,
    /// When the message expires (MQTT 5), wall-clock ms since the Unix epoch; `None`: never.
    pub expires_at_unix_ms: Option<u64>,
}

/// One message in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: MsgId,
    pub message: Message,
    /// The QoS it is delivered at (the subscription's, at most the message's).
    pub qos: QoS,
    /// The packet id it went out under, if it did: sent again with it and DUP set.
    pub packet_id: Option<u16>,
    /// QoS 2: the subscriber sent PUBREC; only PUBREL / PUBCOMP remain.
    pub released: bool,
    /// When the message expires (MQTT 5), wall-clock ms since the Unix epoch; `None`: never.
    pub expires_at_unix_ms: Option<u64>,
}

/// A session's messages in the order they were enqueued, found by id in O(1) (a `Done` may name
/// any of them, not only the first).
///
/// A deque of slots: a message done in the middle leaves an empty slot, the empty slots at the
/// front go at once, and the deque is compacted when over half of it is empty slots (amortised
/// O(1) per message). A `BTreeMap` by position folded a million queued messages 2-3x slower.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    slots: VecDeque<Option<QueuedMessage>>,
    /// The position of `slots[0]`; a message's position never changes until a compaction.
    first: u64,
    /// Messages queued (the slots that are not empty).
    len: usize,
    positions: FastMap<MsgId, u64>,
}

/// The messages of a [`Queue`], first enqueued first.
pub type QueueIter<'a> = std::iter::Flatten<vec_deque::Iter<'a, Option<QueuedMessage>>>;

impl Queue {
    /// The messages, first enqueued first.
    pub fn iter(&self) -> QueueIter<'_> {
        self.slots.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: MsgId) -> Option<&QueuedMessage> {
        let slot = self.slot(id)?;
        self.slots.get(slot)?.as_ref()
    }

    /// Where the message `id` is in `slots`.
    fn slot(&self, id: MsgId) -> Option<usize> {
        let position = *self.positions.get(&id)?;
        usize::try_from(position.checked_sub(self.first)?).ok()
    }

    /// Appends `entry` unless a message of its id is queued already: whether it was appended.
    pub(super) fn push(&mut self, entry: QueuedMessage) -> bool {
        let position = self.first + self.slots.len() as u64;
        if let Entry::Vacant(vacant) = self.positions.entry(entry.id) {
            vacant.insert(position);
            self.slots.push_back(Some(entry));
            self.len += 1;
            return true;
        }
        false
    }

    pub(super) fn get_mut(&mut self, id: MsgId) -> Option<&mut QueuedMessage> {
        let slot = self.slot(id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    pub(super) fn remove(&mut self, id: MsgId) -> Option<QueuedMessage> {
        let slot = self.slot(id)?;
        let entry = self.slots.get_mut(slot)?.take()?;
        self.positions.remove(&id);
        self.len -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first += 1;
        }
        if self.slots.len() > 2 * self.len + 32 {
            self.slots.retain(Option::is_some);
            self.reindex();
        }
        Some(entry)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut QueuedMessage> {
        self.slots.iter_mut().flatten()
    }

    /// After ids changed under [`iter_mut`](Self::iter_mut), or slots moved: the index again.
    pub(super) fn reindex(&mut self) {
        let first = self.first;
        self.positions = (self.slots.iter().enumerate())
            .filter_map(|(slot, e)| Some((e.as_ref()?.id, first + slot as u64)))
            .collect();
    }
}

/// Equal when the same messages are queued in the same order (positions are this queue's own).
impl PartialEq for Queue {
    fn eq(&self, other: &Queue) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Queue {}

/// A persistent session, as its records left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Filter → granted QoS and options.
    pub subscriptions: BTreeMap<TopicFilter, SubOptions>,
    pub will: Option<Message>,
    /// The will's Will Delay Interval in seconds (0: none), from when the client went offline.
    pub will_delay_secs: u32,
    /// MQTT 5: the Session Expiry Interval in seconds (`Some(None)`: never expires); `None` for
    /// a session that has not journaled one (MQTT 3): the broker's setting applies.
    pub expiry_interval_secs: Option<Option<u64>>,
    /// When the client went offline (ms since the Unix epoch); `None` while it was connected (the
    /// broker stopped under it: it is offline since the restart).
    pub offline_since_unix_ms: Option<u64>,
    pub queue: Queue,
    /// The user name of the CONNECT that last took the session, once journaled (`SessionUser`):
    /// `Some(None)` for an anonymous client, `None` when unknown.
    pub username: Option<Option<Arc<str>>>,
    /// Incoming QoS 2 packet ids received and not yet released: a re-sent PUBLISH with one of
    /// them is not routed again.
    pub qos2_received: BTreeSet<u16>,
}

/// What a replay skipped or found odd, for the start-up log. None of it stops a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records applied (skipped ones included).
    pub records: u64,
    /// Records about a client id with no open session (its `SessionOpen` was lost or it was
    /// dropped): skipped.
    pub unknown_session: u64,
    /// `Enqueue`s of a message id no `Message` record named: skipped.
    pub unknown_message: u64,
    /// `PacketId`, `Released` or `Done` of a message not in the session's queue: skipped (normal
    /// when a journal is replayed over a snapshot taken after it was done).
    pub missing_entry: u64,
    /// `Message` records that stored an id again with other content: the first one kept.
    pub conflicting_message: u64,
    /// Client ids found in more than one merged state: the later state's session kept.
    pub duplicate_session: u64,
    /// Retained deletions forgotten by [`DurableState::finish`].
    pub tombstones: u64,
}

impl ReplayReport {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ReplayReport) {
        self.records += other.records;
        self.unknown_session += other.unknown_session;
        self.unknown_message += other.unknown_message;
        self.missing_entry += other.missing_entry;
        self.conflicting_message += other.conflicting_message;
        self.duplicate_session += other.duplicate_session;
        self.tombstones += other.tombstones;
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records; skipped: {} about an unknown session, {} enqueues of an unknown message, \
             {} about a message no longer queued, {} message ids stored twice; {} duplicate \
             sessions, {} retained deletions",
            self.records,
            self.unknown_session,
            self.unknown_message,
            self.missing_entry,
            self.conflicting_message,
            self.duplicate_session,
            self.tombstones
        )
    }
}

/// The durable state records describe (see the module docs). Equality compares what a broker is
/// restored from, the sessions and the retained messages, not the fold's message map or report.
#[derive(Debug, Clone, Default)]
pub struct DurableState {
    /// Persistent sessions by client id.
    pub sessions: FastMap<Arc<str>, Session>,
    /// Retained messages (and, until [`finish`](Self::finish), deletions) by topic.
    pub retained: FastMap<TopicName, Retained>,
    /// Every `Message` record seen, by id, until `finish` (or a merge, split or renumber).
    pub(super) messages: FastMap<MsgId, Message>,
    /// The `MessageExpiry` deadlines of the messages in `messages`, by id.
    pub(super) expiries: FastMap<MsgId, u64>,
    pub(super) report: ReplayReport,
}

impl PartialEq for DurableState {
    fn eq(&self, other: &DurableState) -> bool {
        self.sessions == other.sessions && self.retained == other.retained
    }
}

impl Eq for DurableState {}

impl DurableState {
    /// Applies one record (the rules are in the module docs).
    pub fn apply(&mut self, record: &Record) {
        self.report.records += 1;
        match record {
            Record::SessionOpen { client_id } => {
                self.sessions
                    .entry(client_id.clone())
                    .or_default()
                    .offline_since_unix_ms = None;
            }
            Record::SessionDrop { client_id } => {
                self.sessions.remove(client_id);
            }
            Record::Message { id, message } => match self.messages.get(id) {
                Some(stored) if stored != message => self.report.conflicting_message += 1,
                Some(_) => {}
                None => {
                    self.messages.insert(*id, message.clone());
                }
            },
            Record::MessageExpiry { id, at_unix_ms } => {
                if self.messages.contains_key(id) {
                    self.expiries.insert(*id, *at_unix_ms);
                } else {
                    self.report.unknown_message += 1;
                }
            }
            Record::Retain {
                topic,
                message,
                clock,
                shard,
            } => {
                let version = RetainVersion {
                    clock: *clock,
                    shard: *shard,
                };
                // A set with an empty payload is a deletion, as in a PUBLISH [MQTT-3.3.1-10].
                let message = message.clone().filter(|m| !m.payload.is_empty());
                let update = Retained {
                    message,
                    version,
                    expires_at_unix_ms: None,
                };
                set_retained(&mut self.retained, topic, update);
            }
            Record::RetainExpiry {
                topic,
                clock,
                shard,
                at_unix_ms,
            } => {
                let version = RetainVersion {
                    clock: *clock,
                    shard: *shard,
                };
                // Only the update it was written for: a newer one has its own (or none).
                if let Some(retained) = self.retained.get_mut(topic) {
                    if retained.version == version && retained.message.is_some() {
                        retained.expires_at_unix_ms = Some(*at_unix_ms);
                    }
                }
            }
            _ => self.apply_to_session(record),
        }
    }

    /// The records about one existing session.
    fn apply_to_session(&mut self, record: &Record) {
        let Some(client_id) = record.client_id() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(client_id) else {
            self.report.unknown_session += 1;
            return;
        };
        let report = &mut self.report;
        match record {
            Record::SessionOffline { at_unix_ms, .. } => {
                session.offline_since_unix_ms = Some(*at_unix_ms);
            }
            Record::SessionUser { username, .. } => session.username = Some(username.clone()),
            Record::Subscribe {
                filter, options, ..
            } => {
                session.subscriptions.insert(filter.clone(), *options);
            }
            Record::SessionExpiry { interval_secs, .. } => {
                session.expiry_interval_secs = Some(*interval_secs);
            }
            Record::Unsubscribe { filter, .. } => {
                session.subscriptions.remove(filter);
            }
            Record::Will { will, .. } => {
                session.will = will.clone();
                session.will_delay_secs = 0;
            }
            Record::WillDelay { delay_secs, .. } => session.will_delay_secs = *delay_secs,
            Record::Enqueue { id, qos, .. } => match self.messages.get(id) {
                Some(message) => {
                    session.queue.push(QueuedMessage {
                        id: *id,
                        message: message.clone(),
                        qos: *qos,
                        packet_id: None,
                        released: false,
                        expires_at_unix_ms: self.expiries.get(id).copied(),
                    });
                }
                None => report.unknown_message += 1,
            },
            Record::PacketId { id, packet_id, .. } => match session.queue.get_mut(*id) {
                Some(entry) => entry.packet_id = Some(*packet_id),
                None => report.missing_entry += 1,
            },
            Record::Released { id, .. } => match session.queue.get_mut(*id) {
                Some(entry) => entry.released = true,
                None => report.missing_entry += 1,
            },
            Record::Done { id, .. } => {
                if session.queue.remove(*id).is_none() {
                    report.missing_entry += 1;
                }
            }
            Record::Qos2Received { packet_id, .. } => {
                session.qos2_received.insert(*packet_id);
            }
            Record::Qos2Released { packet_id, .. } => {
                session.qos2_received.remove(packet_id);
            }
            Record::SessionOpen { .. }
            | Record::SessionDrop { .. }
            | Record::Message { .. }
            | Record::MessageExpiry { .. }
            | Record::Retain { .. }
            | Record::RetainExpiry { .. } => {}
        }
    }

    /// Ends a recovery: forgets retained deletions and the fold's message map (an `Enqueue`
    /// applied after this finds no message); the report of everything applied and merged.
    pub fn finish(&mut self) -> ReplayReport {
        let before = self.retained.len();
        self.retained.retain(|_, r| r.message.is_some());
        self.report.tombstones += (before - self.retained.len()) as u64;
        self.messages = FastMap::default();
        self.expiries = FastMap::default();
        std::mem::take(&mut self.report)
    }

    /// What was applied and skipped so far.
    pub fn report(&self) -> &ReplayReport {
        &self.report
    }

    /// The session of `client_id`.
    pub fn session(&self, client_id: &str) -> Option<&Session> {
        self.sessions.get(client_id)
    }

    /// The retained messages to restore, with their versions and expiry deadlines (deletions left
    /// out).
    pub fn retained_messages(
        &self,
    ) -> impl Iterator<Item = (&Message, RetainVersion, Option<u64>)> {
        self.retained
            .values()
            .filter_map(|r| Some((r.message.as_ref()?, r.version, r.expires_at_unix_ms)))
    }

    /// Every filter its sessions subscribe to, sorted, once each: what the other shards must know
    /// of a part's interest when it is restored.
    pub fn subscribed_filters(&self) -> Vec<TopicFilter> {
        let mut filters: Vec<TopicFilter> = self
            .sessions
            .values()
            .flat_map(|s| s.subscriptions.keys().cloned())
            .collect();
        filters.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        filters.dedup();
        filters
    }

    /// The id after the highest one queued or stored: where a shard restored from this state
    /// numbers its new messages from.
    pub fn next_msg_id(&self) -> MsgId {
        let queued = self
            .sessions
            .values()
            .flat_map(|s| s.queue.iter().map(|e| e.id));
        let highest = queued.chain(self.messages.keys().copied()).max();
        highest.map_or(1, |id| id.saturating_add(1))
    }
}

/// Keeps `update` for `topic` if it is newer than what is there.
pub(super) fn set_retained(
    retained: &mut FastMap<TopicName, Retained>,
    topic: &TopicName,
    update: Retained,
) {
    match retained.get_mut(topic) {
        Some(current) if current.version >= update.version => {}
        Some(current) => *current = update,
        None => {
            retained.insert(topic.clone(), update);
        }
    }
}
