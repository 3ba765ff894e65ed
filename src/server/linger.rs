//! The lingering close. When the broker closes a connection itself (a DISCONNECT with a reason
//! code: Receive Maximum exceeded, a protocol error, keep-alive, takeover, shutdown; or a CONNACK
//! that refuses), its last bytes are written, the transport says goodbye (TLS close_notify,
//! WebSocket close frame), the sending side is shut down (FIN), and then what the peer still sends
//! is read and thrown away until the peer closes its side too, for [`LINGER_TIME`] and
//! [`LINGER_BYTES`] at most; only then is the socket closed.
//!
//! Closed at once, a socket with unread input makes the kernel reset the connection (RFC 1122
//! 4.2.2.13): a client still writing (Paho's test_flow_control2 goes on sending PUBRELs) gets
//! EPIPE or ECONNRESET from its next write and drops the connection without reading the
//! DISCONNECT that says why.
//!
//! The core has forgotten the connection before the lingering starts: nothing here makes an MQTT
//! decision, holds a session or a client id, or writes to the socket.

use std::os::fd::RawFd;
use std::pin::Pin;
use std::time::Duration;

use futures_lite::io::AsyncRead;
use futures_lite::FutureExt;

use super::shard::ShardRuntime;

/// The longest a closed connection is read on, waiting for the peer to close its side.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// The most a closed connection's peer may send before the socket is closed all the same: a
/// flood must not keep a shard reading for the whole [`LINGER_TIME`].
pub(crate) const LINGER_BYTES: usize = 1024 * 1024;

/// How a lingering close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lingered {
    /// The peer closed its side (or its socket failed) after sending this many more bytes.
    PeerClosed(usize),
    /// The peer sent [`LINGER_BYTES`] and more.
    TooMuch,
    /// [`LINGER_TIME`] passed.
    TimedOut,
}

/// Shuts the socket's sending side down: the peer reads the end of the stream after everything
/// written before. Reading goes on.
pub(crate) fn shut_write(fd: RawFd) {
    // SAFETY: `fd` belongs to a stream its caller still holds open; shutdown(2) does not close or
    // invalidate the descriptor.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Reads from `reader` (whose sending side is shut down) and drops what comes until the peer
/// closes, a read fails, [`LINGER_BYTES`] were read or [`LINGER_TIME`] passed. The reads go to
/// the shard's scratch buffer, like a served connection's.
pub(crate) async fn drain<R: AsyncRead + Unpin>(rt: &ShardRuntime, reader: &mut R) -> Lingered {
    let reading = async {
        let mut discarded = 0;
        loop {
            let read = std::future::poll_fn(|cx| {
                let mut scratch = rt.read_scratch.borrow_mut();
                Pin::new(&mut *reader).poll_read(cx, &mut scratch[..])
            })
            .await;
            match read {
                Ok(0) | Err(_) => return Lingered::PeerClosed(discarded),
                Ok(n) => discarded += n,
            }
            if discarded >= LINGER_BYTES {
                return Lingered::TooMuch;
            }
            // A peer that always has more to send must not keep the shard to itself.
            shards::rt::yield_if_needed().await;
        }
    };
    reading
        .or(async {
            shards::rt::sleep(LINGER_TIME).await;
            Lingered::TimedOut
        })
        .await
}
