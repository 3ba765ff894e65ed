//! The runtime seam: the few verbs the broker and the client use on a shard, the same on both
//! executors: glommio (io_uring) and the fallback ([`crate::fallback`], epoll only). Each is a
//! free function that looks at which runtime the calling thread runs (a thread-local set when the
//! executor starts) and dispatches; on glommio that is one thread-local read and a branch.
//!
//! - [`spawn`] a local task: a [`Task`], awaited for its output, dropped to cancel it, or
//!   [`detach`](Task::detach)ed;
//! - [`sleep`] and [`Timer`] (a pollable sleep);
//! - [`need_preempt`] and [`yield_if_needed`]: a long-running task's fairness check;
//! - [`spawn_blocking`]: run blocking work off the shard;
//! - [`spawn_thread`]: run a future on a new executor thread of its own (the client library).
//!
//! Sockets are [`crate::TcpConn`] / [`crate::TcpAcceptor`] (the shard's epoll set, on both); for
//! channels use a runtime-agnostic crate (`flume`). Which runtime to use is [`crate::select`]'s.
//! This is the only file besides the executors' own that names glommio's task API.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fallback;

/// Which executor runs the shards (or the client's thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// glommio: io_uring, its own timers and task queues; the sockets still go through the
    /// shard's epoll set.
    Glommio,
    /// The fallback executor: epoll only (for hosts that refuse io_uring).
    Epoll,
}

impl Runtime {
    /// The name used in configuration and logs: `glommio` or `epoll`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Glommio => "glommio",
            Runtime::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    /// The runtime of this thread's executor; `None` (= glommio, for executors made outside this
    /// crate) until one of ours starts.
    static CURRENT: Cell<Option<Runtime>> = const { Cell::new(None) };
}

/// The calling thread's runtime.
#[inline]
pub(crate) fn current() -> Runtime {
    CURRENT.get().unwrap_or(Runtime::Glommio)
}

/// Marks the calling thread as running `runtime` (called where the executor starts).
pub(crate) fn set_current(runtime: Runtime) {
    CURRENT.set(Some(runtime));
}

/// A spawned local task: `.await` it for its output; dropping it cancels the task, unless it was
/// [`detach`](Task::detach)ed.
#[must_use = "a dropped task is cancelled: .await it or .detach() it"]
pub struct Task<T>(TaskInner<T>);

enum TaskInner<T> {
    Glommio(glommio::Task<T>),
    Epoll(fallback::Task<T>),
}

impl<T: 'static> Task<T> {
    /// Lets the task run to its end on its own.
    pub fn detach(self) {
        match self.0 {
            TaskInner::Glommio(t) => drop(t.detach()),
            TaskInner::Epoll(t) => t.detach(),
        }
    }
}

impl<T> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            TaskInner::Glommio(t) => Pin::new(t).poll(cx),
            TaskInner::Epoll(t) => Pin::new(t.handle()).poll(cx),
        }
    }
}

/// Spawns `future` as a task of the calling shard.
///
/// # Panics
/// If the thread runs no executor.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    Task(match current() {
        Runtime::Glommio => TaskInner::Glommio(glommio::spawn_local(future)),
        Runtime::Epoll => TaskInner::Epoll(fallback::spawn(future)),
    })
}

/// Completes once `duration` has passed (made when created, first polled later: it still counts
/// from creation). Drop it to cancel.
#[derive(Debug)]
pub struct Timer(TimerInner);

#[derive(Debug)]
enum TimerInner {
    Glommio(glommio::timer::Timer),
    Epoll(fallback::Sleep),
}

impl Timer {
    /// # Panics
    /// If the thread runs no executor.
    pub fn new(duration: Duration) -> Timer {
        Timer(match current() {
            Runtime::Glommio => TimerInner::Glommio(glommio::timer::Timer::new(duration)),
            Runtime::Epoll => TimerInner::Epoll(fallback::Sleep::new(duration)),
        })
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            TimerInner::Glommio(t) => Pin::new(t).poll(cx).map(drop),
            TimerInner::Epoll(t) => Pin::new(t).poll(cx),
        }
    }
}

/// Waits `duration` on the calling shard.
pub fn sleep(duration: Duration) -> Timer {
    Timer::new(duration)
}

