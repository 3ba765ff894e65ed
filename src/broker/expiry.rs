//! Session expiry (`session_expiry_interval`): a persistent session whose client stays away longer
//! than its [`Session::expiry_interval`] is discarded with its queue, as a clean-session CONNECT
//! discards one (`remove_session`), counted (`sessions_expired`) and logged at debug.
//!
//! Offline sessions that can expire are filed in [`ExpiryIndex`], ordered by deadline, so that the
//! tick pops the due ones and never looks at the others (with 100,000 offline sessions and none
//! due, the expiry pass took 1–2 µs: `tick_with_100k_offline_sessions` in `tests/expiry.rs`). The session itself holds
//! when its client left ([`Session::offline_since`]): the verbs here keep the two in step, and
//! nothing else may change either while the session is filed.
//!
//! The time a session goes offline is the core's latest `now` (every read and every tick bring
//! one; the runtime ticks 4 times a second), so it may count from up to one tick early.

use std::collections::BTreeSet;
use std::time::Instant;

use super::session::Session;
use super::{BrokerCore, SessionKey};

/// Sessions discarded in one tick at most; the rest wait for the next ticks (4 a second). A burst
/// (the sessions of a restart, or of a network outage, expiring together) would stall the shard's
/// every client: 100k at once took 35 ms; capped, the longest of the 10 ticks took 7–11 ms
/// (`tick_with_100k_offline_sessions`, on this 2-CPU VM under a load of 7).
const MAX_EXPIRED_PER_TICK: usize = 10_000;

/// Offline sessions that expire, by (deadline, key); the deadline is the session's
/// [`Session::expires_at`] when it was filed.
#[derive(Debug, Default)]
pub(super) struct ExpiryIndex(BTreeSet<(Instant, SessionKey)>);

impl ExpiryIndex {
    fn file(&mut self, key: SessionKey, session: &Session) {
        if let Some(deadline) = session.expires_at() {
            self.0.insert((deadline, key));
        }
    }

    fn unfile(&mut self, key: SessionKey, session: &Session) {
        if let Some(deadline) = session.expires_at() {
            self.0.remove(&(deadline, key));
        }
    }

    /// The first session due at `now`, taken out of the index.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, SessionKey)> {
        let &(deadline, _) = self.0.first()?;
        if deadline > now {
            return None;
        }
        self.0.pop_first()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

impl BrokerCore {
    /// Sets when a persistent session's client went away, and files it for expiry; `None`
    /// forgets it (the client is back). For recovery, which knows the offline time from a
    /// wall-clock stamp (`now.checked_sub(time offline)`); the core stamps a connection's close
    /// itself. A session whose client is online is not stamped. Set the session's
    /// [`Session::expiry_interval`] first (a CONNECT sets it; a recovered session needs the
    /// broker's `Settings::session_expiry_interval`): a session without one never expires.
    pub fn set_offline_since(&mut self, key: SessionKey, since: Option<Instant>) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let since = since.filter(|_| !session.is_online());
        self.expiring.unfile(key, session);
        session.set_offline_since(since);
        self.expiring.file(key, session);
    }

    /// A persistent session's client left (its connection closed): expiry starts counting.
    pub(super) fn session_went_offline(&mut self, key: SessionKey) {
        let since = self.clock;
        self.set_offline_since(key, since);
    }

    /// Takes a session out of the expiry index before it is removed.
    pub(super) fn forget_expiry(&mut self, key: SessionKey) {
        if let Some(session) = self.sessions.get(key) {
            self.expiring.unfile(key, session);
        }
    }

    /// Discards the sessions whose client has been away longer than their interval, at most
    /// [`MAX_EXPIRED_PER_TICK`], the longest-due first.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        for _ in 0..MAX_EXPIRED_PER_TICK {
            let Some((deadline, key)) = self.expiring.pop_due(now) else {
                return;
            };
            let Some(session) = self.sessions.get(key) else {
                continue;
            };
            if session.is_online() || session.expires_at() != Some(deadline) {
                debug_assert!(false, "session {key} filed under a stale deadline");
                continue;
            }
            log::debug!(
                "session of '{}' expired on shard {} (offline for {:?})",
                session.client_id,
                self.shard,
                session
                    .offline_since()
                    .map(|since| now.saturating_duration_since(since))
                    .unwrap_or_default()
            );
            self.stats.sessions_expired += 1;
            self.remove_session(key);
        }
    }

    /// Discards the session of `client_id` if its expiry has come by `now` (a CONNECT for it came
    /// before the tick that would have discarded it).
    pub(super) fn expire_if_due(&mut self, client_id: &str, now: Instant) {
        let Some(&key) = self.session_by_client_id.get(client_id) else {
            return;
        };
        let due = self.sessions.get(key).and_then(Session::expires_at);
        if due.is_some_and(|at| at <= now) {
            self.stats.sessions_expired += 1;
            self.remove_session(key);
        }
    }

    /// Offline sessions waiting to expire on this shard.
    pub fn expiring_session_count(&self) -> usize {
        self.expiring.len()
    }
}
