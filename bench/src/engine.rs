//! The load engine: a few worker threads, each driving many MQTT connections with `mio` (epoll).
//!
//! A scenario turns its options into a [`Plan`]: the clients (what each publishes, subscribes and
//! which publisher streams it should receive), QoS, payload size and pacing. [`Engine::start`]
//! spreads the clients over `threads` workers by their `group` (a publisher and its subscriber in
//! `pairs` share a group, so a pair lives on one thread) and the caller then walks the engine
//! through its phases: `Connect` → `Run` → `Drain` → `Done`, or `Connect` → `Storm` rounds → `Done`.
//!
//! ## Pacing
//! * Closed loop (`Mode::Closed { inflight }`): a publisher keeps at most `inflight` messages
//!   *end to end* unsettled: sent but not yet seen (or skipped over) by every subscriber stream of
//!   that publisher. At QoS 1/2 the protocol window (awaiting PUBACK/PUBCOMP) is bounded by
//!   `inflight` too. So the generator never builds an unbounded queue inside the broker, and the
//!   latency of a closed-loop run is service time, not queueing we caused. When a window stays full
//!   for the stall timeout (lost QoS 0 messages, or a broker that lost QoS 1/2 ones) the window is
//!   reset and a `window_stalls` error counted.
//! * Open loop (`Mode::Open { rate }`): publisher `p` sends message `k` at the *scheduled* time
//!   `t_run + (k + p / publishers) / rate`, whatever happened to earlier messages, and stamps that
//!   scheduled time in the payload. A generator or broker that falls behind therefore shows up as
//!   latency (no coordinated omission). Wake-ups use a `timerfd` with 1 ns timer slack.
//!
//! ## TLS
//! With [`Plan::tls`] set (`mqtts://`) each connection is a [`Conn::Tls`]: a rustls
//! `ClientConnection` over the same non-blocking socket. The CONNECT goes into rustls' plaintext
//! buffer at once (it leaves after the handshake); the handshake advances on the socket's readiness
//! events like any other I/O. A certificate or record failure closes the connection, counts a
//! `tls` error and keeps the first message for the caller ([`Engine::tls_error`]). Plain
//! connections ([`Conn::Plain`]) take the same code path as before TLS existed.
//!
//! ## Cross-thread signalling
//! A subscriber that settles messages of a publisher on another worker stores the new high-water
//! mark in that stream's atomic, appends the publisher id to the owner's inbox and wakes it (only
//! when the inbox was empty). The owner re-checks blocked publishers from its inbox.
//!
//! ## Measurement
//! Every worker stamps with the one `CLOCK_MONOTONIC` clock. Sent messages count in the window when
//! their (scheduled) send time is in `[t_warm, t_end)`, deliveries when they are received in it.
//! Latency is recorded for unique deliveries of messages sent in the window, including those that
//! arrive during the drain after `t_end`.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::{cmp::Reverse, time::Duration};

use amqtt::protocol::{
    decode, peek_publish, Connect, ConnectReturnCode, Packet, ProtocolLevel, PubAck, PubComp,
    PubRec, PubRel, PublishRef, QoS, Subscribe, SubscribeFilter, SubscribeReturnCode, TopicFilter,
    TopicName, PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;
use serde::Serialize;

use crate::clock::now_ns;
use crate::payload::Header;
use crate::stats::Latency;
use crate::sys;
use crate::tls::TlsTarget;
use crate::tracker::{Outcome, StreamTracker};

const WAKER: Token = Token(usize::MAX);
const TIMER: Token = Token(usize::MAX - 1);
/// Stop adding messages to a connection's write buffer beyond this many bytes.
const WBUF_HIGH: usize = 256 * 1024;
/// Messages one publisher sends before yielding to the others on its thread.
const BATCH: u32 = 64;
/// Most unacknowledged QoS 1/2 messages of an open-loop publisher (packet ids are 16 bits).
const OPEN_LOOP_MAX_INFLIGHT: u32 = 60_000;
/// A connection that has not completed CONNECT → CONNACK in this time fails.
const CONNECT_TIMEOUT_NS: u64 = 15_000_000_000;
/// Housekeeping period (stalls, pings, timeouts, progress histogram hand-over).
const HOUSEKEEPING_NS: u64 = 100_000_000;

/// How publishers are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// As fast as possible with at most `inflight` unsettled messages per publisher.
    Closed { inflight: u32 },
    /// `rate` messages per second per publisher on a fixed schedule.
    Open { rate: f64 },
}

/// Where a delivery's latency is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyOrigin {
    /// The send time stamped in the payload (scheduled time in open loop).
    Payload,
    /// The moment this client sent its SUBSCRIBE (retained-message delivery).
    Subscribe,
}

/// What one client publishes.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Dense publisher id: index into [`Plan::publishers`].
    pub publisher: u32,
    pub topic: TopicName,
    pub retain: bool,
}

/// One client connection.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub client_id: String,
    pub clean_session: bool,
    /// Clients of one group run on the same worker thread.
    pub group: usize,
    pub publish: Option<PublishPlan>,
    pub subscribe: Vec<TopicFilter>,
    /// Send the SUBSCRIBE when the run starts rather than right after CONNACK.
    pub subscribe_at_run: bool,
    /// `(publisher, stream)`: every publisher stream this client's subscriptions receive; `stream`
    /// is this client's index among that publisher's receivers.
    pub streams: Vec<(u32, u32)>,
}

/// Everything the engine needs to run a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// `mqtts://`: connect with TLS (`None`: plain TCP).
    pub tls: Option<TlsTarget>,
    pub run_id: u32,
    pub qos: QoS,
    pub size: usize,
    pub mode: Mode,
    pub threads: usize,
    /// Pin worker `i` to the `i`-th CPU of the process's affinity mask.
    pub pin_threads: bool,
    pub keep_alive: u16,
    /// CONNECT handshakes in progress at once, over all workers.
    pub connect_concurrency: usize,
    /// New connections per second over all workers (`None`: as fast as the concurrency allows).
    pub connect_rate: Option<f64>,
    pub latency_origin: LatencyOrigin,
    pub clients: Vec<ClientPlan>,
    /// Number of receiving streams of each publisher, indexed by publisher id.
    pub publishers: Vec<u32>,
    /// A closed-loop window that makes no progress for this long is reset (and counted).
    pub stall_timeout_ns: u64,
}

/// Engine phases, set by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Connect = 0,
    Run = 1,
    Drain = 2,
    Storm = 3,
    Done = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Connect,
            1 => Phase::Run,
            2 => Phase::Drain,
            3 => Phase::Storm,
            _ => Phase::Done,
        }
    }
}

/// Error counts, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// TCP connect failed (refused, no route, out of ports or descriptors).
    pub connect_failed: u64,
    /// No CONNACK within 15 s.
    pub connect_timeout: u64,
    /// CONNACK with a non-zero return code.
    pub connack_refused: u64,
    /// SUBACK with a failure return code.
    pub suback_failed: u64,
    /// The broker closed (or reset) an established connection.
    pub disconnected: u64,
    /// Malformed or unexpected packets from the broker.
    pub protocol: u64,
    /// Closed-loop windows that stayed full for the stall timeout (lost messages).
    pub window_stalls: u64,
    /// A reconnect with `clean_session = false` found no session (`storm`).
    pub session_lost: u64,
    /// Payloads that are not ours (other run id or publisher, or too short).
    pub foreign: u64,
    /// TLS handshake (certificate) or record failures.
    pub tls: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect_failed
            + self.connect_timeout
            + self.connack_refused
            + self.suback_failed
            + self.disconnected
            + self.protocol
            + self.window_stalls
            + self.session_lost
            + self.foreign
            + self.tls
    }

    fn add(&mut self, o: &Errors) {
        self.connect_failed += o.connect_failed;
        self.connect_timeout += o.connect_timeout;
        self.connack_refused += o.connack_refused;
        self.suback_failed += o.suback_failed;
        self.disconnected += o.disconnected;
        self.protocol += o.protocol;
        self.window_stalls += o.window_stalls;
        self.session_lost += o.session_lost;
        self.foreign += o.foreign;
        self.tls += o.tls;
    }
}

