//! PUBLISH: QoS 0/1/2 flows and their acknowledgements, a QoS 2 message re-sent before PUBREL,
//! one copy for overlapping subscriptions, QoS 0 fan-out behind queued retained messages, `$SYS`
//! topics, and the in-place route for QoS 0.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{
    PubAck, PubComp, PubRec, PubRel, Publish, Subscribe, SubscribeFilter, SubscribeReturnCode,
};

#[test]
fn qos_flows_between_shards_with_acks() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[("t/#", QoS::ExactlyOnce)]);
    let subacks = c.packets(&b);
    assert!(
        matches!(&subacks[1], Packet::SubAck(s) if s.return_codes == [SubscribeReturnCode::Success(QoS::ExactlyOnce)])
    );
    c.packets(&a);

    c.publish(&a, "t/0", "zero", QoS::AtMostOnce, false, 0);
    c.publish(&a, "t/1", "one", QoS::AtLeastOnce, false, 10);
    c.publish(&a, "t/2", "two", QoS::ExactlyOnce, false, 11);
    assert_eq!(
        c.packets(&a),
        [
            Packet::PubAck(PubAck { packet_id: 10 }),
            Packet::PubRec(PubRec { packet_id: 11 })
        ]
    );
    let got = c.publishes(&b);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
    );
    assert!(got.iter().all(|p| !p.retain));

    c.send(&a, Packet::PubRel(PubRel { packet_id: 11 }));
    assert_eq!(c.packets(&a), [Packet::PubComp(PubComp { packet_id: 11 })]);
    let qos2_id = got[2].packet_id.expect("id");
    c.send(&b, Packet::PubRec(PubRec { packet_id: qos2_id }));
    assert_eq!(
        c.packets(&b),
        [Packet::PubRel(PubRel { packet_id: qos2_id })]
    );
    c.send(&b, Packet::PubComp(PubComp { packet_id: qos2_id }));
    assert_eq!(
        c.shards.iter().map(|s| s.inflight_count()).sum::<usize>(),
        1,
        "QoS 1 still unacked"
    );
}

#[test]
fn incoming_qos2_resent_before_pubrel_is_delivered_once() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("sub", true);
    c.subscribe("sub", &[("x", QoS::ExactlyOnce)]);
    c.packets("sub");
    c.publish("pub", "x", "once", QoS::ExactlyOnce, false, 5);
    c.publish("pub", "x", "once", QoS::ExactlyOnce, false, 5);
    assert_eq!(c.payloads("sub"), ["once"]);
    c.send("pub", Packet::PubRel(PubRel { packet_id: 5 }));
    c.publish("pub", "x", "again", QoS::ExactlyOnce, false, 5);
    assert_eq!(c.payloads("sub"), ["again"]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_max_qos() {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe(
        "s",
        &[
            ("a/+", QoS::AtMostOnce),
            ("a/#", QoS::AtLeastOnce),
            ("#", QoS::AtMostOnce),
        ],
    );
    c.packets("s");
    c.publish("p", "a/b", "m", QoS::ExactlyOnce, false, 1);
    let got = c.publishes("s");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

/// A live QoS 0 message is encoded once for all subscribers that take it at once; one that still
/// has retained messages queued (after its SUBACK) gets it after them, and QoS 1 subscribers get
/// their own packet with an id.
#[test]
fn qos0_fan_out_shares_one_encoding_and_keeps_order_behind_queued_retained() {
    let mut c = Cluster::new(1);
    for name in ["p", "s0", "s1", "late"] {
        c.connect(name, true);
    }
    c.subscribe("s0", &[("t/#", QoS::AtMostOnce)]);
    c.subscribe("s1", &[("t/#", QoS::AtLeastOnce)]);
    let payload = "x".repeat(1024);
    for i in 0..100 {
        c.publish("p", &format!("t/{i}"), &payload, QoS::AtMostOnce, true, 0);
    }
    for name in ["s0", "s1", "late"] {
        c.packets(name);
    }
    // `late` subscribes and, before anything is written, a live message arrives: 100 KiB of
    // retained messages are more than one outbox chunk, so some are still queued.
    let late = c.client("late").conn;
    let publisher = c.client("p").conn;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 9,
        filters: vec![SubscribeFilter {
            filter: TopicFilter::new("t/#").expect("filter"),
            qos: QoS::AtMostOnce,
        }],
    });
    let now = c.now;
    c.shards[0].handle_encoded(late, &subscribe, now);
    // Published at QoS 1: s0 and late get it at QoS 0 (their grant), s1 at QoS 1.
    let live = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("t/live").expect("topic"),
        packet_id: Some(7),
        payload: Bytes::from_static(b"live"),
    });
    c.shards[0].handle_encoded(publisher, &live, now);
    c.run();

    let s0 = c.publishes("s0");
    assert_eq!(s0.len(), 1);
    assert_eq!(
        (s0[0].qos, s0[0].retain, s0[0].packet_id),
        (QoS::AtMostOnce, false, None)
    );
    assert_eq!(&s0[0].payload[..], b"live");
    let s1 = c.publishes("s1");
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].qos, QoS::AtLeastOnce);
    assert!(s1[0].packet_id.is_some());
    let got = c.publishes("late");
    assert_eq!(got.len(), 101, "100 retained, then the live one");
    assert!(got[..100].iter().all(|p| p.retain));
    assert_eq!(got[100].topic.as_str(), "t/live");
    assert_eq!((got[100].qos, got[100].retain), (QoS::AtMostOnce, false));
}

