//! The retained-message store of one shard (every shard keeps a full copy; updates arrive by broadcast).
//!
//! A retained PUBLISH with a payload replaces the topic's message; one with an empty payload deletes it
//! [MQTT-3.3.1-10/11]. A new subscription reads the messages matching its filter from here.
//! Payloads are shared `Bytes`, so the copies on other shards cost no payload memory.
//!
//! Shards apply each other's updates in whatever order the bus brings them, so every update carries
//! a [`RetainVersion`] (a Lamport clock and the shard that made it) and the newest version wins:
//! two clients retaining on one topic at once, on two shards, leave every shard with the same
//! message. A deletion leaves a short-lived tombstone with its version, so an older update still on
//! its way cannot bring the message back; tombstones are dropped after a time to live
//! (`Settings::retained_tombstone_ttl`, [`TOMBSTONE_TTL`] by default), far longer than any message
//! stays on the bus. Nothing here reads a clock: time comes in as arguments.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{TopicFilter, TopicName};

use super::Message;

/// How long a deletion is remembered by default (see the module docs).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Orders the retained updates of one topic across shards: a Lamport clock, then the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct RetainVersion {
    pub clock: u64,
    pub shard: u32,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: HashMap<TopicName, (Message, RetainVersion)>,
    /// Deleted topics and the version of their deletion.
    tombstones: HashMap<TopicName, RetainVersion>,
    /// Tombstones in the order they were made, with when (unknown before the shard's first
    /// event with a time: then the next `drop_old_tombstones` stamps them): oldest dropped first.
    tombstone_times: VecDeque<(Option<Instant>, TopicName, RetainVersion)>,
    payload_bytes: usize,
    /// How many of `messages` have a topic starting with `$` (the broker's `$SYS` tree).
    dollar: usize,
    /// The highest clock seen, so that this shard's next update is newer than every one it has seen.
    clock: u64,
}

impl RetainedStore {
    /// The version for a retained update made on `shard` now.
    pub fn next_version(&mut self, shard: usize) -> RetainVersion {
        self.clock += 1;
        RetainVersion {
            clock: self.clock,
            shard: shard as u32,
        }
    }

    /// Applies a retained PUBLISH made under `version`: store or, with an empty payload, delete;
    /// nothing when the topic already holds a newer update. `now` stamps a deletion's tombstone.
    pub fn apply(&mut self, message: &Message, version: RetainVersion, now: Option<Instant>) {
        self.clock = self.clock.max(version.clock);
        let current = self
            .messages
            .get(&message.topic)
            .map(|(_, v)| *v)
            .or_else(|| self.tombstones.get(&message.topic).copied());
        if current.is_some_and(|v| v >= version) {
            return;
        }
        let old = if message.payload.is_empty() {
            self.tombstones.insert(message.topic.clone(), version);
            self.tombstone_times
                .push_back((now, message.topic.clone(), version));
            self.messages.remove(&message.topic)
        } else {
            self.tombstones.remove(&message.topic);
            self.payload_bytes += message.payload.len();
            self.messages
                .insert(message.topic.clone(), (message.clone(), version))
        };
        let stored = !message.payload.is_empty();
        if message.topic.as_str().starts_with('$') {
            match (stored, old.is_some()) {
                (true, false) => self.dollar += 1,
                (false, true) => self.dollar -= 1,
                _ => {}
            }
        }
        if let Some((old, _)) = old {
            self.payload_bytes -= old.payload.len();
        }
    }

