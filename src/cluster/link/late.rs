//! A node back from a crash and the sessions it recovered: for each, the directory says whether
//! another node took its client id meanwhile (the client reconnected there, and the session was
//! made there from its entry's profile). If so, this node hands the messages it still held for
//! the session to that node (`<name>.late.<node>`, request and reply: the session's records,
//! the same encoding as a hand-off) and then drops its copy (journaled); if not, the id is
//! this node's again (its entry's sequence the fencing token).
//!
//! The check waits until the mailbox has been read up to where it was at start (or 30 s),
//! and the shards have what it brought durable: so the messages published for the session
//! while this node was down, which waited in its mailbox, are in the copy handed over.
//! The new owner's side: its shard appends the messages to the session, live or offline
//! (`BrokerCore::take_late_messages`), and the link answers once they are in.
//!
//! Methods of the link (`mod.rs`); the NATS round trips run in tasks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::broker::BusMessage;

use super::super::directory::{self, Entry};
use super::profiles::{read_entry, Owned};
use super::{Done, Link};

/// Longest wait for the mailbox's backlog before the recovered sessions are checked anyway.
const BACKLOG_WAIT: Duration = Duration::from_secs(30);
/// Late hand-overs of one session that fail before this node keeps the session.
const LATE_TRIES: u32 = 5;
/// Directory reads at once while checking the recovered sessions.
const READS_AT_ONCE: usize = 32;

/// The recovered sessions, and where their checks and hand-overs stand.
#[derive(Default)]
pub(super) struct Recovered {
    /// Client ids to check against the directory (the shards' `SessionsHeld`).
    pub to_check: Vec<Arc<str>>,
    /// Mailbox messages still to read before the check (`None`: NATS not set up yet).
    pub backlog: Option<u64>,
    /// When NATS was set up.
    pub since: Option<Instant>,
    /// Copies asked of a shard: the client id and the node that owns it now.
    copies: std::collections::HashMap<u64, (Arc<str>, String)>,
    /// Client ids to check again at the next liveness renewal (a failed read or hand-over).
    later: Vec<Arc<str>>,
    /// Failed hand-overs per client id.
    failures: std::collections::HashMap<Arc<str>, u32>,
    /// Late hand-overs from other nodes waiting for a shard: where to answer.
    pub taking: std::collections::HashMap<u64, async_nats::Subject>,
}

