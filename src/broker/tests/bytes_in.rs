//! Bytes in: `handle_bytes` (frames split across reads, the two PUBLISH paths counted alike, bad
//! bytes, the memory pause) and `handle_first_bytes` (the verdicts on a connection's first packet).

use super::*;
use crate::protocol::PubAck;

/// A subscriber `s` on `t` and a publisher `p`, on one shard.
fn pair() -> Cluster {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe("s", &[("t", QoS::AtLeastOnce)]);
    c.packets("s");
    c.packets("p");
    c
}

fn encoded(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("encodes");
    buf
}

fn publish(qos: QoS, retain: bool, payload: &'static str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new("t").expect("topic"),
        packet_id: (qos != QoS::AtMostOnce).then_some(7),
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

/// The counters a received PUBLISH moves.
fn received(stats: &Stats) -> (u64, u64, [u64; 3]) {
    (
        stats.packets_received,
        stats.publish_received,
        stats.publish_received_by_qos,
    )
}

#[test]
fn a_packet_split_across_reads_is_handled_once_whole_and_the_rest_waits() {
    let mut c = pair();
    let (conn, now) = (c.client("p").conn, c.now);
    let mut wire = encoded(&Packet::PingReq);
    wire.extend_from_slice(&encoded(&publish(QoS::AtLeastOnce, false, "split")));
    let whole = wire.len();
    let mut buf = BytesMut::new();
    let before = c.shards[0].stats.packets_received;
    for (i, byte) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let handled = c.shards[0].handle_bytes(conn, &mut buf, now);
        assert_eq!(handled.next, Next::ReadMore);
        // A PUBLISH is reported only with the read that completed it.
        assert_eq!(handled.publish, i + 1 == whole, "byte {i}");
    }
    assert!(buf.is_empty());
    assert_eq!(c.shards[0].stats.packets_received, before + 2);
    c.run();
    let got = c.packets("p");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(got[0], Packet::PingResp));
    assert!(matches!(got[1], Packet::PubAck(PubAck { packet_id: 7 })));
    assert_eq!(c.payloads("s"), ["split"]);
}

#[test]
fn several_packets_in_one_read_are_all_handled_and_a_partial_one_stays() {
    let mut c = pair();
    let (conn, now) = (c.client("p").conn, c.now);
    let mut buf = encoded(&publish(QoS::AtMostOnce, false, "a"));
    buf.extend_from_slice(&encoded(&publish(QoS::AtMostOnce, false, "b")));
    let third = encoded(&publish(QoS::AtMostOnce, false, "c"));
    buf.extend_from_slice(&third[..3]);
    let handled = c.shards[0].handle_bytes(conn, &mut buf, now);
    assert_eq!(
        handled,
        Handled {
            publish: true,
            next: Next::ReadMore
        }
    );
    assert_eq!(&buf[..], &third[..3]);
    buf.extend_from_slice(&third[3..]);
    c.shards[0].handle_bytes(conn, &mut buf, now);
    assert!(buf.is_empty());
    c.run();
    assert_eq!(c.payloads("s"), ["a", "b", "c"]);
}

/// A QoS 0 PUBLISH is routed from the buffer; a retained one and a QoS 1 one are decoded. The
/// counters move the same way for each, and the subscriber gets the same message.
#[test]
fn in_place_and_decoded_publishes_are_counted_alike() {
    for (packet, in_place) in [
        (publish(QoS::AtMostOnce, false, "m"), true),
        (publish(QoS::AtMostOnce, true, "m"), false),
        (publish(QoS::AtLeastOnce, false, "m"), false),
    ] {
        let mut c = pair();
        let conn = c.client("p").conn;
        let qos = match &packet {
            Packet::Publish(p) => p.qos,
            _ => unreachable!(),
        };
        let (packets, publishes, mut by_qos) = received(&c.shards[0].stats);
        by_qos[qos as usize] += 1;
        let routed = c.shards[0].routed_in_place;
        c.shards[0].handle_encoded(conn, &packet, c.now);
        assert_eq!(
            c.shards[0].routed_in_place - routed,
            u64::from(in_place),
            "{packet:?}"
        );
        assert_eq!(
            received(&c.shards[0].stats),
            (packets + 1, publishes + 1, by_qos),
            "{packet:?}"
        );
        c.run();
        let got = c.publishes("s");
        assert_eq!(got.len(), 1, "{packet:?}");
        assert_eq!((got[0].payload.as_ref(), got[0].retain), (&b"m"[..], false));
    }
}

