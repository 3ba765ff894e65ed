//! The malformed-input matrix: every bad input of issue #8 sent over every transport (TCP, TLS,
//! WebSocket, secure WebSocket) to a real broker on loopback, with raw peers (std sockets, rustls,
//! tungstenite) so that nothing well-behaved sits between the bytes and the broker.
//!
//! For every case the test checks what the broker must do: close that connection (or, where MQTT
//! 3.1.1 says not to close, answer correctly and stay open); publish the will when the case follows
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
    let tls = format!(
        "    ssl: on\n    certfile: {}\n    keyfile: {}\n",
        certs.server_cert.display(),
        certs.server_key.display()
    );
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

// ---- a raw peer over any transport ----------------------------------------------------------------

/// The byte stream under MQTT (and under WebSocket): TCP or TLS over TCP.
enum Io {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Io {
    fn socket(&self) -> &TcpStream {
        match self {
            Io::Tcp(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Tcp(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

enum Wire {
    Bytes(Io),
    Ws(Box<tungstenite::WebSocket<Io>>),
}

/// What one read brought.
enum Read1 {
    Data,
    Timeout,
    Closed,
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A connection to one listener, past its TLS handshake and WebSocket upgrade, speaking raw MQTT
/// bytes (in binary WebSocket messages where there is WebSocket).
struct Peer {
    wire: Wire,
    buf: BytesMut,
}

impl Peer {
    fn open(setup: &Setup, transport: Transport) -> Peer {
        let addr = setup
            .broker
            .address(transport.listener())
            .expect("listener");
        let tcp = TcpStream::connect(addr).expect("tcp connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let io = if transport.tls() {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(setup.tls.clone(), name).expect("tls");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
            }
            Io::Tls(Box::new(tls))
        } else {
            Io::Tcp(tcp)
        };
        let wire = if transport.websocket() {
            let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
                "ws://localhost:{}/mqtt",
                addr.port()
            ))
            .expect("request");
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
            let (ws, _) = tungstenite::client(request, io).expect("WebSocket upgrade");
            Wire::Ws(Box::new(ws))
        } else {
            Wire::Bytes(io)
        };
        let peer = Peer {
            wire,
            buf: BytesMut::new(),
        };
        peer.socket()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        peer
    }

    fn socket(&self) -> &TcpStream {
        match &self.wire {
            Wire::Bytes(io) => io.socket(),
            Wire::Ws(ws) => ws.get_ref().socket(),
        }
    }

    /// Sends MQTT bytes; errors are ignored (the broker may close before it has read them all).
    fn send(&mut self, bytes: &[u8]) {
        match &mut self.wire {
            Wire::Bytes(io) => {
                let _ = io.write_all(bytes).and_then(|()| io.flush());
            }
            Wire::Ws(ws) => {
                let _ = ws.send(tungstenite::Message::binary(bytes.to_vec()));
            }
        }
    }

    fn send_packet(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(&mut out).expect("encode");
        self.send(&out);
    }

    fn send_text(&mut self, text: &str) {
        let Wire::Ws(ws) = &mut self.wire else {
            panic!("text frames need WebSocket");
        };
        let _ = ws.send(tungstenite::Message::text(text));
    }

    fn read1(&mut self) -> Read1 {
        match &mut self.wire {
            Wire::Bytes(io) => {
                let mut chunk = [0u8; 4096];
                match io.read(&mut chunk) {
                    Ok(0) => Read1::Closed,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        Read1::Data
                    }
                    Err(e) if would_block(&e) => Read1::Timeout,
                    Err(_) => Read1::Closed,
                }
            }
            Wire::Ws(ws) => match ws.read() {
                Ok(tungstenite::Message::Binary(data)) => {
                    self.buf.extend_from_slice(&data);
                    Read1::Data
                }
                Ok(_) => Read1::Data,
                Err(tungstenite::Error::Io(e)) if would_block(&e) => Read1::Timeout,
                Err(_) => Read1::Closed,
            },
        }
    }

    /// The next packet within `within`; None when the broker closed the connection or time ran out.
    fn recv(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(packet)) = decode(&mut self.buf, usize::MAX) {
                return Some(packet);
            }
            match self.read1() {
                Read1::Data => {}
                Read1::Closed => return None,
                Read1::Timeout if Instant::now() >= deadline => return None,
                Read1::Timeout => {}
            }
        }
    }

