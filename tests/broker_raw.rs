//! Socket-level tests with a raw client for what well-behaved clients never send: malformed and
//! out-of-order packets, silence (keep-alive, connect timeout), unsupported protocol levels, limits.

mod common;

use std::time::{Duration, Instant};

use amqtt::protocol::{
    ConnAck, ConnectReturnCode, LastWill, Packet, ProtocolLevel, PubAck, Publish, QoS, Subscribe,
    SubscribeFilter, TopicFilter, TopicName,
};
use bytes::Bytes;

use common::{id_on_shard, start_broker, start_broker_with, RawClient};

fn accepted(ack: &Packet) -> bool {
    matches!(
        ack,
        Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::Accepted,
            ..
        })
    )
}

fn subscribe(client: &mut RawClient, filter: &str, qos: QoS) {
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: TopicFilter::new(filter).expect("filter"),
            qos,
        }],
    }));
    assert!(matches!(client.recv(), Some(Packet::SubAck(_))));
}

fn publish_packet(topic: &str, payload: &'static [u8], qos: QoS, packet_id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).expect("topic"),
        packet_id,
        payload: Bytes::from_static(payload),
    })
}

fn with_will(
    id: &str,
    keep_alive: u16,
    topic: &str,
    payload: &'static [u8],
) -> amqtt::protocol::Connect {
    let mut connect = RawClient::connect_packet(id, true, keep_alive);
    connect.will = Some(LastWill {
        topic: TopicName::new(topic).expect("topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    });
    connect
}

/// A subscriber to `topic` on shard 0 and a client for the test on the last shard.
fn watcher(addr: std::net::SocketAddr, shards: usize, topic: &str) -> RawClient {
    let (mut w, ack) = RawClient::mqtt_connect(
        addr,
        RawClient::connect_packet(&id_on_shard("watch", 0, shards), true, 0),
    );
    assert!(accepted(&ack));
    subscribe(&mut w, topic, QoS::AtMostOnce);
    w
}

fn expect_publish(client: &mut RawClient, payload: &[u8]) {
    match client.recv() {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], payload),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[test]
fn protocol_level_6_gets_connack_1_and_close() {
    let (_broker, addr) = start_broker(2);
    let mut client = RawClient::connect_tcp(addr);
    client.send_raw(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 0, 0, 0]);
    assert_eq!(
        client.recv(),
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::UnacceptableProtocolVersion
        }))
    );
    assert!(client.closed_within(Duration::from_secs(2)));
}

#[test]
fn protocol_level_5_gets_an_mqtt5_connack_with_the_brokers_limits() {
    let (_broker, addr) = start_broker(2);
    let mut client = RawClient::connect_tcp(addr);
    // CONNECT level 5, clean start, no properties, client id "v5".
    client.send_raw(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 2, b'v', b'5',
    ]);
    let mut connack = [0u8; 19];
    std::io::Read::read_exact(&mut client.stream, &mut connack).expect("CONNACK");
    // Success, then Receive Maximum 1000 (`receive_maximum`'s default), Topic Alias Maximum 10,
    // Retain Available 1, Wildcard 1, Subscription Identifiers 1, Shared 1.
    assert_eq!(
        connack,
        [0x20, 17, 0, 0, 14, 0x21, 0x03, 0xe8, 0x22, 0, 10, 0x25, 1, 0x28, 1, 0x29, 1, 0x2a, 1]
    );
}

#[test]
fn mqtt_3_1_is_accepted() {
    let (_broker, addr) = start_broker(2);
    let mut connect = RawClient::connect_packet("old-client", true, 0);
    connect.protocol = ProtocolLevel::V31;
    let (_client, ack) = RawClient::mqtt_connect(addr, connect);
    assert!(accepted(&ack));
}

#[test]
fn packet_before_connect_closes_the_connection() {
    let (_broker, addr) = start_broker(1);
    let mut client = RawClient::connect_tcp(addr);
    client.send(&Packet::PingReq);
    assert!(client.closed_within(Duration::from_secs(2)));
}

