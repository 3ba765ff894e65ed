//! The fallback executor: one per shard thread, for hosts where io_uring is refused (Docker's and
//! containerd's default seccomp profiles, gVisor, `kernel.io_uring_disabled`). It needs nothing but
//! epoll: a local task queue, a queue other threads push woken tasks into, timers
//! (`timers.rs`), a helper thread for blocking work (`blocking.rs`), and the shard's epoll set
//! ([`crate::poller`]), read directly from the loop: without a timer or task due, the thread blocks
//! in `epoll_pwait2` on that set until a socket event, the next deadline, or another thread's
//! wake-up through the set's [`RemoteWake`] eventfd.
//!
//! Tasks are `async-task` local tasks: their wakers are `Send + Sync`, a wake-up from another
//! thread pushes the task to the shared queue and wakes the shard; a task is only ever run or
//! dropped on its own thread.
//!
//! Only the executor lives here; the verbs tasks use (spawn, sleep, ...) are [`crate::rt`]'s, which
//! dispatches to this file or to glommio.

mod blocking;
mod timers;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_task::Runnable;

use crate::poller::Poller;
use crate::remote_wake::RemoteWake;

pub(crate) use blocking::spawn_blocking;
pub(crate) use timers::Sleep;

/// Longest stretch a task may run before [`need_preempt`] says to yield (and at least how often the
/// executor looks at sockets, timers and other threads' wake-ups while tasks keep it busy).
const TURN_BUDGET: Duration = Duration::from_millis(2);

/// At most this many tasks run between two looks at the epoll set.
const TASKS_PER_TURN: usize = 1024;

/// Events taken from the epoll set per look.
const EVENTS_PER_TURN: usize = 256;

/// Ids for the executors' epoll sets, far above glommio's executor ids (which count from 0), so
/// that the poller's "is this set mine" check never confuses the two.
static NEXT_ID: AtomicUsize = AtomicUsize::new(usize::MAX / 2);

/// What other threads reach: the queue they push woken tasks into, and how to wake the shard.
struct Shared {
    injected: Mutex<Vec<Runnable>>,
    /// Set (under the `injected` lock) when the executor has ended: a task woken after that is
    /// forgotten (leaked), since it may be neither run nor dropped on another thread.
    closed: AtomicBool,
    remote: Arc<RemoteWake>,
}

/// The executor's state on its thread.
pub(crate) struct Local {
    queue: RefCell<VecDeque<Runnable>>,
    shared: Arc<Shared>,
    poller: Rc<Poller>,
    timers: timers::Timers,
    blocking: blocking::Helper,
    /// When the current run of tasks should let the executor look around ([`need_preempt`]).
    turn_deadline: Cell<Instant>,
    /// The root future's waker.
    root_woken: Arc<RootWake>,
    /// Handles of the detached tasks that have not ended (see [`Task::detach`]).
    detached: RefCell<slab::Slab<DetachedEntry>>,
}

type DetachedEntry = (Rc<Cell<Option<usize>>>, Box<dyn Detached>);

/// The root future's waker: a flag the loop looks at, and the shard's wake-up for other threads.
struct RootWake {
    woken: AtomicBool,
    remote: Arc<RemoteWake>,
}

impl std::task::Wake for RootWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.remote.wake();
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Runs `f` with the calling thread's fallback executor.
///
/// # Panics
/// If the thread runs none.
fn with_current<R>(f: impl FnOnce(&Rc<Local>) -> R) -> R {
    CURRENT.with(|c| {
        let c = c.borrow();
        let local = c
            .as_ref()
            .expect("not on a shard thread: no executor is running on this thread");
        f(local)
    })
}

/// The epoll set of the calling thread's executor.
pub(crate) fn poller() -> Rc<Poller> {
    with_current(|l| Rc::clone(&l.poller))
}

/// A task of the fallback executor, as [`crate::rt::Task`] holds it.
pub(crate) struct Task<T> {
    task: async_task::Task<T>,
    /// Where the task's handle sits among the executor's detached tasks, once detached.
    slot: Rc<Cell<Option<usize>>>,
}

