//! Timers of the fallback executor: the waiting wakers ordered by deadline (a `BTreeMap`, so that
//! a timer dropped before its deadline, the common case for timeouts, leaves at once), and
//! [`Sleep`], the future tasks await. The executor asks for the next deadline when it has nothing
//! to run and blocks in `epoll_pwait2` until then at most.
//!
//! Only timers: what runs when they fire is the executor's business (`mod.rs`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::CURRENT;

/// A timer's place in the map: its deadline, then a sequence number (two timers may share a
/// deadline).
type Key = (Instant, u64);

/// The executor's waiting timers.
#[derive(Default)]
pub(super) struct Timers {
    waiting: RefCell<BTreeMap<Key, Waker>>,
    next_seq: Cell<u64>,
}

impl Timers {
    /// Wakes the timers due at `now`; returns the next deadline after them.
    pub(super) fn fire_due(&self, now: Instant) -> Option<Instant> {
        loop {
            // One at a time: waking may drop other timers (which borrow the map).
            let due = {
                let mut waiting = self.waiting.borrow_mut();
                match waiting.first_key_value() {
                    Some((&(at, _), _)) if at <= now => waiting.pop_first(),
                    Some((&(at, _), _)) => return Some(at),
                    None => return None,
                }
            };
            if let Some((_, waker)) = due {
                waker.wake();
            }
        }
    }

    /// Drops every waiting waker (the executor is ending). Returns whether there were any.
    pub(super) fn clear(&self) -> bool {
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        let any = !waiting.is_empty();
        drop(waiting);
        any
    }

    fn insert(&self, at: Instant, waker: Waker) -> Key {
        let seq = self.next_seq.get();
        self.next_seq.set(seq.wrapping_add(1));
        let key = (at, seq);
        self.waiting.borrow_mut().insert(key, waker);
        key
    }

    /// Replaces the waker of `key`; `false` if it is no longer waiting (it fired).
    fn update(&self, key: Key, waker: &Waker) -> bool {
        match self.waiting.borrow_mut().get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&self, key: Key) -> Option<Waker> {
        self.waiting.borrow_mut().remove(&key)
    }
}

/// Completes at its deadline. Must be polled on a fallback executor's thread; dropping it early
/// takes it out of the executor's timers.
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
    key: Option<Key>,
}

impl Sleep {
    pub(crate) fn new(duration: Duration) -> Sleep {
        let now = Instant::now();
        Sleep {
            deadline: now
                .checked_add(duration)
                .unwrap_or(now + Duration::from_secs(1 << 40)),
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(key) = self.key.take() {
                drop(with_timers(|t| t.remove(key)));
            }
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let key = self.key;
        let key = with_timers(|t| match key {
            Some(key) if t.update(key, cx.waker()) => key,
            _ => t.insert(deadline, cx.waker().clone()),
        });
        self.key = key;
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // After its executor ended there is nothing to take it out of.
            let waker = with_timers(|t| t.remove(key)).flatten();
            drop(waker);
        }
    }
}

/// `f` on the current executor's timers; `None` if the thread runs no fallback executor (only
/// possible while it ends).
fn with_timers<R>(f: impl FnOnce(&Timers) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(|l| f(&l.timers)))
        .ok()
        .flatten()
}
