//! Socket readiness for one shard: a single edge-triggered epoll set per shard thread, registered
//! once per socket, and a small task that turns its events into task wake-ups.
//!
//! Why not glommio's own readiness: glommio 0.9 arms an io_uring `POLL_ADD` per socket after every
//! read that did not fill the buffer, and its rings are set up without cooperative task running,
//! so each completion that arrives while the shard runs is delivered by an inter-processor
//! interrupt. At saturation that was 34 k interrupts per second, 21 % of the broker's CPU
//! (`perf record`, one shard, `amqtt-bench pairs -n 8`); every armed poll also kept a 496-byte
//! glommio `Source` per idle connection. Here a socket joins the epoll set once, and while the
//! shard is busy the set is read with a non-blocking `epoll_pwait2` between the tasks it woke (a few
//! rounds per executor loop turn, see [`ROUNDS_PER_TURN`]): no interrupts, no per-read arming.
//! When the set goes quiet right after events and nothing else on the shard can run, the shard
//! blocks in `epoll_pwait2` itself for a moment ([`BRIEF_WAIT`]; other threads end that wait
//! through [`RemoteWake`], which the bus uses; not while a [`crate::rt::spawn_blocking`] call is
//! awaited, whose result comes through glommio's ring). Only when the set stays quiet does the shard ask
//! glommio to wake it when the epoll fd becomes readable (one io_uring poll), and then it sleeps
//! (glommio's sleep is much dearer: a `membarrier` and several `io_uring_enter`).
//!
//! Sockets registered here are read and written with plain non-blocking `recv`/`send` by
//! [`crate::tcp`]. Nothing here knows what the bytes mean, and nothing here reads or writes them.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

use crate::remote_wake::RemoteWake;

/// Events taken from the epoll set per `epoll_pwait2`; more wait for the next loop turn.
const EVENTS_PER_TURN: usize = 256;

/// How many times the drive task reads the set within one executor loop turn while there are
/// events, yielding to the tasks it woke in between, before it lets the executor turn (glommio
/// flushes its rings and re-arms its preemption timer on every turn: about three `io_uring_enter`
/// per turn). One shard pinned, `amqtt-bench pairs -n 8`: 1 round per turn 1.97 M, 16 rounds
/// 2.2-2.3 M, 64 rounds 2.1 M delivered per CPU-second (`io_uring_enter` 41 k/s -> 7.6 k/s at 16).
/// glommio's own events (timers, other shards' wake-ups) wait for the turn: at most 16 rounds,
/// and never past the executor's preemption deadline.
const ROUNDS_PER_TURN: usize = 16;

/// How long the drive task lets the executor run before it reads the set again while the shard is
/// busy. Anything above zero makes it a timer, and glommio fires timers only between loop turns:
/// the point is "after the executor has polled its own rings", not this duration.
const NEXT_TURN: Duration = Duration::from_micros(1);

/// How long the drive task may block the shard in `epoll_pwait2` itself when the set has just gone
/// quiet and nothing else on the shard can run, before it lets the shard sleep through glommio.
///
/// What it buys: glommio's sleep costs a `membarrier` (an inter-processor interrupt to every CPU
/// running the process), several `io_uring_enter` and the epoll fd's glommio stream; a shard that
/// goes idle between bursts (a generator's closed loop, two shards sharing CPUs with it) paid that
/// 12 k times a second in `pairs -n 8` with 2 shards. Blocking in `epoll_pwait2` is one system
/// call, woken directly by the sockets and by the bus ([`RemoteWake`]). The cost: glommio's own
/// events (timers, the stop signal) wait while the shard blocks; brief waits count as rounds of
/// [`ROUNDS_PER_TURN`], so they wait at most that many times this long.
const BRIEF_WAIT: Duration = Duration::from_micros(250);

/// The key of the shard's wake-up eventfd in its epoll set (socket keys are slab indices).
const WAKE_KEY: u64 = u64::MAX;

/// One direction (read or write) of one socket.
#[derive(Debug, Default)]
struct Direction {
    /// The last attempt did not find the socket empty (read) or full (write), or an event came
    /// since: try the syscall. Cleared when it would block.
    ready: bool,
    /// The peer has closed this direction, or the socket has an error: every attempt returns at
    /// once from now on (end of stream or the error), so it is never cleared. Without it, a read
    /// that took the last bytes before a FIN (both reported by one edge) would wait forever.
    closed: bool,
    /// The task waiting for the next event.
    waker: Option<Waker>,
}

