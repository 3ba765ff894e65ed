//! SUBSCRIBE and UNSUBSCRIBE: the granted QoS, a SUBACK held until the other shards know the
//! filter, retained messages sent after the SUBACK, and subscription changes between two messages
//! on one topic.

use bytes::Bytes;

use super::*;
use crate::protocol::{
    Publish, Subscribe, SubscribeFilter, SubscribeReturnCode, UnsubAck, Unsubscribe,
};

#[test]
fn granted_qos_is_capped_by_config() {
    let settings = Settings {
        max_qos: QoS::AtLeastOnce,
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(1, settings);
    c.connect("s", true);
    c.subscribe("s", &[("a", QoS::ExactlyOnce)]);
    let packets = c.packets("s");
    assert!(
        matches!(&packets[1], Packet::SubAck(s) if s.return_codes == [SubscribeReturnCode::Success(QoS::AtLeastOnce)])
    );
}

#[test]
fn retained_messages_reach_new_subscribers_on_every_shard() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.publish(&a, "r/1", "first", QoS::AtLeastOnce, true, 1);
    c.publish(&a, "r/1", "second", QoS::AtLeastOnce, true, 2);
    c.publish(&a, "r/2", "other", QoS::AtMostOnce, true, 0);
    c.publish(&a, "r/2", "", QoS::AtMostOnce, true, 0);
    c.connect(&b, true);
    c.subscribe(&b, &[("r/#", QoS::AtLeastOnce)]);
    let packets = c.packets(&b);
    assert!(
        matches!(packets[1], Packet::SubAck(_)),
        "SUBACK comes before retained messages"
    );
    let retained: Vec<&Publish> = packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(retained.len(), 1);
    assert!(retained[0].retain);
    assert_eq!(retained[0].payload, Bytes::from("second"));
    assert_eq!(
        c.shards
            .iter()
            .map(|s| s.retained_count())
            .collect::<Vec<_>>(),
        [1, 1]
    );
}

#[test]
fn suback_waits_for_other_shards_to_learn_the_filter() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.packets(&b);
    let conn = c.client(&b).conn;
    let shard = c.client(&b).shard;
    c.shards[shard].handle_encoded(
        conn,
        &Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new("x").expect("filter"),
                qos: QoS::AtMostOnce,
            }],
        }),
        c.now,
    );
    let mut actions = Vec::new();
    c.shards[shard].poll_actions(&mut actions);
    assert!(
        actions.iter().all(|a| matches!(a, Action::Bus { .. })),
        "no SUBACK before confirmation: {actions:?}"
    );
    for action in actions {
        if let Action::Bus { to, message } = action {
            c.bus.push_back((to, message));
        }
    }
    c.run();
    assert!(matches!(c.packets(&b)[..], [Packet::SubAck(_)]));
    c.publish(&a, "x", "hello", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads(&b), ["hello"]);
}

#[test]
fn unsubscribe_stops_delivery_and_cross_shard_interest() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[("u", QoS::AtMostOnce)]);
    c.send(
        &b,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            filters: vec![
                TopicFilter::new("u").expect("filter"),
                TopicFilter::new("never").expect("filter"),
            ],
        }),
    );
    assert!(matches!(
        c.packets(&b).last(),
        Some(Packet::UnsubAck(UnsubAck { packet_id: 4 }))
    ));
    let sent_before = c.shards[c.client(&a).shard].stats.bus_sent;
    c.publish(&a, "u", "gone", QoS::AtMostOnce, false, 0);
    assert!(c.payloads(&b).is_empty());
    assert_eq!(
        c.shards[c.client(&a).shard].stats.bus_sent,
        sent_before,
        "no bus traffic for an unwanted topic"
    );
}

/// The last topic's matches are reused for the next message on it: a subscription, a change of
/// QoS and an unsubscription between two messages on one topic must each be seen at once.
#[test]
fn subscription_changes_between_messages_on_one_topic_apply_at_once() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("s1", true);
    c.connect("s2", true);
    c.subscribe("s1", &[("t/+", QoS::AtMostOnce)]);
    c.publish("pub", "t/x", "1", QoS::AtLeastOnce, false, 1);
    c.subscribe("s2", &[("t/x", QoS::AtMostOnce)]);
    c.publish("pub", "t/x", "2", QoS::AtLeastOnce, false, 2);
    c.subscribe("s1", &[("t/+", QoS::AtLeastOnce)]);
    c.publish("pub", "t/x", "3", QoS::AtLeastOnce, false, 3);
    c.send(
        "s2",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 9,
            filters: vec![TopicFilter::new("t/x").expect("filter")],
        }),
    );
    c.publish("pub", "t/x", "4", QoS::AtLeastOnce, false, 4);
    let s1: Vec<(String, QoS)> = c
        .publishes("s1")
        .into_iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    let q0 = QoS::AtMostOnce;
    let q1 = QoS::AtLeastOnce;
    assert_eq!(
        s1,
        [("1", q0), ("2", q0), ("3", q1), ("4", q1)].map(|(p, q)| (p.to_string(), q))
    );
    assert_eq!(c.payloads("s2"), ["2", "3"]);
}
