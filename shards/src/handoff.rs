//! Moving an accepted TCP connection from one shard to another: detach it from the accepting
//! executor as an owned file descriptor (which is `Send`), carry that over the bus, and attach it
//! to the receiving executor.
//!
//! Only the socket moves. Anything already read from it (bytes past the CONNECT packet, a TLS
//! session) is the caller's to carry alongside; this file knows nothing of protocols and must not
//! buffer or read from the socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use glommio::net::TcpStream;

/// Detaches `stream` from the current executor: duplicates its fd (`F_DUPFD_CLOEXEC`) and drops
/// the glommio stream, so the returned fd is the only handle left to the connection. Send it to
/// another shard and [`attach_tcp_stream`] it there.
///
/// Dropping a glommio 0.9 `TcpStream` only closes its fd (no `shutdown(2)`), so the connection
/// itself is untouched: bytes the peer sent and nobody read yet stay in the kernel's buffer for the
/// new owner. Take `stream` unbuffered (the default `TcpStream`): a `buffered()` stream could hold
/// read-ahead bytes that would be lost.
///
/// On error (out of file descriptors) the stream is dropped, which closes the connection.
pub fn detach_tcp_stream(stream: TcpStream) -> io::Result<OwnedFd> {
    // SAFETY: `stream` owns this fd and keeps it open for the duration of the borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    // std's try_clone_to_owned is fcntl(fd, F_DUPFD_CLOEXEC, 3).
    let fd = borrowed.try_clone_to_owned()?;
    drop(stream);
    Ok(fd)
}

/// Attaches a connection detached by [`detach_tcp_stream`] (or any connected TCP socket fd) to the
/// current executor.
///
/// # Panics
/// If called outside a glommio executor.
pub fn attach_tcp_stream(fd: OwnedFd) -> TcpStream {
    // SAFETY: we own `fd`, a connected TCP socket, and give it up to the glommio stream.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus, into_glommio_listener, reuseport_listeners, Lane, ShardConfig, Shards};
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
                    let l = into_glommio_listener(listener.unwrap()).unwrap();
                    let mut s = l.accept().await.unwrap();
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"hello");
                    s.write_all(b"from0").await.unwrap();
                    let fd = detach_tcp_stream(s).unwrap();
                    // Let the peer's "early" bytes arrive while nobody owns the stream.
                    glommio::timer::sleep(Duration::from_millis(30)).await;
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
                    let mut s = attach_tcp_stream(fd);
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
