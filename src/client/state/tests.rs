//! Unit tests of one connection, packet by packet on a simulated clock: connecting, publishing,
//! receiving, subscriptions, keep-alive. Also the `Harness` (a client driven by hand) and the small
//! builders that `tests_session.rs` shares. No I/O and no real waiting: time moves only through
//! `Harness::advance`.

use super::*;
use crate::protocol::TopicName;

// -- helpers: a client driven by hand, with a simulated clock ----------------------------------

pub(super) struct Harness {
    pub(super) state: ClientState<u32>,
    pub(super) now: Instant,
}

pub(super) fn options(clean_session: bool) -> SessionOptions {
    SessionOptions {
        client_id: "c1".into(),
        clean_session,
        keep_alive: 10,
        ping_delay: Duration::from_secs(1),
        connection_timeout: Duration::from_secs(5),
        will: None,
        username: None,
        password: None,
        max_inflight: 100,
        protocol: ProtocolLevel::V311,
        v5: V5Options::default(),
    }
}

pub(super) fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

pub(super) fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

pub(super) fn message(t: &str, payload: &'static [u8], qos: QoS) -> Message {
    Message {
        topic: topic(t),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: None,
    }
}

fn broker_publish(t: &str, qos: QoS, packet_id: Option<u16>, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: topic(t),
        packet_id,
        payload: Bytes::from_static(b"m"),
    })
}

impl Harness {
    pub(super) fn new(options: SessionOptions) -> Self {
        Harness {
            state: ClientState::new(options),
            now: Instant::now(),
        }
    }

    /// Transport up, CONNECT out, CONNACK in.
    pub(super) fn connected(clean_session: bool) -> Self {
        let mut h = Harness::new(options(clean_session));
        h.connect(false);
        h
    }

    pub(super) fn connect(&mut self, session_present: bool) {
        self.state.handle_transport_up(self.now);
        assert!(matches!(self.sent().as_slice(), [Packet::Connect(_)]));
        self.recv(Packet::ConnAck(ConnAck {
            session_present,
            code: ConnectReturnCode::Accepted,
        }))
        .unwrap();
        assert_eq!(
            self.state.poll_event(),
            Some(Event::Connected { session_present })
        );
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub(super) fn recv(&mut self, packet: Packet) -> Result<(), ConnectionError> {
        self.state.handle_packet(packet, self.now)
    }

    pub(super) fn sent(&mut self) -> Vec<Packet> {
        std::iter::from_fn(|| self.state.poll_transmit()).collect()
    }

    pub(super) fn events(&mut self) -> Vec<Event<u32>> {
        std::iter::from_fn(|| self.state.poll_event()).collect()
    }

    pub(super) fn publish(&mut self, m: Message, waiter: u32) {
        self.state.publish(m, waiter, self.now).unwrap();
    }
}

fn publish_ids(packets: &[Packet]) -> Vec<(Option<u16>, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id, p.dup)),
            _ => None,
        })
        .collect()
}

// -- connecting ------------------------------------------------------------------------------

#[test]
fn connect_packet_carries_the_session_options() {
    let mut opts = options(false);
    opts.username = Some("u".into());
    opts.password = Some(Bytes::from_static(b"p"));
    opts.will = Some(LastWill {
        topic: topic("will/t"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: None,
    });
    let mut h = Harness::new(opts.clone());
    h.state.handle_transport_up(h.now);
    match h.sent().as_slice() {
        [Packet::Connect(c)] => {
            assert_eq!(c.protocol, ProtocolLevel::V311);
            assert_eq!(c.client_id, "c1");
            assert!(!c.clean_session);
            assert_eq!(c.keep_alive, 10);
            assert_eq!(c.will, opts.will);
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
        }
        other => panic!("expected CONNECT, got {other:?}"),
    }
    assert!(!h.state.is_connected());
}

#[test]
fn requests_before_connack_wait_for_it() {
    let mut h = Harness::new(options(true));
    h.state.handle_transport_up(h.now);
    h.sent();
    h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
    h.state
        .subscribe(
            vec![SubscribeFilter {
                filter: filter("s/#"),
                qos: QoS::AtMostOnce,
            }],
            2,
            h.now,
        )
        .unwrap();
    assert!(
        h.sent().is_empty(),
        "nothing may follow CONNECT before CONNACK"
    );
    h.recv(Packet::ConnAck(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    }))
    .unwrap();
    let sent = h.sent();
    assert!(matches!(sent[0], Packet::Subscribe(_)));
    assert_eq!(publish_ids(&sent), vec![(Some(2), false)]);
}