    /// Whether the broker closes the connection within `within` (what it sends first is ignored).
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.read1() {
                Read1::Closed => return true,
                Read1::Data => {}
                Read1::Timeout if Instant::now() >= deadline => return false,
                Read1::Timeout => {}
            }
        }
    }

    /// Ends our sending side at the TCP level (no TLS close_notify, no WebSocket close frame), as a
    /// peer that dies mid-packet would.
    fn shutdown_write(&mut self) {
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}

// ---- raw packet bytes -----------------------------------------------------------------------------

/// A packet from its first byte and body; the remaining length is encoded here.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string (any bytes: the point is to send invalid ones).
fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT (MQTT 3.1.1, keep-alive 0) with these flags and payload fields, each length-prefixed.
fn connect_raw(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = cat(&[&s(b"MQTT"), &[4, flags, 0, 0]]);
    for field in fields {
        body.extend_from_slice(&s(field));
    }
    packet(0x10, &body)
}

/// A PUBLISH QoS 0 to a raw topic.
fn publish_raw(topic: &[u8]) -> Vec<u8> {
    packet(0x30, &cat(&[&s(topic), b"payload"]))
}

/// A SUBSCRIBE (packet id 1) to one raw filter at QoS `qos`.
fn subscribe_raw(filter: &[u8], qos: u8) -> Vec<u8> {
    packet(0x82, &cat(&[&[0, 1], &s(filter), &[qos]]))
}

fn unsubscribe_raw(filter: &[u8]) -> Vec<u8> {
    packet(0xa2, &cat(&[&[0, 1], &s(filter)]))
}

/// A TLS 1.2 record holding a ClientHello whose body is garbage.
fn client_hello_garbage() -> Vec<u8> {
    let mut body = vec![0x01, 0x00, 0x00, 0x40, 0x03, 0x03];
    body.extend((0..0x40u8).map(|i| i.wrapping_mul(37) ^ 0xa5));
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(body.len() as u16).to_be_bytes());
    record.extend_from_slice(&body);
    record
}

// ---- the cases ------------------------------------------------------------------------------------

/// Counter increments a case causes (checked as sums per transport).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    /// `amqtt_malformed_packets_total`.
    malformed: f64,
    /// `amqtt_handshake_failures_total{reason="malformed_connect"}`.
    malformed_connect: f64,
    /// `amqtt_handshake_failures_total{reason="tls_or_websocket"}`.
    tls_or_websocket: f64,
    /// `amqtt_handshake_failures_total{reason="closed_before_connect"}`.
    closed_before_connect: f64,
    /// `amqtt_wills_published_total`.
    wills: f64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.malformed += o.malformed;
        self.malformed_connect += o.malformed_connect;
        self.tls_or_websocket += o.tls_or_websocket;
        self.closed_before_connect += o.closed_before_connect;
        self.wills += o.wills;
    }
}

/// A malformed packet after CONNECT: a protocol error, and the will goes out.
const PROTOCOL_ERROR: Counts = Counts {
    malformed: 1.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 1.0,
};
/// A malformed or unexpected first packet: a malformed packet and a failed handshake.
const BAD_FIRST_PACKET: Counts = Counts {
    malformed: 1.0,
    malformed_connect: 1.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};
const BAD_HANDSHAKE: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 1.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};
const CLOSED_BEFORE_CONNECT: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 1.0,
    wills: 0.0,
};
/// The connection was lost without DISCONNECT: only the will counts.
const LOST: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 1.0,
};
const NOTHING: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};

