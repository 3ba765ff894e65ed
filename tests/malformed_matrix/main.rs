//! The malformed-input matrix: every bad input of issue #8, and the MQTT 5 ones of issue #21
//! (`cases_v5.rs`), sent over every transport (TCP, TLS, WebSocket, secure WebSocket) to a real
//! broker on loopback, with raw peers (std sockets, rustls, tungstenite) so that nothing
//! well-behaved sits between the bytes and the broker.
//!
//! For every case the test checks what the broker must do: close that connection (or, where MQTT
//! 3.1.1 says not to close, answer correctly and stay open; for MQTT 5, after a DISCONNECT with the
//! reason code the specification calls for); publish the will when the case follows
//! an accepted CONNECT with a will; leave an established bystander client working (a publish
//! round trip after each case); and count the reason in the Prometheus `/metrics` families
//! (`amqtt_malformed_packets_total`, `amqtt_handshake_failures_total{reason}`,
//! `amqtt_wills_published_total`). The counters are reported once a second, so they are checked
//! once per transport, as exact sums over that transport's cases, instead of once per case.
//!
//! One broker (two shards, so connections also move between shards) per transport; the four
//! transports run as four tests in parallel.

#[path = "../common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, MetricsConfig, ShardCount};
use amqtt::protocol::{
    decode, ConnAck, Connect, ConnectReturnCode, LastWill, Packet, ProtocolLevel, PubAck, PubComp,
    Publish, QoS, Subscribe, SubscribeFilter, TopicFilter, TopicName,
};
use amqtt::{Broker, BrokerHandle};
use bytes::{Bytes, BytesMut};

use common::certs::{self, TestCerts};
use common::RawClient;

mod cases;
mod cases_v5;
mod peer;

use cases::*;
use cases_v5::*;
use peer::*;

/// The broker refuses packets larger than this (so a remaining length can exceed it cheaply).
const MAX_PACKET_SIZE: usize = 64 * 1024;
/// How long a case may take to be closed. Well under `connect_timeout`, so that a broker waiting
/// for more bytes (instead of rejecting what it has) fails the case rather than timing it out.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl Transport {
    fn listener(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Mqtts => "mqtts",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Transport::Mqtts | Transport::Wss)
    }

    fn websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

// ---- the broker -----------------------------------------------------------------------------------

struct Setup {
    broker: BrokerHandle,
    metrics: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    _certs: TestCerts,
}

fn start() -> Setup {
    let certs = certs::make();
    let tls = certs.tls_listener_keys();
    let yaml = format!(
        "listeners:\n  mqtt:\n    bind: 127.0.0.1:0\n  mqtts:\n    bind: 127.0.0.1:0\n{tls}  ws:\n    bind: 127.0.0.1:0\n    type: ws\n  wss:\n    bind: 127.0.0.1:0\n    type: ws\n{tls}"
    );
    let mut config = BrokerConfig::from_yaml_str(&yaml, "matrix").expect("config");
    config.shards = ShardCount::Fixed(2);
    config.pin_shards = false;
    config.connect_timeout = CONNECT_TIMEOUT;
    config.max_packet_size = MAX_PACKET_SIZE;
    config.metrics = Some(MetricsConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
    });
    let broker = Broker::new(config)
        .and_then(Broker::start)
        .expect("broker starts");
    let metrics = broker.metrics_address().expect("metrics address");
    let roots = amqtt::transport::tls::load_roots(Some(&certs.ca), None, None).expect("roots");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Setup {
        broker,
        metrics,
        tls: Arc::new(tls),
        _certs: certs,
    }
}

// ---- the bystander --------------------------------------------------------------------------------

/// A TCP client connected before the cases, subscribed to every will topic and to its own probes.
struct Bystander {
    client: RawClient,
    probes: u16,
}

