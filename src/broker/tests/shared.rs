//! Shared subscriptions (`$share/{group}/{filter}`, `shared.rs`) at 1 and 2 shards: one member of
//! each group per message, whichever shard it lives on; ordinary subscribers and other groups get
//! their copies; no retained messages; invalid share names refused; the topic checks see the
//! filter part; a member that leaves hands its unacknowledged messages on.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::plugins::{AclTables, CorePlugins, TopicAcl, TopicPlugin};
use crate::protocol::{PubAck, SubscribeReturnCode};

/// A client id whose home is `shard` of `shards`.
fn id_on(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| home_shard(id, shards) == shard)
        .expect("some id hashes there")
}

/// `pub` publishes `m{i}` to `t/x` at QoS 1 for each `i` of `range` (packet id `i + 1`).
fn publish_numbered(c: &mut Cluster, range: std::ops::Range<u16>) {
    for i in range {
        c.publish(
            "pub",
            "t/x",
            &format!("m{i}"),
            QoS::AtLeastOnce,
            false,
            i + 1,
        );
    }
}

/// Payloads each client received, acknowledging QoS 1 ones (so that windows never fill).
fn take_acked(c: &mut Cluster, names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut got = BTreeMap::new();
    for name in names {
        let publishes = c.publishes(name);
        for p in &publishes {
            if let Some(packet_id) = p.packet_id {
                c.send(name, Packet::PubAck(PubAck { packet_id }));
            }
        }
        let payloads = publishes
            .iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect();
        got.insert(name.clone(), payloads);
    }
    got
}

fn shared_settings(strategy: SharedStrategy) -> Settings {
    Settings {
        shared_strategy: strategy,
        ..Settings::default()
    }
}

/// Four members of group `g` spread over the shards, one of group `h`, an ordinary subscriber
/// and a publisher; every client's CONNACK and SUBACK taken.
fn groups_cluster(shards: usize, strategy: SharedStrategy) -> (Cluster, Vec<String>) {
    let mut c = Cluster::with_settings(shards, shared_settings(strategy));
    let members: Vec<String> = (0..4)
        .map(|i| id_on(&format!("g{i}-"), i % shards, shards))
        .collect();
    for name in members
        .iter()
        .chain(["h", "plain", "pub"].map(String::from).iter())
    {
        c.connect(name, true);
    }
    for member in &members {
        c.subscribe(member, &[("$share/g/t/#", QoS::AtLeastOnce)]);
    }
    c.subscribe("h", &[("$share/h/t/+", QoS::AtLeastOnce)]);
    c.subscribe("plain", &[("t/#", QoS::AtLeastOnce)]);
    for name in members
        .iter()
        .chain(["h", "plain", "pub"].map(String::from).iter())
    {
        c.packets(name);
    }
    (c, members)
}

#[test]
fn each_message_reaches_one_member_of_each_group_at_1_and_2_shards() {
    for shards in [1, 2] {
        let (mut c, members) = groups_cluster(shards, SharedStrategy::RoundRobin);
        publish_numbered(&mut c, 0..20);
        let mut names = members.clone();
        names.extend(["h", "plain"].map(String::from));
        let got = take_acked(&mut c, &names);
        let mut to_g: Vec<&String> = members.iter().flat_map(|m| &got[m]).collect();
        to_g.sort_by_key(|p| p[1..].parse::<u32>().unwrap_or(u32::MAX));
        let all: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(
            to_g,
            all.iter().collect::<Vec<_>>(),
            "{shards} shard(s): once each"
        );
        for member in &members {
            assert_eq!(
                got[member].len(),
                5,
                "{shards} shard(s): round robin, {got:?}"
            );
        }
        assert_eq!(got["h"], all, "the other group gets its own copy");
        assert_eq!(got["plain"], all, "an ordinary subscriber gets its copy");
        let delivered: u64 = c.shards.iter().map(|s| s.stats.shared_deliveries).sum();
        assert_eq!(delivered, 40);
    }
}

#[test]
fn qos0_from_the_read_buffer_also_goes_to_one_member() {
    let (mut c, members) = groups_cluster(2, SharedStrategy::Random);
    for i in 0..10 {
        c.publish("pub", "t/y", &format!("m{i}"), QoS::AtMostOnce, false, 0);
    }
    let got = take_acked(&mut c, &members);
    let total: usize = got.values().map(Vec::len).sum();
    assert_eq!(total, 10, "{got:?}");
    assert_eq!(c.payloads("plain").len(), 10);
}

