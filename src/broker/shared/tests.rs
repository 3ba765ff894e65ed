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
