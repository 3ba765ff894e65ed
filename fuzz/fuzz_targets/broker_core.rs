//! Fuzz target `broker_core`: the input is a program of operations on a two-shard `BrokerCore`.
//!
//! The first bytes choose the settings (tiny windows, queues and outboxes, so every limit is hit);
//! then each operation is one byte followed by its arguments: CONNECT (client id from a small set,
//! empty and over-long ones included, clean flag, keep-alive, will, protocol level, credentials,
//! the listener's identity rule, the authentication verdict, the shard that accepted it, or raw
//! first bytes), a packet on a connection (built from the input and encoded, or raw bytes; either
//! way cut at an input-chosen point, so frames arrive in pieces), a dropped connection, a broken
//! transport, time passing, bus delivery, an outbox flush. Only the public API is used, as the
//! server shell uses it: bytes go in through `handle_first_bytes` + `handle_connect` and
//! `handle_bytes`, the real entries.
//!
//! Checked, besides "no panic": every byte the broker writes decodes to packets that round-trip,
//! each connection starts with CONNACK, a forgotten connection has no outbox, an accepted client id
//! lives on its home shard; and once everything is delivered and every connection closed, no
//! connection or online session is left, windows and queues are within their limits, and the
//! counters add up.
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqtt::broker::{
    home_shard, Action, AuthVerdict, BrokerCore, BusMessage, ConnId, FirstPacket, ListenerIdentity,
    Next, Settings, Stats,
};
use amqtt::protocol::{
    decode, Connect, LastWill, Packet, ProtocolLevel, PubAck, PubComp, PubRec, PubRel, Publish,
    QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode, TopicFilter, TopicName, UnsubAck,
    Unsubscribe, PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

const SHARDS: usize = 2;
const CLIENT_IDS: [&str; 8] = [
    "a",
    "b",
    "c",
    "d",
    "e",
    "",
    "a-client-id-longer-than-23-characters",
    "\u{e9}t\u{e9}",
];
const TOPICS: [&str; 7] = ["t", "t/a", "t/b", "x", "/", "$SYS/x", "t/a/b"];
const FILTERS: [&str; 9] = ["t", "t/+", "t/#", "#", "+", "$SYS/#", "x", "+/a/#", "/"];
/// Most connections an input may open (ids are reused for nothing: each CONNECT is a new one).
const MAX_CONNS: usize = 24;

/// Reads the input front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = self.below(max + 1).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }

    fn qos(&mut self) -> QoS {
        match self.below(3) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    /// Packet ids from a small range, so that acknowledgements often name something in flight.
    fn packet_id(&mut self) -> u16 {
        1 + self.below(8) as u16
    }

    fn topic(&mut self) -> TopicName {
        TopicName::new(TOPICS[self.below(TOPICS.len())]).expect("valid topic")
    }

    fn filter(&mut self) -> TopicFilter {
        TopicFilter::new(FILTERS[self.below(FILTERS.len())]).expect("valid filter")
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Conn {
    shard: usize,
    id: ConnId,
    /// Bytes sent and not handled yet (the start of a packet), as the runtime's read buffer.
    unread: BytesMut,
    /// The runtime has called `handle_closed`: the core must not know it any more.
    forgotten: bool,
    got_connack: bool,
}

struct Harness {
    cores: Vec<BrokerCore>,
    bus: Vec<VecDeque<BusMessage>>,
    conns: Vec<Conn>,
    /// Connections with a pending `Action::Flush`.
    flush: Vec<ConnId>,
    now: Instant,
    next_conn: ConnId,
    settings: Settings,
    actions: Vec<Action>,
}

impl Harness {
    fn new(input: &mut Input) -> Harness {
        let settings = Settings {
            max_inflight: 1 + input.below(4) as u16,
            max_queued_messages: input.below(6),
            max_qos: input.qos(),
            allow_anonymous: input.below(4) != 0,
            outbox_limit: [0, 64, 4096, 1 << 20][input.below(4)],
            ..Settings::default()
        };
        Harness {
            cores: (0..SHARDS)
                .map(|i| BrokerCore::new(settings.clone(), i, SHARDS, 7))
                .collect(),
            bus: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            conns: Vec::new(),
            flush: Vec::new(),
            now: Instant::now(),
            next_conn: 1,
            settings,
            actions: Vec::new(),
        }
    }

    fn collect(&mut self, shard: usize) {
        self.cores[shard].poll_actions(&mut self.actions);
        for action in self.actions.drain(..) {
            match action {
                Action::Flush(conn) => {
                    if !self.flush.contains(&conn) {
                        self.flush.push(conn);
                    }
                }
                Action::Bus { to, message } => {
                    assert!(
                        to < SHARDS && to != shard,
                        "bus message from {shard} to {to}"
                    );
                    self.bus[to].push_back(message);
                }
                // The runtime wakes the publishers it holds; the harness holds none (it hands
                // every byte to the core again at once).
                Action::ResumePublishers => {}
            }
        }
    }

    fn collect_all(&mut self) {
        for shard in 0..SHARDS {
            self.collect(shard);
        }
    }

    /// A live connection chosen by the input.
    fn pick(&mut self, input: &mut Input) -> Option<usize> {
        let live: Vec<usize> = (0..self.conns.len())
            .filter(|&i| !self.conns[i].forgotten)
            .collect();
        (!live.is_empty()).then(|| live[input.below(live.len())])
    }

    fn connect(&mut self, input: &mut Input) {
        if self.conns.len() >= MAX_CONNS {
            return;
        }
        let client_id = CLIENT_IDS[input.below(CLIENT_IDS.len())].to_string();
        let flags = input.byte();
        let will = (flags & 2 != 0).then(|| LastWill {
            topic: input.topic(),
            payload: Bytes::copy_from_slice(input.bytes(4)),
            qos: input.qos(),
            retain: input.bit(),
            properties: None,
        });
        let connect = Connect {
            protocol: if flags & 4 != 0 {
                ProtocolLevel::V31
            } else {
                ProtocolLevel::V311
            },
            clean_session: flags & 1 != 0,
            keep_alive: [0, 1, 10, 65535][input.below(4)],
            client_id: client_id.clone(),
            will,
            username: (flags & 8 != 0).then(|| "user".to_string()),
            password: (flags & 16 != 0).then(|| Bytes::from_static(b"pw")),
        };
        let auth = if flags & 32 != 0 {
            AuthVerdict::Denied
        } else {
            AuthVerdict::Allowed
        };
        let identity = match input.below(4) {
            0 => ListenerIdentity::Certificate {
                common_name: input.bit().then(|| "cn".to_string()),
            },
            _ => ListenerIdentity::Connect,
        };
        let raw = flags & 64 != 0;
        let mut bytes = BytesMut::new();
        if raw {
            // Raw first bytes: another packet, garbage, a CONNECT's start.
            bytes.extend_from_slice(input.bytes(24));
        } else {
            let mut connect = connect;
            if flags & 128 != 0 {
                connect.protocol = ProtocolLevel::V5;
            }
            Packet::Connect(Box::new(connect))
                .encode(&mut bytes)
                .expect("CONNECT encodes");
        }
        // Accepted on whichever shard the kernel picked; answered on the home shard.
        let accepted_on = input.below(SHARDS);
        let pending = match self.cores[accepted_on].handle_first_bytes(&bytes, &identity) {
            FirstPacket::Incomplete | FirstPacket::Close => return,
            FirstPacket::Connect(pending) => pending,
        };
        let shard = pending.home();
        let pending = if shard == accepted_on {
            pending
        } else {
            // Handed off with its bytes, read again there.
            match self.cores[shard].handle_first_bytes(&bytes, &identity) {
                FirstPacket::Connect(again) => {
                    assert_eq!(again.home(), shard, "the home shard agrees");
                    again
                }
                other => panic!("the home shard read the first packet as {other:?}"),
            }
        };
        assert!(pending.byte_len() <= bytes.len());
        let id = self.next_conn;
        self.next_conn += 1;
        let outcome = self.cores[shard].handle_connect(id, pending, auth, self.now);
        if outcome.is_accepted() && !raw && !client_id.is_empty() {
            assert_eq!(home_shard(&client_id, SHARDS), shard);
            let stored = self.cores[shard]
                .client_id_of(id)
                .expect("accepted client id");
            assert_eq!(&*stored, client_id.as_str());
        }
        self.conns.push(Conn {
            shard,
            id,
            unread: BytesMut::new(),
            forgotten: false,
            got_connack: false,
        });
        self.collect(shard);
    }

    fn packet(&mut self, input: &mut Input) {
        let Some(i) = self.pick(input) else {
            return;
        };
        let packet = match input.below(12) {
            0 | 1 => {
                let qos = input.qos();
                Packet::Publish(Publish {
                    dup: input.bit(),
                    qos,
                    retain: input.bit(),
                    topic: input.topic(),
                    packet_id: (qos != QoS::AtMostOnce).then(|| input.packet_id()),
                    payload: Bytes::copy_from_slice(input.bytes(8)),
                })
            }
            2 => Packet::Subscribe(Subscribe {
                packet_id: input.packet_id(),
                filters: (0..=input.below(3))
                    .map(|_| SubscribeFilter {
                        filter: input.filter(),
                        qos: input.qos(),
                    })
                    .collect(),
            }),
            3 => Packet::Unsubscribe(Unsubscribe {
                packet_id: input.packet_id(),
                filters: (0..=input.below(2)).map(|_| input.filter()).collect(),
            }),
            4 => Packet::PubAck(PubAck {
                packet_id: input.packet_id(),
            }),
            5 => Packet::PubRec(PubRec {
                packet_id: input.packet_id(),
            }),
            6 => Packet::PubRel(PubRel {
                packet_id: input.packet_id(),
            }),
            7 => Packet::PubComp(PubComp {
                packet_id: input.packet_id(),
            }),
            8 => match input.below(3) {
                0 => Packet::PingReq,
                1 => Packet::Disconnect,
                _ => Packet::PingResp,
            },
            9 => match input.below(3) {
                0 => Packet::SubAck(SubAck {
                    packet_id: input.packet_id(),
                    return_codes: vec![SubscribeReturnCode::Failure],
                }),
                1 => Packet::UnsubAck(UnsubAck {
                    packet_id: input.packet_id(),
                }),
                _ => Packet::Connect(Box::new(Connect {
                    protocol: ProtocolLevel::V311,
                    clean_session: true,
                    keep_alive: 0,
                    client_id: "again".into(),
                    will: None,
                    username: None,
                    password: None,
                })),
            },
            _ => {
                // Raw bytes, as the reader hands them over.
                let raw = input.bytes(24).to_vec();
                self.feed(i, &raw, input);
                return;
            }
        };
        let mut encoded = BytesMut::new();
        packet.encode(&mut encoded).expect("a built packet encodes");
        self.feed(i, &encoded, input);
    }

    /// Hands `bytes` to connection `i`'s core in two reads, cut where the input says.
    fn feed(&mut self, i: usize, bytes: &[u8], input: &mut Input) {
        let (shard, id) = (self.conns[i].shard, self.conns[i].id);
        let cut = input.below(bytes.len() + 1);
        for part in [&bytes[..cut], &bytes[cut..]] {
            self.conns[i].unread.extend_from_slice(part);
            loop {
                let unread = &mut self.conns[i].unread;
                let before = unread.len();
                let handled = self.cores[shard].handle_bytes(id, unread, self.now);
                assert!(unread.len() <= before);
                self.collect(shard);
                match handled.next {
                    Next::ReadMore => break,
                    // The runtime waits, then calls again.
                    Next::PausePublisher => continue,
                    // The runtime stops reading.
                    Next::Stop => {
                        self.conns[i].unread.clear();
                        return;
                    }
                }
            }
        }
    }

    fn drop_connection(&mut self, input: &mut Input) {
        let Some(i) = self.pick(input) else {
            return;
        };
        self.close(i);
    }

    /// The runtime forgets a connection (EOF, error, or after its closing flush).
    fn close(&mut self, i: usize) {
        let (shard, id) = (self.conns[i].shard, self.conns[i].id);
        self.cores[shard].handle_closed(id);
        self.conns[i].forgotten = true;
        self.flush.retain(|&c| c != id);
        assert!(
            self.cores[shard].take_outbox(id).is_none(),
            "a forgotten connection still has an outbox"
        );
        self.collect(shard);
    }

    /// The transport's framing broke (the runtime reports it).
    fn protocol_error(&mut self, input: &mut Input) {
        let Some(i) = self.pick(input) else {
            return;
        };
        let (shard, id) = (self.conns[i].shard, self.conns[i].id);
        self.cores[shard].handle_protocol_error(id);
        self.collect(shard);
    }

    fn tick(&mut self, input: &mut Input) {
        self.now += Duration::from_millis(u64::from(input.byte()) * 250);
        for shard in 0..SHARDS {
            self.cores[shard].handle_tick(self.now);
            self.collect(shard);
        }
    }

    fn deliver_one(&mut self, input: &mut Input) {
        let to = input.below(SHARDS);
        if let Some(message) = self.bus[to].pop_front() {
            self.cores[to].handle_bus(message);
            self.collect(to);
        }
    }

    fn flush_one(&mut self, input: &mut Input) {
        if self.flush.is_empty() {
            return;
        }
        let conn = self.flush.swap_remove(input.below(self.flush.len()));
        self.flush_conn(conn);
    }

    /// Takes an outbox and checks what a client would read from it.
    fn flush_conn(&mut self, conn: ConnId) {
        let Some(i) = self.conns.iter().position(|c| c.id == conn) else {
            panic!("flush for connection {conn} never opened");
        };
        let shard = self.conns[i].shard;
        let Some((mut bytes, close)) = self.cores[shard].take_outbox(conn) else {
            assert!(
                self.conns[i].forgotten,
                "live connection {conn} has no outbox"
            );
            return;
        };
        assert!(
            !self.conns[i].forgotten,
            "forgotten connection {conn} has an outbox"
        );
        loop {
            match decode(&mut bytes, PROTOCOL_MAX_PACKET_SIZE) {
                Ok(Some(packet)) => {
                    if !self.conns[i].got_connack {
                        assert!(
                            matches!(packet, Packet::ConnAck(_)),
                            "connection {conn} began with {packet:?}"
                        );
                        self.conns[i].got_connack = true;
                    }
                    let mut encoded = BytesMut::new();
                    packet.encode(&mut encoded).expect("re-encodes");
                    assert_eq!(
                        decode(&mut encoded, PROTOCOL_MAX_PACKET_SIZE),
                        Ok(Some(packet))
                    );
                }
                Ok(None) => break,
                Err(error) => panic!("the broker wrote bytes that do not decode: {error}"),
            }
        }
        assert!(bytes.is_empty(), "the broker wrote a partial packet");
        if close {
            self.close(i);
        }
    }

    /// Delivers the bus and flushes outboxes until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for to in 0..SHARDS {
                while let Some(message) = self.bus[to].pop_front() {
                    self.cores[to].handle_bus(message);
                    self.collect(to);
                    moved = true;
                }
            }
            while let Some(conn) = self.flush.pop() {
                self.flush_conn(conn);
                moved = true;
            }
            self.collect_all();
            if !moved {
                return;
            }
        }
        panic!("the cores never came to rest");
    }

    fn check_at_rest(&self) {
        let max_inflight = usize::from(self.settings.max_inflight);
        for (shard, core) in self.cores.iter().enumerate() {
            let sessions = core.session_count();
            assert!(core.online_session_count() <= core.connection_count());
            assert!(core.inflight_count() <= sessions * max_inflight);
            // Retained messages queued after a SUBACK are outside the queue limits; a session
            // that is behind (holding publishers back) may hold BEHIND_SLACK times them.
            let limited = core.queued_count() - core.queued_retained_count();
            let slack = amqtt::broker::flow_control::BEHIND_SLACK;
            assert!(limited <= sessions * self.settings.max_queued_messages * slack);
            let open = self
                .conns
                .iter()
                .filter(|c| c.shard == shard && !c.forgotten)
                .count();
            assert_eq!(core.connection_count(), open, "shard {shard} connections");
            check_stats(&core.stats);
        }
    }
}

