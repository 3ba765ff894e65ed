//! The stop signal: one process-wide flag, raised by [`StopHandle::stop`] from any thread, and on
//! each shard a local broadcast so that any number of tasks there can await it.
//!
//! Cross-thread: each shard runs one small watcher task whose waker sits in an `AtomicWaker`
//! (one waker per shard, whatever the number of waiting tasks). Local: the watcher wakes the
//! shard's list of waiting tasks, each of which registered its own waker once. So no task's waker
//! is ever cloned per connection (glommio 0.9's 16-bit waker reference count).
//!
//! This file must not start or place executors (that is `runtime.rs`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

struct StopShared {
    stopped: AtomicBool,
    /// One entry per shard: the waker of that shard's watcher task.
    watchers: Mutex<Vec<Arc<AtomicWaker>>>,
}

/// Raises the stop signal of a [`Shards`](crate::Shards) group from any thread (a signal-handling
/// thread, the control shard...). Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<StopShared>,
}

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl StopHandle {
    pub(crate) fn new() -> Self {
        StopHandle {
            shared: Arc::new(StopShared {
                stopped: AtomicBool::new(false),
                watchers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Completes every shard's [`ShardContext::stopped`](crate::ShardContext::stopped). Idempotent.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let watchers = self
            .shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for w in watchers.iter() {
            w.wake();
        }
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Registers a new shard: returns its watcher slot (to be awaited through [`StopWait`]).
    pub(crate) fn register_watcher(&self) -> Arc<AtomicWaker> {
        let w = Arc::new(AtomicWaker::new());
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&w));
        w
    }

    /// Removes a shard's watcher slot (when the shard ends) and drops the waker it holds, on the
    /// calling (owning) thread.
    pub(crate) fn unregister_watcher(&self, w: &Arc<AtomicWaker>) {
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|x| !Arc::ptr_eq(x, w));
        drop(w.take());
    }
}

/// Future of the watcher task: completes once the stop signal is raised.
pub(crate) struct StopWait {
    pub(crate) handle: StopHandle,
    pub(crate) slot: Arc<AtomicWaker>,
}

impl Future for StopWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.handle.is_stopped() {
            return Poll::Ready(());
        }
        self.slot.register(cx.waker());
        // stop() raises the flag before waking: either we see it now, or it sees our waker.
        if self.handle.is_stopped() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The per-shard broadcast: tasks waiting for the stop signal on this shard.
#[derive(Default)]
pub(crate) struct LocalStop {
    fired: Cell<bool>,
    waiters: RefCell<Waiters>,
}

/// A small slab of wakers: O(1) insert and removal by key.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl LocalStop {
    /// Marks the shard as stopping and wakes every waiting task.
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = {
            let mut w = self.waiters.borrow_mut();
            w.free.clear();
            w.slots.drain(..).flatten().collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    fn insert(&self, waker: &Waker) -> usize {
        let mut w = self.waiters.borrow_mut();
        match w.free.pop() {
            Some(k) => {
                w.slots[k] = Some(waker.clone());
                k
            }
            None => {
                w.slots.push(Some(waker.clone()));
                w.slots.len() - 1
            }
        }
    }

    fn update(&self, key: usize, waker: &Waker) {
        let mut w = self.waiters.borrow_mut();
        if let Some(slot) = w.slots.get_mut(key) {
            match slot {
                Some(old) if old.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    fn remove(&self, key: usize) {
        let mut w = self.waiters.borrow_mut();
        if let Some(slot) = w.slots.get_mut(key) {
            if slot.take().is_some() {
                w.free.push(key);
            }
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.borrow().slots.iter().flatten().count()
    }
}

/// Future returned by [`ShardContext::stopped`](crate::ShardContext::stopped): completes once the
/// stop signal is raised. Any number of them may wait on one shard; each costs one waker clone of
/// its own task. `!Send` (it belongs to its shard).
#[must_use = "futures do nothing unless awaited"]
pub struct Stopped {
    local: Rc<LocalStop>,
    handle: StopHandle,
    key: Option<usize>,
}

impl Stopped {
    pub(crate) fn new(local: Rc<LocalStop>, handle: StopHandle) -> Self {
        Stopped {
            local,
            handle,
            key: None,
        }
    }
}

impl fmt::Debug for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopped")
            .field("fired", &self.local.fired.get())
            .finish()
    }
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The global flag may be up before this shard's watcher task has run.
        if self.local.fired.get() || self.handle.is_stopped() {
            if let Some(k) = self.key.take() {
                self.local.remove(k);
            }
            return Poll::Ready(());
        }
        match self.key {
            Some(k) => self.local.update(k, cx.waker()),
            None => {
                let k = self.local.insert(cx.waker());
                self.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.local.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn local_broadcast_wakes_all_and_forgets_dropped() {
        let local = Rc::new(LocalStop::default());
        let handle = StopHandle::new();
        let mut a = Box::pin(Stopped::new(Rc::clone(&local), handle.clone()));
        let mut b = Box::pin(Stopped::new(Rc::clone(&local), handle.clone()));
        let mut c = Box::pin(Stopped::new(Rc::clone(&local), handle.clone()));
        future::block_on(async {
            assert!(future::poll_once(a.as_mut()).await.is_none());
            assert!(future::poll_once(b.as_mut()).await.is_none());
            assert!(future::poll_once(c.as_mut()).await.is_none());
            // Polling again does not add a second registration.
            assert!(future::poll_once(a.as_mut()).await.is_none());
        });
        assert_eq!(local.waiting(), 3);
        drop(c);
        assert_eq!(local.waiting(), 2);
        local.fire();
        assert_eq!(local.waiting(), 0);
        future::block_on(async {
            assert!(future::poll_once(a.as_mut()).await.is_some());
            assert!(future::poll_once(b.as_mut()).await.is_some());
        });
    }

    #[test]
    fn global_flag_completes_before_watcher_runs() {
        let local = Rc::new(LocalStop::default());
        let handle = StopHandle::new();
        handle.stop();
        assert!(handle.is_stopped());
        future::block_on(Stopped::new(local, handle));
    }
}
