//! Who wants what, across the cluster, as the cluster link sees it: the filters each local shard
//! announced (to route what other nodes send to the shards that want it), this node's own
//! filters (the union of its shards', announced to the other nodes as numbered deltas), and the
//! other nodes' filters (their union is what the link announces to the local shards, so that
//! only publishes some other node wants reach the link).
//!
//! Plain bookkeeping: no NATS, no bus, no clock. The link (`link.rs`) feeds it and sends what
//! it returns.

use std::collections::{HashMap, HashSet};

use crate::broker::topic_trie::TopicTrie;
use crate::protocol::TopicFilter;

use super::wire::Change;

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
    waiting: Vec<(u64, Vec<Change>)>,
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
        }
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

    /// The changes since the last delta, numbered; `None` when there are none.
    pub fn take_delta(&mut self) -> Option<(u64, Vec<Change>)> {
        if self.unsent.is_empty() {
            return None;
        }
        self.seq += 1;
        Some((self.seq, std::mem::take(&mut self.unsent)))
    }

    /// A delta even without changes: after NATS came back, so that a node that missed one of
    /// ours sees the gap and fetches our whole interest.
    pub fn take_delta_always(&mut self) -> (u64, Vec<Change>) {
        self.seq += 1;
        (self.seq, std::mem::take(&mut self.unsent))
    }

    /// The number of the last delta taken.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This node's filters (call [`Self::take_delta`] first: a snapshot is as of [`Self::seq`]).
    pub fn mine(&self) -> impl ExactSizeIterator<Item = &TopicFilter> {
        self.mine.keys()
    }

    /// A delta from `node`'s run `boot`.
    pub fn remote_delta(
        &mut self,
        node: &str,
        boot: u64,
        seq: u64,
        changes: Vec<Change>,
    ) -> DeltaOutcome {
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
                apply(remote, &mut self.union, changes, &mut union);
                DeltaOutcome {
                    union,
                    needs_snapshot: false,
                }
            }
            _ => {
                remote.waiting.push((seq, changes));
                DeltaOutcome {
                    union: Vec::new(),
                    needs_snapshot: true,
                }
            }
        }
    }

    /// `node`'s whole interest as of its run `boot`'s delta `seq`; returns the union's changes.
    pub fn remote_snapshot(
        &mut self,
        node: &str,
        boot: u64,
        seq: u64,
        filters: Vec<TopicFilter>,
    ) -> Vec<Change> {
        let remote = self.remote.entry(node.to_string()).or_default();
        if remote.boot != Some(boot) {
            remote.boot = Some(boot);
            remote.waiting.clear();
        }
        let fresh: HashSet<TopicFilter> = filters.into_iter().collect();
        let mut changes: Vec<Change> = remote
            .filters
            .difference(&fresh)
            .map(|f| (false, f.clone()))
            .collect();
        changes.extend(fresh.difference(&remote.filters).map(|f| (true, f.clone())));
        let mut waiting = std::mem::take(&mut remote.waiting);
        waiting.sort_by_key(|(seq, _)| *seq);
        let mut last = seq;
        for (n, delta) in waiting {
            if n > last {
                changes.extend(delta);
                last = n;
            }
        }
        remote.seq = Some(last);
        let mut union = Vec::new();
        apply(remote, &mut self.union, changes, &mut union);
        union
    }

    /// `node` is gone (its liveness entry expired): its filters leave the union.
    pub fn node_gone(&mut self, node: &str) -> Vec<Change> {
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
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    #[test]
    fn a_node_announces_a_filter_once_whatever_its_shards_do() {
        let mut c = ClusterInterest::new(2);
        assert!(c.local_changed(0, &f("a/#"), true));
        assert!(!c.local_changed(1, &f("a/#"), true));
        assert!(
            !c.local_changed(0, &f("a/#"), true),
            "already held by shard 0"
        );
        assert_eq!(c.take_delta(), Some((1, vec![(true, f("a/#"))])));
        assert_eq!(c.take_delta(), None);
        assert!(!c.local_changed(0, &f("a/#"), false));
        assert!(c.local_changed(1, &f("a/#"), false));
        assert_eq!(c.take_delta(), Some((2, vec![(false, f("a/#"))])));
        assert_eq!(c.mine().count(), 0);
    }

    #[test]
    fn remote_deltas_need_a_snapshot_first_and_after_a_gap() {
        let mut c = ClusterInterest::new(1);
        let first = c.remote_delta("b", 1, 3, vec![(true, f("x"))]);
        assert!(first.needs_snapshot && first.union.is_empty());
        // The snapshot as of delta 2 plus the waiting delta 3.
        let union = c.remote_snapshot("b", 1, 2, vec![f("y")]);
        assert_eq!(union.len(), 2);
        assert_eq!(c.nodes_for(b"x", true).collect::<Vec<_>>(), ["b"]);
        assert_eq!(c.nodes_for(b"y", true).collect::<Vec<_>>(), ["b"]);
        let next = c.remote_delta("b", 1, 4, vec![(false, f("y"))]);
        assert_eq!(next.union, vec![(false, f("y"))]);
        assert!(!next.needs_snapshot);
        assert_eq!(
            c.remote_delta("b", 1, 4, vec![]),
            DeltaOutcome::default(),
            "old"
        );
        assert!(
            c.remote_delta("b", 1, 6, vec![]).needs_snapshot,
            "5 is missing"
        );
    }

    #[test]
    fn a_restarted_node_starts_over_from_its_snapshot() {
        let mut c = ClusterInterest::new(1);
        c.remote_snapshot("b", 1, 10, vec![f("x")]);
        let restarted = c.remote_delta("b", 2, 1, vec![(true, f("y"))]);
        assert!(
            restarted.needs_snapshot,
            "numbers restarted: not an old delta"
        );
        let union = c.remote_snapshot("b", 2, 0, vec![]);
        assert!(union.contains(&(false, f("x"))) && union.contains(&(true, f("y"))));
    }

    #[test]
    fn the_union_counts_nodes_and_a_gone_node_leaves_it() {
        let mut c = ClusterInterest::new(1);
        assert_eq!(
            c.remote_snapshot("b", 1, 0, vec![f("t/+")]),
            vec![(true, f("t/+"))]
        );
        assert_eq!(c.remote_snapshot("c", 1, 0, vec![f("t/+")]), vec![]);
        assert_eq!(c.node_gone("b"), vec![]);
        assert_eq!(c.node_gone("c"), vec![(false, f("t/+"))]);
        assert_eq!(c.nodes_for(b"t/1", false).count(), 0);
    }

    #[test]
    fn a_node_away_gets_no_qos0_but_keeps_its_mailbox_traffic() {
        let mut c = ClusterInterest::new(1);
        c.remote_snapshot("b", 1, 0, vec![f("t/#")]);
        c.set_away("b", true);
        assert_eq!(c.nodes_for(b"t/1", true).count(), 0);
        assert_eq!(c.nodes_for(b"t/1", false).collect::<Vec<_>>(), ["b"]);
        c.set_away("b", false);
        assert_eq!(c.nodes_for(b"t/1", true).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_snapshot_replaces_what_was_known() {
        let mut c = ClusterInterest::new(1);
        c.remote_snapshot("b", 1, 0, vec![f("old")]);
        let union = c.remote_snapshot("b", 1, 5, vec![f("new")]);
        assert!(union.contains(&(false, f("old"))) && union.contains(&(true, f("new"))));
    }

    #[test]
    fn incoming_publishes_go_to_the_shards_that_want_them() {
        let mut c = ClusterInterest::new(3);
        c.local_changed(2, &f("s/#"), true);
        c.local_changed(0, &f("s/1"), true);
        assert_eq!(c.shards_for(b"s/1").collect::<Vec<_>>(), [0, 2]);
        assert_eq!(c.shards_for(b"s/2").collect::<Vec<_>>(), [2]);
    }
}
