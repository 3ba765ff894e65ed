//! What the host program does with a running broker (aMQTT's `BrokerContext`): publish
//! ([`BrokerHandle::publish`], aMQTT's `broadcast_message`), set and delete retained messages
//! ([`BrokerHandle::retain_message`], [`BrokerHandle::delete_retained`]), and list sessions,
//! subscriptions and retained topics, gathered from every shard.
//!
//! The host side: it sends a `HostRequest` (`host_request.rs`, which also has the shard side) into
//! a shard's inbox over the bus (the same inboxes other shards and the control shard write to) and
//! waits for the answer on a channel of its own (`host_client.rs`, which the admin API uses too). No second routing path: a host publish is routed
//! by the core exactly like a client's.
//!
//! Blocking: every method here blocks the calling thread until the shard has answered (a round
//! trip through the shard's loop: microseconds when it is idle, one loop turn when busy; at most
//! [`super::ANSWER_WITHIN`]). Call them from the host's own threads, never from a shard thread (an event
//! plugin's hook): a shard waiting for itself would time out.

use bytes::Bytes;

use crate::broker::{RetainedInfo, SessionInfo};
use crate::protocol::QoS;

use super::facade::BrokerHandle;
use super::host_client::{HostClient, HostError};

/// One subscription, as [`BrokerHandle::subscriptions`] lists it (aMQTT's `subscriptions`: filter,
/// session, QoS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The topic filter, wildcards included.
    pub filter: String,
    /// The session that holds it.
    pub client_id: String,
    /// The granted QoS.
    pub qos: QoS,
}

impl BrokerHandle {
    /// The same requests, for a thread of the broker's own (the admin API's).
    fn host(&self) -> HostClient {
        HostClient {
            bus: self.bus.clone(),
            shards: self.shards(),
        }
    }

    /// Publishes `payload` on `topic` as if a client had: delivered to the matching subscribers
    /// on every shard at the lower of `qos` and their granted QoS, queued for offline persistent
    /// sessions (and journaled with persistence on), and stored as the topic's retained message
    /// when `retain` is true (an empty payload then deletes it). aMQTT's `broadcast_message`.
    ///
    /// Returns once *accepted*: the shard that routes host messages has routed it (the retained
    /// store updated, its own subscribers served or queued, the other shards' copies on their way
    /// in order behind everything that shard sent them before). It does not wait for subscribers
    /// to receive it, nor for the journal's `fsync`. Blocks the calling thread meanwhile (see the
    /// module docs); topic checks and `message_received` do not apply (no client sent it).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), HostError> {
        self.host().publish(topic, payload.into(), qos, retain)
    }

    /// Sets `topic`'s retained message (aMQTT's `retain_message`): published retained, so current
    /// subscribers get it too, as MQTT does for a retained PUBLISH. An empty payload deletes it
    /// (see [`delete_retained`](Self::delete_retained)). Blocks like [`publish`](Self::publish).
    pub fn retain_message(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<(), HostError> {
        self.publish(topic, payload, qos, true)
    }

    /// Deletes `topic`'s retained message, if any: a retained publish with an empty payload
    /// [MQTT-3.3.1-10], which current subscribers receive (empty) as they would from a client.
    pub fn delete_retained(&self, topic: &str) -> Result<(), HostError> {
        self.publish(topic, Bytes::new(), QoS::AtMostOnce, true)
    }

    /// Every session of every shard (connected or not), by client id. Each shard answers a page
    /// of its session table at a time, so a shard with a million sessions is never held up for
    /// more than a fraction of a millisecond; the listing is therefore not one instant's snapshot
    /// (a session made or removed meanwhile may be missing). Blocks until every shard answered.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, HostError> {
        self.host().sessions()
    }

    /// Every subscription of every session, by filter then client id (from [`sessions`](Self::sessions)).
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, HostError> {
        let mut subscriptions: Vec<SubscriptionInfo> = self
            .sessions()?
            .into_iter()
            .flat_map(|session| {
                let client_id = session.client_id;
                session
                    .subscriptions
                    .into_iter()
                    .map(move |(filter, qos)| SubscriptionInfo {
                        filter,
                        client_id: client_id.clone(),
                        qos,
                    })
            })
            .collect();
        subscriptions.sort_by(|a, b| (&a.filter, &a.client_id).cmp(&(&b.filter, &b.client_id)));
        Ok(subscriptions)
    }

    /// Every retained topic, in topic order (`$SYS` topics included). Every shard holds the whole
    /// store; this reads the copy of the shard that routes host publishes, in one pass of that
    /// shard's loop: 0.13-0.28 µs a topic (measured: 100k topics in 13-28 ms), so a store of
    /// millions of topics holds that shard up for a noticeable time. The sorting happens on the
    /// calling thread. A retained message a client just published on another shard may take a
    /// loop turn to appear.
    pub fn retained_topics(&self) -> Result<Vec<RetainedInfo>, HostError> {
        self.host().retained_topics()
    }
}
