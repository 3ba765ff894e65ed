//! The MQTT 5 parts of CONNECT (`connect.rs` has the rules both versions share): an MQTT 5
//! CONNECT read as the shared [`Connect`] plus its properties, and the CONNACK that tells an
//! MQTT 5 client the broker's limits [MQTT-3.2.2.3].
//!
//! What the CONNACK announces: Maximum QoS when `max_qos` is below 2; Retain Available;
//! Maximum Packet Size (`max_packet_size`, when below the protocol's); Wildcard and Shared Subscription Available;
//! Subscription Identifiers Available 0 (not supported yet); Topic Alias Maximum
//! ([`mqtt5::TOPIC_ALIAS_MAXIMUM`]: the client→server aliases `publish.rs` resolves); the Session Expiry Interval when the broker's
//! `session_expiry_interval` cut the client's; the Assigned Client Identifier when the client
//! sent none.

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

impl BrokerCore {
    /// The CONNACK accepting an MQTT 5 CONNECT with `asked` properties. `assigned`: the client id
    /// the broker made up; `expiry`: the session's expiry (`None`: for ever) when it outlives the
    /// connection.
    pub(super) fn connack_v5(
        &self,
        session_present: bool,
        asked: &Properties,
        assigned: Option<&str>,
        expiry: Option<Option<Duration>>,
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
            ..Properties::default()
        };
        v5::Packet::ConnAck(v5::ConnAck {
            session_present,
            reason: ReasonCode::SUCCESS,
            properties,
        })
    }
}
