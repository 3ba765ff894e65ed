//! Deterministic simulation of the sans-IO broker: several shards and hundreds of clients in one
//! thread, a fake clock, a bus that delivers in any order the real one could, and invariants checked
//! after every step.
//!
//! A seed drives everything (a small xorshift, no `rand`), so a failure replays exactly:
//! ```text
//! AMQTT_SIM_SEED=1234 cargo test --lib broker::simulation       # one seed, trace on failure
//! AMQTT_SIM_SEED=1234 AMQTT_SIM_TRACE=1 cargo test --lib broker::simulation -- --nocapture
//! AMQTT_SIM_SEEDS=5000 cargo test --release --lib broker::simulation   # many seeds
//! ```
//! (`AMQTT_SIM_FIRST` sets the first seed of a run, `AMQTT_SIM_STEPS` its length.)
//!
//! # The model
//! Clients behave like real ones: they ack every QoS 1/2 message they read, keep their in-flight
//! state across reconnects when the broker reports a session present, and then re-send unacknowledged
//! PUBLISHes with DUP and pending PUBRELs. Connections are dropped mid-flow (unread bytes are lost),
//! taken over, timed out and closed for protocol errors. The bus keeps FIFO order per sender, receiver
//! and lane, as the crossbeam lanes of `shards::bus` do, and otherwise interleaves freely (other
//! senders, the other lane, client input, output flushes and time).
//!
//! # The invariants
//! Safety, after every step: every PUBLISH a client reads is a message that was published, on a topic
//! its session subscribed to at some moment between the message's routing and its arrival, at no
//! more than that subscription's QoS; QoS 2 reaches the application exactly once; no message is sent
//! fresh (non-DUP) more often than it was routed; a packet id is not reused while the client still
//! holds it; one publisher's messages on one topic arrive in the order the broker took them (per
//! delivered QoS); acknowledgements and SUBACK/UNSUBACK answer what was sent, in order; CONNACK's
//! session-present flag is right; a session lives on its client id's home shard and nowhere else;
//! keep-alive closes neither early nor late; windows and queues stay within their limits. Whenever
//! the bus has just emptied: every shard holds the same retained messages, the last ones published,
//! and each shard's table of remote interest equals the other shards' filters.
//!
//! Liveness, at the end (every persistent session reconnected, everything acked and flushed): each
//! QoS ≥ 1 message published after a subscriber held its SUBACK reached that subscriber at least once,
//! unless its session ended or its matching subscriptions changed meanwhile, or the broker counted
//! a queue-full drop (or, for a message past its expiry, an expiry drop) on that shard; no message
//! is left in flight or queued, no SUBACK is left waiting.
//!
//! Shared subscriptions: `groups.rs` says what the model checks of them; session expiry:
//! `expiry.rs`; MQTT 5 clients (a share of the clients on most seeds): `v5_clients.rs`; the
//! Message Expiry Interval of their messages (not sent once past, counted down, excused at the
//! end only when past): `msg_expiry.rs`.
//!
//! Documented behaviour the model follows: QoS 0 to an offline session is dropped; a SUBACK waits for
//! the other shards' confirmation (so only a held SUBACK creates an obligation); a takeover closes the
//! old connection and publishes its will; a clean session disappears when its connection ends.
//!
//! # What it found
//! Each fault the simulation found is fixed and kept as a small test in `reductions.rs`.
//! `AMQTT_SIM_RETAIN_ANYWHERE=1` makes every seed retain from any shard (by default odd seeds
//! do; even seeds keep a topic's retained publishers on one shard, see `may_retain`).
//!
//! # Persistence and crashes
//! Half the seeds (`AMQTT_SIM_PERSIST=1`: all) run with persistence on (`crash.rs`): the harness
//! plays the journal task (takes a shard's records, reports them durable later, out of step across
//! shards, so acknowledgements are really held back), and the whole broker crashes once or twice
//! (`AMQTT_SIM_CRASH_AT=steps`): only durable records survive, plus a torn part of those taken;
//! recovery folds, merges and splits them as the server does and new cores restore their parts.
//! Across a crash: SUBACKed subscriptions of persistent sessions survive, every message acked to
//! its publisher is still queued for each session owed it, QoS 2 ids answered with PUBREC are
//! still held, and an acked retained message is still retained; exactly-once keeps holding, except
//! for a QoS 2 message routed again because its PUBREC was never read (or queued in a session a
//! clean start ended and a crash brought back: handed on again when that session ends, it also
//! counts as routed again for "sent fresh at most as often as routed"). `replay.rs`: every record taken, folded, equals
//! the shards' snapshots. A test crashes a short run at each of its steps in turn.
//!
//! # Layout
//! `mod.rs` holds the seeded generator, the model's types, the `Sim` state and its construction,
//! small helpers and the seed sweep; `run.rs` chooses and performs the steps and brings the
//! cluster to rest; `clients.rs` is what clients do and send; `obligations.rs` records what the
//! broker owes each session; `reads.rs` checks and answers what clients read; `checks.rs` holds
//! the cluster-wide invariants after each step and at the end; `crash.rs` the journal, crashes and
//! recovery; `replay.rs` replay = live; `report.rs` the trace, failure report and summary;
//! `groups.rs` share groups; `v5_clients.rs` and `msg_expiry.rs` MQTT 5 clients and message
//! expiry; `reductions.rs` the small tests that replay what the simulation found.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::protocol::{
    decode, ConnectReturnCode, LastWill, Packet, ProtocolLevel, PubAck, PubComp, PubRec, PubRel,
    Publish, QoS, Subscribe, SubscribeFilter, SubscribeReturnCode, TopicName, Unsubscribe,
};

