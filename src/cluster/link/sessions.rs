//! The link's side of the session directory (`../directory.rs`): a local connection's claim of
//! its client id (compare-and-set of the id's entry, then the hand-off asked of the node that
//! owned it), and another node's hand-off request for a client id this node owns (the local
//! shard closes the connection and gives the session's records, sent back as the reply).
//!
//! A claim writes the entry with the session's profile carried over from the entry it read
//! (none for a CONNECT that starts clean); when the old owner does not answer (dead, or cut
//! off), the session is made here from that profile (session present 1): its subscriptions and
//! expiry, not its messages, which come later from that node (`late.rs`).
//!
//! The NATS round trips run in tasks of their own; what the link holds (the entries it owns,
//! the hand-offs waiting for a shard) changes only on the loop.

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_nats::Client;
use bytes::Bytes;

use crate::broker::{BusMessage, Claim};

use super::super::directory::{self, Entry, HandedOff, Profile};
use super::super::wire::Names;
use super::profiles::{publish_entry, read_entry, Owned};
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
    /// The CONNECT starts a new session: the old profile is not carried over.
    clean: bool,
    timeout: Duration,
}

/// A claim's outcome: the entry's sequence, the profile written in it, and the session to
/// take in (handed over by the old owner, or made from the entry's profile when it is dead).
pub(in crate::cluster) struct Claimed {
    pub seq: u64,
    pub profile: Profile,
    pub session: Option<Bytes>,
}

impl<M: Send + 'static> Link<M> {
    /// Shard `from` asks for `client_id` (a CONNECT waits): claimed in a task, answered on
    /// [`Done::Claimed`]; at once `Unavailable` while NATS is away.
    pub(super) fn claim(
        &mut self,
        from: usize,
        token: u64,
        client_id: std::sync::Arc<str>,
        clean: bool,
    ) {
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
                profile: Profile::None,
            },
            client_id,
            clean,
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
        result: Result<Claimed, String>,
    ) {
        let claim = match result {
            Ok(claimed) => {
                let held = (self.owned)
                    .entry(client_id)
                    .or_insert_with(|| Owned::new(claimed.seq, &claimed.profile));
                held.seq = held.seq.max(claimed.seq);
                held.written(&claimed.profile);
                Claim::Owned(claimed.session)
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
        if self
            .owned
            .get(&*client_id)
            .is_some_and(|held| held.seq >= seq)
        {
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

    /// The shard gave up the session asked for by hand-off `token` (or copied it for a late
    /// hand-over, `late.rs`).
    pub(super) fn released(&mut self, token: u64, session: Option<Bytes>) {
        if let Some(reply) = self.releases.remove(&token) {
            let answer = HandedOff::Released(session);
            self.reply(reply, directory::encode_handed_off(&answer));
        } else {
            self.late_copied(token, session);
        }
    }

    pub(super) fn reply(&self, reply: async_nats::Subject, payload: Bytes) {
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
    /// owned it for the session.
    async fn run(mut self) -> Result<Claimed, String> {
        let subject = self.names.session(&self.client_id);
        let mut tries = 0;
        let (previous, seq) = loop {
            tries += 1;
            let (read, previous) = read_entry(&self.sessions, &subject).await?;
            self.me.profile = match &previous {
                Some(previous) if !self.clean => previous.profile.clone(),
                _ => Profile::None,
            };
            match publish_entry(&self.js, subject.clone(), read, &self.me).await {
                Ok(seq) => break (previous, seq),
                // Another node wrote it since: read again.
                Err(error) if tries < CLAIM_TRIES => {
                    log::debug!("cluster: claim of '{}': {error}", self.client_id);
                }
                Err(error) => return Err(format!("writing its entry: {error}")),
            }
        };
        let mut claimed = Claimed {
            seq,
            profile: self.me.profile.clone(),
            session: None,
        };
        let Some(previous) = previous.filter(|p| p.node != self.me.node) else {
            // Ours already (or nobody's): a takeover here is the shard's.
            return Ok(claimed);
        };
        let request = directory::encode_handoff(seq, &self.client_id);
        let asked = self
            .client
            .request(self.names.handoff(&previous.node), request);
        let why = match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(answer)) => {
                return match directory::decode_handed_off(&answer.payload) {
                    Ok(HandedOff::Released(session)) => {
                        claimed.session = session;
                        Ok(claimed)
                    }
                    Ok(HandedOff::Stale) => {
                        Err(format!("node {} holds a newer claim", previous.node))
                    }
                    Err(error) => Err(format!("the hand-off from {}: {error}", previous.node)),
                };
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_string(),
        };
        // The old owner is away (or gone): the session is made here from its profile.
        let client = &self.client_id;
        match &claimed.profile {
            Profile::Records(records) => {
                log::info!(
                    "cluster: client '{client}': node {} did not hand its session over ({why}); \
                     made here from the directory (its messages follow when that node is back)",
                    previous.node
                );
                claimed.session = Some(records.clone());
            }
            Profile::TooLarge => log::warn!(
                "cluster: client '{client}': node {} did not hand its session over ({why}), \
                 and its profile was too large for the directory: a new session",
                previous.node
            ),
            Profile::None => log::info!(
                "cluster: client '{client}': node {} did not hand its session over ({why})",
                previous.node
            ),
        }
        Ok(claimed)
    }
}
