//! Subscriptions across shards: this shard's trie of its sessions' filters (a `topic_trie.rs`),
//! the announcements that tell the other shards which filters it has (their `remote_interest`),
//! and the SUBACK / UNSUBACK replies held back, in order, until every other shard has confirmed an
//! announcement (so that a message published anywhere after the client holds its SUBACK reaches
//! it), with the retained messages a SUBACK brings.
//!
//! These are methods of [`BrokerCore`], called by the SUBSCRIBE / UNSUBSCRIBE handlers, session
//! removal and the bus. Nothing here reads a clock, touches a socket or decodes packets.

use std::borrow::Cow;
use std::num::NonZeroU32;

use crate::protocol::TopicFilter;

use super::connection::{PendingReply, KEPT_REPLY_QUEUE};
use super::{share_of, BrokerCore, BusMessage, ConnId, SessionKey, SubOptions, Subscriber};

impl BrokerCore {
    /// Adds or replaces a session's subscription in the trie. Returns true when the filter is new
    /// on this shard (other shards must learn about it).
    pub(super) fn add_subscriber(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        options: SubOptions,
    ) -> bool {
        if filter.is_shared() {
            // A share group's member: `shared.rs` (an invalid share name never gets here).
            if let Ok(Some(group)) = share_of(filter) {
                self.join_shared(key, &group, options.qos, options.id);
            }
            return false;
        }
        self.last_match.forget();
        let (subscribers, created) = self.subscriptions.entry(filter, Vec::new);
        match subscribers.iter_mut().find(|s| s.session == key) {
            Some(existing) => existing.options = options,
            None => subscribers.push(Subscriber {
                session: key,
                options,
            }),
        }
        created
    }

    /// Removes a session's subscription from the trie, telling other shards when the filter is gone.
    pub(super) fn remove_subscriber(&mut self, key: SessionKey, filter: &TopicFilter) {
        if filter.is_shared() {
            if let Ok(Some(group)) = share_of(filter) {
                self.leave_shared(key, &group);
            }
            return;
        }
        self.last_match.forget();
        let Some(subscribers) = self.subscriptions.get_mut(filter) else {
            return;
        };
        subscribers.retain(|s| s.session != key);
        if subscribers.is_empty() {
            self.subscriptions.remove(filter);
            self.broadcast_interest(filter, false, None);
        }
    }

    /// Tells every other shard that `filter` appeared on (or left) this shard. With a token, each
    /// of them confirms, and until all have, the filter counts as still being announced.
    pub(super) fn broadcast_interest(
        &mut self,
        filter: &TopicFilter,
        added: bool,
        token: Option<u64>,
    ) {
        let peers = self.peers().count();
        if let Some(token) = token.filter(|_| peers > 0) {
            let announcement = self.announcements.entry(token).or_default();
            announcement.filters.push(filter.clone());
            announcement.remaining += peers;
            *self.announcing.entry(filter.clone()).or_insert(0) += 1;
        }
        for to in self.peers() {
            self.send_bus(
                to,
                BusMessage::Interest {
                    from: self.shard,
                    filter: filter.clone(),
                    added,
                    token,
                },
            );
        }
    }

    /// Tells the cluster link every filter this shard holds (at start, after recovery: the link
    /// learns the recovered sessions' subscriptions as the other shards learned them from the
    /// snapshot). Nothing without a cluster.
    pub fn announce_interest_to_link(&mut self) {
        let Some(link) = self.link else {
            return;
        };
        let filters: Vec<TopicFilter> = self
            .subscriptions
            .iter()
            .into_iter()
            .filter_map(|(filter, _)| TopicFilter::new(&filter).ok())
            .collect();
        for filter in filters {
            self.send_bus(
                link,
                BusMessage::Interest {
                    from: self.shard,
                    filter,
                    added: true,
                    token: None,
                },
            );
        }
    }