fn check_stats(stats: &Stats) {
    assert_eq!(
        stats.connections_refused,
        stats.refused_by_code.iter().sum::<u64>()
    );
    assert_eq!(
        stats.publish_sent,
        stats.publish_sent_by_qos.iter().sum::<u64>()
    );
    assert!(stats.publish_received <= stats.publish_received_by_qos.iter().sum::<u64>());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut harness = Harness::new(&mut input);
    let mut ops = 0;
    while !input.is_empty() && ops < 2_000 {
        ops += 1;
        match input.below(16) {
            0..=2 => harness.connect(&mut input),
            3..=7 => harness.packet(&mut input),
            8 => harness.drop_connection(&mut input),
            9 => harness.protocol_error(&mut input),
            10 => harness.tick(&mut input),
            11 | 12 => harness.deliver_one(&mut input),
            _ => harness.flush_one(&mut input),
        }
    }
    harness.settle();
    harness.check_at_rest();
    // Every connection ends: nothing may stay connected or online.
    for i in 0..harness.conns.len() {
        if !harness.conns[i].forgotten {
            harness.close(i);
        }
    }
    harness.settle();
    harness.check_at_rest();
    for core in &harness.cores {
        assert_eq!(core.connection_count(), 0);
        assert_eq!(core.online_session_count(), 0);
    }
});
