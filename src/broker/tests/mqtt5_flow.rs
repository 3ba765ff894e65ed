//! MQTT 5 limits the broker sets on its clients: its own Receive Maximum (the client's QoS 1/2
//! PUBLISHes not yet acknowledged, 0x93 beyond it), `max_keepalive` (Server Keep Alive for MQTT 5,
//! a refusal for MQTT 3), and Request Problem Information 0 (no Reason String on the acks).

use super::mqtt5::{disconnect_reason, v5_connect};
use super::*;
use crate::protocol::v5::{self, Properties, ReasonCode};

fn publish_v5(topic: &str, qos: QoS, packet_id: u16) -> v5::Packet {
    let message = Message {
        topic: TopicName::new(topic).expect("topic"),
        payload: Bytes::from_static(b"x"),
        qos,
        retain: false,
        properties: None,
    };
    v5::Packet::Publish(v5::Publish::new(message, Some(packet_id), false))
}

fn ack(packet_id: u16) -> v5::Ack {
    v5::Ack {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    }
}

fn with_receive_maximum(maximum: u16, persistence: bool) -> Cluster {
    Cluster::with_settings(
        1,
        Settings {
            receive_maximum: maximum,
            persistence,
            ..Settings::default()
        },
    )
}

fn connect_plain(c: &mut Cluster, name: &str, keep_alive: u16) -> v5::ConnAck {
    c.connect_v5(
        name,
        v5_connect(name, keep_alive, Properties::default()),
        AuthVerdict::Allowed,
    )
}

fn count<F: Fn(&v5::Packet) -> bool>(packets: &[v5::Packet], f: F) -> usize {
    packets.iter().filter(|p| f(p)).count()
}

#[test]
fn receive_maximum_is_announced_below_the_protocols() {
    let mut c = with_receive_maximum(5, false);
    assert_eq!(
        connect_plain(&mut c, "a", 0).properties.receive_maximum,
        Some(5)
    );
    let mut c = with_receive_maximum(u16::MAX, false);
    assert_eq!(
        connect_plain(&mut c, "a", 0).properties.receive_maximum,
        None
    );
}

/// QoS 2 PUBLISHes count until their PUBCOMP: one above the maximum is a DISCONNECT 0x93,
/// counted as a protocol error; a PUBCOMP frees its place.
#[test]
fn qos2_publishes_count_until_pubcomp() {
    let mut c = with_receive_maximum(2, false);
    connect_plain(&mut c, "p", 0);
    c.send_v5("p", publish_v5("t", QoS::ExactlyOnce, 1));
    c.send_v5("p", publish_v5("t", QoS::ExactlyOnce, 2));
    let recs = c.packets_v5("p");
    assert_eq!(count(&recs, |p| matches!(p, v5::Packet::PubRec(_))), 2);
    // PUBREL 1, PUBCOMP 1: one place free again, for packet 3.
    c.send_v5("p", v5::Packet::PubRel(ack(1)));
    c.send_v5("p", publish_v5("t", QoS::ExactlyOnce, 3));
    let out = c.packets_v5("p");
    assert_eq!(count(&out, |p| matches!(p, v5::Packet::PubComp(_))), 1);
    assert_eq!(count(&out, |p| matches!(p, v5::Packet::PubRec(_))), 1);
    assert_eq!(disconnect_reason(&out), None);
    assert_eq!(c.shards[0].stats.protocol_errors, 0);
    // Packets 2 and 3 await their PUBREL: a fourth is one too many.
    c.send_v5("p", publish_v5("t", QoS::ExactlyOnce, 4));
    assert_eq!(
        disconnect_reason(&c.packets_v5("p")),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
    assert!(c.client("p").closed);
    assert_eq!(c.shards[0].stats.protocol_errors, 1);
    // Not routed: nobody was subscribed, but it was not counted as received either.
    assert_eq!(c.shards[0].stats.publish_received, 3);
}

/// A QoS 1 PUBLISH answered at once never fills the window; QoS 0 is never counted.
#[test]
fn acknowledged_publishes_and_qos0_leave_room() {
    let mut c = with_receive_maximum(1, false);
    connect_plain(&mut c, "p", 0);
    for id in 1..=10 {
        c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, id));
        c.send_v5("p", publish_v5("t", QoS::AtMostOnce, 0));
    }
    let out = c.packets_v5("p");
    assert_eq!(count(&out, |p| matches!(p, v5::Packet::PubAck(_))), 10);
    assert_eq!(disconnect_reason(&out), None);
}

