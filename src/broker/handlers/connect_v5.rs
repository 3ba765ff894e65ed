//! The MQTT 5 parts of CONNECT (`connect.rs` has the rules both versions share): an MQTT 5
//! CONNECT read as the shared [`Connect`] plus its properties, and the CONNACK that tells an
//! MQTT 5 client the broker's limits [MQTT-3.2.2.3].
//!
//! What the CONNACK announces: Maximum QoS when `max_qos` is below 2; Retain Available;
//! Maximum Packet Size (`max_packet_size`, when below the protocol's); Wildcard and Shared Subscription Available;
//! Subscription Identifiers Available 0 (not supported yet); Topic Alias Maximum
//! ([`mqtt5::TOPIC_ALIAS_MAXIMUM`]: the client→server aliases `publish.rs` resolves); the Session Expiry Interval when the broker's
//! `session_expiry_interval` cut the client's; the Assigned Client Identifier when the client
//! sent none; Receive Maximum (`receive_maximum`, when below 65,535); Server Keep Alive when
//! `max_keepalive` changed the client's ([`granted_keep_alive`]).
//!
//! Request Response Information: the broker sends no Response Information (the spec lets a
//! server send none [MQTT-3.1.2-28]); response topics are the applications' to agree on.

use std::time::Duration;

use crate::broker::{mqtt5, BrokerCore};
use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{Connect, ProtocolLevel, QoS, PROTOCOL_MAX_PACKET_SIZE};

/// The largest Maximum Packet Size clients accept in a CONNACK.
const MAX_PROPERTY: u32 = 268_435_455;

/// An MQTT 5 CONNECT as the shared CONNECT (the will's properties go into its message) and the
/// CONNECT properties.
///
/// The will's Will Delay Interval, a will property, goes into the CONNECT properties (where no
/// CONNECT has one) for [`mqtt5::V5Link::new`]: the shared will message does not carry it.
pub(super) fn from_v5(mut connect: v5::Connect) -> (Box<Connect>, Option<Box<Properties>>) {
    connect.properties.will_delay_interval = connect
        .will
        .as_ref()
        .and_then(|will| will.properties.will_delay_interval);
    let will = connect.will.map(|will| crate::protocol::Message {
        properties: mqtt5::message_properties(will.properties),
        ..will.message
    });
    let shared = Connect {
        protocol: ProtocolLevel::V5,
        clean_session: connect.clean_start,
        keep_alive: connect.keep_alive,
        client_id: connect.client_id,
        will,
        username: connect.username,
        password: connect.password,
    };
    (Box::new(shared), Some(Box::new(connect.properties)))
}

/// The keep-alive a connection gets for the `asked` one, under `max_keepalive` `max` (`None`: no
/// limit), as Mosquitto's `max_keepalive` decides: asked for more than `max`, or for none (0), an
/// MQTT 5 client gets `max` (told in the CONNACK's Server Keep Alive, which it must use
/// [MQTT-3.2.2-21]); an MQTT 3 client, which cannot be told, is refused (`None`: CONNACK 0x02).
pub(super) fn granted_keep_alive(asked: u16, max: Option<u16>, v5: bool) -> Option<u16> {
    match max {
        Some(max) if asked > max || asked == 0 => v5.then_some(max),
        _ => Some(asked),
    }
}

impl BrokerCore {
    /// The CONNACK accepting an MQTT 5 CONNECT with `asked` properties. `assigned`: the client id
    /// the broker made up; `expiry`: the session's expiry (`None`: for ever) when it outlives the
    /// connection; `keep_alive`: the one the broker keeps when it differs from the CONNECT's.
    pub(super) fn connack_v5(
        &self,
        session_present: bool,
        asked: &Properties,
        assigned: Option<&str>,
        expiry: Option<Option<Duration>>,
        keep_alive: Option<u16>,
    ) -> v5::Packet {
        let settings = &self.settings;
        let asked_expiry = asked.session_expiry_interval.unwrap_or(0);
        let granted_expiry = expiry.map_or(0, mqtt5::expiry_seconds);
        let properties = Properties {
            maximum_qos: (settings.max_qos < QoS::ExactlyOnce).then_some(settings.max_qos),
            retain_available: Some(true),
            // Absent: the protocol's limit. (Clients check the value against the largest
            // remaining length, 268,435,455.)
            maximum_packet_size: (settings.max_packet_size < PROTOCOL_MAX_PACKET_SIZE)
                .then(|| u32::try_from(settings.max_packet_size).unwrap_or(MAX_PROPERTY)),
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(true),
            shared_subscription_available: Some(true),
            topic_alias_maximum: Some(mqtt5::TOPIC_ALIAS_MAXIMUM),
            session_expiry_interval: (granted_expiry != asked_expiry).then_some(granted_expiry),
            assigned_client_identifier: assigned.map(str::to_string),
            // Absent: 65,535, the protocol's [MQTT-3.2.2.3.3].
            receive_maximum: (settings.receive_maximum < u16::MAX)
                .then_some(settings.receive_maximum),
            server_keep_alive: keep_alive,
            ..Properties::default()
        };
        v5::Packet::ConnAck(v5::ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        })
    }
}
