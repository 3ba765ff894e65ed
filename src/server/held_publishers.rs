//! The publishers a shard holds back while a subscriber somewhere is behind
//! (`broker/flow_control.rs`), and how they are woken when none is: one local broadcast per
//! shard, fired when this shard's core reports [`Action::ResumePublishers`] or another shard says
//! so on the bus (`ShardMessage::ResumePublishers`).
//!
//! Each held publisher's task registers its own waker once per wait (never one task's waker per
//! message: glommio 0.9's 16-bit waker reference count). This file decides nothing about MQTT
//! and does no I/O; the wait itself is in `read_loop.rs`.
//!
//! [`Action::ResumePublishers`]: crate::broker::Action::ResumePublishers

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// The shard's held publishers' wakers.
#[derive(Default)]
pub(crate) struct HeldPublishers {
    /// Bumped by every [`resume`](Self::resume): a wait that began under an older value is over.
    resumed: Cell<u64>,
    waiters: RefCell<Slab<Waker>>,
}

impl HeldPublishers {
    /// Wakes every publisher waiting on this shard.
    pub fn resume(&self) {
        self.resumed.set(self.resumed.get() + 1);
        let wakers: Vec<Waker> = self.waiters.borrow_mut().drain().collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Completes at the next [`resume`](Self::resume).
    pub fn resumed(&self) -> Resumed<'_> {
        Resumed {
            held: self,
            since: self.resumed.get(),
            key: None,
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// See [`HeldPublishers::resumed`].
pub(crate) struct Resumed<'a> {
    held: &'a HeldPublishers,
    since: u64,
    /// Our waker's slot, valid while no resume came (a resume empties every slot).
    key: Option<usize>,
}

impl Future for Resumed<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.held.resumed.get() != self.since {
            self.key = None;
            return Poll::Ready(());
        }
        let mut waiters = self.held.waiters.borrow_mut();
        match self.key.and_then(|key| waiters.get_mut(key)) {
            Some(old) if old.will_wake(cx.waker()) => {}
            Some(old) => *old = cx.waker().clone(),
            None => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Resumed<'_> {
    fn drop(&mut self) {
        // After a resume the slot may belong to another wait: only ours before any resume.
        if let Some(key) = self.key.take() {
            if self.held.resumed.get() == self.since {
                self.held.waiters.borrow_mut().try_remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn resume_wakes_every_wait_and_a_dropped_wait_leaves_nothing() {
        let held = HeldPublishers::default();
        let mut a = Box::pin(held.resumed());
        let mut b = Box::pin(held.resumed());
        future::block_on(async {
            assert!(future::poll_once(a.as_mut()).await.is_none());
            assert!(future::poll_once(b.as_mut()).await.is_none());
            // Polling again does not register twice.
            assert!(future::poll_once(a.as_mut()).await.is_none());
        });
        assert_eq!(held.waiting(), 2);
        drop(b);
        assert_eq!(held.waiting(), 1);
        held.resume();
        assert_eq!(held.waiting(), 0);
        future::block_on(async {
            assert!(future::poll_once(a.as_mut()).await.is_some());
            // A wait begun after the resume waits for the next one.
            let mut c = Box::pin(held.resumed());
            assert!(future::poll_once(c.as_mut()).await.is_none());
        });
        assert_eq!(held.waiting(), 0, "a dropped wait takes its waker away");
    }
}