/// A QoS 2 PUBLISH refused with a PUBREC error code is done with: it leaves the window.
#[test]
fn a_refusing_pubrec_frees_its_place() {
    let mut c = with_receive_maximum(1, false);
    connect_plain(&mut c, "p", 0);
    for id in 1..=3 {
        let v5::Packet::Publish(mut publish) = publish_v5("t", QoS::ExactlyOnce, id) else {
            unreachable!("publish_v5 makes a PUBLISH");
        };
        publish.payload = Bytes::from_static(b"\xff not UTF-8");
        publish.properties.payload_format_utf8 = Some(true);
        c.send_v5("p", v5::Packet::Publish(publish));
    }
    let out = c.packets_v5("p");
    let refused = count(
        &out,
        |p| matches!(p, v5::Packet::PubRec(r) if r.reason == ReasonCode::PAYLOAD_FORMAT_INVALID),
    );
    assert_eq!(refused, 3);
    assert_eq!(disconnect_reason(&out), None);
}

/// With persistence on, a PUBACK waits until what routing the PUBLISH journaled is durable; the
/// PUBLISH counts against the Receive Maximum until then.
#[test]
fn a_puback_waiting_for_the_journal_keeps_its_place() {
    let mut c = with_receive_maximum(2, true);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::AtLeastOnce)]);
    while let Some((batch, _)) = c.shards[0].take_journal() {
        c.shards[0].handle_durable(batch);
    }
    c.run();
    c.drop_connection("sub");
    connect_plain(&mut c, "p", 0);
    c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, 1));
    c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, 2));
    assert!(
        c.packets_v5("p").is_empty(),
        "the PUBACKs wait for the journal"
    );
    while let Some((batch, _)) = c.shards[0].take_journal() {
        c.shards[0].handle_durable(batch);
    }
    c.run();
    let out = c.packets_v5("p");
    assert_eq!(count(&out, |p| matches!(p, v5::Packet::PubAck(_))), 2);
    c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, 3));
    c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, 4));
    c.send_v5("p", publish_v5("t", QoS::AtLeastOnce, 5));
    assert_eq!(
        disconnect_reason(&c.packets_v5("p")),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

/// MQTT 3 clients have no Receive Maximum: unchanged.
#[test]
fn mqtt3_publishers_are_not_limited() {
    let mut c = with_receive_maximum(1, false);
    c.connect("p3", true);
    for id in 1..=5 {
        c.send(
            "p3",
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: TopicName::new("t").expect("topic"),
                packet_id: Some(id),
                payload: Bytes::from_static(b"x"),
            }),
        );
    }
    assert!(!c.client("p3").closed);
    assert_eq!(c.shards[0].stats.protocol_errors, 0);
}

fn with_max_keepalive(max: u16) -> Cluster {
    Cluster::with_settings(
        1,
        Settings {
            max_keepalive: Some(max),
            ..Settings::default()
        },
    )
}

