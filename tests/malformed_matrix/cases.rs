//! The cases: raw packet bytes built by hand, and for each transport the list of bad inputs with
//! what the broker must do about each and what it must count.

use super::*;

// ---- raw packet bytes -----------------------------------------------------------------------------

/// A packet from its first byte and body; the remaining length is encoded here.
pub(super) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
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
pub(super) fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT (MQTT 3.1.1, keep-alive 0) with these flags and payload fields, each length-prefixed.
pub(super) fn connect_raw(flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = cat(&[&s(b"MQTT"), &[4, flags, 0, 0]]);
    for field in fields {
        body.extend_from_slice(&s(field));
    }
    packet(0x10, &body)
}

/// A PUBLISH QoS 0 to a raw topic.
pub(super) fn publish_raw(topic: &[u8]) -> Vec<u8> {
    packet(0x30, &cat(&[&s(topic), b"payload"]))
}

/// A SUBSCRIBE (packet id 1) to one raw filter at QoS `qos`.
pub(super) fn subscribe_raw(filter: &[u8], qos: u8) -> Vec<u8> {
    packet(0x82, &cat(&[&[0, 1], &s(filter), &[qos]]))
}

pub(super) fn unsubscribe_raw(filter: &[u8]) -> Vec<u8> {
    packet(0xa2, &cat(&[&[0, 1], &s(filter)]))
}

/// A TLS 1.2 record holding a ClientHello whose body is garbage.
pub(super) fn client_hello_garbage() -> Vec<u8> {
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
pub(super) struct Counts {
    /// `amqtt_malformed_packets_total`.
    pub(super) malformed: f64,
    /// `amqtt_handshake_failures_total{reason="malformed_connect"}`.
    pub(super) malformed_connect: f64,
    /// `amqtt_handshake_failures_total{reason="tls_or_websocket"}`.
    pub(super) tls_or_websocket: f64,
    /// `amqtt_handshake_failures_total{reason="closed_before_connect"}`.
    pub(super) closed_before_connect: f64,
    /// `amqtt_wills_published_total`.
    pub(super) wills: f64,
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
pub(super) const PROTOCOL_ERROR: Counts = Counts {
    malformed: 1.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 1.0,
};
/// A malformed or unexpected first packet: a malformed packet and a failed handshake.
pub(super) const BAD_FIRST_PACKET: Counts = Counts {
    malformed: 1.0,
    malformed_connect: 1.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};
pub(super) const BAD_HANDSHAKE: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 1.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};
pub(super) const CLOSED_BEFORE_CONNECT: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 1.0,
    wills: 0.0,
};
/// The connection was lost without DISCONNECT: only the will counts.
pub(super) const LOST: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 1.0,
};
pub(super) const NOTHING: Counts = Counts {
    malformed: 0.0,
    malformed_connect: 0.0,
    tls_or_websocket: 0.0,
    closed_before_connect: 0.0,
    wills: 0.0,
};

/// Where the bad input goes.
pub(super) enum Send {
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
    /// MQTT bytes after an accepted MQTT 5 CONNECT with a will.
    AfterV5(Vec<u8>),
}

/// What the broker must do.
pub(super) enum Expect {
    /// Close the connection and count it so.
    Close(Counts),
    /// Answer with this packet and keep the connection open (MQTT 3.1.1 gives no reason to close).
    Reply(Packet),
    /// Send an MQTT 5 DISCONNECT with this reason code, then close; count it so.
    Disconnect(u8, Counts),
}

pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) send: Send,
    pub(super) expect: Expect,
    /// Counter increments this case may or may not cause (a counting gap reported, not asserted).
    pub(super) unchecked: Counts,
}

pub(super) fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case {
        name,
        send,
        expect,
        unchecked: NOTHING,
    }
}

pub(super) fn cases(transport: Transport) -> Vec<Case> {
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
    list.extend(cases_v5());
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
