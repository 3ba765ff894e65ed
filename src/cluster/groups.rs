//! Share groups (`$share/{group}/{filter}`) across the cluster, as the cluster link counts them:
//! this node's members of each group (summed over its shards, announced to the other nodes in
//! the interest deltas and snapshots), the other nodes' members (summed, and told to the local
//! shards: the link is one more holder of members for them), and where a group's message goes:
//! which other node (leaving this node), which local shard (arriving from another node).
//!
//! Plain bookkeeping: no NATS, no bus, no clock. `interest.rs` owns the table and feeds it what
//! other nodes announce, in their deltas' order; the link asks it where messages go.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::broker::{Chooser, Pick, ShareGroup};

use super::wire::GroupCount;

/// Members of a group somewhere: with their client online, and persistent ones offline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Members {
    pub online: u32,
    pub offline: u32,
}

impl Members {
    fn is_empty(self) -> bool {
        self.online == 0 && self.offline == 0
    }

    fn add(self, other: Members) -> Members {
        Members {
            online: self.online.saturating_add(other.online),
            offline: self.offline.saturating_add(other.offline),
        }
    }
}

/// The share groups of the cluster as one node's link knows them.
pub struct GroupTable {
    /// Per group: each local shard's members, as the shard last announced.
    local: HashMap<ShareGroup, Vec<Members>>,
    /// Groups whose sum over the local shards changed since the last delta, in order.
    unsent: Vec<ShareGroup>,
    /// Per other node (by name: a node keeps its place among the others), its members per group.
    remote: BTreeMap<String, HashMap<ShareGroup, Members>>,
    /// Other nodes whose liveness entry expired: their members count as offline (a QoS 1/2
    /// message waits in the node's mailbox; QoS 0 goes elsewhere).
    away: HashSet<String>,
    /// Per group: the other nodes' members as last told to the local shards.
    told: HashMap<ShareGroup, Members>,
    /// Groups whose other nodes' members may differ from what the local shards were told.
    stale: HashSet<ShareGroup>,
    /// Per group: choosing among the other nodes, and among the local shards.
    choosers: HashMap<ShareGroup, (Chooser, Chooser)>,
    shards: usize,
}

impl GroupTable {
    pub fn new(shards: usize) -> Self {
        GroupTable {
            local: HashMap::new(),
            unsent: Vec::new(),
            remote: BTreeMap::new(),
            away: HashSet::new(),
            told: HashMap::new(),
            stale: HashSet::new(),
            choosers: HashMap::new(),
            shards,
        }
    }

    // ---- this node ------------------------------------------------------------------------------

    /// Local shard `shard` has these members of `group` now. True when this node's sum changed
    /// (the group goes into the next delta).
    pub fn local_changed(&mut self, shard: usize, group: &ShareGroup, members: Members) -> bool {
        if shard >= self.shards {
            return false;
        }
        let before = self.mine_of(group);
        let shards = self.shards;
        let per_shard = self
            .local
            .entry(group.clone())
            .or_insert_with(|| vec![Members::default(); shards]);
        per_shard[shard] = members;
        if per_shard.iter().all(|m| m.is_empty()) {
            self.local.remove(group);
        }
        if self.mine_of(group) == before {
            return false;
        }
        if !self.unsent.contains(group) {
            self.unsent.push(group.clone());
        }
        true
    }

    /// This node's members of `group`, all shards together.
    fn mine_of(&self, group: &ShareGroup) -> Members {
        self.local
            .get(group)
            .map_or(Members::default(), |per_shard| {
                per_shard
                    .iter()
                    .fold(Members::default(), |sum, &m| sum.add(m))
            })
    }

    /// This node's counts of the groups that changed since the last call (for a delta).
    pub fn take_unsent(&mut self) -> Vec<GroupCount> {
        let unsent = std::mem::take(&mut self.unsent);
        let counts = unsent
            .into_iter()
            .map(|group| {
                let Members { online, offline } = self.mine_of(&group);
                GroupCount {
                    group,
                    online,
                    offline,
                }
            })
            .collect();
        self.forget_unused();
        counts
    }

    /// This node's counts of every group it has members of (for a snapshot).
    pub fn mine(&self) -> Vec<GroupCount> {
        self.local
            .keys()
            .map(|group| {
                let Members { online, offline } = self.mine_of(group);
                GroupCount {
                    group: group.clone(),
                    online,
                    offline,
                }
            })
            .collect()
    }

    // ---- the other nodes ------------------------------------------------------------------------

