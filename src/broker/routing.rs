//! Routing: where a publish goes once it is in the broker, and how it is written to each subscriber.
//!
//! A client's PUBLISH (decoded: `publish_from_client`, or borrowed from the read buffer:
//! `deliver_qos0_at_once`, both called from `handlers/publish.rs`), a will, a `$SYS` message or another shard's batch is matched
//! against this shard's trie (`take_matches` in `matching.rs`, cached for the last topic), offered to each matching
//! session (that its `receive-acl` allows: `may_receive`, asked only when a plugin checks receiving)
//! at its granted QoS (`deliver_to_session`, or `send_qos0_at_once` for QoS 0 that goes out
//! at once), and packed for every other shard with a matching subscription (`take_remote_shards`,
//! `batch_publish`, in `routing_shards.rs` with the delivery of other shards' batches; the batch
//! leaves at the next `poll_actions`). Retained publishes update this shard's store and are
//! broadcast with their version.
//!
//! These are methods of [`BrokerCore`]; the packet handlers (`handlers/`) call in here. Nothing here
//! reads a clock, touches a socket or decodes packets.

use std::borrow::Cow;
use std::sync::Arc;

use crate::persist::{codec, Record};
use crate::plugins::{ClientInfo, TopicAction};
use crate::protocol::{v5, PublishRef, QoS, TopicName};

use super::copy_props::CopyProps;
use super::outbox::encode_v5;
use super::packet_log::Who;
use super::session::{Delivery, DropReason};
use super::{
    packet_log, BrokerCore, BusMessage, ConnId, Message, PublishesWritten, RetainVersion,
    SessionKey, RETAINED_CHUNK,
};

impl BrokerCore {
    /// A publish from a client of this shard (or its will): retained store, local subscribers, and
    /// every other shard that is interested (all of them for a retained message).
    ///
    /// `conn` is the client's connection (for its will: the connection being closed). Returns
    /// false when the message is dropped: `$SYS`, or denied by a topic-check plugin (acknowledged
    /// to the client all the same, as Mosquitto does, but neither delivered nor retained).
    pub(super) fn publish_from_client(&mut self, conn: ConnId, message: Message) -> bool {
        if !Self::client_may_publish_to(message.topic.as_bytes()) {
            // Clients may not publish into the broker's own tree; it is acknowledged but not delivered.
            self.stats.publish_dropped_sys += 1;
            return false;
        }
        if self.plugins_see_publishes() {
            let plugins = &self.settings.plugins;
            let Some((client_id, username)) = self.client_identity(conn) else {
                return false;
            };
            let client = ClientInfo {
                client_id: &client_id,
                username: username.as_deref(),
            };
            if !plugins.allow(&client, TopicAction::Publish(&message.topic)) {
                self.stats.publish_denied += 1;
                log::log!(
                    target: packet_log::TARGET,
                    packet_log::refusal_level(self.settings.log_packets),
                    "Denied PUBLISH from '{client_id}'{} to '{}': topic check",
                    packet_log::User(username.as_deref()),
                    message.topic.as_str()
                );
                return false;
            }
            plugins.message_received(&client, &message);
        }
        self.route_from(message, Some(conn));
        true
    }

    /// The will of a connection that ends without DISCONNECT (`conn`: the connection being
    /// closed). Its topic was checked by the topic plugins at CONNECT
    /// (`drop_will_the_topic_checks_deny`), and is not asked again now: an answer fetched ahead
    /// (the HTTP topic plugin's, kept `cache_ttl`) is long gone when a client that was connected
    /// for hours leaves, and the will would be denied for that alone. Event plugins see it as a
    /// publish. Returns false for a `$SYS` topic (never published).
    pub(super) fn publish_will_of(&mut self, conn: ConnId, will: Message) -> bool {
        if !Self::client_may_publish_to(will.topic.as_bytes()) {
            return false;
        }
        if self.plugins_see_publishes() {
            if let Some((client_id, username)) = self.client_identity(conn) {
                let client = ClientInfo {
                    client_id: &client_id,
                    username: username.as_deref(),
                };
                self.settings.plugins.message_received(&client, &will);
            }
        }
        self.route_from(will, Some(conn));
        true
    }

