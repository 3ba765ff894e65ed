//! Connecting and staying connected: CONNECT accepted or refused (generated and over-long client
//! ids, anonymous logins), a second CONNECT as a protocol error, keep-alive expiry, credentials
//! that expire.

use std::time::Duration;

use super::*;

#[test]
fn connect_is_acknowledged_without_session() {
    let mut c = Cluster::new(1);
    let outcome = c.connect("a", true);
    assert_eq!(outcome.code, ConnectReturnCode::Accepted);
    let ack = connack(&c.packets("a"));
    assert_eq!(ack.code, ConnectReturnCode::Accepted);
    assert!(!ack.session_present);
}

#[test]
fn empty_client_id_is_generated_with_clean_session_and_refused_without() {
    let mut c = Cluster::new(2);
    assert_eq!(c.connect("", true).code, ConnectReturnCode::Accepted);
    assert_eq!(
        c.connect("", false).code,
        ConnectReturnCode::IdentifierRejected
    );
    assert!(c.client("").closed);
}

#[test]
fn mqtt31_client_id_longer_than_23_is_rejected() {
    let mut c = Cluster::new(1);
    let mut connect = Cluster::connect_packet("abcdefghijklmnopqrstuvwxyz", true);
    connect.protocol = ProtocolLevel::V31;
    assert_eq!(
        c.connect_with("x", connect).code,
        ConnectReturnCode::IdentifierRejected
    );
}

#[test]
fn anonymous_refused_when_not_allowed() {
    let settings = Settings {
        allow_anonymous: false,
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(1, settings);
    assert_eq!(
        c.connect("anon", true).code,
        ConnectReturnCode::NotAuthorized
    );
    let mut connect = Cluster::connect_packet("user", true);
    connect.username = Some("bob".into());
    assert_eq!(
        c.connect_with("user", connect).code,
        ConnectReturnCode::Accepted
    );
}

#[test]
fn keep_alive_expires_after_one_and_a_half_periods() {
    let mut c = Cluster::new(1);
    let mut connect = Cluster::connect_packet("k", true);
    connect.keep_alive = 10;
    c.connect_with("k", connect);
    c.advance(Duration::from_secs(14));
    c.send("k", Packet::PingReq);
    assert!(matches!(c.packets("k").last(), Some(Packet::PingResp)));
    c.advance(Duration::from_secs(14));
    assert!(!c.client("k").closed, "activity restarted the clock");
    c.advance(Duration::from_millis(1100));
    assert!(c.client("k").closed);
    assert_eq!(c.shards[0].stats.keep_alive_timeouts, 1);
}

#[test]
fn second_connect_is_a_protocol_error_that_publishes_the_will() {
    let mut c = Cluster::new(1);
    c.connect("w", true);
    c.subscribe("w", &[("bye", QoS::AtMostOnce)]);
    c.packets("w");
    let connect = Cluster::with_will(
        Cluster::connect_packet("bad", true),
        "bye",
        "bad",
        QoS::AtMostOnce,
    );
    c.connect_with("bad", connect.clone());
    c.send("bad", Packet::Connect(Box::new(connect)));
    assert!(c.client("bad").closed);
    assert_eq!(c.payloads("w"), ["bad"]);
    assert_eq!(c.shards[0].stats.protocol_errors, 1);
}

#[test]
fn credentials_that_expire_close_the_connection_at_the_next_tick() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("bye", QoS::AtMostOnce)]);
    c.packets("watcher");
    let until = c.now + Duration::from_secs(10);
    let connect = Cluster::with_will(
        Cluster::connect_packet("token", true),
        "bye",
        "gone",
        QoS::AtMostOnce,
    );
    let outcome = c.connect_verdict("token", connect, AuthVerdict::AllowedUntil(until));
    assert_eq!(outcome.code, ConnectReturnCode::Accepted);
    c.connect("forever", true);
    c.advance(Duration::from_secs(9));
    assert!(!c.client("token").closed, "closed before its deadline");
    c.advance(Duration::from_secs(2));
    assert!(c.client("token").closed);
    assert!(!c.client("forever").closed);
    let expired: u64 = c.shards.iter().map(|s| s.stats.credentials_expired).sum();
    assert_eq!(expired, 1);
    // Like a lost connection: the will is published.
    assert_eq!(c.payloads("watcher"), ["gone"]);
    // A deadline that passed before the CONNECT was answered: refused.
    let late = Cluster::connect_packet("late", true);
    let outcome = c.connect_verdict("late", late, AuthVerdict::AllowedUntil(c.now));
    assert_eq!(outcome.code, ConnectReturnCode::NotAuthorized);
}
