//! One connection's life on a shard: read until the core has a verdict on the first packet (with a
//! timeout), hand the connection to the client id's home shard if the core names another one, run
//! the authentication plugins if the core asks for a verdict, let the core answer the CONNECT, then
//! run the reader (bytes → core) and the writer (outbox → socket) until either side ends
//! (`served.rs`). Every MQTT decision, and every byte written, comes from the core
//! (`broker/handlers/connect.rs`, `handle_bytes`).
//!
//! The core handles every complete packet in what one `read` returned before the actions are
//! applied once, and the writer writes everything the outbox holds in one `write_all`: that is how
//! reads and writes are batched. Each connection's work runs under `catch_unwind`, so a bug triggered
//! by one client closes that client only.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_lite::io::AsyncRead;
use futures_lite::FutureExt;
use shards::TcpConn;

use crate::broker::{AuthVerdict, FirstPacket, ListenerIdentity, PendingConnect};
use crate::transport::server::{Accepted, HandshakeError, ServerStream};

use super::lifecycle::{self, Peer};
use super::linger;
use super::read_loop::{poll_read_more, ReadLoop};
use super::served::{log_lingered, Live, Serve};
use super::shard::{ConnSignal, HandOff, ListenerSlot, ShardMessage, ShardRuntime};
use super::write_side::{Ended, WriteSide};

/// Reads more bytes into `buf`; `Ok(0)` at end of stream (see [`poll_read_more`]).
async fn read_more<R: AsyncRead + Unpin>(
    rt: &ShardRuntime,
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_more(rt, reader, buf, cx)).await
}

/// How the connection's listener identifies clients, for the core.
fn listener_identity(stream: &ServerStream, slot: &ListenerSlot) -> ListenerIdentity {
    if slot.0.setup().use_identity_as_username {
        ListenerIdentity::Certificate {
            common_name: stream.peer_common_name(),
        }
    } else {
        ListenerIdentity::Connect
    }
}

/// Reads until the core has a verdict on the first packet; `None` when the connection is to be
/// closed (the core counted a bad first packet, or the peer went away). `buf` keeps every byte
/// read: a connection that moves to another shard takes them along.
async fn read_first_packet(
    rt: &ShardRuntime,
    stream: &mut ServerStream,
    buf: &mut BytesMut,
    identity: &ListenerIdentity,
) -> Option<PendingConnect> {
    loop {
        let first = rt.core.borrow_mut().handle_first_bytes(buf, identity);
        match first {
            FirstPacket::Incomplete => {}
            FirstPacket::Close => return None,
            FirstPacket::Connect(pending) => return Some(pending),
        }
        match read_more(rt, stream, buf).await {
            // The transport's own framing was broken (a WebSocket text frame, a TLS record that
            // does not decrypt): the peer's bytes are bad, not a probe that went away.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                rt.core.borrow_mut().handle_broken_first_bytes();
                return None;
            }
            Ok(0) | Err(_) => {
                // Port probes and health checks: not an error of the peer's bytes.
                log::debug!("shard {}: closing connection: closed before CONNECT", rt.id);
                rt.stats.borrow_mut().closed_before_connect += 1;
                return None;
            }
            Ok(_) => {}
        }
    }
}

/// Where an accepted connection stands once its CONNECT is read.
enum Arrival {
    /// Serve it here.
    Here(Box<Start>),
    /// Already dealt with (refused, closed, moved).
    Done,
}

/// A connection whose CONNECT has been read on its home shard, ready to be served.
pub(crate) struct Start {
    stream: ServerStream,
    /// The client's address (from the PROXY header on a listener behind a proxy).
    addr: Option<SocketAddr>,
    pending: PendingConnect,
    /// What was read after the CONNECT.
    buf: BytesMut,
    slot: ListenerSlot,
}

