//! MQTT 5 at delivery: Message Expiry Interval (a copy that waited past it is not sent, one that
//! waited less says what is left [MQTT-3.3.2-5, -6]) and Subscription Identifiers (every matching
//! subscription's, one PUBLISH per session [MQTT-3.3.4-3..5]), across shards.

use super::*;

/// A PUBLISH from an MQTT 5 client with Message Expiry Interval `seconds`.
fn expiring(topic: &str, payload: &'static [u8], retain: bool, seconds: u32) -> v5::Packet {
    let v5::Packet::Publish(mut publish) = publish_v5(topic, payload, QoS::AtLeastOnce, retain)
    else {
        unreachable!("publish_v5 makes a PUBLISH");
    };
    publish.properties.message_expiry_interval = Some(seconds);
    v5::Packet::Publish(publish)
}

/// The PUBLISHes among `packets`: payload and Message Expiry Interval.
fn with_expiry(packets: &[v5::Packet]) -> Vec<(Bytes, Option<u32>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => {
                Some((p.payload.clone(), p.properties.message_expiry_interval))
            }
            _ => None,
        })
        .collect()
}

fn persistent(name: &str, clean_start: bool) -> v5::Connect {
    let properties = Properties {
        session_expiry_interval: Some(100),
        ..Properties::default()
    };
    v5::Connect {
        clean_start,
        ..v5_connect(name, 0, properties)
    }
}

#[test]
fn a_queued_message_past_its_expiry_is_not_sent_and_one_within_says_what_is_left() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect_v5(
        &subscriber,
        persistent(&subscriber, true),
        AuthVerdict::Allowed,
    );
    c.send_v5(&subscriber, subscribe_v5("ex/#"));
    c.packets_v5(&subscriber);
    c.drop_connection(&subscriber);
    c.connect_v5_plain(&publisher);
    c.send_v5(&publisher, expiring("ex/a", b"short", false, 1));
    c.send_v5(&publisher, expiring("ex/a", b"long", false, 60));
    c.send_v5(
        &publisher,
        publish_v5("ex/a", b"never", QoS::AtLeastOnce, false),
    );
    c.advance(Duration::from_secs(2));
    c.connect_v5(
        &subscriber,
        persistent(&subscriber, false),
        AuthVerdict::Allowed,
    );
    let got = with_expiry(&c.packets_v5(&subscriber));
    assert_eq!(
        got,
        [
            (Bytes::from_static(b"long"), Some(58)),
            (Bytes::from_static(b"never"), None),
        ]
    );
    let expired: u64 = c
        .shards
        .iter()
        .map(|s| s.stats.publish_dropped_expired)
        .sum();
    assert_eq!(expired, 1);
}

#[test]
fn a_message_waiting_behind_a_full_window_expires_there() {
    let properties = Properties {
        receive_maximum: Some(1),
        ..Properties::default()
    };
    let mut c = subscriber_and_publisher("sub", properties, "win/#");
    c.send_v5("pub", expiring("win/a", b"first", false, 1));
    c.send_v5("pub", expiring("win/a", b"second", false, 1));
    c.send_v5("pub", expiring("win/a", b"third", false, 30));
    let got = c.packets_v5("sub");
    assert_eq!(with_expiry(&got), [(Bytes::from_static(b"first"), Some(1))]);
    c.advance(Duration::from_secs(2));
    puback_first(&mut c, "sub", &got);
    assert_eq!(
        with_expiry(&c.packets_v5("sub")),
        [(Bytes::from_static(b"third"), Some(28))]
    );
    assert_eq!(c.shards[0].stats.publish_dropped_expired, 1);
}

#[test]
fn an_expired_retained_message_is_not_sent_and_is_dropped_on_every_shard() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect_v5_plain(&publisher);
    c.send_v5(&publisher, expiring("ret/short", b"short", true, 1));
    c.send_v5(&publisher, expiring("ret/long", b"long", true, 60));
    assert!(c.shards.iter().all(|s| s.retained_count() == 2));
    // Ticks as the runtime's (every 250 ms): the shard that had no event with a time yet starts
    // the expiry at its first one.
    for _ in 0..12 {
        c.advance(Duration::from_millis(250));
    }
    assert!(c.shards.iter().all(|s| s.retained_count() == 1));
    c.connect_v5_plain(&subscriber);
    c.send_v5(&subscriber, subscribe_v5("ret/#"));
    let got = with_expiry(&c.packets_v5(&subscriber));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Bytes::from_static(b"long"));
    assert!(matches!(got[0].1, Some(57 | 58)), "{got:?}");
}