/// Per-publisher state shared between workers.
struct PubShared {
    /// Messages sent so far (final once the drain starts).
    sent: AtomicU64,
    /// Owning worker and the client's index there.
    worker: usize,
    local: usize,
    /// Per receiving stream: one past the highest sequence number seen.
    streams: Box<[AtomicU64]>,
}

/// Live counters of one worker, written by it, read by the caller.
#[derive(Default)]
struct WorkerShared {
    sent: AtomicU64,
    sent_window: AtomicU64,
    delivered: AtomicU64,
    delivered_window: AtomicU64,
    unique: AtomicU64,
    errors: AtomicU64,
    /// Clients that reached Ready or failed, summed over connect rounds.
    settled: AtomicU64,
    /// Clients currently connected.
    connected: AtomicU64,
    /// The worker has stopped publishing (its sent counts are final).
    stopped: AtomicBool,
    interval: Mutex<Option<Latency>>,
}

struct Shared {
    phase: AtomicU8,
    t_run: AtomicU64,
    t_warm: AtomicU64,
    t_end: AtomicU64,
    storm_round: AtomicU64,
    pubs: Vec<PubShared>,
    workers: Vec<WorkerShared>,
    wakers: Vec<Waker>,
    inbox: Vec<Mutex<Vec<u32>>>,
    /// The first TLS failure's description.
    tls_error: Mutex<Option<String>>,
}

/// Totals over all workers, for progress lines and drain decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub sent: u64,
    pub sent_window: u64,
    pub delivered: u64,
    pub delivered_window: u64,
    pub unique: u64,
    pub errors: u64,
    pub settled: u64,
    pub connected: u64,
}

/// Final figures of a run.
#[derive(Clone, Default)]
pub struct EngineResult {
    /// End-to-end latency of unique deliveries of messages sent in the window.
    pub latency: Latency,
    /// CONNECT → CONNACK of the initial connections.
    pub connect_latency: Latency,
    /// CONNECT → CONNACK of the reconnections in storm rounds.
    pub reconnect_latency: Latency,
    pub sent: u64,
    pub sent_window: u64,
    pub delivered: u64,
    pub delivered_window: u64,
    pub unique: u64,
    /// Deliveries expected: every publisher's sent count times its receiving streams.
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub errors: Errors,
    /// CONNACKs received (initial and reconnections).
    pub connacks: u64,
}

/// A running engine: the caller drives its phases.
pub struct Engine {
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    handles: Vec<JoinHandle<io::Result<EngineResult>>>,
}

impl Engine {
    /// Validates the plan, starts the workers; they begin connecting at once.
    pub fn start(plan: Plan) -> io::Result<Engine> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let threads = plan.threads.max(1);
        let mut pub_owner = vec![None; plan.publishers.len()];
        let mut per_worker: Vec<Vec<usize>> = vec![Vec::new(); threads];
        for (i, c) in plan.clients.iter().enumerate() {
            let w = c.group % threads;
            if let Some(p) = &c.publish {
                let slot = pub_owner
                    .get_mut(p.publisher as usize)
                    .ok_or_else(|| invalid(format!("publisher {} not in plan", p.publisher)))?;
                if slot.is_some() {
                    return Err(invalid(format!("publisher {} used twice", p.publisher)));
                }
                *slot = Some((w, per_worker[w].len()));
            }
            for &(p, s) in &c.streams {
                let n = plan
                    .publishers
                    .get(p as usize)
                    .ok_or_else(|| invalid(format!("stream of unknown publisher {p}")))?;
                if s >= *n {
                    return Err(invalid(format!("stream {s} of publisher {p} out of range")));
                }
            }
            per_worker[w].push(i);
        }
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..threads {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            polls.push(poll);
        }
        let pubs = plan
            .publishers
            .iter()
            .enumerate()
            .map(|(p, &n)| {
                let (worker, local) = pub_owner[p].unwrap_or((usize::MAX, usize::MAX));
                PubShared {
                    sent: AtomicU64::new(0),
                    worker,
                    local,
                    streams: (0..n).map(|_| AtomicU64::new(0)).collect(),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(Phase::Connect as u8),
            t_run: AtomicU64::new(u64::MAX),
            t_warm: AtomicU64::new(u64::MAX),
            t_end: AtomicU64::new(u64::MAX),
            storm_round: AtomicU64::new(0),
            pubs,
            workers: (0..threads).map(|_| WorkerShared::default()).collect(),
            wakers,
            inbox: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            tls_error: Mutex::new(None),
        });
        let plan = Arc::new(plan);
        let cpus = sys::affinity().unwrap_or_default();
        let mut handles = Vec::new();
        for (id, (poll, clients)) in polls.into_iter().zip(per_worker).enumerate() {
            let shared = shared.clone();
            let plan = plan.clone();
            let cpu = if plan.pin_threads && threads <= cpus.len() {
                cpus.get(id).copied()
            } else {
                None
            };
            let h = std::thread::Builder::new()
                .name(format!("bench-{id}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        let _ = sys::set_affinity(&[cpu]);
                    }
                    sys::tight_timer_slack();
                    Worker::new(id, poll, shared, plan, clients)?.run()
                })?;
            handles.push(h);
        }
        Ok(Engine {
            shared,
            plan,
            handles,
        })
    }

    /// Number of clients in the plan.
    pub fn clients(&self) -> usize {
        self.plan.clients.len()
    }

    fn wake_all(&self) {
        for w in &self.shared.wakers {
            let _ = w.wake();
        }
    }

    /// Starts publishing: run at `t_run`, measure in `[t_warm, t_end)`.
    pub fn run(&self, t_run: u64, t_warm: u64, t_end: u64) {
        self.shared.t_run.store(t_run, Ordering::SeqCst);
        self.shared.t_warm.store(t_warm, Ordering::SeqCst);
        self.shared.t_end.store(t_end, Ordering::SeqCst);
        self.set_phase(Phase::Run);
    }

    /// Stops publishing (workers stop by themselves at `t_end` too).
    pub fn drain(&self) {
        self.set_phase(Phase::Drain);
    }

    /// Starts storm round `round` (1, 2, ...): every client drops its connection and reconnects.
    pub fn storm(&self, round: u64) {
        self.shared.storm_round.store(round, Ordering::SeqCst);
        self.set_phase(Phase::Storm);
    }

    fn set_phase(&self, phase: Phase) {
        self.shared.phase.store(phase as u8, Ordering::SeqCst);
        self.wake_all();
    }

    /// True once every worker has stopped publishing after [`Engine::drain`].
    pub fn publishers_stopped(&self) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.stopped.load(Ordering::SeqCst))
    }

    /// Deliveries expected so far: each publisher's sent count times its receivers.
    pub fn expected(&self) -> u64 {
        self.shared
            .pubs
            .iter()
            .map(|p| p.sent.load(Ordering::SeqCst) * p.streams.len() as u64)
            .sum()
    }

    /// Sets the sent count of a publisher that no engine client drives (retained messages published
    /// beforehand), so that loss accounting knows what to expect.
    pub fn set_external_sent(&self, publisher: u32, sent: u64) {
        if let Some(p) = self.shared.pubs.get(publisher as usize) {
            p.sent.store(sent, Ordering::SeqCst);
        }
    }

    /// Live totals.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.shared.workers {
            t.sent += w.sent.load(Ordering::Relaxed);
            t.sent_window += w.sent_window.load(Ordering::Relaxed);
            t.delivered += w.delivered.load(Ordering::Relaxed);
            t.delivered_window += w.delivered_window.load(Ordering::Relaxed);
            t.unique += w.unique.load(Ordering::Relaxed);
            t.errors += w.errors.load(Ordering::Relaxed);
            t.settled += w.settled.load(Ordering::Relaxed);
            t.connected += w.connected.load(Ordering::Relaxed);
        }
        t
    }

    /// Latencies recorded since the previous call (for progress lines).
    pub fn take_interval(&self) -> Latency {
        let mut all = Latency::new();
        for w in &self.shared.workers {
            if let Ok(mut slot) = w.interval.lock() {
                if let Some(h) = slot.take() {
                    all.add(&h);
                }
            }
        }
        all
    }

    /// The first TLS failure of the run, if any (e.g. the broker's certificate was not trusted).
    pub fn tls_error(&self) -> Option<String> {
        self.shared.tls_error.lock().ok().and_then(|e| e.clone())
    }

    /// True if a worker thread has ended early (an I/O setup error).
    pub fn worker_failed(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
            && self.shared.phase.load(Ordering::SeqCst) != Phase::Done as u8
    }

    /// Ends the run: clients disconnect, workers return their figures, merged here.
    pub fn finish(self) -> io::Result<EngineResult> {
        self.set_phase(Phase::Done);
        let mut total = EngineResult::default();
        let mut first_error = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok(r)) => {
                    total.latency.add(&r.latency);
                    total.connect_latency.add(&r.connect_latency);
                    total.reconnect_latency.add(&r.reconnect_latency);
                    total.sent += r.sent;
                    total.sent_window += r.sent_window;
                    total.delivered += r.delivered;
                    total.delivered_window += r.delivered_window;
                    total.unique += r.unique;
                    total.lost += r.lost;
                    total.duplicated += r.duplicated;
                    total.out_of_order += r.out_of_order;
                    total.errors.add(&r.errors);
                    total.connacks += r.connacks;
                }
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => {
                    first_error = first_error.or(Some(io::Error::other("a worker thread panicked")))
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        total.expected = self
            .shared
            .pubs
            .iter()
            .map(|p| p.sent.load(Ordering::SeqCst) * p.streams.len() as u64)
            .sum();
        Ok(total)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its turn to connect.
    Idle,
    /// TCP connect in progress.
    Connecting,
    AwaitConnAck,
    AwaitSubAck,
    Ready,
    /// Failed or closed; not counted as connected.
    Closed,
}

