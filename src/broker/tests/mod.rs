//! Whole-broker tests without sockets: several shards in one thread, a simulated bus, a fake clock.
//!
//! `Cluster` moves bus messages between shard cores until nothing is left to move and decodes what
//! each connection would have received. Test names read as the behaviour they pin down.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{
    decode, LastWill, PubAck, PubComp, PubRec, PubRel, Publish, Subscribe, SubscribeFilter,
    SubscribeReturnCode, UnsubAck, Unsubscribe,
};

struct Client {
    shard: usize,
    conn: ConnId,
    received: BytesMut,
    closed: bool,
}

struct Cluster {
    shards: Vec<BrokerCore>,
    bus: VecDeque<(usize, BusMessage)>,
    clients: HashMap<String, Client>,
    next_conn: ConnId,
    now: Instant,
}

impl Cluster {
    fn new(shards: usize) -> Self {
        Self::with_settings(shards, Settings::default())
    }

    fn with_settings(shards: usize, settings: Settings) -> Self {
        Cluster {
            shards: (0..shards)
                .map(|i| BrokerCore::new(settings.clone(), i, shards, 7))
                .collect(),
            bus: VecDeque::new(),
            clients: HashMap::new(),
            next_conn: 1,
            now: Instant::now(),
        }
    }

    fn connect_packet(client_id: &str, clean: bool) -> Connect {
        Connect {
            protocol: ProtocolLevel::V311,
            clean_session: clean,
            keep_alive: 0,
            client_id: client_id.to_string(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// Connects `name` (also its client id) as if accepted on its home shard.
    fn connect(&mut self, name: &str, clean: bool) -> ConnectOutcome {
        self.connect_with(name, Self::connect_packet(name, clean))
    }

    fn connect_with(&mut self, name: &str, connect: Connect) -> ConnectOutcome {
        self.connect_verdict(name, connect, AuthVerdict::Allowed)
    }

    /// Connects with the authentication plugins' verdict given (the runtime computes it).
    fn connect_verdict(
        &mut self,
        name: &str,
        connect: Connect,
        auth: AuthVerdict,
    ) -> ConnectOutcome {
        let home = self.shards[0].home_for(&connect);
        let conn = self.next_conn;
        self.next_conn += 1;
        let outcome = self.shards[home].handle_connect(conn, connect, auth, self.now);
        if let Some(old) = self.clients.insert(
            name.to_string(),
            Client {
                shard: home,
                conn,
                received: BytesMut::new(),
                closed: false,
            },
        ) {
            // Keep the old connection's traffic reachable under a derived name.
            self.clients.insert(format!("{name}#old{}", old.conn), old);
        }
        self.run();
        outcome
    }

    fn client(&self, name: &str) -> &Client {
        self.clients.get(name).expect("known client")
    }

    fn send(&mut self, name: &str, packet: Packet) {
        let (shard, conn) = {
            let c = self.client(name);
            (c.shard, c.conn)
        };
        self.shards[shard].handle_packet(conn, packet, self.now);
        self.run();
    }

    fn drop_connection(&mut self, name: &str) {
        let (shard, conn) = {
            let c = self.client(name);
            (c.shard, c.conn)
        };
        self.shards[shard].handle_closed(conn);
        self.run();
    }

    fn subscribe(&mut self, name: &str, filters: &[(&str, QoS)]) {
        let filters = filters
            .iter()
            .map(|(f, q)| SubscribeFilter {
                filter: TopicFilter::new(f).expect("filter"),
                qos: *q,
            })
            .collect();
        self.send(
            name,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters,
            }),
        );
    }

    fn publish(
        &mut self,
        name: &str,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
        packet_id: u16,
    ) {
        self.send(
            name,
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic: TopicName::new(topic).expect("topic"),
                packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
                payload: Bytes::from(payload.to_string()),
            }),
        );
    }

    /// Delivers bus messages and collects outboxes until quiet.
    fn run(&mut self) {
        let mut actions = Vec::new();
        loop {
            let mut progressed = false;
            for shard in 0..self.shards.len() {
                self.shards[shard].poll_actions(&mut actions);
                for action in actions.drain(..) {
                    progressed = true;
                    match action {
                        Action::Flush(conn) => {
                            let (bytes, close) =
                                self.shards[shard].take_outbox(conn).unwrap_or_default();
                            if let Some(c) = self
                                .clients
                                .values_mut()
                                .find(|c| c.shard == shard && c.conn == conn)
                            {
                                c.received.extend_from_slice(&bytes);
                                if close && !c.closed {
                                    c.closed = true;
                                }
                            }
                        }
                        Action::Bus { to, message } => self.bus.push_back((to, message)),
                    }
                }
            }
            while let Some((to, message)) = self.bus.pop_front() {
                progressed = true;
                self.shards[to].handle_bus(message);
            }
            if !progressed {
                break;
            }
        }
        // Connections the broker closed are forgotten by the runtime once flushed.
        let closed: Vec<(usize, ConnId)> = self
            .clients
            .values()
            .filter(|c| c.closed)
            .map(|c| (c.shard, c.conn))
            .collect();
        for (shard, conn) in closed {
            self.shards[shard].handle_closed(conn);
        }
    }

    /// Decodes everything `name` has received since the last call.
    fn packets(&mut self, name: &str) -> Vec<Packet> {
        let client = self.clients.get_mut(name).expect("known client");
        let mut out = Vec::new();
        while let Some(packet) =
            decode(&mut client.received, usize::MAX).expect("broker output decodes")
        {
            out.push(packet);
        }
        out
    }

    fn publishes(&mut self, name: &str) -> Vec<Publish> {
        self.packets(name)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn payloads(&mut self, name: &str) -> Vec<String> {
        self.publishes(name)
            .into_iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for shard in &mut self.shards {
            shard.handle_tick(self.now);
        }
        self.run();
    }
}

