//! A shard's durable state as journal records, and back: the snapshot the runtime writes
//! ([`BrokerCore::snapshot_records`]) and the state a restarted shard starts from
//! ([`BrokerCore::restore`]).
//!
//! Only persistent sessions and retained messages are durable (see `journal.rs`). A snapshot uses the
//! live journal ids of the messages, so that journal records written after it (`Done`, `PacketId`)
//! still name them. Nothing here does I/O or reads a clock.
//!
//! MQTT 5 state comes back as it was: message properties (in the messages), subscription options,
//! a v5 session's own expiry interval, and the deadlines journaled in wall-clock time (a message's
//! expiry, a will's delay from its offline stamp), turned into the core's clock by the `now` and
//! `unix_ms` of [`BrokerCore::restore`]. A queued copy's Subscription Identifiers are not
//! journaled: they are those of the session's subscriptions that match its topic when restored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::persist::{DurableState, MsgId, Record, Session as StoredSession};
use crate::protocol::{Message, TopicFilter};

use super::copy_props::{self, CopyProps};
use super::session::{Session, StoredEntry};
use super::{BrokerCore, RetainVersion, SessionKey, SubOptions};

/// The instant on the core's clock of wall-clock time `at_unix_ms`, given that `now` is
/// `unix_ms` (a time already past is that long before `now`).
fn on_clock(at_unix_ms: u64, now: Instant, unix_ms: u64) -> Instant {
    if at_unix_ms >= unix_ms {
        let ahead = Duration::from_millis(at_unix_ms - unix_ms);
        now.checked_add(ahead).unwrap_or(now)
    } else {
        let behind = Duration::from_millis(unix_ms - at_unix_ms);
        now.checked_sub(behind).unwrap_or(now)
    }
}

