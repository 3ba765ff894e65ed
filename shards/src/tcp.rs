//! TCP sockets served by the shard's epoll set ([`crate::poller`]): [`TcpConn`], a connected
//! socket read and written with plain non-blocking `recv`/`send`, and [`TcpAcceptor`], a listening
//! socket accepted from with `accept4`. Both are `!Send`: they belong to the shard that made them;
//! to move a connection, take its fd out with [`TcpConn::into_fd`] and make a new `TcpConn` from
//! it on the other shard.
//!
//! Nothing here knows what the bytes mean or buffers them: a read returns what the kernel had.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::poller::{Dir, Registration};

/// A connected TCP socket in the shard's epoll set.
#[derive(Debug)]
pub struct TcpConn {
    /// Declared first: dropped (out of the set) before the socket closes.
    registration: Registration,
    socket: TcpStream,
}

impl TcpConn {
    /// Makes `fd` (a connected TCP socket) non-blocking and adds it to the current shard's
    /// epoll set. On error the fd is closed.
    ///
    /// # Panics
    /// If called outside a shard's executor (glommio or the fallback).
    pub fn from_fd(fd: OwnedFd) -> io::Result<TcpConn> {
        let socket = TcpStream::from(fd);
        socket.set_nonblocking(true)?;
        let registration = Registration::new(socket.as_raw_fd())?;
        Ok(TcpConn {
            registration,
            socket,
        })
    }

    /// Connects to `addr` without blocking the shard: a non-blocking `connect`, then a wait for
    /// the socket to become writable in the shard's epoll set, then its `SO_ERROR`.
    ///
    /// # Panics
    /// If called outside a shard's executor.
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<TcpConn> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.nonblocking().cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let conn = TcpConn::from_fd(OwnedFd::from(socket))?;
        // Writable once connected or failed; the write attempt itself is a no-op.
        futures_lite::future::poll_fn(|cx| {
            conn.registration
                .poll_io(Dir::Write, cx, || match conn.socket.take_error() {
                    Ok(Some(e)) => Err(e),
                    Err(e) => Err(e),
                    Ok(None) => match conn.socket.peer_addr() {
                        Ok(_) => Ok(Some(((), false))),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
                        Err(e) => Err(e),
                    },
                })
        })
        .await?;
        Ok(conn)
    }

    /// Leaves the epoll set and gives the socket back (for a move to another shard). Bytes the
    /// peer sent and nobody read stay in the kernel for the next owner.
    pub fn into_fd(self) -> OwnedFd {
        let TcpConn {
            registration,
            socket,
        } = self;
        drop(registration);
        OwnedFd::from(socket)
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_nodelay(nodelay)
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.peer_addr()
    }
}

