//! What a session holds that its client has not acknowledged receiving: the PUBLISHes and
//! PUBRELs written again when the client resumes the session ([`Resend`]), and the messages a
//! shared subscription's group takes back when the session ends (`broker/shared.rs`). The live
//! delivery rules stay in `session.rs`.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{v5, PubRel, Publish, QoS};

use super::super::copy_props::with_interval_left;
use super::{InflightState, KeptProps, Message, Session};

/// Something to write again after a reconnect.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// With the message's MQTT 5 properties and what its copy carries (expiry, subscription
    /// identifiers).
    Publish(Publish, Option<Arc<v5::Properties>>, Option<Box<KeptProps>>),
    PubRel(PubRel),
}

impl Session {
    /// On reconnect of a persistent session: unacknowledged PUBLISHes again with DUP set, and PUBRELs
    /// for released ones, in their original order [MQTT-4.4.0-1].
    pub fn resend_inflight(&self) -> Vec<Resend> {
        self.flow()
            .inflight
            .iter()
            .map(|m| match m.state {
                InflightState::AwaitPubComp => Resend::PubRel(PubRel {
                    packet_id: m.packet_id,
                }),
                _ => Resend::Publish(
                    Publish {
                        dup: true,
                        qos: m.out.qos,
                        retain: m.out.retain || m.out.message.retain,
                        topic: m.out.message.topic.clone(),
                        packet_id: Some(m.packet_id),
                        payload: m.out.message.payload.clone(),
                    },
                    m.out.message.properties.clone(),
                    m.out.props.clone(),
                ),
            })
            .collect()
    }

    /// The QoS 1/2 messages the client has not acknowledged receiving, oldest first: in flight
    /// awaiting PUBACK or PUBREC, then queued (retained copies sent after a SUBACK excluded: no
    /// group shares them). A message awaiting PUBCOMP was received (PUBREC) and is not listed.
    /// The session keeps them (it is about to be dropped). A copy that expired by `now` is left
    /// out; one that expires later has what is left of its Message Expiry Interval (its next
    /// subscriber must not get the whole interval again).
    pub fn unacknowledged(&self, now: Option<Instant>) -> Vec<Message> {
        let flow = self.flow();
        let inflight = flow
            .inflight
            .iter()
            .filter(|m| m.state != InflightState::AwaitPubComp)
            .map(|m| &m.out);
        let queued = flow.queue.iter();
        inflight
            .chain(queued)
            .filter(|out| !out.retain && out.qos != QoS::AtMostOnce && !out.props().expired(now))
            .map(|out| with_interval_left(out.message.clone(), out.props().expires_at, now))
            .collect()
    }
}
