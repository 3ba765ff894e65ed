//! One shard's context, which every task on the shard borrows (`Rc<ShardRuntime>`): the broker
//! core in a `RefCell`, the bus sender, its connections' wake-up signals, the runtime's counters,
//! and the code that turns core actions into wake-ups and bus sends. Also what travels between
//! shards ([`ShardMessage`], [`HandOff`]).
//!
//! It spawns nothing and knows none of the tasks that use it: the shard's tasks are started in
//! `shard_tasks.rs` (accept loops, bus loop, tick) and `connection_task.rs` (connections).
//!
//! Everything here runs on the shard's own thread (`Rc`, `RefCell`, no locks). A `RefCell` borrow of
//! the core is never held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shards::{BusSender, SendError};

use crate::broker::{Action, BrokerCore, BusMessage, Claim, ConnId, ConnPeer, Lane};
use crate::plugins::{Authenticator, Prefetchers};
use crate::transport::server::DetachedStream;

use super::held_publishers::HeldPublishers;
use super::runtime_stats::RuntimeStats;
use super::settings::{ListenerInfo, SharedSettings};

/// What travels between shards.
pub(crate) enum ShardMessage {
    /// Broker traffic: publishes, interest changes. A publish carries the time its PUBLISH was read
    /// off a socket on the sending shard, when known (for the delivery-latency histogram).
    Core(BusMessage, Option<Instant>),
    /// A connection whose client id lives on the receiving shard (boxed: large and rare).
    HandOff(Box<HandOff>),
    /// No subscriber is behind any more: wake the publishers held on the receiving shard
    /// (`held_publishers.rs`).
    ResumePublishers,
    /// From the host program, not another shard: publish or list (`host_request.rs`; boxed: rare).
    Host(Box<super::host_request::HostRequest>),
    /// A configuration reload: what changes on this shard (`reload_shard.rs`; boxed: rare).
    Reload(Box<super::settings::ShardReload>),
}

/// One listening socket of this shard, to close at a reload that removes its listener, or at
/// shutdown.
pub(crate) struct Listening {
    pub name: String,
    pub fd: RawFd,
    /// Set before the socket is shut down: its accept loop ends at its next wake-up.
    pub closed: Rc<Cell<bool>>,
}