/// Spawns a connection task whose panic (a bug) ends that connection only, never the shard.
pub(crate) fn spawn_isolated(rt: &Rc<ShardRuntime>, task: impl Future<Output = ()> + 'static) {
    shards::rt::spawn(Isolated {
        rt: rt.clone(),
        task,
    })
    .detach();
}

pin_project_lite::pin_project! {
    /// A connection's task with each poll under `catch_unwind` (after a panic it is not polled
    /// again). Hand-written because it is the state every connection keeps for its whole life:
    /// an `async` block around `catch_unwind().await` kept the wrapped future twice (the
    /// captured value and the future being awaited), 462 B per served connection.
    struct Isolated<F> {
        rt: Rc<ShardRuntime>,
        #[pin]
        task: F,
    }
}

impl<F: Future<Output = ()>> Future for Isolated<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let task = this.task;
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                log::error!(
                    "shard {}: a connection task panicked; that connection is closed",
                    this.rt.id
                );
                this.rt.stats.borrow_mut().connection_panics += 1;
                Poll::Ready(())
            }
        }
    }
}

/// A freshly accepted socket on the shard whose listener accepted it: handshakes and CONNECT under
/// `connect_timeout`, then serve here or move to the client id's home shard.
pub(crate) async fn accepted(rt: Rc<ShardRuntime>, tcp: TcpConn, slot: ListenerSlot) {
    let _ = tcp.set_nodelay(true);
    let timeout = rt.shared.connect_timeout;
    // Boxed: the handshakes' futures (TLS, WebSocket upgrade) are large and run once. Inline, they
    // sized this task for the connection's whole life: 16.6 KB per idle connection (massif, 1000
    // connections), most of the 19.5 KB of RSS each cost.
    let arrival = async { Some(Box::pin(arrive(&rt, tcp, slot)).await) }
        .or(async {
            shards::rt::sleep(timeout).await;
            None
        })
        .await;
    match arrival {
        // A task of its own: this one's state (the handshake phase, the socket it was given)
        // would otherwise stay allocated for the connection's whole life.
        Some(Arrival::Here(start)) => spawn_isolated(&rt, serve(rt.clone(), start)),
        Some(Arrival::Done) => {}
        None => {
            log::debug!("shard {}: no CONNECT within {timeout:?}, closing", rt.id);
            rt.stats.borrow_mut().connect_timeouts += 1;
        }
    }
}

async fn arrive(rt: &Rc<ShardRuntime>, tcp: TcpConn, slot: ListenerSlot) -> Arrival {
    let Accepted {
        mut stream,
        remote_addr: addr,
    } = match slot.0.setup().transport.accept(tcp).await {
        Ok(accepted) => accepted,
        Err(error) => {
            log::debug!("shard {}: listener '{}': {error}", rt.id, slot.0.name);
            let mut stats = rt.stats.borrow_mut();
            match error {
                HandshakeError::Proxy(_) => stats.proxy_header_failures += 1,
                // A proxy's health check (connect, close) or a port probe: no bad bytes.
                HandshakeError::ProxyClosed | HandshakeError::ProxyRead(_) => {
                    stats.closed_before_connect += 1;
                }
                HandshakeError::Tls(_) | HandshakeError::Upgrade(_) => {
                    stats.handshake_failures += 1;
                }
            }
            return Arrival::Done;
        }
    };
    // Grows to what the reads bring (they go to the shard's scratch buffer first).
    let mut buf = BytesMut::new();
    let identity = listener_identity(&stream, &slot);
    let Some(pending) = read_first_packet(rt, &mut stream, &mut buf, &identity).await else {
        return Arrival::Done;
    };
    let home = pending.home();
    if home == rt.id {
        stream.stop_recording();
        buf.advance(pending.byte_len());
        return Arrival::Here(Box::new(Start {
            stream,
            addr,
            pending,
            buf,
            slot,
        }));
    }
    // WebSocket replays its raw frames on arrival, which carry these MQTT bytes again.
    if stream.is_websocket() {
        buf.clear();
    }
    match stream.detach().await {
        Ok(detached) => {
            let handoff = ShardMessage::HandOff(Box::new(HandOff {
                stream: detached,
                remote_addr: addr,
                mqtt_bytes: buf,
                slot,
            }));
            if rt.bus.try_send_control(home, handoff).is_err() {
                log::warn!(
                    "shard {}: control lane to shard {home} full, dropping a connection",
                    rt.id
                );
            } else {
                rt.stats.borrow_mut().handoffs_sent += 1;
            }
        }
        Err(error) => log::warn!(
            "shard {}: cannot hand a connection to shard {home}: {error}",
            rt.id
        ),
    }
    Arrival::Done
}

