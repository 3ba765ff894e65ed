//! The writing side of a served connection: take the connection's outbox from the core, write it
//! to the socket, and wait for the next flush, until the core closes the connection.
//!
//! It is a state machine polled by the connection's one task (`connection_task.rs`), not a task of its
//! own: a second task per connection cost ~256 bytes of every idle connection (its future and
//! the runtime's task header). Everything the outbox holds is written in one go per turn, which is how
//! writes are batched.
//!
//! What must not happen here: no MQTT decisions (the core makes them) and no reads.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::io::AsyncWrite;

use crate::broker::ConnId;

use super::shard::{ConnSignal, ShardRuntime};

/// How long a closing connection waits for its transport's goodbye (TLS close_notify, WebSocket
/// close frame) to be written, so that a silent peer cannot hold it.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

enum State {
    /// Between writes: take the outbox, or wait for the core's flush signal.
    Idle,
    /// `bytes[written..]` is still to be written; then flush, then close if `closing`.
    Writing {
        written: usize,
        closing: bool,
    },
    Flushing {
        closing: bool,
    },
    /// The core closed the connection and everything is written: the transport says goodbye,
    /// within [`CLOSE_GRACE`].
    Closing(Pin<Box<shards::Timer>>),
    Done(Ended),
}

/// How the writing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The core closed the connection and everything it wrote is out, the transport's goodbye
    /// too (or its grace passed): the broker's own close, which lingers (`linger.rs`).
    Closed,
    /// The core had forgotten the connection (the peer went away), or a write failed.
    Gone,
}

impl State {
    fn closing() -> State {
        State::Closing(Box::pin(shards::Timer::new(CLOSE_GRACE)))
    }
}

/// The writer's state; see the module documentation.
pub(crate) struct WriteSide {
    /// What is being written: swapped with the connection's outbox each turn (the outbox gets the
    /// emptied buffer back), and given to the shard's pool when the connection goes idle.
    bytes: BytesMut,
    /// When the oldest PUBLISH whose delivery is in `bytes` was read (latency histogram).
    stamp: Option<Instant>,
    state: State,
}

impl WriteSide {
    pub(crate) fn new() -> Self {
        WriteSide {
            bytes: BytesMut::new(),
            stamp: None,
            state: State::Idle,
        }
    }

    /// Writes until the outbox is empty (then `Pending`, woken by `signal`) or the connection is
    /// over: `Ready` once the core forgot the connection or a write failed ([`Ended::Gone`]), or
    /// the closing connection's transport said goodbye ([`Ended::Closed`]). The caller then
    /// shuts the socket down (its sending side only, for a lingering close).
    pub(crate) fn poll<W: AsyncWrite + Unpin>(
        &mut self,
        rt: &Rc<ShardRuntime>,
        conn: ConnId,
        signal: &ConnSignal,
        stream: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Ended> {
        loop {
            match &mut self.state {
                State::Idle => {
                    // Taken before the outbox: the stamped deliveries are in what is taken now.
                    let stamp = signal.take_stamp();
                    let Some(closing) = rt.core.borrow_mut().swap_outbox(conn, &mut self.bytes)
                    else {
                        self.state = State::Done(Ended::Gone);
                        continue;
                    };
                    if !self.bytes.is_empty() {
                        self.stamp = stamp;
                        self.state = State::Writing {
                            written: 0,
                            closing,
                        };
                    } else if closing {
                        self.state = State::closing();
                    } else {
                        // Nothing new: `swap_outbox` has given both buffers to the shard's pool,
                        // so an idle connection keeps none.
                        if !signal.poll_notified(cx) {
                            return Poll::Pending;
                        }
                    }
                }
                State::Writing { written, closing } => {
                    let closing = *closing;
                    let mut failed = false;
                    while *written < self.bytes.len() {
                        match Pin::new(&mut *stream).poll_write(cx, &self.bytes[*written..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                failed = true;
                                break;
                            }
                            Poll::Ready(Ok(n)) => *written += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    self.state = if failed {
                        State::Done(Ended::Gone)
                    } else {
                        State::Flushing { closing }
                    };
                }
                State::Flushing { closing } => {
                    let closing = *closing;
                    match Pin::new(&mut *stream).poll_flush(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => self.state = State::Done(Ended::Gone),
                        Poll::Ready(Ok(())) => {
                            if let Some(at) = self.stamp.take() {
                                rt.stats.borrow_mut().latency.record(at.elapsed());
                            }
                            self.state = if closing {
                                State::closing()
                            } else {
                                State::Idle
                            };
                        }
                    }
                }
                State::Closing(grace) => {
                    let said_goodbye = Pin::new(&mut *stream).poll_close(cx).is_ready();
                    if said_goodbye || grace.as_mut().poll(cx).is_ready() {
                        self.state = State::Done(Ended::Closed);
                    } else {
                        return Poll::Pending;
                    }
                }
                State::Done(ended) => return Poll::Ready(*ended),
            }
        }
    }
}
