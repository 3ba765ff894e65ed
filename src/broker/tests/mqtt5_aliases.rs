//! Topic Aliases from the broker to an MQTT 5 subscriber (`topic_alias_out.rs`): the first
//! topics get aliases up to the client's Topic Alias Maximum, the topic name goes with the alias
//! once and is empty after; a client that allowed none gets none; both delivery paths (a QoS 0
//! message sent at once, a QoS 1 message through the session) and across shards. And a client's
//! aliases on QoS 0 PUBLISHes routed in place.

use super::*;

/// The (topic, alias) of each PUBLISH among `packets`; an empty topic is `""`.
fn topics_and_aliases(packets: &[v5::Packet]) -> Vec<(String, Option<u16>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some((
                p.topic.as_ref().map_or(String::new(), |t| t.to_string()),
                p.properties.topic_alias,
            )),
            _ => None,
        })
        .collect()
}

fn allowing_aliases(name: &str, maximum: u16) -> v5::Connect {
    let properties = Properties {
        topic_alias_maximum: Some(maximum),
        ..Properties::default()
    };
    v5_connect(name, 0, properties)
}

#[test]
fn first_topics_get_aliases_then_go_with_an_empty_topic() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    for (shards, qos) in [
        (1, QoS::AtMostOnce),
        (1, QoS::AtLeastOnce),
        (2, QoS::AtLeastOnce),
    ] {
        let mut c = Cluster::new(shards);
        c.connect_v5(&subscriber, allowing_aliases(&subscriber, 2), ALLOWED);
        c.connect_v5_plain("none");
        for name in [subscriber.as_str(), "none"] {
            c.send_v5(name, subscribe_v5("al/#"));
            c.packets_v5(name);
        }
        c.connect_v5_plain(&publisher);
        for topic in ["al/a", "al/a", "al/b", "al/c", "al/a", "al/b", "al/c"] {
            c.send_v5(&publisher, publish_v5(topic, b"x", qos, false));
        }
        let context = format!("{shards} shard(s), {qos:?}");
        let expected = [
            ("al/a", Some(1)),
            ("", Some(1)),
            ("al/b", Some(2)),
            ("al/c", None),
            ("", Some(1)),
            ("", Some(2)),
            ("al/c", None),
        ]
        .map(|(t, a)| (t.to_string(), a));
        assert_eq!(
            topics_and_aliases(&c.packets_v5(&subscriber)),
            expected,
            "{context}"
        );
        // Topic Alias Maximum absent (0): never an alias [MQTT-3.3.2-11].
        let plain = topics_and_aliases(&c.packets_v5("none"));
        assert_eq!(plain.len(), 7, "{context}");
        assert!(
            plain.iter().all(|(t, a)| !t.is_empty() && a.is_none()),
            "{context}"
        );
    }
}

#[test]
fn a_new_connection_starts_without_aliases() {
    let mut c = Cluster::new(1);
    c.connect_v5("sub", allowing_aliases("sub", 5), ALLOWED);
    c.send_v5("sub", subscribe_v5("al/#"));
    c.connect_v5_plain("pub");
    c.send_v5("pub", publish_v5("al/a", b"1", QoS::AtLeastOnce, false));
    c.send_v5("pub", publish_v5("al/a", b"2", QoS::AtLeastOnce, false));
    let got = topics_and_aliases(&c.packets_v5("sub"));
    assert_eq!(got, [("al/a".into(), Some(1)), (String::new(), Some(1))]);
    c.drop_connection("sub");
    c.connect_v5("sub", allowing_aliases("sub", 5), ALLOWED);
    c.send_v5("sub", subscribe_v5("al/#"));
    c.packets_v5("sub");
    c.send_v5("pub", publish_v5("al/a", b"3", QoS::AtLeastOnce, false));
    let got = topics_and_aliases(&c.packets_v5("sub"));
    assert_eq!(got, [("al/a".into(), Some(1))]);
}

/// A client's QoS 0 PUBLISH whose only property is a Topic Alias is routed from the read buffer
/// (`handlers/publish.rs`, `handle_borrowed_aliased`) under the topic the alias stands for; a
/// retained one is decoded and reads the same alias.
#[test]
fn client_aliases_on_qos0_are_routed_in_place() {
    let mut c = Cluster::new(1);
    c.connect_v5_plain("sub");
    c.send_v5("sub", subscribe_v5("t/#"));
    c.packets_v5("sub");
    c.connect_v5_plain("pub");
    c.send_v5("pub", aliased_publish(Some("t/a"), 3, b"1"));
    c.send_v5("pub", aliased_publish(None, 3, b"2"));
    c.send_v5("pub", aliased_publish(Some("t/b"), 3, b"3"));
    c.send_v5("pub", aliased_publish(None, 3, b"4"));
    assert_eq!(c.shards[0].routed_in_place, 4);
    let v5::Packet::Publish(retained) = aliased_publish(None, 3, b"5") else {
        unreachable!("a PUBLISH")
    };
    c.send_v5(
        "pub",
        v5::Packet::Publish(v5::Publish {
            retain: true,
            ..retained
        }),
    );
    assert_eq!(c.shards[0].routed_in_place, 4, "a retained one is decoded");
    let got: Vec<(String, Bytes)> = c
        .packets_v5("sub")
        .into_iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some((p.topic?.as_str().to_string(), p.payload)),
            _ => None,
        })
        .collect();
    let want: Vec<(String, Bytes)> = [
        ("t/a", "1"),
        ("t/a", "2"),
        ("t/b", "3"),
        ("t/b", "4"),
        ("t/b", "5"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), Bytes::from(p.as_bytes())))
    .collect();
    assert_eq!(got, want);
    assert!(c.packets_v5("pub").is_empty());
    // An alias with no topic yet is not routed in place, and closes as before.
    c.connect_v5_plain("other");
    c.send_v5("other", aliased_publish(None, 2, b"6"));
    assert_eq!(
        disconnect_reason(&c.packets_v5("other")),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    assert_eq!(c.shards[0].routed_in_place, 4);
}
