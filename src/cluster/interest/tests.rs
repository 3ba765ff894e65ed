//! The cluster interest table's bookkeeping: filters announced once per node, other nodes'
//! deltas in order (a snapshot first, and after a gap), restarts, away and gone nodes, share
//! groups' counts carried by the same deltas.

use super::*;
use crate::broker::ShareGroup;
use crate::cluster::groups::Members;
use crate::cluster::wire::GroupCount;

fn f(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

fn delta(boot: u64, seq: u64, changes: Vec<Change>) -> Delta {
    Delta {
        boot,
        seq,
        changes,
        groups: Vec::new(),
    }
}

fn snap(boot: u64, seq: u64, filters: Vec<TopicFilter>) -> Snapshot {
    Snapshot {
        boot,
        seq,
        filters,
        groups: Vec::new(),
    }
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
    assert_eq!(
        c.take_delta(0).map(|d| (d.seq, d.changes)),
        Some((1, vec![(true, f("a/#"))]))
    );
    assert_eq!(c.take_delta(0).map(|d| (d.seq, d.changes)), None);
    assert!(!c.local_changed(0, &f("a/#"), false));
    assert!(c.local_changed(1, &f("a/#"), false));
    assert_eq!(
        c.take_delta(0).map(|d| (d.seq, d.changes)),
        Some((2, vec![(false, f("a/#"))]))
    );
    assert!(c.snapshot(0).filters.is_empty());
}

#[test]
fn remote_deltas_need_a_snapshot_first_and_after_a_gap() {
    let mut c = ClusterInterest::new(1);
    let first = c.remote_delta("b", delta(1, 3, vec![(true, f("x"))]));
    assert!(first.needs_snapshot && first.union.is_empty());
    // The snapshot as of delta 2 plus the waiting delta 3.
    let union = c.remote_snapshot("b", snap(1, 2, vec![f("y")]));
    assert_eq!(union.len(), 2);
    assert_eq!(c.nodes_for(b"x", true).collect::<Vec<_>>(), ["b"]);
    assert_eq!(c.nodes_for(b"y", true).collect::<Vec<_>>(), ["b"]);
    let next = c.remote_delta("b", delta(1, 4, vec![(false, f("y"))]));
    assert_eq!(next.union, vec![(false, f("y"))]);
    assert!(!next.needs_snapshot);
    assert_eq!(
        c.remote_delta("b", delta(1, 4, vec![])),
        DeltaOutcome::default(),
        "old"
    );
    assert!(
        c.remote_delta("b", delta(1, 6, vec![])).needs_snapshot,
        "5 is missing"
    );
}

#[test]
fn a_restarted_node_starts_over_from_its_snapshot() {
    let mut c = ClusterInterest::new(1);
    c.remote_snapshot("b", snap(1, 10, vec![f("x")]));
    let restarted = c.remote_delta("b", delta(2, 1, vec![(true, f("y"))]));
    assert!(
        restarted.needs_snapshot,
        "numbers restarted: not an old delta"
    );
    let union = c.remote_snapshot("b", snap(2, 0, vec![]));
    assert!(union.contains(&(false, f("x"))) && union.contains(&(true, f("y"))));
}

#[test]
fn the_union_counts_nodes_and_a_gone_node_leaves_it() {
    let mut c = ClusterInterest::new(1);
    assert_eq!(
        c.remote_snapshot("b", snap(1, 0, vec![f("t/+")])),
        vec![(true, f("t/+"))]
    );
    assert_eq!(c.remote_snapshot("c", snap(1, 0, vec![f("t/+")])), vec![]);
    assert_eq!(c.node_gone("b"), vec![]);
    assert_eq!(c.node_gone("c"), vec![(false, f("t/+"))]);
    assert_eq!(c.nodes_for(b"t/1", false).count(), 0);
}

#[test]
fn a_node_away_gets_no_qos0_but_keeps_its_mailbox_traffic() {
    let mut c = ClusterInterest::new(1);
    c.remote_snapshot("b", snap(1, 0, vec![f("t/#")]));
    c.set_away("b", true);
    assert_eq!(c.nodes_for(b"t/1", true).count(), 0);
    assert_eq!(c.nodes_for(b"t/1", false).collect::<Vec<_>>(), ["b"]);
    c.set_away("b", false);
    assert_eq!(c.nodes_for(b"t/1", true).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn a_snapshot_replaces_what_was_known() {
    let mut c = ClusterInterest::new(1);
    c.remote_snapshot("b", snap(1, 0, vec![f("old")]));
    let union = c.remote_snapshot("b", snap(1, 5, vec![f("new")]));
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

fn count(name: &str, filter: &str, online: u32, offline: u32) -> GroupCount {
    GroupCount {
        group: ShareGroup {
            name: name.into(),
            filter: f(filter),
        },
        online,
        offline,
    }
}

#[test]
fn share_groups_ride_the_deltas_in_order_and_wait_with_them_for_a_snapshot() {
    let mut c = ClusterInterest::new(2);
    let g = count("g", "t/#", 0, 0).group;
    c.groups().local_changed(
        1,
        &g,
        Members {
            online: 2,
            offline: 0,
        },
    );
    let sent = c.take_delta(9).expect("a delta for the group alone");
    assert_eq!((sent.boot, sent.seq), (9, 1));
    assert_eq!(sent.groups, [count("g", "t/#", 2, 0)]);
    assert!(sent.changes.is_empty());
    assert_eq!(c.snapshot(9).groups, [count("g", "t/#", 2, 0)]);
    // From node b: delta 2 before the snapshot as of 1; both apply, in order.
    let mut early = delta(1, 2, vec![]);
    early.groups = vec![count("g", "t/#", 0, 1)];
    assert!(c.remote_delta("b", early).needs_snapshot);
    assert!(c.groups().take_updates().is_empty(), "nothing applied yet");
    let mut whole = snap(1, 1, vec![]);
    whole.groups = vec![count("g", "t/#", 3, 0)];
    c.remote_snapshot("b", whole);
    assert_eq!(c.groups().take_updates(), [count("g", "t/#", 0, 1)]);
    assert_eq!(c.node_gone("b"), vec![]);
    assert_eq!(c.groups().take_updates(), [count("g", "t/#", 0, 0)]);
}

#[test]
fn an_away_nodes_members_count_offline() {
    let mut c = ClusterInterest::new(1);
    let mut whole = snap(1, 0, vec![]);
    whole.groups = vec![count("g", "a", 2, 1)];
    c.remote_snapshot("b", whole);
    assert_eq!(c.groups().take_updates(), [count("g", "a", 2, 1)]);
    c.set_away("b", true);
    assert_eq!(c.groups().take_updates(), [count("g", "a", 0, 3)]);
    c.set_away("b", false);
    assert_eq!(c.groups().take_updates(), [count("g", "a", 2, 1)]);
}
