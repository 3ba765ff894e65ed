//! MQTT 5 clients in the cluster: properties across shards and to an MQTT 3 subscriber, the
//! CONNACK's refusal codes, the server's DISCONNECT before it closes, DISCONNECT's session expiry
//! rule.

use super::*;
use crate::protocol::v5::{self, Properties, ReasonCode};

pub(super) fn v5_connect(client_id: &str, keep_alive: u16, properties: Properties) -> v5::Connect {
    v5::Connect {
        clean_start: true,
        keep_alive,
        properties,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
    }
}

impl Cluster {
    /// Connects an MQTT 5 client `name` on its home shard with the plugins' verdict `auth`.
    pub(super) fn connect_v5(
        &mut self,
        name: &str,
        connect: v5::Connect,
        auth: AuthVerdict,
    ) -> v5::ConnAck {
        self.start_v5(name, connect, auth);
        // The CONNACK only: what follows it (a resumed session's messages) stays to be read.
        let client = self.clients.get_mut(name).expect("just connected");
        match v5::decode(&mut client.received, usize::MAX) {
            Ok(Some(v5::Packet::ConnAck(ack))) => ack,
            other => panic!("expected CONNACK first, got {other:?}"),
        }
    }

    /// Sends an MQTT 5 client `name`'s CONNECT to its home shard, with the plugins' verdict
    /// `auth`; what it received.
    pub(super) fn open_v5(
        &mut self,
        name: &str,
        connect: v5::Connect,
        auth: AuthVerdict,
    ) -> Vec<v5::Packet> {
        self.start_v5(name, connect, auth);
        self.packets_v5(name)
    }

    /// Sends an MQTT 5 client `name`'s CONNECT to its home shard, with the plugins' verdict
    /// `auth`, and runs the cluster; what it received stays to be read.
    fn start_v5(&mut self, name: &str, connect: v5::Connect, auth: AuthVerdict) {
        let mut wire = BytesMut::new();
        v5::Packet::Connect(Box::new(connect))
            .encode(&mut wire)
            .expect("a test CONNECT encodes");
        let home = home_shard(name, self.shards.len());
        let conn = self.next_conn;
        self.next_conn += 1;
        let FirstPacket::Connect(pending) =
            self.shards[home].handle_first_bytes(&wire, &ListenerIdentity::Connect)
        else {
            panic!("an MQTT 5 CONNECT is answered");
        };
        assert_eq!(pending.home(), home);
        self.shards[home].handle_connect(conn, pending, auth, self.now);
        let client = Client {
            shard: home,
            conn,
            received: BytesMut::new(),
            closed: false,
        };
        self.clients.insert(name.to_string(), client);
        self.run();
    }

    /// Connects an MQTT 5 client `name` without properties or keep-alive, allowed in.
    fn connect_v5_plain(&mut self, name: &str) -> v5::ConnAck {
        self.connect_v5(
            name,
            v5_connect(name, 0, Properties::default()),
            AuthVerdict::Allowed,
        )
    }

    pub(super) fn send_v5(&mut self, name: &str, packet: v5::Packet) {
        let (shard, conn) = {
            let c = self.client(name);
            (c.shard, c.conn)
        };
        let mut buf = BytesMut::new();
        packet.encode(&mut buf).expect("a test packet encodes");
        self.shards[shard].handle_bytes(conn, &mut buf, self.now);
        self.run();
    }

    pub(super) fn packets_v5(&mut self, name: &str) -> Vec<v5::Packet> {
        let client = self.clients.get_mut(name).expect("known client");
        let mut out = Vec::new();
        while let Some(packet) =
            v5::decode(&mut client.received, usize::MAX).expect("broker output decodes")
        {
            out.push(packet);
        }
        out
    }
}

fn subscribe_v5(filter: &str) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![v5::Subscription {
            filter: TopicFilter::new(filter).expect("filter"),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: v5::RetainHandling::SendAtSubscribe,
        }],
    })
}