impl AsRawFd for TcpConn {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// `Ok(Some(n))`, `Ok(None)` for "would block", or the error of a `recv`/`send` return value.
fn syscall_result(rc: isize) -> io::Result<Option<usize>> {
    if rc >= 0 {
        return Ok(Some(rc as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(None),
        _ => Err(e),
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let fd = self.socket.as_raw_fd();
        self.registration.poll_io(Dir::Read, cx, || loop {
            // SAFETY: `buf` is valid for writes of its length for the duration of the call.
            let rc =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            match syscall_result(rc) {
                // A read that did not fill the buffer emptied the socket: with an edge-triggered
                // set, what arrives after it brings a new event. (0 is the end of the stream,
                // which stays readable.)
                Ok(Some(n)) => return Ok(Some((n, n > 0 && n < buf.len()))),
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        })
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let fd = self.socket.as_raw_fd();
        self.registration.poll_io(Dir::Write, cx, || loop {
            // SAFETY: `buf` is valid for reads of its length for the duration of the call.
            let rc = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match syscall_result(rc) {
                // A partial write is not taken as "full": the next attempt finds out, so no
                // wake-up can be missed whatever the kernel signals for partial writes.
                Ok(Some(n)) => return Ok(Some((n, false))),
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the sending side down (the peer reads end of stream).
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.socket.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

/// A listening TCP socket in the shard's epoll set.
#[derive(Debug)]
pub struct TcpAcceptor {
    /// Declared first: dropped (out of the set) before the listener closes.
    registration: Registration,
    listener: TcpListener,
}

impl TcpAcceptor {
    /// Adds `listener` (non-blocking mode is set here) to the current shard's epoll set.
    ///
    /// # Panics
    /// If called outside a shard's executor (glommio or the fallback).
    pub fn new(listener: TcpListener) -> io::Result<TcpAcceptor> {
        listener.set_nonblocking(true)?;
        let registration = Registration::new(listener.as_raw_fd())?;
        Ok(TcpAcceptor {
            registration,
            listener,
        })
    }

    /// The next connection, as a [`TcpConn`] of this shard.
    pub async fn accept(&self) -> io::Result<TcpConn> {
        let fd = futures_lite::future::poll_fn(|cx| self.poll_accept(cx)).await?;
        TcpConn::from_fd(fd)
    }

    fn poll_accept(&self, cx: &Context<'_>) -> Poll<io::Result<OwnedFd>> {
        let fd = self.listener.as_raw_fd();
        self.registration.poll_io(Dir::Read, cx, || loop {
            // SAFETY: null address pointers are allowed (the peer's address is not wanted).
            let rc = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            match syscall_result(rc as isize) {
                // SAFETY: a new descriptor that nothing else owns.
                Ok(Some(_)) => return Ok(Some((unsafe { OwnedFd::from_raw_fd(rc) }, false))),
                Ok(None) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The connection was reset while it waited in the backlog: take the next one.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => return Err(e),
            }
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reuseport_listeners;
    use crate::test_util::run;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;
    use std::time::{Duration, Instant};

    fn listener() -> (TcpListener, std::net::SocketAddr) {
        let mut ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, 64).unwrap();
        let addr = ls[0].local_addr().unwrap();
        (ls.pop().unwrap(), addr)
    }

    /// The shard has nothing else to do while the peer waits: it must sleep on the epoll set and
    /// be woken by the peer's bytes (the glommio bridge in `poller::wait_readable`), several times.
    #[test]
    fn an_idle_shard_wakes_for_data() {
        let (l, addr) = listener();
        let peer = std::thread::spawn(move || {
            let mut c = StdTcpStream::connect(addr).unwrap();
            for i in 0..5u8 {
                std::thread::sleep(Duration::from_millis(40));
                c.write_all(&[i]).unwrap();
            }
            let mut echo = [0u8; 5];
            c.read_exact(&mut echo).unwrap();
            echo
        });
        run(move || async move {
            let acceptor = TcpAcceptor::new(l).unwrap();
            let mut s = acceptor.accept().await.unwrap();
            for i in 0..5u8 {
                let t0 = Instant::now();
                let mut b = [0u8; 8];
                let n = s.read(&mut b).await.unwrap();
                assert_eq!(&b[..n], &[i]);
                assert!(t0.elapsed() < Duration::from_secs(2), "woken late");
                s.write_all(&[i]).await.unwrap();
            }
        });
        assert_eq!(peer.join().unwrap(), [0, 1, 2, 3, 4]);
    }

    /// 16 MiB each way through one connection, more than the socket buffers hold: writes that
    /// would block wait for the peer to drain (EPOLLOUT), reads that find nothing wait for data.
    /// Every byte arrives, in order; then end of stream on both sides.
    #[test]
    fn bulk_both_ways_with_backpressure() {
        const LEN: usize = 16 << 20;
        let pattern = |i: usize| (i % 251) as u8;
        let (l, addr) = listener();
        let peer = std::thread::spawn(move || {
            let c = StdTcpStream::connect(addr).unwrap();
            let mut r = c.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let mut c = c;
                let data: Vec<u8> = (0..LEN).map(pattern).collect();
                for chunk in data.chunks(100_000) {
                    c.write_all(chunk).unwrap();
                }
                c.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            // Slow at first, so the broker side's writes fill the buffers and must wait.
            std::thread::sleep(Duration::from_millis(200));
            r.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            got
        });
        run(move || async move {
            let acceptor = TcpAcceptor::new(l).unwrap();
            let s = acceptor.accept().await.unwrap();
            let (mut r, mut w) = crate::split_local(s);
            let writer = crate::rt::spawn(async move {
                let data: Vec<u8> = (0..LEN).map(pattern).collect();
                w.write_all(&data).await.unwrap();
                w.close().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await;
            assert_eq!(got.len(), LEN);
            assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)));
        });
        let got = peer.join().unwrap();
        assert_eq!(got.len(), LEN);
        assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    }

    /// Many connections at once on one shard, each echoing its own bytes: wake-ups reach the right
    /// task; a closed connection's slot is reused without confusing the others.
    #[test]
    fn many_connections_each_get_their_own_events() {
        const CONNS: usize = 64;
        let (l, addr) = listener();
        let peers: Vec<_> = (0..CONNS)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = StdTcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    for round in 0..20u8 {
                        let msg = [i as u8, round];
                        c.write_all(&msg).unwrap();
                        let mut echo = [0u8; 2];
                        c.read_exact(&mut echo).unwrap();
                        assert_eq!(echo, msg);
                    }
                })
            })
            .collect();
        run(move || async move {
            let acceptor = TcpAcceptor::new(l).unwrap();
            let mut tasks = Vec::new();
            for _ in 0..CONNS {
                let mut s = acceptor.accept().await.unwrap();
                tasks.push(crate::rt::spawn(async move {
                    let mut b = [0u8; 64];
                    loop {
                        let n = s.read(&mut b).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        s.write_all(&b[..n]).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        });
        for p in peers {
            p.join().unwrap();
        }
    }

    /// Bytes and the peer's FIN that arrive together (one edge-triggered event) are read as the
    /// bytes, then end of stream: the read that took the bytes must not leave the next one
    /// waiting for an event that will never come.
    #[test]
    fn bytes_then_fin_in_one_event() {
        let (l, addr) = listener();
        let peer = std::thread::spawn(move || {
            let mut c = StdTcpStream::connect(addr).unwrap();
            c.write_all(b"abc").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            rest
        });
        run(move || async move {
            let acceptor = TcpAcceptor::new(l).unwrap();
            let mut s = acceptor.accept().await.unwrap();
            // Both the bytes and the FIN are in before the first read.
            crate::rt::sleep(Duration::from_millis(100)).await;
            let mut b = [0u8; 64];
            let n = s.read(&mut b).await.unwrap();
            assert_eq!(&b[..n], b"abc");
            let eof =
                futures_lite::future::or(async { Some(s.read(&mut b).await.unwrap()) }, async {
                    crate::rt::sleep(Duration::from_secs(2)).await;
                    None
                })
                .await;
            assert_eq!(eof, Some(0), "end of stream is read at once");
            s.write_all(b"ok").await.unwrap();
        });
        assert_eq!(peer.join().unwrap(), b"ok");
    }

    /// `connect` reaches a listener, and reports a refused connection as an error.
    #[test]
    fn connect_to_a_listener_and_refused() {
        let (l, addr) = listener();
        let closed = {
            let (l2, addr2) = listener();
            drop(l2);
            addr2
        };
        l.set_nonblocking(false).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            b
        });
        run(move || async move {
            let mut s = TcpConn::connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let e = TcpConn::connect(closed).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        });
        assert_eq!(&peer.join().unwrap(), b"ping");
    }

    /// `into_fd` leaves the epoll set and keeps the connection: bytes sent meanwhile are read by
    /// the next `TcpConn` made from the fd (here on the same shard, after a pause).
    #[test]
    fn into_fd_and_back_keeps_unread_bytes() {
        let (l, addr) = listener();
        let peer = std::thread::spawn(move || {
            let mut c = StdTcpStream::connect(addr).unwrap();
            c.write_all(b"one").unwrap();
            let mut b = [0u8; 3];
            c.read_exact(&mut b).unwrap();
            c.write_all(b"two").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            rest
        });
        run(move || async move {
            let acceptor = TcpAcceptor::new(l).unwrap();
            let mut s = acceptor.accept().await.unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"one");
            s.write_all(b"ack").await.unwrap();
            let fd = s.into_fd();
            crate::rt::sleep(Duration::from_millis(50)).await;
            let mut s = TcpConn::from_fd(fd).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"two");
            s.write_all(b"bye").await.unwrap();
        });
        assert_eq!(peer.join().unwrap(), b"bye");
    }
}