/// Whether the running task has used its share of the shard and should yield.
#[inline]
pub fn need_preempt() -> bool {
    match current() {
        Runtime::Glommio => glommio::executor().need_preempt(),
        Runtime::Epoll => fallback::need_preempt(),
    }
}

/// Yields to the shard's other tasks if [`need_preempt`] says so.
pub async fn yield_if_needed() {
    match current() {
        Runtime::Glommio => glommio::yield_if_needed().await,
        Runtime::Epoll => {
            if fallback::need_preempt() {
                futures_lite::future::yield_now().await;
            }
        }
    }
}

thread_local! {
    /// Calls of [`spawn_blocking`] awaited on this (glommio) thread.
    static BLOCKING_IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Whether a [`spawn_blocking`] call of this glommio thread awaits its result: the shard's poller
/// ([`crate::poller`]) then sleeps through glommio, whose ring delivers that result, rather than
/// in its brief `epoll_pwait2` wait, which would hold the result back (a 4 KiB journal append
/// right after socket traffic: p50 0.35 ms with the brief wait, 0.03 ms without).
pub(crate) fn blocking_in_flight() -> bool {
    BLOCKING_IN_FLIGHT.get() > 0
}

/// Counts one awaited [`spawn_blocking`] call while it lives (dropped on completion or cancel).
struct BlockingInFlight;

impl BlockingInFlight {
    fn enter() -> BlockingInFlight {
        BLOCKING_IN_FLIGHT.set(BLOCKING_IN_FLIGHT.get() + 1);
        BlockingInFlight
    }
}

impl Drop for BlockingInFlight {
    fn drop(&mut self) {
        BLOCKING_IN_FLIGHT.set(BLOCKING_IN_FLIGHT.get() - 1);
    }
}

/// Runs `f` on a helper thread of the calling shard (glommio's blocking pool, or the fallback
/// executor's helper thread); completes with its result.
pub async fn spawn_blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match current() {
        Runtime::Glommio => {
            let _in_flight = BlockingInFlight::enter();
            glommio::executor().spawn_blocking(f).await
        }
        Runtime::Epoll => fallback::spawn_blocking(f).await,
    }
}

/// Starts a thread named `name` that runs an executor of `runtime`, unpinned (it inherits the
/// caller's CPU affinity), and on it the future `make` returns, to its end. Returns once the
/// executor exists (or with the error that kept it from starting); join the handle for the
/// future's output.
pub fn spawn_thread<F, Fut, T>(
    name: &str,
    runtime: Runtime,
    make: F,
) -> io::Result<ExecutorThread<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let thread_name = name.to_string();
    let handle = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let mut ready = Some(ready_tx);
            let report = |r: io::Result<()>| {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(r);
                }
            };
            block_on_new(runtime, thread_name, report, make)
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ExecutorThread(handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other(format!(
            "the thread {name} ended before its executor was ready"
        ))),
    }
}

/// A thread started by [`spawn_thread`].
#[derive(Debug)]
pub struct ExecutorThread<T>(JoinHandle<Option<T>>);

impl<T> ExecutorThread<T> {
    /// Waits for the thread's future to complete; `Err` with the panic's payload if it panicked.
    pub fn join(self) -> std::thread::Result<T> {
        // `None` only when the executor could not be made, and then no handle was given out.
        self.0
            .join()
            .and_then(|out| out.ok_or_else(|| Box::new("the executor did not start") as _))
    }
}

/// On the calling thread: makes an executor of `runtime` (calling `report` with the outcome) and
/// runs `make`'s future on it; `None` if the executor could not be made.
fn block_on_new<F, Fut, T>(
    runtime: Runtime,
    name: String,
    mut report: impl FnMut(io::Result<()>),
    make: F,
) -> Option<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    match runtime {
        Runtime::Glommio => {
            let made = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(crate::DEFAULT_IO_MEMORY)
                .name(&name)
                .make();
            match made {
                Ok(ex) => {
                    report(Ok(()));
                    set_current(Runtime::Glommio);
                    Some(ex.run(make()))
                }
                Err(e) => {
                    report(Err(io::Error::other(e.to_string())));
                    None
                }
            }
        }
        Runtime::Epoll => match fallback::Executor::new(name) {
            Ok(ex) => {
                report(Ok(()));
                set_current(Runtime::Epoll);
                Some(ex.run(make()))
            }
            Err(e) => {
                report(Err(e));
                None
            }
        },
    }
}
