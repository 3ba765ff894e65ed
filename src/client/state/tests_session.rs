//! Unit tests of what the session keeps across connections (re-sending after a reconnect,
//! restoring subscriptions, the reconnect back-off) and of how it ends (`disconnect`). They use the
//! harness from `tests.rs` rather than a harness of their own.

use super::tests::{filter, message, options, sub, topic, Harness};
use super::*;

// -- reconnecting ----------------------------------------------------------------------------

#[test]
fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let mut h = Harness::connected(false);
    h.publish(message("a", b"1", QoS::AtLeastOnce), 1);
    h.publish(message("a", b"2", QoS::ExactlyOnce), 2);
    h.publish(message("a", b"3", QoS::ExactlyOnce), 3);
    h.sent();
    h.recv(Packet::PubRec(PubRec { packet_id: 3 })).unwrap();
    h.sent();
    h.state.handle_transport_down();
    // Published while offline: queued, sent after the resends, without DUP.
    h.publish(message("a", b"4", QoS::AtLeastOnce), 4);
    h.publish(message("a", b"5", QoS::AtMostOnce), 5);
    assert!(h.events().is_empty());
    h.connect(true);
    let sent = h.sent();
    assert_eq!(
        sent,
        vec![
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic("a"),
                packet_id: Some(1),
                payload: Bytes::from_static(b"1"),
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: topic("a"),
                packet_id: Some(2),
                payload: Bytes::from_static(b"2"),
            }),
            Packet::PubRel(PubRel { packet_id: 3 }),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic("a"),
                packet_id: Some(4),
                payload: Bytes::from_static(b"4"),
            }),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("a"),
                packet_id: None,
                payload: Bytes::from_static(b"5"),
            }),
        ]
    );
    assert_eq!(h.events(), vec![Event::Published(5)]);
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    h.recv(Packet::PubRec(PubRec { packet_id: 2 })).unwrap();
    h.recv(Packet::PubComp(PubComp { packet_id: 3 })).unwrap();
    assert_eq!(h.events(), vec![Event::Published(1), Event::Published(3)]);
}

#[test]
fn subscriptions_are_restored_when_the_broker_has_no_session() {
    let mut h = Harness::connected(true);
    let id = sub(
        &mut h,
        &[("a/+", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)],
        1,
    );
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: vec![
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Success(QoS::AtMostOnce),
        ],
    }))
    .unwrap();
    h.events();
    h.state.handle_transport_down();
    h.connect(false);
    let (id, filters) = match h.sent().as_slice() {
        [Packet::Subscribe(s)] => (s.packet_id, s.filters.clone()),
        other => panic!("expected one SUBSCRIBE, got {other:?}"),
    };
    assert_eq!(
        filters,
        vec![
            SubscribeFilter {
                filter: filter("a/+"),
                qos: QoS::AtLeastOnce
            },
            SubscribeFilter {
                filter: filter("b"),
                qos: QoS::AtMostOnce
            },
        ]
    );
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: vec![
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Failure,
        ],
    }))
    .unwrap();
    assert_eq!(
        h.events(),
        vec![Event::Restored(vec![
            (
                filter("a/+"),
                SubscribeReturnCode::Success(QoS::AtLeastOnce)
            ),
            (filter("b"), SubscribeReturnCode::Failure),
        ])]
    );
    assert_eq!(
        h.state.subscriptions(),
        &[(filter("a/+"), QoS::AtLeastOnce)]
    );
}

#[test]
fn a_resumed_session_keeps_its_subscriptions_without_resubscribing() {
    let mut h = Harness::connected(false);
    let id = sub(&mut h, &[("a", QoS::AtLeastOnce)], 1);
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
    }))
    .unwrap();
    h.events();
    h.state.handle_transport_down();
    h.connect(true);
    assert!(h.sent().is_empty());
}

#[test]
fn unanswered_subscribe_and_unsubscribe_are_resent_after_reconnect() {
    let mut h = Harness::connected(false);
    let id = sub(&mut h, &[("a", QoS::AtLeastOnce)], 1);
    h.state.unsubscribe(vec![filter("z")], 2, h.now).unwrap();
    h.sent();
    h.state.handle_transport_down();
    h.connect(true);
    let sent = h.sent();
    assert!(matches!(&sent[0], Packet::Subscribe(s) if s.packet_id == id));
    assert!(matches!(&sent[1], Packet::Unsubscribe(_)));
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
    }))
    .unwrap();
    assert_eq!(
        h.events(),
        vec![Event::Subscribed(
            1,
            vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)]
        )]
    );
}

#[test]
fn packets_after_the_transport_went_down_are_ignored() {
    let mut h = Harness::connected(true);
    h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
    h.sent();
    h.state.handle_transport_down();
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    assert!(h.events().is_empty());
    assert_eq!(h.state.poll_timeout(), None);
}

#[test]
fn reconnect_delay_doubles_up_to_the_cap() {
    let max = Duration::from_secs(10);
    let delays: Vec<u64> = (1..=6).map(|a| reconnect_delay(a, max).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
    assert_eq!(reconnect_delay(1000, max), max);
    assert_eq!(
        reconnect_delay(1, Duration::from_millis(200)),
        Duration::from_millis(200)
    );
}

// -- ending ----------------------------------------------------------------------------------

#[test]
fn disconnect_returns_every_waiter_and_sends_disconnect_last() {
    let mut h = Harness::connected(true);
    h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
    h.publish(message("a", b"y", QoS::AtLeastOnce), 2);
    h.sent();
    sub(&mut h, &[("s", QoS::AtMostOnce)], 3);
    h.state.unsubscribe(vec![filter("u")], 4, h.now).unwrap();
    let mut waiters = h.state.disconnect(h.now);
    waiters.sort_unstable();
    assert_eq!(waiters, vec![1, 2, 3, 4]);
    let sent = h.sent();
    assert_eq!(sent.last(), Some(&Packet::Disconnect));
    assert_eq!(
        h.state
            .publish(message("a", b"z", QoS::AtMostOnce), 5, h.now),
        Err((5, Refusal::Closed))
    );
    assert!(!h.state.is_connected());
}

#[test]
fn disconnect_while_offline_sends_nothing() {
    let mut h = Harness::new(options(true));
    h.publish(message("a", b"x", QoS::AtMostOnce), 1);
    assert_eq!(h.state.disconnect(h.now), vec![1]);
    assert!(h.sent().is_empty());
    h.state.handle_transport_up(h.now);
    assert!(h.sent().is_empty(), "a closed state never connects again");
}
