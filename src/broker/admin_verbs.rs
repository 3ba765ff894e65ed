//! What an administrator does to a session (the admin API's kick and delete, asked by the host
//! over the bus): close its client's connection ([`BrokerCore::kick_client`]), or forget the
//! session altogether ([`BrokerCore::delete_session`]). Both act on this shard's sessions only:
//! the caller asks the client id's home shard.
//!
//! Only the core's own paths: a kicked connection is closed as the broker closes any
//! (`CloseReason::Kicked`: its will is published, as for a lost connection, and a persistent
//! session stays, offline); a deleted session is removed as an expired one is (subscriptions here
//! and the other shards' interest, queue, journal record).

use super::{BrokerCore, CloseReason};

impl BrokerCore {
    /// Closes the connection of `client_id`'s session on this shard; `false` if it has no session
    /// here or its client is not connected.
    pub fn kick_client(&mut self, client_id: &str) -> bool {
        let Some(conn) = self
            .session_by_client_id
            .get(client_id)
            .and_then(|&key| self.sessions.get(key))
            .and_then(|session| session.conn)
        else {
            return false;
        };
        log::info!("client '{client_id}': disconnected by an administrator");
        self.close(conn, CloseReason::Kicked);
        true
    }

    /// Removes `client_id`'s session on this shard, closing its client's connection first (its
    /// will published); `false` if it has no session here.
    pub fn delete_session(&mut self, client_id: &str) -> bool {
        let Some(&key) = self.session_by_client_id.get(client_id) else {
            return false;
        };
        self.kick_client(client_id);
        // A clean session went with its connection; a persistent one is offline now.
        if self.session_by_client_id.get(client_id) == Some(&key) {
            log::info!("session of '{client_id}' deleted by an administrator");
            self.remove_session(key);
        }
        true
    }
}