/// An MQTT 5 client asking for more than `max_keepalive`, or for none, is told `max_keepalive`
/// in the CONNACK, and the broker holds it to it [MQTT-3.2.2-21/22].
#[test]
fn server_keep_alive_caps_what_mqtt5_clients_ask() {
    let mut c = with_max_keepalive(30);
    assert_eq!(
        connect_plain(&mut c, "ok", 20).properties.server_keep_alive,
        None
    );
    assert_eq!(
        connect_plain(&mut c, "none", 0)
            .properties
            .server_keep_alive,
        Some(30)
    );
    assert_eq!(
        connect_plain(&mut c, "long", 600)
            .properties
            .server_keep_alive,
        Some(30)
    );
    // 1.5 × 30 s without a packet: closed, whatever the client asked for.
    c.advance(Duration::from_secs(46));
    for name in ["none", "long"] {
        assert_eq!(
            disconnect_reason(&c.packets_v5(name)),
            Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            "{name}"
        );
    }
}

/// An MQTT 3 client cannot be told: one asking for more than `max_keepalive`, or for none, is
/// refused with CONNACK 0x02, as Mosquitto does.
#[test]
fn mqtt3_clients_over_max_keepalive_are_refused() {
    let mut c = with_max_keepalive(30);
    for (name, keep_alive, code) in [
        ("short", 30, ConnectReturnCode::Accepted),
        ("long", 31, ConnectReturnCode::IdentifierRejected),
        ("zero", 0, ConnectReturnCode::IdentifierRejected),
    ] {
        let connect = Connect {
            keep_alive,
            ..Cluster::connect_packet(name, true)
        };
        assert_eq!(c.connect_with(name, connect).code, code, "{name}");
    }
    // Without a limit (the default), none is refused.
    let mut c = Cluster::new(1);
    let connect = Connect {
        keep_alive: u16::MAX,
        ..Cluster::connect_packet("any", true)
    };
    assert_eq!(
        c.connect_with("any", connect).code,
        ConnectReturnCode::Accepted
    );
    assert_eq!(c.connect("zero", true).code, ConnectReturnCode::Accepted);
}

fn invalid_utf8_publish(packet_id: u16) -> v5::Packet {
    let v5::Packet::Publish(mut publish) = publish_v5("t", QoS::AtLeastOnce, packet_id) else {
        unreachable!("publish_v5 makes a PUBLISH");
    };
    publish.payload = Bytes::from_static(b"\xff");
    publish.properties.payload_format_utf8 = Some(true);
    v5::Packet::Publish(publish)
}

fn invalid_share() -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: 9,
        properties: Properties::default(),
        filters: vec![v5::Subscription {
            filter: TopicFilter::new("$share/g").expect("a valid filter, not a valid share"),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: v5::RetainHandling::SendAtSubscribe,
        }],
    })
}

/// Reason Strings explain refusals on the acks, unless the client set Request Problem
/// Information to 0 [MQTT-3.1.2-29].
#[test]
fn request_problem_information_0_keeps_reason_strings_off_the_acks() {
    let mut c = Cluster::new(1);
    for (name, asked) in [("wants", None), ("quiet", Some(false))] {
        let properties = Properties {
            request_problem_information: asked,
            ..Properties::default()
        };
        c.connect_v5(name, v5_connect(name, 0, properties), AuthVerdict::Allowed);
        c.send_v5(name, invalid_utf8_publish(1));
        c.send_v5(name, invalid_share());
        let strings: Vec<Option<String>> = c
            .packets_v5(name)
            .into_iter()
            .map(|p| match p {
                v5::Packet::PubAck(a) => {
                    assert_eq!(a.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
                    a.properties.reason_string
                }
                v5::Packet::SubAck(a) => {
                    assert_eq!(a.reason_codes, [ReasonCode::TOPIC_FILTER_INVALID]);
                    a.properties.reason_string
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(strings.len(), 2, "{name}");
        if asked.is_none() {
            assert!(strings.iter().all(Option::is_some), "{strings:?}");
            assert!(strings[1]
                .as_deref()
                .is_some_and(|s| s.contains("$share/g")));
        } else {
            assert_eq!(strings, [None, None]);
        }
    }
}
