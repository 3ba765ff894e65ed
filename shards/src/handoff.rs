//! Moving an accepted TCP connection from one shard to another: detach it from the accepting
//! shard as an owned file descriptor (which is `Send`), carry that over the bus, and attach it
//! to the receiving shard.
//!
//! Only the socket moves. Anything already read from it (bytes past the CONNECT packet, a TLS
//! session) is the caller's to carry alongside; this file knows nothing of protocols and must not
//! buffer or read from the socket.

use std::io;
use std::os::fd::OwnedFd;

use crate::TcpConn;

/// Detaches `stream` from the current shard: it leaves the shard's epoll set and its socket is
/// returned as an owned fd (which is `Send`). Send it to another shard and
/// [`attach_tcp_stream`] it there.
///
/// The connection itself is untouched: bytes the peer sent and nobody read yet stay in the
/// kernel's buffer for the new owner.
pub fn detach_tcp_stream(stream: TcpConn) -> OwnedFd {
    stream.into_fd()
}

/// Attaches a connection detached by [`detach_tcp_stream`] (or any connected TCP socket fd) to the
/// current shard. On error (the epoll set refused it) the connection is closed.
///
/// # Panics
/// If called outside a shard's executor (glommio or the fallback).
pub fn attach_tcp_stream(fd: OwnedFd) -> io::Result<TcpConn> {
    TcpConn::from_fd(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus, reuseport_listeners, Lane, ShardConfig, Shards};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn read_n(s: &mut StdTcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        s.read_exact(&mut b).unwrap();
        b
    }

    /// Shard 0 accepts, reads, writes, detaches and sends the fd over the bus; shard 1 attaches,
    /// writes, reads, writes. The std peer sees every byte from both shards, in order, and bytes it
    /// sent while the connection was in flight are read by shard 1.
    #[test]
    fn handoff_between_two_executors() {
        let mut listeners = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let listener = Arc::new(Mutex::new(listeners.pop()));
        let (tx, inboxes) = bus::<OwnedFd>(2, 4, 4);
        let inboxes = Arc::new(Mutex::new(
            inboxes.into_iter().map(Some).collect::<Vec<_>>(),
        ));
        let config = ShardConfig {
            shards: 2,
            pin: false,
            name: "handoff".into(),
            runtime: crate::test_util::runtime(),
            ..ShardConfig::default()
        };
        let shards = Shards::start(config, move |ctx| {
            let inbox = inboxes.lock().unwrap()[ctx.id].take().unwrap();
            let tx = tx.clone();
            let listener = if ctx.id == 0 {
                listener.lock().unwrap().take()
            } else {
                None
            };
            async move {
                if ctx.id == 0 {
                    let l = crate::TcpAcceptor::new(listener.unwrap()).unwrap();
                    let mut s = l.accept().await.unwrap();
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"hello");
                    s.write_all(b"from0").await.unwrap();
                    let fd = detach_tcp_stream(s);
                    // Let the peer's "early" bytes arrive while nobody owns the stream.
                    crate::rt::sleep(Duration::from_millis(30)).await;
                    tx.try_send_control(1, fd).unwrap();
                } else {
                    let recv = async { Some(inbox.recv().await) };
                    let stopped = async {
                        ctx.stopped().await;
                        None
                    };
                    // Shard 0 may have failed: don't wait for it forever.
                    let Some(Lane::Control(fd)) = futures_lite::future::or(recv, stopped).await
                    else {
                        return;
                    };
                    let mut s = attach_tcp_stream(fd).unwrap();
                    s.write_all(b"from1").await.unwrap();
                    let mut b = [0u8; 8];
                    s.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"earlybye");
                    s.write_all(b"ack").await.unwrap();
                    s.close().await.unwrap();
                }
                ctx.stopped().await;
            }
        })
        .unwrap();
        let mut peer = StdTcpStream::connect(addr).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        peer.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut peer, 5), b"from0");
        peer.write_all(b"early").unwrap();
        assert_eq!(read_n(&mut peer, 5), b"from1");
        peer.write_all(b"bye").unwrap();
        assert_eq!(read_n(&mut peer, 3), b"ack");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "EOF after ack, got {rest:?}");
        shards.stop();
        shards.join().unwrap();
    }
}
