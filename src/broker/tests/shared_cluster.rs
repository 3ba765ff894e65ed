//! Share groups with members on other cluster nodes, core side (`shared.rs`): the shards tell
//! the cluster link (the bus index after them) their members, a SUBACK waits for its
//! confirmation, the other nodes' members (announced by the link) take their share of the
//! messages, and a message that came from another node stays on this node. The test plays the
//! link.

use std::sync::Arc;

use super::*;
use crate::protocol::PubAck;

fn linked(shards: usize) -> Cluster {
    let settings = Settings {
        cluster_link: true,
        ..Settings::default()
    };
    Cluster::with_settings(shards, settings)
}

fn group() -> Arc<ShareGroup> {
    Arc::new(ShareGroup {
        name: "g".into(),
        filter: TopicFilter::new("t").expect("a filter"),
    })
}

/// Confirms, as the link does once every other node has, what the shards announced to it.
fn link_confirms(c: &mut Cluster) {
    for (from, message) in std::mem::take(&mut c.to_link) {
        match message {
            BusMessage::ShareMembers {
                token: Some(token), ..
            } => c.bus.push_back((from, BusMessage::SharedAck { token })),
            BusMessage::Interest {
                token: Some(token), ..
            } => c.bus.push_back((from, BusMessage::InterestAck { token })),
            _ => {}
        }
    }
    c.run();
}

/// The link tells every shard that the other nodes have `online` members of `$share/g/t`.
fn other_nodes_have(c: &mut Cluster, online: u32) {
    let link = c.shards.len();
    for shard in 0..c.shards.len() {
        let members = BusMessage::ShareMembers {
            from: link,
            group: group(),
            online,
            offline: 0,
            token: None,
        };
        c.bus.push_back((shard, members));
    }
    c.run();
}

/// The payloads of the messages the shards gave the link for another node's member.
fn given_to_link(c: &mut Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for (_, message) in std::mem::take(&mut c.to_link) {
        if let BusMessage::SharedPublish {
            message,
            local_only,
            ..
        } = message
        {
            assert!(!local_only && !message.retain);
            out.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
    }
    out
}

/// Payloads `name` received, each QoS 1 one acknowledged.
fn acked(c: &mut Cluster, name: &str) -> Vec<String> {
    let publishes = c.publishes(name);
    for p in &publishes {
        if let Some(packet_id) = p.packet_id {
            c.send(name, Packet::PubAck(PubAck { packet_id }));
        }
    }
    publishes
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[test]
fn a_members_suback_waits_until_the_link_confirms_it_knows_the_member() {
    let mut c = linked(1);
    c.connect("m", true);
    c.packets("m");
    c.subscribe("m", &[("$share/g/t", QoS::AtLeastOnce)]);
    assert!(
        c.packets("m").is_empty(),
        "no SUBACK before the link's word"
    );
    let told = c.to_link.iter().any(|(_, m)| {
        matches!(
            m,
            BusMessage::ShareMembers {
                online: 1,
                offline: 0,
                token: Some(_),
                ..
            }
        )
    });
    assert!(told, "{:?}", c.to_link);
    link_confirms(&mut c);
    assert!(matches!(c.packets("m")[..], [Packet::SubAck(_)]));
}

#[test]
fn the_other_nodes_members_take_their_share_by_round_robin() {
    let mut c = linked(2);
    for name in ["m", "plain", "pub"] {
        c.connect(name, true);
    }
    c.subscribe("m", &[("$share/g/t", QoS::AtLeastOnce)]);
    c.subscribe("plain", &[("t", QoS::AtLeastOnce)]);
    link_confirms(&mut c);
    c.packets("m");
    c.packets("plain");
    other_nodes_have(&mut c, 3);
    for i in 0..8u16 {
        c.publish("pub", "t", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1);
    }
    let here = acked(&mut c, "m");
    let there = given_to_link(&mut c);
    assert_eq!(
        (here.len(), there.len()),
        (2, 6),
        "one member here, three elsewhere"
    );
    let mut all: Vec<String> = here.into_iter().chain(there).collect();
    all.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(all, expected, "each once");
    assert_eq!(
        acked(&mut c, "plain"),
        expected,
        "ordinary subscribers get all"
    );
}

#[test]
fn a_message_from_another_node_stays_on_this_node() {
    let mut c = linked(2);
    c.connect("m", true);
    c.subscribe("m", &[("$share/g/t", QoS::AtMostOnce)]);
    link_confirms(&mut c);
    c.packets("m");
    other_nodes_have(&mut c, 5);
    let from_other_node = |text: &'static str| BusMessage::SharedPublish {
        group: group(),
        message: Message {
            topic: TopicName::new("t").expect("a topic"),
            payload: Bytes::from_static(text.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        },
        hash: None,
        hops: 0,
        stamp: None,
        local_only: true,
    };
    // To the shard without the member: passed on to the member's shard, not to the link.
    let elsewhere = 1 - c.client("m").shard;
    c.bus.push_back((elsewhere, from_other_node("one")));
    c.run();
    assert_eq!(c.payloads("m"), ["one"]);
    assert!(given_to_link(&mut c).is_empty());
    // No member left here: dropped and counted, although other nodes have members.
    c.drop_connection("m");
    c.bus.push_back((0, from_other_node("two")));
    c.run();
    assert!(
        given_to_link(&mut c).is_empty(),
        "never back to the cluster"
    );
    let dropped: u64 = c.shards.iter().map(|s| s.stats.shared_dropped).sum();
    assert_eq!(dropped, 1);
}
