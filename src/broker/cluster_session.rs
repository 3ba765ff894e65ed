//! A session that follows its client to another node of a cluster (`src/cluster`), on the
//! core's side: the node that loses a client id closes its connection as a local takeover does
//! and gives its session away as records ([`BrokerCore::release_session`]); the node that won it
//! takes the session in before answering the CONNECT ([`BrokerCore::adopt_session`]).
//!
//! The records are the journal's and the snapshot's (`persist/record.rs`, one frame each as
//! `persist::encode` writes them): one encoding for a session on disk and on the move. Nothing
//! here knows NATS or a socket: the cluster link carries the bytes.

use std::collections::HashSet;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::persist::{self, DurableState, MsgId};

use super::{BrokerCore, BusMessage, CloseReason};

/// Handed-over records this node cannot take in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AdoptError {
    #[error("handed-over session does not read: {0}")]
    Damaged(String),
    #[error("handed-over records hold {0} sessions, not one")]
    NotOneSession(usize),
    #[error("handed-over session is for '{0}', not this client")]
    OtherClient(String),
}

impl BrokerCore {
    /// The cluster gave `client_id` to another node: its connection here is closed as taken over
    /// (MQTT 5: DISCONNECT 0x8E), and its session leaves this node. Returns a persistent
    /// session's records (every message it holds, journaled or not, numbered 1, 2, … in them);
    /// `None` when there was none or it was a clean one.
    pub fn release_session(&mut self, client_id: &str) -> Option<Bytes> {
        let key = *self.session_by_client_id.get(client_id)?;
        if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn) {
            log::info!("client '{client_id}' connected on another node: closing its connection");
            self.stats.sessions_taken_over += 1;
            self.close(conn, CloseReason::TakenOver);
        }
        // Closing removed a clean session.
        let session = self.sessions.get(key)?;
        let mut bytes = None;
        if !session.clean {
            let mut records = Vec::new();
            let entries = session
                .held()
                .enumerate()
                .map(|(i, entry)| (i as MsgId + 1, entry));
            self.session_records(key, session, entries, &mut HashSet::new(), &mut records);
            let mut out = BytesMut::new();
            for record in &records {
                if let Err(error) = persist::encode(record, &mut out) {
                    log::warn!(
                        "client '{client_id}': a record of its session cannot move: {error}"
                    );
                }
            }
            bytes = Some(out.freeze());
        }
        // Its will moves with it (or was published by the takeover), not at its removal.
        self.cancel_delayed_will(key);
        self.remove_session(key);
        bytes
    }

    /// Takes in the session of `client_id` that another node released (its records from
    /// [`release_session`](Self::release_session)), offline, before the CONNECT that resumes it
    /// is answered: its subscriptions become this shard's interest, its messages get this
    /// node's journal ids and, with persistence on, it is journaled here. A session this shard
    /// already holds under that id is replaced.
    pub fn adopt_session(
        &mut self,
        client_id: &str,
        records: Bytes,
        now: Instant,
    ) -> Result<(), AdoptError> {
        let records =
            persist::codec::decode_all(records).map_err(|e| AdoptError::Damaged(e.to_string()))?;
        let mut state = DurableState::default();
        for record in &records {
            state.apply(record);
        }
        let count = state.sessions.len();
        let Some((id, stored)) = state.sessions.iter().next().filter(|_| count == 1) else {
            return Err(AdoptError::NotOneSession(count));
        };
        if &**id != client_id {
            return Err(AdoptError::OtherClient(id.to_string()));
        }
        self.clock = Some(now);
        if let Some(&old) = self.session_by_client_id.get(client_id) {
            self.cancel_delayed_will(old);
            self.remove_session(old);
        }
        // Before the journal is taken: the wall clock is read through it.
        let unix_ms = self.unix_ms_now();
        let mut journal = self.journal.take();
        let (key, created) = self.install_stored_session(
            id,
            stored,
            |_| {
                journal
                    .as_deref_mut()
                    .map_or(0, |journal| journal.new_msg_id())
            },
            now,
            unix_ms,
        );
        self.journal = journal;
        self.restore_will(key, stored, now);
        // The other shards and nodes route its filters here from now on (not waited for, as a
        // SUBACK waits: the CONNACK does not promise it).
        for filter in &created {
            self.broadcast_interest(filter, true, None);
        }
        self.set_offline_since(key, Some(now));
        if self.journal.is_some() {
            let mut records = Vec::new();
            if let Some(session) = self.sessions.get(key) {
                let entries = session.stored().map(|entry| (entry.id, entry));
                self.session_records(key, session, entries, &mut HashSet::new(), &mut records);
            }
            for record in records {
                self.journal(|| record);
            }
        }
        Ok(())
    }

    /// The link asks for a client id's session (`BusMessage::SessionRelease`).
    pub(super) fn session_release_asked(&mut self, token: u64, client_id: &str) {
        let session = self.release_session(client_id);
        if let Some(link) = self.link {
            self.send_bus(link, BusMessage::SessionReleased { token, session });
        }
    }
}