impl Listening {
    /// Stops accepting: shutdown(2) takes the socket out of its SO_REUSEPORT group and wakes its
    /// accept loop, which drops (closes) it.
    pub fn close(&self) {
        self.closed.set(true);
        // SAFETY: the accept task owns the socket until it sees `closed` and returns;
        // shutdown(2) leaves the descriptor valid.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}

/// A claim's answer once it came, and the connection task to wake then.
pub(crate) type ClaimSlot = (Option<Claim>, Option<Waker>);

/// The CONNECTs of this shard waiting for the cluster's session directory, by token
/// (`cluster_claim.rs` files and reads them).
#[derive(Default)]
pub(crate) struct Claims {
    pub next: Cell<u64>,
    pub waiting: RefCell<HashMap<u64, ClaimSlot>>,
}

/// An accepted connection moving to its home shard, with everything read from it so far.
pub(crate) struct HandOff {
    /// The socket and its TLS / WebSocket state.
    pub stream: DetachedStream,
    /// The client's address as the accepting shard learned it (the PROXY header's, behind a
    /// proxy): the socket's own peer may be the proxy.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Every MQTT byte read so far, CONNECT included (empty for WebSocket, which replays its own).
    pub mqtt_bytes: BytesMut,
    pub slot: ListenerSlot,
}

/// One open connection counted against its listener's `max-connections`; released on drop.
#[derive(Debug)]
pub(crate) struct ListenerSlot(pub Arc<ListenerInfo>);

impl Drop for ListenerSlot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Wakes one task when there is work for it (a connection's writer, the journal task).
#[derive(Default)]
pub(crate) struct Notify {
    waker: Cell<Option<Waker>>,
    notified: Cell<bool>,
}

impl Notify {
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether `notify` was called since the last time this returned `true`; if not, `cx`'s task
    /// is woken by the next `notify`.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> bool {
        if self.notified.replace(false) {
            return true;
        }
        self.waker.set(Some(cx.waker().clone()));
        false
    }
}

/// Wakes a connection's task when its outbox has bytes to write.
pub(crate) struct ConnSignal {
    notify: Notify,
    /// Read time of the oldest PUBLISH whose delivery is in the outbox and not yet written.
    stamp: Cell<Option<Instant>>,
    /// The socket, for `shutdown(2)`; valid while the connection's tasks hold the stream.
    pub fd: RawFd,
    /// The client's address, for the admin API's session listing.
    addr: Option<std::net::SocketAddr>,
    /// Its listener (shared, not copied: its name for the session listing).
    listener: Arc<ListenerInfo>,
}

impl ConnSignal {
    pub fn new(fd: RawFd, addr: Option<std::net::SocketAddr>, listener: Arc<ListenerInfo>) -> Self {
        ConnSignal {
            notify: Notify::default(),
            stamp: Cell::new(None),
            fd,
            addr,
            listener,
        }
    }

    /// Where the connection came from, for the session listing.
    pub fn peer(&self) -> ConnPeer {
        ConnPeer {
            address: self.addr,
            listener: self.listener.name.clone(),
        }
    }

    /// Notes that bytes caused by a PUBLISH read at `at` are in the outbox (the oldest one wins).
    pub fn stamp(&self, at: Instant) {
        if self.stamp.get().is_none_or(|old| at < old) {
            self.stamp.set(Some(at));
        }
    }

    /// The stamp of what is in the outbox now, if any; the writer takes it just before the outbox.
    pub fn take_stamp(&self) -> Option<Instant> {
        self.stamp.take()
    }

    pub fn notify(&self) {
        self.notify.notify();
    }

    /// See [`Notify::poll_notified`].
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> bool {
        self.notify.poll_notified(cx)
    }

    /// Shuts the socket down both ways, which ends a pending read on it.
    pub fn shutdown_socket(&self) {
        // SAFETY: `fd` belongs to a stream that is still open (see the field's doc); shutdown(2) does
        // not close or invalidate the descriptor.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}

/// Bus messages a full lane refused, per destination shard, in order: retried by `send_blocked`.
pub(crate) type BusBacklog = Vec<(usize, BusMessage)>;

pub(crate) struct ShardRuntime {
    pub id: usize,
    pub shared: Arc<SharedSettings>,
    pub core: RefCell<BrokerCore>,
    pub bus: BusSender<ShardMessage>,
    /// foldhash, not SipHash: one lookup per flushed connection per loop turn.
    pub conns: RefCell<HashMap<ConnId, Rc<ConnSignal>, foldhash::fast::FixedState>>,
    next_conn: Cell<ConnId>,
    action_scratch: RefCell<Vec<Action>>,
    pub stopping: Cell<bool>,
    pub stats: RefCell<RuntimeStats>,
    /// Set while the input being handled contains PUBLISHes: their read time, and the connection
    /// they came from (0 for the bus). `apply_actions` consumes it to stamp deliveries.
    ingress: Cell<Option<(Instant, ConnId)>>,
    /// Every connection's reads land here first (see `connection_task::read_more`): one buffer per
    /// shard instead of one per connection.
    pub read_scratch: RefCell<Box<[u8]>>,
    /// Wakes the journal task (persistence on) after a turn that made journal records.
    pub journal_notify: Notify,
    /// Set while the journal task waits for records and will write them the moment it is
    /// woken, without a sync first (`fsync: interval` or `off`): the connections a turn with
    /// records flushes are then woken by the journal task after the write, so that the
    /// acknowledgements it releases leave in the same `send` as the rest of their output.
    pub journal_ready: Cell<bool>,
    /// Connections to wake once the journal task has written (see `journal_ready`).
    deferred_flush: RefCell<Vec<ConnId>>,
    /// Publishers whose reading is held while a subscriber is behind, woken when none is.
    pub held: HeldPublishers,
    /// The authentication plugins (`SharedSettings::authenticator` at start; a reload replaces
    /// them on every shard).
    pub authenticator: RefCell<Arc<Authenticator>>,
    /// The topic plugins that fetch ahead (replaced with the authenticator).
    pub prefetch: RefCell<Prefetchers>,
    /// This shard's listening sockets.
    pub listening: RefCell<Vec<Listening>>,
    /// CONNECTs waiting for the cluster's session directory (`cluster_claim.rs`).
    pub claims: Claims,
}

/// Size of the shard's read scratch buffer: the most one `read` takes from one socket.
const READ_SCRATCH: usize = 64 * 1024;

impl ShardRuntime {
    /// The context of shard `id`, before any task runs on it.
    pub fn new(id: usize, shared: Arc<SharedSettings>, bus: BusSender<ShardMessage>) -> Self {
        let core = BrokerCore::new(shared.core.clone(), id, shared.shards, shared.id_seed);
        ShardRuntime {
            id,
            core: RefCell::new(core),
            bus,
            conns: RefCell::new(HashMap::default()),
            next_conn: Cell::new(1),
            action_scratch: RefCell::new(Vec::new()),
            stopping: Cell::new(false),
            stats: RefCell::new(RuntimeStats::default()),
            ingress: Cell::new(None),
            read_scratch: RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice()),
            journal_notify: Notify::default(),
            journal_ready: Cell::new(false),
            deferred_flush: RefCell::new(Vec::new()),
            held: HeldPublishers::default(),
            authenticator: RefCell::new(shared.authenticator.clone()),
            prefetch: RefCell::new(shared.prefetch.clone()),
            listening: RefCell::new(Vec::new()),
            claims: Default::default(),
            shared,
        }
    }

    pub fn next_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// Performs the core's pending actions. Bus messages that found their lane full are returned,
    /// in order, for the caller to retry (after the first failure to a shard, later messages to that
    /// shard queue behind it so that order is kept).
    pub fn apply_actions(&self) -> BusBacklog {
        let mut actions = self.action_scratch.take();
        let mut defer_flush = false;
        {
            let mut core = self.core.borrow_mut();
            core.poll_actions(&mut actions);
            if core.journal_pending() {
                self.journal_notify.notify();
                defer_flush = self.journal_ready.get();
            }
        }
        let ingress = self.ingress.take();
        let mut blocked: BusBacklog = Vec::new();
        for action in actions.drain(..) {
            match action {
                Action::Flush(conn) => {
                    if let Some(signal) = self.conns.borrow().get(&conn) {
                        if let Some((at, from)) = ingress {
                            if from != conn {
                                signal.stamp(at);
                            }
                        }
                        if defer_flush {
                            self.deferred_flush.borrow_mut().push(conn);
                        } else {
                            signal.notify();
                        }
                    }
                }
                Action::Bus { to, message } => {
                    if blocked.iter().any(|(t, _)| *t == to) {
                        blocked.push((to, message));
                        continue;
                    }
                    let stamp = ingress.map(|(at, _)| at);
                    if let Some(message) = self.try_send(to, message, stamp) {
                        blocked.push((to, message));
                    }
                }
                Action::ResumePublishers => self.resume_publishers(),
            }
        }
        self.action_scratch.replace(actions);
        blocked
    }

    /// Wakes the connections whose flush waited for the journal task's write.
    pub fn flush_deferred(&self) {
        let mut deferred = self.deferred_flush.take();
        {
            let conns = self.conns.borrow();
            for conn in deferred.drain(..) {
                if let Some(signal) = conns.get(&conn) {
                    signal.notify();
                }
            }
        }
        // Keep the allocation for the next turn, unless one was deferred meanwhile.
        let mut slot = self.deferred_flush.borrow_mut();
        if slot.is_empty() {
            *slot = deferred;
        }
    }

    /// No subscriber is behind any more: wakes the publishers held here, and tells the other
    /// shards when some are held anywhere. A full control lane drops the message: the publishers
    /// held there look again after a short while anyway (`read_loop.rs`).
    fn resume_publishers(&self) {
        self.held.resume();
        if self.shared.core.flow.held() == 0 {
            return;
        }
        for to in (0..self.shared.shards).filter(|&to| to != self.id) {
            if self
                .bus
                .try_send_control(to, ShardMessage::ResumePublishers)
                .is_err()
            {
                log::debug!(
                    "shard {}: control lane to shard {to} full: resume not sent",
                    self.id
                );
            }
        }
    }

    /// Notes that the input about to be applied held PUBLISHes read at `at` from connection `from`
    /// (0: from the bus): the deliveries `apply_actions` flushes next are stamped with it.
    pub fn note_publish_ingress(&self, at: Instant, from: ConnId) {
        let earliest = match self.ingress.get() {
            Some((old, _)) if old <= at => old,
            _ => at,
        };
        self.ingress.set(Some((earliest, from)));
    }

    /// Tries once; returns the message when the lane is full and it must be retried. QoS 0 publishes
    /// are dropped (and counted) instead of retried. `stamp` rides along for the latency histogram
    /// (retries go without it).
    fn try_send(
        &self,
        to: usize,
        message: BusMessage,
        stamp: Option<Instant>,
    ) -> Option<BusMessage> {
        let lane = message.lane();
        let wrapped = ShardMessage::Core(message, stamp);
        let result = match lane {
            Lane::Data => self.bus.try_send_data(to, wrapped),
            Lane::Control => self.bus.try_send_control(to, wrapped),
        };
        match result {
            Ok(()) => None,
            Err(SendError::Full(ShardMessage::Core(message, _))) => {
                let qos0 = message.droppable_publishes();
                if qos0 > 0 {
                    self.stats.borrow_mut().bus_dropped_qos0 += qos0;
                    return None;
                }
                self.stats.borrow_mut().bus_blocked += 1;
                Some(message)
            }
            Err(_) => {
                log::warn!("shard {}: bus to shard {to} is closed", self.id);
                None
            }
        }
    }

    /// Retries blocked sends until they go through, pausing the caller (a publisher's reader: this is
    /// the TCP back-pressure on a publisher whose subscribers' shard cannot keep up).
    pub async fn send_blocked(&self, blocked: BusBacklog) {
        for (to, mut message) in blocked {
            loop {
                match self.try_send(to, message, None) {
                    None => break,
                    Some(back) => {
                        message = back;
                        shards::rt::sleep(Duration::from_micros(50)).await;
                    }
                }
                if self.stopping.get() {
                    break;
                }
            }
        }
    }
}