/// Per-publisher state of a client.
struct PubState {
    id: u32,
    topic: TopicName,
    retain: bool,
    next_seq: u64,
    next_packet_id: u16,
    /// Unacknowledged packet ids → awaiting PUBACK (1), PUBREC (2) or PUBCOMP (3).
    awaiting: HashMap<u16, u8>,
    /// Ready-queue membership.
    queued: bool,
    /// Blocked on the end-to-end window.
    blocked: bool,
    /// Stopped because the write buffer was full: retried once it drains.
    wbuf_full: bool,
    /// Last time the window moved (or a message went out).
    last_progress: u64,
    /// Window base: max(min over streams, floor).
    base: u64,
    /// Raised to `next_seq` when a stalled window is reset.
    floor: u64,
    /// Open loop: period and phase offset in ns.
    period_ns: f64,
    offset_ns: f64,
    next_due: u64,
}

/// Per-subscriber state of a client.
struct SubState {
    /// `(publisher, stream)` sorted by publisher; index i ↔ `trackers[i]`.
    streams: Vec<(u32, u32)>,
    trackers: Vec<StreamTracker>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    qos2: HashSet<u16>,
    subscribed_at: u64,
    /// Has completed a SUBSCRIBE at least once (persistent-session reconnects need none).
    subscribed_once: bool,
}

/// A client's connection: plain TCP, or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

struct TlsConn {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.tcp,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &mut t.tcp,
        }
    }
}

struct Client {
    plan: usize,
    stream: Option<Conn>,
    state: State,
    rbuf: BytesMut,
    wbuf: BytesMut,
    dirty: bool,
    connect_start: u64,
    /// A CONNACK has been received on some connection of this client (storm reconnects).
    connected_once: bool,
    publisher: Option<PubState>,
    subscriber: Option<SubState>,
}

impl Client {
    /// Bytes wait to go out: MQTT packets, or (TLS) handshake and encrypted records.
    #[inline]
    fn wants_flush(&self) -> bool {
        !self.wbuf.is_empty() || matches!(&self.stream, Some(Conn::Tls(t)) if t.tls.wants_write())
    }
}

/// Worker-local counters.
#[derive(Default)]
struct Counters {
    sent: u64,
    sent_window: u64,
    delivered: u64,
    delivered_window: u64,
    unique: u64,
    settled: u64,
    connected: u64,
    connacks: u64,
    errors: Errors,
}

/// Everything of a worker except its clients (so both can be borrowed at once).
struct Ctx {
    id: usize,
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    phase: Phase,
    t_run: u64,
    t_warm: u64,
    t_end: u64,
    storm_round: u64,
    c: Counters,
    latency: Latency,
    interval: Latency,
    connect_latency: Latency,
    reconnect_latency: Latency,
    /// Clients whose publisher should try to send.
    ready: Vec<usize>,
    /// Open-loop schedule: (check time, client).
    schedule: BinaryHeap<Reverse<(u64, usize)>>,
    /// Clients waiting to start a TCP connect.
    pending: VecDeque<usize>,
    handshaking: usize,
    concurrency: usize,
    connect_interval_ns: u64,
    next_connect: u64,
    /// Publisher ids to notify, per worker.
    remote: Vec<Vec<u32>>,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    /// One padded payload, stamped with each message's header in turn and copied into the
    /// connection's write buffer: no allocation per message.
    payload: Vec<u8>,
}

struct Worker {
    poll: Poll,
    timer: sys::TimerFd,
    clients: Vec<Client>,
    ctx: Ctx,
}

