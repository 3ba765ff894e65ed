//! The reading side of a served connection: read what arrives, hand the bytes to the core
//! (`BrokerCore::handle_bytes`, which cuts and handles the packets) and apply its actions, until the
//! peer goes away or breaks the protocol.
//!
//! It is a hand-written state machine, polled by the connection's one task together with the
//! writer (`write_side.rs`), because it is the state every idle connection keeps. The same loop as
//! an `async fn` kept 400 bytes per connection (rustc lays a coroutine out with a slot for every
//! local that lives across some await, mostly padding here); [`ReadLoop`] is its fields and nothing
//! else. The rare waits (a bus lane that is full, a `memory_limit` that is nearly reached, a subscriber
//! that is behind) are boxed futures that exist only while they last.
//!
//! What must not happen here: no decoding and no MQTT decisions (the core makes them; it says when
//! to wait), and no socket writes (`write_side.rs` does them).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::io::AsyncRead;

use crate::broker::{ConnId, Next, Pressure};

use super::shard::{BusBacklog, ShardRuntime};
use super::topic_prefetch;

/// The longest a PUBLISH waits for memory (see [`wait_to_publish`]).
const MEMORY_PAUSE: Duration = Duration::from_millis(50);

/// How often a publisher held for a subscriber that is behind looks again without being woken
/// (a wake-up from another shard is dropped when its control lane is full).
const HOLD_RECHECK: Duration = Duration::from_millis(100);

/// A read buffer that grew past this (a large packet) is given back once it is empty.
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Whether reading goes on after a wait.
enum Flow {
    Continue,
    Stop,
}

/// Reads a connection until it ends; see the module documentation.
pub(crate) struct ReadLoop {
    rt: Rc<ShardRuntime>,
    conn: ConnId,
    /// Bytes read and not handled yet (a partial packet, between reads).
    buf: BytesMut,
    /// The wait in progress, if any: nothing is read or handed to the core until it is over.
    waiting: Option<Pin<Box<dyn Future<Output = Flow>>>>,
    /// When the bytes being handled were read: deliveries they cause are timed from then
    /// (latency histogram)...
    batch_read_at: Option<Instant>,
    /// ...if they held a PUBLISH.
    batch_has_publish: bool,
    /// Bytes at the front of `buf` whose topics were fetched ahead (`topic_prefetch.rs`).
    looked: usize,
}

impl ReadLoop {
    /// `buf` holds what was read after the CONNECT.
    pub(crate) fn new(rt: Rc<ShardRuntime>, conn: ConnId, buf: BytesMut) -> Self {
        ReadLoop {
            rt,
            conn,
            buf,
            waiting: None,
            batch_read_at: None,
            batch_has_publish: false,
            looked: 0,
        }
    }

    /// The shard the connection is served on.
    pub(crate) fn rt(&self) -> &Rc<ShardRuntime> {
        &self.rt
    }

    /// The connection read.
    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// Hands what `buf` holds to the core (which handles every whole packet in it). Returns
    /// `true` when the core asked for a wait, left in `waiting`.
    fn handle_buffered(&mut self) -> bool {
        let now = *self.batch_read_at.get_or_insert_with(Instant::now);
        let before = self.buf.len();
        let handled = self
            .rt
            .core
            .borrow_mut()
            .handle_bytes(self.conn, &mut self.buf, now);
        self.batch_has_publish |= handled.publish;
        self.looked = self.looked.saturating_sub(before - self.buf.len());
        match handled.next {
            Next::ReadMore => false,
            Next::PausePublisher => {
                let (rt, conn) = (self.rt.clone(), self.conn);
                self.waiting = Some(Box::pin(async move {
                    wait_to_publish(&rt, conn).await;
                    Flow::Continue
                }));
                true
            }
            Next::Stop => {
                self.send_then_stop();
                true
            }
        }
    }

    /// The peer's transport framing broke: the core closes the connection (and publishes the
    /// will) as for a malformed packet.
    fn protocol_error(&mut self) {
        self.rt.core.borrow_mut().handle_protocol_error(self.conn);
        self.send_then_stop();
    }

    /// The connection is closing: what the core wrote goes out before reading stops.
    fn send_then_stop(&mut self) {
        let blocked = self.rt.apply_actions();
        self.waiting = Some(Box::pin(send_then(self.rt.clone(), blocked, Flow::Stop)));
    }
}