pub(super) fn disconnect_reason(packets: &[v5::Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        v5::Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

#[test]
fn properties_cross_shards_in_order_and_an_mqtt3_subscriber_gets_the_message_without_them() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    assert_eq!(
        c.connect_v5(
            &subscriber,
            v5_connect(&subscriber, 0, Properties::default()),
            AuthVerdict::Allowed
        )
        .reason,
        ReasonCode::SUCCESS
    );
    c.send_v5(&subscriber, subscribe_v5("t/#"));
    c.packets_v5(&subscriber);
    c.connect("old", true);
    c.subscribe("old", &[("t/#", QoS::AtLeastOnce)]);
    c.packets("old");
    c.connect_v5(
        &publisher,
        v5_connect(&publisher, 0, Properties::default()),
        AuthVerdict::Allowed,
    );
    let properties = Properties {
        content_type: Some("text/plain".into()),
        correlation_data: Some(Bytes::from_static(b"\x00id")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        ..Properties::default()
    };
    let message = Message {
        topic: TopicName::new("t/1").expect("topic"),
        payload: Bytes::from_static(b"hello"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    };
    c.send_v5(
        &publisher,
        v5::Packet::Publish(v5::Publish {
            properties: properties.clone(),
            ..v5::Publish::new(message, Some(9), false)
        }),
    );
    let acks = c.packets_v5(&publisher);
    assert!(
        matches!(&acks[..], [v5::Packet::PubAck(ack)] if ack.packet_id == 9 && ack.reason == ReasonCode::SUCCESS),
        "{acks:?}"
    );
    let got = c.packets_v5(&subscriber);
    let [v5::Packet::Publish(publish)] = &got[..] else {
        panic!("one PUBLISH: {got:?}");
    };
    assert_eq!(publish.properties, properties);
    assert_eq!(publish.payload, Bytes::from_static(b"hello"));
    assert_eq!(c.payloads("old"), ["hello"]);
}

#[test]
fn refusals_have_mqtt5_codes() {
    let mut c = Cluster::new(1);
    let ack = c.connect_v5(
        "denied",
        v5_connect("denied", 0, Properties::default()),
        AuthVerdict::Denied,
    );
    assert_eq!(ack.reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let mut c = Cluster::with_settings(
        1,
        Settings {
            allow_anonymous: false,
            ..Settings::default()
        },
    );
    let ack = c.connect_v5_plain("anon");
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    assert!(c.client("anon").closed);
}

#[test]
fn the_server_says_why_before_it_closes() {
    let mut c = Cluster::new(1);
    c.connect_v5(
        "idle",
        v5_connect("idle", 1, Properties::default()),
        AuthVerdict::Allowed,
    );
    c.advance(Duration::from_secs(2));
    assert_eq!(
        disconnect_reason(&c.packets_v5("idle")),
        Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
    );
    c.connect_v5_plain("up");
    c.shards[0].shutdown();
    c.run();
    assert_eq!(
        disconnect_reason(&c.packets_v5("up")),
        Some(ReasonCode::SERVER_SHUTTING_DOWN)
    );
}

#[test]
fn disconnect_may_not_give_an_expiry_to_a_session_that_had_none() {
    let mut c = Cluster::new(1);
    c.connect_v5_plain("s");
    c.send_v5(
        "s",
        v5::Packet::Disconnect(v5::Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                session_expiry_interval: Some(60),
                ..Properties::default()
            },
        }),
    );
    assert_eq!(
        disconnect_reason(&c.packets_v5("s")),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    assert_eq!(c.shards[0].stats.protocol_errors, 1);
}

#[test]
fn session_expiry_is_capped_and_announced() {
    let mut c = Cluster::with_settings(
        1,
        Settings {
            session_expiry_interval: Some(Duration::from_secs(30)),
            ..Settings::default()
        },
    );
    let asked = Properties {
        session_expiry_interval: Some(3600),
        ..Properties::default()
    };
    let ack = c.connect_v5("long", v5_connect("long", 0, asked), AuthVerdict::Allowed);
    assert_eq!(ack.properties.session_expiry_interval, Some(30));
    c.drop_connection("long");
    c.advance(Duration::from_secs(31));
    assert_eq!(c.shards[0].session_gauges().sessions, 0);
}

#[test]
fn a_packet_over_max_packet_size_gets_disconnect_0x95() {
    let mut c = Cluster::with_settings(
        1,
        Settings {
            max_packet_size: 64,
            ..Settings::default()
        },
    );
    let ack = c.connect_v5_plain("big");
    assert_eq!(ack.properties.maximum_packet_size, Some(64));
    let message = Message {
        topic: TopicName::new("t").expect("topic"),
        payload: Bytes::from(vec![b'x'; 100]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    };
    c.send_v5(
        "big",
        v5::Packet::Publish(v5::Publish::new(message, None, false)),
    );
    assert_eq!(
        disconnect_reason(&c.packets_v5("big")),
        Some(ReasonCode::PACKET_TOO_LARGE)
    );
}

/// An assigned client id is homed on the shard that made its session: a CONNECT that names it
/// again (an MQTT 5 client learns it from CONNACK) reaches that session, whichever shard reads it.
#[test]
fn generated_client_ids_live_on_their_home_shard() {
    for shards in 1..=4 {
        for shard in 0..shards {
            let mut core = crate::broker::BrokerCore::new(Settings::default(), shard, shards, 7);
            for _ in 0..20 {
                let id = core.generate_client_id();
                assert_eq!(crate::broker::home_shard(&id, shards), shard, "{id}");
            }
        }
    }
}

fn subscribe_with(filter: &str, no_local: bool, retain_as_published: bool) -> v5::Packet {
    let v5::Packet::Subscribe(mut subscribe) = subscribe_v5(filter) else {
        unreachable!("subscribe_v5 makes a SUBSCRIBE");
    };
    subscribe.filters[0].no_local = no_local;
    subscribe.filters[0].retain_as_published = retain_as_published;
    v5::Packet::Subscribe(subscribe)
}

pub(super) fn publish_v5(
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    retain: bool,
) -> v5::Packet {
    let message = Message {
        topic: TopicName::new(topic).expect("topic"),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: None,
    };
    let packet_id = (qos != QoS::AtMostOnce).then_some(1);
    v5::Packet::Publish(v5::Publish::new(message, packet_id, false))
}

/// The PUBLISHes among `packets`: payload and RETAIN flag.
fn published(packets: &[v5::Packet]) -> Vec<(Bytes, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some((p.payload.clone(), p.retain)),
            _ => None,
        })
        .collect()
}

#[test]
fn no_local_skips_the_publisher_and_retain_as_published_keeps_the_flag() {
    let mut c = Cluster::new(2);
    for name in ["me", "rap", "plain"] {
        c.connect_v5_plain(name);
    }
    c.send_v5("me", subscribe_with("nl/#", true, false));
    c.send_v5("rap", subscribe_with("nl/#", false, true));
    c.send_v5("plain", subscribe_v5("nl/#"));
    for name in ["me", "rap", "plain"] {
        c.packets_v5(name);
    }
    c.send_v5("me", publish_v5("nl/a", b"live", QoS::AtMostOnce, false));
    c.send_v5("me", publish_v5("nl/a", b"kept", QoS::AtLeastOnce, true));
    c.send_v5(
        "rap",
        publish_v5("nl/a", b"theirs", QoS::AtLeastOnce, false),
    );
    // [MQTT-3.8.3-3]: nothing of its own, the other client's message.
    let mine = c.packets_v5("me");
    assert_eq!(published(&mine), [(Bytes::from_static(b"theirs"), false)]);
    // [MQTT-3.3.1-12]: RETAIN as published; [MQTT-3.3.1-13]: cleared without the option.
    let rap = c.packets_v5("rap");
    let expected = [
        (Bytes::from_static(b"live"), false),
        (Bytes::from_static(b"kept"), true),
        (Bytes::from_static(b"theirs"), false),
    ];
    assert_eq!(published(&rap), expected);
    let plain = c.packets_v5("plain");
    assert_eq!(
        published(&plain),
        [
            (Bytes::from_static(b"live"), false),
            (Bytes::from_static(b"kept"), false),
            (Bytes::from_static(b"theirs"), false),
        ]
    );
}

/// One shard with MQTT 5 client `name` (CONNECT `properties`) subscribed to `filter` at QoS 1,
/// and a plain MQTT 5 client "pub".
fn subscriber_and_publisher(name: &str, properties: Properties, filter: &str) -> Cluster {
    let mut c = Cluster::new(1);
    c.connect_v5(name, v5_connect(name, 0, properties), AuthVerdict::Allowed);
    c.send_v5(name, subscribe_v5(filter));
    c.packets_v5(name);
    c.connect_v5_plain("pub");
    c
}

/// `name` acknowledges the first of `got`, a QoS 1 PUBLISH.
fn puback_first(c: &mut Cluster, name: &str, got: &[v5::Packet]) {
    let Some(v5::Packet::Publish(first)) = got.first() else {
        panic!("a PUBLISH: {got:?}");
    };
    let ack = v5::Ack {
        packet_id: first.packet_id.expect("QoS 1"),
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    c.send_v5(name, v5::Packet::PubAck(ack));
}

#[test]
fn receive_maximum_bounds_the_window_toward_the_client() {
    let properties = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let mut c = subscriber_and_publisher("sub", properties, "rm/#");
    for payload in [&b"0"[..], b"1", b"2"] {
        c.send_v5("pub", publish_v5("rm/a", payload, QoS::AtLeastOnce, false));
    }
    // [MQTT-3.3.4-9]: two unacknowledged, the third waits for a PUBACK.
    let got = c.packets_v5("sub");
    assert_eq!(published(&got).len(), 2, "{got:?}");
    puback_first(&mut c, "sub", &got);
    assert_eq!(
        published(&c.packets_v5("sub")),
        [(Bytes::from_static(b"2"), false)]
    );
}

#[test]
fn a_publish_over_the_clients_maximum_packet_size_is_dropped_and_counted() {
    let properties = Properties {
        maximum_packet_size: Some(40),
        ..Properties::default()
    };
    let mut c = subscriber_and_publisher("small", properties, "mp/#");
    static BIG: [u8; 100] = [b'x'; 100];
    let big = &BIG[..];
    c.send_v5("pub", publish_v5("mp/a", big, QoS::AtLeastOnce, false));
    c.send_v5("pub", publish_v5("mp/a", big, QoS::AtMostOnce, false));
    c.send_v5("pub", publish_v5("mp/a", b"fits", QoS::AtLeastOnce, false));
    // [MQTT-3.1.2-25]: not sent, and the QoS 1 one does not hold the window.
    assert_eq!(
        published(&c.packets_v5("small")),
        [(Bytes::from_static(b"fits"), false)]
    );
    assert_eq!(c.shards[0].stats.publish_dropped_too_large, 2);
}

/// A QoS 0 PUBLISH from an MQTT 5 client with `topic` (`None`: empty) and Topic Alias `alias`.
fn aliased_publish(topic: Option<&str>, alias: u16, payload: &'static [u8]) -> v5::Packet {
    let message = Message {
        topic: TopicName::new("unused").expect("topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    };
    v5::Packet::Publish(v5::Publish {
        topic: topic.map(|t| TopicName::new(t).expect("topic")),
        properties: Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        },
        ..v5::Publish::new(message, None, false)
    })
}

#[test]
fn client_topic_aliases_are_resolved_per_connection() {
    let (publisher, subscriber) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect_v5_plain(&subscriber);
    c.send_v5(&subscriber, subscribe_v5("t/#"));
    c.packets_v5(&subscriber);
    let ack = c.connect_v5_plain(&publisher);
    assert_eq!(
        ack.properties.topic_alias_maximum,
        Some(crate::broker::mqtt5::TOPIC_ALIAS_MAXIMUM)
    );
    c.send_v5(&publisher, aliased_publish(Some("t/a"), 1, b"1"));
    c.send_v5(&publisher, aliased_publish(None, 1, b"2"));
    // A topic with a known alias replaces its mapping [MQTT-3.3.2-11].
    c.send_v5(&publisher, aliased_publish(Some("t/b"), 1, b"3"));
    c.send_v5(&publisher, aliased_publish(None, 1, b"4"));
    let got: Vec<(String, Bytes)> = c
        .packets_v5(&subscriber)
        .into_iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some((p.topic?.as_str().to_string(), p.payload)),
            _ => None,
        })
        .collect();
    let want: Vec<(String, Bytes)> = [("t/a", "1"), ("t/a", "2"), ("t/b", "3"), ("t/b", "4")]
        .iter()
        .map(|(t, p)| (t.to_string(), Bytes::from(p.as_bytes())))
        .collect();
    assert_eq!(got, want);
    assert!(c.packets_v5(&publisher).is_empty());

    // Above the maximum: Topic Alias invalid [MQTT-3.3.2-9].
    let above = crate::broker::mqtt5::TOPIC_ALIAS_MAXIMUM + 1;
    c.send_v5(&publisher, aliased_publish(Some("t/a"), above, b"5"));
    assert_eq!(
        disconnect_reason(&c.packets_v5(&publisher)),
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
    assert!(c.client(&publisher).closed);

    // A new connection starts with no alias [MQTT-3.3.2-10]: an empty topic is a protocol error.
    c.connect_v5_plain(&publisher);
    c.send_v5(&publisher, aliased_publish(None, 1, b"6"));
    assert_eq!(
        disconnect_reason(&c.packets_v5(&publisher)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    assert!(c.packets_v5(&subscriber).is_empty());
}

/// An MQTT 5 CONNECT that keeps its session `expiry` seconds, with a will to "will/<name>" that
/// waits `delay` seconds.
fn connect_with_delayed_will(name: &str, expiry: u32, delay: u32) -> v5::Connect {
    let properties = Properties {
        session_expiry_interval: Some(expiry),
        ..Properties::default()
    };
    v5::Connect {
        clean_start: false,
        will: Some(v5::Will {
            message: Message {
                topic: TopicName::new(&format!("will/{name}")).expect("topic"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            },
            properties: Properties {
                will_delay_interval: Some(delay),
                ..Properties::default()
            },
        }),
        ..v5_connect(name, 0, properties)
    }
}

const ALLOWED: AuthVerdict = AuthVerdict::Allowed;

#[test]
fn a_delayed_will_waits_is_cancelled_by_a_resume_and_comes_sooner_when_the_session_ends() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("will/#", QoS::AtMostOnce)]);
    c.packets("watcher");

    // Kept: published once the delay has passed, not before.
    c.connect_v5("late", connect_with_delayed_will("late", 100, 10), ALLOWED);
    c.drop_connection("late");
    c.advance(Duration::from_secs(9));
    assert!(c.payloads("watcher").is_empty());
    c.advance(Duration::from_secs(2));
    assert_eq!(c.payloads("watcher"), ["gone"]);

    // Cancelled: the client is back before the delay [MQTT-3.1.3-9], and leaves cleanly.
    c.connect_v5("back", connect_with_delayed_will("back", 100, 10), ALLOWED);
    c.drop_connection("back");
    c.advance(Duration::from_secs(5));
    let mut again = connect_with_delayed_will("back", 100, 10);
    again.will = None;
    c.connect_v5("back", again, AuthVerdict::Allowed);
    c.advance(Duration::from_secs(20));
    assert!(c.payloads("watcher").is_empty());

    // Sooner: the session expires (3 s) before the delay (10 s).
    c.connect_v5("brief", connect_with_delayed_will("brief", 3, 10), ALLOWED);
    c.drop_connection("brief");
    c.advance(Duration::from_secs(2));
    assert!(c.payloads("watcher").is_empty());
    c.advance(Duration::from_secs(2));
    assert_eq!(c.payloads("watcher"), ["gone"]);

    // A session that ends with its connection publishes its will at once.
    c.connect_v5("now", connect_with_delayed_will("now", 0, 10), ALLOWED);
    c.drop_connection("now");
    assert_eq!(c.payloads("watcher"), ["gone"]);
}

#[path = "mqtt5_delivery.rs"]
mod delivery;

#[path = "mqtt5_aliases.rs"]
mod aliases;
