//! The share groups' data (`shared.rs` has what the broker does with them): the strategy,
//! the group names, each group's members here and counts per shard, and how a shard is chosen.
//! Nothing here touches sessions, the bus or the journal.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::Arc;

pub use crate::config::SharedStrategy;
use crate::protocol::{QoS, Share, TopicFilter};

use super::super::topic_trie::TopicTrie;
use super::super::SessionKey;

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

/// What one shard counts of a group's members on each shard (the simulation compares them).
#[cfg(test)]
#[derive(Debug)]
pub(in crate::broker) struct ShareCount {
    pub(in crate::broker) group: String,
    pub(in crate::broker) online: Vec<u32>,
    pub(in crate::broker) offline: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub(super) session: SessionKey,
    pub(super) qos: QoS,
    /// The Subscription Identifier of its subscription to the group (MQTT 5).
    pub(super) id: Option<NonZeroU32>,
}

/// What this shard knows of one group.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) id: Arc<ShareGroup>,
    /// Per bus participant (the shards, then the cluster link, which counts every other
    /// node's members): its members whose client is online, and its offline (persistent) ones,
    /// as it last announced; this shard's own entries are kept current by `refresh_group`.
    pub(super) online: Vec<u32>,
    pub(super) offline: Vec<u32>,
    /// This shard's members.
    pub(super) local: Vec<Member>,
    /// Choosing a participant: round robin's place over all members, sticky's last choice.
    pub(super) chooser: Chooser,
    /// Round robin's place over this shard's members, and sticky's member chosen last.
    pub(super) next_local: Cell<usize>,
    pub(super) sticky_local: Cell<Option<SessionKey>>,
}

impl Group {
    pub(super) fn new(id: Arc<ShareGroup>, participants: usize) -> Group {
        Group {
            id,
            online: vec![0; participants],
            offline: vec![0; participants],
            local: Vec::new(),
            chooser: Chooser::default(),
            next_local: Cell::new(0),
            sticky_local: Cell::new(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.online.iter().chain(&self.offline).all(|&n| n == 0)
    }

    /// The participant (shard, or the cluster link) of the member that gets a message, all but
    /// `exclude` considered.
    pub(super) fn choose_shard(&self, pick: Pick<'_>, exclude: &[usize]) -> Option<usize> {
        self.chooser
            .choose(&self.online, &self.offline, pick, exclude)
    }
}

/// How a member is chosen: the strategy, the publisher's hash (`hash_client_id`), whether the
/// message may wait for an offline member (QoS 1/2: `stored`), and the random state.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub strategy: SharedStrategy,
    pub hash: Option<u64>,
    pub stored: bool,
    pub rng: &'a Cell<u64>,
}

/// Chooses among holders of a group's members (a node's shards; the cluster link's nodes), each
/// holding some online and some offline members: round robin's place and sticky's last choice.
#[derive(Debug, Default)]
pub struct Chooser {
    next: Cell<usize>,
    sticky: Cell<Option<usize>>,
}

impl Chooser {
    /// The index of the holder whose member gets a message, all but `exclude` considered:
    /// among online members, or (`pick.stored`) offline ones when none is online. Round robin
    /// and random weigh holders by their members; `hash_client_id` maps one hash to one member
    /// while the counts stay.
    pub fn choose(
        &self,
        online: &[u32],
        offline: &[u32],
        pick: Pick<'_>,
        exclude: &[usize],
    ) -> Option<usize> {
        let sum = |counts: &[u32]| -> u64 {
            let all = counts.iter().map(|&n| u64::from(n)).sum::<u64>();
            let excluded: u64 = exclude
                .iter()
                .map(|&s| counts.get(s).map_or(0, |&n| u64::from(n)))
                .sum();
            all.saturating_sub(excluded)
        };
        let counts = if sum(online) > 0 {
            online
        } else if pick.stored && sum(offline) > 0 {
            offline
        } else {
            return None;
        };
        let total = sum(counts);
        let usable = |s: usize| !exclude.contains(&s) && counts.get(s).is_some_and(|&n| n > 0);
        if pick.strategy == SharedStrategy::Sticky {
            if let Some(s) = self.sticky.get().filter(|&s| usable(s)) {
                return Some(s);
            }
        }
        let mut index = match (pick.strategy, pick.hash) {
            (SharedStrategy::HashClientId, Some(hash)) => hash,
            (SharedStrategy::Random | SharedStrategy::Sticky, _) => next_random(pick.rng),
            _ => {
                let i = self.next.get();
                self.next.set(i.wrapping_add(1));
                i as u64
            }
        } % total;
        for (at, &n) in counts.iter().enumerate() {
            if exclude.contains(&at) {
                continue;
            }
            if index < u64::from(n) {
                self.sticky.set(Some(at));
                return Some(at);
            }
            index -= u64::from(n);
        }
        None
    }
}

/// xorshift64*: deterministic (the simulation replays seeds), good enough to spread messages.
pub(super) fn next_random(state: &Cell<u64>) -> u64 {
    let mut x = state.get().max(1);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// FNV-1a of a client id (`hash_client_id`): the same on every shard and every run.
pub(super) fn client_hash(client_id: &str) -> u64 {
    client_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hops a targeted message may make between shards looking for a member before it is dropped.
pub(super) fn max_hops(shards: usize) -> u8 {
    u8::try_from(shards.saturating_add(1)).unwrap_or(u8::MAX)
}

/// One shard's share groups (a field of [`BrokerCore`]).
#[derive(Debug)]
pub(in crate::broker) struct SharedGroups {
    pub(super) strategy: SharedStrategy,
    /// Groups by the filter they share (matching a topic walks this once).
    pub(super) by_filter: TopicTrie<Vec<Group>>,
    /// How many groups this shard knows of (here or elsewhere): 0 costs routing one branch.
    pub(super) groups: usize,
    /// Groups whose members on this shard changed since they were last announced, in order.
    pub(super) dirty: Vec<Arc<ShareGroup>>,
    pub(super) rng: Cell<u64>,
}

impl SharedGroups {
    pub(in crate::broker) fn new(strategy: SharedStrategy, seed: u64) -> SharedGroups {
        SharedGroups {
            strategy,
            by_filter: TopicTrie::new(),
            groups: 0,
            dirty: Vec::new(),
            rng: Cell::new(seed | 1),
        }
    }

    /// Whether some group anywhere shares a filter that matches `topic`.
    pub(in crate::broker) fn matches(&self, topic: &[u8]) -> bool {
        self.groups > 0 && self.by_filter.matches_any(topic)
    }

    pub(super) fn get(&self, id: &ShareGroup) -> Option<&Group> {
        let groups = self.by_filter.get(&id.filter)?;
        groups.iter().find(|g| g.id.name == id.name)
    }

    pub(super) fn get_or_insert(&mut self, id: &ShareGroup, participants: usize) -> &mut Group {
        let (groups, _) = self.by_filter.entry(&id.filter, Vec::new);
        let at = match groups.iter().position(|g| g.id.name == id.name) {
            Some(at) => at,
            None => {
                groups.push(Group::new(Arc::new(id.clone()), participants));
                self.groups += 1;
                groups.len() - 1
            }
        };
        &mut groups[at]
    }

    /// Forgets `id` if no shard has a member left.
    pub(super) fn forget_if_empty(&mut self, id: &ShareGroup) {
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

    pub(super) fn mark_dirty(&mut self, id: &ShareGroup) {
        if !self.dirty.iter().any(|d| **d == *id) {
            self.dirty.push(Arc::new(id.clone()));
        }
    }
}
