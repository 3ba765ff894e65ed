//! Unit tests of the MQTT 5 layer (`v5_layer.rs`), packet by packet on a simulated clock: CONNECT
//! and CONNACK with properties, refusals with reason codes, the server's limits, topic aliases both
//! ways, acks with reason codes, DISCONNECT both ways. The `V5` harness mirrors `tests.rs`'s.

use super::tests::{filter, message, options};
use super::*;

struct V5 {
    state: ClientState<u32>,
    now: Instant,
}

fn v5_options() -> SessionOptions {
    let mut o = options(true);
    o.protocol = ProtocolLevel::V5;
    o
}

fn ack(packet_id: u16, reason: ReasonCode) -> v5::Ack {
    v5::Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    }
}

fn connack(properties: Properties) -> v5::Packet {
    v5::Packet::ConnAck(v5::ConnAck {
        session_present: false,
        reason: ReasonCode::SUCCESS,
        properties,
    })
}

impl V5 {
    fn new(options: SessionOptions) -> Self {
        V5 {
            state: ClientState::new(options),
            now: Instant::now(),
        }
    }

    /// Transport up, CONNECT out, this CONNACK in; returns the CONNECT.
    fn connect(&mut self, server: Properties) -> v5::Connect {
        self.state.handle_transport_up(self.now);
        let sent = self.sent();
        let [v5::Packet::Connect(connect)] = sent.as_slice() else {
            panic!("expected CONNECT, got {sent:?}");
        };
        let connect = (**connect).clone();
        self.recv(connack(server)).unwrap();
        assert_eq!(
            self.state.poll_event(),
            Some(Event::Connected {
                session_present: false
            })
        );
        connect
    }

    fn recv(&mut self, packet: v5::Packet) -> Result<(), ConnectionError> {
        self.state.handle_packet_v5(packet, self.now)
    }

    fn sent(&mut self) -> Vec<v5::Packet> {
        assert_eq!(
            self.state.poll_transmit(),
            None,
            "an MQTT 3 packet in a v5 session"
        );
        std::iter::from_fn(|| self.state.poll_transmit_v5()).collect()
    }

    fn events(&mut self) -> Vec<Event<u32>> {
        std::iter::from_fn(|| self.state.poll_event()).collect()
    }

    fn publish(&mut self, m: Message, properties: Option<Properties>, waiter: u32) {
        self.state
            .publish_with(m, properties.map(Box::new), waiter, self.now)
            .unwrap();
    }
}

fn publishes(packets: &[v5::Packet]) -> Vec<&v5::Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_carries_connect_and_will_properties() {
    let mut o = v5_options();
    o.v5.connect_properties.session_expiry_interval = Some(60);
    o.v5.connect_properties.user_properties = vec![("k".into(), "v".into())];
    o.will = Some(message("will/t", b"bye", QoS::AtLeastOnce));
    o.v5.will_properties.will_delay_interval = Some(5);
    let mut c = V5::new(o);
    let connect = c.connect(Properties::default());
    assert!(connect.clean_start);
    assert_eq!(connect.properties.session_expiry_interval, Some(60));
    assert_eq!(
        connect.properties.user_properties,
        vec![("k".into(), "v".into())]
    );
    let will = connect.will.unwrap();
    assert_eq!(will.message.topic.as_str(), "will/t");
    assert_eq!(will.properties.will_delay_interval, Some(5));
}

#[test]
fn a_refused_connack_reports_reason_code_and_string() {
    let mut c = V5::new(v5_options());
    c.state.handle_transport_up(c.now);
    c.sent();
    let refused = c.recv(v5::Packet::ConnAck(v5::ConnAck {
        session_present: false,
        reason: ReasonCode::BANNED,
        properties: Properties {
            reason_string: Some("go away".into()),
            ..Properties::default()
        },
    }));
    assert_eq!(
        refused,
        Err(ConnectionError::RefusedV5 {
            code: ReasonCode::BANNED,
            reason_string: Some("go away".into())
        })
    );
    assert!(!c.state.is_connected());
}