#[test]
fn hash_client_id_sends_one_publishers_messages_to_one_member() {
    let (mut c, members) = groups_cluster(2, SharedStrategy::HashClientId);
    publish_numbered(&mut c, 0..12);
    let got = take_acked(&mut c, &members);
    let receivers: Vec<&String> = got
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|e| e.0)
        .collect();
    assert_eq!(receivers.len(), 1, "{got:?}");
    assert_eq!(got[receivers[0]].len(), 12);
}

#[test]
fn sticky_keeps_one_member_until_it_leaves() {
    let (mut c, members) = groups_cluster(2, SharedStrategy::Sticky);
    publish_numbered(&mut c, 0..6);
    let got = take_acked(&mut c, &members);
    let (chosen, payloads) = got
        .iter()
        .find(|(_, p)| !p.is_empty())
        .expect("someone got them");
    assert_eq!(payloads.len(), 6, "{got:?}");
    let chosen = chosen.clone();
    c.drop_connection(&chosen);
    publish_numbered(&mut c, 6..12);
    let others: Vec<String> = members.into_iter().filter(|m| *m != chosen).collect();
    let got = take_acked(&mut c, &others);
    let receivers = got.values().filter(|p| !p.is_empty()).count();
    assert_eq!(receivers, 1, "another member, and only one: {got:?}");
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 6);
}

#[test]
fn retained_messages_are_not_sent_on_a_shared_subscription() {
    for shards in [1, 2] {
        let mut c = Cluster::new(shards);
        c.connect("pub", true);
        c.publish("pub", "r/1", "kept", QoS::AtLeastOnce, true, 1);
        c.connect("member", true);
        c.subscribe(
            "member",
            &[("$share/g/r/#", QoS::AtLeastOnce), ("r/#", QoS::AtMostOnce)],
        );
        let packets = c.packets("member");
        let codes = suback_codes(&packets);
        assert_eq!(codes.len(), 2);
        let retained = packets
            .iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .count();
        assert_eq!(
            retained, 1,
            "only the ordinary subscription's copy: {packets:?}"
        );
        // A live retained publish does reach the group, with RETAIN cleared.
        c.publish("pub", "r/2", "live", QoS::AtLeastOnce, true, 2);
        let publishes = c.publishes("member");
        assert_eq!(publishes.len(), 2, "one per subscription: {publishes:?}");
        assert!(publishes.iter().all(|p| !p.retain));
    }
}

#[test]
fn invalid_share_names_get_0x80_and_the_other_filters_are_served() {
    let mut c = Cluster::new(2);
    c.connect("s", true);
    c.packets("s");
    c.subscribe(
        "s",
        &[
            ("$share/+/t", QoS::AtLeastOnce),
            ("$share//t", QoS::AtLeastOnce),
            ("$share/g", QoS::AtLeastOnce),
            ("$share/g/t", QoS::AtLeastOnce),
        ],
    );
    let codes = suback_codes(&c.packets("s"));
    use SubscribeReturnCode::{Failure, Success};
    assert_eq!(
        codes,
        [Failure, Failure, Failure, Success(QoS::AtLeastOnce)]
    );
    let sessions = c.shards[c.client("s").shard].session_gauges();
    assert_eq!(sessions.subscriptions, 1);
}

