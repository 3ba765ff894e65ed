//! Who wants what, across the cluster, as the cluster link sees it: the filters each local shard
//! announced (to route what other nodes send to the shards that want it), this node's own
//! filters (the union of its shards', announced to the other nodes as numbered deltas), and the
//! other nodes' filters (their union is what the link announces to the local shards, so that
//! only publishes some other node wants reach the link). Share groups' members travel in the
//! same deltas and snapshots, in the same order (`groups.rs` counts them).
//!
//! Plain bookkeeping: no NATS, no bus, no clock. The link (`link.rs`) feeds it and sends what
//! it returns.

use std::collections::{HashMap, HashSet};

use crate::broker::topic_trie::TopicTrie;
use crate::protocol::TopicFilter;

use super::groups::GroupTable;
use super::wire::{Change, Delta, Snapshot};

/// Another node's filters as far as its deltas and snapshots told.
#[derive(Default)]
struct RemoteNode {
    filters: HashSet<TopicFilter>,
    trie: TopicTrie<()>,
    /// The node's run the numbers belong to (a node that restarts numbers from 1 again).
    boot: Option<u64>,
    /// The last delta applied; `None` until a snapshot set a starting point.
    seq: Option<u64>,
    /// Deltas that came before the snapshot they follow (or after a gap), applied with it.
    waiting: Vec<Delta>,
    /// Its liveness entry expired: QoS 0 no longer goes to it, QoS 1/2 still waits in its
    /// mailbox for it to come back.
    away: bool,
}

/// What a delta from another node did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeltaOutcome {
    /// Changes of the union to announce to the local shards.
    pub union: Vec<Change>,
    /// The node's whole interest must be fetched: this is the first word from it, or a delta
    /// is missing.
    pub needs_snapshot: bool,
}

/// The cluster-wide interest table of one node's link.
pub struct ClusterInterest {
    /// The filters of each local shard (index = shard).
    local: Vec<TopicTrie<usize>>,
    /// This node's filters and how many local shards hold each.
    mine: HashMap<TopicFilter, usize>,
    /// Changes of `mine` not yet sent as a delta.
    unsent: Vec<Change>,
    /// The number of the last delta taken.
    seq: u64,
    remote: HashMap<String, RemoteNode>,
    /// How many other nodes hold each filter.
    union: HashMap<TopicFilter, usize>,
    /// Share groups: this node's members and the other nodes'.
    groups: GroupTable,
}

impl ClusterInterest {
    pub fn new(shards: usize) -> Self {
        ClusterInterest {
            local: (0..shards).map(|_| TopicTrie::new()).collect(),
            mine: HashMap::new(),
            unsent: Vec::new(),
            seq: 0,
            remote: HashMap::new(),
            union: HashMap::new(),
            groups: GroupTable::new(shards),
        }
    }

    /// The share groups' table (members here and on the other nodes).
    pub fn groups(&mut self) -> &mut GroupTable {
        &mut self.groups
    }

    /// Local shard `shard` took up (or let go of) `filter`. True when this node's interest
    /// changed (the change goes into the next delta).
    pub fn local_changed(&mut self, shard: usize, filter: &TopicFilter, added: bool) -> bool {
        let Some(trie) = self.local.get_mut(shard) else {
            return false;
        };
        if added {
            let (_, created) = trie.entry(filter, || 0);
            if !created {
                return false;
            }
            let count = self.mine.entry(filter.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return false;
            }
        } else {
            if trie.remove(filter).is_none() {
                return false;
            }
            let Some(count) = self.mine.get_mut(filter) else {
                return false;
            };
            *count -= 1;
            if *count > 0 {
                return false;
            }
            self.mine.remove(filter);
        }
        self.unsent.push((added, filter.clone()));
        true
    }

    /// The changes since the last delta (filters and share groups' counts), numbered, for this
    /// node's run `boot`; `None` when there are none.
    pub fn take_delta(&mut self, boot: u64) -> Option<Delta> {
        let groups = self.groups.take_unsent();
        if self.unsent.is_empty() && groups.is_empty() {
            return None;
        }
        self.seq += 1;
        Some(Delta {
            boot,
            seq: self.seq,
            changes: std::mem::take(&mut self.unsent),
            groups,
        })
    }

    /// A delta even without changes: after NATS came back, so that a node that missed one of
    /// ours sees the gap and fetches our whole interest.
    pub fn take_delta_always(&mut self, boot: u64) -> Delta {
        self.seq += 1;
        Delta {
            boot,
            seq: self.seq,
            changes: std::mem::take(&mut self.unsent),
            groups: self.groups.take_unsent(),
        }
    }

    /// This node's whole interest as of the last delta taken (call [`Self::take_delta`] first).
    pub fn snapshot(&self, boot: u64) -> Snapshot {
        Snapshot {
            boot,
            seq: self.seq,
            filters: self.mine.keys().cloned().collect(),
            groups: self.groups.mine(),
        }
    }