#[test]
fn connack_assigns_the_client_id_and_the_keep_alive() {
    let mut o = v5_options();
    o.client_id = String::new();
    let mut c = V5::new(o);
    c.connect(Properties {
        assigned_client_identifier: Some("auto-1".into()),
        server_keep_alive: Some(3),
        ..Properties::default()
    });
    assert_eq!(c.state.options().client_id, "auto-1");
    assert_eq!(c.state.keep_alive(), 3);
    assert_eq!(
        c.state
            .connack_properties()
            .assigned_client_identifier
            .as_deref(),
        Some("auto-1")
    );
    // PINGREQ after 3 s less the 1 s ping delay, not after our 10 s.
    assert_eq!(c.state.poll_timeout(), Some(c.now + Duration::from_secs(2)));
    // The next CONNECT resumes with the assigned id.
    c.state.handle_transport_down();
    c.state.handle_transport_up(c.now);
    let sent = c.sent();
    let [v5::Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connect.client_id, "auto-1");
    assert_eq!(
        c.state.keep_alive(),
        10,
        "the server's keep-alive is per connection"
    );
}

#[test]
fn receive_maximum_caps_messages_in_flight() {
    let mut c = V5::new(v5_options());
    c.connect(Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    });
    for waiter in 1..=3 {
        c.publish(message("t", b"m", QoS::AtLeastOnce), None, waiter);
    }
    let sent = c.sent();
    assert_eq!(publishes(&sent).len(), 2);
    assert_eq!((c.state.inflight_len(), c.state.queued_len()), (2, 1));
    let first = publishes(&sent)[0].packet_id.unwrap();
    c.recv(v5::Packet::PubAck(ack(first, ReasonCode::SUCCESS)))
        .unwrap();
    assert_eq!(
        publishes(&c.sent()).len(),
        1,
        "a slot freed, the third goes out"
    );
    assert_eq!(c.events(), vec![Event::Published(1)]);
}