impl Direction {
    fn fire(&mut self, closed: bool) {
        self.ready = true;
        self.closed |= closed;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn wait(&mut self, cx: &Context<'_>) {
        self.ready = false;
        match &self.waker {
            // glommio counts waker references in 16 bits: keep the one we have.
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    read: Direction,
    write: Direction,
}

/// Which direction of a registered socket an operation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// The current shard's [`RemoteWake`], if its poller exists (the bus registers it when a task
/// first waits for a message).
pub(crate) fn current_remote_wake() -> Option<Arc<RemoteWake>> {
    if crate::rt::current() == crate::rt::Runtime::Epoll {
        return Some(crate::fallback::poller().remote());
    }
    POLLER.with(|cell| {
        let cell = cell.borrow();
        let poller = cell.as_ref()?;
        (poller.executor == glommio::executor().id()).then(|| Arc::clone(&poller.remote))
    })
}

/// The shard's epoll set and the wakers of the tasks waiting on its sockets.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: OwnedFd,
    remote: Arc<RemoteWake>,
    slots: RefCell<Slab<Slot>>,
    /// The executor whose drive task serves this set (a thread may run executors one after
    /// another, in tests; each gets its own set).
    executor: usize,
}

thread_local! {
    static POLLER: RefCell<Option<Rc<Poller>>> = const { RefCell::new(None) };
}

impl Poller {
    /// The current shard's poller: on glommio created (with its drive task) on first use; the
    /// fallback executor has its own from the start and reads it from its loop.
    ///
    /// # Panics
    /// If called outside a shard's executor.
    fn current() -> io::Result<Rc<Poller>> {
        if crate::rt::current() == crate::rt::Runtime::Epoll {
            return Ok(crate::fallback::poller());
        }
        POLLER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let executor = glommio::executor().id();
            if let Some(p) = cell.as_ref() {
                if p.executor == executor {
                    return Ok(Rc::clone(p));
                }
            }
            let poller = Rc::new(Poller::new(executor)?);
            glommio::spawn_local(drive(Rc::clone(&poller))).detach();
            *cell = Some(Rc::clone(&poller));
            Ok(poller)
        })
    }

