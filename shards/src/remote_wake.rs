//! How other threads wake tasks of a shard through its poller ([`crate::poller`]): a flag the
//! drive task looks at every round, and an eventfd in the shard's epoll set for when it is not
//! looking (blocked in `epoll_pwait2`, or asleep in glommio on the epoll fd).
//!
//! This file owns the flags, the eventfd and the registered wake-ups; it never waits, and knows
//! nothing of sockets, the bus or what the woken tasks do.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A wake-up that another thread hands to the shard's poller, which performs it on the shard's
/// own thread (a local glommio wake-up).
pub(crate) type LocalWake = Arc<dyn Fn() + Send + Sync>;

/// How other threads wake tasks of this shard (the bus registers its inbox's waker here): they
/// set `pending`, and write the eventfd that is in the set only if the shard is asleep, in its
/// brief wait or in glommio. The drive task looks at `pending` every round and runs the
/// registered [`LocalWake`]s on the shard's thread.
///
/// Why not glommio's cross-thread wake-up: a shard blocked in `epoll_pwait2` would not see it,
/// and a busy one runs the woken task only after an executor loop turn, which costs
/// `io_uring_enter` calls (and a `membarrier` when the turn finds nothing else to do).
///
/// A Dekker pair, as in the bus: before sleeping the poller sets `asleep`, fences and checks
/// `pending`; a waker sets `pending`, fences and checks `asleep`. Either the poller does not
/// sleep, or the waker writes the eventfd, which ends either kind of sleep.
pub(crate) struct RemoteWake {
    asleep: AtomicBool,
    pending: AtomicBool,
    eventfd: OwnedFd,
    /// Run on the shard's thread for each wake-up (normally one: the bus inbox's waker).
    wakes: Mutex<Vec<LocalWake>>,
}

impl std::fmt::Debug for RemoteWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWake")
            .field("asleep", &self.asleep)
            .field("pending", &self.pending)
            .finish()
    }
}

impl RemoteWake {
    pub(crate) fn new() -> io::Result<RemoteWake> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RemoteWake {
            asleep: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            wakes: Mutex::new(Vec::new()),
        })
    }

    /// The eventfd, for the poller to put in its epoll set (readable: a wake-up came while the
    /// poller was not looking; [`drain`](Self::drain) it).
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Whether the poller said it may sleep and has not woken since.
    #[cfg(test)]
    pub(crate) fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Registers a wake-up to run on the shard's thread whenever another thread calls
    /// [`wake`](Self::wake).
    pub(crate) fn register(&self, wake: LocalWake) {
        self.wakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(wake);
    }

    /// From any thread: have the shard run its registered wake-ups soon.
    pub(crate) fn wake(&self) {
        self.pending.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.asleep.load(Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this struct owns. It cannot fail
        // short of the counter overflowing (2^64 - 1 unread wake-ups).
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// On the shard's thread: runs the wake-ups if another thread asked since the last time.
    pub(crate) fn run_pending(&self) -> bool {
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::SeqCst) {
            return false;
        }
        let wakes = self.wakes.lock().unwrap_or_else(PoisonError::into_inner);
        for wake in wakes.iter() {
            wake();
        }
        true
    }

    /// On the shard's thread, before it sleeps: `false` (and the wake-ups run, and the shard stays
    /// awake) when a wake-up is already pending; `true` when the shard may sleep, in which case
    /// it calls [`awake`](Self::awake) when it wakes up.
    pub(crate) fn may_sleep(&self) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.run_pending() {
            self.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub(crate) fn awake(&self) {
        self.asleep.store(false, Ordering::SeqCst);
    }

    /// The eventfd fired: empty its counter (the wake-ups run through `pending`).
    pub(crate) fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; the eventfd is non-blocking.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}