impl<M: Send + 'static> Link<M> {
    /// Checks the recovered sessions once the mailbox's backlog is in (each tick).
    pub(super) fn check_recovered(&mut self) {
        let r = &self.recovered;
        if r.to_check.is_empty() || !self.connected {
            return;
        }
        let (Some(nats), Some(since)) = (&self.nats, r.since) else {
            return;
        };
        let backlog_read = r.backlog == Some(0) && self.incoming.is_empty();
        if !backlog_read && since.elapsed() < BACKLOG_WAIT {
            return;
        }
        let to_check = std::mem::take(&mut self.recovered.to_check);
        let sessions = nats.sessions.clone();
        let names = self.names.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let reads = futures_util::stream::iter(to_check).map(|client_id| {
                let (sessions, subject) = (&sessions, names.session(&client_id));
                async move {
                    let result = read_entry(sessions, &subject).await;
                    (client_id, result)
                }
            });
            let mut reads = reads.buffer_unordered(READS_AT_ONCE);
            while let Some((client_id, result)) = reads.next().await {
                let _ = done.send(Done::RecoveredChecked { client_id, result });
            }
        });
    }

    /// The directory's entry of a recovered session's client id.
    pub(super) fn recovered_checked(
        &mut self,
        client_id: Arc<str>,
        result: Result<(u64, Option<Entry>), String>,
    ) {
        let (seq, entry) = match result {
            Ok((seq, Some(entry))) => (seq, entry),
            // Never registered (made while NATS was away): nothing to fence.
            Ok((_, None)) => return,
            Err(error) => {
                log::warn!("cluster: recovered session '{client_id}': {error}; checked again");
                self.recovered.later.push(client_id);
                return;
            }
        };
        if self.owned.contains_key(&client_id) {
            // Its client came back here since the restart and claimed it.
            return;
        }
        if entry.node == self.config.node {
            self.owned
                .insert(client_id, Owned::new(seq, &entry.profile));
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.recovered
            .copies
            .insert(token, (client_id.clone(), entry.node));
        let shard = crate::broker::home_shard(&client_id, self.port.shards);
        self.send_shard(shard, true, BusMessage::SessionCopy { token, client_id });
    }

    /// The shard copied a recovered session whose client id another node owns now: its records
    /// go to that node.
    pub(super) fn late_copied(&mut self, token: u64, session: Option<Bytes>) {
        let Some((client_id, node)) = self.recovered.copies.remove(&token) else {
            return;
        };
        // Gone, clean, or its client connected here again: nothing to hand over.
        let (Some(records), Some(nats)) = (session, &self.nats) else {
            return;
        };
        let client = nats.client.clone();
        let subject = self.names.late(&node);
        let request = directory::encode_late(&client_id, &records);
        let (done, timeout) = (self.done_tx.clone(), self.config.ack_timeout * 2);
        tokio::spawn(async move {
            let asked = client.request(subject, request);
            let result = match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(answer)) => {
                    directory::decode_late_answer(&answer.payload).map_err(|e| e.to_string())
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer in time".into()),
            };
            let _ = done.send(Done::LateSent {
                client_id,
                node,
                result,
            });
        });
    }

    /// A late hand-over ended: the session leaves this node once the new owner has its messages.
    pub(super) fn late_sent(
        &mut self,
        client_id: Arc<str>,
        node: String,
        result: Result<bool, String>,
    ) {
        let why = match result {
            Ok(true) if !self.owned.contains_key(&client_id) => {
                log::info!(
                    "cluster: client '{client_id}': the messages held here went to node {node}"
                );
                self.recovered.failures.remove(&client_id);
                let token = self.next_token;
                self.next_token += 1;
                let shard = crate::broker::home_shard(&client_id, self.port.shards);
                self.send_shard(shard, true, BusMessage::SessionRelease { token, client_id });
                return;
            }
            // Its client came back here meanwhile: the session stays (the messages are on
            // both nodes: at least once).
            Ok(true) => return,
            Ok(false) => format!("node {node} does not own it"),
            Err(error) => error,
        };
        let failures = self
            .recovered
            .failures
            .entry(client_id.clone())
            .or_insert(0);
        *failures += 1;
        if *failures >= LATE_TRIES {
            log::warn!(
                "cluster: client '{client_id}': cannot hand its messages over ({why}); \
                 the session stays on this node"
            );
            return;
        }
        log::info!("cluster: client '{client_id}': late hand-over ({why}); tried again");
        self.recovered.later.push(client_id);
    }

    /// What failed is checked again (at the liveness cadence, every 2 s).
    pub(super) fn retry_recovered(&mut self) {
        let later = std::mem::take(&mut self.recovered.later);
        self.recovered.to_check.extend(later);
    }

    /// Another node, back from a crash, brings the messages it held for a client id this node
    /// owns now (`<name>.late.<this node>`).
    pub(super) fn late_asked(&mut self, message: async_nats::Message) {
        let Some(reply) = message.reply else { return };
        let (client_id, records) = match directory::decode_late(&message.payload) {
            Ok(late) => late,
            Err(error) => {
                log::warn!("cluster: a late hand-over: {error}");
                return;
            }
        };
        if !self.owned.contains_key(&*client_id) {
            self.reply(reply, directory::encode_late_answer(false));
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.recovered.taking.insert(token, reply);
        let shard = crate::broker::home_shard(&client_id, self.port.shards);
        let client_id = client_id.into();
        let message = BusMessage::SessionLate {
            token,
            client_id,
            records,
        };
        self.send_shard(shard, true, message);
    }

    /// The shard took a late hand-over's messages in.
    pub(super) fn late_taken(&mut self, token: u64) {
        if let Some(reply) = self.recovered.taking.remove(&token) {
            self.reply(reply, directory::encode_late_answer(true));
        }
    }
}
