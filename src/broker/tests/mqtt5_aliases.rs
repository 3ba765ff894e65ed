//! Topic Aliases from the broker to an MQTT 5 subscriber (`topic_alias_out.rs`): the first
//! topics get aliases up to the client's Topic Alias Maximum, the topic name goes with the alias
//! once and is empty after; a client that allowed none gets none; both delivery paths (a QoS 0
//! message sent at once, a QoS 1 message through the session) and across shards.

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