    /// Client id and user name of a connection whose CONNECT was accepted (Arc clones: cheap).
    pub fn client_identity(&self, conn: ConnId) -> Option<(Arc<str>, Option<Arc<str>>)> {
        let connection = self.connections.get(&conn)?;
        let session = self.sessions.get(connection.session)?;
        Some((session.client_id.clone(), session.username.clone()))
    }

    /// Whether a session's client may receive a message on `topic`, by the plugins that check
    /// receiving (`receive-acl`); call it only when `plugins.checks_receive()`. A refusal is
    /// counted. A session whose user is not known (recovered, its client not back yet) receives
    /// nothing that is checked.
    pub(super) fn may_receive(&mut self, key: SessionKey, topic: &TopicName) -> bool {
        let allowed = self.sessions.get(key).is_some_and(|session| {
            session.user_known
                && self.settings.plugins.allow_receive(
                    &ClientInfo {
                        client_id: &session.client_id,
                        username: session.username.as_deref(),
                    },
                    topic,
                )
        });
        if !allowed {
            self.stats.receive_denied += 1;
        }
        allowed
    }

    /// Routes a message that entered the broker on this shard (clients, wills, the host's
    /// `BrokerHandle::publish`). A retained one is announced to the event plugins here, once.
    pub fn route(&mut self, message: Message) {
        self.route_from(message, None);
    }

    /// [`route`](Self::route) from connection `publisher`; share groups are served here only.
    fn route_from(&mut self, message: Message, publisher: Option<ConnId>) {
        let me = self.shard;
        if message.retain {
            let version = self.retained.next_version(self.retain_version_shard());
            self.apply_retained(&message, version);
            self.journal_retained(&message, version);
            if self.settings.plugins.has_events() {
                self.settings.plugins.retained_message(&message);
            }
            self.route_shared(&message, publisher);
            self.deliver_local(&message, publisher.and_then(|conn| self.session_of(conn)));
            for to in self.peers() {
                let message = message.clone();
                let stamp = self.journal.as_deref_mut().and_then(|journal| {
                    let stamp = journal.stamp_for(to, me);
                    if let Some(stamp) = stamp {
                        journal.route_waits.push((to, stamp.n));
                    }
                    stamp
                });
                self.send_bus(
                    to,
                    BusMessage::Retained {
                        message,
                        version,
                        stamp,
                    },
                );
            }
            return;
        }
        self.route_to_other_shards(
            message.qos,
            message.topic.as_bytes(),
            &message.payload,
            message.properties.as_deref(),
        );
        self.route_shared(&message, publisher);
        self.deliver_local(message, publisher.and_then(|conn| self.session_of(conn)));
    }

    /// Journals a retained update this shard made (persistence on): every shard's journal holds
    /// the updates it made, and recovery keeps the newest version of each topic.
    fn journal_retained(&mut self, message: &Message, version: RetainVersion) {
        let message = message.clone();
        let expires = self.unix_deadline(&message);
        let topic = message.topic.clone();
        self.journal(|| Record::Retain {
            topic: message.topic.clone(),
            message: (!message.payload.is_empty()).then_some(message),
            clock: version.clock,
            shard: version.shard,
        });
        if let Some(at_unix_ms) = expires {
            self.journal(|| Record::RetainExpiry {
                topic,
                clock: version.clock,
                shard: version.shard,
                at_unix_ms,
            });
        }
    }

    /// Updates this shard's retained copy. Every shard holds the same payloads (shared `Bytes`), so
    /// shard 0 alone counts them in the memory budget.
    pub(super) fn apply_retained(&mut self, message: &Message, version: RetainVersion) {
        let before = self.retained.payload_bytes();
        self.retained.apply(message, version, self.clock);
        self.retained_bytes_changed(before);
    }

    /// Forgets the retained messages that have expired by `now` (MQTT 5).
    pub(super) fn drop_expired_retained(&mut self, now: std::time::Instant) {
        let before = self.retained.payload_bytes();
        self.retained.drop_expired(now);
        self.retained_bytes_changed(before);
    }

    /// Counts the change of the retained payload bytes since `before` in the memory budget.
    fn retained_bytes_changed(&mut self, before: usize) {
        if self.shard == 0 {
            let after = self.retained.payload_bytes();
            self.settings.memory.add(after.saturating_sub(before));
            self.settings.memory.sub(before.saturating_sub(after));
        }
    }