impl Bystander {
    fn connect(setup: &Setup) -> Bystander {
        let addr = setup.broker.address("mqtt").expect("listener");
        let (mut client, ack) =
            RawClient::mqtt_connect(addr, RawClient::connect_packet("bystander", true, 0));
        assert!(matches!(
            ack,
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Accepted,
                ..
            })
        ));
        client.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: ["will/#", "probe/#"]
                .iter()
                .map(|f| SubscribeFilter {
                    filter: TopicFilter::new(f).expect("filter"),
                    qos: QoS::AtMostOnce,
                })
                .collect(),
        }));
        assert!(matches!(client.recv(), Some(Packet::SubAck(_))));
        Bystander { client, probes: 0 }
    }

    fn next_publish(&mut self, context: &str) -> Publish {
        loop {
            match self.client.recv() {
                Some(Packet::Publish(p)) => return p,
                Some(Packet::PubAck(_)) => {}
                other => panic!("{context}: bystander got {other:?}"),
            }
        }
    }

    fn expect_will(&mut self, topic: &str, context: &str) {
        let p = self.next_publish(context);
        assert_eq!(p.topic.as_str(), topic, "{context}: the will, and only it");
    }

    /// A QoS 1 publish to itself: acknowledged, and delivered before anything else arrives (a will
    /// that should not have been published would arrive first and fail here).
    fn round_trip(&mut self, context: &str) {
        self.probes += 1;
        let id = self.probes;
        let topic = format!("probe/{id}");
        self.client.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicName::new(&topic).expect("topic"),
            packet_id: Some(id),
            payload: Bytes::from(context.to_string()),
        }));
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) {
            match self.client.recv() {
                Some(Packet::PubAck(PubAck { packet_id })) if packet_id == id => acked = true,
                Some(Packet::Publish(p)) if p.topic.as_str() == topic => delivered = true,
                other => panic!("{context}: bystander round trip got {other:?}"),
            }
        }
    }
}

// ---- metrics --------------------------------------------------------------------------------------

fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Sum over shards of `name`'s samples carrying `label` (e.g. `reason="tls_or_websocket"`).
fn metric(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let base = series.split('{').next().unwrap_or("");
            base == name && label.is_none_or(|label| series.contains(label))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a number"))
        .sum()
}

fn counts(setup: &Setup) -> Counts {
    let text = scrape(setup.metrics);
    let failures = |reason: &str| {
        metric(
            &text,
            "amqtt_handshake_failures_total",
            Some(&format!("reason=\"{reason}\"")),
        )
    };
    Counts {
        malformed: metric(&text, "amqtt_malformed_packets_total", None),
        malformed_connect: failures("malformed_connect"),
        tls_or_websocket: failures("tls_or_websocket"),
        closed_before_connect: failures("closed_before_connect"),
        wills: metric(&text, "amqtt_wills_published_total", None),
    }
}