impl ReadLoop {
    /// Reads from `reader` and hands what it brings to the core: `Pending` when there is nothing
    /// more to read (or a wait is on), `Ready` when reading is over (end of stream, a read error,
    /// or a protocol error, which the core has been told about).
    pub(crate) fn poll<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let this = self;
        loop {
            if let Some(waiting) = this.waiting.as_mut() {
                match waiting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Flow::Stop) => {
                        this.waiting = None;
                        return Poll::Ready(());
                    }
                    Poll::Ready(Flow::Continue) => this.waiting = None,
                }
            }
            if !this.rt.prefetch.borrow().is_empty() {
                let fetch =
                    topic_prefetch::fetch_ahead(&this.rt, this.conn, &this.buf, &mut this.looked);
                if let Some(fetch) = fetch {
                    this.waiting = Some(Box::pin(async move {
                        fetch.await;
                        Flow::Continue
                    }));
                    continue;
                }
            }
            if this.handle_buffered() {
                continue;
            }
            let read_at = this.batch_read_at.take();
            if std::mem::take(&mut this.batch_has_publish) {
                if let Some(at) = read_at {
                    this.rt.note_publish_ingress(at, this.conn);
                }
            }
            let blocked = this.rt.apply_actions();
            if !blocked.is_empty() {
                this.waiting = Some(Box::pin(send_then(
                    this.rt.clone(),
                    blocked,
                    Flow::Continue,
                )));
                continue;
            }
            if this.buf.is_empty() && this.buf.capacity() > KEEP_READ_BUFFER {
                this.buf = BytesMut::new();
            }
            match poll_read_more(&this.rt, reader, &mut this.buf, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    // Broken transport framing (WebSocket text frame, undecryptable TLS record):
                    // a protocol error like a malformed packet, counted and with the will published.
                    log::debug!(
                        "shard {}: connection {}: {e}; closing",
                        this.rt.id,
                        this.conn
                    );
                    this.protocol_error();
                }
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => {
                    this.rt.stats.borrow_mut().bytes_received += n as u64;
                    this.batch_read_at = Some(Instant::now());
                    this.batch_has_publish = false;
                    if shards::rt::need_preempt() {
                        // A peer that always has more to send must not keep the shard to itself:
                        // the other tasks run first, then this one hands over what it read.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl ReadLoop {
    /// The broker closed the connection and its writer is done (a lingering close follows):
    /// nothing more is read or handed to the core, but the wait in progress, if any, runs to its
    /// end (the bus messages it sends were decided before the close). `Ready` once none is left.
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waiting) = self.waiting.as_mut() {
            if waiting.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.waiting = None;
        }
        Poll::Ready(())
    }
}

async fn send_then(rt: Rc<ShardRuntime>, blocked: BusBacklog, then: Flow) -> Flow {
    rt.send_blocked(blocked).await;
    then
}

/// Reads more bytes into `buf`; `Ok(0)` at end of stream.
///
/// The read goes into the shard's one scratch buffer ([`ShardRuntime::read_scratch`]), borrowed only
/// for the duration of one `poll_read` (which fills it synchronously or leaves it untouched), and
/// only the bytes read are appended to `buf`. Before, `buf` grew by 8 KiB of zeroes before every
/// read: 35 % of the broker's instructions at 8 × 500 msg/s (callgrind: memset ≈ 4 200 Ir per
/// message), and 8 KiB of touched memory pinned by every idle connection.
pub(crate) fn poll_read_more<R: AsyncRead + Unpin>(
    rt: &ShardRuntime,
    reader: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut scratch = rt.read_scratch.borrow_mut();
    match Pin::new(reader).poll_read(cx, &mut scratch[..]) {
        Poll::Ready(Ok(n)) => {
            buf.extend_from_slice(&scratch[..n]);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}

/// Holds a publisher whose next PUBLISH the core held back ([`Next::PausePublisher`]): nothing
/// more is read from its socket, so TCP slows it down.
/// - The broker-wide `memory_limit` is nearly reached: until subscribers have drained enough
///   (`broker/memory.rs`), for [`MEMORY_PAUSE`] at most: memory held by offline sessions may
///   never drain, and publishers must slow down, not hang (at the limit itself the core drops
///   what would be queued, so memory stays bounded).
/// - A subscriber is behind (`broker/flow_control.rs`): until none is, which the core reports
///   at once on whichever shard it happens ([`HeldPublishers`](super::held_publishers)); at most
///   twice `stall_after` (by then the core has marked a subscriber that stays behind as stalled,
///   and it no longer counts).
async fn wait_to_publish(rt: &Rc<ShardRuntime>, conn: ConnId) {
    let settings = &rt.shared.core;
    let budget = &settings.memory;
    log::debug!(
        "shard {}: connection {conn}: holding this publisher (memory {} of {:?} bytes, {} \
         subscribers behind)",
        rt.id,
        budget.used(),
        budget.limit(),
        settings.flow.behind()
    );
    // What was handled so far goes out first: it may be what frees memory.
    let blocked = rt.apply_actions();
    rt.send_blocked(blocked).await;
    let _held = settings.flow.hold();
    let hold_limit = settings.stall_after * 2;
    let started = Instant::now();
    loop {
        let waited = started.elapsed();
        if budget.pressure() >= Pressure::PausePublishers && waited < MEMORY_PAUSE {
            shards::rt::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if waited >= hold_limit || !rt.core.borrow().holds_publisher(conn) {
            return;
        }
        let recheck = HOLD_RECHECK.min(hold_limit - waited);
        futures_lite::future::or(rt.held.resumed(), shards::rt::sleep(recheck)).await;
    }
}
