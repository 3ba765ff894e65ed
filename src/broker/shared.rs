//! Shared subscriptions, `$share/{group}/{filter}` (MQTT 5.0 §4.8.2; accepted from MQTT 3.1.1
//! clients too): each message that matches `filter` goes to exactly one member of each group,
//! whichever shard the members live on.
//!
//! Who knows what:
//! - Every shard keeps, per group, how many members each shard has, online and offline
//!   ([`BusMessage::ShareMembers`], absolute counts, sent when a shard's members change or come
//!   and go; with a token when a SUBSCRIBE waits: its SUBACK leaves once every other shard knows).
//! - The shard where a message enters the broker (`route`) chooses, per matching group, the shard
//!   of the member by `shared_subscription_strategy` over all members (online ones; offline
//!   persistent ones only when none is online and the message is QoS 1/2), and sends the message
//!   there as a targeted [`BusMessage::SharedPublish`], or delivers it here. Forwarded publishes
//!   (`deliver_local`, batches from other shards) never reach a group: no duplicates.
//! - The shard that receives a targeted message picks one of its members; when it has none left
//!   (it left meanwhile), it passes the message on to another shard with members, a bounded
//!   number of hops.
//! - In a cluster the link (bus index `shards`) is one more holder of members: it announces the
//!   other nodes' members together, a message the strategy gives it goes to one member on one
//!   other node (`src/cluster`), and it is told this shard's counts as the shards are. A message
//!   it brings from another node (`local_only`) goes to this node's members only: never back.
//! - A member whose session ends (clean session disconnected, session expired or discarded) gives
//!   its unacknowledged QoS 1/2 messages to another member of their group. A persistent member
//!   that is merely offline keeps them (MQTT 5.0 §4.8.2 allows the wait) and gets no new ones
//!   while another member is online.
//!
//! A shared subscription is kept in the session's subscription map under its full `$share/g/f`
//! text (journaling, recovery, takeover and listing need nothing else); here are only the groups.
//! No retained messages are sent on a shared subscription (`handlers/subscribe.rs`). Nothing here
//! reads a clock, touches a socket or decodes packets.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::protocol::{QoS, TopicFilter};

use super::{BrokerCore, BusMessage, ConnId, DeliveryStamp, Message, Session, SessionKey};

mod groups;
#[cfg(test)]
pub(super) use groups::ShareCount;
pub(super) use groups::SharedGroups;
use groups::{client_hash, max_hops, next_random, Group, Member};
pub use groups::{share_of, Chooser, InvalidShare, Pick, ShareGroup, SharedStrategy};

impl BrokerCore {
    // ---- membership ------------------------------------------------------------------------------

    /// A session of this shard joins a group (or changes its granted QoS or Subscription
    /// Identifier in it).
    pub(super) fn join_shared(
        &mut self,
        key: SessionKey,
        id: &ShareGroup,
        qos: QoS,
        sub_id: Option<NonZeroU32>,
    ) {
        let group = self.shared.get_or_insert(id, self.participants());
        let joined = Member {
            session: key,
            qos,
            id: sub_id,
        };
        match group.local.iter_mut().find(|m| m.session == key) {
            Some(member) => *member = joined,
            None => group.local.push(joined),
        }
        self.refresh_group(id);
    }

    /// A session of this shard leaves a group (unsubscribed, or its session ended).
    pub(super) fn leave_shared(&mut self, key: SessionKey, id: &ShareGroup) {
        if let Some(groups) = self.shared.by_filter.get_mut(&id.filter) {
            if let Some(group) = groups.iter_mut().find(|g| g.id.name == id.name) {
                group.local.retain(|m| m.session != key);
                if group.sticky_local.get() == Some(key) {
                    group.sticky_local.set(None);
                }
            }
        }
        self.refresh_group(id);
    }

    /// A session's client came or went: the groups it is in count it online or offline now.
    pub(super) fn shared_presence_changed(&mut self, key: SessionKey) {
        if self.shared.groups == 0 {
            return;
        }
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        for id in &groups_of(session) {
            self.refresh_group(id);
        }
    }

