//! One connection's life on a shard: read until CONNECT (with a timeout), hand it to the client id's
//! home shard if that is another one, then run the reader (decode → core) and the writer (outbox →
//! socket) until either side ends.
//!
//! The reader decodes every complete packet in what one `read` returned before applying the core's
//! actions once, and the writer writes everything the outbox holds in one `write_all`: that is how
//! reads and writes are batched. Each connection's work runs under `catch_unwind`, so a bug triggered
//! by one client closes that client only.

use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_lite::FutureExt;
use glommio::net::TcpStream;

use crate::broker::ConnId;
use crate::protocol::{decode, ConnAck, Connect, ConnectReturnCode, DecodeError, Packet};

use super::shard::{ConnSignal, HandOff, ListenerSlot, ShardMessage, ShardRuntime};

const READ_CHUNK: usize = 8 * 1024;

/// Reads more bytes into `buf`; `Ok(0)` at end of stream.
async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let result = reader.read(&mut buf[start..]).await;
    let n = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    result
}

/// How the wait for CONNECT ended.
enum FirstPacket {
    Connect(Connect),
    Refuse(ConnectReturnCode),
    Close(&'static str),
}

async fn read_connect(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> FirstPacket {
    loop {
        match decode(buf, max_packet_size) {
            Ok(Some(Packet::Connect(connect))) => return FirstPacket::Connect(connect),
            Ok(Some(_)) => return FirstPacket::Close("first packet is not CONNECT"),
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolLevel(_)) => {
                return FirstPacket::Refuse(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            Err(_) => return FirstPacket::Close("malformed CONNECT"),
        }
        match read_more(stream, buf).await {
            Ok(0) | Err(_) => return FirstPacket::Close("closed before CONNECT"),
            Ok(_) => {}
        }
    }
}

/// A freshly accepted connection on the shard whose listener accepted it.
pub(crate) async fn accepted(rt: Rc<ShardRuntime>, mut stream: TcpStream, slot: ListenerSlot) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let timeout = rt.shared.connect_timeout;
    let max = rt.shared.max_packet_size;
    let first = async { Some(read_connect(&mut stream, &mut buf, max).await) }
        .or(async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
    let connect = match first {
        Some(FirstPacket::Connect(connect)) => connect,
        Some(FirstPacket::Refuse(code)) => {
            let mut out = BytesMut::new();
            let ack = Packet::ConnAck(ConnAck {
                session_present: false,
                code,
            });
            if ack.encode(&mut out).is_ok() {
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
            }
            rt.core.borrow_mut().stats.connections_refused += 1;
            return;
        }
        Some(FirstPacket::Close(why)) => {
            log::debug!("shard {}: closing connection: {why}", rt.id);
            rt.stats.borrow_mut().malformed_before_connect += 1;
            return;
        }
        None => {
            log::debug!("shard {}: no CONNECT within {timeout:?}, closing", rt.id);
            rt.stats.borrow_mut().connect_timeouts += 1;
            return;
        }
    };
    let home = rt.core.borrow().home_for(&connect);
    if home == rt.id {
        serve(rt, stream, connect, buf, slot).await;
        return;
    }
    let fd = match shards::detach_tcp_stream(stream) {
        Ok(fd) => fd,
        Err(error) => {
            log::warn!(
                "shard {}: cannot hand a connection to shard {home}: {error}",
                rt.id
            );
            return;
        }
    };
    let handoff = ShardMessage::HandOff(HandOff {
        fd,
        connect,
        leftover: buf,
        slot,
    });
    if rt.bus.try_send_control(home, handoff).is_err() {
        log::warn!(
            "shard {}: control lane to shard {home} full, dropping a connection",
            rt.id
        );
    } else {
        rt.stats.borrow_mut().handoffs_sent += 1;
    }
}

/// A connection handed over by another shard: CONNECT already read, `leftover` bytes follow it.
pub(crate) async fn handed_off(rt: Rc<ShardRuntime>, handoff: HandOff) {
    let stream = shards::attach_tcp_stream(handoff.fd);
    serve(rt, stream, handoff.connect, handoff.leftover, handoff.slot).await;
}

/// Runs an MQTT connection on its home shard until it ends, then forgets it.
async fn serve(
    rt: Rc<ShardRuntime>,
    stream: TcpStream,
    connect: Connect,
    buf: BytesMut,
    slot: ListenerSlot,
) {
    let conn = rt.next_conn_id();
    let signal = Rc::new(ConnSignal::new(stream.as_raw_fd()));
    rt.conns.borrow_mut().insert(conn, signal.clone());
    let (reader, writer) = futures_lite::io::split(stream);

    let outcome = rt
        .core
        .borrow_mut()
        .handle_connect(conn, connect, Instant::now());
    let writer_task = glommio::spawn_local(write_loop(rt.clone(), conn, signal.clone(), writer));
    let blocked = rt.apply_actions();
    rt.send_blocked(blocked).await;

    if outcome.code == ConnectReturnCode::Accepted {
        let reading = AssertUnwindSafe(read_loop(rt.clone(), conn, reader, buf)).catch_unwind();
        if reading.await.is_err() {
            log::error!(
                "shard {}: connection {conn} task panicked; closing it",
                rt.id
            );
            rt.stats.borrow_mut().connection_panics += 1;
            rt.core.borrow_mut().handle_protocol_error(conn);
        }
        // Either the peer went away or the writer shut the socket after a broker-side close.
        rt.core.borrow_mut().handle_closed(conn);
        let blocked = rt.apply_actions();
        rt.send_blocked_later(blocked);
        signal.notify();
        writer_task.await;
    } else {
        // Refused: the writer sends CONNACK and shuts the socket down; then the core forgets it.
        drop(reader);
        writer_task.await;
        rt.core.borrow_mut().handle_closed(conn);
        rt.apply_actions();
    }
    rt.conns.borrow_mut().remove(&conn);
    drop(slot);
}

async fn read_loop<R: AsyncRead + Unpin>(
    rt: Rc<ShardRuntime>,
    conn: ConnId,
    mut reader: R,
    mut buf: BytesMut,
) {
    let max = rt.shared.max_packet_size;
    loop {
        let now = Instant::now();
        loop {
            match decode(&mut buf, max) {
                Ok(Some(packet)) => rt.core.borrow_mut().handle_packet(conn, packet, now),
                Ok(None) => break,
                Err(error) => {
                    log::debug!("shard {}: connection {conn}: {error}; closing", rt.id);
                    rt.core.borrow_mut().handle_protocol_error(conn);
                    let blocked = rt.apply_actions();
                    rt.send_blocked(blocked).await;
                    return;
                }
            }
        }
        let blocked = rt.apply_actions();
        if !blocked.is_empty() {
            rt.send_blocked(blocked).await;
        }
        if buf.capacity() > 64 * 1024 && buf.is_empty() {
            buf = BytesMut::new();
        }
        match read_more(&mut reader, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    rt: Rc<ShardRuntime>,
    conn: ConnId,
    signal: Rc<ConnSignal>,
    mut writer: W,
) {
    loop {
        let next = rt.core.borrow_mut().take_outbox(conn);
        let Some((bytes, closing)) = next else {
            break;
        };
        if !bytes.is_empty() && writer.write_all(&bytes).await.is_err() {
            break;
        }
        if closing {
            let _ = writer.flush().await;
            break;
        }
        if bytes.is_empty() {
            signal.wait().await;
        }
    }
    // Ends the reader's pending read, whichever side decided to close.
    signal.shutdown_socket();
    drop(writer);
}
