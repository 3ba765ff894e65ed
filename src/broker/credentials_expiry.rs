//! Credentials that expire: a connection allowed until a moment ([`AuthVerdict::AllowedUntil`],
//! e.g. a JSON Web Token's `exp`) is closed when it passes, with `CloseReason::CredentialsExpired`,
//! counted (`credentials_expired`) and logged.
//!
//! The core has no clock: the deadline arrives with the CONNECT, on the clock of the `now` the
//! runtime passes, and the tick (4 a second) closes the connections whose deadline has passed, so
//! up to a quarter of a second late. Only connections with a deadline are filed; without a plugin
//! that sets one the map stays empty and the tick looks at nothing. The tick scans the map only
//! once the earliest deadline is due (`next`, which a closed connection may leave early: the scan
//! then finds nothing and moves it on).
//!
//! [`AuthVerdict::AllowedUntil`]: crate::plugins::AuthVerdict::AllowedUntil

use std::collections::HashMap;
use std::time::Instant;

use super::{BrokerCore, CloseReason, ConnId};

/// The connections with a deadline.
#[derive(Debug, Default)]
pub(super) struct CredentialDeadlines {
    by_conn: HashMap<ConnId, Instant, foldhash::fast::FixedState>,
    /// No deadline is earlier than this (`None`: no connection has one).
    next: Option<Instant>,
}

impl CredentialDeadlines {
    /// Files `conn`'s deadline.
    pub(super) fn file(&mut self, conn: ConnId, until: Instant) {
        self.by_conn.insert(conn, until);
        self.next = Some(self.next.map_or(until, |next| next.min(until)));
    }

    /// Forgets a closed connection.
    pub(super) fn forget(&mut self, conn: ConnId) {
        if !self.by_conn.is_empty() {
            self.by_conn.remove(&conn);
        }
    }

    /// Takes the connections whose deadline has passed at `now` out of the map.
    fn take_due(&mut self, now: Instant) -> Vec<ConnId> {
        if self.next.is_none_or(|next| next > now) {
            return Vec::new();
        }
        let due: Vec<ConnId> = self
            .by_conn
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in &due {
            self.by_conn.remove(conn);
        }
        self.next = self.by_conn.values().min().copied();
        due
    }
}

impl BrokerCore {
    /// Closes the connections whose credentials expired by `now`.
    pub(super) fn close_expired_credentials(&mut self, now: Instant) {
        for conn in self.credential_deadlines.take_due(now) {
            if !self.connections.get(&conn).is_some_and(|c| c.is_active()) {
                continue;
            }
            if let Some((client_id, username)) = self.client_identity(conn) {
                log::info!(
                    "client '{client_id}' (user {username:?}): credentials expired, closing its \
                     connection"
                );
            }
            self.stats.credentials_expired += 1;
            self.close(conn, CloseReason::CredentialsExpired);
        }
    }
}
