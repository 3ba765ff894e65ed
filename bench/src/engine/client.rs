//! Per-client state of a worker and the helpers around a client's connection: connection states,
//! publisher and subscriber bookkeeping, plain and TLS connections, the worker's counters and
//! context ([`Ctx`]), and the socket I/O (flush, read, settle, close).
//!
//! Moves bytes and changes states only: it neither parses MQTT packets nor decides what to publish.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use amqtt::protocol::TopicName;
use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::Poll;
use rustls::ClientConnection;

#[cfg(doc)]
use super::Engine;
use super::{Errors, Mode, Phase, Plan, Shared, WBUF_HIGH};
use crate::stats::Latency;
use crate::tracker::StreamTracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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

/// One unacknowledged publish: the packet it awaits, PUBACK (1), PUBREC (2) or PUBCOMP (3), and
/// its send time (the stamp in its payload), for the publish → acknowledgement latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Awaiting {
    pub(super) stage: u8,
    pub(super) sent_ns: u64,
}

/// Per-publisher state of a client.
pub(super) struct PubState {
    pub(super) id: u32,
    pub(super) topic: TopicName,
    pub(super) retain: bool,
    pub(super) next_seq: u64,
    pub(super) next_packet_id: u16,
    /// Unacknowledged packet ids → what they await and when they were sent.
    pub(super) awaiting: HashMap<u16, Awaiting>,
    /// Ready-queue membership.
    pub(super) queued: bool,
    /// Blocked on the end-to-end window.
    pub(super) blocked: bool,
    /// Stopped because the write buffer was full: retried once it drains.
    pub(super) wbuf_full: bool,
    /// Last time the window moved (or a message went out).
    pub(super) last_progress: u64,
    /// Window base: max(min over streams, floor).
    pub(super) base: u64,
    /// Raised to `next_seq` when a stalled window is reset.
    pub(super) floor: u64,
    /// Open loop: period and phase offset in ns.
    pub(super) period_ns: f64,
    pub(super) offset_ns: f64,
    pub(super) next_due: u64,
    /// MQTT 5: the topic alias on the current connection.
    pub(super) alias: super::v5::Alias,
    /// MQTT 5: the broker's Receive Maximum on the current connection (QoS 1/2 messages
    /// unacknowledged at once; `u32::MAX` when it set none, and at MQTT 3).
    pub(super) receive_maximum: u32,
}

/// Per-subscriber state of a client.
pub(super) struct SubState {
    /// `(publisher, stream)` sorted by publisher; index i ↔ `trackers[i]`.
    pub(super) streams: Vec<(u32, u32)>,
    pub(super) trackers: Vec<StreamTracker>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub(super) qos2: HashSet<u16>,
    pub(super) subscribed_at: u64,
    /// Has completed a SUBSCRIBE at least once (persistent-session reconnects need none).
    pub(super) subscribed_once: bool,
}

/// A client's connection: plain TCP, or TLS over TCP.
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

pub(super) struct TlsConn {
    pub(super) tcp: TcpStream,
    pub(super) tls: ClientConnection,
}

impl Conn {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.tcp,
        }
    }

    pub(super) fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &mut t.tcp,
        }
    }
}

pub(super) struct Client {
    pub(super) plan: usize,
    pub(super) stream: Option<Conn>,
    pub(super) state: State,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) dirty: bool,
    pub(super) connect_start: u64,
    /// A CONNACK has been received on some connection of this client (storm reconnects).
    pub(super) connected_once: bool,
    pub(super) publisher: Option<PubState>,
    pub(super) subscriber: Option<SubState>,
}

impl Client {
    /// Bytes wait to go out: MQTT packets, or (TLS) handshake and encrypted records.
    #[inline]
    pub(super) fn wants_flush(&self) -> bool {
        !self.wbuf.is_empty() || matches!(&self.stream, Some(Conn::Tls(t)) if t.tls.wants_write())
    }
}

/// Worker-local counters.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: u64,
    pub(super) sent_window: u64,
    pub(super) delivered: u64,
    pub(super) delivered_window: u64,
    pub(super) unique: u64,
    pub(super) settled: u64,
    pub(super) connected: u64,
    pub(super) connacks: u64,
    pub(super) errors: Errors,
}