#[test]
fn sys_topics_are_not_delivered_from_clients_or_to_leading_wildcards() {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe(
        "s",
        &[
            ("#", QoS::AtMostOnce),
            ("$SYS/#", QoS::AtMostOnce),
            ("$other/#", QoS::AtMostOnce),
        ],
    );
    c.packets("s");
    c.publish("p", "$SYS/fake", "x", QoS::AtMostOnce, false, 0);
    c.publish("p", "$other/t", "y", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads("s"), ["y"]);
}

/// The in-place route takes a QoS 0 PUBLISH only from an active connection: not from one the
/// broker is closing (its packets are ignored), nor from an unknown one.
#[test]
fn in_place_route_ignores_closing_and_unknown_connections() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("sub", true);
    c.subscribe("sub", &[("t", QoS::AtMostOnce)]);
    c.packets("sub");
    let conn = c.client("pub").conn;
    let received = c.shards[0].stats.publish_received;
    c.shards[0].handle_encoded(conn + 1000, &qos0_to_t(b"x"), c.now);
    c.shards[0].handle_protocol_error(conn);
    c.shards[0].handle_encoded(conn, &qos0_to_t(b"x"), c.now);
    c.run();
    assert!(c.payloads("sub").is_empty());
    assert_eq!(c.shards[0].stats.publish_received, received);
    assert_eq!(c.shards[0].routed_in_place, 0);
    // An active connection's is taken, as a control.
    c.connect("pub2", true);
    let conn = c.client("pub2").conn;
    c.shards[0].handle_encoded(conn, &qos0_to_t(b"x"), c.now);
    assert_eq!(c.shards[0].routed_in_place, 1);
    c.run();
    assert_eq!(c.payloads("sub"), ["x"]);
}

/// A writer that keeps its own buffer (the runtime's write side) swaps it with the outbox each
/// turn; when a connection has nothing new, both buffers go to the shard's pool and the
/// connection keeps none, and the next burst for any connection is written into that memory.
#[test]
fn an_idle_connection_gives_its_buffers_to_the_pool_and_the_next_burst_reuses_them() {
    let mut c = Cluster::new(1);
    c.connect("p", true);
    c.connect("s", true);
    c.subscribe("s", &[("t", QoS::AtMostOnce)]);
    c.packets("s");
    let (publisher, subscriber) = (c.client("p").conn, c.client("s").conn);
    let now = c.now;
    let core = &mut c.shards[0];
    let mut writing = BytesMut::new();

    core.handle_encoded(publisher, &qos0_to_t(b"one"), now);
    assert_eq!(core.swap_outbox(subscriber, &mut writing), Some(false));
    assert!(writing.ends_with(b"one"));
    let memory = writing.as_ptr();

    // Written, and nothing new: the connection goes idle holding no buffer.
    let pooled = core.outbox_pool.len();
    assert_eq!(core.swap_outbox(subscriber, &mut writing), Some(false));
    assert!(writing.is_empty());
    assert_eq!(writing.capacity(), 0);
    assert_eq!(core.connections[&subscriber].outbox.capacity(), 0);
    assert_eq!(core.outbox_pool.len(), pooled + 1);

    // The next message is encoded into the buffer that was just given back.
    core.handle_encoded(publisher, &qos0_to_t(b"two"), now);
    assert_eq!(core.outbox_pool.len(), pooled);
    assert_eq!(core.swap_outbox(subscriber, &mut writing), Some(false));
    assert!(writing.ends_with(b"two"));
    assert_eq!(writing.as_ptr(), memory);
}

/// A QoS 0 PUBLISH to topic `t`, as a client sends it.
fn qos0_to_t(payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").expect("topic"),
        packet_id: None,
        payload: Bytes::from_static(payload),
    })
}
