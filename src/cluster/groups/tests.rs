//! The link's share-group table: sums per node, what the local shards are told, and where a
//! group's message goes (another node; a local shard for one from another node).

use super::*;
use crate::config::SharedStrategy;
use crate::protocol::TopicFilter;

fn group(name: &str) -> ShareGroup {
    ShareGroup {
        name: name.into(),
        filter: TopicFilter::new("jobs/#").expect("a filter"),
    }
}

fn count(name: &str, online: u32, offline: u32) -> GroupCount {
    GroupCount {
        group: group(name),
        online,
        offline,
    }
}

fn members(online: u32, offline: u32) -> Members {
    Members { online, offline }
}

fn pick(stored: bool, rng: &Cell<u64>) -> Pick<'_> {
    Pick {
        strategy: SharedStrategy::RoundRobin,
        hash: None,
        stored,
        rng,
    }
}

#[test]
fn this_nodes_sum_is_announced_only_when_it_changes() {
    let mut t = GroupTable::new(2);
    assert!(t.local_changed(0, &group("g"), members(1, 0)));
    assert!(t.local_changed(1, &group("g"), members(1, 0)));
    assert_eq!(t.take_unsent(), [count("g", 2, 0)]);
    assert!(!t.local_changed(1, &group("g"), members(1, 0)), "the same");
    assert!(t.take_unsent().is_empty());
    assert!(t.local_changed(0, &group("g"), members(0, 0)));
    assert!(t.local_changed(1, &group("g"), members(0, 0)));
    assert_eq!(t.take_unsent(), [count("g", 0, 0)], "none left: said once");
    assert!(t.mine().is_empty());
    assert!(
        !t.local_changed(5, &group("g"), members(1, 0)),
        "no such shard"
    );
}

#[test]
fn the_local_shards_hear_the_other_nodes_together_once_per_change() {
    let mut t = GroupTable::new(1);
    t.remote_changed("b", vec![count("g", 1, 0)]);
    t.remote_changed("c", vec![count("g", 2, 1)]);
    assert_eq!(t.take_updates(), [count("g", 3, 1)]);
    assert!(t.take_updates().is_empty());
    t.remote_replaced("c", vec![count("g", 2, 1)]);
    assert!(
        t.take_updates().is_empty(),
        "a snapshot that changes nothing"
    );
    t.remote_changed("b", vec![count("g", 0, 0)]);
    assert_eq!(t.take_updates(), [count("g", 2, 1)]);
}

#[test]
fn round_robin_spreads_over_the_other_nodes_members() {
    let mut t = GroupTable::new(1);
    t.remote_changed("b", vec![count("g", 1, 0)]);
    t.remote_changed("c", vec![count("g", 2, 0)]);
    t.remote_changed("d", vec![count("g", 0, 4)]);
    let rng = Cell::new(1);
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let node = t
            .node_for(&group("g"), pick(false, &rng))
            .expect("online members");
        *per.entry(node.to_string()).or_default() += 1;
    }
    assert_eq!(per.get("b"), Some(&10));
    assert_eq!(per.get("c"), Some(&20));
    assert_eq!(
        per.get("d"),
        None,
        "offline members wait while others are online"
    );
}

#[test]
fn an_away_node_gets_only_what_its_mailbox_keeps() {
    let mut t = GroupTable::new(1);
    t.remote_changed("b", vec![count("g", 1, 0)]);
    t.set_away("b", true);
    let rng = Cell::new(1);
    assert_eq!(t.node_for(&group("g"), pick(false, &rng)), None, "QoS 0");
    assert_eq!(
        t.node_for(&group("g"), pick(true, &rng)),
        Some("b"),
        "QoS 1/2"
    );
    t.node_gone("b");
    assert_eq!(t.node_for(&group("g"), pick(true, &rng)), None);
    assert!(
        t.take_updates().is_empty(),
        "told nothing, and nothing is left"
    );
}

#[test]
fn a_message_from_another_node_goes_to_a_local_shard_with_a_member() {
    let mut t = GroupTable::new(3);
    let rng = Cell::new(1);
    assert_eq!(t.shard_for(&group("g"), pick(true, &rng)), None);
    t.local_changed(2, &group("g"), members(1, 0));
    t.local_changed(0, &group("g"), members(0, 1));
    for _ in 0..4 {
        assert_eq!(t.shard_for(&group("g"), pick(false, &rng)), Some(2));
    }
    t.local_changed(2, &group("g"), members(0, 0));
    assert_eq!(t.shard_for(&group("g"), pick(false, &rng)), None);
    assert_eq!(
        t.shard_for(&group("g"), pick(true, &rng)),
        Some(0),
        "an offline member queues QoS 1/2"
    );
}

#[test]
fn hash_client_id_keeps_one_publisher_on_one_node() {
    let mut t = GroupTable::new(1);
    for node in ["b", "c", "d"] {
        t.remote_changed(node, vec![count("g", 1, 0)]);
    }
    let rng = Cell::new(1);
    let by_hash = |t: &mut GroupTable, hash: u64| {
        let pick = Pick {
            strategy: SharedStrategy::HashClientId,
            hash: Some(hash),
            stored: true,
            rng: &rng,
        };
        t.node_for(&group("g"), pick).map(str::to_string)
    };
    let mut nodes = std::collections::BTreeSet::new();
    for hash in 0..30u64 {
        let first = by_hash(&mut t, hash);
        assert_eq!(
            by_hash(&mut t, hash),
            first,
            "the same node for one publisher"
        );
        nodes.insert(first.expect("a node"));
    }
    assert_eq!(nodes.len(), 3, "publishers spread over the nodes");
}