#[test]
fn socket_without_connect_is_closed_after_connect_timeout() {
    let (_broker, addr) = start_broker_with(1, |c| c.connect_timeout = Duration::from_secs(1));
    let mut client = RawClient::connect_tcp(addr);
    let start = Instant::now();
    assert!(client.closed_within(Duration::from_secs(4)));
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[test]
fn second_connect_closes_and_publishes_will() {
    for shards in [1, 2] {
        let (_broker, addr) = start_broker(shards);
        let mut w = watcher(addr, shards, "will/#");
        let id = id_on_shard("twice", shards - 1, shards);
        let connect = with_will(&id, 0, "will/twice", b"protocol error");
        let (mut client, ack) = RawClient::mqtt_connect(addr, connect.clone());
        assert!(accepted(&ack));
        client.send(&Packet::Connect(Box::new(connect)));
        assert!(client.closed_within(Duration::from_secs(2)));
        expect_publish(&mut w, b"protocol error");
    }
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let cases: [&[u8]; 6] = [
        b"\xff\xff\xff\xff",          // reserved packet type 15
        b"\x30\xff\xff\xff\xff\x01",  // remaining length over 4 bytes
        b"\x36\x05\x00\x01a\x00\x01", // PUBLISH QoS 3
        b"\x82\x05\x00\x01\x00\x01a", // SUBSCRIBE whose filter lacks its QoS byte
        b"\x31\x04\x00\x02a+",        // wildcard in a PUBLISH topic
        b"\xc1\x00",                  // PINGREQ with reserved flags set
    ];
    for shards in [1, 2] {
        let (_broker, addr) = start_broker(shards);
        let mut w = watcher(addr, shards, "ok/#");
        for (i, bytes) in cases.iter().enumerate() {
            let id = id_on_shard(&format!("bad{i}"), shards - 1, shards);
            let (mut bad, ack) =
                RawClient::mqtt_connect(addr, with_will(&id, 0, "ok/will", b"will"));
            assert!(accepted(&ack));
            bad.send_raw(bytes);
            assert!(
                bad.closed_within(Duration::from_secs(2)),
                "case {i} closes the connection"
            );
            expect_publish(&mut w, b"will");
        }
        // Everybody else is unaffected.
        let (mut good, ack) = RawClient::mqtt_connect(
            addr,
            RawClient::connect_packet(&id_on_shard("good", shards - 1, shards), true, 0),
        );
        assert!(accepted(&ack));
        good.send(&publish_packet(
            "ok/fine",
            b"still here",
            QoS::AtLeastOnce,
            Some(7),
        ));
        assert_eq!(good.recv(), Some(Packet::PubAck(PubAck { packet_id: 7 })));
        expect_publish(&mut w, b"still here");
    }
}

#[test]
fn keep_alive_expiry_closes_and_publishes_will() {
    let (_broker, addr) = start_broker(2);
    let mut w = watcher(addr, 2, "ka/#");
    let (mut client, ack) = RawClient::mqtt_connect(
        addr,
        with_will(&id_on_shard("sleepy", 1, 2), 1, "ka/x", b"timed out"),
    );
    assert!(accepted(&ack));
    let start = Instant::now();
    assert!(client.closed_within(Duration::from_secs(4)));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "not before 1.5 × keep-alive: {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(2600),
        "within 1 s of 1.5 × keep-alive: {waited:?}"
    );
    expect_publish(&mut w, b"timed out");
}

#[test]
fn pings_keep_a_connection_alive() {
    let (_broker, addr) = start_broker(1);
    let (mut client, ack) =
        RawClient::mqtt_connect(addr, RawClient::connect_packet("pinger", true, 1));
    assert!(accepted(&ack));
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        client.send(&Packet::PingReq);
        assert_eq!(client.recv(), Some(Packet::PingResp));
    }
}

#[test]
fn zero_length_client_id_rules() {
    let (_broker, addr) = start_broker(2);
    let (_c, ack) = RawClient::mqtt_connect(addr, RawClient::connect_packet("", true, 0));
    assert!(accepted(&ack));
    let (mut c, ack) = RawClient::mqtt_connect(addr, RawClient::connect_packet("", false, 0));
    assert!(matches!(
        ack,
        Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::IdentifierRejected,
            ..
        })
    ));
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn anonymous_refused_when_configured() {
    let (_broker, addr) = start_broker_with(1, |c| c.allow_anonymous = false);
    let (mut c, ack) = RawClient::mqtt_connect(addr, RawClient::connect_packet("anon", true, 0));
    assert!(matches!(
        ack,
        Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::NotAuthorized,
            ..
        })
    ));
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn max_connections_is_enforced_per_listener() {
    let (_broker, addr) = start_broker_with(2, |c| c.listeners[0].max_connections = Some(2));
    let (_a, ack) = RawClient::mqtt_connect(addr, RawClient::connect_packet("a", true, 0));
    assert!(accepted(&ack));
    let (_b, ack) = RawClient::mqtt_connect(addr, RawClient::connect_packet("b", true, 0));
    assert!(accepted(&ack));
    let mut third = RawClient::connect_tcp(addr);
    assert!(third.closed_within(Duration::from_secs(2)));
}

#[test]
fn oversized_packet_is_refused() {
    let (_broker, addr) = start_broker_with(1, |c| c.max_packet_size = 1024);
    let (mut client, ack) =
        RawClient::mqtt_connect(addr, RawClient::connect_packet("big", true, 0));
    assert!(accepted(&ack));
    static BIG: [u8; 2048] = [b'x'; 2048];
    client.send(&publish_packet("t", &BIG, QoS::AtMostOnce, None));
    assert!(client.closed_within(Duration::from_secs(2)));
}

#[test]
fn stop_closes_connections_and_returns() {
    let (broker, addr) = start_broker(2);
    let (mut client, ack) =
        RawClient::mqtt_connect(addr, RawClient::connect_packet("bye", true, 0));
    assert!(accepted(&ack));
    let start = Instant::now();
    broker.stop().expect("clean stop");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(client.closed_within(Duration::from_secs(2)));
}

#[test]
fn stopped_broker_no_longer_accepts_and_its_port_can_be_reused() {
    // A port below the ephemeral range, so no other test's `:0` listener can take it meanwhile.
    let port = (20_000..30_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port");
    let fixed: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (broker, addr) = start_broker_with(2, |c| c.listeners[0].bind = fixed);
    broker.stop().expect("clean stop");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens after stop"
    );
    // A new broker on the same port serves every connection.
    let (_again, _) = start_broker_with(2, |c| c.listeners[0].bind = addr);
    for i in 0..10 {
        let (_c, ack) = RawClient::mqtt_connect(
            addr,
            RawClient::connect_packet(&format!("again{i}"), true, 0),
        );
        assert!(accepted(&ack));
    }
}