#[test]
fn malformed_bytes_close_the_connection_count_a_protocol_error_and_publish_the_will() {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.subscribe("s", &[("will", QoS::AtMostOnce)]);
    c.packets("s");
    let connect = Cluster::with_will(
        Cluster::connect_packet("p", true),
        "will",
        "gone",
        QoS::AtMostOnce,
    );
    c.connect_with("p", connect);
    let conn = c.client("p").conn;
    let errors = c.shards[0].stats.protocol_errors;
    // A PINGREQ, then a PUBLISH with QoS 3, then a PINGREQ that must not be answered.
    let mut buf = encoded(&Packet::PingReq);
    buf.extend_from_slice(&[0x36, 0x03, 0x00, 0x01, b't']);
    buf.extend_from_slice(&encoded(&Packet::PingReq));
    let handled = c.shards[0].handle_bytes(conn, &mut buf, c.now);
    assert_eq!(handled.next, Next::Stop);
    assert_eq!(c.shards[0].stats.protocol_errors, errors + 1);
    assert_eq!(
        c.shards[0].close_reason(conn),
        Some(CloseReason::ProtocolError)
    );
    c.run();
    let answers = c.packets("p");
    assert_eq!(answers.len(), 2, "CONNACK and one PINGRESP: {answers:?}");
    assert_eq!(c.payloads("s"), ["gone"]);
}

#[test]
fn a_publisher_is_paused_near_the_memory_limit_and_its_publish_goes_through_when_called_again() {
    let memory = MemoryBudget::new(Some(1000));
    let mut c = Cluster::with_settings(
        1,
        Settings {
            memory: memory.clone(),
            ..Settings::default()
        },
    );
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe("s", &[("t", QoS::AtLeastOnce)]);
    c.packets("s");
    let conn = c.client("p").conn;
    memory.add(900);
    let mut buf = encoded(&Packet::PingReq);
    let qos1 = encoded(&publish(QoS::AtLeastOnce, false, "held"));
    buf.extend_from_slice(&qos1);
    let handled = c.shards[0].handle_bytes(conn, &mut buf, c.now);
    // The PINGREQ before it is handled; the PUBLISH waits, whole, in the buffer.
    assert_eq!(handled.next, Next::PausePublisher);
    assert_eq!(&buf[..], &qos1[..]);
    assert_eq!(memory.pauses(), 1);
    let handled = c.shards[0].handle_bytes(conn, &mut buf, c.now);
    assert_eq!(
        handled,
        Handled {
            publish: true,
            next: Next::ReadMore
        }
    );
    assert!(buf.is_empty());
    assert_eq!(memory.pauses(), 1);
    c.run();
    assert_eq!(c.payloads("s"), ["held"]);
    // The next PUBLISH under pressure is held back again.
    let mut buf = encoded(&publish(QoS::AtMostOnce, false, "next"));
    let handled = c.shards[0].handle_bytes(conn, &mut buf, c.now);
    assert_eq!(handled.next, Next::PausePublisher);
    assert_eq!(memory.pauses(), 2);
}

// ---- the first packet -------------------------------------------------------------------------

fn first(core: &mut BrokerCore, bytes: &[u8], identity: &ListenerIdentity) -> FirstPacket {
    core.handle_first_bytes(bytes, identity)
}

fn pending(verdict: FirstPacket) -> PendingConnect {
    match verdict {
        FirstPacket::Connect(pending) => pending,
        other => panic!("not a CONNECT to answer: {other:?}"),
    }
}

#[test]
fn a_connect_is_answered_once_whole_and_the_bytes_after_it_are_left() {
    let mut core = BrokerCore::new(Settings::default(), 0, 1, 7);
    let connect = Cluster::connect_packet("c", true);
    let mut wire = encoded(&Packet::Connect(Box::new(connect)));
    let length = wire.len();
    for end in 0..length {
        let verdict = first(&mut core, &wire[..end], &ListenerIdentity::Connect);
        assert!(matches!(verdict, FirstPacket::Incomplete), "{end} bytes");
    }
    wire.extend_from_slice(&encoded(&Packet::PingReq));
    let pending = pending(first(&mut core, &wire, &ListenerIdentity::Connect));
    assert_eq!((pending.byte_len(), pending.home()), (length, 0));
    assert_eq!(pending.client_id(), "c");
    assert!(pending.credentials().is_some());
    // Nothing counted yet: the CONNECT is answered by `handle_connect`.
    assert_eq!(core.stats.packets_received, 0);
    let outcome = core.handle_connect(1, pending, AuthVerdict::Allowed, Instant::now());
    assert!(outcome.is_accepted());
    assert_eq!(core.stats.packets_received, 1);
}

#[test]
fn a_first_packet_that_is_not_a_connect_or_is_malformed_closes_without_an_answer() {
    let mut core = BrokerCore::new(Settings::default(), 0, 1, 7);
    let ping = encoded(&Packet::PingReq);
    let garbage = [0x10, 0x02, 0xff, 0xff];
    for bytes in [&ping[..], &garbage[..]] {
        let before = core.stats.malformed_before_connect;
        let verdict = first(&mut core, bytes, &ListenerIdentity::Connect);
        assert!(matches!(verdict, FirstPacket::Close), "{bytes:?}");
        assert_eq!(core.stats.malformed_before_connect, before + 1);
    }
    core.handle_broken_first_bytes();
    assert_eq!(core.stats.malformed_before_connect, 3);
    assert_eq!(core.stats.protocol_errors, 0);
    assert_eq!(core.stats.connections_refused, 0);
    assert_eq!(core.connection_count(), 0);
}