fn connack(packets: &[Packet]) -> ConnAck {
    match packets.first() {
        Some(Packet::ConnAck(c)) => *c,
        other => panic!("expected CONNACK first, got {other:?}"),
    }
}

/// Client ids that live on different shards of a two-shard cluster.
fn ids_on_distinct_shards() -> (String, String) {
    let a = "alice".to_string();
    let b = (0..)
        .map(|i| format!("bob{i}"))
        .find(|id| home_shard(id, 2) != home_shard(&a, 2))
        .expect("some id hashes elsewhere");
    (a, b)
}

/// A 2-shard cluster with a publisher `a` and a subscriber `b` whose sessions live on different
/// shards; `b` holds its SUBACK for `filter` at `qos`.
fn subscriber_on_other_shard(filter: &str, qos: QoS) -> (Cluster, String, String) {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[(filter, qos)]);
    assert!(matches!(
        c.packets(&b)[..],
        [Packet::ConnAck(_), Packet::SubAck(_)]
    ));
    (c, a, b)
}

#[test]
fn home_shard_is_stable() {
    assert_eq!(home_shard("client-1", 1), 0);
    assert_eq!(home_shard("client-1", 4), home_shard("client-1", 4));
    // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(
        home_shard("a", 1000),
        (0xaf63_dc4c_8601_ec8c_u64 % 1000) as usize
    );
}

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
fn persistent_session_is_present_on_reconnect() {
    let mut c = Cluster::new(2);
    c.connect("p", false);
    c.drop_connection("p");
    assert!(c.connect("p", false).session_present);
    c.drop_connection("p");
    assert!(
        !c.connect("p", true).session_present,
        "clean session discards it"
    );
}

#[test]
fn qos_flows_between_shards_with_acks() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[("t/#", QoS::ExactlyOnce)]);
    let subacks = c.packets(&b);
    assert!(
        matches!(&subacks[1], Packet::SubAck(s) if s.return_codes == [SubscribeReturnCode::Success(QoS::ExactlyOnce)])
    );
    c.packets(&a);

    c.publish(&a, "t/0", "zero", QoS::AtMostOnce, false, 0);
    c.publish(&a, "t/1", "one", QoS::AtLeastOnce, false, 10);
    c.publish(&a, "t/2", "two", QoS::ExactlyOnce, false, 11);
    assert_eq!(
        c.packets(&a),
        [
            Packet::PubAck(PubAck { packet_id: 10 }),
            Packet::PubRec(PubRec { packet_id: 11 })
        ]
    );
    let got = c.publishes(&b);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
    );
    assert!(got.iter().all(|p| !p.retain));

    c.send(&a, Packet::PubRel(PubRel { packet_id: 11 }));
    assert_eq!(c.packets(&a), [Packet::PubComp(PubComp { packet_id: 11 })]);
    let qos2_id = got[2].packet_id.expect("id");
    c.send(&b, Packet::PubRec(PubRec { packet_id: qos2_id }));
    assert_eq!(
        c.packets(&b),
        [Packet::PubRel(PubRel { packet_id: qos2_id })]
    );
    c.send(&b, Packet::PubComp(PubComp { packet_id: qos2_id }));
    assert_eq!(
        c.shards.iter().map(|s| s.inflight_count()).sum::<usize>(),
        1,
        "QoS 1 still unacked"
    );
}