impl Worker {
    fn new(
        id: usize,
        poll: Poll,
        shared: Arc<Shared>,
        plan: Arc<Plan>,
        indices: Vec<usize>,
    ) -> io::Result<Worker> {
        let payload = Header {
            run_id: 0,
            publisher: 0,
            seq: 0,
            sent_ns: 0,
        }
        .to_payload(plan.size)
        .to_vec();
        let timer = sys::TimerFd::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;
        let threads = shared.workers.len();
        let n_pubs = plan.publishers.len().max(1) as f64;
        let clients = indices
            .iter()
            .map(|&i| {
                let cp = &plan.clients[i];
                let publisher = cp.publish.as_ref().map(|p| {
                    let period_ns = match plan.mode {
                        Mode::Open { rate } if rate > 0.0 => 1e9 / rate,
                        _ => 0.0,
                    };
                    PubState {
                        id: p.publisher,
                        topic: p.topic.clone(),
                        retain: p.retain,
                        next_seq: 0,
                        next_packet_id: 1,
                        awaiting: HashMap::new(),
                        queued: false,
                        blocked: false,
                        wbuf_full: false,
                        last_progress: 0,
                        base: 0,
                        floor: 0,
                        period_ns,
                        offset_ns: period_ns * p.publisher as f64 / n_pubs,
                        next_due: 0,
                    }
                });
                let subscriber = if cp.subscribe.is_empty() && cp.streams.is_empty() {
                    None
                } else {
                    let mut streams = cp.streams.clone();
                    streams.sort_unstable();
                    Some(SubState {
                        trackers: vec![StreamTracker::new(); streams.len()],
                        streams,
                        qos2: HashSet::new(),
                        subscribed_at: 0,
                        subscribed_once: false,
                    })
                };
                Client {
                    plan: i,
                    stream: None,
                    state: State::Idle,
                    rbuf: BytesMut::new(),
                    wbuf: BytesMut::new(),
                    dirty: false,
                    connect_start: 0,
                    connected_once: false,
                    publisher,
                    subscriber,
                }
            })
            .collect::<Vec<_>>();
        let concurrency = (plan.connect_concurrency / threads).max(1);
        let connect_interval_ns = match plan.connect_rate {
            Some(r) if r > 0.0 => (1e9 * threads as f64 / r) as u64,
            _ => 0,
        };
        let pending = (0..clients.len()).collect();
        Ok(Worker {
            poll,
            timer,
            clients,
            ctx: Ctx {
                id,
                shared,
                plan,
                phase: Phase::Connect,
                t_run: u64::MAX,
                t_warm: u64::MAX,
                t_end: u64::MAX,
                storm_round: 0,
                c: Counters::default(),
                latency: Latency::new(),
                interval: Latency::new(),
                connect_latency: Latency::new(),
                reconnect_latency: Latency::new(),
                ready: Vec::new(),
                schedule: BinaryHeap::new(),
                pending,
                handshaking: 0,
                concurrency,
                connect_interval_ns,
                next_connect: 0,
                remote: vec![Vec::new(); threads],
                dirty: Vec::new(),
                scratch: vec![0u8; 256 * 1024],
                payload,
            },
        })
    }

