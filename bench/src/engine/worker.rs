//! One worker thread: its clients and the `mio` event loop: connecting, entering the engine's
//! phases, readiness events, cross-thread wake-ups, and the worker's final figures. Its periodic
//! housekeeping (timeouts, stalled windows, pings, counters) is in `worker/housekeeping.rs`.
//!
//! Drives its clients through `client`, `packets` and `publishing`; knows nothing of scenarios.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amqtt::protocol::{Connect, Packet, ProtocolLevel};
use bytes::BytesMut;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::client::{
    close, flush, flush_tls, note_connect_error, note_tls_error, requeue_if_drained, settle,
    Client, Conn, Counters, Ctx, PubState, State, SubState, TlsConn,
};
use super::packets::{read_and_handle, send_subscribe};
use super::publishing::{publish_closed, publish_open};
use super::{EngineResult, Mode, Phase, Plan, Shared, HOUSEKEEPING_NS, TIMER, WAKER};
use crate::clock::now_ns;
use crate::payload::Header;
use crate::stats::Latency;
use crate::sys;
use crate::tracker::StreamTracker;

mod housekeeping;

pub(super) struct Worker {
    poll: Poll,
    timer: sys::TimerFd,
    clients: Vec<Client>,
    ctx: Ctx,
}

impl Worker {
    pub(super) fn new(
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
                        alias: super::v5::Alias::Off,
                        receive_maximum: u32::MAX,
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
                ack_latency: Latency::new(),
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

    pub(super) fn run(mut self) -> io::Result<EngineResult> {
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
            let server = &ctx.plan.servers[ctx.plan.clients[c.plan].server];
            let addr = server.addr;
            match TcpStream::connect(addr) {
                Ok(mut s) => {
                    let _ = s.set_nodelay(true);
                    if let Err(e) = self.poll.registry().register(
                        &mut s,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        note_connect_error(ctx, addr, &e);
                        settle(c, ctx, State::Closed);
                        continue;
                    }
                    let server = &ctx.plan.servers[ctx.plan.clients[c.plan].server];
                    let conn = match &server.tls {
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
                    if let Some(p) = c.publisher.as_mut() {
                        // Aliases are per connection: the CONNACK says whether this one has any.
                        p.alias = super::v5::Alias::Off;
                        p.receive_maximum = u32::MAX;
                    }
                    let encoded = if ctx.plan.protocol == ProtocolLevel::V5 {
                        super::v5::connect(&ctx.plan, cp).encode(&mut c.wbuf)
                    } else {
                        Packet::Connect(Box::new(Connect {
                            protocol: ProtocolLevel::V311,
                            clean_session: cp.clean_session,
                            keep_alive: ctx.plan.keep_alive,
                            client_id: cp.client_id.clone(),
                            will: None,
                            username: ctx.plan.credentials.as_ref().map(|c| c.username.clone()),
                            password: ctx
                                .plan
                                .credentials
                                .as_ref()
                                .and_then(|c| c.password.clone()),
                        }))
                        .encode(&mut c.wbuf)
                    };
                    if encoded.is_err() {
                        ctx.c.errors.protocol += 1;
                        close(c, ctx, &self.poll, State::Closed);
                        continue;
                    }
                    ctx.handshaking += 1;
                }
                Err(e) => {
                    note_connect_error(ctx, addr, &e);
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
            let addr = ctx.plan.servers[ctx.plan.clients[c.plan].server].addr;
            let Some(s) = c.stream.as_ref().map(Conn::tcp) else {
                return;
            };
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    note_connect_error(ctx, addr, &e);
                    close(c, ctx, &self.poll, State::Closed);
                    return;
                }
            }
            match s.peer_addr() {
                Ok(_) => c.state = State::AwaitConnAck,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if ev.is_error() || ev.is_write_closed() {
                        note_connect_error(ctx, addr, &e);
                        close(c, ctx, &self.poll, State::Closed);
                    }
                    return;
                }
                Err(e) => {
                    note_connect_error(ctx, addr, &e);
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
            ack_latency: ctx.ack_latency,
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