#[test]
fn incoming_qos2_resent_before_pubrel_is_delivered_once() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("sub", true);
    c.subscribe("sub", &[("x", QoS::ExactlyOnce)]);
    c.packets("sub");
    c.publish("pub", "x", "once", QoS::ExactlyOnce, false, 5);
    c.publish("pub", "x", "once", QoS::ExactlyOnce, false, 5);
    assert_eq!(c.payloads("sub"), ["once"]);
    c.send("pub", Packet::PubRel(PubRel { packet_id: 5 }));
    c.publish("pub", "x", "again", QoS::ExactlyOnce, false, 5);
    assert_eq!(c.payloads("sub"), ["again"]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_max_qos() {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe(
        "s",
        &[
            ("a/+", QoS::AtMostOnce),
            ("a/#", QoS::AtLeastOnce),
            ("#", QoS::AtMostOnce),
        ],
    );
    c.packets("s");
    c.publish("p", "a/b", "m", QoS::ExactlyOnce, false, 1);
    let got = c.publishes("s");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

/// A live QoS 0 message is encoded once for all subscribers that take it at once; one that still
/// has retained messages queued (after its SUBACK) gets it after them, and QoS 1 subscribers get
/// their own packet with an id.
#[test]
fn qos0_fan_out_shares_one_encoding_and_keeps_order_behind_queued_retained() {
    let mut c = Cluster::new(1);
    for name in ["p", "s0", "s1", "late"] {
        c.connect(name, true);
    }
    c.subscribe("s0", &[("t/#", QoS::AtMostOnce)]);
    c.subscribe("s1", &[("t/#", QoS::AtLeastOnce)]);
    let payload = "x".repeat(1024);
    for i in 0..100 {
        c.publish("p", &format!("t/{i}"), &payload, QoS::AtMostOnce, true, 0);
    }
    for name in ["s0", "s1", "late"] {
        c.packets(name);
    }
    // `late` subscribes and, before anything is written, a live message arrives: 100 KiB of
    // retained messages are more than one outbox chunk, so some are still queued.
    let late = c.client("late").conn;
    let publisher = c.client("p").conn;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 9,
        filters: vec![SubscribeFilter {
            filter: TopicFilter::new("t/#").expect("filter"),
            qos: QoS::AtMostOnce,
        }],
    });
    let now = c.now;
    c.shards[0].handle_packet(late, subscribe, now);
    // Published at QoS 1: s0 and late get it at QoS 0 (their grant), s1 at QoS 1.
    let live = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("t/live").expect("topic"),
        packet_id: Some(7),
        payload: Bytes::from_static(b"live"),
    });
    c.shards[0].handle_packet(publisher, live, now);
    c.run();

    let s0 = c.publishes("s0");
    assert_eq!(s0.len(), 1);
    assert_eq!(
        (s0[0].qos, s0[0].retain, s0[0].packet_id),
        (QoS::AtMostOnce, false, None)
    );
    assert_eq!(&s0[0].payload[..], b"live");
    let s1 = c.publishes("s1");
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].qos, QoS::AtLeastOnce);
    assert!(s1[0].packet_id.is_some());
    let got = c.publishes("late");
    assert_eq!(got.len(), 101, "100 retained, then the live one");
    assert!(got[..100].iter().all(|p| p.retain));
    assert_eq!(got[100].topic.as_str(), "t/live");
    assert_eq!((got[100].qos, got[100].retain), (QoS::AtMostOnce, false));
}

#[test]
fn granted_qos_is_capped_by_config() {
    let settings = Settings {
        max_qos: QoS::AtLeastOnce,
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(1, settings);
    c.connect("s", true);
    c.subscribe("s", &[("a", QoS::ExactlyOnce)]);
    let packets = c.packets("s");
    assert!(
        matches!(&packets[1], Packet::SubAck(s) if s.return_codes == [SubscribeReturnCode::Success(QoS::AtLeastOnce)])
    );
}

#[test]
fn sys_topics_are_not_delivered_from_clients_or_to_leading_wildcards() {
    let mut c = Cluster::new(1);
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe(
        "s",
        &[
            ("#", QoS::AtMostOnce),
            ("$SYS/#", QoS::AtMostOnce),
            ("$other/#", QoS::AtMostOnce),
        ],
    );
    c.packets("s");
    c.publish("p", "$SYS/fake", "x", QoS::AtMostOnce, false, 0);
    c.publish("p", "$other/t", "y", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads("s"), ["y"]);
}

#[test]
fn retained_messages_reach_new_subscribers_on_every_shard() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.publish(&a, "r/1", "first", QoS::AtLeastOnce, true, 1);
    c.publish(&a, "r/1", "second", QoS::AtLeastOnce, true, 2);
    c.publish(&a, "r/2", "other", QoS::AtMostOnce, true, 0);
    c.publish(&a, "r/2", "", QoS::AtMostOnce, true, 0);
    c.connect(&b, true);
    c.subscribe(&b, &[("r/#", QoS::AtLeastOnce)]);
    let packets = c.packets(&b);
    assert!(
        matches!(packets[1], Packet::SubAck(_)),
        "SUBACK comes before retained messages"
    );
    let retained: Vec<&Publish> = packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(retained.len(), 1);
    assert!(retained[0].retain);
    assert_eq!(retained[0].payload, Bytes::from("second"));
    assert_eq!(
        c.shards
            .iter()
            .map(|s| s.retained_count())
            .collect::<Vec<_>>(),
        [1, 1]
    );
}