#[test]
fn server_limits_fail_the_publish_not_the_connection() {
    let mut c = V5::new(v5_options());
    c.connect(Properties {
        maximum_packet_size: Some(64),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        ..Properties::default()
    });
    c.publish(message("t", &[b'x'; 100], QoS::AtMostOnce), None, 1);
    c.publish(message("t", b"m", QoS::ExactlyOnce), None, 2);
    let mut retained = message("t", b"m", QoS::AtMostOnce);
    retained.retain = true;
    c.publish(retained, None, 3);
    c.publish(message("t", b"small", QoS::AtMostOnce), None, 4);
    let events = c.events();
    let failures: Vec<(u32, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::PublishFailed(w, PublishFailure::NotAllowed(why)) => Some((*w, why.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 3, "{events:?}");
    assert!(
        failures[0].1.contains("Maximum Packet Size 64"),
        "{failures:?}"
    );
    assert!(failures[1].1.contains("Maximum QoS 1"), "{failures:?}");
    assert!(failures[2].1.contains("retained"), "{failures:?}");
    assert!(events.contains(&Event::Published(4)));
    assert_eq!(publishes(&c.sent()).len(), 1);
    assert!(c.state.is_connected());
}

#[test]
fn topic_aliases_replace_a_topic_already_sent() {
    let mut o = v5_options();
    o.v5.topic_aliases = true;
    let mut c = V5::new(o);
    c.connect(Properties {
        topic_alias_maximum: Some(1),
        ..Properties::default()
    });
    c.publish(message("a", b"1", QoS::AtMostOnce), None, 1);
    c.publish(message("a", b"2", QoS::AtMostOnce), None, 2);
    c.publish(message("b", b"3", QoS::AtMostOnce), None, 3);
    let sent = c.sent();
    let wire: Vec<(Option<&str>, Option<u16>)> = publishes(&sent)
        .iter()
        .map(|p| {
            (
                p.topic.as_ref().map(|t| t.as_str()),
                p.properties.topic_alias,
            )
        })
        .collect();
    // "b" finds no free alias (maximum 1) and goes out by name.
    assert_eq!(
        wire,
        vec![(Some("a"), Some(1)), (None, Some(1)), (Some("b"), None)]
    );
    c.events();
    // A new connection starts without aliases.
    c.state.handle_transport_down();
    c.connect(Properties::default());
    c.publish(message("a", b"4", QoS::AtMostOnce), None, 4);
    let sent = c.sent();
    assert_eq!(publishes(&sent)[0].topic.as_ref().unwrap().as_str(), "a");
    assert_eq!(publishes(&sent)[0].properties.topic_alias, None);
}

#[test]
fn without_the_option_no_alias_is_sent() {
    let mut c = V5::new(v5_options());
    c.connect(Properties {
        topic_alias_maximum: Some(10),
        ..Properties::default()
    });
    c.publish(message("a", b"1", QoS::AtMostOnce), None, 1);
    c.publish(message("a", b"2", QoS::AtMostOnce), None, 2);
    let sent = c.sent();
    assert!(publishes(&sent)
        .iter()
        .all(|p| p.properties.topic_alias.is_none() && p.topic.is_some()));
}

fn server_publish(
    topic: Option<&str>,
    alias: Option<u16>,
    qos: QoS,
    id: Option<u16>,
) -> v5::Packet {
    v5::Packet::Publish(v5::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.map(|t| TopicName::new(t).unwrap()),
        packet_id: id,
        properties: Properties {
            topic_alias: alias,
            user_properties: vec![("k".into(), "v".into())],
            message_expiry_interval: Some(30),
            ..Properties::default()
        },
        payload: Bytes::from_static(b"m"),
    })
}

#[test]
fn received_messages_keep_their_properties_and_resolve_aliases() {
    let mut o = v5_options();
    o.v5.connect_properties.topic_alias_maximum = Some(5);
    let mut c = V5::new(o);
    c.connect(Properties::default());
    c.recv(server_publish(
        Some("x/y"),
        Some(2),
        QoS::AtLeastOnce,
        Some(7),
    ))
    .unwrap();
    c.recv(server_publish(None, Some(2), QoS::AtMostOnce, None))
        .unwrap();
    let events = c.events();
    let deliveries: Vec<&Delivery> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        assert_eq!(d.message.topic.as_str(), "x/y");
        let p = d.properties.as_deref().unwrap();
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.message_expiry_interval, Some(30));
        assert_eq!(
            p.topic_alias, None,
            "the alias is the connection's, not the message's"
        );
    }
    assert_eq!(
        c.sent(),
        vec![v5::Packet::PubAck(ack(7, ReasonCode::SUCCESS))]
    );
}

#[test]
fn a_bad_topic_alias_closes_with_0x94() {
    let mut o = v5_options();
    o.v5.connect_properties.topic_alias_maximum = Some(5);
    for bad in [
        server_publish(None, Some(3), QoS::AtMostOnce, None),
        server_publish(Some("t"), Some(6), QoS::AtMostOnce, None),
    ] {
        let mut c = V5::new(o.clone());
        c.connect(Properties::default());
        assert!(matches!(c.recv(bad), Err(ConnectionError::Violation(_))));
        assert_eq!(
            c.sent(),
            vec![v5::Packet::Disconnect(v5::Disconnect {
                reason: ReasonCode::TOPIC_ALIAS_INVALID,
                properties: Properties::default()
            })]
        );
    }
    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    let auth = v5::Packet::Auth(v5::Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    });
    assert!(c.recv(auth).is_err());
    assert!(matches!(
        c.sent().as_slice(),
        [v5::Packet::Disconnect(v5::Disconnect {
            reason: ReasonCode::PROTOCOL_ERROR,
            ..
        })]
    ));
}