    /// A delta from `node`.
    pub fn remote_delta(&mut self, node: &str, delta: Delta) -> DeltaOutcome {
        let (boot, seq) = (delta.boot, delta.seq);
        let remote = self.remote.entry(node.to_string()).or_default();
        if remote.boot != Some(boot) {
            // A new run: what it had is replaced by its snapshot, deltas count from there.
            remote.boot = Some(boot);
            remote.seq = None;
            remote.waiting.clear();
        }
        match remote.seq {
            Some(last) if seq <= last => DeltaOutcome::default(),
            Some(last) if seq == last + 1 => {
                remote.seq = Some(seq);
                let mut union = Vec::new();
                apply(remote, &mut self.union, delta.changes, &mut union);
                self.groups.remote_changed(node, delta.groups);
                DeltaOutcome {
                    union,
                    needs_snapshot: false,
                }
            }
            _ => {
                remote.waiting.push(delta);
                DeltaOutcome {
                    union: Vec::new(),
                    needs_snapshot: true,
                }
            }
        }
    }

    /// `node`'s whole interest as of its run `boot`'s delta `seq`; returns the union's changes.
    pub fn remote_snapshot(&mut self, node: &str, snapshot: Snapshot) -> Vec<Change> {
        let Snapshot {
            boot,
            seq,
            filters,
            groups,
        } = snapshot;
        let remote = self.remote.entry(node.to_string()).or_default();
        if remote.boot != Some(boot) {
            remote.boot = Some(boot);
            remote.waiting.clear();
        }
        self.groups.remote_replaced(node, groups);
        let fresh: HashSet<TopicFilter> = filters.into_iter().collect();
        let mut changes: Vec<Change> = remote
            .filters
            .difference(&fresh)
            .map(|f| (false, f.clone()))
            .collect();
        changes.extend(fresh.difference(&remote.filters).map(|f| (true, f.clone())));
        let mut waiting = std::mem::take(&mut remote.waiting);
        waiting.sort_by_key(|delta| delta.seq);
        let mut last = seq;
        for delta in waiting {
            if delta.seq > last {
                changes.extend(delta.changes);
                self.groups.remote_changed(node, delta.groups);
                last = delta.seq;
            }
        }
        remote.seq = Some(last);
        let mut union = Vec::new();
        apply(remote, &mut self.union, changes, &mut union);
        union
    }

    /// `node` is gone (its liveness entry expired): its filters leave the union.
    pub fn node_gone(&mut self, node: &str) -> Vec<Change> {
        self.groups.node_gone(node);
        let Some(remote) = self.remote.remove(node) else {
            return Vec::new();
        };
        let mut union = Vec::new();
        for filter in remote.filters {
            release(&mut self.union, &filter, &mut union);
        }
        union
    }

    /// Distinct filters of this node, and of the other nodes together.
    pub fn filter_counts(&self) -> (usize, usize) {
        (self.mine.len(), self.union.len())
    }

    /// The other nodes this node heard from.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.remote.keys().map(String::as_str)
    }

    /// The other nodes with a filter matching `topic` (for QoS 0, those not away).
    pub fn nodes_for<'a>(
        &'a self,
        topic: &'a [u8],
        qos0: bool,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.remote
            .iter()
            .filter(move |(_, r)| !(qos0 && r.away) && r.trie.matches_any(topic))
            .map(|(name, _)| name.as_str())
    }

    /// Marks `node` away (its liveness expired) or back; its filters stay.
    pub fn set_away(&mut self, node: &str, away: bool) {
        if let Some(remote) = self.remote.get_mut(node) {
            remote.away = away;
            self.groups.set_away(node, away);
        }
    }

    /// Whether `node` is marked away.
    pub fn is_away(&self, node: &str) -> bool {
        self.remote.get(node).is_some_and(|r| r.away)
    }

    /// The local shards with a filter matching `topic`.
    pub fn shards_for<'a>(&'a self, topic: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        self.local
            .iter()
            .enumerate()
            .filter(move |(_, trie)| trie.matches_any(topic))
            .map(|(shard, _)| shard)
    }
}

fn apply(
    remote: &mut RemoteNode,
    union: &mut HashMap<TopicFilter, usize>,
    changes: Vec<Change>,
    out: &mut Vec<Change>,
) {
    for (added, filter) in changes {
        if added {
            if remote.filters.insert(filter.clone()) {
                remote.trie.entry(&filter, || ());
                let count = union.entry(filter.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    out.push((true, filter));
                }
            }
        } else if remote.filters.remove(&filter) {
            remote.trie.remove(&filter);
            release(union, &filter, out);
        }
    }
}

fn release(union: &mut HashMap<TopicFilter, usize>, filter: &TopicFilter, out: &mut Vec<Change>) {
    if let Some(count) = union.get_mut(filter) {
        *count -= 1;
        if *count == 0 {
            union.remove(filter);
            out.push((false, filter.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
