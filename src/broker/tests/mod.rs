//! Whole-broker tests without sockets: several shards in one thread, a simulated bus, a fake clock.
//!
//! `Cluster` moves bus messages between shard cores until nothing is left to move and decodes what
//! each connection would have received. Test names read as the behaviour they pin down.
//!
//! # Layout
//! `mod.rs` holds the harness every file shares: `Cluster` (the shards, the bus between them, the
//! clients' received bytes, the fake clock) and its packet helpers, `connack`, `suback_codes` and
//! `ids_on_distinct_shards`, all private: the feature files are child modules and see them as
//! they are. One file per feature:
//! - `bytes_in.rs`: bytes in: packets split across reads, the in-place and decoded PUBLISH counted
//!   alike, malformed bytes, the memory pause, and the verdicts on a connection's first bytes;
//! - `connect.rs`: CONNECT accepted or refused (client ids, anonymous logins), a second CONNECT,
//!   keep-alive, credentials that expire;
//! - `publish.rs`: PUBLISH flows at each QoS and their acknowledgements, QoS 2 duplicates,
//!   overlapping subscriptions, QoS 0 fan-out, `$SYS` topics, the in-place QoS 0 route;
//! - `subscribe.rs`: SUBSCRIBE and UNSUBSCRIBE: granted QoS, when the SUBACK is sent, retained
//!   messages on subscribe, subscription changes between messages on one topic;
//! - `sessions.rs`: persistent sessions across reconnects, offline queueing and in-flight limits,
//!   takeover, wills on connection loss, clean-session cleanup;
//! - `expiry.rs`: session expiry (`session_expiry_interval`), and the tick with 100k offline
//!   sessions;
//! - `cluster_session.rs`: a session released by one cluster node and adopted by another, and
//!   a CONNECT the session directory could not register;
//! - `cross_shard.rs`: home shards and the bus between shards: batching, order, interest;
//! - `shared.rs`: shared subscriptions (`$share/...`) at 1 and 2 shards;
//! - `shared_cluster.rs`: share groups with members on other cluster nodes (the link's side
//!   played by the test);
//! - `flow_control.rs`: publishers held while a subscriber is behind, stalled subscribers;
//! - `plugins.rs`: authentication verdicts, topic ACLs and event plugins;
//! - `listing.rs`: the sessions and retained topics the host program lists;
//! - `admin_verbs.rs`: an administrator's kick and session delete;
//! - `mqtt5.rs`: MQTT 5 clients: properties across shards and to MQTT 3, refusal and DISCONNECT
//!   reason codes, session expiry;
//! - `enhanced_auth.rs`: MQTT 5 enhanced authentication (AUTH) at CONNECT and re-authentication.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{
    decode, ConnAck, ConnectReturnCode, Packet, ProtocolLevel, Publish, QoS, Subscribe,
    SubscribeFilter, TopicName,
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
    /// `Action::ResumePublishers` seen, on any shard.
    resumes: usize,
    /// What the shards sent the cluster link (`Settings::cluster_link`: the bus index after
    /// the shards), in order; the test answers for the link.
    to_link: Vec<(usize, BusMessage)>,
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
            resumes: 0,
            to_link: Vec::new(),
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

    /// `connect` with a will on `topic` (not retained).
    fn with_will(mut connect: Connect, topic: &str, payload: &str, qos: QoS) -> Connect {
        connect.will = Some(crate::protocol::LastWill {
            topic: TopicName::new(topic).expect("topic"),
            payload: Bytes::from(payload.to_string()),
            qos,
            retain: false,
            properties: None,
        });
        connect
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
        let outcome = self.shards[home].connect_encoded(conn, &connect, auth, self.now);
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
        self.shards[shard].handle_encoded(conn, &packet, self.now);
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
                        Action::Bus { to, message } if to >= self.shards.len() => {
                            self.to_link.push((shard, message))
                        }
                        Action::Bus { to, message } => self.bus.push_back((to, message)),
                        Action::ResumePublishers => self.resumes += 1,
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

/// The return codes of the first SUBACK among `packets`.
fn suback_codes(packets: &[Packet]) -> Vec<crate::protocol::SubscribeReturnCode> {
    packets
        .iter()
        .find_map(|p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .expect("SUBACK")
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

mod admin_verbs;
mod bytes_in;
mod cluster_session;
mod connect;
mod cross_shard;
mod durability;
mod enhanced_auth;
mod expiry;
mod flow_control;
mod listing;
mod mqtt5;
mod mqtt5_flow;
mod publish;
mod sessions;
mod shared;
mod shared_cluster;
mod subscribe;
mod v5_recovery;

// ---- authentication verdicts, topic checks and event plugins ----------------------------------
mod plugins;
