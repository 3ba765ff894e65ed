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
//! stays on the bus.
//!
//! An MQTT 5 message with a Message Expiry Interval expires that long after it reached this shard
//! [MQTT-3.3.2-5]: a new subscription no longer gets it, and `drop_expired` forgets it (as a
//! deletion of its version: an older update still on its way does not bring it back). Nothing
//! here reads a clock: time comes in as arguments.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{TopicFilter, TopicName};

use super::copy_props;
use super::Message;

/// How long a deletion is remembered by default (see the module docs).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Orders the retained updates of one topic across shards: a Lamport clock, then the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct RetainVersion {
    pub clock: u64,
    pub shard: u32,
}

/// A retained message as the store keeps it.
#[derive(Debug)]
struct Retained {
    message: Message,
    version: RetainVersion,
    /// When it expires (MQTT 5's Message Expiry Interval); `None`: never.
    expires_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: HashMap<TopicName, Retained>,
    /// The messages that expire, by when (an entry whose message was replaced since is skipped).
    expiring: BTreeSet<(Instant, TopicName)>,
    /// Messages with an expiry stored before the shard knew the time: `drop_expired` starts
    /// their expiry.
    unstamped: Vec<TopicName>,
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
    /// nothing when the topic already holds a newer update. `now` stamps a deletion's tombstone
    /// and starts a stored message's expiry.
    pub fn apply(&mut self, message: &Message, version: RetainVersion, now: Option<Instant>) {
        self.clock = self.clock.max(version.clock);
        let current = self
            .messages
            .get(&message.topic)
            .map(|r| r.version)
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
            let expires_at = copy_props::expires_at(message, now);
            if let Some(at) = expires_at {
                self.expiring.insert((at, message.topic.clone()));
            } else if copy_props::interval(message).is_some() {
                self.unstamped.push(message.topic.clone());
            }
            let stored = Retained {
                message: message.clone(),
                version,
                expires_at,
            };
            self.messages.insert(message.topic.clone(), stored)
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
            self.payload_bytes -= old.message.payload.len();
        }
    }

    /// Sets when the message of `topic` stored under `version` expires: a recovered one keeps
    /// the deadline it was journaled with, to the millisecond, however often the broker restarts
    /// (re-stamped in whole seconds rounded up, it lived up to a second longer per restart).
    pub fn set_expiry(&mut self, topic: &TopicName, version: RetainVersion, at: Instant) {
        let Some(stored) = self
            .messages
            .get_mut(topic)
            .filter(|r| r.version == version)
        else {
            return;
        };
        // The entry filed by `apply` no longer matches: `drop_expired` skips it.
        stored.expires_at = Some(at);
        self.expiring.insert((at, topic.clone()));
        self.unstamped.retain(|t| t != topic);
    }

    /// Forgets the messages whose expiry has come by `now`, each as a deletion of its version.
    pub fn drop_expired(&mut self, now: Instant) {
        for topic in std::mem::take(&mut self.unstamped) {
            let Some(stored) = self.messages.get_mut(&topic) else {
                continue;
            };
            if stored.expires_at.is_none() {
                stored.expires_at = copy_props::expires_at(&stored.message, Some(now));
                if let Some(at) = stored.expires_at {
                    self.expiring.insert((at, topic));
                }
            }
        }
        while let Some((at, _)) = self.expiring.first() {
            if *at > now {
                break;
            }
            let Some((at, topic)) = self.expiring.pop_first() else {
                break;
            };
            if self.messages.get(&topic).map(|r| r.expires_at) != Some(Some(at)) {
                continue; // replaced or deleted since
            }
            let Some(stored) = self.messages.remove(&topic) else {
                continue;
            };
            self.payload_bytes -= stored.message.payload.len();
            if topic.as_str().starts_with('$') {
                self.dollar -= 1;
            }
            self.tombstones.insert(topic.clone(), stored.version);
            self.tombstone_times
                .push_back((Some(now), topic, stored.version));
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
            .map(|(topic, r)| (topic, Some(&r.message), r.version));
        let deleted = self
            .tombstones
            .iter()
            .map(|(topic, version)| (topic, None, *version));
        stored.chain(deleted)
    }

    /// When the retained message of `topic` expires (`None`: never, or no message).
    pub fn expires_at(&self, topic: &TopicName) -> Option<Instant> {
        self.messages.get(topic)?.expires_at
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

    /// The retained messages whose topic matches `filter`, in topic order (deterministic), that
    /// have not expired by `now`, each with what is left of its Message Expiry Interval
    /// [MQTT-3.3.2-6] (`now` unknown: all of them, as stored).
    pub fn matching(&self, filter: &TopicFilter, now: Option<Instant>) -> Vec<Message> {
        let wildcard = filter.as_str().contains(['+', '#']);
        let live =
            |r: &&Retained| !matches!((r.expires_at, now), (Some(at), Some(now)) if now >= at);
        let mut found: Vec<&Retained> = if wildcard {
            self.messages
                .values()
                .filter(|r| filter.matches(&r.message.topic))
                .filter(live)
                .collect()
        } else {
            TopicName::new(filter.as_str())
                .ok()
                .and_then(|t| self.messages.get(&t))
                .filter(live)
                .into_iter()
                .collect()
        };
        found.sort_by(|a, b| a.message.topic.as_str().cmp(b.message.topic.as_str()));
        found
            .into_iter()
            .map(|r| copy_props::with_interval_left(r.message.clone(), r.expires_at, now))
            .collect()
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
        assert_eq!(
            store.matching(&f, None)[0].payload,
            Bytes::from_static(b"three")
        );
        put(&mut store, &msg("a/b", ""));
        assert!(store.matching(&f, None).is_empty());
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
        let all = store.matching(&TopicFilter::new("#").expect("filter"), None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].topic.as_str(), "a/b");
        let sys = store.matching(&TopicFilter::new("$SYS/#").expect("filter"), None);
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
        assert_eq!(a.matching(&f, None)[0].payload, Bytes::from_static(b"new"));
        assert_eq!(b.matching(&f, None)[0].payload, Bytes::from_static(b"new"));
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
        assert!(store.matching(&f, None).is_empty());
        assert_eq!(store.tombstone_count(), 1);
        store.drop_old_tombstones(start + TOMBSTONE_TTL / 2, TOMBSTONE_TTL);
        assert_eq!(store.tombstone_count(), 1);
        store.drop_old_tombstones(start + TOMBSTONE_TTL, TOMBSTONE_TTL);
        assert_eq!(store.tombstone_count(), 0);
        store.apply(&msg("t", "fresh"), v(6), now);
        assert_eq!(store.matching(&f, None).len(), 1);
    }

    #[test]
    fn an_expired_message_is_not_matched_and_is_dropped_as_a_deletion() {
        let t0 = Instant::now();
        let expiring = |topic, seconds| Message {
            properties: Some(std::sync::Arc::new(crate::protocol::v5::Properties {
                message_expiry_interval: Some(seconds),
                ..crate::protocol::v5::Properties::default()
            })),
            ..msg(topic, "x")
        };
        let mut store = RetainedStore::default();
        let v = |clock| RetainVersion { clock, shard: 0 };
        store.apply(&expiring("a/short", 1), v(1), Some(t0));
        store.apply(&expiring("a/long", 60), v(2), Some(t0));
        store.apply(&msg("a/never", "y"), v(3), Some(t0));
        let all = TopicFilter::new("a/#").expect("filter");
        let later = t0 + Duration::from_secs(2);
        let found = store.matching(&all, Some(later));
        let topics: Vec<&str> = found.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["a/long", "a/never"]);
        let left = found[0]
            .properties
            .as_deref()
            .and_then(|p| p.message_expiry_interval);
        assert_eq!(left, Some(58));
        assert_eq!(store.len(), 3, "matching drops nothing");
        store.drop_expired(later);
        assert_eq!(store.len(), 2);
        assert_eq!(store.payload_bytes(), 2);
        // Its version is remembered: an older update still on the bus does not bring it back.
        store.apply(&expiring("a/short", 60), v(1), Some(later));
        assert_eq!(store.len(), 2);
        // A message replaced before its expiry is not dropped by the old deadline.
        store.apply(&msg("a/long", "z"), v(4), Some(later));
        store.drop_expired(t0 + Duration::from_secs(120));
        assert_eq!(store.len(), 2);
    }
}