    /// Recounts this shard's members of a group and marks it for announcement.
    fn refresh_group(&mut self, id: &ShareGroup) {
        let me = self.shard;
        if let Some(groups) = self.shared.by_filter.get_mut(&id.filter) {
            if let Some(group) = groups.iter_mut().find(|g| g.id.name == id.name) {
                let online = group
                    .local
                    .iter()
                    .filter(|m| self.sessions.get(m.session).is_some_and(|s| s.is_online()))
                    .count();
                let all = group.local.len();
                group.online[me] = u32::try_from(online).unwrap_or(u32::MAX);
                group.offline[me] = u32::try_from(all - online).unwrap_or(u32::MAX);
            }
        }
        self.shared.forget_if_empty(id);
        if self.shards > 1 || self.link.is_some() {
            self.shared.mark_dirty(id);
        }
    }

    /// The bus's participants: the shards, then the cluster link (which counts the members of
    /// every other node of the cluster).
    fn participants(&self) -> usize {
        self.shards + usize::from(self.link.is_some())
    }

    /// Every group this shard knows, as `$share/name/filter`, with the members it counts on each
    /// shard, online and offline (the simulation compares shards' views).
    #[cfg(test)]
    pub(super) fn share_counts(&self) -> Vec<ShareCount> {
        let mut out: Vec<ShareCount> = self
            .shared
            .by_filter
            .iter()
            .into_iter()
            .flat_map(|(_, groups)| groups.iter())
            .map(|g| {
                let group = format!("$share/{}/{}", g.id.name, g.id.filter);
                ShareCount {
                    group,
                    online: g.online.clone(),
                    offline: g.offline.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Groups whose members here changed and are not announced yet.
    pub(super) fn shared_unannounced(&self) -> usize {
        self.shared.dirty.len()
    }

    /// Tells the other shards (and the cluster link) how many members this shard has in each
    /// group that changed. With a token, each confirms with [`BusMessage::SharedAck`]; returns
    /// how many groups were announced (each peer confirms each).
    pub(super) fn announce_shared(&mut self, token: Option<u64>) -> usize {
        if self.shared.dirty.is_empty() {
            return 0;
        }
        let dirty = std::mem::take(&mut self.shared.dirty);
        let me = self.shard;
        for id in &dirty {
            let (online, offline) = self
                .shared
                .get(id)
                .map_or((0, 0), |g| (g.online[me], g.offline[me]));
            for to in self.peers() {
                self.send_bus(
                    to,
                    BusMessage::ShareMembers {
                        from: me,
                        group: id.clone(),
                        online,
                        offline,
                        token,
                    },
                );
            }
        }
        dirty.len()
    }

    /// Shard `from` (or the cluster link, for the other nodes together) announced its members
    /// of a group.
    pub(super) fn share_members_announced(
        &mut self,
        from: usize,
        id: &ShareGroup,
        online: u32,
        offline: u32,
    ) {
        let participants = self.participants();
        if from == self.shard || from >= participants {
            return;
        }
        let group = self.shared.get_or_insert(id, participants);
        group.online[from] = online;
        group.offline[from] = offline;
        self.shared.forget_if_empty(id);
    }

    /// Recovery: shard `shard` restored a session subscribed to `filter` (a `$share/...` one):
    /// counted as one offline member until that shard announces its real counts.
    pub(super) fn restore_remote_share(&mut self, shard: usize, filter: &TopicFilter) {
        let Ok(Some(id)) = share_of(filter) else {
            return;
        };
        if shard == self.shard || shard >= self.shards {
            return;
        }
        let group = self.shared.get_or_insert(&id, self.participants());
        group.offline[shard] = group.offline[shard].max(1);
    }

    // ---- routing -------------------------------------------------------------------------------

    /// A message that entered the broker on this shard (`route`): one member of every group whose
    /// filter matches gets it. `publisher` is the connection it came from (`hash_client_id`).
    pub(super) fn route_shared(&mut self, message: &Message, publisher: Option<ConnId>) {
        if self.shared.groups == 0 {
            return;
        }
        let hash = match self.shared.strategy {
            SharedStrategy::HashClientId => publisher
                .and_then(|conn| self.client_id_of(conn))
                .map(|id| client_hash(&id)),
            _ => None,
        };
        if let Some(journal) = self.journal.as_deref_mut() {
            // A message of its own for the journal: the last delivery's id is not this one's.
            journal.current_msg = None;
        }
        let pick = Pick {
            strategy: self.shared.strategy,
            hash,
            stored: message.qos != QoS::AtMostOnce,
            rng: &self.shared.rng,
        };
        let mut targets: Vec<(usize, Arc<ShareGroup>)> = Vec::new();
        self.shared
            .by_filter
            .for_each_match(message.topic.as_bytes(), |groups| {
                for group in groups {
                    if let Some(shard) = group.choose_shard(pick, &[]) {
                        targets.push((shard, group.id.clone()));
                    }
                }
            });
        let to = Targeted {
            hash,
            hops: 0,
            local_only: false,
        };
        for (shard, id) in targets {
            self.send_to_group_member(shard, id, message, to, true);
        }
    }

    /// Delivers to a member of `id` on `shard`: here, or as a targeted message (with a delivery
    /// stamp the publisher's acknowledgement waits for when `stamped` and persistence is on). The
    /// cluster link is a `shard` too: it passes the message on to one other node's members.
    fn send_to_group_member(
        &mut self,
        shard: usize,
        id: Arc<ShareGroup>,
        message: &Message,
        to: Targeted,
        stamped: bool,
    ) {
        if shard == self.shard {
            self.deliver_shared(&id, message, to);
            return;
        }
        let me = self.shard;
        // The publishes batched for `shard` leave first with the number their waits were given
        // (`batch_publish`); this message takes the next one.
        self.send_batch(shard);
        let stamp = match self.journal.as_deref_mut() {
            Some(journal) if stamped && message.qos != QoS::AtMostOnce => {
                let stamp = journal.stamp_for(shard, me);
                if let Some(stamp) = stamp {
                    journal.route_waits.push((shard, stamp.n));
                }
                stamp
            }
            _ => None,
        };
        self.send_bus(
            shard,
            BusMessage::SharedPublish {
                group: id,
                message: Message {
                    retain: false,
                    ..message.clone()
                },
                hash: to.hash,
                hops: to.hops,
                stamp,
                local_only: to.local_only,
            },
        );
    }

    /// A targeted message from another shard (or, `to.local_only`, from another node through
    /// the cluster link) for one of this shard's members of a group.
    pub(super) fn shared_publish_received(
        &mut self,
        id: &Arc<ShareGroup>,
        message: &Message,
        to: Targeted,
        stamp: Option<DeliveryStamp>,
    ) {
        let mark = self.journal_mark();
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.current_msg = None;
        }
        self.deliver_shared(id, message, to);
        if let Some(stamp) = stamp {
            self.delivery_received(stamp, mark);
        }
    }

    /// Gives `message` to one of this shard's members of `id` (online ones first; an offline
    /// persistent one queues a QoS 1/2 message); with none that may take it, passes it on.
    fn deliver_shared(&mut self, id: &Arc<ShareGroup>, message: &Message, to: Targeted) {
        let hash = to.hash;
        let candidates = self.local_candidates(id, message.qos != QoS::AtMostOnce);
        let receive_checked = self.settings.plugins.checks_receive();
        let n = candidates.len();
        let first = self
            .shared
            .get(id)
            .map_or(0, |group| self.first_candidate(group, &candidates, hash));
        for i in 0..n {
            let member = candidates[(first + i) % n];
            if receive_checked && !self.may_receive(member.session, &message.topic) {
                continue;
            }
            if let Some(group) = self.shared.get(id) {
                group.sticky_local.set(Some(member.session));
            }
            self.stats.shared_deliveries += 1;
            let qos = member.qos.min(message.qos);
            let ids = member.id.map(NonZeroU32::get);
            let ids = ids.as_slice();
            if message.retain {
                // A live message's RETAIN is cleared [MQTT-3.3.1-9]: set, the session sends it.
                let cleared = Message {
                    retain: false,
                    ..message.clone()
                };
                self.deliver_to_session(member.session, Cow::Owned(cleared), qos, false, ids);
            } else {
                self.deliver_to_session(member.session, Cow::Borrowed(message), qos, false, ids);
            }
            return;
        }
        self.pass_on(id, message, to);
    }

    /// This shard's members of `id` that may get a message: the online ones, or when there are
    /// none and the message is QoS 1/2 (`stored`), the offline ones (it waits in their queue).
    fn local_candidates(&self, id: &ShareGroup, stored: bool) -> Vec<Member> {
        let Some(group) = self.shared.get(id) else {
            return Vec::new();
        };
        let online = |m: &&Member| self.sessions.get(m.session).is_some_and(|s| s.is_online());
        let mut candidates: Vec<Member> = group.local.iter().filter(online).copied().collect();
        if candidates.is_empty() && stored {
            candidates = group.local.clone();
        }
        candidates
    }

    /// Where among `candidates` the strategy starts.
    fn first_candidate(&self, group: &Group, candidates: &[Member], hash: Option<u64>) -> usize {
        let n = candidates.len().max(1);
        match (self.shared.strategy, hash) {
            (SharedStrategy::Sticky, _) => {
                let kept = group.sticky_local.get();
                match candidates.iter().position(|m| Some(m.session) == kept) {
                    Some(at) => at,
                    None => next_random(&self.shared.rng) as usize % n,
                }
            }
            (SharedStrategy::HashClientId, Some(hash)) => (hash % n as u64) as usize,
            (SharedStrategy::Random, _) => next_random(&self.shared.rng) as usize % n,
            _ => {
                let i = group.next_local.get();
                group.next_local.set(i.wrapping_add(1));
                i % n
            }
        }
    }

    /// No member here could take a targeted message (they left, or went offline, since it was
    /// sent): another shard with members gets it (or another node, unless it came from one:
    /// `local_only`), or after too many hops it is dropped (counted).
    fn pass_on(&mut self, id: &Arc<ShareGroup>, message: &Message, to: Targeted) {
        let hops = to.hops.saturating_add(1);
        let mut exclude = vec![self.shard];
        if to.local_only {
            exclude.extend(self.link);
        }
        let pick = Pick {
            strategy: self.shared.strategy,
            hash: to.hash,
            stored: message.qos != QoS::AtMostOnce,
            rng: &self.shared.rng,
        };
        let next = self
            .shared
            .get(id)
            .and_then(|group| group.choose_shard(pick, &exclude));
        match next {
            Some(shard) if hops < max_hops(self.participants()) => {
                self.stats.shared_redistributed += 1;
                let to = Targeted { hops, ..to };
                self.send_to_group_member(shard, id.clone(), message, to, false);
            }
            _ => {
                self.stats.shared_dropped += 1;
                log::debug!(
                    "shared subscription $share/{}/{}: no member for a message to {}",
                    id.name,
                    id.filter,
                    message.topic
                );
            }
        }
    }

    /// A session that ends (`remove_session`, after it left its groups): its QoS 1/2 messages
    /// the client has not acknowledged, which matched one of its shared subscriptions, go to
    /// another member of that group.
    pub(super) fn redistribute_shared(&mut self, session: &Session) {
        let groups = groups_of(session);
        if groups.is_empty() {
            return;
        }
        for message in session.unacknowledged(self.clock) {
            let Some(id) = groups.iter().find(|g| g.filter.matches(&message.topic)) else {
                continue;
            };
            let pick = Pick {
                strategy: self.shared.strategy,
                hash: None,
                stored: true,
                rng: &self.shared.rng,
            };
            let target = self
                .shared
                .get(id)
                .and_then(|group| group.choose_shard(pick, &[]));
            let Some(shard) = target else {
                self.stats.shared_dropped += 1;
                continue;
            };
            self.stats.shared_redistributed += 1;
            if let Some(journal) = self.journal.as_deref_mut() {
                journal.current_msg = None;
            }
            let id = match self.shared.get(id) {
                Some(group) => group.id.clone(),
                None => Arc::new(id.clone()),
            };
            let to = Targeted {
                hash: None,
                hops: 0,
                local_only: false,
            };
            self.send_to_group_member(shard, id, &message, to, false);
        }
    }
}

/// How a targeted message travels: the publisher's hash (`hash_client_id`), how often it was
/// passed on for want of a member, and whether it came from another node (then only this
/// node's members may get it: never bounced back to the cluster).
#[derive(Debug, Clone, Copy)]
pub(super) struct Targeted {
    pub(super) hash: Option<u64>,
    pub(super) hops: u8,
    pub(super) local_only: bool,
}

/// The groups a session is a member of (its `$share/...` subscriptions).
fn groups_of(session: &Session) -> Vec<ShareGroup> {
    session
        .subscriptions
        .keys()
        .filter(|f| f.is_shared())
        .filter_map(|f| share_of(f).ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests;
