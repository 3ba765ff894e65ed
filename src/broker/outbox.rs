//! Writing to a connection's outbox, and handing the outbox to the runtime: packets and PUBLISHes
//! encoded into it (counted for the statistics and the memory budget), the flush action that asks
//! the runtime to write it, and `take_outbox` / `swap_outbox`, by which the runtime takes the bytes
//! and an idle connection's buffers go back to the shard's pool ([`super::outbox_pool`]).
//!
//! Nothing here decides what to send (the handlers and `routing.rs` do) or touches a socket.

use bytes::BytesMut;

use crate::protocol::{v5, EncodeError, Packet, PublishRef};

use super::connection::{Connection, ConnectionState};
use super::mqtt5::{self, Reply};
use super::outbox_pool::OutboxPool;
use super::packet_log::Who;
use super::{Action, BrokerCore, ConnId};

/// Appends `publish` to an MQTT 5 `connection`'s outbox with `hop`'s properties and, when the
/// client allows aliases, the topic's alias (`topic_alias_out.rs`: with the topic name the first
/// time, with an empty one after). An alias is noted as known only once its PUBLISH is written;
/// a first PUBLISH the alias would make too big for the client's Maximum Packet Size goes
/// without it.
pub(super) fn encode_v5(
    connection: &mut Connection,
    pool: &mut OutboxPool,
    publish: &PublishRef<'_>,
    hop: &v5::Hop<'_>,
) -> Result<(), EncodeError> {
    let Some(link) = connection.v5.as_deref() else {
        return v5::encode_publish_ref(publish, hop, connection.outbox_to_fill(pool));
    };
    let alias = if link.aliases_out.active() {
        link.aliases_out.lookup(publish.topic)
    } else {
        None
    };
    let Some((alias, known)) = alias else {
        return v5::encode_publish_ref(publish, hop, connection.outbox_to_fill(pool));
    };
    let aliased = v5::Hop {
        topic_alias: Some(alias),
        alias_only: known,
        ..*hop
    };
    let too_big = link
        .max_packet_size
        .is_some_and(|max| v5::encoded_publish_len(publish, &aliased) > max as usize);
    if too_big && !known {
        return v5::encode_publish_ref(publish, hop, connection.outbox_to_fill(pool));
    }
    v5::encode_publish_ref(publish, &aliased, connection.outbox_to_fill(pool))?;
    if !known {
        if let Some(link) = connection.v5.as_deref_mut() {
            link.aliases_out.sent(publish.topic, alias);
        }
    }
    Ok(())
}

/// PUBLISHes appended to one connection's outbox, counted for the statistics and the memory budget.
#[derive(Debug, Default)]
pub(super) struct PublishesWritten {
    pub(super) by_qos: [u64; 3],
    pub(super) bytes: usize,
    /// With `log_packets`: who the PUBLISHes go to, for their log lines (`None`: not logged).
    pub(super) log_as: Option<Who>,
    /// They go to an MQTT 5 client: encoded with the message's properties.
    pub(super) v5: bool,
}

impl PublishesWritten {
    /// Appends `publish` to `connection`'s outbox (a buffer from `pool` if it has none) and
    /// counts it (an encoding error is logged and writes nothing); to an MQTT 5 client with
    /// `hop`'s properties (this subscriber's) and the connection's Topic Alias for the topic
    /// ([`encode_v5`]).
    pub(super) fn encode(
        &mut self,
        connection: &mut Connection,
        pool: &mut OutboxPool,
        publish: PublishRef<'_>,
        hop: &v5::Hop<'_>,
    ) {
        let before = connection.outbox.len();
        let encoded = if self.v5 {
            encode_v5(connection, pool, &publish, hop)
        } else {
            publish.encode(connection.outbox_to_fill(pool))
        };
        let outbox = &connection.outbox;
        if let Err(error) = encoded {
            let topic = String::from_utf8_lossy(publish.topic);
            log::warn!("cannot encode PUBLISH to {topic}: {error}");
            return;
        }
        self.by_qos[publish.qos as usize] += 1;
        self.bytes += outbox.len() - before;
        if let Some(who) = &self.log_as {
            BrokerCore::log_sending_publish(who, &publish);
        }
    }
}

impl BrokerCore {
    /// The bytes to write to a connection and whether to close it after writing them.
    /// `None` when the connection is unknown (already forgotten).
    pub fn take_outbox(&mut self, conn: ConnId) -> Option<(BytesMut, bool)> {
        let mut bytes = BytesMut::new();
        let closing = self.swap_outbox(conn, &mut bytes)?;
        Some((bytes, closing))
    }

