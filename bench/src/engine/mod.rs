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
//!   `inflight` too (and by an MQTT 5 broker's Receive Maximum). So the generator never builds an unbounded queue inside the broker, and the
//!   latency of a closed-loop run is service time, not queueing we caused. When a window stays full
//!   for the stall timeout (lost QoS 0 messages, or a broker that lost QoS 1/2 ones) the window is
//!   reset and a `window_stalls` error counted.
//! * Open loop (`Mode::Open { rate }`): publisher `p` sends message `k` at the *scheduled* time
//!   `t_run + (k + p / publishers) / rate`, whatever happened to earlier messages, and stamps that
//!   scheduled time in the payload. A generator or broker that falls behind therefore shows up as
//!   latency (no coordinated omission). Wake-ups use a `timerfd` with 1 ns timer slack.
//!
//! ## TLS
//! With [`Server::tls`] set (`mqtts://`) each connection is a `Conn::Tls` (in `client`): a
//! rustls `ClientConnection` over the same non-blocking socket. The CONNECT goes into rustls'
//! plaintext buffer at once (it leaves after the handshake); the handshake advances on the socket's
//! readiness events like any other I/O. A certificate or record failure closes the connection,
//! counts a `tls` error and keeps the first message for the caller ([`Engine::first_failures`], which
//! also has the first failed TCP connect with the OS's reason). Plain
//! connections (`Conn::Plain`) take the same code path as before TLS
//! existed.
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
//!
//! ## Layout
//! * `mod.rs` (here): the plan the caller hands in ([`Plan`], [`ClientPlan`], [`PublishPlan`],
//!   [`Mode`], [`LatencyOrigin`]), the phases, the state shared between the caller and the workers,
//!   the figures returned ([`Errors`], [`Totals`], [`EngineResult`]) and [`Engine`], the caller's
//!   handle.
//! * `client`: per-client state (connection state, publisher and subscriber bookkeeping, plain or
//!   TLS connection), a worker's counters and context, and a connection's socket I/O.
//! * `worker`: one worker thread: its `mio` event loop, connecting, phase changes, cross-thread
//!   wake-ups and its final figures; `worker/housekeeping.rs` its periodic duties (timeouts,
//!   stalled windows, pings, counters).
//! * `packets`: a client's MQTT packets: decoding what the broker sends, acknowledgements,
//!   SUBSCRIBE, delivery accounting.
//! * `publishing`: a client's publishing: the closed-loop window, the open-loop schedule, encoding
//!   one PUBLISH.

mod client;
mod packets;
mod publishing;
mod v5;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use amqtt::protocol::{ProtocolLevel, QoS, TopicFilter, TopicName};
use mio::{Poll, Token, Waker};
use serde::Serialize;

use crate::stats::Latency;
use crate::sys;
use crate::tls::TlsTarget;
use worker::Worker;

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
    /// Index into [`Plan::servers`]: the broker (cluster node) this client connects to.
    pub server: usize,
}

/// One broker address the clients connect to (a cluster has several: `--url a,b`).
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    /// `mqtts://`: connect with TLS (`None`: plain TCP).
    pub tls: Option<TlsTarget>,
}

/// Everything the engine needs to run a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The brokers, at least one; each client names its own ([`ClientPlan::server`]).
    pub servers: Vec<Server>,
    /// User name and password from the URL, sent in every CONNECT.
    pub credentials: Option<crate::credentials::Credentials>,
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
    /// MQTT 3.1.1 or 5 (`--protocol`).
    pub protocol: ProtocolLevel,
    /// MQTT 5 publishers send a topic alias instead of the topic after the first message of each
    /// connection (`--topic-alias`), when the broker's Topic Alias Maximum allows one.
    pub topic_alias: bool,
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
    /// The first failed TCP connect, with the operating system's reason (refused, unreachable).
    connect_error: Mutex<Option<String>>,
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
    /// PUBLISH → PUBACK (QoS 1) / PUBCOMP (QoS 2) of publishes sent in the window.
    pub ack_latency: Latency,
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
            connect_error: Mutex::new(None),
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

    /// The first TLS failure of the run (e.g. the broker's certificate was not trusted) and the
    /// first failed connect with its OS reason (e.g. connection refused), for the report's warnings.
    pub fn first_failures(&self) -> Vec<String> {
        [&self.shared.tls_error, &self.shared.connect_error]
            .iter()
            .filter_map(|slot| slot.lock().ok().and_then(|e| e.clone()))
            .collect()
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
                    total.ack_latency.add(&r.ack_latency);
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