/// Where the bad input goes.
enum Send {
    /// Raw bytes on a fresh TCP socket to the listener, before any TLS or WebSocket handshake.
    Socket(Vec<u8>),
    /// MQTT bytes after the transport handshake, instead of CONNECT.
    First(Vec<u8>),
    /// MQTT bytes after an accepted CONNECT with a will.
    After(Vec<u8>),
    /// These bytes as the first packet, then our side of the socket is shut.
    FirstTruncated(Vec<u8>),
    /// These bytes after an accepted CONNECT with a will, then our side of the socket is shut.
    AfterTruncated(Vec<u8>),
    /// A WebSocket text frame instead of CONNECT.
    FirstText,
    /// A WebSocket text frame after an accepted CONNECT with a will.
    AfterText,
    /// Raw bytes on the TCP socket, under TLS, after an accepted CONNECT with a will.
    AfterUnderTls(Vec<u8>),
}

/// What the broker must do.
enum Expect {
    /// Close the connection and count it so.
    Close(Counts),
    /// Answer with this packet and keep the connection open (MQTT 3.1.1 gives no reason to close).
    Reply(Packet),
}

struct Case {
    name: &'static str,
    send: Send,
    expect: Expect,
    /// Counter increments this case may or may not cause (a counting gap reported, not asserted).
    unchecked: Counts,
}

fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case {
        name,
        send,
        expect,
        unchecked: NOTHING,
    }
}

