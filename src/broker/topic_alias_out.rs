//! Topic Aliases the broker assigns toward an MQTT 5 client [MQTT-3.3.2-*], one table per
//! connection (a new connection starts empty [MQTT-3.3.2-7]).
//!
//! The policy: the first N distinct topic names sent on the connection get aliases 1..N, where N
//! is the smaller of the client's Topic Alias Maximum (from its CONNECT; 0 or absent: no alias
//! ever [MQTT-3.3.2-11]) and [`MAX_ASSIGNED`]. The first PUBLISH to such a
//! topic carries the topic name and its alias, every later one the alias and an empty topic name.
//! Topics after the N-th go with their name and no alias; an alias is never reassigned (no LRU:
//! the clients that allow aliases mostly publish to a few topics, and a fixed table costs one
//! lookup per PUBLISH and no eviction). No configuration key: a client asks for aliases by
//! sending a Topic Alias Maximum, and one that does not gets none.
//!
//! Only the table and its rule live here; `outbox.rs` asks it for each PUBLISH it encodes.

use std::collections::HashMap;

/// The most aliases the broker assigns on one connection, whatever the client allows: bounds the
/// table a client can make the broker keep (a topic name each).
pub const MAX_ASSIGNED: u16 = 64;

/// A connection's outgoing Topic Aliases: topic name → alias.
#[derive(Debug, Default)]
pub struct OutgoingAliases {
    /// The client's Topic Alias Maximum.
    client_max: u16,
    assigned: HashMap<Box<[u8]>, u16>,
}

impl OutgoingAliases {
    /// The table of a connection whose client allows `client_max` aliases.
    pub fn new(client_max: u16) -> Self {
        OutgoingAliases {
            client_max,
            assigned: HashMap::new(),
        }
    }

    /// Whether a PUBLISH to this client may carry an alias.
    pub fn active(&self) -> bool {
        self.client_max > 0
    }

    /// The alias for a PUBLISH to `topic`, and whether the client knows it already (then the topic name is sent empty); `None`: send the
    /// topic name alone. Nothing changes until [`sent`](Self::sent) says the PUBLISH went out.
    pub fn lookup(&self, topic: &[u8]) -> Option<(u16, bool)> {
        if let Some(&alias) = self.assigned.get(topic) {
            return Some((alias, true));
        }
        let next = u16::try_from(self.assigned.len() + 1).ok()?;
        (next <= self.client_max.min(MAX_ASSIGNED)).then_some((next, false))
    }

    /// Notes that a PUBLISH to `topic` carrying `alias` with the topic name was written: from now
    /// on the client knows the alias.
    pub fn sent(&mut self, topic: &[u8], alias: u16) {
        self.assigned.entry(topic.into()).or_insert(alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_topics_get_aliases_up_to_the_smaller_maximum() {
        let mut table = OutgoingAliases::new(2);
        assert!(table.active());
        assert_eq!(table.lookup(b"a"), Some((1, false)));
        // Not sent yet: asked again, the same answer.
        assert_eq!(table.lookup(b"a"), Some((1, false)));
        table.sent(b"a", 1);
        assert_eq!(table.lookup(b"a"), Some((1, true)));
        assert_eq!(table.lookup(b"b"), Some((2, false)));
        table.sent(b"b", 2);
        // The client's maximum is reached: a third topic goes without.
        assert_eq!(table.lookup(b"c"), None);
        assert_eq!(table.lookup(b"b"), Some((2, true)));
        // The broker's cap below the client's maximum.
        let mut capped = OutgoingAliases::new(u16::MAX);
        for alias in 1..=MAX_ASSIGNED {
            let topic = alias.to_string();
            assert_eq!(capped.lookup(topic.as_bytes()), Some((alias, false)));
            capped.sent(topic.as_bytes(), alias);
        }
        assert_eq!(capped.lookup(b"one more"), None);
        assert_eq!(capped.lookup(b"1"), Some((1, true)));
    }

    #[test]
    fn a_client_that_allows_none_gets_none() {
        let table = OutgoingAliases::new(0);
        assert!(!table.active());
        assert_eq!(table.lookup(b"a"), None);
    }
}
