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
use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::protocol::{QoS, Share, TopicFilter};

use super::topic_trie::TopicTrie;
use super::{BrokerCore, BusMessage, ConnId, DeliveryStamp, Message, SessionKey};

/// How the member that gets a message is chosen (`shared_subscription_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedStrategy {
    /// Each member in turn (per group, on each publishing shard).
    #[default]
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member until it leaves or goes offline.
    Sticky,
    /// By a hash of the publisher's client id: one publisher's messages go to one member while
    /// the group stays the same (as EMQX's `hash_clientid`).
    HashClientId,
}

impl SharedStrategy {
    /// The configuration's spellings, in order.
    pub const NAMES: [&'static str; 4] = ["round_robin", "random", "sticky", "hash_client_id"];

    pub fn as_str(self) -> &'static str {
        match self {
            SharedStrategy::RoundRobin => Self::NAMES[0],
            SharedStrategy::Random => Self::NAMES[1],
            SharedStrategy::Sticky => Self::NAMES[2],
            SharedStrategy::HashClientId => Self::NAMES[3],
        }
    }
}

impl fmt::Display for SharedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SharedStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(SharedStrategy::RoundRobin),
            "random" => Ok(SharedStrategy::Random),
            "sticky" => Ok(SharedStrategy::Sticky),
            "hash_client_id" => Ok(SharedStrategy::HashClientId),
            other => Err(format!(
                "must be one of {}, got {other:?}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Why a `$share/...` filter is refused in a SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidShare(pub &'static str);

impl InvalidShare {
    /// Its MQTT 5 SUBACK reason code: 0x8F Topic Filter invalid (MQTT 3.1.1 has only 0x80).
    pub fn v5_reason_code(self) -> crate::protocol::ReasonCode {
        crate::protocol::ReasonCode::TOPIC_FILTER_INVALID
    }
}

/// A shared subscription as the broker reads a SUBSCRIBE filter: `Ok(None)` for an ordinary one.
pub fn share_of(filter: &TopicFilter) -> Result<Option<ShareGroup>, InvalidShare> {
    match filter.share() {
        Share::NotShared => Ok(None),
        Share::Invalid(why) => Err(InvalidShare(why)),
        Share::Shared { group, filter } => Ok(Some(ShareGroup {
            name: group.into(),
            filter,
        })),
    }
}

/// A share group: its name and the filter its members share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareGroup {
    pub name: Box<str>,
    pub filter: TopicFilter,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    session: SessionKey,
    qos: QoS,
}

/// What this shard knows of one group.
#[derive(Debug)]
struct Group {
    id: Arc<ShareGroup>,
    /// Per shard: its members whose client is online, and its offline (persistent) ones, as that
    /// shard last announced; this shard's own entries are kept current by `refresh_group`.
    online: Vec<u32>,
    offline: Vec<u32>,
    /// This shard's members.
    local: Vec<Member>,
    /// Round robin: the next index over all members (choosing a shard) and over this shard's.
    next: Cell<usize>,
    next_local: Cell<usize>,
    /// Sticky: the shard chosen last and this shard's member chosen last.
    sticky: Cell<Option<usize>>,
    sticky_local: Cell<Option<SessionKey>>,
}

impl Group {
    fn new(id: Arc<ShareGroup>, shards: usize) -> Group {
        Group {
            id,
            online: vec![0; shards],
            offline: vec![0; shards],
            local: Vec::new(),
            next: Cell::new(0),
            next_local: Cell::new(0),
            sticky: Cell::new(None),
            sticky_local: Cell::new(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.online.iter().chain(&self.offline).all(|&n| n == 0)
    }

    /// The shard of the member that gets a message, all shards but `exclude` considered: among
    /// online members, or (`stored`: a QoS 1/2 message) offline ones when none is online.
    fn choose_shard(
        &self,
        strategy: SharedStrategy,
        hash: Option<u64>,
        stored: bool,
        exclude: Option<usize>,
        rng: &Cell<u64>,
    ) -> Option<usize> {
        let sum = |counts: &[u32]| -> u64 {
            let all = counts.iter().map(|&n| u64::from(n)).sum::<u64>();
            all - exclude.map_or(0, |s| counts.get(s).map_or(0, |&n| u64::from(n)))
        };
        let counts = if sum(&self.online) > 0 {
            &self.online
        } else if stored && sum(&self.offline) > 0 {
            &self.offline
        } else {
            return None;
        };
        let total = sum(counts);
        let usable = |s: usize| Some(s) != exclude && counts.get(s).is_some_and(|&n| n > 0);
        if strategy == SharedStrategy::Sticky {
            if let Some(s) = self.sticky.get().filter(|&s| usable(s)) {
                return Some(s);
            }
        }
        let mut index = match (strategy, hash) {
            (SharedStrategy::HashClientId, Some(hash)) => hash,
            (SharedStrategy::Random | SharedStrategy::Sticky, _) => next_random(rng),
            _ => {
                let i = self.next.get();
                self.next.set(i.wrapping_add(1));
                i as u64
            }
        } % total;
        for (shard, &n) in counts.iter().enumerate() {
            if Some(shard) == exclude {
                continue;
            }
            if index < u64::from(n) {
                self.sticky.set(Some(shard));
                return Some(shard);
            }
            index -= u64::from(n);
        }
        None
    }
}

/// xorshift64*: deterministic (the simulation replays seeds), good enough to spread messages.
fn next_random(state: &Cell<u64>) -> u64 {
    let mut x = state.get().max(1);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// FNV-1a of a client id (`hash_client_id`): the same on every shard and every run.
fn client_hash(client_id: &str) -> u64 {
    client_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hops a targeted message may make between shards looking for a member before it is dropped.
fn max_hops(shards: usize) -> u8 {
    u8::try_from(shards.saturating_add(1)).unwrap_or(u8::MAX)
}

/// One shard's share groups (a field of [`BrokerCore`]).
#[derive(Debug)]
pub(super) struct SharedGroups {
    strategy: SharedStrategy,
    /// Groups by the filter they share (matching a topic walks this once).
    by_filter: TopicTrie<Vec<Group>>,
    /// How many groups this shard knows of (here or elsewhere): 0 costs routing one branch.
    groups: usize,
    /// Groups whose members on this shard changed since they were last announced, in order.
    dirty: Vec<Arc<ShareGroup>>,
    rng: Cell<u64>,
}

impl SharedGroups {
    pub(super) fn new(strategy: SharedStrategy, seed: u64) -> SharedGroups {
        SharedGroups {
            strategy,
            by_filter: TopicTrie::new(),
            groups: 0,
            dirty: Vec::new(),
            rng: Cell::new(seed | 1),
        }
    }

    /// Whether some group anywhere shares a filter that matches `topic`.
    pub(super) fn matches(&self, topic: &[u8]) -> bool {
        self.groups > 0 && self.by_filter.matches_any(topic)
    }

    fn get(&self, id: &ShareGroup) -> Option<&Group> {
        let groups = self.by_filter.get(&id.filter)?;
        groups.iter().find(|g| g.id.name == id.name)
    }

    fn get_or_insert(&mut self, id: &ShareGroup, shards: usize) -> &mut Group {
        let (groups, _) = self.by_filter.entry(&id.filter, Vec::new);
        let at = match groups.iter().position(|g| g.id.name == id.name) {
            Some(at) => at,
            None => {
                groups.push(Group::new(Arc::new(id.clone()), shards));
                self.groups += 1;
                groups.len() - 1
            }
        };
        &mut groups[at]
    }

    /// Forgets `id` if no shard has a member left.
    fn forget_if_empty(&mut self, id: &ShareGroup) {
        let Some(groups) = self.by_filter.get_mut(&id.filter) else {
            return;
        };
        let before = groups.len();
        groups.retain(|g| g.id.name != id.name || !g.is_empty());
        self.groups -= before - groups.len();
        if groups.is_empty() {
            self.by_filter.remove(&id.filter);
        }
    }

    fn mark_dirty(&mut self, id: &ShareGroup) {
        if !self.dirty.iter().any(|d| **d == *id) {
            self.dirty.push(Arc::new(id.clone()));
        }
    }
}

impl BrokerCore {
    // ---- membership ------------------------------------------------------------------------------

    /// A session of this shard joins a group (or changes its granted QoS in it).
    pub(super) fn join_shared(&mut self, key: SessionKey, id: &ShareGroup, qos: QoS) {
        let group = self.shared.get_or_insert(id, self.shards);
        match group.local.iter_mut().find(|m| m.session == key) {
            Some(member) => member.qos = qos,
            None => group.local.push(Member { session: key, qos }),
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
        let groups: Vec<ShareGroup> = session
            .subscriptions
            .keys()
            .filter(|f| f.is_shared())
            .filter_map(|f| share_of(f).ok().flatten())
            .collect();
        for id in &groups {
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
        if self.shards > 1 {
            self.shared.mark_dirty(id);
        }
    }

    /// Groups whose members here changed and are not announced yet.
    pub(super) fn shared_unannounced(&self) -> usize {
        self.shared.dirty.len()
    }

    /// Tells the other shards how many members this shard has in each group that changed. With
    /// a token, each confirms with [`BusMessage::SharedAck`]; returns how many groups were
    /// announced (each other shard confirms each).
    pub(super) fn announce_shared(&mut self, token: Option<u64>) -> usize {
        let dirty = std::mem::take(&mut self.shared.dirty);
        let (me, shards) = (self.shard, self.shards);
        for id in &dirty {
            let (online, offline) = self
                .shared
                .get(id)
                .map_or((0, 0), |g| (g.online[me], g.offline[me]));
            for to in (0..shards).filter(|&s| s != me) {
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

    /// Shard `from` announced its members of a group.
    pub(super) fn share_members_announced(
        &mut self,
        from: usize,
        id: &ShareGroup,
        online: u32,
        offline: u32,
    ) {
        if from == self.shard || from >= self.shards {
            return;
        }
        let shards = self.shards;
        let group = self.shared.get_or_insert(id, shards);
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
        let group = self.shared.get_or_insert(&id, self.shards);
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
        let stored = message.qos != QoS::AtMostOnce;
        let (strategy, rng) = (self.shared.strategy, &self.shared.rng);
        let mut targets: Vec<(usize, Arc<ShareGroup>)> = Vec::new();
        self.shared
            .by_filter
            .for_each_match(message.topic.as_bytes(), |groups| {
                for group in groups {
                    if let Some(shard) = group.choose_shard(strategy, hash, stored, None, rng) {
                        targets.push((shard, group.id.clone()));
                    }
                }
            });
        for (shard, id) in targets {
            self.send_to_group_member(shard, id, message, hash, 0, true);
        }
    }

    /// Delivers to a member of `id` on `shard`: here, or as a targeted message (with a delivery
    /// stamp the publisher's acknowledgement waits for when `stamped` and persistence is on).
    fn send_to_group_member(
        &mut self,
        shard: usize,
        id: Arc<ShareGroup>,
        message: &Message,
        hash: Option<u64>,
        hops: u8,
        stamped: bool,
    ) {
        if shard == self.shard {
            self.deliver_shared(&id, message, hash, hops);
            return;
        }
        let me = self.shard;
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
                hash,
                hops,
                stamp,
            },
        );
    }

    /// A targeted message from another shard for one of this shard's members of a group.
    pub(super) fn shared_publish_received(
        &mut self,
        id: &Arc<ShareGroup>,
        message: &Message,
        hash: Option<u64>,
        hops: u8,
        stamp: Option<DeliveryStamp>,
    ) {
        let mark = self.journal_mark();
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.current_msg = None;
        }
        self.deliver_shared(id, message, hash, hops);
        if let Some(stamp) = stamp {
            self.delivery_received(stamp, mark);
        }
    }

    /// Gives `message` to one of this shard's members of `id` (online ones first; an offline
    /// persistent one queues a QoS 1/2 message); with none that may take it, passes it on.
    fn deliver_shared(
        &mut self,
        id: &Arc<ShareGroup>,
        message: &Message,
        hash: Option<u64>,
        hops: u8,
    ) {
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
            self.deliver_to_session(member.session, Cow::Borrowed(message), qos, false);
            return;
        }
        self.pass_on(id, message, hash, hops);
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
    /// sent): another shard with members gets it, or after too many hops it is dropped (counted).
    fn pass_on(&mut self, id: &Arc<ShareGroup>, message: &Message, hash: Option<u64>, hops: u8) {
        let hops = hops.saturating_add(1);
        let me = self.shard;
        let stored = message.qos != QoS::AtMostOnce;
        let next = self.shared.get(id).and_then(|group| {
            group.choose_shard(
                self.shared.strategy,
                hash,
                stored,
                Some(me),
                &self.shared.rng,
            )
        });
        match next {
            Some(shard) if hops < max_hops(self.shards) => {
                self.stats.shared_redistributed += 1;
                self.send_to_group_member(shard, id.clone(), message, hash, hops, false);
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
    pub(super) fn redistribute_shared(&mut self, session: &super::Session) {
        let groups: Vec<ShareGroup> = session
            .subscriptions
            .keys()
            .filter(|f| f.is_shared())
            .filter_map(|f| share_of(f).ok().flatten())
            .collect();
        if groups.is_empty() {
            return;
        }
        for message in session.unacknowledged() {
            let Some(id) = groups.iter().find(|g| g.filter.matches(&message.topic)) else {
                continue;
            };
            let target = self.shared.get(id).and_then(|group| {
                group.choose_shard(self.shared.strategy, None, true, None, &self.shared.rng)
            });
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
            self.send_to_group_member(shard, id, &message, None, 0, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_read_their_configuration_names() {
        for name in SharedStrategy::NAMES {
            let strategy: SharedStrategy = name.parse().expect("a strategy");
            assert_eq!(strategy.as_str(), name);
        }
        assert_eq!(SharedStrategy::default(), SharedStrategy::RoundRobin);
        let error = "fastest".parse::<SharedStrategy>().expect_err("unknown");
        assert!(error.contains("round_robin"), "{error}");
    }

    #[test]
    fn an_invalid_share_name_is_0x8f_for_mqtt_5() {
        let filter = TopicFilter::new("$share/+/t").expect("a valid filter");
        let refused = share_of(&filter).expect_err("an invalid share name");
        assert_eq!(refused.v5_reason_code().0, 0x8f);
        let ordinary = TopicFilter::new("a/+").expect("a valid filter");
        assert_eq!(share_of(&ordinary), Ok(None));
    }

    fn group(online: &[u32], offline: &[u32]) -> Group {
        let id = share_of(&TopicFilter::new("$share/g/t").expect("valid"))
            .expect("valid")
            .expect("shared");
        let mut group = Group::new(Arc::new(id), online.len());
        group.online = online.to_vec();
        group.offline = offline.to_vec();
        group
    }

    #[test]
    fn round_robin_visits_every_member_of_every_shard_in_turn() {
        let g = group(&[1, 2, 0], &[5, 0, 5]);
        let rng = Cell::new(1);
        let picks: Vec<_> = (0..6)
            .map(|_| g.choose_shard(SharedStrategy::RoundRobin, None, true, None, &rng))
            .collect();
        let expected = [0, 1, 1, 0, 1, 1].map(Some);
        assert_eq!(picks, expected, "online members only, shard 1 has two");
    }

    #[test]
    fn offline_members_get_only_stored_messages_when_none_is_online() {
        let g = group(&[0, 0], &[0, 3]);
        let rng = Cell::new(1);
        assert_eq!(
            g.choose_shard(SharedStrategy::RoundRobin, None, false, None, &rng),
            None
        );
        assert_eq!(
            g.choose_shard(SharedStrategy::RoundRobin, None, true, None, &rng),
            Some(1)
        );
        assert_eq!(
            g.choose_shard(SharedStrategy::Random, None, true, Some(1), &rng),
            None
        );
    }

    #[test]
    fn sticky_keeps_its_shard_and_hash_follows_the_publisher() {
        let mut g = group(&[1, 1, 1], &[0, 0, 0]);
        let rng = Cell::new(7);
        let first = g.choose_shard(SharedStrategy::Sticky, None, false, None, &rng);
        for _ in 0..10 {
            assert_eq!(
                g.choose_shard(SharedStrategy::Sticky, None, false, None, &rng),
                first
            );
        }
        let Some(left) = first else {
            panic!("a shard was chosen");
        };
        g.online[left] = 0;
        let next = g.choose_shard(SharedStrategy::Sticky, None, false, None, &rng);
        assert!(
            next.is_some() && next != first,
            "moves when its member leaves"
        );
        let a = Some(client_hash("publisher-a"));
        let pick = g.choose_shard(SharedStrategy::HashClientId, a, false, None, &rng);
        for _ in 0..5 {
            assert_eq!(
                g.choose_shard(SharedStrategy::HashClientId, a, false, None, &rng),
                pick
            );
        }
    }
}