#[test]
fn refused_connack_names_the_reason() {
    let mut h = Harness::new(options(true));
    h.state.handle_transport_up(h.now);
    let err = h
        .recv(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::NotAuthorized,
        }))
        .unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Refused(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(err.to_string(), "connection refused: not authorized");
    assert_eq!(
        refusal_reason(ConnectReturnCode::BadUserNameOrPassword),
        "bad user name or password"
    );
}

#[test]
fn missing_connack_times_out() {
    let mut h = Harness::new(options(true));
    h.state.handle_transport_up(h.now);
    assert_eq!(h.state.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(4));
    assert_eq!(h.state.handle_timeout(h.now), Ok(()));
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.state.handle_timeout(h.now),
        Err(ConnectionError::ConnAckTimeout(Duration::from_secs(5)))
    );
}

#[test]
fn packets_other_than_connack_first_are_violations() {
    let mut h = Harness::new(options(true));
    h.state.handle_transport_up(h.now);
    assert!(matches!(
        h.recv(Packet::PingResp),
        Err(ConnectionError::Violation(_))
    ));
    let mut h = Harness::connected(true);
    for bad in [Packet::PingReq, Packet::Disconnect] {
        assert!(matches!(h.recv(bad), Err(ConnectionError::Violation(_))));
    }
    let second = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    });
    assert!(matches!(h.recv(second), Err(ConnectionError::Violation(_))));
}

// -- publishing ------------------------------------------------------------------------------

#[test]
fn qos0_publish_completes_when_written() {
    let mut h = Harness::connected(true);
    h.publish(message("a/b", b"hi", QoS::AtMostOnce), 7);
    match h.sent().as_slice() {
        [Packet::Publish(p)] => {
            assert_eq!(p.packet_id, None);
            assert_eq!(p.topic.as_str(), "a/b");
            assert_eq!(&p.payload[..], b"hi");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.events(), vec![Event::Published(7)]);
    assert_eq!(h.state.inflight_len(), 0);
}

#[test]
fn qos1_publish_completes_on_puback() {
    let mut h = Harness::connected(true);
    h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
    assert_eq!(publish_ids(&h.sent()), vec![(Some(1), false)]);
    assert!(h.events().is_empty());
    // An ack for someone else changes nothing.
    h.recv(Packet::PubAck(PubAck { packet_id: 9 })).unwrap();
    assert!(h.events().is_empty());
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    assert_eq!(h.events(), vec![Event::Published(1)]);
    assert_eq!(h.state.inflight_len(), 0);
}

#[test]
fn qos2_publish_goes_through_pubrec_pubrel_pubcomp() {
    let mut h = Harness::connected(true);
    h.publish(message("a", b"x", QoS::ExactlyOnce), 1);
    assert_eq!(publish_ids(&h.sent()), vec![(Some(1), false)]);
    // PUBACK is not the right answer for QoS 2.
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    assert!(h.events().is_empty());
    h.recv(Packet::PubRec(PubRec { packet_id: 1 })).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubRel(PubRel { packet_id: 1 })]);
    // A repeated PUBREC is answered again.
    h.recv(Packet::PubRec(PubRec { packet_id: 1 })).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubRel(PubRel { packet_id: 1 })]);
    assert!(h.events().is_empty());
    h.recv(Packet::PubComp(PubComp { packet_id: 1 })).unwrap();
    assert_eq!(h.events(), vec![Event::Published(1)]);
}

