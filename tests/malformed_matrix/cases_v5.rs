//! The MQTT 5 cases: packets after an accepted MQTT 5 CONNECT (with a will) that break the
//! protocol, each with the reason code of the DISCONNECT the broker must send before it closes
//! [MQTT-4.13.1-1]: 0x81 (Malformed Packet) where the bytes cannot be parsed as the packet the
//! specification defines, 0x82 (Protocol Error) where they parse but break a rule, and the
//! specific codes where the specification names one (0x94 Topic Alias invalid, 0x95 Packet too
//! large). Every one is counted as malformed input and publishes the will. MQTT 5 CONNECTs
//! that break the protocol are closed without a CONNACK (which the specification allows).

use super::*;

/// An MQTT 5 CONNECT (clean start, keep-alive 0) with these raw properties (length included) and
/// a will (QoS 0, no will properties) to `will_topic` when given.
pub(super) fn connect_v5_raw(
    client_id: &[u8],
    props: &[u8],
    will: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let flags = if will.is_some() { 0x06 } else { 0x02 };
    let mut body = cat(&[&s(b"MQTT"), &[5, flags, 0, 0], props, &s(client_id)]);
    if let Some((topic, payload)) = will {
        body.extend_from_slice(&cat(&[&[0], &s(topic), &s(payload)]));
    }
    packet(0x10, &body)
}

/// An MQTT 5 PUBLISH QoS 1 (packet id 1) to a raw topic, with these raw properties (length
/// included).
fn publish_v5(topic: &[u8], props: &[u8]) -> Vec<u8> {
    packet(0x32, &cat(&[&s(topic), &[0, 1], props, b"x"]))
}

/// An MQTT 5 SUBSCRIBE (packet id 1) to one raw filter with these options and raw properties.
fn subscribe_v5(filter: &[u8], options: u8, props: &[u8]) -> Vec<u8> {
    packet(0x82, &cat(&[&[0, 1], props, &s(filter), &[options]]))
}

/// A case after an MQTT 5 CONNECT: DISCONNECT with `code`, counted as a protocol error.
fn v5(name: &'static str, bytes: Vec<u8>, code: u8) -> Case {
    case(
        name,
        Send::AfterV5(bytes),
        Expect::Disconnect(code, PROTOCOL_ERROR),
    )
}

const MALFORMED: u8 = 0x81;
const PROTOCOL: u8 = 0x82;