    /// `node`'s counts that changed (a delta, applied in order): both 0 means it has none left.
    pub fn remote_changed(&mut self, node: &str, counts: Vec<GroupCount>) {
        let groups = self.remote.entry(node.to_string()).or_default();
        for count in counts {
            let members = Members {
                online: count.online,
                offline: count.offline,
            };
            if members.is_empty() {
                groups.remove(&count.group);
            } else {
                groups.insert(count.group.clone(), members);
            }
            self.stale.insert(count.group);
        }
    }

    /// `node`'s whole counts (a snapshot): what it had before is replaced.
    pub fn remote_replaced(&mut self, node: &str, counts: Vec<GroupCount>) {
        self.node_gone(node);
        self.remote_changed(node, counts);
    }

    /// `node` is gone: its members leave every group.
    pub fn node_gone(&mut self, node: &str) {
        self.away.remove(node);
        if let Some(groups) = self.remote.remove(node) {
            self.stale.extend(groups.into_keys());
        }
    }

    /// `node`'s liveness expired (`away`) or is current again.
    pub fn set_away(&mut self, node: &str, away: bool) {
        let changed = if away {
            self.away.insert(node.to_string())
        } else {
            self.away.remove(node)
        };
        if let (true, Some(groups)) = (changed, self.remote.get(node)) {
            self.stale.extend(groups.keys().cloned());
        }
    }

    /// The other nodes' members of `group`, together: those of away nodes count as offline.
    fn others_of(&self, group: &ShareGroup) -> Members {
        let mut sum = Members::default();
        for (node, groups) in &self.remote {
            let Some(&members) = groups.get(group) else {
                continue;
            };
            if self.away.contains(node) {
                sum = sum.add(Members {
                    online: 0,
                    offline: members.online.saturating_add(members.offline),
                });
            } else {
                sum = sum.add(members);
            }
        }
        sum
    }

    /// The groups whose other nodes' members changed since the local shards were last told,
    /// with the new sums (both 0: none left elsewhere), to tell them now.
    pub fn take_updates(&mut self) -> Vec<GroupCount> {
        let mut stale: Vec<ShareGroup> = self.stale.drain().collect();
        stale.sort_by(|a, b| (&*a.name, a.filter.as_str()).cmp(&(&*b.name, b.filter.as_str())));
        let mut updates = Vec::new();
        for group in stale {
            let now = self.others_of(&group);
            let before = self.told.get(&group).copied().unwrap_or_default();
            if now == before {
                continue;
            }
            if now.is_empty() {
                self.told.remove(&group);
            } else {
                self.told.insert(group.clone(), now);
            }
            updates.push(GroupCount {
                group,
                online: now.online,
                offline: now.offline,
            });
        }
        self.forget_unused();
        updates
    }

    // ---- where a message goes -------------------------------------------------------------------

    /// The other node whose member gets a message of `group` (`None`: no other node has one
    /// that may take it).
    pub fn node_for(&mut self, group: &ShareGroup, pick: Pick<'_>) -> Option<&str> {
        let mut names = Vec::new();
        let (mut online, mut offline) = (Vec::new(), Vec::new());
        for (node, groups) in &self.remote {
            let Some(&members) = groups.get(group) else {
                continue;
            };
            names.push(node.as_str());
            if self.away.contains(node) {
                online.push(0);
                offline.push(members.online.saturating_add(members.offline));
            } else {
                online.push(members.online);
                offline.push(members.offline);
            }
        }
        let (chooser, _) = self.choosers.entry(group.clone()).or_default();
        let at = chooser.choose(&online, &offline, pick, &[])?;
        names.get(at).copied()
    }

    /// The local shard whose member gets a message of `group` that came from another node
    /// (`None`: this node has no member that may take it).
    pub fn shard_for(&mut self, group: &ShareGroup, pick: Pick<'_>) -> Option<usize> {
        let per_shard = self.local.get(group)?;
        let online: Vec<u32> = per_shard.iter().map(|m| m.online).collect();
        let offline: Vec<u32> = per_shard.iter().map(|m| m.offline).collect();
        let (_, chooser) = self.choosers.entry(group.clone()).or_default();
        chooser.choose(&online, &offline, pick, &[])
    }

    /// Drops the choosers of groups no one has any more.
    fn forget_unused(&mut self) {
        let (local, remote) = (&self.local, &self.remote);
        self.choosers.retain(|group, _| {
            local.contains_key(group) || remote.values().any(|groups| groups.contains_key(group))
        });
    }
}

/// A random state for the link's choices (`random`, `sticky`).
pub fn rng() -> Cell<u64> {
    Cell::new(fastrand::u64(1..))
}

#[cfg(test)]
mod tests;