/// Topics published to: overlapping levels, an empty level at each end.
const TOPICS: [&str; 10] = [
    "a", "a/b", "a/c", "a/b/c", "b", "b/a", "c/a/b", "/a", "a/", "x/y/z",
];
/// Filters subscribed to: exact, `+` and `#`, matching an empty level; from [`SHARED_FROM`] on,
/// shared subscriptions (`groups.rs`).
#[rustfmt::skip]
const FILTERS: [&str; 15] = [
    "a", "a/b", "a/+", "a/#", "#", "+/a", "+/+/b", "b/#", "+", "/+", "x/y/z", "a/b/c",
    "$share/g/a/#", "$share/g/+", "$share/h/#",
];
const SHARED_FROM: usize = 12;

/// How many seeds `cargo test` runs by default; `AMQTT_SIM_SEEDS` overrides.
const DEFAULT_SEEDS: u64 = 200;
/// Steps per seed by default; `AMQTT_SIM_STEPS` overrides.
const DEFAULT_STEPS: usize = 1000;
/// Step descriptions kept for a failure report.
const TRACE_LEN: usize = 80;

// ---- the model ------------------------------------------------------------------------------------

/// One application message (a PUBLISH or a will), named by its payload `m<index>`.
struct MsgInfo {
    /// Publisher stream: client index × 2, + 1 for wills (ordered separately from publishes).
    stream: usize,
    /// Position in its stream by first routing (0 until routed): the order subscribers must see.
    seq: u64,
    topic: usize,
    qos: QoS,
    retain: bool,
    /// How many times the broker routed it (a QoS 1 re-sent after a reconnect is routed again).
    routings: u32,
    /// The step of its first routing.
    routed_at: usize,
    /// Its Message Expiry Interval in seconds (an MQTT 5 client's, `msg_expiry.rs`).
    expiry: Option<u32>,
}

/// A span of steps during which a session held a subscription, with its grant.
#[derive(Debug, Clone, Copy)]
struct Held {
    from: usize,
    /// The step of the UNSUBSCRIBE or replacing SUBSCRIBE; `None` while held.
    until: Option<usize>,
    granted: QoS,
}

