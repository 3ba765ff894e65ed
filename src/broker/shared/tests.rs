//! The strategies' choices and the share names' refusals, without a broker.

use std::cell::Cell;
use std::sync::Arc;

use super::groups::{client_hash, Group};
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

fn pick(strategy: SharedStrategy, hash: Option<u64>, stored: bool, rng: &Cell<u64>) -> Pick<'_> {
    Pick {
        strategy,
        hash,
        stored,
        rng,
    }
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
        .map(|_| g.choose_shard(pick(SharedStrategy::RoundRobin, None, true, &rng), &[]))
        .collect();
    let expected = [0, 1, 1, 0, 1, 1].map(Some);
    assert_eq!(picks, expected, "online members only, shard 1 has two");
}

#[test]
fn offline_members_get_only_stored_messages_when_none_is_online() {
    let g = group(&[0, 0], &[0, 3]);
    let rng = Cell::new(1);
    assert_eq!(
        g.choose_shard(pick(SharedStrategy::RoundRobin, None, false, &rng), &[]),
        None
    );
    assert_eq!(
        g.choose_shard(pick(SharedStrategy::RoundRobin, None, true, &rng), &[]),
        Some(1)
    );
    assert_eq!(
        g.choose_shard(pick(SharedStrategy::Random, None, true, &rng), &[1]),
        None
    );
}

#[test]
fn sticky_keeps_its_shard_and_hash_follows_the_publisher() {
    let mut g = group(&[1, 1, 1], &[0, 0, 0]);
    let rng = Cell::new(7);
    let first = g.choose_shard(pick(SharedStrategy::Sticky, None, false, &rng), &[]);
    for _ in 0..10 {
        assert_eq!(
            g.choose_shard(pick(SharedStrategy::Sticky, None, false, &rng), &[]),
            first
        );
    }
    let Some(left) = first else {
        panic!("a shard was chosen");
    };
    g.online[left] = 0;
    let next = g.choose_shard(pick(SharedStrategy::Sticky, None, false, &rng), &[]);
    assert!(
        next.is_some() && next != first,
        "moves when its member leaves"
    );
    let a = Some(client_hash("publisher-a"));
    let chosen = g.choose_shard(pick(SharedStrategy::HashClientId, a, false, &rng), &[]);
    for _ in 0..5 {
        assert_eq!(
            g.choose_shard(pick(SharedStrategy::HashClientId, a, false, &rng), &[]),
            chosen
        );
    }
}

#[test]
fn a_message_from_another_node_never_goes_back_to_the_cluster_link() {
    // Shards 0 and 1, then the link (index 2) counting the other nodes' members.
    let g = group(&[0, 1, 3], &[0, 0, 0]);
    let rng = Cell::new(1);
    for _ in 0..8 {
        let from_node = g.choose_shard(pick(SharedStrategy::RoundRobin, None, true, &rng), &[0, 2]);
        assert_eq!(
            from_node,
            Some(1),
            "only shard 1 is left once 0 and the link are excluded"
        );
    }
    let g = group(&[0, 0, 3], &[1, 0, 0]);
    assert_eq!(
        g.choose_shard(pick(SharedStrategy::RoundRobin, None, true, &rng), &[1, 2]),
        Some(0),
        "an offline member here rather than nothing"
    );
    assert_eq!(
        g.choose_shard(pick(SharedStrategy::RoundRobin, None, false, &rng), &[1, 2]),
        None,
        "QoS 0 waits for no offline member"
    );
}

#[test]
fn round_robin_weighs_each_holder_by_its_members() {
    let chooser = Chooser::default();
    let rng = Cell::new(1);
    let mut per = [0; 3];
    for _ in 0..60 {
        let at = chooser.choose(
            &[1, 0, 2],
            &[],
            pick(SharedStrategy::RoundRobin, None, false, &rng),
            &[],
        );
        per[at.expect("someone has members")] += 1;
    }
    assert_eq!(per, [20, 0, 40]);
}