    /// Delivers to this shard's subscribers: one copy per session at the highest QoS among its
    /// matching subscriptions [MQTT-3.3.5-1], with RETAIN cleared [MQTT-3.3.1-9] unless one of
    /// them has Retain As Published [MQTT-3.3.1-12]. `from` is the publisher's session: its
    /// subscriptions with No Local do not get the message [MQTT-3.8.3-3].
    ///
    /// Given the message (`Cow::Owned`), the last session that keeps it takes it without a clone.
    pub(super) fn deliver_local<'m>(
        &mut self,
        message: impl Into<Cow<'m, Message>>,
        from: Option<SessionKey>,
    ) {
        let message = message.into();
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.current_msg = None;
        }
        let matched = self.take_matches(message.topic.as_bytes());
        // A retained message goes to most subscribers with RETAIN 0: one copy says so.
        let cleared = message.retain.then(|| Message {
            retain: false,
            ..Message::clone(&message)
        });
        // Every subscriber that gets this message at QoS 0 right away gets the same bytes:
        // encoded once (on first use) and copied to each outbox. Per delivery to 50 subscribers
        // at 100 msg/s this saves ~8 % of the broker's instructions (callgrind), and it skips two
        // reference-count round trips on the topic and payload per subscriber.
        self.qos0_packet.clear();
        self.qos0_packet_v5.clear();
        let receive_checked = self.settings.plugins.checks_receive();
        let mut rest = matched.iter().copied().peekable();
        while let Some((key, found)) = rest.next() {
            if found.no_local && from == Some(key) {
                continue;
            }
            if receive_checked && !self.may_receive(key, &message.topic) {
                continue;
            }
            let qos = found.qos.min(message.qos);
            let as_published = found.as_published || cleared.is_none();
            // Empty (no allocation) unless a subscription has an identifier.
            let ids = if found.has_ids {
                self.subscription_ids(key, &message.topic)
            } else {
                Vec::new()
            };
            if qos == QoS::AtMostOnce
                && !(as_published && message.retain)
                && self.send_qos0_at_once(
                    key,
                    message.topic.as_bytes(),
                    &message.payload,
                    message.properties.as_deref(),
                    &ids,
                )
            {
                continue;
            }
            match &cleared {
                Some(cleared) if !as_published => {
                    self.deliver_to_session(key, Cow::Borrowed(cleared), qos, false, &ids);
                }
                _ if rest.peek().is_none() => {
                    self.deliver_to_session(key, message, qos, false, &ids);
                    break;
                }
                _ => self.deliver_to_session(key, Cow::Borrowed(&*message), qos, false, &ids),
            }
        }
        self.last_match.put_back(matched);
    }

    /// Offers `message` to a session at `qos`: borrowed, or given when no other session needs it
    /// (see [`Session::deliver`]), with the identifiers of the session's subscriptions it matched
    /// (`subscription_ids`, MQTT 5). A message with a Message Expiry Interval expires for this
    /// session that long after now (a retained one comes with what is left of it).
    pub(super) fn deliver_to_session(
        &mut self,
        key: SessionKey,
        message: Cow<'_, Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: &[u32],
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let conn = session.conn;
        let props = CopyProps::arriving(&message, self.clock, subscription_ids);
        if self.too_large_for(conn, &message, qos, retain, &props) {
            // Dropped for this subscriber, as if delivered [MQTT-3.1.2-25].
            self.stats.publish_dropped_too_large += 1;
            return;
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if qos == QoS::AtMostOnce && !retain {
            if let Some(connection) = conn.and_then(|c| self.connections.get(&c)) {
                // Under memory pressure, a subscriber that is behind loses QoS 0 first.
                if Self::drops_live_qos0(&self.settings, &mut self.stats, connection.outbox.len()) {
                    return;
                }
            }
        }
        // A QoS 0 message sent at once is encoded from the copy here, so the session only borrows
        // it; one at QoS 1/2 that is sent is encoded from the session's copy.
        // A retained copy after a SUBACK is stored too (its own message, retain flag kept): a
        // QoS 2 copy's packet id must survive a crash like a live message's.
        let stored = self.journal.is_some() && !session.clean && qos != QoS::AtMostOnce;
        let id = if stored {
            self.stored_message_id(&message, retain)
        } else {
            0
        };
        let factor = Self::queue_factor(&self.behind, key);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let (delivery, message) = if qos == QoS::AtMostOnce {
            (
                session.deliver_within(&*message, qos, retain, 0, factor, props),
                Some(message),
            )
        } else {
            (
                session.deliver_within(message, qos, retain, id, factor, props),
                None,
            )
        };
        if id != 0 && matches!(delivery, Delivery::Send { .. } | Delivery::Queued) {
            let packet_id = match delivery {
                Delivery::Send { packet_id } if qos == QoS::ExactlyOnce => packet_id,
                _ => None,
            };
            if let Some(journal) = self.journal.as_deref_mut() {
                journal.append(|out| codec::encode_enqueue(&session.client_id, id, qos, out));
            }
            // A QoS 2 message sent now keeps its packet id across a restart; a QoS 1 one sent
            // again after a restart may take a new id (no record for it).
            if let Some(packet_id) = packet_id {
                let client_id = session.client_id.clone();
                self.journal(|| Record::PacketId {
                    client_id,
                    id,
                    packet_id,
                });
            }
            if let (Some(_), Some(conn)) = (packet_id, conn) {
                self.hold_outbox(conn);
            }
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        match delivery {
            Delivery::Send { packet_id } => {
                let Some(conn) = conn else {
                    return;
                };
                let Some(connection) = self.connections.get_mut(&conn) else {
                    return;
                };
                let mut written = PublishesWritten {
                    log_as: self.settings.log_packets.then(|| Who::of(session, conn)),
                    v5: connection.v5.is_some(),
                    ..PublishesWritten::default()
                };
                let publish = match &message {
                    Some(message) => Some((
                        PublishRef {
                            dup: false,
                            qos,
                            // Set only by Retain As Published.
                            retain: message.retain,
                            topic: message.topic.as_bytes(),
                            packet_id,
                            payload: &message.payload,
                            properties: message.properties.as_deref(),
                        },
                        props,
                    )),
                    None => session.newest_inflight(),
                };
                if let Some((publish, props)) = publish {
                    let hop = props.hop(self.clock);
                    written.encode(connection, &mut self.outbox_pool, publish, &hop);
                }
                self.publishes_written(conn, &written);
            }
            Delivery::Queued => {
                if retain || qos == QoS::AtMostOnce {
                    self.fill_window(key);
                }
                if !retain {
                    self.queue_grew(key);
                }
            }
            Delivery::Dropped(DropReason::QueueFull) => self.stats.publish_dropped_queue_full += 1,
            Delivery::Dropped(DropReason::QueueBytes) => {
                self.stats.publish_dropped_queue_bytes += 1
            }
            Delivery::Dropped(DropReason::MemoryLimit) => self.stats.publish_dropped_memory += 1,
            Delivery::Dropped(DropReason::OfflineQoS0) => self.stats.publish_dropped_offline += 1,
        }
    }

    /// After an acknowledgement frees the window: send what was queued.
    pub(super) fn fill_window(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let mut connection = self.connections.get_mut(&conn);
        let mut written = PublishesWritten {
            log_as: self.settings.log_packets.then(|| Who::of(session, conn)),
            v5: connection.as_ref().is_some_and(|c| c.v5.is_some()),
            ..PublishesWritten::default()
        };
        let waiting = connection.as_ref().map_or(0, |c| c.outbox.len());
        // QoS 0 messages from the queue fill the outbox up to this much per turn.
        let room = RETAINED_CHUNK.saturating_sub(waiting);
        let pool = &mut self.outbox_pool;
        let journaled = self.journal.is_some() && !session.clean;
        let mut packet_ids: Vec<(crate::persist::MsgId, u16)> = Vec::new();
        let now = self.clock;
        let expired = session.fill_window(room, now, |publish, props, id| {
            if journaled && id != 0 && publish.qos == QoS::ExactlyOnce {
                if let Some(packet_id) = publish.packet_id {
                    packet_ids.push((id, packet_id));
                }
            }
            if let Some(connection) = connection.as_mut() {
                written.encode(connection, pool, publish, &props.hop(now));
            }
        });
        self.stats.publish_dropped_expired += expired.len() as u64;
        let client_id = session.client_id.clone();
        self.publishes_written(conn, &written);
        if !packet_ids.is_empty() {
            self.hold_outbox(conn);
        }
        for (id, packet_id) in packet_ids {
            let client_id = client_id.clone();
            self.journal(|| Record::PacketId {
                client_id,
                id,
                packet_id,
            });
        }
        // Dropped expired: done with, as if acknowledged (the journal kept them otherwise, and a
        // restart queued them again).
        for id in expired.into_iter().filter(|&id| journaled && id != 0) {
            self.journal_done(key, id);
        }
        self.queue_shrank(key);
    }

    /// Delivers a QoS 0 message to this shard's subscribers from borrowed bytes, when every one of
    /// them takes it at once (see [`send_qos0_at_once`](Self::send_qos0_at_once)); otherwise
    /// returns `false` having delivered nothing. Also `false` when a plugin checks receiving: that
    /// check takes a topic name, which `deliver_local` has; and when a subscription with No Local
    /// or a Subscription Identifier matches: the publisher and the topic name are known there.
    pub(super) fn deliver_qos0_at_once(&mut self, topic: &[u8], payload: &[u8]) -> bool {
        if self.settings.plugins.checks_receive() {
            return false;
        }
        let matched = self.take_matches(topic);
        let at_once = matched.iter().all(|&(key, found)| {
            !found.no_local
                && !found.has_ids
                && self
                    .sessions
                    .get(key)
                    .is_some_and(|session| session.sends_qos0_at_once())
        });
        if at_once {
            self.qos0_packet.clear();
            self.qos0_packet_v5.clear();
            for &(key, _) in &matched {
                self.send_qos0_at_once(key, topic, payload, None, &[]);
            }
        }
        self.last_match.put_back(matched);
        at_once
    }

    /// Sends a live message at QoS 0 to a session that takes it at once, from `qos0_packet`, or
    /// `qos0_packet_v5` for an MQTT 5 client (encoded here if this is the message's first such
    /// delivery; encoded for this client alone when it has `subscription_ids`). `false` when the session needs [`deliver_to_session`](Self::deliver_to_session)
    /// instead (offline, or messages queued ahead of this one). Same limits and counters as there.
    fn send_qos0_at_once(
        &mut self,
        key: SessionKey,
        topic: &[u8],
        payload: &[u8],
        properties: Option<&crate::protocol::v5::Properties>,
        subscription_ids: &[u32],
    ) -> bool {
        let Some(conn) = self
            .sessions
            .get(key)
            .filter(|s| s.sends_qos0_at_once())
            .and_then(|s| s.conn)
        else {
            return false;
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return false;
        };
        if Self::drops_live_qos0(&self.settings, &mut self.stats, connection.outbox.len()) {
            return true;
        }
        let publish = PublishRef {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            payload,
            properties,
        };
        let v5 = connection.v5.is_some();
        let max = connection.v5.as_ref().and_then(|link| link.max_packet_size);
        let aliases = connection
            .v5
            .as_ref()
            .is_some_and(|link| link.aliases_out.active());
        let bytes = if v5 && (!subscription_ids.is_empty() || aliases) {
            // This subscriber's own identifiers or topic aliases: its own bytes, straight into
            // its outbox.
            let hop = v5::Hop {
                subscription_ids,
                ..v5::Hop::default()
            };
            if max.is_some_and(|max| v5::encoded_publish_len(&publish, &hop) > max as usize) {
                self.stats.publish_dropped_too_large += 1;
                return true;
            }
            let before = connection.outbox.len();
            if let Err(error) = encode_v5(connection, &mut self.outbox_pool, &publish, &hop) {
                Self::cannot_encode(topic, &error);
                return true;
            }
            connection.outbox.len() - before
        } else {
            let packet = if v5 {
                &mut self.qos0_packet_v5
            } else {
                &mut self.qos0_packet
            };
            if packet.is_empty() {
                let encoded = if v5 {
                    v5::encode_publish_ref(&publish, &v5::Hop::default(), packet)
                } else {
                    publish.encode(packet)
                };
                if let Err(error) = encoded {
                    Self::cannot_encode(topic, &error);
                    packet.clear();
                    return true;
                }
            }
            if max.is_some_and(|max| packet.len() > max as usize) {
                self.stats.publish_dropped_too_large += 1;
                return true;
            }
            connection
                .outbox_to_fill(&mut self.outbox_pool)
                .extend_from_slice(packet);
            packet.len()
        };
        let written = PublishesWritten {
            by_qos: [1, 0, 0],
            bytes,
            log_as: None,
            v5,
        };
        self.publishes_written(conn, &written);
        if self.settings.log_packets {
            Self::log_sending_publish(&self.who(conn), &publish);
        }
        true
    }
}