#[test]
fn many_publishes_in_flight_complete_in_any_order() {
    let mut h = Harness::connected(true);
    for w in 0..5 {
        h.publish(message("a", b"x", QoS::AtLeastOnce), w);
    }
    let ids: Vec<_> = publish_ids(&h.sent())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
    for id in [3, 1, 5, 2, 4] {
        h.recv(Packet::PubAck(PubAck { packet_id: id })).unwrap();
    }
    assert_eq!(h.events(), Vec::from([2, 0, 4, 1, 3].map(Event::Published)));
}

#[test]
fn publishes_beyond_max_inflight_wait_their_turn() {
    let mut opts = options(true);
    opts.max_inflight = 2;
    let mut h = Harness::new(opts);
    h.connect(false);
    for w in 0..4 {
        h.publish(message("a", b"x", QoS::AtLeastOnce), w);
    }
    // A QoS 0 behind them keeps its place in line.
    h.publish(message("a", b"0", QoS::AtMostOnce), 9);
    assert_eq!(publish_ids(&h.sent()).len(), 2);
    assert_eq!((h.state.inflight_len(), h.state.queued_len()), (2, 3));
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    assert_eq!(publish_ids(&h.sent()), vec![(Some(3), false)]);
    h.recv(Packet::PubAck(PubAck { packet_id: 2 })).unwrap();
    assert_eq!(
        publish_ids(&h.sent()),
        vec![(Some(4), false), (None, false)]
    );
    assert_eq!(
        h.events(),
        vec![
            Event::Published(0),
            Event::Published(1),
            Event::Published(9)
        ]
    );
}

#[test]
fn packet_ids_skip_those_in_use_and_wrap_past_65535() {
    let mut h = Harness::connected(true);
    h.state.next_packet_id = 65_535;
    h.publish(message("a", b"x", QoS::AtLeastOnce), 0); // gets 65535
    h.publish(message("a", b"x", QoS::AtLeastOnce), 1); // wraps to 1
    h.publish(message("a", b"x", QoS::AtLeastOnce), 2); // 2
    h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
    h.state.next_packet_id = 65_535; // in use: skipped, then 1 is free again
    h.publish(message("a", b"x", QoS::AtLeastOnce), 3);
    let ids: Vec<_> = publish_ids(&h.sent())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![Some(65_535), Some(1), Some(2), Some(1)]);
}

// -- receiving -------------------------------------------------------------------------------

#[test]
fn incoming_qos0_and_qos1_are_delivered_and_qos1_acknowledged() {
    let mut h = Harness::connected(true);
    h.recv(broker_publish("t", QoS::AtMostOnce, None, false))
        .unwrap();
    h.recv(broker_publish("t", QoS::AtLeastOnce, Some(4), false))
        .unwrap();
    assert_eq!(h.sent(), vec![Packet::PubAck(PubAck { packet_id: 4 })]);
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[1], Event::Message(m) if m.message.qos == QoS::AtLeastOnce));
}

#[test]
fn incoming_qos2_is_delivered_once_even_when_resent() {
    let mut h = Harness::connected(false);
    h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), false))
        .unwrap();
    assert_eq!(h.sent(), vec![Packet::PubRec(PubRec { packet_id: 7 })]);
    assert!(matches!(h.events().as_slice(), [Event::Message(_)]));
    // Connection lost before PUBREL; the broker re-sends with DUP after the reconnect.
    h.state.handle_transport_down();
    h.connect(true);
    h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), true))
        .unwrap();
    assert_eq!(h.sent(), vec![Packet::PubRec(PubRec { packet_id: 7 })]);
    h.recv(Packet::PubRel(PubRel { packet_id: 7 })).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubComp(PubComp { packet_id: 7 })]);
    assert!(
        h.events().is_empty(),
        "the re-sent PUBLISH is not delivered again"
    );
    // After PUBREL the id may carry a new message.
    h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), false))
        .unwrap();
    assert_eq!(h.events().len(), 1);
}

// -- subscriptions ---------------------------------------------------------------------------