#[test]
fn suback_waits_for_other_shards_to_learn_the_filter() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.packets(&b);
    let conn = c.client(&b).conn;
    let shard = c.client(&b).shard;
    c.shards[shard].handle_packet(
        conn,
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new("x").expect("filter"),
                qos: QoS::AtMostOnce,
            }],
        }),
        c.now,
    );
    let mut actions = Vec::new();
    c.shards[shard].poll_actions(&mut actions);
    assert!(
        actions.iter().all(|a| matches!(a, Action::Bus { .. })),
        "no SUBACK before confirmation: {actions:?}"
    );
    for action in actions {
        if let Action::Bus { to, message } = action {
            c.bus.push_back((to, message));
        }
    }
    c.run();
    assert!(matches!(c.packets(&b)[..], [Packet::SubAck(_)]));
    c.publish(&a, "x", "hello", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads(&b), ["hello"]);
}

#[test]
fn unsubscribe_stops_delivery_and_cross_shard_interest() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, true);
    c.connect(&b, true);
    c.subscribe(&b, &[("u", QoS::AtMostOnce)]);
    c.send(
        &b,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            filters: vec![
                TopicFilter::new("u").expect("filter"),
                TopicFilter::new("never").expect("filter"),
            ],
        }),
    );
    assert!(matches!(
        c.packets(&b).last(),
        Some(Packet::UnsubAck(UnsubAck { packet_id: 4 }))
    ));
    let sent_before = c.shards[c.client(&a).shard].stats.bus_sent;
    c.publish(&a, "u", "gone", QoS::AtMostOnce, false, 0);
    assert!(c.payloads(&b).is_empty());
    assert_eq!(
        c.shards[c.client(&a).shard].stats.bus_sent,
        sent_before,
        "no bus traffic for an unwanted topic"
    );
}

/// The last topic's matches are reused for the next message on it: a subscription, a change of
/// QoS and an unsubscription between two messages on one topic must each be seen at once.
#[test]
fn subscription_changes_between_messages_on_one_topic_apply_at_once() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("s1", true);
    c.connect("s2", true);
    c.subscribe("s1", &[("t/+", QoS::AtMostOnce)]);
    c.publish("pub", "t/x", "1", QoS::AtLeastOnce, false, 1);
    c.subscribe("s2", &[("t/x", QoS::AtMostOnce)]);
    c.publish("pub", "t/x", "2", QoS::AtLeastOnce, false, 2);
    c.subscribe("s1", &[("t/+", QoS::AtLeastOnce)]);
    c.publish("pub", "t/x", "3", QoS::AtLeastOnce, false, 3);
    c.send(
        "s2",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 9,
            filters: vec![TopicFilter::new("t/x").expect("filter")],
        }),
    );
    c.publish("pub", "t/x", "4", QoS::AtLeastOnce, false, 4);
    let s1: Vec<(String, QoS)> = c
        .publishes("s1")
        .into_iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    let q0 = QoS::AtMostOnce;
    let q1 = QoS::AtLeastOnce;
    assert_eq!(
        s1,
        [("1", q0), ("2", q0), ("3", q1), ("4", q1)].map(|(p, q)| (p.to_string(), q))
    );
    assert_eq!(c.payloads("s2"), ["2", "3"]);
}