/// What a session's model knows of one of its filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    None,
    /// SUBSCRIBE handled, SUBACK not read yet (or lost with its connection).
    Pending,
    /// The client read the SUBACK with this grant, and has not touched the filter since.
    Confirmed(QoS),
}

struct SessionModel {
    epoch: u64,
    clean: bool,
    conn: Option<ConnId>,
    subs: Vec<Sub>,
    /// Per filter: the request number that last changed it (a SUBACK confirms only the latest).
    changed_by: Vec<u64>,
    /// Incoming QoS 2 packet ids the broker holds until PUBREL (mirrors `Session::incoming_qos2`).
    in_q2: HashSet<u16>,
    /// When the broker closed its last connection, while it is offline (`expiry.rs`).
    offline_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet each state awaits
enum OutState {
    AwaitPubAck,
    AwaitPubRec,
    AwaitPubComp,
}

/// A QoS 1/2 PUBLISH this client sent and the broker has not finished acknowledging.
struct OutPub {
    packet_id: u16,
    msg: usize,
    state: OutState,
}

enum Request {
    Subscribe {
        packet_id: u16,
        /// (filter, granted QoS, request number)
        filters: Vec<(usize, QoS, u64)>,
    },
    Unsubscribe {
        packet_id: u16,
    },
}

struct ClientModel {
    id: String,
    home: usize,
    /// It speaks MQTT 5 (`v5_clients.rs`).
    v5: bool,
    /// The connection the client uses now (it may be closing: its last bytes are still read).
    conn: Option<ConnId>,
    // Kept across reconnects while the broker keeps the session:
    out: Vec<OutPub>,
    /// Incoming QoS 2 ids received and not yet released (the client's duplicate filter).
    in_q2: HashSet<u16>,
    /// Incoming packet ids whose final ack has not been sent yet, with their message.
    held: HashMap<u16, usize>,
    next_packet_id: u16,
    // Per connection:
    /// Acks and PUBRELs read or due but not sent yet.
    pending: VecDeque<Packet>,
    requests: VecDeque<Request>,
    /// PUBRELs sent for ids nobody held: each is still answered with a PUBCOMP.
    stray_pubcomps: Vec<u16>,
    /// A clean CONNECT ended its persistent session and no CONNACK has told it the session is
    /// gone since: a crash may bring that session back, with what the client discarded.
    drop_unconfirmed: bool,
}

struct ConnModel {
    client: usize,
    shard: usize,
    epoch: u64,
    will: Option<usize>,
    keep_alive: u16,
    last_activity: Instant,
    /// The broker has not decided to close it.
    active: bool,
    /// The broker has forgotten it (`handle_closed`).
    forgotten: bool,
    got_connack: bool,
    expect_present: bool,
    /// Its outbox's length when the clock last moved, since its last flush (`msg_expiry.rs`).
    marks: Vec<(usize, Instant)>,
}

#[derive(Default)]
struct Receipt {
    /// Application deliveries of live (non-retained) copies.
    live: u32,
    /// Live copies that arrived without DUP.
    fresh: u32,
    /// Some delivery was at QoS 2.
    qos2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obligation {
    Open,
    Met,
    /// The session ended or its matching subscriptions changed: nothing is owed any more.
    Void,
}

struct Config {
    shards: usize,
    clients: usize,
    steps: usize,
    settings: Settings,
}

struct Sim {
    seed: u64,
    rng: Rng,
    cfg: Config,
    cores: Vec<BrokerCore>,
    /// One FIFO per (receiving shard, sending shard, lane): see `bus_queue`.
    bus: Vec<VecDeque<BusMessage>>,
    /// Connections with bytes (or a close) waiting to be taken.
    flush: BTreeSet<ConnId>,
    now: Instant,
    step: usize,
    next_conn: ConnId,
    next_epoch: u64,
    next_request: u64,
    clients: Vec<ClientModel>,
    conns: BTreeMap<ConnId, ConnModel>,
    sessions: Vec<Option<SessionModel>>,
    /// Per session epoch, per filter: when it was subscribed and at what QoS.
    history: HashMap<u64, Vec<Vec<Held>>>,
    /// Per topic: the retained message every shard must hold once the bus is empty (exact while
    /// a topic's retained publishers share one shard, see `may_retain`).
    retained: Vec<Option<usize>>,
    msgs: Vec<MsgInfo>,
    /// Per publisher stream: messages routed so far.
    stream_seq: Vec<u64>,
    /// PUBLISHes the cores routed from their bytes (`handlers/publish.rs`, `handle_borrowed`).
    published_in_place: u64,
    /// (client, msg) → what reached the application.
    receipts: HashMap<(usize, usize), Receipt>,
    /// (client, stream, topic, delivered QoS) → highest seq first received live.
    order: HashMap<(usize, usize, usize, QoS), u64>,
    /// (client, msg) → (session epoch, state).
    obligations: HashMap<(usize, usize), (u64, Obligation)>,
    /// Per client: messages with an open obligation.
    open: Vec<BTreeSet<usize>>,
    /// Per filter: clients whose current session holds a confirmed subscription, with its grant.
    confirmed: Vec<BTreeMap<usize, QoS>>,
    /// `matches[topic][filter]`.
    matches: Vec<Vec<bool>>,
    topic_names: Vec<TopicName>,
    trace: VecDeque<String>,
    trace_all: bool,
    retain_anywhere: bool,
    /// Something went on the bus since the last time it was empty.
    bus_used: bool,
    /// Wills published, takeovers and keep-alive timeouts the model expects the counters to show.
    wills: u64,
    takeovers: u64,
    timeouts: u64,
    actions: Vec<Action>,
    /// With persistence on: the journal the harness keeps, and the crashes (`crash.rs`).
    durability: Option<crash::Durability>,
    /// Messages whose publisher read the PUBACK or PUBREC: the broker promised to keep them.
    acked: HashSet<usize>,
    /// What the model knows of share groups (`groups.rs`).
    groups: groups::GroupModel,
    /// QoS 2 messages a crash lets reach a subscriber twice: the broker forgot it routed them
    /// (their publisher never read the PUBREC) and routes them again when re-sent, or a session
    /// its client had discarded (a clean CONNECT whose `SessionDrop` was lost) came back with them.
    rerouted: HashSet<usize>,
    /// Which clients speak MQTT 5, and what their messages carry (`v5_clients.rs`).
    v5: v5_clients::V5Plan,
    /// What the model knows of message expiry (`msg_expiry.rs`).
    expiring: msg_expiry::ExpiryModel,
}

/// Fails the run with the seed, the step, the last steps, and how to replay it.
macro_rules! fail {
    ($sim:expr, $($arg:tt)*) => {
        $sim.fail(format!($($arg)*))
    };
}

// After `fail!`, which they use.
mod checks;
mod clients;
mod crash;
mod expiry;
mod groups;
mod msg_expiry;
mod obligations;
mod reads;
mod reductions;
mod replay;
mod report;
mod rng;
mod run;
mod v5_clients;

use groups::member_filter;
use msg_expiry::Seen;
use report::{describe, describe_bus, show_store};
use rng::Rng;

impl Sim {
    /// A run of `seed`; persistence on for the seeds `persistent_seed` names.
    fn new(seed: u64, steps: Option<usize>) -> Sim {
        Sim::with_persistence(seed, steps, crash::persistent_seed(seed))
    }