    fn run(mut self) -> io::Result<EngineResult> {
        let mut events = Events::with_capacity(1024);
        let mut next_housekeeping = 0u64;
        let mut next_ping = now_ns() + self.ping_interval();
        loop {
            let phase = Phase::from_u8(self.ctx.shared.phase.load(Ordering::SeqCst));
            if phase != self.ctx.phase
                || (phase == Phase::Storm
                    && self.ctx.shared.storm_round.load(Ordering::SeqCst) != self.ctx.storm_round)
            {
                if phase == Phase::Done {
                    break;
                }
                self.enter_phase(phase);
            }
            let now = now_ns();
            self.start_connects(now);
            if self.ctx.phase == Phase::Run {
                self.publish_step(now);
            }
            self.flush_dirty();
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_NS;
                self.housekeeping(now);
                if now >= next_ping {
                    next_ping = now + self.ping_interval();
                    self.ping_all();
                }
            }
            self.publish_counters();

            // Sleep until I/O, a wake-up, the next scheduled send or connect, or housekeeping.
            let mut deadline = next_housekeeping;
            if let Some(Reverse((t, _))) = self.ctx.schedule.peek() {
                deadline = deadline.min(*t);
            }
            if !self.ctx.pending.is_empty()
                && self.ctx.handshaking < self.ctx.concurrency
                && self.ctx.connect_interval_ns > 0
            {
                deadline = deadline.min(self.ctx.next_connect);
            }
            let now = now_ns();
            let timeout = if !self.ctx.ready.is_empty() || deadline <= now {
                Some(Duration::ZERO)
            } else {
                self.timer.arm_at(deadline)?;
                // The timerfd wakes us precisely; this is only a safety net.
                Some(Duration::from_millis(200))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.drain_inbox(),
                    TIMER => self.timer.clear(),
                    Token(i) => self.handle_event(i, ev),
                }
            }
            self.notify_remote();
        }
        self.disconnect_all();
        Ok(self.result())
    }

    fn ping_interval(&self) -> u64 {
        (u64::from(self.ctx.plan.keep_alive.max(2)) * 1_000_000_000) / 2
    }

    fn enter_phase(&mut self, phase: Phase) {
        let ctx = &mut self.ctx;
        ctx.phase = phase;
        ctx.t_run = ctx.shared.t_run.load(Ordering::SeqCst);
        ctx.t_warm = ctx.shared.t_warm.load(Ordering::SeqCst);
        ctx.t_end = ctx.shared.t_end.load(Ordering::SeqCst);
        let now = now_ns();
        match phase {
            Phase::Run => {
                for (i, c) in self.clients.iter_mut().enumerate() {
                    let cp = &ctx.plan.clients[c.plan];
                    if cp.subscribe_at_run && c.state == State::Ready {
                        send_subscribe(c, i, ctx, now);
                    }
                    if let Some(p) = c.publisher.as_mut() {
                        p.last_progress = now;
                        match ctx.plan.mode {
                            Mode::Closed { .. } => {
                                if !p.queued {
                                    p.queued = true;
                                    ctx.ready.push(i);
                                }
                            }
                            Mode::Open { .. } => {
                                p.next_due = ctx.t_run + p.offset_ns as u64;
                                ctx.schedule.push(Reverse((p.next_due, i)));
                            }
                        }
                    }
                }
            }
            Phase::Drain => {
                for c in &mut self.clients {
                    if let Some(p) = &c.publisher {
                        ctx.shared.pubs[p.id as usize]
                            .sent
                            .store(p.next_seq, Ordering::SeqCst);
                    }
                }
                ctx.schedule.clear();
                ctx.ready.clear();
                for c in &mut self.clients {
                    if let Some(p) = c.publisher.as_mut() {
                        p.queued = false;
                    }
                }
                ctx.shared.workers[ctx.id]
                    .stopped
                    .store(true, Ordering::SeqCst);
            }
            Phase::Storm => {
                ctx.storm_round = ctx.shared.storm_round.load(Ordering::SeqCst);
                ctx.pending.clear();
                ctx.handshaking = 0;
                for (i, c) in self.clients.iter_mut().enumerate() {
                    if let Some(mut s) = c.stream.take() {
                        let _ = self.poll.registry().deregister(s.tcp_mut());
                        // Dropped without DISCONNECT: the broker sees the network go away.
                    }
                    if c.state == State::Ready {
                        ctx.c.connected = ctx.c.connected.saturating_sub(1);
                    }
                    c.state = State::Idle;
                    c.rbuf.clear();
                    c.wbuf.clear();
                    if let Some(s) = c.subscriber.as_mut() {
                        s.qos2.clear();
                    }
                    ctx.pending.push_back(i);
                }
            }
            Phase::Connect | Phase::Done => {}
        }
    }

    fn start_connects(&mut self, now: u64) {
        let ctx = &mut self.ctx;
        while ctx.handshaking < ctx.concurrency {
            if ctx.connect_interval_ns > 0 && now < ctx.next_connect {
                break;
            }
            let Some(i) = ctx.pending.pop_front() else {
                break;
            };
            if ctx.connect_interval_ns > 0 {
                ctx.next_connect = ctx
                    .next_connect
                    .max(now.saturating_sub(ctx.connect_interval_ns))
                    + ctx.connect_interval_ns;
            }
            let c = &mut self.clients[i];
            match TcpStream::connect(ctx.plan.addr) {
                Ok(mut s) => {
                    let _ = s.set_nodelay(true);
                    if let Err(_e) = self.poll.registry().register(
                        &mut s,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        ctx.c.errors.connect_failed += 1;
                        settle(c, ctx, State::Closed);
                        continue;
                    }
                    let conn = match &ctx.plan.tls {
                        None => Conn::Plain(s),
                        Some(target) => match target.connect() {
                            Ok(tls) => Conn::Tls(Box::new(TlsConn { tcp: s, tls })),
                            Err(e) => {
                                let _ = self.poll.registry().deregister(&mut s);
                                ctx.c.errors.tls += 1;
                                note_tls_error(ctx, format!("TLS set-up failed: {e}"));
                                settle(c, ctx, State::Closed);
                                continue;
                            }
                        },
                    };
                    c.stream = Some(conn);
                    c.state = State::Connecting;
                    c.connect_start = now;
                    c.rbuf.clear();
                    c.wbuf.clear();
                    let cp = &ctx.plan.clients[c.plan];
                    let connect = Packet::Connect(Box::new(Connect {
                        protocol: ProtocolLevel::V311,
                        clean_session: cp.clean_session,
                        keep_alive: ctx.plan.keep_alive,
                        client_id: cp.client_id.clone(),
                        will: None,
                        username: None,
                        password: None,
                    }));
                    if connect.encode(&mut c.wbuf).is_err() {
                        ctx.c.errors.protocol += 1;
                        close(c, ctx, &self.poll, State::Closed);
                        continue;
                    }
                    ctx.handshaking += 1;
                }
                Err(_) => {
                    ctx.c.errors.connect_failed += 1;
                    settle(c, ctx, State::Closed);
                }
            }
        }
    }

    fn handle_event(&mut self, i: usize, ev: &mio::event::Event) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let ctx = &mut self.ctx;
        if c.stream.is_none() {
            return;
        }
        if c.state == State::Connecting {
            let Some(s) = c.stream.as_ref().map(Conn::tcp) else {
                return;
            };
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    ctx.c.errors.connect_failed += 1;
                    close(c, ctx, &self.poll, State::Closed);
                    return;
                }
            }
            match s.peer_addr() {
                Ok(_) => c.state = State::AwaitConnAck,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if ev.is_error() || ev.is_write_closed() {
                        ctx.c.errors.connect_failed += 1;
                        close(c, ctx, &self.poll, State::Closed);
                    }
                    return;
                }
                Err(_) => {
                    ctx.c.errors.connect_failed += 1;
                    close(c, ctx, &self.poll, State::Closed);
                    return;
                }
            }
        }
        if ev.is_writable() && c.wants_flush() {
            flush(c, ctx, &self.poll);
            if c.stream.is_none() {
                return;
            }
            requeue_if_drained(c, i, ctx);
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            read_and_handle(c, i, ctx, &self.poll);
        }
    }

    fn publish_step(&mut self, now: u64) {
        let ctx = &mut self.ctx;
        match ctx.plan.mode {
            Mode::Closed { inflight } => {
                let ready = std::mem::take(&mut ctx.ready);
                for i in ready {
                    let c = &mut self.clients[i];
                    if let Some(p) = c.publisher.as_mut() {
                        p.queued = false;
                    }
                    publish_closed(c, i, ctx, inflight, now);
                }
            }
            Mode::Open { .. } => {
                while let Some(&Reverse((t, i))) = ctx.schedule.peek() {
                    if t > now {
                        break;
                    }
                    ctx.schedule.pop();
                    publish_open(&mut self.clients[i], i, ctx, now);
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.ctx.dirty);
        for i in dirty {
            let c = &mut self.clients[i];
            c.dirty = false;
            if c.stream.is_some() && c.wants_flush() && c.state != State::Connecting {
                flush(c, &mut self.ctx, &self.poll);
            }
            requeue_if_drained(c, i, &mut self.ctx);
        }
    }

    fn housekeeping(&mut self, now: u64) {
        let ctx = &mut self.ctx;
        // Progress histogram hand-over.
        if ctx.interval.count() > 0 {
            if let Ok(mut slot) = ctx.shared.workers[ctx.id].interval.lock() {
                match slot.as_mut() {
                    Some(h) => h.add(&ctx.interval),
                    None => *slot = Some(ctx.interval.clone()),
                }
            }
            ctx.interval.reset();
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            // Connect timeouts.
            if matches!(c.state, State::Connecting | State::AwaitConnAck)
                && now.saturating_sub(c.connect_start) > CONNECT_TIMEOUT_NS
            {
                ctx.c.errors.connect_timeout += 1;
                close(c, ctx, &self.poll, State::Closed);
                continue;
            }
            // Stalled closed-loop windows.
            if ctx.phase == Phase::Run {
                if let Some(p) = c.publisher.as_mut() {
                    if p.blocked {
                        let base = window_base(&ctx.shared.pubs[p.id as usize], p.floor);
                        if base > p.base {
                            p.base = base;
                            p.last_progress = now;
                        } else if now.saturating_sub(p.last_progress) > ctx.plan.stall_timeout_ns {
                            p.floor = p.next_seq;
                            p.last_progress = now;
                            ctx.c.errors.window_stalls += 1;
                        }
                        if !p.queued {
                            p.queued = true;
                            ctx.ready.push(i);
                        }
                    }
                }
            }
        }
    }

    fn ping_all(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.state == State::Ready && Packet::PingReq.encode(&mut c.wbuf).is_ok() {
                mark_dirty(c, i, &mut self.ctx);
            }
        }
    }

    fn publish_counters(&self) {
        let ctx = &self.ctx;
        let w = &ctx.shared.workers[ctx.id];
        w.sent.store(ctx.c.sent, Ordering::Relaxed);
        w.sent_window.store(ctx.c.sent_window, Ordering::Relaxed);
        w.delivered.store(ctx.c.delivered, Ordering::Relaxed);
        w.delivered_window
            .store(ctx.c.delivered_window, Ordering::Relaxed);
        w.unique.store(ctx.c.unique, Ordering::Relaxed);
        w.errors.store(ctx.c.errors.total(), Ordering::Relaxed);
        w.settled.store(ctx.c.settled, Ordering::Relaxed);
        w.connected.store(ctx.c.connected, Ordering::Relaxed);
    }

    fn drain_inbox(&mut self) {
        let ids = match self.ctx.shared.inbox[self.ctx.id].lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        for p in ids {
            self.retry_blocked(p);
        }
    }

    /// Retries a local publisher if it is blocked on its window.
    fn retry_blocked(&mut self, publisher: u32) {
        let local = self.ctx.shared.pubs[publisher as usize].local;
        if let Some(c) = self.clients.get_mut(local) {
            if let Some(ps) = c.publisher.as_mut() {
                if ps.blocked && !ps.queued {
                    ps.queued = true;
                    self.ctx.ready.push(local);
                }
            }
        }
    }

    fn notify_remote(&mut self) {
        let own = std::mem::take(&mut self.ctx.remote[self.ctx.id]);
        for &p in &own {
            self.retry_blocked(p);
        }
        // Keep the allocation.
        self.ctx.remote[self.ctx.id] = own;
        self.ctx.remote[self.ctx.id].clear();
        let ctx = &mut self.ctx;
        for w in 0..ctx.remote.len() {
            if ctx.remote[w].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut ctx.remote[w]);
            let was_empty = match ctx.shared.inbox[w].lock() {
                Ok(mut v) => {
                    let was_empty = v.is_empty();
                    v.extend(batch);
                    was_empty
                }
                Err(_) => false,
            };
            if was_empty {
                let _ = ctx.shared.wakers[w].wake();
            }
        }
    }

    fn disconnect_all(&mut self) {
        for c in &mut self.clients {
            match c.stream.take() {
                None => {}
                Some(Conn::Plain(mut s)) => {
                    if c.state == State::Ready {
                        let mut out = BytesMut::new();
                        if Packet::Disconnect.encode(&mut out).is_ok() {
                            if !c.wbuf.is_empty() {
                                let _ = s.write(&c.wbuf);
                            }
                            let _ = s.write(&out);
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let _ = self.poll.registry().deregister(&mut s);
                }
                Some(Conn::Tls(mut t)) => {
                    // Best effort, as for plain TCP: DISCONNECT, close_notify, FIN.
                    if c.state == State::Ready {
                        let _ = Packet::Disconnect.encode(&mut c.wbuf);
                    }
                    let _ = flush_tls(&mut t, &mut c.wbuf);
                    t.tls.send_close_notify();
                    let _ = flush_tls(&mut t, &mut c.wbuf);
                    let _ = t.tcp.shutdown(std::net::Shutdown::Write);
                    let _ = self.poll.registry().deregister(&mut t.tcp);
                }
            }
        }
    }

    fn result(self) -> EngineResult {
        let ctx = self.ctx;
        let mut lost = 0;
        let mut duplicated = 0;
        let mut out_of_order = 0;
        for c in &self.clients {
            if let Some(s) = &c.subscriber {
                for (&(p, _), t) in s.streams.iter().zip(&s.trackers) {
                    let sent = ctx.shared.pubs[p as usize].sent.load(Ordering::SeqCst);
                    lost += t.lost(sent);
                    duplicated += t.duplicates();
                    out_of_order += t.out_of_order();
                }
            }
        }
        EngineResult {
            latency: ctx.latency,
            connect_latency: ctx.connect_latency,
            reconnect_latency: ctx.reconnect_latency,
            sent: ctx.c.sent,
            sent_window: ctx.c.sent_window,
            delivered: ctx.c.delivered,
            delivered_window: ctx.c.delivered_window,
            unique: ctx.c.unique,
            expected: 0,
            lost,
            duplicated,
            out_of_order,
            errors: ctx.c.errors,
            connacks: ctx.c.connacks,
        }
    }
}

/// A closed-loop publisher that stopped on a full write buffer goes back to the ready queue once
/// the buffer has drained below the limit.
fn requeue_if_drained(c: &mut Client, i: usize, ctx: &mut Ctx) {
    if c.wbuf.len() >= WBUF_HIGH || ctx.phase != Phase::Run {
        return;
    }
    if let Some(p) = c.publisher.as_mut() {
        if p.wbuf_full && !p.queued && matches!(ctx.plan.mode, Mode::Closed { .. }) {
            p.wbuf_full = false;
            p.queued = true;
            ctx.ready.push(i);
        }
    }
}

fn mark_dirty(c: &mut Client, i: usize, ctx: &mut Ctx) {
    if !c.dirty {
        c.dirty = true;
        ctx.dirty.push(i);
    }
}

/// A client reached Ready or gave up in this connect round.
fn settle(c: &mut Client, ctx: &mut Ctx, state: State) {
    c.state = state;
    ctx.c.settled += 1;
    if state == State::Ready {
        ctx.c.connected += 1;
    }
}

/// Closes the connection. A client still handshaking settles as failed.
fn close(c: &mut Client, ctx: &mut Ctx, poll: &Poll, state: State) {
    if let Some(mut s) = c.stream.take() {
        let _ = poll.registry().deregister(s.tcp_mut());
    }
    match c.state {
        State::Connecting | State::AwaitConnAck => {
            ctx.handshaking = ctx.handshaking.saturating_sub(1);
            settle(c, ctx, state);
        }
        State::AwaitSubAck => settle(c, ctx, state),
        State::Ready => {
            ctx.c.connected = ctx.c.connected.saturating_sub(1);
            c.state = state;
        }
        State::Idle | State::Closed => c.state = state,
    }
    c.wbuf.clear();
    c.rbuf.clear();
    if let Some(p) = c.publisher.as_mut() {
        p.blocked = false;
        p.awaiting.clear();
    }
}

fn flush(c: &mut Client, ctx: &mut Ctx, poll: &Poll) {
    let s = match c.stream.as_mut() {
        None => return,
        Some(Conn::Plain(s)) => s,
        Some(Conn::Tls(t)) => {
            if flush_tls(t, &mut c.wbuf).is_err() {
                lost_connection(c, ctx, poll);
            }
            return;
        }
    };
    while !c.wbuf.is_empty() {
        match s.write(&c.wbuf) {
            Ok(0) => {
                lost_connection(c, ctx, poll);
                return;
            }
            Ok(n) => c.wbuf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                lost_connection(c, ctx, poll);
                return;
            }
        }
    }
}