#[test]
fn persistent_session_queues_qos1_offline_and_resends_unacked_with_dup() {
    let mut c = Cluster::new(2);
    c.connect("sub", false);
    c.subscribe("sub", &[("q", QoS::AtLeastOnce)]);
    c.connect("pub", true);
    c.publish("pub", "q", "1", QoS::AtLeastOnce, false, 1);
    c.packets("sub");
    c.drop_connection("sub"); // "1" was sent but never acknowledged
    c.publish("pub", "q", "2", QoS::AtLeastOnce, false, 2);
    c.publish("pub", "q", "3", QoS::AtMostOnce, false, 0); // QoS 0 is not stored offline
    c.publish("pub", "q", "4", QoS::AtLeastOnce, false, 3);
    let outcome = c.connect("sub", false);
    assert!(outcome.session_present);
    let got = c.publishes("sub");
    let payloads: Vec<_> = got
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["1", "2", "4"]);
    assert!(got[0].dup);
    assert!(!got[1].dup);
}

#[test]
fn inflight_window_and_queue_limit_count_drops() {
    let settings = Settings {
        max_inflight: 2,
        max_queued_messages: 3,
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(1, settings);
    c.connect("s", true);
    c.subscribe("s", &[("w", QoS::AtLeastOnce)]);
    c.packets("s");
    c.connect("p", true);
    for i in 0..10 {
        c.publish("p", "w", &i.to_string(), QoS::AtLeastOnce, false, i + 1);
    }
    let first = c.publishes("s");
    assert_eq!(first.len(), 2);
    assert_eq!(c.shards[0].stats.publish_dropped_queue_full, 5);
    for p in first {
        c.send(
            "s",
            Packet::PubAck(PubAck {
                packet_id: p.packet_id.expect("id"),
            }),
        );
    }
    assert_eq!(c.payloads("s"), ["2", "3"]);
}

#[test]
fn will_is_published_on_connection_loss_but_not_after_disconnect() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("will/#", QoS::AtLeastOnce)]);
    c.packets("watcher");
    let mut connect = Cluster::connect_packet("dying", true);
    connect.will = Some(LastWill {
        topic: TopicName::new("will/dying").expect("topic"),
        payload: Bytes::from("gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
    });
    c.connect_with("dying", connect.clone());
    c.drop_connection("dying");
    let got = c.publishes("watcher");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("gone"));
    assert!(!got[0].retain, "live delivery clears RETAIN");
    assert_eq!(
        c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
        2,
        "the will was retained"
    );

    c.connect_with("dying", connect);
    c.send("dying", Packet::Disconnect);
    assert!(c.publishes("watcher").is_empty());
}