/// A connection handed over by another shard: rebuild the stream, read its CONNECT again (from the
/// bytes that came along), serve it.
pub(crate) async fn handed_off(rt: Rc<ShardRuntime>, handoff: Box<HandOff>) {
    let HandOff {
        stream,
        remote_addr: addr,
        mqtt_bytes: mut buf,
        slot,
    } = *handoff;
    let arrival = Box::pin(async {
        let mut stream = match ServerStream::attach(stream).await {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!(
                    "shard {}: cannot take a handed-off connection: {error}",
                    rt.id
                );
                return None;
            }
        };
        let identity = listener_identity(&stream, &slot);
        let pending = read_first_packet(&rt, &mut stream, &mut buf, &identity).await?;
        Some((stream, pending))
    })
    .await;
    let Some((stream, pending)) = arrival else {
        return;
    };
    if pending.home() != rt.id {
        log::error!(
            "shard {}: a handed-off connection does not belong here; closing it",
            rt.id
        );
        return;
    }
    buf.advance(pending.byte_len());
    let start = Box::new(Start {
        stream,
        addr,
        pending,
        buf,
        slot,
    });
    // A task of its own, as in `accepted`.
    spawn_isolated(&rt, serve(rt.clone(), start));
}

/// Runs an MQTT connection on its home shard until it ends, then forgets it.
///
/// This is the one future an idle connection keeps, so it holds little: connecting (authentication,
/// CONNACK, the first writes) runs in a boxed future that is gone once the client is in, and the
/// reading and the writing are hand-written state machines (`read_loop.rs`, `write_side.rs`)
/// polled by this one task. The connection task measured 2 448 B before any of this, 1 104 B with
/// `begin` boxed (rustc 1.95, release), and the sizes in bench/RESULTS.md now.
fn serve(rt: Rc<ShardRuntime>, start: Box<Start>) -> Serve {
    Serve::Beginning(Box::pin(async move { begin(&rt, start).await }))
}