/// Waits for the reported counters to reach `expected` (each at most `slack` above it).
fn wait_for_counts(setup: &Setup, expected: Counts, slack: Counts, transport: Transport) {
    let within =
        |actual: f64, expected: f64, slack: f64| actual >= expected && actual <= expected + slack;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let actual = counts(setup);
        if within(actual.malformed, expected.malformed, slack.malformed)
            && within(
                actual.malformed_connect,
                expected.malformed_connect,
                slack.malformed_connect,
            )
            && within(
                actual.tls_or_websocket,
                expected.tls_or_websocket,
                slack.tls_or_websocket,
            )
            && within(
                actual.closed_before_connect,
                expected.closed_before_connect,
                slack.closed_before_connect,
            )
            && within(actual.wills, expected.wills, slack.wills)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{transport:?}: counters {actual:?}, expected {expected:?} (+ up to {slack:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- running a case -------------------------------------------------------------------------------

fn connect_with_will(peer: &mut Peer, client_id: &str, will_topic: &str, context: &str) {
    peer.send_packet(&Packet::Connect(Box::new(Connect {
        protocol: ProtocolLevel::V311,
        clean_session: true,
        keep_alive: 0,
        client_id: client_id.into(),
        will: Some(LastWill {
            topic: TopicName::new(will_topic).expect("topic"),
            payload: Bytes::from(context.to_string()),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        }),
        username: None,
        password: None,
    })));
    match peer.recv(Duration::from_secs(5)) {
        Some(Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::Accepted,
            ..
        })) => {}
        other => panic!("{context}: no CONNACK: {other:?}"),
    }
}

/// An MQTT 5 CONNECT with a will (raw bytes: the codec under test is not used to build it), and
/// its CONNACK read as raw bytes too.
fn connect_v5_with_will(peer: &mut Peer, client_id: &str, will_topic: &str, context: &str) {
    peer.send(&connect_v5_raw(
        client_id.as_bytes(),
        &[0],
        Some((will_topic.as_bytes(), context.as_bytes())),
    ));
    match peer.recv_raw(Duration::from_secs(5)) {
        // Type 2, flags 0, reason code 0x00 (Success).
        Some((0x20, body)) if body.get(1) == Some(&0) => {}
        other => panic!("{context}: no MQTT 5 CONNACK: {other:?}"),
    }
}

fn run_case(setup: &Setup, transport: Transport, index: usize, case: &Case, by: &mut Bystander) {
    let context = format!("{transport:?} case {index} ({})", case.name);
    let will_topic = format!("will/{}/{index}", transport.listener());
    let client_id = format!("{}-{index}", transport.listener());
    let connected = matches!(
        case.send,
        Send::After(_)
            | Send::AfterTruncated(_)
            | Send::AfterText
            | Send::AfterUnderTls(_)
            | Send::AfterV5(_)
    );
    let mut peer = match &case.send {
        Send::Socket(bytes) => {
            let addr = setup.broker.address(transport.listener()).expect("addr");
            let mut tcp = TcpStream::connect(addr).expect("tcp connect");
            let _ = tcp.write_all(bytes);
            tcp.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            Peer {
                wire: Wire::Bytes(Io::Tcp(tcp)),
                buf: BytesMut::new(),
            }
        }
        _ => {
            let mut peer = Peer::open(setup, transport);
            if let Send::AfterV5(_) = case.send {
                connect_v5_with_will(&mut peer, &client_id, &will_topic, &context);
            } else if connected {
                connect_with_will(&mut peer, &client_id, &will_topic, &context);
            }
            peer
        }
    };
    match &case.send {
        Send::Socket(_) => {}
        Send::First(bytes) | Send::After(bytes) | Send::AfterV5(bytes) => peer.send(bytes),
        Send::FirstTruncated(bytes) | Send::AfterTruncated(bytes) => {
            peer.send(bytes);
            peer.shutdown_write();
        }
        Send::FirstText | Send::AfterText => peer.send_text("{\"not\": \"mqtt\"}"),
        Send::AfterUnderTls(bytes) => {
            let _ = peer.socket().write_all(bytes);
        }
    }
    match &case.expect {
        Expect::Close(counts) => {
            assert!(
                peer.closed_within(CLOSE_WITHIN),
                "{context}: the broker keeps the connection open"
            );
            if connected {
                assert_eq!(
                    counts.wills, 1.0,
                    "{context}: a case after CONNECT has a will"
                );
                by.expect_will(&will_topic, &context);
            }
        }
        Expect::Disconnect(code, counts) => {
            assert_eq!(
                peer.disconnect_reason(CLOSE_WITHIN),
                Some(Some(*code)),
                "{context}: want DISCONNECT {code:#04x} then the close (None: kept open; \
                 Some(None): closed without a DISCONNECT)"
            );
            assert_eq!(
                counts.wills, 1.0,
                "{context}: a case after CONNECT has a will"
            );
            by.expect_will(&will_topic, &context);
        }
        Expect::Reply(reply) => {
            assert_eq!(
                peer.recv(Duration::from_secs(5)).as_ref(),
                Some(reply),
                "{context}"
            );
            peer.send_packet(&Packet::PingReq);
            assert_eq!(
                peer.recv(Duration::from_secs(5)),
                Some(Packet::PingResp),
                "{context}: the connection stays usable"
            );
            peer.send_packet(&Packet::Disconnect);
            assert!(
                peer.closed_within(CLOSE_WITHIN),
                "{context}: DISCONNECT closes"
            );
        }
    }
    by.round_trip(&context);
}

fn matrix(transport: Transport) {
    let setup = start();
    let mut by = Bystander::connect(&setup);
    let mut expected = Counts::default();
    let mut slack = Counts::default();
    for (index, case) in cases(transport).iter().enumerate() {
        run_case(&setup, transport, index, case, &mut by);
        if let Expect::Close(counts) | Expect::Disconnect(_, counts) = case.expect {
            expected += counts;
        }
        slack += case.unchecked;
    }
    wait_for_counts(&setup, expected, slack, transport);
    // The broker still accepts and serves new clients on this transport.
    let mut peer = Peer::open(&setup, transport);
    connect_with_will(&mut peer, "after-all", "will/after-all", "after all cases");
    peer.send_packet(&Packet::Disconnect);
    assert!(peer.closed_within(CLOSE_WITHIN));
    by.round_trip("after all cases");
    setup.broker.stop().expect("clean stop");
}

#[test]
fn malformed_input_over_tcp() {
    matrix(Transport::Mqtt);
}

#[test]
fn malformed_input_over_tls() {
    matrix(Transport::Mqtts);
}

#[test]
fn malformed_input_over_websocket() {
    matrix(Transport::Ws);
}

#[test]
fn malformed_input_over_secure_websocket() {
    matrix(Transport::Wss);
}
