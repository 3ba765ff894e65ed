//! MQTT 5 enhanced authentication in the core (`handlers/auth.rs`), with a two-step method made
//! for the test: the exchange at CONNECT, its refusals and time limit, re-authentication.

use std::sync::Arc;

use super::mqtt5::{disconnect_reason, publish_v5, v5_connect};
use super::*;
use crate::plugins::{AuthExchange, AuthMethod, AuthMethods, AuthStep, CorePlugins};
use crate::protocol::v5::{self, Properties, ReasonCode};

/// Asks "who?" for "hello", lets in "alice" for "alice-secret", refuses anything else (0x86).
struct Knock;

impl AuthMethod for Knock {
    fn name(&self) -> &str {
        "KNOCK"
    }

    fn start(&self) -> Box<dyn AuthExchange> {
        Box::new(KnockExchange { asked: false })
    }
}

struct KnockExchange {
    asked: bool,
}

impl AuthExchange for KnockExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match (self.asked, data) {
            (false, Some(b"hello")) => {
                self.asked = true;
                AuthStep::Continue(b"who?".to_vec())
            }
            (true, Some(b"alice-secret")) => AuthStep::Success {
                user: Some("alice".into()),
                data: Some(b"welcome".to_vec()),
            },
            _ => AuthStep::Failure(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }
}

fn cluster() -> Cluster {
    let methods = AuthMethods::new(vec![Arc::new(Knock)]);
    Cluster::with_settings(
        1,
        Settings {
            plugins: CorePlugins::default().with_methods(methods),
            allow_anonymous: false,
            connect_timeout: Duration::from_secs(5),
            ..Settings::default()
        },
    )
}

fn with_method(method: &str, data: Option<&'static [u8]>) -> Properties {
    Properties {
        authentication_method: Some(method.into()),
        authentication_data: data.map(Bytes::from_static),
        ..Properties::default()
    }
}

fn auth(reason: ReasonCode, method: &str, data: &'static [u8]) -> v5::Packet {
    v5::Packet::Auth(v5::Auth {
        reason,
        properties: with_method(method, Some(data)),
    })
}