    /// Forgets deletions older than `ttl`.
    pub fn drop_old_tombstones(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _, _)) = self.tombstone_times.front_mut() {
            let Some(at) = at else {
                *at = Some(now);
                continue;
            };
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            let Some((_, topic, version)) = self.tombstone_times.pop_front() else {
                break;
            };
            // Only if no later update (or deletion) of the topic replaced this one.
            if self.tombstones.get(&topic) == Some(&version) {
                self.tombstones.remove(&topic);
            }
        }
    }

    /// Every retained message and remembered deletion (`None`), with its version, for a snapshot.
    pub fn entries(&self) -> impl Iterator<Item = (&TopicName, Option<&Message>, RetainVersion)> {
        let stored = self
            .messages
            .iter()
            .map(|(topic, (message, version))| (topic, Some(message), *version));
        let deleted = self
            .tombstones
            .iter()
            .map(|(topic, version)| (topic, None, *version));
        stored.chain(deleted)
    }

    /// Deletions still remembered.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
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
                .filter(|(m, _)| filter.matches(&m.topic))
                .map(|(m, _)| m.clone())
                .collect()
        } else {
            TopicName::new(filter.as_str())
                .ok()
                .and_then(|t| self.messages.get(&t))
                .map(|(m, _)| m.clone())
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

    /// Applies as a local update would be.
    fn put(store: &mut RetainedStore, m: &Message) {
        let v = store.next_version(0);
        store.apply(m, v, Some(Instant::now()));
    }

    fn msg(topic: &str, payload: &'static str) -> Message {
        Message {
            topic: TopicName::new(topic).expect("topic"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
        }
    }

    #[test]
    fn store_replace_delete() {
        let mut store = RetainedStore::default();
        put(&mut store, &msg("a/b", "one"));
        put(&mut store, &msg("a/b", "three"));
        put(&mut store, &msg("a/c", "x"));
        assert_eq!(store.len(), 2);
        assert_eq!(store.payload_bytes(), 6);
        let f = TopicFilter::new("a/b").expect("filter");
        assert_eq!(store.matching(&f)[0].payload, Bytes::from_static(b"three"));
        put(&mut store, &msg("a/b", ""));
        assert!(store.matching(&f).is_empty());
        assert_eq!(store.payload_bytes(), 1);
        put(&mut store, &msg("nothing/here", ""));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn wildcard_lookup_respects_dollar_rule() {
        let mut store = RetainedStore::default();
        put(&mut store, &msg("$SYS/x", "1"));
        put(&mut store, &msg("a/b", "2"));
        put(&mut store, &msg("a/c", "3"));
        let all = store.matching(&TopicFilter::new("#").expect("filter"));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].topic.as_str(), "a/b");
        let sys = store.matching(&TopicFilter::new("$SYS/#").expect("filter"));
        assert_eq!(sys.len(), 1);
    }

    #[test]
    fn newest_version_wins_whatever_the_order() {
        let now = Some(Instant::now());
        let v = |clock, shard| RetainVersion { clock, shard };
        let f = TopicFilter::new("t").expect("filter");
        let mut a = RetainedStore::default();
        let mut b = RetainedStore::default();
        a.apply(&msg("t", "old"), v(1, 0), now);
        a.apply(&msg("t", "new"), v(1, 1), now);
        b.apply(&msg("t", "new"), v(1, 1), now);
        b.apply(&msg("t", "old"), v(1, 0), now);
        assert_eq!(a.matching(&f)[0].payload, Bytes::from_static(b"new"));
        assert_eq!(b.matching(&f)[0].payload, Bytes::from_static(b"new"));
        assert_eq!(b.payload_bytes(), 3);
        // Seen versions push the clock: the next local update is newer than all of them.
        assert!(b.next_version(0) > v(1, 1));
    }

    #[test]
    fn a_deletion_is_not_undone_by_an_older_update_until_its_tombstone_expires() {
        let start = Instant::now();
        let now = Some(start);
        let v = |clock| RetainVersion { clock, shard: 0 };
        let f = TopicFilter::new("t").expect("filter");
        let mut store = RetainedStore::default();
        store.apply(&msg("t", ""), v(5), now);
        store.apply(&msg("t", "stale"), v(4), now);
        assert!(store.matching(&f).is_empty());
        assert_eq!(store.tombstone_count(), 1);
        store.drop_old_tombstones(start + TOMBSTONE_TTL / 2, TOMBSTONE_TTL);
        assert_eq!(store.tombstone_count(), 1);
        store.drop_old_tombstones(start + TOMBSTONE_TTL, TOMBSTONE_TTL);
        assert_eq!(store.tombstone_count(), 0);
        store.apply(&msg("t", "fresh"), v(6), now);
        assert_eq!(store.matching(&f).len(), 1);
    }
}
