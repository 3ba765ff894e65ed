//! Per-packet log lines, like `mosquitto -v`, for debugging (`log_packets: true`, or `amqtt -d`):
//! `Received PUBLISH from c1 (d0, q1, r0, m1, 'a/b', ... (5 bytes))`, `Sending PUBACK to c1 (m1)`,
//! and every refusal (CONNECT, PUBLISH or SUBSCRIBE) with the client id and user name. Never the
//! password, never the payload.
//!
//! Only formatting lives here. The callers decide: received packets in the one door
//! (`handlers/mod.rs`, and `handlers/connect.rs` for CONNECT), sent ones where packets are encoded
//! into outboxes (`outbox.rs`, `routing.rs`). Each call site is behind one test of the plain
//! `Settings::log_packets` bool, so that with logging off a packet costs one predictable branch:
//! no atomic load of the log level, no formatting, no allocation; the functions here are `#[cold]`
//! and never inlined, so that the hot code around those branches stays as compact as before.

use std::fmt;
use std::sync::Arc;

use crate::protocol::{Connect, Packet, PublishRef, SubscribeReturnCode};

use super::session::Session;
use super::{BrokerCore, ConnId};

/// The `log` target of the packet lines (`RUST_LOG=amqtt::packets=off` silences them).
pub(super) const TARGET: &str = "amqtt::packets";

/// The level of a refusal line: INFO with `log_packets`, DEBUG otherwise (the lines name the
/// client, and refusals are not on the per-message path).
pub(super) fn refusal_level(log_packets: bool) -> log::Level {
    if log_packets {
        log::Level::Info
    } else {
        log::Level::Debug
    }
}

/// Who a connection is in a packet line: its client id, or `connection N` before (or without)
/// an accepted CONNECT.
#[derive(Debug)]
pub(super) struct Who {
    client_id: Option<Arc<str>>,
    conn: ConnId,
}

impl Who {
    /// `session`'s client, on `conn`.
    pub(super) fn of(session: &Session, conn: ConnId) -> Who {
        Who {
            client_id: Some(session.client_id.clone()),
            conn,
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client_id {
            Some(id) => f.write_str(id),
            None => write!(f, "connection {}", self.conn),
        }
    }
}

/// A user name as Mosquitto prints it: ` (u'alice')`, nothing for none.
pub(super) struct User<'a>(pub Option<&'a str>);

impl fmt::Display for User<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, " (u'{name}')"),
            None => f.write_str(" (no user name)"),
        }
    }
}

/// A PUBLISH's header fields as Mosquitto prints them; the payload only as its length.
struct PublishFields<'a>(&'a PublishRef<'a>);

impl fmt::Display for PublishFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(
            f,
            "d{}, q{}, r{}, m{}, '{}', ... ({} bytes)",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id.unwrap_or(0),
            String::from_utf8_lossy(p.topic),
            p.payload.len()
        )
    }
}

impl BrokerCore {
    pub(super) fn who(&self, conn: ConnId) -> Who {
        Who {
            client_id: self.client_id_of(conn),
            conn,
        }
    }

    /// `Received CONNECT from c1 (p4, c1, k60, u'alice')`.
    #[cold]
    #[inline(never)]
    pub(super) fn log_connect(&self, connect: &Connect) {
        let user = match &connect.username {
            Some(name) => format!(", u'{name}'"),
            None => String::new(),
        };
        log::info!(
            target: TARGET,
            "Received CONNECT from {} (p{}, c{}, k{}{user})",
            connect.client_id,
            connect.protocol as u8,
            u8::from(connect.clean_session),
            connect.keep_alive
        );
    }

    /// A packet decoded from `conn` (SUBSCRIBE with one line per filter).
    #[cold]
    #[inline(never)]
    pub(super) fn log_received(&self, conn: ConnId, packet: &Packet) {
        let who = self.who(conn);
        match packet {
            Packet::Publish(publish) => self.log_received_publish(conn, &publish.borrowed()),
            Packet::Subscribe(subscribe) => {
                log::info!(target: TARGET, "Received SUBSCRIBE from {who}");
                for request in &subscribe.filters {
                    log::info!(
                        target: TARGET,
                        "    {} (QoS {})",
                        request.filter.as_str(),
                        request.qos as u8
                    );
                }
            }
            Packet::Unsubscribe(unsubscribe) => {
                log::info!(target: TARGET, "Received UNSUBSCRIBE from {who}");
                for filter in &unsubscribe.filters {
                    log::info!(target: TARGET, "    {}", filter.as_str());
                }
            }
            other => log::info!(
                target: TARGET,
                "Received {} from {who}{}",
                other.name(),
                PacketId(other)
            ),
        }
    }

    /// A PUBLISH from `conn`, decoded or read in place (QoS 0 routed from the read buffer).
    #[cold]
    #[inline(never)]
    pub(super) fn log_received_publish(&self, conn: ConnId, publish: &PublishRef<'_>) {
        log::info!(
            target: TARGET,
            "Received PUBLISH from {} ({})",
            self.who(conn),
            PublishFields(publish)
        );
    }

    /// A packet other than PUBLISH encoded into `conn`'s outbox.
    #[cold]
    #[inline(never)]
    pub(super) fn log_sending(&self, conn: ConnId, packet: &Packet) {
        let who = self.who(conn);
        match packet {
            Packet::ConnAck(ack) => log::info!(
                target: TARGET,
                "Sending CONNACK to {who} ({}, {})",
                u8::from(ack.session_present),
                ack.code as u8
            ),
            Packet::SubAck(ack) => {
                let codes: Vec<String> = ack
                    .return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReturnCode::Success(qos) => (*qos as u8).to_string(),
                        SubscribeReturnCode::Failure => "128".to_string(),
                    })
                    .collect();
                log::info!(
                    target: TARGET,
                    "Sending SUBACK to {who} (m{}, [{}])",
                    ack.packet_id,
                    codes.join(", ")
                );
            }
            other => log::info!(
                target: TARGET,
                "Sending {} to {who}{}",
                other.name(),
                PacketId(other)
            ),
        }
    }

    /// A PUBLISH encoded into the outbox of `who`.
    #[cold]
    #[inline(never)]
    pub(super) fn log_sending_publish(who: &Who, publish: &PublishRef<'_>) {
        log::info!(
            target: TARGET,
            "Sending PUBLISH to {who} ({})",
            PublishFields(publish)
        );
    }
}

/// ` (m7)` for a packet with a packet id, nothing for the others.
struct PacketId<'a>(&'a Packet);

impl fmt::Display for PacketId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match self.0 {
            Packet::PubAck(p) => p.packet_id,
            Packet::PubRec(p) => p.packet_id,
            Packet::PubRel(p) => p.packet_id,
            Packet::PubComp(p) => p.packet_id,
            Packet::UnsubAck(p) => p.packet_id,
            _ => return Ok(()),
        };
        write!(f, " (m{id})")
    }
}
