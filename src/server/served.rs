//! A served connection's task, once its CONNECT is read on its home shard: [`Serve`], the one
//! future an idle connection keeps. It runs the connecting (`connection_task::begin`, boxed), then
//! the reading (`read_loop.rs`) and the writing (`write_side.rs`) together until both are over,
//! then, after a close the broker decided, the lingering close (`linger.rs`); and it has the core
//! forget the connection when its reading ends (`finish`).
//!
//! What must not happen here: no MQTT decisions (the core makes them), no reads or writes of its
//! own (the reader and the writer do them).

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::broker::ConnId;
use crate::transport::server::ServerStream;

use super::bus_retry;
use super::lifecycle::{self, Peer};
use super::linger::{self, Lingered};
use super::read_loop::ReadLoop;
use super::shard::{ConnSignal, ListenerSlot, ShardRuntime};
use super::write_side::{Ended, WriteSide};

/// What a served connection's task keeps for the connection's whole life, once its CONNECT was
/// accepted: kept small on purpose (see [`Serve`]).
pub(super) struct Live {
    pub signal: Rc<ConnSignal>,
    /// For the closing log line.
    pub client_id: Arc<str>,
    pub addr: Option<SocketAddr>,
    pub slot: ListenerSlot,
}

/// What `connection_task::begin` hands over: see there.
pub(super) type Begun = Option<(Live, ReadLoop, ServerStream)>;

/// The connection task's future (see `connection_task::serve`). Hand-written rather than an
/// `async fn`, which would keep its arguments (and a slot for its state) for the connection's
/// whole life.
// `Served` inline: it is the variant that lasts, and boxing it would add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Serve {
    Beginning(Pin<Box<dyn Future<Output = Begun>>>),
    Serving(Served),
    /// The broker closed the connection and the core has forgotten it: the socket is read on
    /// for a bounded time before it closes (`linger.rs`).
    Lingering(Pin<Box<dyn Future<Output = ()>>>),
    Over,
}

impl Future for Serve {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Serve::Beginning(begun) => match begun.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Ready(Some((live, reading, stream))) => {
                        *this = Serve::Serving(Served {
                            live,
                            stream,
                            reading,
                            reading_done: false,
                            writing: WriteSide::new(),
                            writing_done: false,
                            lingering: false,
                        });
                    }
                },
                Serve::Serving(served) => match served.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Outcome::Over) => *this = Serve::Over,
                    Poll::Ready(Outcome::Linger) => {
                        if let Serve::Serving(served) = std::mem::replace(this, Serve::Over) {
                            *this = Serve::Lingering(Box::pin(served.linger()));
                        }
                    }
                },
                Serve::Lingering(lingering) => {
                    if lingering.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = Serve::Over;
                }
                Serve::Over => return Poll::Ready(()),
            }
        }
    }
}

/// How a served connection's reading and writing ended.
enum Outcome {
    /// The socket is to be closed now.
    Over,
    /// The broker closed the connection: a lingering close follows.
    Linger,
}

/// A served connection's reading and writing, polled together by its task until both are over;
/// then the shard forgets the connection.
///
/// Reading ends when the peer goes away or breaks the protocol, or when the writer shut the
/// socket down after a broker-side close; then the core forgets the connection (`finish`), which
/// tells the writer to end too. Writing ends when the core has forgotten the connection, a write
/// fails, or a closing connection's last bytes are out; then the socket is shut down, which ends
/// the reading. When the broker closed the connection (its last bytes are out), only the sending
/// side is shut down: the reader ends its wait if it has one, the core forgets the connection,
/// and the socket lingers (`linger.rs`).
pub(super) struct Served {
    live: Live,
    stream: ServerStream,
    /// Also holds the shard runtime and the connection id, for both sides.
    reading: ReadLoop,
    /// Set once reading is over (and `finish` has run).
    reading_done: bool,
    writing: WriteSide,
    writing_done: bool,
    /// Set when the writer ended with the broker's own close: the reader reads no more.
    lingering: bool,
}

impl Served {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self;
        loop {
            if !this.reading_done {
                let (reading, stream) = (&mut this.reading, &mut this.stream);
                let lingering = this.lingering;
                let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if lingering {
                        reading.poll_wait(cx)
                    } else {
                        reading.poll(stream, cx)
                    }
                }));
                let (rt, conn) = (this.reading.rt(), this.reading.conn());
                match polled {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(())) => {
                        this.reading_done = true;
                        finish(rt, conn, &this.live);
                    }
                    Err(_) => {
                        log::error!(
                            "shard {}: connection {conn} task panicked; closing it",
                            rt.id
                        );
                        rt.stats.borrow_mut().connection_panics += 1;
                        rt.core.borrow_mut().handle_protocol_error(conn);
                        this.reading_done = true;
                        finish(rt, conn, &this.live);
                    }
                }
            }
            let (rt, conn) = (this.reading.rt(), this.reading.conn());
            if !this.writing_done {
                let signal = &this.live.signal;
                let Poll::Ready(ended) = this.writing.poll(rt, conn, signal, &mut this.stream, cx)
                else {
                    return Poll::Pending;
                };
                this.writing_done = true;
                if ended == Ended::Closed && !this.reading_done {
                    // The broker's close: the peer reads the end of the stream after the last
                    // bytes, and may go on writing until it does (`linger.rs`).
                    linger::shut_write(signal.fd);
                    this.lingering = true;
                } else {
                    // Ends the reading, whichever side decided to close; read again to see it.
                    signal.shutdown_socket();
                }
                continue;
            }
            if this.reading_done {
                if this.lingering {
                    return Poll::Ready(Outcome::Linger);
                }
                rt.conns.borrow_mut().remove(&conn);
                return Poll::Ready(Outcome::Over);
            }
            return Poll::Pending;
        }
    }

    /// The lingering close of a connection the core has forgotten (`finish` has run). It stays
    /// among the shard's connections, and counts against its listener's `max-connections`,
    /// until its socket is closed: a shard that stops waits for it as for any other.
    fn linger(self) -> impl Future<Output = ()> {
        let Served {
            live,
            mut stream,
            reading,
            ..
        } = self;
        let (rt, conn) = (reading.rt().clone(), reading.conn());
        drop(reading);
        async move {
            let lingered = linger::drain(&rt, &mut stream).await;
            log_lingered(&rt, conn, lingered);
            rt.conns.borrow_mut().remove(&conn);
            drop(stream);
            drop(live);
        }
    }
}

pub(super) fn log_lingered(rt: &ShardRuntime, conn: ConnId, lingered: Lingered) {
    log::debug!(
        "shard {}: connection {conn}: socket closed after its lingering close: {lingered:?}",
        rt.id
    );
}

/// The peer went away (or the broker closed the connection): the core forgets it, the writer is
/// told to finish, the closing line is logged.
fn finish(rt: &Rc<ShardRuntime>, conn: ConnId, live: &Live) {
    let reason = rt.core.borrow().close_reason(conn);
    rt.core.borrow_mut().handle_closed(conn);
    let peer = Peer {
        client_id: Some(&*live.client_id).filter(|id| !id.is_empty()),
        username: None,
        addr: live.addr,
        listener: &live.slot.0.name,
        shard: rt.id,
        level: rt.shared.connection_log_level,
    };
    lifecycle::closed(&peer, reason);
    let blocked = rt.apply_actions();
    bus_retry::send_blocked_later(rt, blocked);
    live.signal.notify();
}
