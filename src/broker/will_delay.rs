//! MQTT 5 Will Delay Interval [MQTT-3.1.3-9]: the will of a session that outlives its connection
//! waits here for its delay, and is published when the delay has passed (the tick) or when the
//! session ends if that is sooner (`remove_session`: expiry), and not at all when a new
//! connection to the session comes first (CONNECT cancels it).
//!
//! Only the waiting is here: which closes publish a will is `close`'s, and a session that ends
//! with its connection publishes its will at once. With persistence on, a delayed will stays
//! journaled (`Will` and `WillDelay`, written at CONNECT) until it is published or a CONNECT
//! replaces it: a restart waits for what is left of its delay (`recovery.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{BrokerCore, SessionKey};
use crate::persist::Record;
use crate::protocol::LastWill;

/// Wills waiting for their delay, by session: when each is due.
#[derive(Debug, Default)]
pub(super) struct DelayedWills(BTreeMap<SessionKey, (Instant, Box<LastWill>)>);

impl BrokerCore {
    /// The will of session `key`, whose connection closed, is due `delay` from now.
    pub(super) fn delay_will(&mut self, key: SessionKey, delay: Duration, will: Box<LastWill>) {
        match self.clock.and_then(|now| now.checked_add(delay)) {
            Some(due) => {
                self.delayed_wills.0.insert(key, (due, will));
            }
            None => {
                self.journal_will_gone(key);
                self.publish_will(*will);
            }
        }
    }

    /// The will of session `key` is due at `due` (recovery: the delay counted from a journaled
    /// offline stamp).
    pub(super) fn delay_will_until(&mut self, key: SessionKey, due: Instant, will: Box<LastWill>) {
        self.delayed_wills.0.insert(key, (due, will));
    }

    /// Session `key`'s will waiting for its delay, and when it is due.
    pub(super) fn delayed_will(&self, key: SessionKey) -> Option<(Instant, &LastWill)> {
        let (due, will) = self.delayed_wills.0.get(&key)?;
        Some((*due, will))
    }

    /// A new connection to session `key`: its delayed will, if any, is not published.
    pub(super) fn cancel_delayed_will(&mut self, key: SessionKey) {
        self.delayed_wills.0.remove(&key);
    }

    /// Publishes session `key`'s delayed will, if any, now (it is due, or the session ends).
    pub(super) fn publish_delayed_will(&mut self, key: SessionKey) {
        if let Some((_, will)) = self.delayed_wills.0.remove(&key) {
            self.journal_will_gone(key);
            self.publish_will(*will);
        }
    }

    /// Journals that session `key` (if persistent) no longer has a will waiting: it is published.
    fn journal_will_gone(&mut self, key: SessionKey) {
        if let Some(client_id) = self.persistent_client(key) {
            self.journal(|| Record::Will {
                client_id,
                will: None,
            });
        }
    }

    /// Publishes the delayed wills due at `now`.
    pub(super) fn publish_due_wills(&mut self, now: Instant) {
        if self.delayed_wills.0.is_empty() {
            return;
        }
        let due: Vec<SessionKey> = self
            .delayed_wills
            .0
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            self.publish_delayed_will(key);
        }
    }

    /// Routes a will without its connection (its topic was checked at CONNECT), counted.
    fn publish_will(&mut self, will: LastWill) {
        if Self::client_may_publish_to(will.topic.as_bytes()) {
            self.route(will);
            self.stats.wills_published += 1;
        }
    }
}