    /// Like [`take_outbox`](Self::take_outbox), for a writer that keeps its own buffer: `buf`
    /// (emptied by the caller, capacity kept) becomes the connection's outbox and the outbox's
    /// bytes are left in `buf`. Returns whether to close after writing them.
    ///
    /// Swapping two buffers allocates nothing; splitting the outbox off (as `take_outbox` does)
    /// cost a malloc and a free per write: 13 % of the instructions of a 1 → 50 fan-out at
    /// 100 msg/s (callgrind).
    pub fn swap_outbox(&mut self, conn: ConnId, buf: &mut BytesMut) -> Option<bool> {
        let held = self.connections.get(&conn)?.hold_until;
        if held > 0 && !self.held_outbox_released(conn, held) {
            buf.clear();
            let connection = self.connections.get_mut(&conn)?;
            connection.flush_requested = false;
            return Some(connection.state == ConnectionState::Closing);
        }
        let connection = self.connections.get_mut(&conn)?;
        connection.flush_requested = false;
        buf.clear();
        std::mem::swap(&mut connection.outbox, buf);
        if buf.is_empty() {
            // Nothing to write: the connection goes idle and keeps no buffer (most connections
            // are idle most of the time); both go to the shard's pool for the next burst.
            self.outbox_pool
                .give(std::mem::take(&mut connection.outbox));
            self.outbox_pool.give(std::mem::take(buf));
        }
        let closing = connection.state == ConnectionState::Closing;
        let session = connection.session;
        self.stats.bytes_sent += buf.len() as u64;
        self.settings.memory.sub(buf.len());
        // Queued messages (retained ones after a SUBACK, mostly) wait for room in the outbox.
        if !closing
            && self
                .sessions
                .get(session)
                .is_some_and(|s| s.queued_len() > 0)
        {
            self.fill_window(session);
        }
        Some(closing)
    }

    pub(super) fn request_flush(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            if !connection.flush_requested {
                connection.flush_requested = true;
                self.actions.push(Action::Flush(conn));
            }
        }
    }

    /// Encodes a packet into the connection's outbox: as it is for an MQTT 3 client, in its
    /// MQTT 5 form ([`mqtt5::to_v5`]) for an MQTT 5 one, but for the packets whose MQTT 5 form
    /// is the same bytes ([`mqtt5::same_in_v5`]: success acknowledgements, PINGRESP).
    /// An acknowledgement written in its MQTT 3 bytes still ends its PUBLISH's count against
    /// the broker's Receive Maximum ([`mqtt5::V5Link::sent_plain`]).
    pub(super) fn write(&mut self, conn: ConnId, packet: &Packet) {
        let mut as_v5 = false;
        if let Some(link) = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.v5.as_deref_mut())
        {
            if mqtt5::same_in_v5(packet) {
                link.sent_plain(packet);
            } else {
                as_v5 = true;
            }
        }
        if as_v5 {
            match mqtt5::to_v5(packet) {
                Some(packet) => self.write_v5(conn, &packet),
                None => log::warn!("connection {conn}: no MQTT 5 form for {packet:?}"),
            }
            return;
        }
        if self.encode_into(conn, packet, |out| packet.encode(out)) && self.settings.log_packets {
            self.log_sending(conn, packet);
        }
    }

    /// Appends what `encode` writes to `conn`'s outbox, counted, and asks for a flush; `false`
    /// (nothing written, `packet` logged) when the connection is unknown or encoding failed.
    fn encode_into(
        &mut self,
        conn: ConnId,
        packet: &dyn std::fmt::Debug,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> bool {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return false;
        };
        let before = connection.outbox.len();
        if let Err(error) = encode(connection.outbox_to_fill(&mut self.outbox_pool)) {
            log::warn!("cannot encode {packet:?}: {error}");
            return false;
        }
        self.settings.memory.add(connection.outbox.len() - before);
        self.stats.packets_sent += 1;
        self.request_flush(conn);
        true
    }

    /// Encodes an MQTT 5 packet into the connection's outbox (an MQTT 5 connection's, or the
    /// CONNACK refusing one). An acknowledgement ends its PUBLISH's count against the broker's
    /// Receive Maximum here, whenever it was made ([`mqtt5::V5Link::sent`]).
    pub(super) fn write_v5(&mut self, conn: ConnId, packet: &v5::Packet) {
        if let Some(link) = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.v5.as_deref_mut())
        {
            link.sent(packet);
        }
        if self.encode_into(conn, packet, |out| packet.encode(out)) && self.settings.log_packets {
            log::info!(target: super::packet_log::TARGET, "Sending {} to connection {conn}", packet.name());
        }
    }

    /// Writes a queued reply in the form it was made in.
    pub(super) fn write_reply(&mut self, conn: ConnId, reply: &Reply) {
        match reply {
            Reply::V3(packet) => self.write(conn, packet),
            Reply::V5(packet) => self.write_v5(conn, packet),
        }
    }

    /// Whether `conn` is an MQTT 5 connection.
    pub fn is_v5(&self, conn: ConnId) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.v5.is_some())
    }

    /// A count of PUBLISHes about to be written to `conn`, which logs them with `log_packets`.
    pub(super) fn publishes_to(&self, conn: ConnId) -> PublishesWritten {
        PublishesWritten {
            log_as: self.settings.log_packets.then(|| self.who(conn)),
            v5: self.is_v5(conn),
            ..PublishesWritten::default()
        }
    }

    pub(super) fn write_publish(
        &mut self,
        conn: ConnId,
        publish: PublishRef<'_>,
        hop: &v5::Hop<'_>,
    ) {
        let mut written = self.publishes_to(conn);
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        written.encode(connection, &mut self.outbox_pool, publish, hop);
        self.publishes_written(conn, &written);
    }

    /// Accounts for PUBLISHes just appended to `conn`'s outbox, and asks for a flush.
    pub(super) fn publishes_written(&mut self, conn: ConnId, written: &PublishesWritten) {
        if written.bytes == 0 {
            return;
        }
        self.settings.memory.add(written.bytes);
        for (qos, count) in written.by_qos.iter().enumerate() {
            self.stats.publish_sent += count;
            self.stats.packets_sent += count;
            self.stats.publish_sent_by_qos[qos] += count;
        }
        self.request_flush(conn);
    }
}