    /// Queues `reply` behind any pending ones, or writes it now.
    pub(super) fn reply_in_order(&mut self, conn: ConnId, pending: PendingReply) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if let Some(token) = pending.token {
            self.pending_tokens.insert(token, conn);
        }
        connection
            .pending_replies
            .get_or_insert_with(Box::default)
            .push_back(pending);
        self.flush_replies(conn);
    }

    /// Whether an announcement of `filter` from this shard is still unconfirmed somewhere.
    pub(super) fn is_announcing(&self, filter: &TopicFilter) -> bool {
        self.announcing.contains_key(filter)
    }

    /// One shard confirmed the announcements carrying `token`; when all have, they are in effect.
    pub(super) fn announcement_confirmed(&mut self, token: u64) {
        let Some(announcement) = self.announcements.get_mut(&token) else {
            return;
        };
        announcement.remaining = announcement.remaining.saturating_sub(1);
        if announcement.remaining > 0 {
            return;
        }
        let Some(announcement) = self.announcements.remove(&token) else {
            return;
        };
        for filter in announcement.filters {
            if let Some(count) = self.announcing.get_mut(&filter) {
                *count -= 1;
                if *count == 0 {
                    self.announcing.remove(&filter);
                }
            }
        }
    }

    pub(super) fn interest_confirmed(&mut self, token: u64) {
        let Some(&conn) = self.pending_tokens.get(&token) else {
            return;
        };
        // Nothing waits any more when the connection is gone or closed (its replies dropped).
        let mut done = true;
        if let Some(connection) = self.connections.get_mut(&conn) {
            if let Some(p) = connection
                .pending_replies
                .iter_mut()
                .flat_map(|queue| queue.iter_mut())
                .find(|p| p.token == Some(token))
            {
                p.remaining = p.remaining.saturating_sub(1);
                done = p.remaining == 0;
            }
        }
        if done {
            self.pending_tokens.remove(&token);
            self.flush_replies(conn);
        }
    }

    /// Writes the replies at the head of the queue whose confirmations are all in, in order.
    pub(super) fn flush_replies(&mut self, conn: ConnId) {
        loop {
            let Some(connection) = self.connections.get_mut(&conn) else {
                return;
            };
            let Some(queue) = connection.pending_replies.as_mut() else {
                return;
            };
            let Some(front) = queue.front() else {
                return;
            };
            if front.remaining > 0 {
                return;
            }
            let wait = front.wait.clone();
            if !self.durable_done(wait.as_ref()) {
                self.waits_durable(conn);
                return;
            }
            let Some(connection) = self.connections.get_mut(&conn) else {
                return;
            };
            let Some(queue) = connection.pending_replies.as_mut() else {
                return;
            };
            let Some(reply) = queue.pop_front() else {
                return;
            };
            if queue.is_empty() && queue.capacity() > KEPT_REPLY_QUEUE {
                connection.pending_replies = None;
            }
            let key = connection.session;
            self.write_reply(conn, &reply.reply);
            for (filter, _) in &reply.retained_for {
                // At the grant in force now, and none for a filter unsubscribed while the SUBACK
                // waited: nothing new is delivered for it after UNSUBSCRIBE [MQTT-3.10.4-2].
                let held = self
                    .sessions
                    .get(key)
                    .and_then(|s| s.subscriptions.get(filter));
                let Some(&SubOptions {
                    qos: granted, id, ..
                }) = held
                else {
                    continue;
                };
                let ids = id.map(NonZeroU32::get);
                let ids = ids.as_slice();
                let receive_checked = self.settings.plugins.checks_receive();
                for message in self.retained.matching(filter, self.clock) {
                    if receive_checked && !self.may_receive(key, &message.topic) {
                        continue;
                    }
                    let qos = granted.min(message.qos);
                    self.deliver_to_session(key, Cow::Owned(message), qos, true, ids);
                }
            }
        }
    }

    pub(super) fn new_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }
}