fn cases(transport: Transport) -> Vec<Case> {
    use Expect::{Close, Reply};
    use Send::{After, AfterTruncated, First, FirstTruncated, Socket};
    let too_long = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01].to_vec();
    // Announces a 1 MiB PUBLISH to a broker whose limit is 64 KiB: refused from the header alone.
    let too_large = [0x30, 0x80, 0x80, 0x40].to_vec();
    let mut list = vec![
        // Garbage: packet type 0 (reserved), then noise.
        case(
            "garbage first",
            First(b"\x00\x07garbage\r\n\r\n".to_vec()),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "garbage after CONNECT",
            After(b"\x00\x07garbage\r\n\r\n".to_vec()),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "remaining length over 4 bytes, first",
            First(too_long.clone()),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "remaining length over 4 bytes",
            After(too_long),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "remaining length past max_packet_size, first",
            First(too_large.clone()),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "remaining length past max_packet_size",
            After(too_large),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "truncated CONNECT then close",
            FirstTruncated(connect_raw(0x02, &[b"cut"])[..9].to_vec()),
            Close(CLOSED_BEFORE_CONNECT),
        ),
        case(
            "truncated PUBLISH then close",
            AfterTruncated(publish_raw(b"t/cut")[..5].to_vec()),
            Close(LOST),
        ),
        // Reserved flags, one packet type at a time, each with a well-formed body.
        case(
            "CONNECT with flags 0001",
            First(cat(&[&[0x11], &connect_raw(0x02, &[b"flags"])[1..]])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "CONNECT reserved connect-flags bit",
            First(connect_raw(0x03, &[b"reserved"])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "CONNACK with flags 0001",
            After(packet(0x21, &[0, 0])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBLISH QoS 0 with DUP set",
            After(packet(0x38, &cat(&[&s(b"t"), b"x"]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBACK with flags 0001",
            After(packet(0x41, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBREC with flags 0001",
            After(packet(0x51, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBREL with flags 0000",
            After(packet(0x60, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBCOMP with flags 0001",
            After(packet(0x71, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "SUBSCRIBE with flags 0000",
            After(packet(0x80, &cat(&[&[0, 1], &s(b"t"), &[0]]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "SUBACK with flags 0001",
            After(packet(0x91, &[0, 1, 0])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "UNSUBSCRIBE with flags 0000",
            After(packet(0xa0, &cat(&[&[0, 1], &s(b"t")]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "UNSUBACK with flags 0001",
            After(packet(0xb1, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PINGREQ with flags 0001",
            After(packet(0xc1, &[])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PINGRESP with flags 0001",
            After(packet(0xd1, &[])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "DISCONNECT with flags 0001",
            After(packet(0xe1, &[])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "reserved packet type 15",
            After(packet(0xf0, &[])),
            Close(PROTOCOL_ERROR),
        ),
        // QoS 3 wherever a QoS travels.
        case(
            "PUBLISH QoS 3",
            After(packet(0x36, &cat(&[&s(b"t"), &[0, 1], b"x"]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "SUBSCRIBE QoS 3",
            After(subscribe_raw(b"t", 3)),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "will QoS 3",
            First(connect_raw(0x1e, &[b"wq3", b"w", b"x"])),
            Close(BAD_FIRST_PACKET),
        ),
        // Invalid UTF-8 (a lone continuation byte; an encoded surrogate) and U+0000.
        case(
            "invalid UTF-8 in a PUBLISH topic",
            After(publish_raw(b"t/\xc3\x28")),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "U+0000 in a PUBLISH topic",
            After(publish_raw(b"t/\0")),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "surrogate in a SUBSCRIBE filter",
            After(subscribe_raw(b"t/\xed\xa0\x80", 0)),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "U+0000 in a SUBSCRIBE filter",
            After(subscribe_raw(b"t/\0", 0)),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "U+0000 in an UNSUBSCRIBE filter",
            After(unsubscribe_raw(b"\0")),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "invalid UTF-8 in a client id",
            First(connect_raw(0x02, &[b"id\xff"])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "U+0000 in a client id",
            First(connect_raw(0x02, &[b"id\0"])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "invalid UTF-8 in a user name",
            First(connect_raw(0x82, &[b"user-utf8", b"\xc0\x80"])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "U+0000 in a user name",
            First(connect_raw(0x82, &[b"user-nul", b"u\0"])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "U+0000 in a will topic",
            First(connect_raw(0x06, &[b"will-nul", b"w\0", b"x"])),
            Close(BAD_FIRST_PACKET),
        ),
        // Wildcards where a topic name is required.
        case(
            "PUBLISH to a/+",
            After(publish_raw(b"a/+")),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBLISH to a/#",
            After(publish_raw(b"a/#")),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "will topic with a wildcard",
            First(connect_raw(0x06, &[b"will-wild", b"w/#", b"x"])),
            Close(BAD_FIRST_PACKET),
        ),
        // Filters that break the wildcard rules [MQTT-4.7.1-2/3].
        case(
            "SUBSCRIBE a/#/b",
            After(subscribe_raw(b"a/#/b", 0)),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "SUBSCRIBE a+",
            After(subscribe_raw(b"a+", 0)),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "UNSUBSCRIBE a#",
            After(unsubscribe_raw(b"a#")),
            Close(PROTOCOL_ERROR),
        ),
        // No filter at all [MQTT-3.8.3-3, MQTT-3.10.3-2].
        case(
            "empty SUBSCRIBE",
            After(packet(0x82, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "empty UNSUBSCRIBE",
            After(packet(0xa2, &[0, 1])),
            Close(PROTOCOL_ERROR),
        ),
        // Out of order.
        case(
            "a second CONNECT",
            After(connect_raw(0x02, &[b"again"])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PINGREQ before CONNECT",
            First(packet(0xc0, &[])),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "PUBLISH before CONNECT",
            First(publish_raw(b"t")),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "SUBSCRIBE before CONNECT",
            First(subscribe_raw(b"t", 0)),
            Close(BAD_FIRST_PACKET),
        ),
        case(
            "DISCONNECT before CONNECT",
            First(packet(0xe0, &[])),
            Close(BAD_FIRST_PACKET),
        ),
        // Packet id 0 where one is required [MQTT-2.3.1-1].
        case(
            "PUBLISH QoS 1 with packet id 0",
            After(packet(0x32, &cat(&[&s(b"t"), &[0, 0], b"x"]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBLISH QoS 2 with packet id 0",
            After(packet(0x34, &cat(&[&s(b"t"), &[0, 0], b"x"]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "SUBSCRIBE with packet id 0",
            After(packet(0x82, &cat(&[&[0, 0], &s(b"t"), &[0]]))),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "UNSUBSCRIBE with packet id 0",
            After(packet(0xa2, &cat(&[&[0, 0], &s(b"t")]))),
            Close(PROTOCOL_ERROR),
        ),
        // Acknowledgements name an id the broker sent, never 0: closed, as Mosquitto does.
        case(
            "PUBACK with packet id 0",
            After(packet(0x40, &[0, 0])),
            Close(PROTOCOL_ERROR),
        ),
        case(
            "PUBREL with packet id 0",
            After(packet(0x62, &[0, 0])),
            Close(PROTOCOL_ERROR),
        ),
        // Not errors: a PUBREL for an id the broker does not hold is answered with PUBCOMP and the
        // connection stays (MQTT-4.3.3: the receiver MUST respond to a PUBREL with a PUBCOMP
        // containing the same packet id; a client may repeat PUBREL after reconnecting). Mosquitto
        // does the same. Acknowledgements of ids never sent are ignored, as Mosquitto does.
        case(
            "PUBREL for an unknown packet id",
            After(packet(0x62, &[0x12, 0x34])),
            Reply(Packet::PubComp(PubComp { packet_id: 0x1234 })),
        ),
        case(
            "PUBACK for an unknown packet id, then PINGREQ",
            After(cat(&[&packet(0x40, &[0x43, 0x21]), &packet(0xc0, &[])])),
            Reply(Packet::PingResp),
        ),
        // A TLS ClientHello whose body is garbage, straight onto the socket: on a TLS listener
        // the handshake fails; elsewhere it is garbage for the WebSocket upgrade or for MQTT.
        case(
            "TLS ClientHello with garbage",
            Socket(client_hello_garbage()),
            Close(if transport.tls() || transport.websocket() {
                BAD_HANDSHAKE
            } else {
                BAD_FIRST_PACKET
            }),
        ),
    ];
    if transport.websocket() {
        list.push(case(
            "HTTP garbage instead of the upgrade",
            Socket(b"GET /mqtt HTTP/1.1\r\nHost\r\n\r\n".to_vec()),
            Close(BAD_HANDSHAKE),
        ));
        // MQTT over WebSocket is binary only [MQTT-6.0.0-1]: the broker closes (with 1003),
        // counts malformed input and, after CONNECT, publishes the will.
        list.push(case(
            "WebSocket text frame first",
            Send::FirstText,
            Close(BAD_FIRST_PACKET),
        ));
        list.push(case(
            "WebSocket text frame after CONNECT",
            Send::AfterText,
            Close(PROTOCOL_ERROR),
        ));
    } else if transport.tls() {
        list.push(case(
            "plain MQTT CONNECT to a TLS listener",
            Socket(connect_raw(0x02, &[b"plain"])),
            Close(BAD_HANDSHAKE),
        ));
    }
    if transport.tls() {
        // An application-data record that does not decrypt: the TLS session is dead, so the
        // broker closes, counts malformed input and publishes the will.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend((0..0x20u8).map(|i| i.wrapping_mul(91) ^ 0x3c));
        list.push(case(
            "TLS record that does not decrypt, after CONNECT",
            Send::AfterUnderTls(record),
            Close(PROTOCOL_ERROR),
        ));
    }
    list
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

fn run_case(setup: &Setup, transport: Transport, index: usize, case: &Case, by: &mut Bystander) {
    let context = format!("{transport:?} case {index} ({})", case.name);
    let will_topic = format!("will/{}/{index}", transport.listener());
    let client_id = format!("{}-{index}", transport.listener());
    let connected = matches!(
        case.send,
        Send::After(_) | Send::AfterTruncated(_) | Send::AfterText | Send::AfterUnderTls(_)
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
            if connected {
                connect_with_will(&mut peer, &client_id, &will_topic, &context);
            }
            peer
        }
    };
    match &case.send {
        Send::Socket(_) => {}
        Send::First(bytes) | Send::After(bytes) => peer.send(bytes),
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
        if let Expect::Close(counts) = case.expect {
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