/// Moves `wbuf` into rustls and encrypted records onto the socket until both are empty or the
/// socket (or rustls' buffer, during the handshake) is full. `Err`: the connection is gone.
fn flush_tls(t: &mut TlsConn, wbuf: &mut BytesMut) -> io::Result<()> {
    loop {
        while !wbuf.is_empty() {
            let n = t.tls.writer().write(wbuf)?;
            if n == 0 {
                break; // rustls' buffer is full: write records out first
            }
            wbuf.advance(n);
        }
        if !t.tls.wants_write() {
            return Ok(());
        }
        match t.tls.write_tls(&mut t.tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the socket until it is drained; true at end of stream.
///
/// A read that returns less than `scratch` holds emptied the socket's receive queue, and on Linux
/// epoll reports the socket again (edge-triggered) as soon as anything more arrives, FIN included:
/// reading on to `WouldBlock` cost one more `recv` per wake-up, ~45 % of this generator's
/// `recv` calls in `pairs -n 8 --qos 1`, where the generator was the bottleneck.
fn read_plain(s: &mut TcpStream, rbuf: &mut BytesMut, scratch: &mut [u8]) -> bool {
    loop {
        match s.read(scratch) {
            Ok(0) => return true,
            Ok(n) => {
                rbuf.extend_from_slice(&scratch[..n]);
                if n < scratch.len() {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Reads and decrypts TLS records until the socket would block, appending the plaintext to
/// `rbuf`. `Ok(true)` at end of stream; `Err` for a certificate or record failure.
fn read_tls(
    t: &mut TlsConn,
    rbuf: &mut BytesMut,
    scratch: &mut [u8],
) -> Result<bool, rustls::Error> {
    loop {
        match t.tls.read_tls(&mut t.tcp) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(true),
        }
        let state = match t.tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                // Tell the broker why (the alert rustls queued), then give up.
                let _ = t.tls.write_tls(&mut t.tcp);
                return Err(e);
            }
        };
        let closed = state.peer_has_closed();
        loop {
            match t.tls.reader().read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => rbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Ok(true),
            }
        }
        if closed {
            return Ok(true);
        }
    }
}

/// Keeps the first TLS failure's description for [`Engine::tls_error`].
fn note_tls_error(ctx: &Ctx, message: String) {
    if let Ok(mut slot) = ctx.shared.tls_error.lock() {
        slot.get_or_insert(message);
    }
}

fn lost_connection(c: &mut Client, ctx: &mut Ctx, poll: &Poll) {
    match c.state {
        State::Ready | State::AwaitSubAck => ctx.c.errors.disconnected += 1,
        State::Connecting | State::AwaitConnAck => ctx.c.errors.connect_failed += 1,
        State::Idle | State::Closed => {}
    }
    close(c, ctx, poll, State::Closed);
}

fn read_and_handle(c: &mut Client, i: usize, ctx: &mut Ctx, poll: &Poll) {
    let eof = match c.stream.as_mut() {
        None => return,
        Some(Conn::Plain(s)) => read_plain(s, &mut c.rbuf, &mut ctx.scratch),
        Some(Conn::Tls(t)) => match read_tls(t, &mut c.rbuf, &mut ctx.scratch) {
            Ok(eof) => eof,
            Err(e) => {
                let what = if t.tls.is_handshaking() {
                    "TLS handshake with the broker failed"
                } else {
                    "TLS error"
                };
                note_tls_error(ctx, format!("{what}: {e}"));
                ctx.c.errors.tls += 1;
                close(c, ctx, poll, State::Closed);
                return;
            }
        },
    };
    let now = now_ns();
    loop {
        // A PUBLISH is read in place (`amqtt::protocol::peek_publish`: no reference-counted
        // slices, whose atomic updates were ~13 % of the generator's CPU at 2 M deliveries/s);
        // anything else, a malformed PUBLISH included, goes through `decode`. The buffer is taken
        // out for the call (the handler needs `c`): no copy, no allocation.
        let rbuf = std::mem::take(&mut c.rbuf);
        let peeked = peek_publish(&rbuf, PROTOCOL_MAX_PACKET_SIZE).map(|(publish, length)| {
            on_publish(
                c,
                i,
                ctx,
                publish.qos,
                publish.packet_id,
                publish.payload,
                now,
            );
            length
        });
        c.rbuf = rbuf;
        if let Some(length) = peeked {
            c.rbuf.advance(length);
            continue;
        }
        match decode(&mut c.rbuf, PROTOCOL_MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                if !handle_packet(c, i, ctx, poll, packet, now) {
                    return;
                }
            }
            Ok(None) => break,
            Err(_) => {
                ctx.c.errors.protocol += 1;
                close(c, ctx, poll, State::Closed);
                return;
            }
        }
    }
    if eof {
        lost_connection(c, ctx, poll);
    } else if c.wants_flush() {
        mark_dirty(c, i, ctx);
    }
}

/// Handles one packet from the broker; false if the connection was closed.
fn handle_packet(
    c: &mut Client,
    i: usize,
    ctx: &mut Ctx,
    poll: &Poll,
    packet: Packet,
    now: u64,
) -> bool {
    match packet {
        Packet::ConnAck(ack) if c.state == State::AwaitConnAck => {
            ctx.handshaking = ctx.handshaking.saturating_sub(1);
            if ack.code != ConnectReturnCode::Accepted {
                ctx.c.errors.connack_refused += 1;
                close(c, ctx, poll, State::Closed);
                return false;
            }
            ctx.c.connacks += 1;
            let lat = now.saturating_sub(c.connect_start);
            if ctx.phase == Phase::Storm {
                ctx.reconnect_latency.record_ns(lat);
                ctx.interval.record_ns(lat);
            } else {
                ctx.connect_latency.record_ns(lat);
                if ctx.phase == Phase::Connect {
                    ctx.interval.record_ns(lat);
                }
            }
            let cp = &ctx.plan.clients[c.plan];
            let persistent = !cp.clean_session;
            if persistent && c.connected_once && !ack.session_present {
                ctx.c.errors.session_lost += 1;
            }
            c.connected_once = true;
            let need_subscribe = match &c.subscriber {
                Some(s) if !cp.subscribe.is_empty() => {
                    !(persistent && ack.session_present && s.subscribed_once)
                        && (!cp.subscribe_at_run || ctx.phase >= Phase::Run)
                }
                _ => false,
            };
            if need_subscribe {
                send_subscribe(c, i, ctx, now);
                c.state = State::AwaitSubAck;
            } else {
                settle(c, ctx, State::Ready);
            }
            mark_dirty(c, i, ctx);
            true
        }
        Packet::SubAck(ack) if c.subscriber.is_some() => {
            if ack.return_codes.contains(&SubscribeReturnCode::Failure) {
                ctx.c.errors.suback_failed += 1;
            }
            if let Some(s) = c.subscriber.as_mut() {
                s.subscribed_once = true;
            }
            if c.state == State::AwaitSubAck {
                settle(c, ctx, State::Ready);
            }
            true
        }
        Packet::Publish(p) => {
            on_publish(c, i, ctx, p.qos, p.packet_id, &p.payload, now);
            true
        }
        Packet::PubRel(rel) => {
            if let Some(s) = c.subscriber.as_mut() {
                s.qos2.remove(&rel.packet_id);
            }
            let _ = Packet::PubComp(PubComp {
                packet_id: rel.packet_id,
            })
            .encode(&mut c.wbuf);
            mark_dirty(c, i, ctx);
            true
        }
        Packet::PubAck(PubAck { packet_id }) => ack_publish(c, i, ctx, packet_id, 1),
        Packet::PubRec(PubRec { packet_id }) => {
            let ok = match c.publisher.as_mut() {
                Some(p) => match p.awaiting.get_mut(&packet_id) {
                    Some(st) if *st == 2 => {
                        *st = 3;
                        true
                    }
                    // A repeated PUBREC for an id awaiting PUBCOMP: answer again.
                    Some(st) if *st == 3 => true,
                    _ => false,
                },
                None => false,
            };
            if !ok {
                ctx.c.errors.protocol += 1;
                return true;
            }
            let _ = Packet::PubRel(PubRel { packet_id }).encode(&mut c.wbuf);
            mark_dirty(c, i, ctx);
            true
        }
        Packet::PubComp(PubComp { packet_id }) => ack_publish(c, i, ctx, packet_id, 3),
        Packet::PingResp => true,
        _ => {
            ctx.c.errors.protocol += 1;
            close(c, ctx, poll, State::Closed);
            false
        }
    }
}

/// A PUBACK (`stage` 1) or PUBCOMP (`stage` 3) for one of our publishes.
fn ack_publish(c: &mut Client, i: usize, ctx: &mut Ctx, packet_id: u16, stage: u8) -> bool {
    let Some(p) = c.publisher.as_mut() else {
        ctx.c.errors.protocol += 1;
        return true;
    };
    if p.awaiting.get(&packet_id) != Some(&stage) {
        ctx.c.errors.protocol += 1;
        return true;
    }
    p.awaiting.remove(&packet_id);
    if ctx.phase == Phase::Run && !p.queued {
        match ctx.plan.mode {
            Mode::Closed { .. } => {
                p.queued = true;
                ctx.ready.push(i);
            }
            Mode::Open { .. } => {}
        }
    }
    true
}

fn send_subscribe(c: &mut Client, i: usize, ctx: &mut Ctx, now: u64) {
    let cp = &ctx.plan.clients[c.plan];
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: cp
            .subscribe
            .iter()
            .map(|f| SubscribeFilter {
                filter: f.clone(),
                qos: ctx.plan.qos,
            })
            .collect(),
    });
    if sub.encode(&mut c.wbuf).is_err() {
        ctx.c.errors.protocol += 1;
        return;
    }
    if let Some(s) = c.subscriber.as_mut() {
        s.subscribed_at = now;
    }
    mark_dirty(c, i, ctx);
}

/// Accounts for one received PUBLISH.
/// A PUBLISH from the broker: account for it and acknowledge it (QoS 1: PUBACK, QoS 2: PUBREC).
fn on_publish(
    c: &mut Client,
    i: usize,
    ctx: &mut Ctx,
    qos: QoS,
    packet_id: Option<u16>,
    payload: &[u8],
    now: u64,
) {
    on_delivery(c, ctx, payload, now);
    let ack = match (qos, packet_id) {
        (QoS::AtMostOnce, _) => None,
        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubAck { packet_id: id })),
        (QoS::ExactlyOnce, Some(id)) => {
            if let Some(s) = c.subscriber.as_mut() {
                s.qos2.insert(id);
            }
            Some(Packet::PubRec(PubRec { packet_id: id }))
        }
        _ => {
            ctx.c.errors.protocol += 1;
            None
        }
    };
    if let Some(ack) = ack {
        if ack.encode(&mut c.wbuf).is_ok() {
            mark_dirty(c, i, ctx);
        }
    }
}

