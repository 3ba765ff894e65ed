//! The host side of a host request, without the [`crate::BrokerHandle`]: [`HostClient`] sends a
//! `HostRequest` into a shard's inbox and blocks until the shard answers (at most
//! [`ANSWER_WITHIN`]). `embed.rs` (the handle's public methods) and the admin API's worker thread
//! (`admin/`) both ask the shards through it. Never called from a shard thread: a shard waiting
//! for itself would time out.
//!
//! Below `facade.rs` and `embed.rs` (it knows neither); only the shards' message types above it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::SendError;

use crate::broker::{Message, RetainedInfo, SessionInfo};
use crate::protocol::{QoS, TopicName};

use super::host_request::HostRequest;
use super::settings::ShardReload;
use super::shard::ShardMessage;

/// How long a host call waits for a shard to take its request and answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The shard that routes host publishes: one shard, so that one host thread's messages keep their
/// order for every subscriber (as one client's do), and the one whose retained copy is listed, so
/// that a retained message the host set is listed as soon as the call returns.
const HOST_SHARD: usize = 0;

/// Why a host call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The topic is not a valid MQTT topic name (empty, a wildcard, a NUL, longer than 65535
    /// bytes).
    #[error("invalid topic {topic:?}: {reason}")]
    Topic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker has stopped (its shards no longer take requests).
    #[error("the broker has stopped")]
    Stopped,
    /// A shard did not take or answer the request within [`ANSWER_WITHIN`] (overloaded, or the
    /// call came from a shard thread).
    #[error("shard {shard} did not answer within {ANSWER_WITHIN:?}")]
    Timeout {
        /// The shard that did not answer.
        shard: usize,
    },
}

/// The host side of [`crate::BrokerHandle`]'s requests, without the handle: the shards' inboxes and
/// their number. The admin API's worker thread holds one (`admin/`), so that it asks the shards
/// exactly as the host does.
#[derive(Clone)]
pub(crate) struct HostClient {
    pub(crate) bus: shards::BusSender<ShardMessage>,
    pub(crate) shards: usize,
}

impl HostClient {
    /// [`crate::BrokerHandle::publish`].
    pub(crate) fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<(), HostError> {
        let message = Message {
            topic: TopicName::new(topic).map_err(|error| HostError::Topic {
                topic: topic.to_string(),
                reason: error.to_string(),
            })?,
            payload,
            qos,
            retain,
            properties: None,
        };
        let (done, answer) = mpsc::channel();
        self.ask(HOST_SHARD, HostRequest::Publish { message, done }, answer)
    }

    /// [`crate::BrokerHandle::sessions`].
    pub(crate) fn sessions(&self) -> Result<Vec<SessionInfo>, HostError> {
        let mut sessions = Vec::new();
        for shard in 0..self.shards {
            let mut from = Some(0);
            while let Some(start) = from {
                let (reply, answer) = mpsc::channel();
                let page = self.ask(shard, HostRequest::Sessions { from: start, reply }, answer)?;
                sessions.extend(page.sessions);
                from = page.next;
            }
        }
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(sessions)
    }

    /// [`crate::BrokerHandle::retained_topics`].
    pub(crate) fn retained_topics(&self) -> Result<Vec<RetainedInfo>, HostError> {
        let (reply, answer) = mpsc::channel();
        let mut listing = self.ask(HOST_SHARD, HostRequest::Retained { reply }, answer)?;
        RetainedInfo::sort(&mut listing);
        Ok(listing)
    }

    /// Closes `client_id`'s connection (on its home shard); whether it was connected.
    pub(crate) fn kick(&self, client_id: &str) -> Result<bool, HostError> {
        let (reply, answer) = mpsc::channel();
        let shard = crate::broker::home_shard(client_id, self.shards);
        let client_id = client_id.to_string();
        self.ask(shard, HostRequest::Kick { client_id, reply }, answer)
    }

    /// Removes `client_id`'s session (on its home shard); whether it had one.
    pub(crate) fn delete_session(&self, client_id: &str) -> Result<bool, HostError> {
        let (reply, answer) = mpsc::channel();
        let shard = crate::broker::home_shard(client_id, self.shards);
        let client_id = client_id.to_string();
        self.ask(
            shard,
            HostRequest::DeleteSession { client_id, reply },
            answer,
        )
    }

    /// Gives every shard its part of a configuration reload (`reload.rs` built them, one per
    /// shard in shard order) and waits until each has applied it; the client ids disconnected.
    pub(crate) fn reload(&self, parts: Vec<ShardReload>) -> Result<Vec<String>, HostError> {
        let mut waiting = Vec::new();
        for (shard, mut part) in parts.into_iter().enumerate() {
            let (done, answer) = mpsc::channel();
            part.done = Some(done);
            self.send(shard, ShardMessage::Reload(Box::new(part)), false)?;
            waiting.push((shard, answer));
        }
        let mut disconnected = Vec::new();
        for (shard, answer) in waiting {
            disconnected.extend(self.wait(shard, &answer, Instant::now() + ANSWER_WITHIN)?);
        }
        Ok(disconnected)
    }

    /// Sends `request` to `shard`'s inbox (data lane for a publish, so that it waits behind the
    /// shard's other publishes; control lane for a listing) and waits for its answer.
    fn ask<T>(
        &self,
        shard: usize,
        request: HostRequest,
        answer: mpsc::Receiver<T>,
    ) -> Result<T, HostError> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        let data = matches!(request, HostRequest::Publish { .. });
        self.send(shard, ShardMessage::Host(Box::new(request)), data)?;
        self.wait(shard, &answer, deadline)
    }

    /// Puts `message` into `shard`'s inbox, retrying a full lane for up to [`ANSWER_WITHIN`].
    fn send(&self, shard: usize, mut message: ShardMessage, data: bool) -> Result<(), HostError> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let sent = if data {
                self.bus.try_send_data(shard, message)
            } else {
                self.bus.try_send_control(shard, message)
            };
            match sent {
                Ok(()) => break,
                Err(SendError::Closed(_)) => return Err(HostError::Stopped),
                Err(SendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(SendError::Full(_)) => return Err(HostError::Timeout { shard }),
            }
        }
        Ok(())
    }

    /// Waits for `shard`'s answer until `deadline`.
    fn wait<T>(
        &self,
        shard: usize,
        answer: &mpsc::Receiver<T>,
        deadline: Instant,
    ) -> Result<T, HostError> {
        match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(value) => Ok(value),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(HostError::Timeout { shard }),
            // The shard dropped the request unanswered: it is stopping.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(HostError::Stopped),
        }
    }
}