/// A SUBSCRIBE to `filters` at QoS 1 with Subscription Identifier `id`.
fn subscribe_with_id(filters: &[&str], id: Option<u32>) -> v5::Packet {
    let v5::Packet::Subscribe(mut subscribe) = subscribe_v5(filters[0]) else {
        unreachable!("subscribe_v5 makes a SUBSCRIBE");
    };
    let first = subscribe.filters[0].clone();
    subscribe.filters = filters
        .iter()
        .map(|f| v5::Subscription {
            filter: TopicFilter::new(f).expect("filter"),
            ..first.clone()
        })
        .collect();
    subscribe.properties.subscription_identifiers = id.into_iter().collect();
    v5::Packet::Subscribe(subscribe)
}

/// The PUBLISHes among `packets`: payload and Subscription Identifiers.
fn with_ids(packets: &[v5::Packet]) -> Vec<(Bytes, Vec<u32>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some((
                p.payload.clone(),
                p.properties.subscription_identifiers.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn every_matching_subscriptions_identifier_rides_one_publish_across_shards() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    let ack = c.connect_v5_plain(&subscriber);
    assert_eq!(ack.properties.subscription_identifier_available, Some(true));
    c.send_v5(&subscriber, subscribe_with_id(&["id/#"], Some(1)));
    c.send_v5(
        &subscriber,
        subscribe_with_id(&["id/+", "other/+"], Some(200_000)),
    );
    c.send_v5(&subscriber, subscribe_with_id(&["id/x"], None));
    c.packets_v5(&subscriber);
    c.connect_v5_plain(&publisher);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        c.send_v5(&publisher, publish_v5("id/x", b"x", qos, false));
    }
    c.send_v5(
        &publisher,
        publish_v5("id/y/z", b"yz", QoS::AtMostOnce, false),
    );
    c.send_v5(
        &publisher,
        publish_v5("other/o", b"o", QoS::AtMostOnce, false),
    );
    assert_eq!(
        with_ids(&c.packets_v5(&subscriber)),
        [
            (Bytes::from_static(b"x"), vec![1, 200_000]),
            (Bytes::from_static(b"x"), vec![1, 200_000]),
            (Bytes::from_static(b"yz"), vec![1]),
            (Bytes::from_static(b"o"), vec![200_000]),
        ]
    );
    // A subscription replaced without an identifier has none any more.
    c.send_v5(&subscriber, subscribe_with_id(&["id/#", "id/+"], None));
    c.packets_v5(&subscriber);
    c.send_v5(
        &publisher,
        publish_v5("id/x", b"none", QoS::AtMostOnce, false),
    );
    assert_eq!(
        with_ids(&c.packets_v5(&subscriber)),
        [(Bytes::from_static(b"none"), vec![])]
    );
}

#[test]
fn retained_and_shared_deliveries_carry_their_subscriptions_identifier() {
    let mut c = Cluster::new(2);
    c.connect_v5_plain("pub");
    c.send_v5("pub", publish_v5("kept/a", b"kept", QoS::AtLeastOnce, true));
    c.connect_v5_plain("sub");
    c.send_v5("sub", subscribe_with_id(&["kept/#"], Some(5)));
    assert_eq!(
        with_ids(&c.packets_v5("sub")),
        [(Bytes::from_static(b"kept"), vec![5])]
    );
    c.send_v5("sub", subscribe_with_id(&["$share/g/sh/#"], Some(9)));
    c.packets_v5("sub");
    c.send_v5(
        "pub",
        publish_v5("sh/a", b"shared", QoS::AtLeastOnce, false),
    );
    assert_eq!(
        with_ids(&c.packets_v5("sub")),
        [(Bytes::from_static(b"shared"), vec![9])]
    );
}

#[test]
fn a_subscription_identifier_of_0_is_a_protocol_error() {
    let mut c = Cluster::new(1);
    c.connect_v5_plain("zero");
    let mut wire = BytesMut::new();
    subscribe_with_id(&["z/#"], Some(7))
        .encode(&mut wire)
        .expect("encodes");
    // The identifier's variable byte integer (7, one byte) set to 0.
    let at = wire.iter().rposition(|&b| b == 7).expect("the identifier");
    wire[at] = 0;
    let (shard, conn) = {
        let client = c.client("zero");
        (client.shard, client.conn)
    };
    c.shards[shard].handle_bytes(conn, &mut wire, c.now);
    c.run();
    assert_eq!(
        disconnect_reason(&c.packets_v5("zero")),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}
