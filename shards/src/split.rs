//! Splitting one byte stream (a [`crate::TcpConn`], a TLS stream over it...) into a read half and
//! a write half that two tasks *of the same shard* can use at once: one reads, the other writes.
//!
//! A `TcpConn` (like most async streams) needs `&mut self` to read or write, and keeps separate readiness
//! state for the two directions, so sharing it through an `Rc<RefCell<_>>` borrowed only for the
//! duration of each `poll_*` call is sound and costs no lock. These halves are `!Send` on purpose.
//! Nothing here knows what the bytes mean.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// The read half of a stream split with [`split_local`].
#[derive(Debug)]
pub struct LocalReadHalf<T> {
    inner: Rc<RefCell<T>>,
}

/// The write half of a stream split with [`split_local`].
#[derive(Debug)]
pub struct LocalWriteHalf<T> {
    inner: Rc<RefCell<T>>,
}

/// Splits `io` into halves for one reading task and one writing task on the current shard.
/// Put them back together with [`reunite`] (for example before a hand-off).
pub fn split_local<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
) -> (LocalReadHalf<T>, LocalWriteHalf<T>) {
    let inner = Rc::new(RefCell::new(io));
    (
        LocalReadHalf {
            inner: Rc::clone(&inner),
        },
        LocalWriteHalf { inner },
    )
}

/// Joins two halves of the same stream back into it. Gives them back if they are not halves of
/// one stream.
#[allow(clippy::result_large_err)]
pub fn reunite<T>(
    read: LocalReadHalf<T>,
    write: LocalWriteHalf<T>,
) -> Result<T, (LocalReadHalf<T>, LocalWriteHalf<T>)> {
    if !Rc::ptr_eq(&read.inner, &write.inner) {
        return Err((read, write));
    }
    drop(write);
    match Rc::try_unwrap(read.inner) {
        Ok(cell) => Ok(cell.into_inner()),
        // Unreachable: the halves are not Clone, so these were the only two references.
        Err(_) => unreachable!("a split stream has exactly two halves"),
    }
}

macro_rules! with_inner {
    ($half:ident) => {
        impl<T> $half<T> {
            /// Runs `f` on the underlying stream (for `as_raw_fd`, `peer_addr`, ...). Do not call
            /// it from inside a `poll_*` of the same stream.
            pub fn with_inner<R>(&self, f: impl FnOnce(&T) -> R) -> R {
                f(&self.inner.borrow())
            }
        }
    };
}
with_inner!(LocalReadHalf);
with_inner!(LocalWriteHalf);

impl<T: AsyncRead + Unpin> AsyncRead for LocalReadHalf<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_read_vectored(cx, bufs)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LocalWriteHalf<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{reuseport_listeners, TcpAcceptor};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream as StdTcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// One task reads while another writes on the same TcpConn; then the halves are
    /// reunited.
    #[test]
    fn read_and_write_from_two_tasks() {
        let mut ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let addr = ls[0].local_addr().unwrap();
        let std_l = ls.pop().unwrap();
        let peer = std::thread::spawn(move || {
            let mut c = StdTcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // The server writes 100 numbered lines without waiting for us; we echo "done" at the end.
            let mut got = vec![0u8; 100 * 4];
            c.read_exact(&mut got).unwrap();
            c.write_all(b"done").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            got
        });
        let ex = crate::test_util::spawn_executor(move || async move {
            let l = TcpAcceptor::new(std_l).unwrap();
            let s = l.accept().await.unwrap();
            let (mut r, mut w) = split_local(s);
            // The reader is already waiting when the writer starts.
            let reader = crate::rt::spawn(async move {
                let mut b = [0u8; 4];
                r.read_exact(&mut b).await.unwrap();
                assert_eq!(&b, b"done");
                r
            });
            let writer = crate::rt::spawn(async move {
                for i in 0..100u32 {
                    w.write_all(&i.to_be_bytes()).await.unwrap();
                    if i % 10 == 0 {
                        crate::rt::yield_if_needed().await;
                    }
                }
                w
            });
            let w = writer.await;
            let r = reader.await;
            let s = reunite(r, w).unwrap();
            assert!(s.as_raw_fd() >= 0);
        })
        .unwrap();
        ex.join().unwrap();
        let got = peer.join().unwrap();
        let want: Vec<u8> = (0..100u32).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(got, want);
    }

    /// A read pending in one task is ended by shutdown(2) on the fd from another task: it returns
    /// Ok(0) (EOF), and the peer sees EOF too.
    #[test]
    fn shutdown_wakes_pending_read() {
        for how in [libc::SHUT_RDWR, libc::SHUT_RD] {
            let mut ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
            let addr = ls[0].local_addr().unwrap();
            let std_l = ls.pop().unwrap();
            let peer = std::thread::spawn(move || {
                let mut c = StdTcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut rest = Vec::new();
                let r = c.read_to_end(&mut rest);
                (r.is_ok(), rest)
            });
            let ex = crate::test_util::spawn_executor(move || async move {
                let l = TcpAcceptor::new(std_l).unwrap();
                let s = l.accept().await.unwrap();
                let (mut r, w) = split_local(s);
                let fd = r.with_inner(|s| s.as_raw_fd());
                let reader = crate::rt::spawn(async move {
                    let mut b = [0u8; 16];
                    r.read(&mut b).await
                });
                crate::rt::sleep(Duration::from_millis(30)).await;
                let t0 = std::time::Instant::now();
                assert_eq!(unsafe { libc::shutdown(fd, how) }, 0);
                let n = reader.await.unwrap();
                assert_eq!(n, 0, "pending read ends with EOF");
                assert!(t0.elapsed() < Duration::from_secs(1));
                if how == libc::SHUT_RD {
                    // The write side is still open: close it for the peer.
                    let mut w = w;
                    w.close().await.unwrap();
                }
            })
            .unwrap();
            ex.join().unwrap();
            let (ok, rest) = peer.join().unwrap();
            assert!(ok && rest.is_empty(), "peer sees a clean EOF");
        }
    }
}