/// Registers the connection, authenticates it and lets the core answer its CONNECT. `None` when
/// the CONNECT was refused (the refusal is then sent and the connection forgotten); otherwise what
/// `serve` needs: the reader, starting with the bytes read after the CONNECT, and the stream (its
/// first poll writes the CONNACK).
async fn begin(rt: &Rc<ShardRuntime>, start: Box<Start>) -> Option<(Live, ReadLoop, ServerStream)> {
    let Start {
        mut stream,
        addr,
        pending,
        buf,
        slot,
    } = *start;
    let conn = rt.next_conn_id();
    let signal = Rc::new(ConnSignal::new(stream.raw_fd(), addr, slot.0.clone()));
    rt.conns.borrow_mut().insert(conn, signal.clone());

    let requested_id = pending.client_id().to_owned();
    let username = pending.username().map(str::to_owned);
    let mut password = None;
    let auth = match pending.credentials() {
        Some(mut credentials) => {
            credentials.remote_addr = addr;
            credentials.listener.clone_from(&slot.0.name);
            credentials.transport = stream.transport();
            credentials.certificate = stream.peer_certificate().map(Arc::new);
            password.clone_from(&credentials.password);
            let authenticator = rt.authenticator.borrow().clone();
            super::authenticate::verdict(&authenticator, credentials).await
        }
        // The core asks for no verdict (a client certificate, or a refusal): none is computed.
        None => AuthVerdict::Allowed,
    };
    // Plugins that keep something per client learn of the CONNECT before the core answers it
    // (its will and resumed session are checked then), or after, once a generated id is known.
    let announce = auth != AuthVerdict::Denied;
    // A topic plugin that asks a service gets its answer for the will now: the core checks the
    // will's topic when it answers the CONNECT, and cannot wait then. (A generated client id is
    // not known yet: such a client's will is judged from what the plugin holds.)
    if announce && !rt.prefetch.borrow().is_empty() && !requested_id.is_empty() {
        if let Some(topic) = pending.will_topic() {
            let topic = topic.to_owned();
            super::topic_prefetch::fetch_will(rt, &requested_id, username.as_deref(), &topic).await;
        }
    }
    let authenticator = rt.authenticator.borrow().clone();
    if announce && !requested_id.is_empty() {
        authenticator.accepted(&requested_id, password.as_deref());
    }
    let mut pending = pending;
    if announce {
        super::cluster_claim::claim(rt, &mut pending).await;
    }
    let outcome = rt
        .core
        .borrow_mut()
        .handle_connect(conn, pending, auth, Instant::now());
    if outcome.is_accepted() {
        super::cluster_claim::connected(rt, conn);
    }
    // The session's own `Arc`: no copy of the id per connection.
    let client_id: Arc<str> = rt
        .core
        .borrow()
        .client_id_of(conn)
        .unwrap_or_else(|| requested_id.clone().into());
    if announce && requested_id.is_empty() && outcome.is_accepted() {
        authenticator.accepted(&client_id, password.as_deref());
    } else if announce && !requested_id.is_empty() && !outcome.is_accepted() {
        authenticator.refused(&requested_id);
    }
    let blocked = rt.apply_actions();
    rt.send_blocked(blocked).await;

    let peer = Peer {
        client_id: Some(&*client_id).filter(|id| !id.is_empty()),
        username: username.as_deref().filter(|_| !outcome.is_accepted()),
        addr,
        listener: &slot.0.name,
        shard: rt.id,
        level: rt.shared.connection_log_level,
    };
    if outcome.is_accepted() || outcome.authenticating {
        // An enhanced authentication exchange runs on the served connection: the core writes
        // its CONNACK when it ends (`broker/handlers/auth.rs`).
        if outcome.authenticating {
            log::debug!(
                "shard {}: connection {conn} authenticating (MQTT 5 AUTH)",
                rt.id
            );
        } else {
            lifecycle::connected(&peer, outcome.session_present);
        }
        let live = Live {
            signal,
            client_id,
            addr,
            slot,
        };
        // What was read after the CONNECT, if anything; otherwise no buffer is kept.
        let buf = if buf.is_empty() { BytesMut::new() } else { buf };
        return Some((live, ReadLoop::new(rt.clone(), conn, buf), stream));
    }
    // Refused: CONNACK is written and the socket shut down; then the core forgets it, and the
    // socket lingers if the CONNACK went out (see `linger.rs`).
    lifecycle::refused(&peer, outcome.code);
    let mut writing = WriteSide::new();
    let ended = std::future::poll_fn(|cx| writing.poll(rt, conn, &signal, &mut stream, cx)).await;
    if ended == Ended::Closed {
        linger::shut_write(signal.fd);
    } else {
        signal.shutdown_socket();
    }
    rt.core.borrow_mut().handle_closed(conn);
    rt.apply_actions();
    if ended == Ended::Closed {
        let lingered = linger::drain(rt, &mut stream).await;
        log_lingered(rt, conn, lingered);
    }
    rt.conns.borrow_mut().remove(&conn);
    None
}
