//! The link's side of the session directory (`../directory.rs`): a local connection's claim of
//! its client id (compare-and-set of the id's entry, then the hand-off asked of the node that
//! owned it), and another node's hand-off request for a client id this node owns (the local
//! shard closes the connection and gives the session's records, sent back as the reply).
//!
//! The NATS round trips run in tasks of their own; what the link holds (the entries it owns,
//! the hand-offs waiting for a shard) changes only on the loop.

use std::time::Duration;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::Context;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;

use crate::broker::{BusMessage, Claim};

use super::super::directory::{self, Entry, HandedOff, EXPECTED_LAST_SEQUENCE};
use super::super::wire::Names;
use super::{Done, Link};

/// Tries of a compare-and-set that lost to another node's write before giving up.
const CLAIM_TRIES: usize = 5;

/// What a claim's task needs, taken from the link.
struct ClaimJob {
    js: Context,
    sessions: Stream,
    client: Client,
    names: Names,
    me: Entry,
    client_id: std::sync::Arc<str>,
    timeout: Duration,
}

impl<M: Send + 'static> Link<M> {
    /// Shard `from` asks for `client_id` (a CONNECT waits): claimed in a task, answered on
    /// [`Done::Claimed`]; at once `Unavailable` while NATS is away.
    pub(super) fn claim(&mut self, from: usize, token: u64, client_id: std::sync::Arc<str>) {
        let nats = match &self.nats {
            Some(nats) if self.connected => nats,
            _ => {
                let claim = Claim::Unavailable;
                self.send_shard(from, true, BusMessage::SessionClaimed { token, claim });
                return;
            }
        };
        let job = ClaimJob {
            js: nats.js.clone(),
            sessions: nats.sessions.clone(),
            client: nats.client.clone(),
            names: self.names.clone(),
            me: Entry {
                node: self.config.node.clone(),
                boot: self.boot,
            },
            client_id,
            timeout: self.config.ack_timeout,
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let client_id = job.client_id.clone();
            let result = tokio::time::timeout(job.timeout * 2, job.run())
                .await
                .unwrap_or_else(|_| Err("the directory did not answer in time".into()));
            let _ = done.send(Done::Claimed {
                from,
                token,
                client_id,
                result,
            });
        });
    }

    /// A claim's task ended: the shard's CONNECT goes on.
    pub(super) fn claimed(
        &mut self,
        from: usize,
        token: u64,
        client_id: std::sync::Arc<str>,
        result: Result<(u64, Option<Bytes>), String>,
    ) {
        let claim = match result {
            Ok((seq, session)) => {
                let held = self.owned.entry(client_id).or_insert(seq);
                *held = (*held).max(seq);
                Claim::Owned(session)
            }
            Err(error) => {
                log::warn!("cluster: cannot claim client id '{client_id}': {error}");
                Claim::Unavailable
            }
        };
        self.send_shard(from, true, BusMessage::SessionClaimed { token, claim });
    }

    /// Another node claimed a client id and asks for it (`<name>.handoff.<this node>`).
    pub(super) fn handoff_asked(&mut self, message: async_nats::Message) {
        let Some(reply) = message.reply else { return };
        let (seq, client_id) = match directory::decode_handoff(&message.payload) {
            Ok(asked) => asked,
            Err(error) => {
                log::warn!("cluster: a hand-off request: {error}");
                return;
            }
        };
        // Never for a claim older than the entry held here.
        if self.owned.get(&*client_id).is_some_and(|&held| held >= seq) {
            self.reply(reply, directory::encode_handed_off(&HandedOff::Stale));
            return;
        }
        self.owned.remove(&*client_id);
        let token = self.next_token;
        self.next_token += 1;
        self.releases.insert(token, reply);
        let shard = crate::broker::home_shard(&client_id, self.port.shards);
        let client_id = client_id.into();
        self.send_shard(shard, true, BusMessage::SessionRelease { token, client_id });
    }

    /// The shard gave up the session asked for by hand-off `token`.
    pub(super) fn released(&mut self, token: u64, session: Option<Bytes>) {
        if let Some(reply) = self.releases.remove(&token) {
            let answer = HandedOff::Released(session);
            self.reply(reply, directory::encode_handed_off(&answer));
        }
    }

    fn reply(&self, reply: async_nats::Subject, payload: Bytes) {
        let Some(nats) = &self.nats else { return };
        let client = nats.client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.publish(reply, payload).await {
                log::warn!("cluster: a hand-off reply: {error}");
            }
        });
    }
}

impl ClaimJob {
    /// Writes this node into the client id's entry over the one read, then asks the node that
    /// owned it for the session. The new entry's sequence, and the session's records.
    async fn run(self) -> Result<(u64, Option<Bytes>), String> {
        let subject = self.names.session(&self.client_id);
        let mut tries = 0;
        let (previous, seq) = loop {
            tries += 1;
            let (read, previous) = match self
                .sessions
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(message) => (
                    message.sequence,
                    directory::decode_entry(&message.payload).ok(),
                ),
                Err(error) if matches!(error.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                    (0, None)
                }
                Err(error) => return Err(format!("reading its entry: {error}")),
            };
            let mut headers = HeaderMap::new();
            headers.insert(EXPECTED_LAST_SEQUENCE, read.to_string().as_str());
            let payload = directory::encode_entry(&self.me);
            let written = match self
                .js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match written {
                Ok(ack) => break (previous, ack.sequence),
                // Another node wrote it since: read again.
                Err(error) if tries < CLAIM_TRIES => {
                    log::debug!("cluster: claim of '{}': {error}", self.client_id);
                }
                Err(error) => return Err(format!("writing its entry: {error}")),
            }
        };
        let Some(previous) = previous.filter(|p| p.node != self.me.node) else {
            // Ours already (or nobody's): a takeover here is the shard's.
            return Ok((seq, None));
        };
        let request = directory::encode_handoff(seq, &self.client_id);
        let asked = self
            .client
            .request(self.names.handoff(&previous.node), request);
        match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(answer)) => match directory::decode_handed_off(&answer.payload) {
                Ok(HandedOff::Released(session)) => Ok((seq, session)),
                Ok(HandedOff::Stale) => Err(format!("node {} holds a newer claim", previous.node)),
                Err(error) => Err(format!("the hand-off from {}: {error}", previous.node)),
            },
            // The old owner is away (or gone): the session starts here without its state.
            Ok(Err(error)) => {
                log::info!(
                    "cluster: client '{}': node {} did not hand its session over ({error})",
                    self.client_id,
                    previous.node
                );
                Ok((seq, None))
            }
            Err(_) => {
                log::info!(
                    "cluster: client '{}': node {} did not answer the hand-off in time",
                    self.client_id,
                    previous.node
                );
                Ok((seq, None))
            }
        }
    }
}
