//! Reductions of what the simulation found: the `Mini` harness (a few cores, a bus held by the
//! test) and one small test per fault, each replaying a failing seed's essence. They use the
//! cores directly and nothing of `Sim`; a new fault found by a seed gets its reduction here.

use super::*;

// ---- reductions of what the simulation found --------------------------------------------------

/// A few cores, a bus held by the test, and what each connection was sent: enough to replay a
/// failing seed's essence in a dozen lines.
struct Mini {
    cores: Vec<BrokerCore>,
    bus: VecDeque<(usize, BusMessage)>,
    received: HashMap<ConnId, Vec<Packet>>,
    now: Instant,
}

impl Mini {
    fn new(shards: usize) -> Mini {
        Mini {
            cores: (0..shards)
                .map(|i| BrokerCore::new(Settings::default(), i, shards, 1))
                .collect(),
            bus: VecDeque::new(),
            received: HashMap::new(),
            now: Instant::now(),
        }
    }

    /// A client id whose home is `shard`.
    fn id_on(&self, shard: usize, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|id| home_shard(id, self.cores.len()) == shard)
            .expect("some id hashes there")
    }

    fn connect(&mut self, shard: usize, conn: ConnId, prefix: &str) {
        let connect = Connect {
            protocol: ProtocolLevel::V311,
            clean_session: true,
            keep_alive: 0,
            client_id: self.id_on(shard, prefix),
            will: None,
            username: None,
            password: None,
        };
        let outcome =
            self.cores[shard].connect_encoded(conn, &connect, AuthVerdict::Allowed, self.now);
        assert_eq!(outcome.code, ConnectReturnCode::Accepted);
        self.settle(shard);
    }

    fn send(&mut self, shard: usize, conn: ConnId, packet: Packet) {
        self.cores[shard].handle_encoded(conn, &packet, self.now);
        self.settle(shard);
    }

    /// Queues the shard's bus messages (held until `deliver_all`) and reads its outboxes.
    fn settle(&mut self, shard: usize) {
        let mut actions = Vec::new();
        self.cores[shard].poll_actions(&mut actions);
        for action in actions {
            match action {
                Action::Bus { to, message } => self.bus.push_back((to, message)),
                Action::ResumePublishers => {}
                Action::Flush(conn) => {
                    if let Some((mut bytes, _)) = self.cores[shard].take_outbox(conn) {
                        let got = self.received.entry(conn).or_default();
                        while let Some(p) = decode(&mut bytes, PROTOCOL_MAX).expect("decodes") {
                            got.push(p);
                        }
                    }
                }
            }
        }
    }

    fn deliver_all(&mut self) {
        while let Some((to, message)) = self.bus.pop_front() {
            self.cores[to].handle_bus(message);
            self.settle(to);
        }
    }

    fn has_suback(&self, conn: ConnId) -> bool {
        self.received
            .get(&conn)
            .is_some_and(|got| got.iter().any(|p| matches!(p, Packet::SubAck(_))))
    }

    fn payloads(&self, conn: ConnId) -> Vec<Bytes> {
        self.received
            .get(&conn)
            .map(|got| {
                got.iter()
                    .filter_map(|p| match p {
                        Packet::Publish(p) => Some(p.payload.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn subscribe_packet(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: TopicFilter::new(filter).expect("valid filter"),
            qos,
        }],
    })
}

fn publish_packet(topic: &str, payload: &'static str, qos: QoS, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).expect("valid topic"),
        packet_id: (qos != QoS::AtMostOnce).then_some(1),
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

/// Found by the simulation (fixed): a connection that closed before the other shards confirmed its
/// new filter left its token in `pending_tokens` forever, one entry per such SUBSCRIBE.
#[test]
fn confirmations_for_a_closed_connection_are_forgotten() {
    let mut mini = Mini::new(2);
    mini.connect(0, 1, "s");
    mini.send(0, 1, subscribe_packet("t", QoS::AtLeastOnce));
    mini.send(0, 1, Packet::Disconnect);
    // The connection is closing but not yet forgotten by the runtime when the ack comes back.
    mini.deliver_all();
    assert!(mini.cores[0].pending_tokens.is_empty());
    mini.cores[0].handle_closed(1);
    assert_eq!(mini.cores[0].connection_count(), 0);
}

/// Found by the simulation (fixed): a SUBSCRIBE waiting for confirmation, then an UNSUBSCRIBE of it;
/// when the SUBACK finally went out, the retained messages of the filter followed it, including
/// one published after the UNSUBSCRIBE [MQTT-3.10.4-2].
#[test]
fn no_retained_messages_for_a_filter_unsubscribed_before_its_suback() {
    let mut mini = Mini::new(2);
    mini.connect(0, 1, "p");
    mini.connect(1, 2, "c");
    mini.send(1, 2, subscribe_packet("t", QoS::AtLeastOnce));
    mini.send(
        1,
        2,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![TopicFilter::new("t").expect("valid filter")],
        }),
    );
    mini.send(0, 1, publish_packet("t", "late", QoS::AtLeastOnce, true));
    mini.deliver_all();
    assert!(mini.has_suback(2));
    assert!(mini.payloads(2).is_empty(), "{:?}", mini.payloads(2));
}

/// Found by the simulation (fixed): subscriber D's filter is still being announced when C
/// subscribes to the same filter on the same shard. C's SUBACK went out at once, the publisher's
/// shard had not heard of the filter yet, and C missed a QoS 1 message published after it held
/// its SUBACK.
#[test]
fn suback_for_a_filter_still_being_announced_waits_too() {
    let mut mini = Mini::new(2);
    mini.connect(0, 1, "p");
    mini.connect(1, 2, "d");
    mini.connect(1, 3, "c");
    mini.send(1, 2, subscribe_packet("t", QoS::AtLeastOnce));
    // D's announcement is still on the bus.
    mini.send(1, 3, subscribe_packet("t", QoS::AtLeastOnce));
    if !mini.has_suback(3) {
        mini.deliver_all();
        assert!(mini.has_suback(3));
    }
    // C holds its SUBACK: a message published anywhere from now on must reach it.
    mini.send(0, 1, publish_packet("t", "after", QoS::AtLeastOnce, false));
    mini.deliver_all();
    assert_eq!(mini.payloads(3), [Bytes::from_static(b"after")]);
}

/// Found by the simulation (fixed with versioned updates, `retained.rs`): two retained updates of
/// one topic made on two shards at once were applied in opposite orders, and the shards kept
/// different retained messages until the topic was published again.
#[test]
fn concurrent_retained_updates_from_two_shards_converge() {
    let mut mini = Mini::new(2);
    mini.connect(0, 1, "a");
    mini.connect(1, 2, "b");
    mini.send(0, 1, publish_packet("t", "from-a", QoS::AtMostOnce, true));
    mini.send(1, 2, publish_packet("t", "from-b", QoS::AtMostOnce, true));
    mini.deliver_all();
    let all = TopicFilter::new("#").expect("valid filter");
    let stores: Vec<Vec<Bytes>> = mini
        .cores
        .iter()
        .map(|core| {
            core.retained
                .matching(&all, None)
                .into_iter()
                .map(|m| m.payload)
                .collect()
        })
        .collect();
    assert_eq!(stores[0], stores[1]);
}

/// Found by the simulation (fixed, `recovery.rs`): a crash tore a shard's journal after a retained
/// will's `Retain` record and before its `RetainExpiry`; the restored message counted its whole
/// Message Expiry Interval again from the restart and outlived its expiry. Restored twice, one
/// re-stamped in whole seconds also gained up to a second per restart.
#[test]
fn a_retained_message_without_its_journaled_deadline_is_not_restored() {
    use crate::persist::Record;
    let now = Instant::now();
    let unix = 1_800_000_000_000;
    let topic = TopicName::new("t").expect("valid topic");
    let retain = |payload: &'static str, clock| Record::Retain {
        topic: TopicName::new(payload).expect("valid topic"),
        message: Some(Message {
            topic: TopicName::new(payload).expect("valid topic"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(std::sync::Arc::new(crate::protocol::v5::Properties {
                message_expiry_interval: Some(14),
                ..Default::default()
            })),
        }),
        clock,
        shard: 0,
    };
    let mut state = crate::persist::DurableState::default();
    // "t" with its deadline 2.5 s from now; "torn" without (its `RetainExpiry` was cut off).
    state.apply(&retain("t", 1));
    state.apply(&Record::RetainExpiry {
        topic: topic.clone(),
        clock: 1,
        shard: 0,
        at_unix_ms: unix + 2_500,
    });
    state.apply(&retain("torn", 2));
    state.finish();
    let settings = Settings {
        persistence: true,
        ..Settings::default()
    };
    let mut core = BrokerCore::new(settings, 0, 1, 1);
    core.set_wall_clock(now, unix);
    core.restore(&state, now, unix);
    assert_eq!(core.retained.len(), 1);
    assert_eq!(
        core.retained.expires_at(&topic),
        Some(now + Duration::from_millis(2_500))
    );
}

/// Found by the simulation (fixed, `routing.rs`): a queued copy that expired was dropped from its
/// session unjournaled; the journal kept it queued, and after a crash the recovered session held
/// it again (over `max_queued_messages` with a small limit).
#[test]
fn a_queued_copy_dropped_as_expired_is_journaled_done() {
    use crate::protocol::v5;
    use bytes::BytesMut;
    let t0 = Instant::now();
    let settings = Settings {
        persistence: true,
        max_inflight: 1,
        ..Settings::default()
    };
    let mut core = BrokerCore::new(settings, 0, 1, 1);
    core.set_wall_clock(t0, 1_800_000_000_000);
    let subscriber = Connect {
        protocol: ProtocolLevel::V311,
        clean_session: false,
        keep_alive: 0,
        client_id: "s".into(),
        will: None,
        username: None,
        password: None,
    };
    core.connect_encoded(1, &subscriber, AuthVerdict::Allowed, t0);
    core.handle_encoded(1, &subscribe_packet("t", QoS::AtLeastOnce), t0);
    let mut wire = BytesMut::new();
    let connect = v5::Connect {
        clean_start: true,
        keep_alive: 0,
        properties: v5::Properties::default(),
        client_id: "p".into(),
        will: None,
        username: None,
        password: None,
    };
    v5::Packet::Connect(Box::new(connect))
        .encode(&mut wire)
        .expect("encodes");
    let FirstPacket::Connect(pending) = core.handle_first_bytes(&wire, &ListenerIdentity::Connect)
    else {
        panic!("a CONNECT");
    };
    core.handle_connect(2, pending, AuthVerdict::Allowed, t0);
    // Two messages that expire in a second: the first goes out, the second waits behind it.
    for (packet_id, payload) in [(1, "first"), (2, "second")] {
        let mut publish = v5::Publish::new(
            Message {
                topic: TopicName::new("t").expect("valid topic"),
                payload: Bytes::from_static(payload.as_bytes()),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
            },
            Some(packet_id),
            false,
        );
        publish.properties.message_expiry_interval = Some(1);
        let mut wire = BytesMut::new();
        v5::Packet::Publish(publish)
            .encode(&mut wire)
            .expect("encodes");
        core.handle_bytes(2, &mut wire, t0);
    }
    let later = t0 + Duration::from_secs(2);
    core.handle_tick(later);
    // The subscriber acknowledges the first: the second has expired and is dropped.
    core.handle_encoded(1, &Packet::PubAck(PubAck { packet_id: 1 }), later);
    assert_eq!(core.stats.publish_dropped_expired, 1);
    let mut records = Vec::new();
    while let Some((_, bytes)) = core.take_journal() {
        records.extend(crate::persist::codec::decode_all(bytes).expect("journal reads"));
    }
    let mut state = crate::persist::DurableState::default();
    for record in &records {
        state.apply(record);
    }
    let session = state.session("s").expect("a persistent session");
    assert!(session.queue.is_empty(), "{:?}", session.queue);
}

/// Found by the simulation (fixed, `connect.rs`): a clean CONNECT ended a persistent session and
/// its CONNACK waited for the `SessionDrop`; a second CONNECT (clean session 0) took that
/// connection over and was answered "session present 0" at once. A crash before the drop was
/// durable brought the old session back, and its QoS 2 message reached the client a second time.
#[test]
fn a_connack_after_a_takeover_waits_for_the_earlier_session_drop() {
    let now = Instant::now();
    let settings = Settings {
        persistence: true,
        ..Settings::default()
    };
    let mut core = BrokerCore::new(settings, 0, 1, 1);
    let connect = |clean_session| Connect {
        protocol: ProtocolLevel::V311,
        clean_session,
        keep_alive: 0,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
    };
    let written = |core: &mut BrokerCore, conn: ConnId| {
        let mut actions = Vec::new();
        core.poll_actions(&mut actions);
        let mut got = Vec::new();
        if let Some((mut bytes, _)) = core.take_outbox(conn) {
            while let Some(p) = decode(&mut bytes, PROTOCOL_MAX).expect("decodes") {
                got.push(p);
            }
        }
        got
    };
    core.connect_encoded(1, &connect(false), AuthVerdict::Allowed, now);
    core.handle_encoded(1, &subscribe_packet("t", QoS::ExactlyOnce), now);
    while let Some((batch, _)) = core.take_journal() {
        core.handle_durable(batch);
    }
    written(&mut core, 1);
    // Ends the persistent session; its CONNACK waits for the `SessionDrop`.
    core.connect_encoded(2, &connect(true), AuthVerdict::Allowed, now);
    assert!(written(&mut core, 2).is_empty());
    // Takes that connection over before the drop is durable.
    core.connect_encoded(3, &connect(false), AuthVerdict::Allowed, now);
    assert!(
        written(&mut core, 3).is_empty(),
        "CONNACK (session present 0) before the earlier SessionDrop was durable"
    );
    while let Some((batch, _)) = core.take_journal() {
        core.handle_durable(batch);
    }
    assert!(matches!(
        written(&mut core, 3).as_slice(),
        [Packet::ConnAck(crate::protocol::ConnAck {
            session_present: false,
            ..
        })]
    ));
}