#[test]
fn the_topic_checks_see_the_filter_after_the_share_name() {
    let subscribe: BTreeMap<String, Vec<String>> =
        [("u".to_string(), vec!["allowed/#".to_string()])].into();
    let acl = TopicAcl::new(AclTables {
        subscribe_acl: Some(&subscribe),
        ..AclTables::default()
    })
    .expect("acl");
    let topic: Vec<Arc<dyn TopicPlugin>> = vec![Arc::new(acl)];
    let settings = Settings {
        plugins: CorePlugins::new(topic, vec![]),
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(2, settings);
    let mut connect = Cluster::connect_packet("s", true);
    connect.username = Some("u".into());
    c.connect_with("s", connect);
    c.packets("s");
    c.subscribe(
        "s",
        &[
            ("$share/g/allowed/x", QoS::AtMostOnce),
            ("$share/g/denied/x", QoS::AtMostOnce),
        ],
    );
    let codes = suback_codes(&c.packets("s"));
    use SubscribeReturnCode::{Failure, Success};
    assert_eq!(codes, [Success(QoS::AtMostOnce), Failure]);
}

#[test]
fn a_member_whose_session_ends_hands_its_unacknowledged_messages_to_another() {
    for shards in [1, 2] {
        let (a, b) = (id_on("a", 0, shards), id_on("b", shards - 1, shards));
        let mut c = Cluster::new(shards);
        c.connect(&a, true);
        c.connect("pub", true);
        c.subscribe(&a, &[("$share/g/w", QoS::AtLeastOnce)]);
        c.packets(&a);
        // `a` is the only member: it gets all three and acknowledges none.
        for i in 0..3u16 {
            c.publish("pub", "w", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1);
        }
        assert_eq!(c.payloads(&a), ["m0", "m1", "m2"]);
        c.connect(&b, true);
        c.subscribe(&b, &[("$share/g/w", QoS::AtLeastOnce)]);
        c.packets(&b);
        c.drop_connection(&a);
        assert_eq!(c.payloads(&b), ["m0", "m1", "m2"], "{shards} shard(s)");
        let moved: u64 = c.shards.iter().map(|s| s.stats.shared_redistributed).sum();
        assert_eq!(moved, 3);
    }
}

#[test]
fn an_offline_persistent_member_keeps_its_messages_and_gets_new_ones_only_when_alone() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, false);
    c.connect(&b, true);
    c.connect("pub", true);
    c.subscribe(&a, &[("$share/g/w", QoS::AtLeastOnce)]);
    c.subscribe(&b, &[("$share/g/w", QoS::AtLeastOnce)]);
    c.packets(&a);
    c.packets(&b);
    c.drop_connection(&a);
    for i in 0..4u16 {
        c.publish("pub", "w", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1);
    }
    let got = take_acked(&mut c, std::slice::from_ref(&b));
    assert_eq!(got[&b].len(), 4, "the online member gets them all");
    c.drop_connection(&b);
    c.publish("pub", "w", "queued", QoS::AtLeastOnce, false, 9);
    c.publish("pub", "w", "lost", QoS::AtMostOnce, false, 0);
    c.connect(&a, false);
    assert_eq!(
        c.payloads(&a),
        ["queued"],
        "QoS 1 waited in the offline member's queue"
    );
}

#[test]
fn unsubscribing_leaves_the_group_on_every_shard() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&a, &[("$share/g/u", QoS::AtMostOnce)]);
    c.subscribe(&b, &[("$share/g/u", QoS::AtMostOnce)]);
    c.send(
        &a,
        Packet::Unsubscribe(crate::protocol::Unsubscribe {
            packet_id: 2,
            filters: vec![TopicFilter::new("$share/g/u").expect("filter")],
        }),
    );
    c.packets(&a);
    c.packets(&b);
    for i in 0..4 {
        c.publish(&a, "u", &format!("m{i}"), QoS::AtMostOnce, false, 0);
    }
    assert!(c.payloads(&a).is_empty());
    assert_eq!(c.payloads(&b).len(), 4);
}

/// A SUBACK for a shared subscription leaves once every other shard counts the new member: a
/// message published on another shard right after it reaches the group.
#[test]
fn the_suback_waits_until_every_shard_knows_the_member() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.packets(&a);
    let (shard, conn) = (c.client(&a).shard, c.client(&a).conn);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 5,
        filters: vec![SubscribeFilter {
            filter: TopicFilter::new("$share/g/s").expect("filter"),
            qos: QoS::AtMostOnce,
        }],
    });
    c.shards[shard].handle_encoded(conn, &subscribe, c.now);
    let mut actions = Vec::new();
    c.shards[shard].poll_actions(&mut actions);
    let announced = actions.iter().any(|action| {
        matches!(
            action,
            Action::Bus {
                message: BusMessage::ShareMembers { token: Some(_), .. },
                ..
            }
        )
    });
    assert!(announced, "{actions:?}");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Flush(f) if *f == conn)),
        "no SUBACK yet: {actions:?}"
    );
    for action in actions {
        if let Action::Bus { to, message } = action {
            c.bus.push_back((to, message));
        }
    }
    c.run();
    assert!(matches!(c.packets(&a)[..], [Packet::SubAck(_)]));
    c.publish(&b, "s", "m", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads(&a), ["m"]);
}