fn on_delivery(c: &mut Client, ctx: &mut Ctx, payload: &[u8], now: u64) {
    ctx.c.delivered += 1;
    if now >= ctx.t_warm && now < ctx.t_end {
        ctx.c.delivered_window += 1;
    }
    let Some(s) = c.subscriber.as_mut() else {
        ctx.c.errors.foreign += 1;
        return;
    };
    let Some(h) = Header::read(payload) else {
        ctx.c.errors.foreign += 1;
        return;
    };
    if h.run_id != ctx.plan.run_id {
        ctx.c.errors.foreign += 1;
        return;
    }
    let Ok(k) = s.streams.binary_search_by_key(&h.publisher, |&(p, _)| p) else {
        ctx.c.errors.foreign += 1;
        return;
    };
    let tracker = &mut s.trackers[k];
    let before = tracker.settled();
    let outcome = tracker.record(h.seq);
    if outcome == Outcome::Duplicate {
        return;
    }
    ctx.c.unique += 1;
    match ctx.plan.latency_origin {
        LatencyOrigin::Payload => {
            if h.sent_ns >= ctx.t_warm && h.sent_ns < ctx.t_end {
                let lat = now.saturating_sub(h.sent_ns);
                ctx.latency.record_ns(lat);
                ctx.interval.record_ns(lat);
            }
        }
        LatencyOrigin::Subscribe => {
            let lat = now.saturating_sub(s.subscribed_at);
            ctx.latency.record_ns(lat);
            ctx.interval.record_ns(lat);
        }
    }
    let after = tracker.settled();
    if after != before {
        let stream = s.streams[k].1 as usize;
        let ps = &ctx.shared.pubs[h.publisher as usize];
        if let Some(a) = ps.streams.get(stream) {
            a.store(after, Ordering::SeqCst);
        }
        // The owner (this thread or another) retries the publisher if it is blocked.
        if ps.worker < ctx.remote.len() && ctx.remote[ps.worker].last() != Some(&h.publisher) {
            ctx.remote[ps.worker].push(h.publisher);
        }
    }
}

