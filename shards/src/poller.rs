//! Socket readiness for one shard: a single edge-triggered epoll set per shard thread, registered
//! once per socket, and a small task that turns its events into task wake-ups.
//!
//! Why not glommio's own readiness: glommio 0.9 arms an io_uring `POLL_ADD` per socket after every
//! read that did not fill the buffer, and its rings are set up without cooperative task running,
//! so each completion that arrives while the shard runs is delivered by an inter-processor
//! interrupt. At saturation that was 34 k interrupts per second, 21 % of the broker's CPU
//! (`perf record`, one shard, `amqtt-bench pairs -n 8`); every armed poll also kept a 496-byte
//! glommio `Source` per idle connection. Here a socket joins the epoll set once, and while the
//! shard is busy the set is read with a non-blocking `epoll_wait` between the tasks it woke (a few
//! rounds per executor loop turn, see [`ROUNDS_PER_TURN`]): no interrupts, no per-read arming. Only when a turn finds nothing ready does the shard ask glommio
//! to wake it when the epoll fd becomes readable (one io_uring poll), and then it may sleep.
//!
//! Sockets registered here are read and written with plain non-blocking `recv`/`send` by
//! [`crate::tcp`]. Nothing here knows what the bytes mean, and nothing here reads or writes them.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

/// Events taken from the epoll set per `epoll_wait`; more wait for the next loop turn.
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

/// The shard's epoll set and the wakers of the tasks waiting on its sockets.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: OwnedFd,
    slots: RefCell<Slab<Slot>>,
    /// The executor whose drive task serves this set (a thread may run executors one after
    /// another, in tests; each gets its own set).
    executor: usize,
}

thread_local! {
    static POLLER: RefCell<Option<Rc<Poller>>> = const { RefCell::new(None) };
}

impl Poller {
    /// The current shard's poller, created (with its drive task) on first use.
    ///
    /// # Panics
    /// If called outside a glommio executor.
    fn current() -> io::Result<Rc<Poller>> {
        POLLER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let executor = glommio::executor().id();
            if let Some(p) = cell.as_ref() {
                if p.executor == executor {
                    return Ok(Rc::clone(p));
                }
            }
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let poller = Rc::new(Poller {
                // SAFETY: `fd` is a fresh descriptor that nothing else owns.
                epoll: unsafe { OwnedFd::from_raw_fd(fd) },
                slots: RefCell::new(Slab::new()),
                executor,
            });
            glommio::spawn_local(drive(Rc::clone(&poller))).detach();
            *cell = Some(Rc::clone(&poller));
            Ok(poller)
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

    /// Takes what the set has ready without waiting and wakes the tasks concerned. Returns how
    /// many events there were.
    fn dispatch(&self, events: &mut Vec<libc::epoll_event>) -> io::Result<usize> {
        events.clear();
        // SAFETY: the kernel writes at most `capacity` events into the vector's buffer, and we
        // set the length to what it reports.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.capacity() as i32,
                0,
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
    /// If called outside a glommio executor.
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
/// rounds, then after the executor's next loop turn); when a read finds nothing, wait (through
/// glommio) until the epoll fd itself becomes readable.
async fn drive(poller: Rc<Poller>) {
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);
    let mut rounds = 0;
    loop {
        match poller.dispatch(&mut events) {
            Ok(0) => {
                if let Err(e) = wait_readable(poller.epoll.as_raw_fd()).await {
                    log::error!("shard poller: waiting for socket events failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(_) => {
                rounds += 1;
                if rounds < ROUNDS_PER_TURN && !glommio::executor().need_preempt() {
                    futures_lite::future::yield_now().await;
                } else {
                    rounds = 0;
                    glommio::timer::sleep(NEXT_TURN).await;
                }
            }
            Err(e) => {
                log::error!("shard poller: epoll_wait failed: {e}");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
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
