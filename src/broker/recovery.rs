//! A shard's durable state as journal records, and back: the snapshot the runtime writes
//! ([`BrokerCore::snapshot_records`]) and the state a restarted shard starts from
//! ([`BrokerCore::restore`]).
//!
//! Only persistent sessions and retained messages are durable (see `journal.rs`). A snapshot uses the
//! live journal ids of the messages, so that journal records written after it (`Done`, `PacketId`)
//! still name them. Nothing here does I/O or reads a clock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::persist::{DurableState, MsgId, Record, Session as StoredSession};
use crate::protocol::{Message, TopicFilter};

use super::session::{Session, StoredEntry};
use super::{BrokerCore, RetainVersion, SessionKey, SubOptions};

impl BrokerCore {
    /// Every record needed to rebuild this shard's durable state: its persistent sessions (with
    /// their subscriptions, will, offline stamp, journaled messages and incoming QoS 2 ids) and the
    /// retained messages of its copy of the store (every shard holds them all; recovery keeps the
    /// newest version of each topic). Records made before this call and not yet taken belong to
    /// the journal batch before the snapshot: take the journal first.
    pub fn snapshot_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut stored: HashSet<MsgId> = HashSet::new();
        for (_, session) in self.sessions.iter().filter(|(_, s)| !s.clean) {
            let entries = session.stored().map(|entry| (entry.id, entry));
            self.session_records(session, entries, &mut stored, &mut records);
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
        }
        records
    }

    /// One session's records, as a snapshot writes them (see `persist/snapshot.rs`), with its
    /// messages `entries` under the ids given with them; a message whose id is in `stored` was
    /// written before (its `Message` record is not repeated).
    pub(super) fn session_records<'a>(
        &self,
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
        for (filter, options) in &session.subscriptions {
            records.push(Record::Subscribe {
                client_id: client_id.clone(),
                filter: filter.clone(),
                qos: options.qos,
            });
        }
        if let Some(will) = session.will.as_deref() {
            records.push(Record::Will {
                client_id: client_id.clone(),
                will: Some(will.clone()),
            });
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
            let (key, _) = self.install_stored_session(client_id, stored, |id| id);
            if stored.offline_since_unix_ms.is_none() && stored.will.is_some() {
                // Its client was connected when the broker stopped, without a DISCONNECT: the
                // will is due [MQTT-3.1.2-8], once every shard is restored.
                self.recovered_wills.push(key);
            }
            let away = stored.offline_since_unix_ms.map_or(Duration::ZERO, |at| {
                Duration::from_millis(unix_ms.saturating_sub(at))
            });
            self.set_offline_since(key, Some(now.checked_sub(away).unwrap_or(now)));
        }
        for (message, version) in state.retained_messages() {
            let version = RetainVersion {
                clock: version.clock,
                shard: version.shard,
            };
            self.apply_retained(message, version);
        }
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.restore_next_msg_id(state.next_msg_id());
        }
        self.last_match.forget();
    }

    /// Makes a session from its durable form (offline, its expiry not filed yet): subscriptions,
    /// will, queued and in-flight messages (their ids mapped by `id_of`) and incoming QoS 2 ids.
    /// Returns its key and the filters that are new on this shard (not announced here: at start
    /// nobody listens yet).
    pub(super) fn install_stored_session(
        &mut self,
        client_id: &Arc<str>,
        stored: &StoredSession,
        mut id_of: impl FnMut(MsgId) -> MsgId,
    ) -> (SessionKey, Vec<TopicFilter>) {
        let mut session = Session::new(
            client_id.clone(),
            false,
            self.settings.max_inflight,
            self.queue_limits(),
        );
        session.will = stored.will.clone().map(Box::new);
        if let Some(username) = &stored.username {
            session.username = username.clone();
            session.user_known = true;
        }
        session.expiry_interval = self.settings.session_expiry_interval;
        for entry in stored.queue.iter() {
            session.restore_stored(
                entry.message.clone(),
                entry.qos,
                id_of(entry.id),
                entry.packet_id,
                entry.released,
            );
        }
        for &packet_id in &stored.qos2_received {
            session.incoming_qos2(packet_id);
        }
        for (filter, &qos) in &stored.subscriptions {
            session
                .subscriptions
                .insert(filter.clone(), SubOptions::qos(qos));
        }
        let key = self.sessions.insert(session);
        self.session_by_client_id.insert(Arc::clone(client_id), key);
        let mut created = Vec::new();
        for (filter, &qos) in &stored.subscriptions {
            if self.add_subscriber(key, filter, SubOptions::qos(qos)) {
                created.push(filter.clone());
            }
        }
        (key, created)
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