    /// With `persistence`, the cores journal, the harness plays the journal task, and the broker
    /// crashes once or twice at random steps (`crash.rs`).
    fn with_persistence(seed: u64, steps: Option<usize>, persistence: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let shards = 2 + rng.below(3);
        let clients = 120 + rng.below(180);
        // Small windows and, in one run out of four, small queues, so both limits are reached.
        let settings = Settings {
            max_inflight: 1 + rng.below(6) as u16,
            max_queued_messages: if rng.chance(25) {
                2 + rng.below(20)
            } else {
                100_000
            },
            max_qos: if rng.chance(15) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            },
            // The simulated bus may hold a message for many ticks of the fake clock (minutes);
            // the real one delivers in microseconds to milliseconds, far within the default.
            retained_tombstone_ttl: Duration::from_secs(365 * 24 * 3600),
            persistence,
            session_expiry_interval: expiry::expiry_for(seed, persistence),
            ..Settings::default()
        };
        let cfg = Config {
            shards,
            clients,
            steps: steps.unwrap_or(DEFAULT_STEPS),
            settings,
        };
        let topic_names: Vec<TopicName> = TOPICS
            .iter()
            .map(|t| TopicName::new(t).expect("valid topic"))
            .collect();
        let matches = topic_names
            .iter()
            .map(|t| {
                (0..FILTERS.len())
                    .map(|f| groups::filter_matches(f, t))
                    .collect()
            })
            .collect();
        let mut v5 = v5_clients::V5Plan::new(seed);
        let clients_model = (0..clients)
            .map(|i| {
                let id = format!("c{i}");
                ClientModel {
                    home: home_shard(&id, shards),
                    id,
                    v5: v5.next_client(),
                    conn: None,
                    out: Vec::new(),
                    in_q2: HashSet::new(),
                    held: HashMap::new(),
                    next_packet_id: 1,
                    pending: VecDeque::new(),
                    requests: VecDeque::new(),
                    stray_pubcomps: Vec::new(),
                    drop_unconfirmed: false,
                }
            })
            .collect();
        let now = Instant::now();
        let durability = persistence.then(|| {
            let mut durability = crash::Durability::new(shards, now);
            let steps = cfg.steps.max(2);
            let crashes = 1 + rng.below(2);
            durability.crash_at = (0..crashes)
                .map(|_| steps / 10 + rng.below(steps - steps / 10))
                .collect();
            if let Ok(at) = std::env::var("AMQTT_SIM_CRASH_AT") {
                durability.crash_at = at
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
            }
            durability
        });
        let mut sim = Sim {
            seed,
            rng,
            cores: (0..shards)
                .map(|i| BrokerCore::new(cfg.settings.clone(), i, shards, seed))
                .collect(),
            bus: (0..shards * shards * 2).map(|_| VecDeque::new()).collect(),
            cfg,
            flush: BTreeSet::new(),
            now,
            step: 0,
            next_conn: 1,
            next_epoch: 1,
            next_request: 1,
            clients: clients_model,
            conns: BTreeMap::new(),
            sessions: (0..clients).map(|_| None).collect(),
            history: HashMap::new(),
            retained: vec![None; TOPICS.len()],
            msgs: Vec::new(),
            stream_seq: vec![0; clients * 2],
            published_in_place: 0,
            receipts: HashMap::new(),
            order: HashMap::new(),
            obligations: HashMap::new(),
            open: (0..clients).map(|_| BTreeSet::new()).collect(),
            confirmed: (0..FILTERS.len()).map(|_| BTreeMap::new()).collect(),
            matches,
            topic_names,
            trace: VecDeque::new(),
            trace_all: std::env::var_os("AMQTT_SIM_TRACE").is_some(),
            // Odd seeds let any client retain on any topic: the stores must still agree, but
            // which of two concurrent updates wins is the versions' choice, not the model's.
            retain_anywhere: seed % 2 == 1
                || std::env::var_os("AMQTT_SIM_RETAIN_ANYWHERE").is_some(),
            bus_used: false,
            wills: 0,
            takeovers: 0,
            timeouts: 0,
            actions: Vec::new(),
            durability,
            acked: HashSet::new(),
            rerouted: HashSet::new(),
            groups: groups::GroupModel::default(),
            v5,
            expiring: msg_expiry::ExpiryModel::new(shards),
        };
        sim.anchor_wall_clock();
        // The runtime ticks every shard from its start: each knows the time before any message
        // reaches it (a message's expiry counts from then).
        for core in &mut sim.cores {
            core.handle_tick(now);
        }
        sim
    }
}

/// 1.5 × keep-alive [MQTT-3.1.2-24].
fn keep_alive_limit(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}

const PROTOCOL_MAX: usize = crate::protocol::PROTOCOL_MAX_PACKET_SIZE;

fn payload_of(m: usize) -> Bytes {
    Bytes::from(format!("m{m}"))
}

fn msg_of(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload.strip_prefix(b"m")?)
        .ok()?
        .parse()
        .ok()
}