pub(super) fn cases_v5() -> Vec<Case> {
    let mut list = vec![
        // Properties [MQTT-2.2.2].
        v5(
            "v5 PUBLISH with an unknown property id",
            publish_v5(b"t", &[2, 0x7f, 0]),
            MALFORMED,
        ),
        v5(
            "v5 PUBLISH with a property twice",
            publish_v5(b"t", &[4, 0x01, 0, 0x01, 1]),
            PROTOCOL,
        ),
        v5(
            "v5 PUBLISH with a property of CONNECT (Receive Maximum)",
            publish_v5(b"t", &[3, 0x21, 0, 5]),
            MALFORMED,
        ),
        v5(
            "v5 PUBLISH property length not a Variable Byte Integer",
            publish_v5(b"t", &[0xff, 0xff, 0xff, 0xff, 0x7f]),
            MALFORMED,
        ),
        v5(
            "v5 PUBLISH property length past the packet",
            publish_v5(b"t", &[0x10, 0x01, 0]),
            MALFORMED,
        ),
        v5(
            "v5 PUBLISH property cut inside its value",
            publish_v5(b"t", &[2, 0x02, 0]),
            MALFORMED,
        ),
        v5(
            "v5 PUBLISH user property with invalid UTF-8",
            publish_v5(b"t", &cat(&[&[7, 0x26], &s(b"k\xff"), &s(b"v")])),
            MALFORMED,
        ),
        // Topic aliases [MQTT-3.3.2-8, MQTT-3.3.2-9]: 0 is a value the property cannot take; one
        // above the Topic Alias Maximum the broker announced (10) is 0x94.
        v5(
            "v5 PUBLISH with topic alias 0",
            publish_v5(b"t", &[3, 0x23, 0, 0]),
            PROTOCOL,
        ),
        v5(
            "v5 PUBLISH with a topic alias over the maximum",
            publish_v5(b"t", &[3, 0x23, 0, 11]),
            0x94,
        ),
        v5(
            "v5 PUBLISH empty topic with an alias never set",
            publish_v5(b"", &[3, 0x23, 0, 1]),
            PROTOCOL,
        ),
        v5(
            "v5 PUBLISH empty topic without an alias",
            publish_v5(b"", &[0]),
            PROTOCOL,
        ),
        // A Subscription Identifier only travels server → client [MQTT-3.3.4-6].
        v5(
            "v5 PUBLISH with a Subscription Identifier",
            publish_v5(b"t", &[2, 0x0b, 1]),
            PROTOCOL,
        ),
        // The broker's limit (64 KiB here) from the header alone: 0x95 Packet too large.
        case(
            "v5 PUBLISH past max_packet_size",
            Send::AfterV5([0x32, 0x80, 0x80, 0x40].to_vec()),
            Expect::Disconnect(0x95, PROTOCOL_ERROR),
        ),
        // Reason codes the packet does not have [MQTT-3.4.2-1, MQTT-3.6.2-1, MQTT-3.14.2-1].
        v5(
            "v5 PUBACK with reason code 0x04",
            packet(0x40, &[0, 1, 0x04, 0]),
            MALFORMED,
        ),
        v5(
            "v5 PUBREL with reason code 0x10",
            packet(0x62, &[0, 1, 0x10, 0]),
            MALFORMED,
        ),
        v5(
            "v5 DISCONNECT with reason code 0x05",
            packet(0xe0, &[0x05, 0]),
            MALFORMED,
        ),
        // Subscription options and properties [MQTT-3.8.3-4, MQTT-3.8.3-5, 3.8.2.1.2, 3.8.3.1].
        v5(
            "v5 SUBSCRIBE with reserved option bits",
            subscribe_v5(b"t", 0xc0, &[0]),
            MALFORMED,
        ),
        v5(
            "v5 SUBSCRIBE with Retain Handling 3",
            subscribe_v5(b"t", 0x30, &[0]),
            PROTOCOL,
        ),
        v5(
            "v5 SUBSCRIBE with Subscription Identifier 0",
            subscribe_v5(b"t", 0, &[2, 0x0b, 0]),
            PROTOCOL,
        ),
        v5(
            "v5 SUBSCRIBE No Local on a shared subscription",
            subscribe_v5(b"$share/g/t", 0x04, &[0]),
            PROTOCOL,
        ),
        v5(
            "v5 UNSUBSCRIBE with a property of PUBLISH",
            packet(0xa2, &cat(&[&[0, 1, 2, 0x01, 0], &s(b"t")])),
            MALFORMED,
        ),
        // A Session Expiry Interval on DISCONNECT after 0 on CONNECT [MQTT-3.14.2-2].
        v5(
            "v5 DISCONNECT setting a session expiry after 0",
            packet(0xe0, &[0, 5, 0x11, 0, 0, 0, 10]),
            PROTOCOL,
        ),
        // AUTH [MQTT-3.15, MQTT-4.12.0-1]: this client connected without a method.
        v5(
            "v5 AUTH without enhanced authentication",
            packet(0xf0, &[0x19, 0]),
            PROTOCOL,
        ),
        v5(
            "v5 AUTH with flags 0001",
            packet(0xf1, &[0x18, 0]),
            MALFORMED,
        ),
        v5(
            "v5 AUTH with reason code 0x05",
            packet(0xf0, &[0x05, 0]),
            MALFORMED,
        ),
        v5(
            "v5 AUTH property length past the packet",
            packet(0xf0, &[0x18, 9, 0x15, 0]),
            MALFORMED,
        ),
        v5(
            "v5 AUTH with a property of PUBLISH (Topic Alias)",
            packet(0xf0, &[0x18, 3, 0x23, 0, 1]),
            MALFORMED,
        ),
        v5(
            "v5 AUTH with the Authentication Method twice",
            packet(0xf0, &cat(&[&[0x18, 8, 0x15], &s(b"a"), &[0x15], &s(b"a")])),
            PROTOCOL,
        ),
    ];
    // CONNECTs: closed without CONNACK, counted as a bad first packet.
    for (name, props) in [
        (
            "v5 CONNECT with a property twice",
            cat(&[&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]]),
        ),
        ("v5 CONNECT with a property of PUBLISH", vec![3, 0x23, 0, 1]),
        ("v5 CONNECT with Receive Maximum 0", vec![3, 0x21, 0, 0]),
        (
            "v5 CONNECT with Maximum Packet Size 0",
            vec![5, 0x27, 0, 0, 0, 0],
        ),
        (
            "v5 CONNECT with Request Problem Information 2",
            vec![2, 0x17, 2],
        ),
        (
            "v5 CONNECT with Authentication Data and no method",
            cat(&[&[4, 0x16], &s(b"d")]),
        ),
        (
            "v5 CONNECT property length not a Variable Byte Integer",
            vec![0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
    ] {
        list.push(case(
            name,
            Send::First(connect_v5_raw(b"bad-v5", &props, None)),
            Expect::Close(BAD_FIRST_PACKET),
        ));
    }
    list.push(case(
        "v5 CONNECT with a CONNECT property in the will",
        Send::First(packet(
            0x10,
            &cat(&[
                &s(b"MQTT"),
                &[5, 0x06, 0, 0, 0],
                &s(b"bad-v5-will"),
                &[5, 0x11, 0, 0, 0, 1],
                &s(b"w"),
                &s(b"x"),
            ]),
        )),
        Expect::Close(BAD_FIRST_PACKET),
    ));
    list
}