impl<T: 'static> Task<T> {
    /// Lets the task run on its own. The executor keeps the handle until the task ends, so that
    /// it can cancel (drop) the task if the executor ends first, as glommio does; without it a
    /// task parked on something outside the shard (a channel) would never be dropped.
    pub(crate) fn detach(self) {
        if self.task.is_finished() {
            return;
        }
        with_current(|l| {
            let key = l
                .detached
                .borrow_mut()
                .insert((Rc::clone(&self.slot), Box::new(self.task)));
            self.slot.set(Some(key));
        });
    }
}

impl<T> Task<T> {
    pub(crate) fn handle(&mut self) -> &mut async_task::Task<T> {
        &mut self.task
    }
}

/// A detached task's handle, whatever its output type.
trait Detached {
    /// The task ended: let the handle go without cancelling anything.
    fn release(self: Box<Self>);
}

impl<T> Detached for async_task::Task<T> {
    fn release(self: Box<Self>) {
        (*self).detach();
    }
}

/// Takes a detached task's handle out of the executor when the task's future ends or is dropped.
struct Leave(Rc<Cell<Option<usize>>>);

impl Drop for Leave {
    fn drop(&mut self) {
        let Some(key) = self.0.take() else { return };
        let handle = CURRENT
            .try_with(|c| {
                let c = c.borrow();
                let local = c.as_ref()?;
                let mut detached = local.detached.borrow_mut();
                match detached.get(key) {
                    Some((slot, _)) if Rc::ptr_eq(slot, &self.0) => Some(detached.remove(key).1),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if let Some(handle) = handle {
            handle.release();
        }
    }
}

/// Spawns `future` on the calling thread's executor.
pub(crate) fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let shared = with_current(|l| Arc::clone(&l.shared));
    let slot = Rc::new(Cell::new(None));
    let leave = Leave(Rc::clone(&slot));
    let future = async move {
        let _leave = leave;
        future.await
    };
    let (runnable, task) = async_task::spawn_local(future, move |r| schedule(&shared, r));
    runnable.schedule();
    Task { task, slot }
}

/// Where a woken task goes: the local queue when woken on its own thread while the executor runs,
/// else the shared queue (and the shard is woken).
fn schedule(shared: &Arc<Shared>, runnable: Runnable) {
    let mut runnable = Some(runnable);
    let _ = CURRENT.try_with(|c| {
        if let Some(local) = c.borrow().as_ref() {
            if Arc::ptr_eq(&local.shared, shared) {
                if let Some(r) = runnable.take() {
                    local.queue.borrow_mut().push_back(r);
                }
            }
        }
    });
    let Some(runnable) = runnable else { return };
    {
        let mut injected = shared
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shared.closed.load(Ordering::Relaxed) {
            // Neither runnable nor droppable here (its future belongs to the ended executor's
            // thread): leak it.
            std::mem::forget(runnable);
            return;
        }
        injected.push(runnable);
    }
    shared.remote.wake();
}

/// Whether the running task has had its share of the current turn and should yield.
pub(crate) fn need_preempt() -> bool {
    with_current(|l| Instant::now() >= l.turn_deadline.get())
}

/// One fallback executor, made on the thread that will run it.
pub(crate) struct Executor {
    local: Rc<Local>,
}

impl Executor {
    /// A new executor with its own epoll set. `name` names its blocking helper thread.
    pub(crate) fn new(name: String) -> io::Result<Executor> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let poller = Rc::new(Poller::new(id)?);
        let shared = Arc::new(Shared {
            injected: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            remote: poller.remote(),
        });
        let root_woken = Arc::new(RootWake {
            // Polled first thing.
            woken: AtomicBool::new(true),
            remote: poller.remote(),
        });
        Ok(Executor {
            local: Rc::new(Local {
                queue: RefCell::new(VecDeque::new()),
                shared,
                poller,
                timers: timers::Timers::default(),
                blocking: blocking::Helper::new(name),
                turn_deadline: Cell::new(Instant::now()),
                root_woken,
                detached: RefCell::new(slab::Slab::new()),
            }),
        })
    }

    /// Runs `root` and the tasks it spawns until `root` completes; then drops the tasks left.
    /// `root` is polled by the loop itself (it need not be `'static`), whenever its waker was
    /// woken, from any thread.
    ///
    /// # Panics
    /// If a task panics (the panic goes on up, as on glommio, where it kills the shard), or if
    /// the thread already runs an executor.
    pub(crate) fn run<F: Future>(self, root: F) -> F::Output {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            assert!(c.is_none(), "an executor already runs on this thread");
            *c = Some(Rc::clone(&self.local));
        });
        // Whatever happens (a panic included), the executor's tasks are dropped on this thread.
        struct Teardown(Rc<Local>);
        impl Drop for Teardown {
            fn drop(&mut self) {
                self.0.shut_down();
                let local = CURRENT.with(|c| c.borrow_mut().take());
                drop(local);
            }
        }
        let _teardown = Teardown(Rc::clone(&self.local));
        let mut root = std::pin::pin!(root);
        let waker = Waker::from(Arc::clone(&self.local.root_woken));
        let mut cx = Context::from_waker(&waker);
        let mut events = Vec::with_capacity(EVENTS_PER_TURN);
        loop {
            if self.local.root_woken.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = root.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            if let Err(e) = self.local.turn(&mut events) {
                log::error!("shard executor: epoll_pwait2 failed: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Local {
    /// Runs the tasks that are ready, then takes in what other threads, timers and sockets woke;
    /// blocks in the epoll set when none of that made a task ready.
    fn turn(&self, events: &mut Vec<libc::epoll_event>) -> io::Result<()> {
        let start = Instant::now();
        self.turn_deadline.set(start + TURN_BUDGET);
        let ready = self.queue.borrow().len().min(TASKS_PER_TURN);
        for _ in 0..ready {
            let Some(runnable) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            runnable.run();
        }
        // `run_pending` before `take_injected`: what was pushed before the flag was cleared is
        // taken now; what is pushed after sets the flag again, which `may_sleep` sees.
        self.shared.remote.run_pending();
        self.take_injected();
        let now = Instant::now();
        let next_timer = self.timers.fire_due(now);
        if !self.queue.borrow().is_empty() || self.root_woken.woken.load(Ordering::Acquire) {
            self.poller.dispatch(events)?;
            return Ok(());
        }
        let timeout = next_timer.map(|at| at.saturating_duration_since(now));
        if !self.shared.remote.may_sleep() {
            self.take_injected();
            return Ok(());
        }
        // The root's waker sets its flag before the shard's pending wake-up, which `may_sleep`
        // has just found clear: if the flag is set now, the wake-up was consumed earlier.
        if self.root_woken.woken.load(Ordering::SeqCst) {
            self.shared.remote.awake();
            return Ok(());
        }
        let result = self.poller.dispatch_until(events, timeout);
        self.shared.remote.awake();
        self.shared.remote.run_pending();
        self.take_injected();
        self.timers.fire_due(Instant::now());
        result.map(drop)
    }

    fn take_injected(&self) {
        let mut injected = self
            .shared
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !injected.is_empty() {
            self.queue.borrow_mut().extend(injected.drain(..));
        }
    }

    /// After the root future: closes the shared queue and drops every task that can still be
    /// reached (queued, or waiting on a timer or a socket of this shard) on this thread.
    fn shut_down(&self) {
        {
            let mut injected = self
                .shared
                .injected
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.closed.store(true, Ordering::Relaxed);
            self.queue.borrow_mut().extend(injected.drain(..));
        }
        loop {
            // Dropping a task's future or waker may wake others: they land in the local queue.
            let next = self.queue.borrow_mut().pop_front();
            if let Some(runnable) = next {
                drop(runnable);
                continue;
            }
            // Dropping a detached task's handle cancels it: it is queued once more, to be
            // dropped above.
            let detached = std::mem::take(&mut *self.detached.borrow_mut());
            let cancelled = !detached.is_empty();
            drop(detached);
            let timers = self.timers.clear();
            let sockets = self.poller.clear_wakers();
            if !(cancelled || timers || sockets) {
                break;
            }
        }
        self.blocking.close();
    }
}

#[cfg(test)]
mod tests;