/// Interest withdrawals from one session's removal come out in hash-map order; their relative
/// order means nothing (different filters), so it is fixed here to keep replays exact.
fn canonical_interest_order(batch: &mut [(usize, BusMessage)]) {
    let key = |(to, m): &(usize, BusMessage)| match m {
        BusMessage::Interest {
            filter,
            added: false,
            token: None,
            ..
        } => Some((*to, filter.as_str().to_owned())),
        _ => None,
    };
    let mut start = 0;
    while start < batch.len() {
        if key(&batch[start]).is_none() {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < batch.len() && key(&batch[end]).is_some() {
            end += 1;
        }
        batch[start..end].sort_by_key(|entry| key(entry));
        start = end;
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs one seed; the panic of a violated invariant carries the replay command.
fn run_seed(seed: u64, steps: Option<usize>) -> Sim {
    let mut sim = Sim::new(seed, steps);
    sim.run();
    sim
}

#[test]
fn simulated_cluster_keeps_its_guarantees_for_every_seed() {
    let steps = env_u64("AMQTT_SIM_STEPS").map(|s| s as usize);
    if let Some(seed) = env_u64("AMQTT_SIM_SEED") {
        println!("{}", run_seed(seed, steps).summary());
        return;
    }
    let first = env_u64("AMQTT_SIM_FIRST").unwrap_or(0);
    let count = env_u64("AMQTT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let (mut in_place, mut received) = (0, 0);
    let (mut shared, mut handed_on, mut expired) = (0, 0, 0);
    let (mut messages_expired, mut counted_down) = (0, 0);
    for seed in first..first + count {
        let sim = run_seed(seed, steps);
        let total = |f: fn(&Stats) -> u64| sim.cores.iter().map(|c| f(&c.stats)).sum::<u64>();
        expired += total(|s| s.sessions_expired);
        in_place += sim.published_in_place;
        received += total(|s| s.publish_received);
        shared += total(|s| s.shared_deliveries);
        handed_on += total(|s| s.shared_redistributed);
        messages_expired += (0..sim.cores.len())
            .map(|s| sim.dropped_expired(s))
            .sum::<u64>();
        counted_down += sim.expiring.counted_down;
    }
    // Both ways of taking a PUBLISH must have been exercised for the invariants to cover them.
    assert!(
        in_place > 0 && in_place < received,
        "{in_place} of {received} PUBLISHes routed in place"
    );
    // Share groups got messages, and some went on to another member.
    assert!(
        shared > 0 && handed_on > 0,
        "{shared} shared deliveries, {handed_on} handed on"
    );
    // Sessions expired, so the expiry invariants were exercised (not with persistence on
    // every seed: `expiry_for`).
    let persist_all = std::env::var_os("AMQTT_SIM_PERSIST").is_some();
    assert!(
        count < 4 || persist_all || expired > 0,
        "no session expired"
    );
    // Messages expired while they waited, and MQTT 5 clients read intervals counted down.
    assert!(
        count < 20 || (messages_expired > 0 && counted_down > 0),
        "{messages_expired} copies expired, {counted_down} read counted down"
    );
}
