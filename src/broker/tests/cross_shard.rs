//! Between shards: a client id's home shard, and the bus: publishes for another shard cross as one
//! batch in order, one publisher's order is kept, and a new interest on another shard is seen at
//! once.

use bytes::Bytes;

use super::*;
use crate::protocol::Publish;

/// A 2-shard cluster with a publisher `a` and a subscriber `b` whose sessions live on different
/// shards; `b` holds its SUBACK for `filter` at `qos`.
fn subscriber_on_other_shard(filter: &str, qos: QoS) -> (Cluster, String, String) {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[(filter, qos)]);
    assert!(matches!(
        c.packets(&b)[..],
        [Packet::ConnAck(_), Packet::SubAck(_)]
    ));
    (c, a, b)
}

#[test]
fn home_shard_is_stable() {
    assert_eq!(home_shard("client-1", 1), 0);
    assert_eq!(home_shard("client-1", 4), home_shard("client-1", 4));
    // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(
        home_shard("a", 1000),
        (0xaf63_dc4c_8601_ec8c_u64 % 1000) as usize
    );
}

#[test]
fn order_per_publisher_is_kept_across_shards() {
    let (mut c, a, b) = subscriber_on_other_shard("o", QoS::AtLeastOnce);
    for i in 0..15u16 {
        c.publish(&a, "o", &i.to_string(), QoS::AtLeastOnce, false, i + 1);
    }
    // Window of 20 holds them all.
    let expected: Vec<String> = (0..15).map(|i| i.to_string()).collect();
    assert_eq!(c.payloads(&b), expected);
}

/// Publishes for another shard handled before one `poll_actions` cross the bus as one batch, in
/// order, whether they were routed in place (QoS 0 from the read buffer) or decoded (QoS 1), and
/// each arrives at its own QoS (the subscription grants QoS 1).
#[test]
fn publishes_for_another_shard_cross_as_one_batch_in_order() {
    let (mut c, a, b) = subscriber_on_other_shard("t/#", QoS::AtLeastOnce);
    let (shard, conn) = (c.client(&a).shard, c.client(&a).conn);
    for (i, qos) in [
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
        QoS::AtMostOnce,
        QoS::AtMostOnce,
    ]
    .into_iter()
    .enumerate()
    {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new(&format!("t/{i}")).expect("topic"),
            packet_id: (qos != QoS::AtMostOnce).then_some(10 + i as u16),
            payload: Bytes::from(format!("m{i}")),
        };
        c.shards[shard].handle_encoded(conn, &Packet::Publish(publish), c.now);
    }
    assert_eq!(c.shards[shard].routed_in_place, 3, "QoS 0 went in place");
    let mut actions = Vec::new();
    c.shards[shard].poll_actions(&mut actions);
    let batches: Vec<&PublishBatch> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Bus {
                message: BusMessage::Publishes(batch, _),
                ..
            } => Some(batch),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 1, "one bus message: {actions:?}");
    let topics: Vec<&[u8]> = batches[0].iter().map(|p| p.topic).collect();
    assert_eq!(topics, [&b"t/0"[..], b"t/1", b"t/2", b"t/3"]);
    for action in actions {
        if let Action::Bus { to, message } = action {
            c.bus.push_back((to, message));
        }
    }
    c.run();
    let got: Vec<(String, QoS)> = c
        .publishes(&b)
        .into_iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    assert_eq!(
        got,
        [
            ("m0".to_string(), QoS::AtMostOnce),
            ("m1".to_string(), QoS::AtLeastOnce),
            ("m2".to_string(), QoS::AtMostOnce),
            ("m3".to_string(), QoS::AtMostOnce),
        ]
    );
}

/// The shards interested in the last topic are reused for the next message on it: a subscription
/// made on another shard between two messages on one topic must get the second.
#[test]
fn another_shard_subscribing_between_messages_on_one_topic_gets_the_next() {
    let (mut c, a, b) = subscriber_on_other_shard("elsewhere", QoS::AtMostOnce);
    c.publish(&a, "t", "before", QoS::AtMostOnce, false, 0);
    assert!(c.payloads(&b).is_empty());
    c.subscribe(&b, &[("t", QoS::AtMostOnce)]);
    c.packets(&b);
    c.publish(&a, "t", "after", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads(&b), ["after"]);
}