#[test]
fn takeover_closes_old_connection_and_publishes_its_will() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("w", QoS::AtMostOnce)]);
    c.packets("watcher");
    let mut connect = Cluster::connect_packet("twin", false);
    connect.will = Some(LastWill {
        topic: TopicName::new("w").expect("topic"),
        payload: Bytes::from("taken"),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    c.connect_with("twin", connect);
    let old_conn = c.client("twin").conn;
    let outcome = c.connect("twin", false);
    assert!(outcome.session_present);
    assert!(c.client(&format!("twin#old{old_conn}")).closed);
    assert!(!c.client("twin").closed);
    assert_eq!(c.payloads("watcher"), ["taken"]);
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
    let mut connect = Cluster::connect_packet("bad", true);
    connect.will = Some(LastWill {
        topic: TopicName::new("bye").expect("topic"),
        payload: Bytes::from("bad"),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    c.connect_with("bad", connect.clone());
    c.send("bad", Packet::Connect(Box::new(connect)));
    assert!(c.client("bad").closed);
    assert_eq!(c.payloads("w"), ["bad"]);
    assert_eq!(c.shards[0].stats.protocol_errors, 1);
}

#[test]
fn order_per_publisher_is_kept_across_shards() {
    let (mut c, a, b) = subscriber_on_other_shard("o", QoS::AtLeastOnce);
    for i in 0..15u16 {
        c.publish(&a, "o", &i.to_string(), QoS::AtLeastOnce, false, i + 1);
    }
    // Window of 20 holds them all.
    let expected: Vec<String> = (0..15).map(|i| i.to_string()).collect();
    assert_eq!(c.payloads(&b), expected);
}

#[test]
fn clean_session_disconnect_removes_subscriptions_everywhere() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&b, true);
    c.subscribe(&b, &[("gone/#", QoS::AtMostOnce)]);
    c.drop_connection(&b);
    let a_shard = home_shard(&a, 2);
    assert!(c.shards[a_shard]
        .remote_interest
        .iter()
        .all(|t| t.is_empty()));
    assert_eq!(c.shards.iter().map(|s| s.session_count()).sum::<usize>(), 0);
}

// ---- authentication verdicts, topic checks and event plugins ----------------------------------

mod plugins {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::plugins::{ClientInfo, EventPlugin, TopicAcl, TopicPlugin};

    fn acl_settings(subscribe: &[(&str, &[&str])], publish: &[(&str, &[&str])]) -> Settings {
        let table = |entries: &[(&str, &[&str])]| {
            entries
                .iter()
                .map(|(u, l)| (u.to_string(), l.iter().map(|s| s.to_string()).collect()))
                .collect::<std::collections::BTreeMap<String, Vec<String>>>()
        };
        let (sub, publ) = (table(subscribe), table(publish));
        let acl = TopicAcl::new(
            (!subscribe.is_empty()).then_some(&sub),
            (!publish.is_empty()).then_some(&publ),
        )
        .expect("acl");
        let topic: Vec<Arc<dyn TopicPlugin>> = vec![Arc::new(acl)];
        Settings {
            plugins: CorePlugins::new(topic, vec![]),
            ..Settings::default()
        }
    }

    fn as_user(client_id: &str, user: &str) -> Connect {
        let mut connect = Cluster::connect_packet(client_id, true);
        connect.username = Some(user.into());
        connect
    }

    fn suback_codes(packets: &[Packet]) -> Vec<SubscribeReturnCode> {
        packets
            .iter()
            .find_map(|p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .expect("SUBACK")
    }

    #[test]
    fn denied_verdict_is_refused_with_not_authorized_and_nothing_else() {
        let mut c = Cluster::new(2);
        c.connect("watcher", true);
        c.subscribe("watcher", &[("will/#", QoS::AtMostOnce)]);
        c.packets("watcher");
        c.connect("victim", false);
        let mut connect = as_user("victim", "mallory");
        connect.will = Some(LastWill {
            topic: TopicName::new("will/victim").expect("topic"),
            payload: Bytes::from("never"),
            qos: QoS::AtMostOnce,
            retain: true,
        });
        let outcome = c.connect_verdict("victim", connect, AuthVerdict::Denied);
        assert_eq!(outcome.code, ConnectReturnCode::NotAuthorized);
        assert_eq!(
            connack(&c.packets("victim")).code,
            ConnectReturnCode::NotAuthorized
        );
        assert!(c.client("victim").closed);
        let victim_old = c
            .clients
            .keys()
            .find(|k| k.starts_with("victim#old"))
            .cloned()
            .expect("first connection");
        assert!(
            !c.client(&victim_old).closed,
            "a refused login does not take the session over"
        );
        assert!(
            c.payloads("watcher").is_empty(),
            "its will is never published"
        );
        assert_eq!(
            c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
            0
        );
        let refused: u64 = c.shards.iter().map(|s| s.stats.refused_by_code[5]).sum();
        assert_eq!(refused, 1);
    }

    #[test]
    fn subscribe_to_a_filter_the_acl_denies_gets_0x80_for_that_filter_only() {
        let settings = acl_settings(&[("alice", &["sensors/#", "users/%u/#"])], &[]);
        let mut c = Cluster::with_settings(2, settings);
        c.connect_with("a", as_user("a", "alice"));
        c.packets("a");
        c.subscribe(
            "a",
            &[
                ("sensors/+/temp", QoS::AtLeastOnce),
                ("#", QoS::AtLeastOnce),
                ("users/alice/inbox", QoS::AtMostOnce),
                ("users/bob/inbox", QoS::AtMostOnce),
            ],
        );
        assert_eq!(
            suback_codes(&c.packets("a")),
            vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Failure,
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Failure,
            ]
        );
        let denied: u64 = c.shards.iter().map(|s| s.stats.subscribe_denied).sum();
        assert_eq!(denied, 2);
        assert_eq!(
            c.shards
                .iter()
                .map(|s| s.subscription_count())
                .sum::<usize>(),
            2
        );
        // The denied filters were not installed: nothing arrives through them.
        c.connect("pub", true);
        c.publish(
            "pub",
            "users/bob/inbox",
            "private",
            QoS::AtMostOnce,
            false,
            0,
        );
        c.publish("pub", "sensors/k/temp", "21", QoS::AtMostOnce, false, 0);
        assert_eq!(c.payloads("a"), ["21"]);
    }

    #[test]
    fn anonymous_clients_use_the_anonymous_entry() {
        let settings = acl_settings(&[("anonymous", &["public/#"])], &[]);
        let mut c = Cluster::with_settings(1, settings);
        c.connect("anon", true);
        c.packets("anon");
        c.subscribe(
            "anon",
            &[
                ("public/x", QoS::AtMostOnce),
                ("private/x", QoS::AtMostOnce),
            ],
        );
        assert_eq!(
            suback_codes(&c.packets("anon")),
            vec![
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Failure
            ]
        );
    }

    #[test]
    fn denied_publish_is_acknowledged_but_neither_delivered_nor_retained() {
        let settings = acl_settings(&[], &[("alice", &["sensors/alice/#"])]);
        let mut c = Cluster::with_settings(2, settings);
        c.connect("watcher", true);
        c.subscribe("watcher", &[("#", QoS::AtLeastOnce)]);
        c.packets("watcher");
        c.connect_with("a", as_user("a", "alice"));
        c.packets("a");
        c.publish("a", "sensors/bob/temp", "forged", QoS::AtLeastOnce, true, 7);
        c.publish(
            "a",
            "sensors/bob/temp",
            "forged2",
            QoS::ExactlyOnce,
            false,
            8,
        );
        c.publish(
            "a",
            "sensors/bob/temp",
            "forged0",
            QoS::AtMostOnce,
            false,
            0,
        );
        let acks = c.packets("a");
        assert!(
            acks.contains(&Packet::PubAck(PubAck { packet_id: 7 })),
            "{acks:?}"
        );
        assert!(
            acks.contains(&Packet::PubRec(PubRec { packet_id: 8 })),
            "{acks:?}"
        );
        c.publish("a", "sensors/alice/temp", "ok", QoS::AtLeastOnce, false, 9);
        assert_eq!(c.payloads("watcher"), ["ok"]);
        assert_eq!(
            c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
            0
        );
        let denied: u64 = c.shards.iter().map(|s| s.stats.publish_denied).sum();
        assert_eq!(denied, 3);
    }

    #[test]
    fn a_will_the_acl_denies_is_not_published() {
        let settings = acl_settings(&[], &[("alice", &["status/alice"])]);
        let mut c = Cluster::with_settings(2, settings);
        c.connect("watcher", true);
        c.subscribe("watcher", &[("#", QoS::AtMostOnce)]);
        c.packets("watcher");
        for (name, topic) in [("w1", "status/alice"), ("w2", "status/bob")] {
            let mut connect = as_user(name, "alice");
            connect.will = Some(LastWill {
                topic: TopicName::new(topic).expect("topic"),
                payload: Bytes::from(format!("{name} gone")),
                qos: QoS::AtMostOnce,
                retain: false,
            });
            c.connect_with(name, connect);
            c.drop_connection(name);
        }
        assert_eq!(c.payloads("watcher"), ["w1 gone"]);
        let wills: u64 = c.shards.iter().map(|s| s.stats.wills_published).sum();
        assert_eq!(wills, 1);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl EventPlugin for Arc<Recorder> {
        fn name(&self) -> &str {
            "recorder"
        }
        fn client_connected(&self, client: &ClientInfo<'_>) {
            self.push(format!(
                "connected {} {:?}",
                client.client_id, client.username
            ));
        }
        fn client_disconnected(&self, client: &ClientInfo<'_>) {
            self.push(format!("disconnected {}", client.client_id));
        }
        fn message_received(&self, client: &ClientInfo<'_>, message: &Message) {
            self.push(format!("message {} {}", client.client_id, message.topic));
        }
        fn subscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter, granted: QoS) {
            self.push(format!(
                "subscribed {} {filter} {granted:?}",
                client.client_id
            ));
        }
    }

    impl Recorder {
        fn push(&self, event: String) {
            if let Ok(mut events) = self.0.lock() {
                events.push(event);
            }
        }
        fn take(&self) -> Vec<String> {
            self.0
                .lock()
                .map(|mut e| std::mem::take(&mut *e))
                .unwrap_or_default()
        }
    }

    #[test]
    fn event_plugins_hear_connects_messages_subscriptions_and_disconnects() {
        let recorder = Arc::new(Recorder::default());
        let events: Vec<Arc<dyn EventPlugin>> = vec![Arc::new(recorder.clone())];
        let settings = Settings {
            plugins: CorePlugins::new(vec![], events),
            ..Settings::default()
        };
        let mut c = Cluster::with_settings(1, settings);
        c.connect_with("a", as_user("a", "alice"));
        c.subscribe("a", &[("t/#", QoS::ExactlyOnce)]);
        c.publish("a", "t/1", "x", QoS::AtMostOnce, false, 0);
        c.publish("a", "$SYS/x", "x", QoS::AtMostOnce, false, 0);
        c.send("a", Packet::Disconnect);
        c.connect_verdict("b", as_user("b", "mallory"), AuthVerdict::Denied);
        assert_eq!(
            recorder.take(),
            [
                "connected a Some(\"alice\")",
                "subscribed a t/# ExactlyOnce",
                "message a t/1",
                "disconnected a",
            ],
            "refused clients and dropped messages are not reported"
        );
    }
}

/// Publishes for another shard handled before one `poll_actions` cross the bus as one batch, in
/// order, whether they were routed in place (QoS 0 from the read buffer) or decoded (QoS 1), and
/// each arrives at its own QoS (the subscription grants QoS 1).
#[test]
fn publishes_for_another_shard_cross_as_one_batch_in_order() {
    let (mut c, a, b) = subscriber_on_other_shard("t/#", QoS::AtLeastOnce);
    let (shard, conn) = (c.client(&a).shard, c.client(&a).conn);
    let mut encoded = BytesMut::new();
    for (i, qos) in [
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
        QoS::AtMostOnce,
        QoS::AtMostOnce,
    ]
    .into_iter()
    .enumerate()
    {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new(&format!("t/{i}")).expect("topic"),
            packet_id: (qos != QoS::AtMostOnce).then_some(10 + i as u16),
            payload: Bytes::from(format!("m{i}")),
        };
        encoded.clear();
        Packet::Publish(publish.clone())
            .encode(&mut encoded)
            .expect("encodes");
        let (borrowed, _) = crate::protocol::peek_publish(&encoded, usize::MAX).expect("a PUBLISH");
        if !c.shards[shard].handle_publish_in_place(conn, &borrowed, c.now) {
            c.shards[shard].handle_packet(conn, Packet::Publish(publish), c.now);
        }
    }
    let mut actions = Vec::new();
    c.shards[shard].poll_actions(&mut actions);
    let batches: Vec<&PublishBatch> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Bus {
                message: BusMessage::Publishes(batch),
                ..
            } => Some(batch),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 1, "one bus message: {actions:?}");
    let topics: Vec<&[u8]> = batches[0].iter().map(|p| p.topic).collect();
    assert_eq!(topics, [&b"t/0"[..], b"t/1", b"t/2", b"t/3"]);
    for action in actions {
        if let Action::Bus { to, message } = action {
            c.bus.push_back((to, message));
        }
    }
    c.run();
    let got: Vec<(String, QoS)> = c
        .publishes(&b)
        .into_iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    assert_eq!(
        got,
        [
            ("m0".to_string(), QoS::AtMostOnce),
            ("m1".to_string(), QoS::AtLeastOnce),
            ("m2".to_string(), QoS::AtMostOnce),
            ("m3".to_string(), QoS::AtMostOnce),
        ]
    );
}

