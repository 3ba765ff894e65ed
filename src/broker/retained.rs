//! The retained-message store of one shard (every shard keeps a full copy; updates arrive by broadcast).
//!
//! A retained PUBLISH with a payload replaces the topic's message; one with an empty payload deletes it
//! [MQTT-3.3.1-10/11]. A new subscription reads the messages matching its filter from here.
//! Payloads are shared `Bytes`, so the copies on other shards cost no payload memory.

use std::collections::HashMap;

use crate::protocol::{TopicFilter, TopicName};

use super::Message;

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: HashMap<TopicName, Message>,
    payload_bytes: usize,
    /// How many of `messages` have a topic starting with `$` (the broker's `$SYS` tree).
    dollar: usize,
}

impl RetainedStore {
    /// Applies a retained PUBLISH: store or, with an empty payload, delete.
    pub fn apply(&mut self, message: &Message) {
        let old = if message.payload.is_empty() {
            self.messages.remove(&message.topic)
        } else {
            self.payload_bytes += message.payload.len();
            self.messages.insert(message.topic.clone(), message.clone())
        };
        let stored = !message.payload.is_empty();
        if message.topic.as_str().starts_with('$') {
            match (stored, old.is_some()) {
                (true, false) => self.dollar += 1,
                (false, true) => self.dollar -= 1,
                _ => {}
            }
        }
        if let Some(old) = old {
            self.payload_bytes -= old.payload.len();
        }
    }

    /// Retained messages whose topic starts with `$`.
    pub fn dollar_len(&self) -> usize {
        self.dollar
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// The retained messages whose topic matches `filter`, in topic order (deterministic).
    pub fn matching(&self, filter: &TopicFilter) -> Vec<Message> {
        let wildcard = filter.as_str().contains(['+', '#']);
        let mut found: Vec<Message> = if wildcard {
            self.messages
                .values()
                .filter(|m| filter.matches(&m.topic))
                .cloned()
                .collect()
        } else {
            TopicName::new(filter.as_str())
                .ok()
                .and_then(|t| self.messages.get(&t))
                .cloned()
                .into_iter()
                .collect()
        };
        found.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &'static str) -> Message {
        Message {
            topic: TopicName::new(topic).expect("topic"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    #[test]
    fn store_replace_delete() {
        let mut store = RetainedStore::default();
        store.apply(&msg("a/b", "one"));
        store.apply(&msg("a/b", "three"));
        store.apply(&msg("a/c", "x"));
        assert_eq!(store.len(), 2);
        assert_eq!(store.payload_bytes(), 6);
        let f = TopicFilter::new("a/b").expect("filter");
        assert_eq!(store.matching(&f)[0].payload, Bytes::from_static(b"three"));
        store.apply(&msg("a/b", ""));
        assert!(store.matching(&f).is_empty());
        assert_eq!(store.payload_bytes(), 1);
        store.apply(&msg("nothing/here", ""));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn wildcard_lookup_respects_dollar_rule() {
        let mut store = RetainedStore::default();
        store.apply(&msg("$SYS/x", "1"));
        store.apply(&msg("a/b", "2"));
        store.apply(&msg("a/c", "3"));
        let all = store.matching(&TopicFilter::new("#").expect("filter"));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].topic.as_str(), "a/b");
        let sys = store.matching(&TopicFilter::new("$SYS/#").expect("filter"));
        assert_eq!(sys.len(), 1);
    }
}