pub(super) fn sub(h: &mut Harness, filters: &[(&str, QoS)], waiter: u32) -> u16 {
    let filters = filters
        .iter()
        .map(|(f, q)| SubscribeFilter {
            filter: filter(f),
            qos: *q,
        })
        .collect();
    h.state.subscribe(filters, waiter, h.now).unwrap();
    match h.sent().as_slice() {
        [Packet::Subscribe(s)] => s.packet_id,
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
}

#[test]
fn subscribe_returns_the_granted_codes_and_records_subscriptions() {
    let mut h = Harness::connected(true);
    let id = sub(
        &mut h,
        &[("a/#", QoS::ExactlyOnce), ("b", QoS::AtMostOnce)],
        3,
    );
    let codes = vec![
        SubscribeReturnCode::Success(QoS::AtLeastOnce),
        SubscribeReturnCode::Failure,
    ];
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: codes.clone(),
    }))
    .unwrap();
    assert_eq!(h.events(), vec![Event::Subscribed(3, codes)]);
    assert_eq!(
        h.state.subscriptions(),
        &[(filter("a/#"), QoS::AtLeastOnce)]
    );
}

#[test]
fn suback_with_the_wrong_number_of_codes_is_a_violation() {
    let mut h = Harness::connected(true);
    let id = sub(&mut h, &[("a", QoS::AtMostOnce)], 1);
    let err = h
        .recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![],
        }))
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Violation(_)));
}

#[test]
fn unsubscribe_completes_on_unsuback_and_forgets_the_filter() {
    let mut h = Harness::connected(true);
    let id = sub(&mut h, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)], 1);
    h.recv(Packet::SubAck(SubAck {
        packet_id: id,
        return_codes: vec![SubscribeReturnCode::Success(QoS::AtMostOnce); 2],
    }))
    .unwrap();
    h.events();
    h.state.unsubscribe(vec![filter("a")], 2, h.now).unwrap();
    let id = match h.sent().as_slice() {
        [Packet::Unsubscribe(u)] => u.packet_id,
        other => panic!("{other:?}"),
    };
    h.recv(Packet::UnsubAck(UnsubAck { packet_id: id }))
        .unwrap();
    assert_eq!(h.events(), vec![Event::Unsubscribed(2)]);
    assert_eq!(h.state.subscriptions(), &[(filter("b"), QoS::AtMostOnce)]);
}

// -- keep-alive ------------------------------------------------------------------------------

#[test]
fn pingreq_goes_out_ping_delay_before_the_keep_alive_ends() {
    let mut h = Harness::connected(true);
    let start = h.now;
    assert_eq!(h.state.poll_timeout(), Some(start + Duration::from_secs(9)));
    // Sending something pushes the ping back.
    h.advance(Duration::from_secs(5));
    h.publish(message("a", b"x", QoS::AtMostOnce), 0);
    h.sent();
    assert_eq!(
        h.state.poll_timeout(),
        Some(start + Duration::from_secs(14))
    );
    h.advance(Duration::from_secs(9));
    h.state.handle_timeout(h.now).unwrap();
    assert_eq!(h.sent(), vec![Packet::PingReq]);
    // Now waiting for PINGRESP, for at most keep_alive.
    assert_eq!(
        h.state.poll_timeout(),
        Some(h.now + Duration::from_secs(10))
    );
    h.recv(Packet::PingResp).unwrap();
    assert_eq!(h.state.poll_timeout(), Some(h.now + Duration::from_secs(9)));
}

#[test]
fn unanswered_pingreq_closes_the_connection() {
    let mut h = Harness::connected(true);
    h.advance(Duration::from_secs(9));
    h.state.handle_timeout(h.now).unwrap();
    assert_eq!(h.sent(), vec![Packet::PingReq]);
    h.advance(Duration::from_secs(9));
    assert_eq!(h.state.handle_timeout(h.now), Ok(()));
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.state.handle_timeout(h.now),
        Err(ConnectionError::PingTimeout(Duration::from_secs(10)))
    );
}

#[test]
fn keep_alive_zero_never_pings() {
    let mut opts = options(true);
    opts.keep_alive = 0;
    let mut h = Harness::new(opts);
    h.connect(false);
    assert_eq!(h.state.poll_timeout(), None);
    h.advance(Duration::from_secs(3600));
    h.state.handle_timeout(h.now).unwrap();
    assert!(h.sent().is_empty());
}