#[test]
fn failure_reason_codes_end_the_flow() {
    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    c.publish(message("t", b"1", QoS::AtLeastOnce), None, 1);
    c.publish(message("t", b"2", QoS::ExactlyOnce), None, 2);
    c.publish(message("t", b"3", QoS::ExactlyOnce), None, 3);
    let ids: Vec<u16> = publishes(&c.sent())
        .iter()
        .map(|p| p.packet_id.unwrap())
        .collect();
    c.recv(v5::Packet::PubAck(v5::Ack {
        properties: Properties {
            reason_string: Some("full".into()),
            ..Properties::default()
        },
        ..ack(ids[0], ReasonCode::QUOTA_EXCEEDED)
    }))
    .unwrap();
    c.recv(v5::Packet::PubRec(ack(ids[1], ReasonCode::NOT_AUTHORIZED)))
        .unwrap();
    // No matching subscribers is a success: the flow goes on with PUBREL.
    c.recv(v5::Packet::PubRec(ack(
        ids[2],
        ReasonCode::NO_MATCHING_SUBSCRIBERS,
    )))
    .unwrap();
    assert_eq!(
        c.sent(),
        vec![v5::Packet::PubRel(ack(ids[2], ReasonCode::SUCCESS))]
    );
    assert_eq!(
        c.events(),
        vec![
            Event::PublishFailed(
                1,
                PublishFailure::Refused {
                    code: ReasonCode::QUOTA_EXCEEDED,
                    reason_string: Some("full".into())
                }
            ),
            Event::PublishFailed(
                2,
                PublishFailure::Refused {
                    code: ReasonCode::NOT_AUTHORIZED,
                    reason_string: None
                }
            ),
        ]
    );
    assert_eq!(c.state.inflight_len(), 1);
}

#[test]
fn suback_reason_codes_become_return_codes() {
    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    let filters = vec![
        SubscribeFilter {
            filter: filter("a/#"),
            qos: QoS::ExactlyOnce,
        },
        SubscribeFilter {
            filter: filter("b"),
            qos: QoS::AtLeastOnce,
        },
    ];
    c.state.subscribe(filters, 9, c.now).unwrap();
    let sent = c.sent();
    let [v5::Packet::Subscribe(sub)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(sub.filters[0].qos, QoS::ExactlyOnce);
    assert!(!sub.filters[0].no_local, "No Local only when asked for");
    c.recv(v5::Packet::SubAck(v5::SubscriptionAck {
        packet_id: sub.packet_id,
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
    }))
    .unwrap();
    assert_eq!(
        c.events(),
        vec![Event::Subscribed(
            9,
            vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Failure
            ]
        )]
    );
    assert_eq!(
        c.state.subscriptions(),
        &[(filter("a/#"), QoS::AtLeastOnce)]
    );
}

#[test]
fn disconnect_both_ways() {
    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    let goodbye = Properties {
        session_expiry_interval: Some(0),
        ..Properties::default()
    };
    c.state
        .disconnect_with(ReasonCode::DISCONNECT_WITH_WILL, goodbye.clone(), c.now);
    assert_eq!(
        c.sent(),
        vec![v5::Packet::Disconnect(v5::Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            properties: goodbye
        })]
    );

    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    let from_server = c.recv(v5::Packet::Disconnect(v5::Disconnect {
        reason: ReasonCode::SESSION_TAKEN_OVER,
        properties: Properties::default(),
    }));
    assert_eq!(
        from_server,
        Err(ConnectionError::ServerDisconnect {
            code: ReasonCode::SESSION_TAKEN_OVER,
            reason_string: None
        })
    );
}

#[test]
fn properties_of_a_publish_go_out_and_survive_a_resend() {
    let mut c = V5::new(v5_options());
    c.connect(Properties::default());
    let properties = Properties {
        content_type: Some("text/plain".into()),
        ..Properties::default()
    };
    c.publish(message("t", b"m", QoS::AtLeastOnce), Some(properties), 1);
    let first = c.sent();
    assert_eq!(
        publishes(&first)[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    c.state.handle_transport_down();
    c.connect(Properties::default());
    let again = c.sent();
    let resent = publishes(&again);
    assert!(resent[0].dup);
    assert_eq!(
        resent[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
}

#[test]
fn no_local_goes_on_every_subscription_when_asked_for() {
    let mut o = v5_options();
    o.v5.no_local = true;
    let mut c = V5::new(o);
    c.connect(Properties::default());
    let filters = ["a/#", "b"].map(|f| SubscribeFilter {
        filter: filter(f),
        qos: QoS::AtLeastOnce,
    });
    c.state.subscribe(filters.to_vec(), 1, c.now).unwrap();
    let sent = c.sent();
    let [v5::Packet::Subscribe(sub)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(sub.filters.iter().all(|f| f.no_local), "{sub:?}");
}