/// The AUTH packets among `packets`: reason, method and data.
fn auths(packets: &[v5::Packet]) -> Vec<(ReasonCode, Option<String>, Option<Bytes>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Auth(a) => Some((
                a.reason,
                a.properties.authentication_method.clone(),
                a.properties.authentication_data.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn connack(packets: &[v5::Packet]) -> Option<&v5::ConnAck> {
    packets.iter().find_map(|p| match p {
        v5::Packet::ConnAck(ack) => Some(ack),
        _ => None,
    })
}

/// Sends "alice"'s CONNECT with method KNOCK (the plugins' verdict would deny: not asked); what
/// it received.
fn knock(c: &mut Cluster) -> Vec<v5::Packet> {
    c.open_v5(
        "alice",
        v5_connect("alice", 0, with_method("KNOCK", Some(b"hello"))),
        AuthVerdict::Denied,
    )
}

/// "alice" got a CONNACK refusing with `reason`, and was closed.
fn refused_and_closed(c: &mut Cluster, reason: ReasonCode) {
    let packets = c.packets_v5("alice");
    assert_eq!(connack(&packets).map(|a| a.reason), Some(reason));
    assert!(c.client("alice").closed);
}

/// Connects "alice" through the whole exchange; what the CONNACK said.
fn knock_in(c: &mut Cluster) -> v5::ConnAck {
    let first = knock(c);
    assert_eq!(
        auths(&first),
        vec![(
            ReasonCode::CONTINUE_AUTHENTICATION,
            Some("KNOCK".into()),
            Some(Bytes::from_static(b"who?"))
        )]
    );
    assert!(
        connack(&first).is_none(),
        "no CONNACK before the exchange ends"
    );
    c.send_v5(
        "alice",
        auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "KNOCK",
            b"alice-secret",
        ),
    );
    let packets = c.packets_v5("alice");
    connack(&packets).expect("CONNACK").clone()
}

#[test]
fn a_method_nobody_offers_is_refused_with_0x8c() {
    let mut c = cluster();
    let packets = c.open_v5(
        "bob",
        v5_connect("bob", 0, with_method("SCRAM-SHA-1", Some(b"n,,n=bob,r=x"))),
        AuthVerdict::Allowed,
    );
    assert_eq!(
        connack(&packets).map(|a| a.reason),
        Some(ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
    assert!(c.client("bob").closed);
}

#[test]
fn the_exchange_ends_in_a_connack_with_the_method_and_its_data() {
    let mut c = cluster();
    let ack = knock_in(&mut c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some("KNOCK")
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"welcome"[..])
    );
    // In, as the user the method authenticated (allow-anonymous is off).
    let (_, user) = c.shards[0]
        .client_identity(c.client("alice").conn)
        .expect("connected");
    assert_eq!(user.as_deref(), Some("alice"));
    c.send_v5("alice", publish_v5("t", b"x", QoS::AtMostOnce, false));
    assert!(!c.client("alice").closed);
}

#[test]
fn a_failed_exchange_is_refused_and_closed() {
    let mut c = cluster();
    knock(&mut c);
    c.send_v5(
        "alice",
        auth(ReasonCode::CONTINUE_AUTHENTICATION, "KNOCK", b"guess"),
    );
    refused_and_closed(&mut c, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(c.shards[0]
        .client_identity(c.client("alice").conn)
        .is_none());
}

#[test]
fn anything_but_auth_during_the_exchange_is_a_protocol_error() {
    for intruder in [
        publish_v5("t", b"x", QoS::AtMostOnce, false),
        auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "OTHER",
            b"alice-secret",
        ),
        auth(ReasonCode::RE_AUTHENTICATE, "KNOCK", b"alice-secret"),
    ] {
        let mut c = cluster();
        knock(&mut c);
        c.send_v5("alice", intruder);
        refused_and_closed(&mut c, ReasonCode::PROTOCOL_ERROR);
        assert_eq!(c.shards[0].stats.protocol_errors, 1);
    }
}

#[test]
fn malformed_bytes_during_the_exchange_are_refused_with_0x81() {
    let mut c = cluster();
    knock(&mut c);
    // AUTH 0x18 whose properties claim 9 bytes and hold 1.
    let conn = c.client("alice").conn;
    let mut buf = BytesMut::from(&[0xF0, 0x03, 0x18, 0x09, 0x15][..]);
    c.shards[0].handle_bytes(conn, &mut buf, c.now);
    c.run();
    refused_and_closed(&mut c, ReasonCode::MALFORMED_PACKET);
    assert_eq!(c.shards[0].stats.protocol_errors, 1);
}

#[test]
fn an_exchange_must_end_within_connect_timeout() {
    let mut c = cluster();
    knock(&mut c);
    c.advance(Duration::from_secs(4));
    assert!(!c.client("alice").closed);
    c.advance(Duration::from_secs(2));
    assert!(c.client("alice").closed);
    assert!(c.packets_v5("alice").is_empty(), "closed without a word");
}

#[test]
fn re_authentication_runs_the_same_exchange_on_the_live_connection() {
    let mut c = cluster();
    knock_in(&mut c);
    c.send_v5(
        "alice",
        auth(ReasonCode::RE_AUTHENTICATE, "KNOCK", b"hello"),
    );
    assert_eq!(
        auths(&c.packets_v5("alice")),
        vec![(
            ReasonCode::CONTINUE_AUTHENTICATION,
            Some("KNOCK".into()),
            Some(Bytes::from_static(b"who?"))
        )]
    );
    // Other packets flow meanwhile.
    c.send_v5("alice", publish_v5("t", b"x", QoS::AtMostOnce, false));
    c.send_v5(
        "alice",
        auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "KNOCK",
            b"alice-secret",
        ),
    );
    assert_eq!(
        auths(&c.packets_v5("alice")),
        vec![(
            ReasonCode::SUCCESS,
            Some("KNOCK".into()),
            Some(Bytes::from_static(b"welcome"))
        )]
    );
    assert!(!c.client("alice").closed);
    // And again, failing this time: DISCONNECT 0x87 (0x86 is no DISCONNECT reason code).
    c.send_v5(
        "alice",
        auth(ReasonCode::RE_AUTHENTICATE, "KNOCK", b"hello"),
    );
    c.send_v5(
        "alice",
        auth(ReasonCode::CONTINUE_AUTHENTICATION, "KNOCK", b"wrong"),
    );
    assert_eq!(
        disconnect_reason(&c.packets_v5("alice")),
        Some(ReasonCode::NOT_AUTHORIZED)
    );
    assert!(c.client("alice").closed);
}

#[test]
fn re_authentication_with_another_method_or_out_of_turn_is_a_protocol_error() {
    for wrong in [
        auth(ReasonCode::RE_AUTHENTICATE, "OTHER", b"hello"),
        auth(ReasonCode::CONTINUE_AUTHENTICATION, "KNOCK", b"hello"),
        auth(ReasonCode::SUCCESS, "KNOCK", b"hello"),
    ] {
        let mut c = cluster();
        knock_in(&mut c);
        c.send_v5("alice", wrong.clone());
        assert_eq!(
            disconnect_reason(&c.packets_v5("alice")),
            Some(ReasonCode::PROTOCOL_ERROR),
            "{wrong:?}"
        );
        assert!(c.client("alice").closed);
    }
}

#[test]
fn auth_from_a_client_that_used_no_method_is_a_protocol_error() {
    let mut c = cluster();
    c.connect_v5(
        "carol",
        v5::Connect {
            username: Some("carol".into()),
            ..v5_connect("carol", 0, Properties::default())
        },
        AuthVerdict::Allowed,
    );
    c.send_v5(
        "carol",
        auth(ReasonCode::RE_AUTHENTICATE, "KNOCK", b"hello"),
    );
    assert_eq!(
        disconnect_reason(&c.packets_v5("carol")),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}
