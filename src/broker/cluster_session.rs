//! A session that follows its client to another node of a cluster (`src/cluster`), on the
//! core's side: the node that loses a client id closes its connection as a local takeover does
//! and gives its session away as records ([`BrokerCore::release_session`]); the node that won it
//! takes the session in before answering the CONNECT ([`BrokerCore::adopt_session`]).
//!
//! For an owner that dies: every change of a persistent session's profile (its subscriptions
//! and expiry: [`BrokerCore::session_profile`]) goes to the link, which keeps it in the
//! session's directory entry, from where another node adopts it; once the dead node is back,
//! it gives the messages it still held for the session to the new owner
//! ([`BrokerCore::take_late_messages`]) and drops its copy.
//!
//! The records are the journal's and the snapshot's (`persist/record.rs`, one frame each as
//! `persist::encode` writes them): one encoding for a session on disk and on the move. Nothing
//! here knows NATS or a socket: the cluster link carries the bytes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::persist::{self, DurableState, MsgId, QueuedMessage, Record, Session as StoredSession};

use super::{BrokerCore, BusMessage, CloseReason, ConnId, SessionKey};

/// Most bytes of a session's profile kept in its directory entry (its subscriptions: about
/// 1,000 of 50-byte filters); a larger one is marked too large there, and a node that finds
/// the session's owner dead then starts it afresh.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

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
        let bytes = (!session.clean).then(|| self.moving_records(key));
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
        let state = one_session(records, client_id)?;
        let Some((id, stored)) = state.sessions.iter().next() else {
            return Err(AdoptError::NotOneSession(0));
        };
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

    /// The link asks for a copy of an offline persistent session (`BusMessage::SessionCopy`:
    /// a restarted node hands its messages to the session's new owner before dropping it with
    /// a release); `None` for a session that is not there, clean, or connected again here.
    pub(super) fn session_copy_asked(&mut self, token: u64, client_id: &str) {
        let key = self.session_by_client_id.get(client_id).copied();
        let offline = key.filter(|&k| {
            self.sessions
                .get(k)
                .is_some_and(|s| !s.clean && s.conn.is_none())
        });
        let session = offline.map(|key| self.moving_records(key));
        if let Some(link) = self.link {
            self.send_bus(link, BusMessage::SessionReleased { token, session });
        }
    }

    /// Every record of session `key`, its messages numbered 1, 2, … (what moves to another node).
    fn moving_records(&self, key: SessionKey) -> Bytes {
        let mut records = Vec::new();
        if let Some(session) = self.sessions.get(key) {
            let entries = session
                .held()
                .enumerate()
                .map(|(i, entry)| (i as MsgId + 1, entry));
            self.session_records(key, session, entries, &mut HashSet::new(), &mut records);
        }
        encode_records(&session_id(self, key), &records)
    }

    /// What re-creates persistent session `key` on another node when its owner is dead: its
    /// client id, user, MQTT 5 expiry and subscriptions, as records (no messages, no will). Cut
    /// short past [`MAX_PROFILE_BYTES`] (the link then keeps it as too large). `None`: no such
    /// session, or a clean one.
    pub fn session_profile(&self, key: SessionKey) -> Option<Bytes> {
        let session = self.sessions.get(key).filter(|s| !s.clean)?;
        let client_id = session.client_id.clone();
        let mut records = vec![Record::SessionOpen {
            client_id: client_id.clone(),
        }];
        if session.user_known {
            records.push(Record::SessionUser {
                client_id: client_id.clone(),
                username: session.username.clone(),
            });
        }
        if session.v5 {
            records.push(Record::SessionExpiry {
                client_id: client_id.clone(),
                interval_secs: session.expiry_secs(),
            });
        }
        let mut out = BytesMut::new();
        for record in records {
            put_record(&client_id, &record, &mut out);
        }
        for (filter, &options) in &session.subscriptions {
            if out.len() > MAX_PROFILE_BYTES {
                break;
            }
            let record = Record::Subscribe {
                client_id: client_id.clone(),
                filter: filter.clone(),
                options,
            };
            put_record(&client_id, &record, &mut out);
        }
        Some(out.freeze())
    }

    /// Tells the link the profile of persistent session `key` (a cluster node only): after a
    /// SUBSCRIBE or UNSUBSCRIBE. Nothing for a clean session.
    pub(super) fn session_profile_changed(&mut self, key: SessionKey) {
        if self.sessions.get(key).is_some_and(|s| !s.clean) {
            self.send_profile(key);
        }
    }

    fn send_profile(&mut self, key: SessionKey) {
        let Some(link) = self.link else { return };
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let client_id = session.client_id.clone();
        let profile = self.session_profile(key);
        self.send_bus(link, BusMessage::SessionProfile { client_id, profile });
    }

    /// A persistent session ends: its directory entry keeps no profile.
    pub(super) fn session_profile_gone(&mut self, client_id: Arc<str>) {
        if let Some(link) = self.link {
            let profile = None;
            self.send_bus(link, BusMessage::SessionProfile { client_id, profile });
        }
    }

    /// The CONNECT of `conn` was answered: its session's profile as it now is (`None` for a
    /// clean one). For the runtime, which calls it after `handle_connect`; nothing off a cluster.
    pub fn announce_session_profile(&mut self, conn: ConnId) {
        if let Some(key) = self.session_of(conn) {
            self.send_profile(key);
        }
    }

    /// Tells the cluster link which persistent sessions this shard holds (at start, after
    /// recovery: the link asks the directory whether another node took any of them meanwhile).
    pub fn announce_sessions_to_link(&mut self) {
        let Some(link) = self.link else { return };
        let client_ids: Vec<Arc<str>> = (self.sessions.iter())
            .filter(|(_, s)| !s.clean)
            .map(|(_, s)| s.client_id.clone())
            .collect();
        if !client_ids.is_empty() {
            self.send_bus(link, BusMessage::SessionsHeld { client_ids });
        }
    }

    /// Messages another node held for `client_id` while it was down (its session's records,
    /// [`BrokerCore::moving_records`]): each one still in time goes to the session here, live
    /// or offline, at the QoS it was queued with, as a new delivery (journaled with
    /// persistence on). The number taken; 0 when there is no persistent session here (the
    /// client started a clean one).
    pub fn take_late_messages(
        &mut self,
        client_id: &str,
        records: Bytes,
    ) -> Result<usize, AdoptError> {
        let state = one_session(records, client_id)?;
        let Some(stored) = state.sessions.values().next() else {
            return Ok(0);
        };
        let key = self.session_by_client_id.get(client_id).copied();
        let Some(key) = key.filter(|&k| self.sessions.get(k).is_some_and(|s| !s.clean)) else {
            return Ok(0);
        };
        let unix_ms = self.unix_ms_now();
        let mut taken = 0;
        for entry in late_entries(stored, unix_ms) {
            let ids = self.subscription_ids(key, &entry.message.topic);
            if let Some(journal) = self.journal.as_deref_mut() {
                journal.current_msg = None;
            }
            let message = Cow::Owned(entry.message.clone());
            self.deliver_to_session(key, message, entry.qos, false, &ids);
            taken += 1;
        }
        Ok(taken)
    }

    /// The link brings messages another node held for `client_id` (`BusMessage::SessionLate`).
    pub(super) fn session_late_asked(&mut self, token: u64, client_id: &str, records: Bytes) {
        match self.take_late_messages(client_id, records) {
            Ok(n) => log::info!("client '{client_id}': {n} messages held by another node came"),
            Err(error) => log::warn!("client '{client_id}': messages from another node: {error}"),
        }
        if let Some(link) = self.link {
            self.send_bus(link, BusMessage::SessionLateTaken { token });
        }
    }
}