/// The Subscription Identifiers of `subscriptions` that match `message`'s topic, ascending: what a
/// restored copy carries.
fn matching_ids(
    subscriptions: &std::collections::BTreeMap<TopicFilter, SubOptions>,
    message: &Message,
) -> Vec<u32> {
    let mut ids: Vec<u32> = (subscriptions.iter())
        .filter(|(filter, _)| filter.matches(&message.topic))
        .filter_map(|(_, options)| options.id.map(|id| id.get()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl BrokerCore {
    /// Every record needed to rebuild this shard's durable state: its persistent sessions (with
    /// their subscriptions, will, offline stamp, journaled messages and incoming QoS 2 ids) and the
    /// retained messages of its copy of the store (every shard holds them all; recovery keeps the
    /// newest version of each topic). Records made before this call and not yet taken belong to
    /// the journal batch before the snapshot: take the journal first.
    pub fn snapshot_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut stored: HashSet<MsgId> = HashSet::new();
        for (key, session) in self.sessions.iter().filter(|(_, s)| !s.clean) {
            let entries = session.stored().map(|entry| (entry.id, entry));
            self.session_records(key, session, entries, &mut stored, &mut records);
        }
        // The broker's own `$SYS` tree is published again by the running broker.
        let entries = self.retained.entries();
        for (topic, message, version) in entries.filter(|(t, _, _)| !t.as_str().starts_with('$')) {
            records.push(Record::Retain {
                topic: topic.clone(),
                message: message.cloned(),
                clock: version.clock,
                shard: version.shard,
            });
            if let Some(at) = self.retained.expires_at(topic) {
                records.push(Record::RetainExpiry {
                    topic: topic.clone(),
                    clock: version.clock,
                    shard: version.shard,
                    at_unix_ms: self.unix_ms_at(at),
                });
            }
        }
        records
    }

    /// One session's records, as a snapshot writes them (see `persist/snapshot.rs`), with its
    /// messages `entries` under the ids given with them; a message whose id is in `stored` was
    /// written before (its `Message` record is not repeated). Also what a session moving to
    /// another node carries (`cluster_session.rs`).
    pub(super) fn session_records<'a>(
        &self,
        key: SessionKey,
        session: &'a Session,
        entries: impl Iterator<Item = (MsgId, StoredEntry<'a>)>,
        stored: &mut HashSet<MsgId>,
        records: &mut Vec<Record>,
    ) {
        let client_id = session.client_id.clone();
        records.push(Record::SessionOpen {
            client_id: client_id.clone(),
        });
        if session.user_known {
            records.push(Record::SessionUser {
                client_id: client_id.clone(),
                username: session.username.clone(),
            });
        }
        if let Some(since) = session.offline_since() {
            let away = self
                .clock
                .map_or(Duration::ZERO, |now| now.saturating_duration_since(since));
            let away = u64::try_from(away.as_millis()).unwrap_or(u64::MAX);
            records.push(Record::SessionOffline {
                client_id: client_id.clone(),
                at_unix_ms: self.unix_ms_now().saturating_sub(away),
            });
        }
        if session.v5 {
            records.push(Record::SessionExpiry {
                client_id: client_id.clone(),
                interval_secs: session.expiry_secs(),
            });
        }
        for (filter, &options) in &session.subscriptions {
            records.push(Record::Subscribe {
                client_id: client_id.clone(),
                filter: filter.clone(),
                options,
            });
        }
        if let Some((will, delay_secs)) = self.journaled_will(key, session) {
            records.push(Record::Will {
                client_id: client_id.clone(),
                will: Some(will),
            });
            if delay_secs > 0 {
                records.push(Record::WillDelay {
                    client_id: client_id.clone(),
                    delay_secs,
                });
            }
        }
        for (id, entry) in entries {
            if stored.insert(id) {
                // As the journal stores it: the retain flag as delivered (false for a live
                // publish, true for a retained copy sent after a SUBACK).
                records.push(Record::Message {
                    id,
                    message: Message {
                        retain: entry.retain,
                        ..entry.message.clone()
                    },
                });
                if let Some(at) = entry.expires_at {
                    records.push(Record::MessageExpiry {
                        id,
                        at_unix_ms: self.unix_ms_at(at),
                    });
                }
            }
            records.push(Record::Enqueue {
                client_id: client_id.clone(),
                id,
                qos: entry.qos,
            });
            if let Some(packet_id) = entry.packet_id {
                records.push(Record::PacketId {
                    client_id: client_id.clone(),
                    id,
                    packet_id,
                });
            }
            if entry.released {
                records.push(Record::Released {
                    client_id: client_id.clone(),
                    id,
                });
            }
        }
        for packet_id in session.incoming_qos2_ids() {
            records.push(Record::Qos2Received {
                client_id: client_id.clone(),
                packet_id,
            });
        }
    }

    /// The will a snapshot keeps for session `key`, and its delay in seconds: the session's (its
    /// delay is its connection's), or the one waiting for its delay since the client left (the
    /// delay counted from the offline stamp, rounded up).
    fn journaled_will(&self, key: SessionKey, session: &Session) -> Option<(Message, u32)> {
        if let Some(will) = session.will.as_deref() {
            let delay = session
                .conn
                .and_then(|conn| self.connections.get(&conn))
                .and_then(|c| c.v5.as_ref())
                .map_or(0, |link| link.will_delay);
            return Some((will.clone(), delay));
        }
        let (due, will) = self.delayed_will(key)?;
        let since = session.offline_since().unwrap_or(due);
        let delay = super::copy_props::seconds_left(due, since);
        Some((will.clone(), delay))
    }

    /// Starts this shard from a recovered state (before it serves anything): its persistent
    /// sessions, offline, with their subscriptions, wills, queued and in-flight messages (their
    /// journal ids as in `state`, which the runtime has just written as this shard's snapshot) and
    /// incoming QoS 2 ids; and the retained messages. The other shards' subscriptions come from
    /// [`restore_remote_interest`](Self::restore_remote_interest).
    ///
    /// `now` and `unix_ms` are the same instant on the two clocks: a session's offline time keeps
    /// counting from its journaled wall-clock stamp (or from now, when its client was connected at
    /// the stop), so session expiry spans restarts.
    pub fn restore(&mut self, state: &DurableState, now: Instant, unix_ms: u64) {
        self.clock = Some(now);
        for (client_id, stored) in &state.sessions {
            let (key, _) = self.install_stored_session(client_id, stored, |id| id, now, unix_ms);
            let away = stored.offline_since_unix_ms.map_or(Duration::ZERO, |at| {
                Duration::from_millis(unix_ms.saturating_sub(at))
            });
            let since = now.checked_sub(away).unwrap_or(now);
            self.restore_will(key, stored, since);
            self.set_offline_since(key, Some(since));
        }
        for (message, version, expires_at_unix_ms) in state.retained_messages() {
            let version = RetainVersion {
                clock: version.clock,
                shard: version.shard,
            };
            match expires_at_unix_ms {
                // Expired while the broker was down: not restored.
                Some(at) if at <= unix_ms => {}
                Some(at) => {
                    self.apply_retained(message, version);
                    let at = on_clock(at, now, unix_ms);
                    self.retained.set_expiry(&message.topic, version, at);
                }
                // An interval without its deadline: only a torn journal tail (never reported
                // durable, so never acknowledged) ends after a `Retain` and before the
                // `RetainExpiry` written with it. When it expires cannot be told: not restored
                // (restored, it lived its whole interval again from the restart).
                None if copy_props::interval(message).is_some() => {}
                None => self.apply_retained(message, version),
            }
        }
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.restore_next_msg_id(state.next_msg_id());
        }
        self.last_match.forget();
    }

    /// Makes a session from its durable form (offline, its expiry not filed yet, its will left to
    /// [`restore_will`](Self::restore_will)): subscriptions with their options, queued and
    /// in-flight messages (their ids mapped by `id_of`, their expiry deadlines put on the core's
    /// clock by `now` = `unix_ms`) and incoming QoS 2 ids. Returns its key and the filters that
    /// are new on this shard (not announced here: at start nobody listens yet).
    pub(super) fn install_stored_session(
        &mut self,
        client_id: &Arc<str>,
        stored: &StoredSession,
        mut id_of: impl FnMut(MsgId) -> MsgId,
        now: Instant,
        unix_ms: u64,
    ) -> (SessionKey, Vec<TopicFilter>) {
        let mut session = Session::new(
            client_id.clone(),
            false,
            self.settings.max_inflight,
            self.queue_limits(),
        );
        if let Some(username) = &stored.username {
            session.username = username.clone();
            session.user_known = true;
        }
        session.expiry_interval = match stored.expiry_interval_secs {
            Some(secs) => secs.map(Duration::from_secs),
            None => self.settings.session_expiry_interval,
        };
        session.v5 = stored.expiry_interval_secs.is_some();
        session.subscriptions = stored.subscriptions.clone();
        for entry in stored.queue.iter() {
            let ids = matching_ids(&stored.subscriptions, &entry.message);
            let props = CopyProps {
                expires_at: entry
                    .expires_at_unix_ms
                    .map(|at| on_clock(at, now, unix_ms)),
                subscription_ids: &ids,
            };
            session.restore_stored(
                entry.message.clone(),
                entry.qos,
                id_of(entry.id),
                entry.packet_id,
                entry.released,
                props,
            );
        }
        for &packet_id in &stored.qos2_received {
            session.incoming_qos2(packet_id);
        }
        let key = self.sessions.insert(session);
        self.session_by_client_id.insert(Arc::clone(client_id), key);
        let mut created = Vec::new();
        for (filter, &options) in &stored.subscriptions {
            if self.add_subscriber(key, filter, options) {
                created.push(filter.clone());
            }
        }
        (key, created)
    }

    /// Puts back the will of a recovered session that went offline at `since`. Without a delay:
    /// kept when its client was connected at the stop (the connection ended without DISCONNECT:
    /// the will is due [MQTT-3.1.2-8], once every shard is restored). With a delay (MQTT 5): it
    /// waits for what is left of it from `since` (from now, when the client was connected), and is
    /// published by the tick when due, or at once by the session's end, unless the client comes
    /// back first.
    pub(super) fn restore_will(&mut self, key: SessionKey, stored: &StoredSession, since: Instant) {
        let Some(will) = stored.will.clone() else {
            return;
        };
        if stored.will_delay_secs > 0 {
            let delay = Duration::from_secs(stored.will_delay_secs.into());
            let due = since.checked_add(delay).unwrap_or(since);
            self.delay_will_until(key, due, Box::new(will));
            return;
        }
        if let Some(session) = self.sessions.get_mut(key) {
            session.will = Some(Box::new(will));
        }
        if stored.offline_since_unix_ms.is_none() {
            self.recovered_wills.push(key);
        }
    }

    /// Shard `shard` has recovered sessions subscribed to `filter` (start-up, before any traffic:
    /// the other shards announce nothing then).
    pub fn restore_remote_interest(&mut self, shard: usize, filter: &TopicFilter) {
        if filter.is_shared() {
            self.restore_remote_share(shard, filter);
            return;
        }
        if let Some(table) = self.remote_interest.get_mut(shard) {
            table.entry(filter, || ());
        }
        self.last_remote.forget();
    }

    /// Publishes the wills of the recovered sessions whose clients were connected when the broker
    /// stopped (their connections ended without DISCONNECT). Call it after
    /// [`restore_remote_interest`](Self::restore_remote_interest), so that every shard's
    /// subscribers get them.
    pub fn publish_recovered_wills(&mut self) {
        for key in std::mem::take(&mut self.recovered_wills) {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let Some(will) = session.will.take() else {
                continue;
            };
            let client_id = session.client_id.clone();
            self.journal(|| Record::Will {
                client_id,
                will: None,
            });
            if Self::client_may_publish_to(will.topic.as_bytes()) {
                self.route(*will);
                self.stats.wills_published += 1;
            }
        }
    }
}