    /// A new, empty set with its wake-up eventfd, for `executor` (no drive task).
    pub(crate) fn new(executor: usize) -> io::Result<Poller> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let remote = RemoteWake::new()?;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: `event` outlives the call; the result is checked.
        let rc = unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, remote.eventfd(), &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            epoll,
            remote: Arc::new(remote),
            slots: RefCell::new(Slab::new()),
            executor,
        })
    }

    /// Adds `fd` to the set (both directions, edge-triggered). Both directions start ready: the
    /// first attempt finds out.
    fn register(&self, fd: RawFd) -> io::Result<usize> {
        let key = self.slots.borrow_mut().insert(Slot {
            read: Direction {
                ready: true,
                closed: false,
                waker: None,
            },
            write: Direction {
                ready: true,
                closed: false,
                waker: None,
            },
        });
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key as u64,
        };
        // SAFETY: `event` outlives the call; the result is checked.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            self.slots.borrow_mut().remove(key);
            return Err(io::Error::last_os_error());
        }
        Ok(key)
    }

    /// Removes `fd` (registered as `key`) from the set. Call it before closing or moving `fd`.
    fn deregister(&self, key: usize, fd: RawFd) {
        // SAFETY: plain syscall. It fails only if `fd` is not in the set, which leaves nothing
        // to undo.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        let mut slots = self.slots.borrow_mut();
        if slots.contains(key) {
            slots.remove(key);
        }
    }

    /// Runs `attempt` (a non-blocking syscall on the socket) unless the socket is known to be
    /// not ready; when the attempt would block, parks the task until the next event. `attempt`
    /// returns `Ok(Some(n))` when done, with `clear` = the socket is now known to be drained
    /// (read) or full (write); `Ok(None)` when it would block.
    fn poll_io<T>(
        &self,
        key: usize,
        dir: Dir,
        cx: &Context<'_>,
        mut attempt: impl FnMut() -> io::Result<Option<(T, bool)>>,
    ) -> Poll<io::Result<T>> {
        if !self.direction(key, dir, |d| d.ready || d.closed) {
            self.direction(key, dir, |d| d.wait(cx));
            return Poll::Pending;
        }
        match attempt() {
            Ok(Some((value, clear))) => {
                if clear {
                    self.direction(key, dir, |d| d.ready = false);
                }
                Poll::Ready(Ok(value))
            }
            Ok(None) => {
                self.direction(key, dir, |d| d.wait(cx));
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn direction<R>(&self, key: usize, dir: Dir, f: impl FnOnce(&mut Direction) -> R) -> R {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[key];
        f(match dir {
            Dir::Read => &mut slot.read,
            Dir::Write => &mut slot.write,
        })
    }

    /// How other threads wake this shard.
    pub(crate) fn remote(&self) -> Arc<RemoteWake> {
        Arc::clone(&self.remote)
    }

    /// Takes what the set has ready without waiting and wakes the tasks concerned. Returns how
    /// many events there were.
    pub(crate) fn dispatch(&self, events: &mut Vec<libc::epoll_event>) -> io::Result<usize> {
        self.dispatch_within(events, Some(Duration::ZERO))
    }

    /// Like [`dispatch`](Self::dispatch), but blocks the thread until an event comes or `timeout`
    /// (`None`: no limit) passes. For the fallback executor, which has nothing else to run; the
    /// caller has said it may sleep ([`RemoteWake::may_sleep`]).
    pub(crate) fn dispatch_until(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.dispatch_within(events, timeout)
    }

    /// Drops the wakers of every task waiting on a socket (the fallback executor is ending).
    /// Returns whether there were any.
    pub(crate) fn clear_wakers(&self) -> bool {
        let mut taken = Vec::new();
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            taken.extend(slot.read.waker.take());
            taken.extend(slot.write.waker.take());
        }
        let any = !taken.is_empty();
        drop(taken);
        any
    }

    /// Like [`dispatch`](Self::dispatch), but blocks the shard's thread in `epoll_pwait2` for up
    /// to [`BRIEF_WAIT`] when nothing is ready (and no other thread's wake-up is pending: that
    /// counts as one event). Only for a drive task that knows no other task of the shard can run.
    fn dispatch_briefly(&self, events: &mut Vec<libc::epoll_event>) -> io::Result<usize> {
        if !self.remote.may_sleep() {
            return Ok(1);
        }
        let result = self.dispatch_within(events, Some(BRIEF_WAIT));
        self.remote.awake();
        let woken = usize::from(self.remote.run_pending());
        result.map(|n| n + woken)
    }

    /// Reads the set, waiting up to `timeout` (`None`: until an event) for the first event.
    fn dispatch_within(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        events.clear();
        let timeout = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the kernel writes at most `capacity` events into the vector's buffer, and we
        // set the length to what it reports; `timeout` outlives the call.
        let n = unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.capacity() as i32,
                timeout_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        // SAFETY: see above.
        unsafe { events.set_len(n as usize) };
        let mut slots = self.slots.borrow_mut();
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let read_closed = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let writable = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let write_closed = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        for event in events.iter() {
            if event.u64 == WAKE_KEY {
                self.remote.drain();
                continue;
            }
            let (bits, key) = (event.events, event.u64 as usize);
            // A socket deregistered earlier in this turn has no slot (or a new one, which an
            // extra wake-up does not hurt: its next attempt finds out).
            let Some(slot) = slots.get_mut(key) else {
                continue;
            };
            if bits & readable != 0 {
                slot.read.fire(bits & read_closed != 0);
            }
            if bits & writable != 0 {
                slot.write.fire(bits & write_closed != 0);
            }
        }
        Ok(n as usize)
    }
}

/// A socket's place in the current shard's epoll set; dropping it takes the socket out. Owners
/// declare it before the socket itself, so that it is dropped (deregistered) before the socket is
/// closed.
#[derive(Debug)]
pub(crate) struct Registration {
    poller: Rc<Poller>,
    key: usize,
    fd: RawFd,
}

impl Registration {
    /// Adds `fd` to the current shard's set.
    ///
    /// # Panics
    /// If called outside a shard's executor (glommio or the fallback).
    pub(crate) fn new(fd: RawFd) -> io::Result<Registration> {
        let poller = Poller::current()?;
        let key = poller.register(fd)?;
        Ok(Registration { poller, key, fd })
    }

    /// [`Poller::poll_io`] for this socket.
    pub(crate) fn poll_io<T>(
        &self,
        dir: Dir,
        cx: &Context<'_>,
        attempt: impl FnMut() -> io::Result<Option<(T, bool)>>,
    ) -> Poll<io::Result<T>> {
        self.poller.poll_io(self.key, dir, cx, attempt)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.poller.deregister(self.key, self.fd);
    }
}

/// The drive task: while there are events, read the set again after the woken tasks ran (a few
/// rounds, then after the executor's next loop turn). When the set goes quiet right after events
/// and no other task of the shard can run, block in `epoll_pwait2` for up to [`BRIEF_WAIT`] (a
/// round like the others, so the executor still turns every [`ROUNDS_PER_TURN`]); when it stays
/// quiet, wait through glommio until the epoll fd itself becomes readable.
async fn drive(poller: Rc<Poller>) {
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);
    let mut rounds = 0;
    // The set had events at the last look (or other tasks were running).
    let mut busy = false;
    loop {
        let woken = usize::from(poller.remote.run_pending());
        let found = match poller.dispatch(&mut events).map(|n| n + woken) {
            // Work on the blocking helper thread (a journal fdatasync) completes through
            // glommio's ring, which a brief wait would not see: sleep through glommio instead.
            Ok(0) if busy && !crate::rt::blocking_in_flight() => {
                if only_task_runnable().await {
                    poller.dispatch_briefly(&mut events)
                } else {
                    Ok(1)
                }
            }
            other => other,
        };
        match found {
            Ok(0) => {
                busy = false;
                rounds = 0;
                if !poller.remote.may_sleep() {
                    continue;
                }
                let slept = wait_readable(poller.epoll.as_raw_fd()).await;
                poller.remote.awake();
                if let Err(e) = slept {
                    log::error!("shard poller: waiting for socket events failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(_) => {
                busy = true;
                rounds += 1;
                if rounds < ROUNDS_PER_TURN && !glommio::executor().need_preempt() {
                    futures_lite::future::yield_now().await;
                } else {
                    rounds = 0;
                    glommio::timer::sleep(NEXT_TURN).await;
                }
            }
            Err(e) => {
                log::error!("shard poller: epoll_pwait2 failed: {e}");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Whether the calling task is the only one of its executor that can run now: it ends its task
/// queue's current run twice and counts the tasks run in between (glommio adds a run's count to
/// its statistics when the run ends). One means only the caller ran, so nothing was waiting
/// behind it; tasks woken from other threads or by timers are not seen (they wait for the
/// executor's next loop turn).
async fn only_task_runnable() -> bool {
    let executor = glommio::executor();
    executor.yield_task_queue_now().await;
    let _ = executor.executor_stats();
    executor.yield_task_queue_now().await;
    executor.executor_stats().tasks_executed() <= 1
}

/// Waits until `fd` (the epoll set) is readable, using glommio's reactor, so the shard can sleep.
///
/// glommio 0.9 has no public "wait for this fd" call, but each of its streams arms an io_uring
/// poll for readability of its fd when it is created, and its first read after that poll
/// completes is a plain `recv`. So: a glommio `UnixStream` over a duplicate of `fd` is created
/// and read once. The read returns when the poll completes; on an epoll fd the `recv` then
/// fails with `ENOTSOCK`, which here means "readable". Dropping the stream closes the duplicate
/// (the epoll set lives on in `fd`). The test `tcp::tests::an_idle_shard_wakes_for_data` pins this
/// behaviour down for the glommio version in use.
async fn wait_readable(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of the call (the poller owns it).
    let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    // SAFETY: we own `dup` and give it to the stream, which closes it when dropped.
    let mut stream =
        unsafe { glommio::net::UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) };
    let mut byte = [0u8; 1];
    match futures_lite::AsyncReadExt::read(&mut stream, &mut byte).await {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(io::Error::other(
            "reading an epoll fd as a socket returned data",
        )),
    }
}

#[cfg(test)]
mod tests;