/// The shards interested in the last topic are reused for the next message on it: a subscription
/// made on another shard between two messages on one topic must get the second.
#[test]
fn another_shard_subscribing_between_messages_on_one_topic_gets_the_next() {
    let (mut c, a, b) = subscriber_on_other_shard("elsewhere", QoS::AtMostOnce);
    c.publish(&a, "t", "before", QoS::AtMostOnce, false, 0);
    assert!(c.payloads(&b).is_empty());
    c.subscribe(&b, &[("t", QoS::AtMostOnce)]);
    c.packets(&b);
    c.publish(&a, "t", "after", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads(&b), ["after"]);
}

/// The in-place route takes a QoS 0 PUBLISH only from an active connection: not from one the
/// broker is closing (its packets are ignored), nor from an unknown one.
#[test]
fn in_place_route_ignores_closing_and_unknown_connections() {
    let mut c = Cluster::new(1);
    c.connect("pub", true);
    c.connect("sub", true);
    c.subscribe("sub", &[("t", QoS::AtMostOnce)]);
    c.packets("sub");
    let mut encoded = BytesMut::new();
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("t").expect("topic"),
        packet_id: None,
        payload: Bytes::from_static(b"x"),
    })
    .encode(&mut encoded)
    .expect("encodes");
    let (borrowed, _) = crate::protocol::peek_publish(&encoded, usize::MAX).expect("a PUBLISH");
    let conn = c.client("pub").conn;
    assert!(!c.shards[0].handle_publish_in_place(conn + 1000, &borrowed, c.now));
    c.shards[0].handle_protocol_error(conn);
    assert!(!c.shards[0].handle_publish_in_place(conn, &borrowed, c.now));
    c.run();
    assert!(c.payloads("sub").is_empty());
    // An active connection's is taken, as a control.
    c.connect("pub2", true);
    let conn = c.client("pub2").conn;
    assert!(c.shards[0].handle_publish_in_place(conn, &borrowed, c.now));
    c.run();
    assert_eq!(c.payloads("sub"), ["x"]);
}