/// Lowest settled mark over a publisher's streams, or `floor` if higher.
fn window_base(ps: &PubShared, floor: u64) -> u64 {
    ps.streams
        .iter()
        .map(|a| a.load(Ordering::SeqCst))
        .min()
        .unwrap_or(u64::MAX)
        .max(floor)
}

fn next_packet_id(p: &mut PubState) -> Option<u16> {
    for _ in 0..=u16::MAX {
        let id = p.next_packet_id;
        p.next_packet_id = p.next_packet_id.checked_add(1).unwrap_or(1);
        if !p.awaiting.contains_key(&id) {
            return Some(id);
        }
    }
    None
}

/// Encodes one PUBLISH stamped `sent_ns` straight into the write buffer (the payload is the
/// worker's padded one, stamped; the topic is borrowed); false if nothing could be encoded.
fn send_one(c: &mut Client, ctx: &mut Ctx, sent_ns: u64) -> bool {
    let Some(p) = c.publisher.as_mut() else {
        return false;
    };
    let qos = ctx.plan.qos;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => match next_packet_id(p) {
            Some(id) => Some(id),
            None => return false,
        },
    };
    let header = Header {
        run_id: ctx.plan.run_id,
        publisher: p.id,
        seq: p.next_seq,
        sent_ns,
    };
    let stamped = header.stamp(&mut ctx.payload);
    let publish = PublishRef {
        dup: false,
        qos,
        retain: p.retain,
        topic: p.topic.as_bytes(),
        packet_id,
        payload: &ctx.payload,
    };
    if !stamped || publish.encode(&mut c.wbuf).is_err() {
        ctx.c.errors.protocol += 1;
        return false;
    }
    if let Some(id) = packet_id {
        p.awaiting
            .insert(id, if qos == QoS::AtLeastOnce { 1 } else { 2 });
    }
    p.next_seq += 1;
    ctx.c.sent += 1;
    if sent_ns >= ctx.t_warm && sent_ns < ctx.t_end {
        ctx.c.sent_window += 1;
    }
    ctx.shared.pubs[p.id as usize]
        .sent
        .store(p.next_seq, Ordering::Relaxed);
    true
}

fn publish_closed(c: &mut Client, i: usize, ctx: &mut Ctx, inflight: u32, now: u64) {
    if c.state != State::Ready || now >= ctx.t_end {
        return;
    }
    let inflight = u64::from(inflight.max(1));
    let mut sent = 0;
    let mut stamp = None;
    loop {
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        if c.wbuf.len() >= WBUF_HIGH {
            p.wbuf_full = true;
            break; // retried after the socket drains
        }
        if ctx.plan.qos != QoS::AtMostOnce && p.awaiting.len() as u64 >= inflight {
            break; // retried on PUBACK / PUBCOMP
        }
        let ps = &ctx.shared.pubs[p.id as usize];
        if !ps.streams.is_empty() && p.next_seq.saturating_sub(p.base) >= inflight {
            let base = window_base(ps, p.floor);
            if base > p.base {
                p.base = base;
                p.last_progress = now;
            }
            if p.next_seq.saturating_sub(p.base) >= inflight {
                p.blocked = true;
                break; // retried when a subscriber settles more
            }
        }
        p.blocked = false;
        if sent >= BATCH {
            if !p.queued {
                p.queued = true;
                ctx.ready.push(i);
            }
            break;
        }
        p.last_progress = now;
        // One clock read for the messages encoded here: they leave in one write, and a clock
        // read per message was ~7 % of the generator's CPU in pairs QoS 0 (`perf record`).
        let sent_ns = *stamp.get_or_insert_with(now_ns);
        if !send_one(c, ctx, sent_ns) {
            break;
        }
        sent += 1;
    }
    if sent > 0 {
        mark_dirty(c, i, ctx);
    }
}

fn publish_open(c: &mut Client, i: usize, ctx: &mut Ctx, now: u64) {
    if c.state != State::Ready {
        return;
    }
    let mut sent = 0;
    loop {
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        if p.next_due >= ctx.t_end {
            break;
        }
        if p.next_due > now {
            ctx.schedule.push(Reverse((p.next_due, i)));
            break;
        }
        if c.wbuf.len() >= WBUF_HIGH || p.awaiting.len() as u32 >= OPEN_LOOP_MAX_INFLIGHT {
            // Behind schedule: try again shortly; the lateness shows up as latency.
            ctx.schedule.push(Reverse((now + 100_000, i)));
            break;
        }
        let due = p.next_due;
        if !send_one(c, ctx, due) {
            ctx.schedule.push(Reverse((now + 100_000, i)));
            break;
        }
        sent += 1;
        if let Some(p) = c.publisher.as_mut() {
            p.next_due = ctx.t_run + (p.offset_ns + p.period_ns * p.next_seq as f64) as u64;
        }
    }
    if sent > 0 {
        mark_dirty(c, i, ctx);
    }
}