/// The messages of a moved session not expired at `unix_ms` (0: no wall clock, none expired).
fn late_entries(stored: &StoredSession, unix_ms: u64) -> impl Iterator<Item = &QueuedMessage> {
    stored
        .queue
        .iter()
        .filter(move |e| unix_ms == 0 || e.expires_at_unix_ms.is_none_or(|at| at > unix_ms))
}

/// The one session of `client_id` in moved records.
fn one_session(records: Bytes, client_id: &str) -> Result<DurableState, AdoptError> {
    let records =
        persist::codec::decode_all(records).map_err(|e| AdoptError::Damaged(e.to_string()))?;
    let mut state = DurableState::default();
    for record in &records {
        state.apply(record);
    }
    let count = state.sessions.len();
    let Some(id) = state.sessions.keys().next().filter(|_| count == 1) else {
        return Err(AdoptError::NotOneSession(count));
    };
    if &**id != client_id {
        return Err(AdoptError::OtherClient(id.to_string()));
    }
    Ok(state)
}

fn session_id(core: &BrokerCore, key: SessionKey) -> Arc<str> {
    core.sessions
        .get(key)
        .map_or_else(|| Arc::from(""), |s| s.client_id.clone())
}

fn encode_records(client_id: &str, records: &[Record]) -> Bytes {
    let mut out = BytesMut::new();
    for record in records {
        put_record(client_id, record, &mut out);
    }
    out.freeze()
}

fn put_record(client_id: &str, record: &Record, out: &mut BytesMut) {
    if let Err(error) = persist::encode(record, out) {
        log::warn!("client '{client_id}': a record of its session cannot move: {error}");
    }
}
