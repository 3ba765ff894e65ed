//! Matching a topic against this shard's subscriptions: the sessions a message goes to, each once
//! with what its matching subscriptions ask of it (`take_matches`, [`Found`]), cached for the
//! last topic routed ([`LastTopic`]); and whether anyone anywhere subscribes (`anyone_subscribed`,
//! for MQTT 5's 0x10). Methods of [`BrokerCore`] that `routing.rs` and `routing_shards.rs` call;
//! nothing here delivers, encodes or journals.

use std::num::NonZeroU32;

use crate::protocol::{QoS, TopicName};

use super::{BrokerCore, SessionKey};

impl BrokerCore {
    /// This shard's sessions with a subscription that matches `topic`, each once, with the highest
    /// QoS granted among its matching subscriptions, No Local if all of them have it, Retain As
    /// Published if one has it, and whether one has a Subscription Identifier (then
    /// `subscription_ids` lists them). The caller gives the vector back to `last_match`
    /// ([`LastTopic`]).
    pub(super) fn take_matches(&mut self, topic: &[u8]) -> Vec<(SessionKey, Found)> {
        let subscriptions = &self.subscriptions;
        self.last_match.take(topic, |matched| {
            subscriptions.for_each_match(topic, |subscribers| {
                matched.extend(subscribers.iter().map(|s| {
                    let found = Found {
                        qos: s.options.qos,
                        no_local: s.options.no_local,
                        as_published: s.options.retain_as_published,
                        has_ids: s.options.id.is_some(),
                    };
                    (s.session, found)
                }));
            });
            if matched.len() > 1 {
                matched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.qos.cmp(&a.1.qos)));
                matched.dedup_by(|later, kept| {
                    let same = later.0 == kept.0;
                    if same {
                        kept.1.no_local &= later.1.no_local;
                        kept.1.as_published |= later.1.as_published;
                        kept.1.has_ids |= later.1.has_ids;
                    }
                    same
                });
            }
        })
    }

    /// The Subscription Identifiers of session `key`'s subscriptions (not shared ones) that match
    /// `topic`, ascending: what a PUBLISH to it carries [MQTT-3.3.4-3]. Asked only for a session
    /// that [`Found::has_ids`] says has some.
    pub(super) fn subscription_ids(&self, key: SessionKey, topic: &TopicName) -> Vec<u32> {
        let Some(session) = self.sessions.get(key) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = session
            .subscriptions
            .iter()
            .filter(|(filter, _)| !filter.is_shared() && filter.matches(topic))
            .filter_map(|(_, options)| options.id.map(NonZeroU32::get))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether any session on any shard subscribes to `topic`, share groups included (an MQTT 5
    /// acknowledgement says 0x10 No matching subscribers otherwise). The answers are kept for the routing that follows.
    pub(super) fn anyone_subscribed(&mut self, topic: &TopicName) -> bool {
        let topic = topic.as_bytes();
        if self.shared.matches(topic) {
            return true;
        }
        let matched = self.take_matches(topic);
        let local = !matched.is_empty();
        self.last_match.put_back(matched);
        if local {
            return true;
        }
        let remote = self.take_remote_shards(topic);
        let any = !remote.is_empty();
        self.last_remote.put_back(remote);
        any
    }
}

/// What a session's matching subscriptions ask of one message (see `take_matches`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) qos: QoS,
    pub(super) no_local: bool,
    pub(super) as_published: bool,
    /// One of them has a Subscription Identifier (MQTT 5).
    pub(super) has_ids: bool,
}

/// An answer about the last topic routed (its matching sessions, the shards interested in it),
/// reused while messages keep that topic: consecutive messages usually share it (a read brings a
/// publisher's batch). Taken for the time of one delivery and given back, so that the vector's
/// capacity is reused too. The topic is a copy: a slice of the read buffer would keep that buffer
/// from being reused.
#[derive(Debug)]
pub(super) struct LastTopic<T> {
    topic: Option<Vec<u8>>,
    answer: Vec<T>,
}

impl<T> Default for LastTopic<T> {
    fn default() -> Self {
        LastTopic {
            topic: None,
            answer: Vec::new(),
        }
    }
}

impl<T> LastTopic<T> {
    /// The answer for `topic`: the last one if `topic` is the last topic, else what `compute`
    /// puts into an empty vector. Give it back with [`put_back`](Self::put_back).
    pub(super) fn take(&mut self, topic: &[u8], compute: impl FnOnce(&mut Vec<T>)) -> Vec<T> {
        let mut answer = std::mem::take(&mut self.answer);
        if self.topic.as_deref() != Some(topic) {
            answer.clear();
            compute(&mut answer);
            let copy = self.topic.get_or_insert_with(Vec::new);
            copy.clear();
            copy.extend_from_slice(topic);
        }
        answer
    }

    pub(super) fn put_back(&mut self, answer: Vec<T>) {
        self.answer = answer;
    }

    /// What it answered no longer holds: the next `take` computes afresh.
    pub(super) fn forget(&mut self) {
        self.topic = None;
    }
}