/// A PROXY protocol header sent to a listener without `proxy-protocol` is closed from its first
/// byte, as the malformed first packet it is: v1's `P` would otherwise read as a PUBREC of 82
/// bytes and wait for them until `connect_timeout`.
#[test]
fn a_proxy_protocol_header_is_a_malformed_first_packet() {
    let mut core = BrokerCore::new(Settings::default(), 0, 1, 7);
    let connect = encoded(&Packet::Connect(Box::new(Cluster::connect_packet(
        "c", true,
    ))));
    let v1 = [
        &b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n"[..],
        &connect,
    ]
    .concat();
    let v2 = [&b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..], &connect].concat();
    for (n, bytes) in [&v1[..1], &v1, &v2[..1], &v2].into_iter().enumerate() {
        let verdict = first(&mut core, bytes, &ListenerIdentity::Connect);
        assert!(matches!(verdict, FirstPacket::Close), "{bytes:?}");
        assert_eq!(core.stats.malformed_before_connect, n as u64 + 1);
    }
}

#[test]
fn an_unsupported_protocol_level_is_refused_with_0x01_where_it_was_read() {
    let mut core = BrokerCore::new(Settings::default(), 1, 4, 7);
    // Level 6, client id "somewhere-else" (MQTT 5 is level 5, and is answered).
    let mut wire = vec![
        0x10, 26, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 14,
    ];
    wire.extend_from_slice(b"somewhere-else");
    let pending = pending(first(&mut core, &wire, &ListenerIdentity::Connect));
    assert_eq!(pending.home(), 1);
    assert!(pending.credentials().is_none());
    let outcome = core.handle_connect(9, pending, AuthVerdict::Allowed, Instant::now());
    assert_eq!(outcome.code, ConnectReturnCode::UnacceptableProtocolVersion);
    assert_eq!(core.stats.refused_by_code[1], 1);
    // The CONNECT did not decode: not a received packet.
    assert_eq!(core.stats.packets_received, 0);
    let (mut out, close) = core.take_outbox(9).expect("the CONNACK");
    assert!(close);
    let ack = decode(&mut out, usize::MAX).expect("decodes");
    assert!(matches!(
        ack,
        Some(Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::UnacceptableProtocolVersion,
            ..
        }))
    ));
}

#[test]
fn a_connect_belongs_to_its_client_ids_home_shard_and_a_generated_id_stays() {
    let shards = 4;
    let mut core = BrokerCore::new(Settings::default(), 0, shards, 7);
    let id = (0..)
        .map(|i| format!("c{i}"))
        .find(|id| home_shard(id, shards) != 0)
        .expect("some id lives elsewhere");
    let wire = encoded(&Packet::Connect(Box::new(Cluster::connect_packet(
        &id, true,
    ))));
    let verdict = pending(first(&mut core, &wire, &ListenerIdentity::Connect));
    assert_eq!(verdict.home(), home_shard(&id, shards));
    let wire = encoded(&Packet::Connect(Box::new(Cluster::connect_packet(
        "", true,
    ))));
    let verdict = pending(first(&mut core, &wire, &ListenerIdentity::Connect));
    assert_eq!(verdict.home(), 0);
}

/// `use-identity-as-username`: the certificate's common name is the user name and the
/// authentication (the plugins' verdict is not asked for, and a denial given anyway is ignored);
/// a certificate without one is refused with 0x05.
#[test]
fn a_client_certificate_names_the_user_or_the_connect_is_refused() {
    let settings = Settings {
        allow_anonymous: false,
        ..Settings::default()
    };
    let mut core = BrokerCore::new(settings, 0, 1, 7);
    let wire = encoded(&Packet::Connect(Box::new(Cluster::connect_packet(
        "c", true,
    ))));
    let with_name = ListenerIdentity::Certificate {
        common_name: Some("alice".into()),
    };
    let pending_ok = pending(first(&mut core, &wire, &with_name));
    assert!(pending_ok.credentials().is_none());
    let outcome = core.handle_connect(1, pending_ok, AuthVerdict::Denied, Instant::now());
    assert!(outcome.is_accepted());
    assert_eq!(
        core.client_identity(1)
            .and_then(|(_, user)| user)
            .as_deref(),
        Some("alice")
    );
    let without = ListenerIdentity::Certificate { common_name: None };
    let refused = pending(first(&mut core, &wire, &without));
    let outcome = core.handle_connect(2, refused, AuthVerdict::Allowed, Instant::now());
    assert_eq!(outcome.code, ConnectReturnCode::NotAuthorized);
    assert_eq!(core.stats.refused_by_code[5], 1);
}