/// Everything of a worker except its clients (so both can be borrowed at once).
pub(super) struct Ctx {
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) plan: Arc<Plan>,
    pub(super) phase: Phase,
    pub(super) t_run: u64,
    pub(super) t_warm: u64,
    pub(super) t_end: u64,
    pub(super) storm_round: u64,
    pub(super) c: Counters,
    pub(super) latency: Latency,
    /// PUBLISH → PUBACK (QoS 1) / PUBCOMP (QoS 2) of publishes sent in the window.
    pub(super) ack_latency: Latency,
    pub(super) interval: Latency,
    pub(super) connect_latency: Latency,
    pub(super) reconnect_latency: Latency,
    /// Clients whose publisher should try to send.
    pub(super) ready: Vec<usize>,
    /// Open-loop schedule: (check time, client).
    pub(super) schedule: BinaryHeap<Reverse<(u64, usize)>>,
    /// Clients waiting to start a TCP connect.
    pub(super) pending: VecDeque<usize>,
    pub(super) handshaking: usize,
    pub(super) concurrency: usize,
    pub(super) connect_interval_ns: u64,
    pub(super) next_connect: u64,
    /// Publisher ids to notify, per worker.
    pub(super) remote: Vec<Vec<u32>>,
    pub(super) dirty: Vec<usize>,
    pub(super) scratch: Vec<u8>,
    /// One padded payload, stamped with each message's header in turn and copied into the
    /// connection's write buffer: no allocation per message.
    pub(super) payload: Vec<u8>,
}

/// A closed-loop publisher that stopped on a full write buffer goes back to the ready queue once
/// the buffer has drained below the limit.
pub(super) fn requeue_if_drained(c: &mut Client, i: usize, ctx: &mut Ctx) {
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

pub(super) fn mark_dirty(c: &mut Client, i: usize, ctx: &mut Ctx) {
    if !c.dirty {
        c.dirty = true;
        ctx.dirty.push(i);
    }
}

/// A client reached Ready or gave up in this connect round.
pub(super) fn settle(c: &mut Client, ctx: &mut Ctx, state: State) {
    c.state = state;
    ctx.c.settled += 1;
    if state == State::Ready {
        ctx.c.connected += 1;
    }
}

/// Closes the connection. A client still handshaking settles as failed.
pub(super) fn close(c: &mut Client, ctx: &mut Ctx, poll: &Poll, state: State) {
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

pub(super) fn flush(c: &mut Client, ctx: &mut Ctx, poll: &Poll) {
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
pub(super) fn flush_tls(t: &mut TlsConn, wbuf: &mut BytesMut) -> io::Result<()> {
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
pub(super) fn read_plain(s: &mut TcpStream, rbuf: &mut BytesMut, scratch: &mut [u8]) -> bool {
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
pub(super) fn read_tls(
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

/// Keeps the first TLS failure's description for [`Engine::first_failures`].
pub(super) fn note_tls_error(ctx: &Ctx, message: String) {
    if let Ok(mut slot) = ctx.shared.tls_error.lock() {
        slot.get_or_insert(message);
    }
}

/// Counts a failed TCP connect and keeps the first one's OS reason for [`Engine::first_failures`]
/// (a count alone does not tell a refused port from an unreachable host or exhausted ports).
pub(super) fn note_connect_error(ctx: &mut Ctx, addr: SocketAddr, error: &io::Error) {
    ctx.c.errors.connect_failed += 1;
    if let Ok(mut slot) = ctx.shared.connect_error.lock() {
        slot.get_or_insert_with(|| format!("connect to {addr} failed: {error}"));
    }
}

pub(super) fn lost_connection(c: &mut Client, ctx: &mut Ctx, poll: &Poll) {
    match c.state {
        State::Ready | State::AwaitSubAck => ctx.c.errors.disconnected += 1,
        State::Connecting | State::AwaitConnAck => ctx.c.errors.connect_failed += 1,
        State::Idle | State::Closed => {}
    }
    close(c, ctx, poll, State::Closed);
}
