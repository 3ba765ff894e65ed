//! The cross-shard bus: one inbox per shard, each with two bounded lanes (control, checked first,
//! and data), and a wake-up protocol that costs a sender nothing unless the receiving shard is
//! actually asleep waiting for messages.
//!
//! What must not happen here: no blocking and no `.await` on the sending side (senders are shard
//! loops), no unbounded queue, and no more than one registered waker per inbox (glommio 0.9 keeps
//! a 16-bit reference count per task: cloning one task's waker per message or per connection
//! overflows it). Messages are opaque: the bus knows nothing of what it carries.
//!
//! # Wake-up protocol
//! The receiver, finding both lanes empty, registers its waker in the inbox's `AtomicWaker`, sets
//! `parked`, fences, and looks at the lanes once more before returning `Pending`. A sender pushes,
//! fences, and only if it sees `parked` does it `swap(false)` and wake. The two fences make this a
//! Dekker pair: either the receiver's re-check sees the message or the sender sees `parked`.
//! The wake itself goes through the receiving shard's poller (`remote_wake::RemoteWake`: a flag the
//! poller looks at every round, and an eventfd in its epoll set when it is not looking), which
//! wakes the task on its own thread; a receiver without a poller (possible on glommio only: the
//! fallback executor always has one) is woken through its waker directly, which on glommio queues
//! it on the owning executor's notifier and wakes it from its sleep.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use futures_util::task::AtomicWaker;

/// A message taken from an inbox, tagged with the lane it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lane<M> {
    /// From the control lane (hand-offs, interest changes, stats...): always drained first.
    Control(M),
    /// From the data lane.
    Data(M),
}

impl<M> Lane<M> {
    /// The message, whichever lane it came through.
    pub fn into_inner(self) -> M {
        match self {
            Lane::Control(m) | Lane::Data(m) => m,
        }
    }

    /// Whether it came through the control lane.
    pub fn is_control(&self) -> bool {
        matches!(self, Lane::Control(_))
    }
}

/// Why a `try_send_*` failed; the message is handed back.
pub enum SendError<M> {
    /// The lane is at capacity. Drop (and count) or retry later; never wait inside a shard loop.
    Full(M),
    /// The receiving shard's [`Inbox`] is gone (that shard has stopped).
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that could not be sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }

    /// Whether the lane was full (as opposed to closed).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("bus lane is full"),
            SendError::Closed(_) => f.write_str("receiving shard's inbox is closed"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Wake-up state shared by an inbox and all senders to it.
struct Wake {
    waker: AtomicWaker,
    /// Set by the receiver just before it sleeps; cleared by the first sender that wakes it.
    parked: AtomicBool,
    /// How the receiving shard's poller takes wake-ups from other threads (see
    /// `remote_wake::RemoteWake`); set by the receiver the first time it waits. Until then (or on a
    /// thread without a poller) senders wake the receiving task through glommio.
    remote: OnceLock<Arc<crate::remote_wake::RemoteWake>>,
}

impl Wake {
    /// Called by a sender after a successful push.
    #[inline]
    fn notify(&self) {
        fence(Ordering::SeqCst);
        // The plain load keeps the common case (receiver busy) free of cache-line writes.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            // Through the receiving shard's poller when it has one: it wakes the receiving task
            // on its own thread, also when the shard is blocked in `epoll_pwait2`.
            match self.remote.get() {
                Some(remote) => remote.wake(),
                None => self.waker.wake(),
            }
        }
    }
}

struct Slot<M> {
    data: Sender<M>,
    control: Sender<M>,
    wake: Arc<Wake>,
}

/// The sending side of the whole bus: can send to any shard's inbox. `Send + Sync`; cloning is one
/// reference-count increment.
pub struct BusSender<M> {
    slots: Arc<[Slot<M>]>,
}

impl<M> Clone for BusSender<M> {
    fn clone(&self) -> Self {
        BusSender {
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<M> fmt::Debug for BusSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusSender")
            .field("shards", &self.slots.len())
            .finish()
    }
}

/// One shard's receiving end. `Send` (moved into its shard's thread), not meant to be shared:
/// exactly one task on the shard should wait in [`Inbox::recv`] at a time (a second waiter would
/// replace the first one's waker, and the first would not be woken).
///
/// Dropping the inbox closes both lanes: senders then get [`SendError::Closed`].
pub struct Inbox<M> {
    shard: usize,
    data: Receiver<M>,
    control: Receiver<M>,
    wake: Arc<Wake>,
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("shard", &self.shard)
            .field("data_len", &self.data.len())
            .field("control_len", &self.control.len())
            .finish()
    }
}

/// Creates a bus for `shards` shards: the sender (clone it freely) and one inbox per shard, in
/// shard order. Each inbox has a data lane of `data_capacity` messages and a control lane of
/// `control_capacity` messages.
///
/// # Panics
/// If either capacity is 0 (a zero-capacity crossbeam channel is a rendezvous channel, on which
/// `try_send` fails unless the receiver is blocked in `recv`, which ours never is).
pub fn bus<M: Send + 'static>(
    shards: usize,
    data_capacity: usize,
    control_capacity: usize,
) -> (BusSender<M>, Vec<Inbox<M>>) {
    assert!(
        data_capacity > 0 && control_capacity > 0,
        "bus lane capacities must be at least 1"
    );
    let mut slots = Vec::with_capacity(shards);
    let mut inboxes = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (data_tx, data_rx) = crossbeam_channel::bounded(data_capacity);
        let (control_tx, control_rx) = crossbeam_channel::bounded(control_capacity);
        let wake = Arc::new(Wake {
            waker: AtomicWaker::new(),
            parked: AtomicBool::new(false),
            remote: OnceLock::new(),
        });
        slots.push(Slot {
            data: data_tx,
            control: control_tx,
            wake: Arc::clone(&wake),
        });
        inboxes.push(Inbox {
            shard,
            data: data_rx,
            control: control_rx,
            wake,
        });
    }
    (
        BusSender {
            slots: slots.into(),
        },
        inboxes,
    )
}

impl<M: Send> BusSender<M> {
    /// Number of inboxes on this bus.
    pub fn shards(&self) -> usize {
        self.slots.len()
    }

    /// Queues `msg` on shard `to`'s data lane, waking it if it sleeps. Never blocks.
    ///
    /// # Panics
    /// If `to >= self.shards()`.
    #[inline]
    pub fn try_send_data(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        let slot = &self.slots[to];
        send(&slot.data, &slot.wake, msg)
    }

    /// Queues `msg` on shard `to`'s control lane, waking it if it sleeps. Never blocks.
    ///
    /// # Panics
    /// If `to >= self.shards()`.
    #[inline]
    pub fn try_send_control(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        let slot = &self.slots[to];
        send(&slot.control, &slot.wake, msg)
    }

    /// Current depth of shard `shard`'s data lane (a snapshot, for metrics).
    pub fn data_len(&self, shard: usize) -> usize {
        self.slots[shard].data.len()
    }

    /// Current depth of shard `shard`'s control lane (a snapshot, for metrics).
    pub fn control_len(&self, shard: usize) -> usize {
        self.slots[shard].control.len()
    }
}

#[inline]
fn send<M>(lane: &Sender<M>, wake: &Wake, msg: M) -> Result<(), SendError<M>> {
    match lane.try_send(msg) {
        Ok(()) => {
            wake.notify();
            Ok(())
        }
        Err(TrySendError::Full(m)) => Err(SendError::Full(m)),
        Err(TrySendError::Disconnected(m)) => Err(SendError::Closed(m)),
    }
}

impl<M: Send> Inbox<M> {
    /// The shard this inbox belongs to (its index in the vector [`bus`] returned).
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Takes one message if there is one: the control lane first, then the data lane.
    #[inline]
    pub fn try_recv(&self) -> Option<Lane<M>> {
        match self.control.try_recv() {
            Ok(m) => return Some(Lane::Control(m)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        match self.data.try_recv() {
            Ok(m) => Some(Lane::Data(m)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Waits for the next message (control lane first). Only one task per inbox may wait at a
    /// time. Cancel-safe: dropping the future loses no message.
    ///
    /// It never completes if no message ever arrives (even when every [`BusSender`] is dropped):
    /// race it with [`ShardContext::stopped`](crate::ShardContext::stopped) to end a shard loop.
    pub fn recv(&self) -> Recv<'_, M> {
        Recv { inbox: self }
    }

    /// Depth of this inbox's data lane.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Depth of this inbox's control lane.
    pub fn control_len(&self) -> usize {
        self.control.len()
    }
}

impl<M> Drop for Inbox<M> {
    fn drop(&mut self) {
        // Release the registered waker on the shard's own thread rather than leaving it to the
        // last sender (which would drop or wake a task of an executor that may be gone).
        self.wake.parked.store(false, Ordering::SeqCst);
        drop(self.wake.waker.take());
    }
}

/// Future returned by [`Inbox::recv`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, M> {
    inbox: &'a Inbox<M>,
}

impl<M: Send> Future for Recv<'_, M> {
    type Output = Lane<M>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Lane<M>> {
        let inbox = self.inbox;
        if let Some(m) = inbox.try_recv() {
            return Poll::Ready(m);
        }
        if inbox.wake.remote.get().is_none() {
            if let Some(remote) = crate::poller::current_remote_wake() {
                // Weak: the poller outlives no inbox by holding it (nor the inbox its poller).
                let wake = Arc::downgrade(&inbox.wake);
                remote.register(Arc::new(move || {
                    if let Some(wake) = wake.upgrade() {
                        wake.waker.wake();
                    }
                }));
                let _ = inbox.wake.remote.set(remote);
            }
        }
        // AtomicWaker::register does not clone when the stored waker `will_wake` the new one.
        inbox.wake.waker.register(cx.waker());
        inbox.wake.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if let Some(m) = inbox.try_recv() {
            // Spare the next sender a pointless wake.
            inbox.wake.parked.store(false, Ordering::Relaxed);
            return Poll::Ready(m);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::spawn_executor;
    use std::time::Duration;

    #[test]
    fn send_error_is_debug_and_error_without_m_debug() {
        struct Opaque;
        let e: SendError<Opaque> = SendError::Full(Opaque);
        assert_eq!(format!("{e:?}"), "Full(..)");
        assert_eq!(e.to_string(), "bus lane is full");
        let boxed: Box<dyn std::error::Error> = Box::new(SendError::Closed(Opaque));
        assert!(boxed.to_string().contains("closed"));
    }

    #[test]
    fn bus_is_send_sync_and_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        fn assert_send<T: Send>() {}
        struct NotClone;
        assert_send_sync::<BusSender<NotClone>>();
        assert_send::<Inbox<NotClone>>();
    }

    #[test]
    fn order_per_lane_and_control_priority() {
        let (tx, inboxes) = bus::<u32>(2, 16, 16);
        assert_eq!(tx.shards(), 2);
        assert_eq!(inboxes[1].shard(), 1);
        for i in 0..5 {
            tx.try_send_data(1, i).unwrap();
        }
        for i in 100..103 {
            tx.try_send_control(1, i).unwrap();
        }
        tx.try_send_data(1, 5).unwrap();
        assert_eq!(tx.data_len(1), 6);
        assert_eq!(tx.control_len(1), 3);
        assert_eq!(tx.data_len(0), 0);
        let got: Vec<Lane<u32>> = std::iter::from_fn(|| inboxes[1].try_recv()).collect();
        let want: Vec<Lane<u32>> = (100..103)
            .map(Lane::Control)
            .chain((0..6).map(Lane::Data))
            .collect();
        assert_eq!(got, want);
        assert!(inboxes[0].try_recv().is_none());
    }

    #[test]
    fn full_data_lane_and_separate_control_capacity() {
        let (tx, inboxes) = bus::<u32>(1, 3, 2);
        for i in 0..3 {
            tx.try_send_data(0, i).unwrap();
        }
        match tx.try_send_data(0, 3) {
            Err(SendError::Full(3)) => {}
            other => panic!("expected Full(3), got {other:?}"),
        }
        // A flooded data lane does not block control traffic.
        tx.try_send_control(0, 10).unwrap();
        tx.try_send_control(0, 11).unwrap();
        assert!(tx.try_send_control(0, 12).unwrap_err().is_full());
        assert_eq!(inboxes[0].try_recv(), Some(Lane::Control(10)));
        assert_eq!(inboxes[0].try_recv(), Some(Lane::Control(11)));
        assert_eq!(inboxes[0].try_recv(), Some(Lane::Data(0)));
        tx.try_send_data(0, 3).unwrap();
    }

    #[test]
    fn closed_when_inbox_dropped() {
        let (tx, mut inboxes) = bus::<u32>(2, 4, 4);
        drop(inboxes.pop());
        match tx.try_send_data(1, 7) {
            Err(SendError::Closed(7)) => {}
            other => panic!("expected Closed(7), got {other:?}"),
        }
        assert!(matches!(
            tx.try_send_control(1, 8),
            Err(SendError::Closed(8))
        ));
        tx.try_send_data(0, 1).unwrap();
    }

    #[test]
    fn recv_woken_from_plain_thread() {
        let (tx, mut inboxes) = bus::<u64>(1, 4, 4);
        let inbox = inboxes.pop().unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..100u64 {
                // Give the receiver time to park now and then.
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                let mut m = i;
                loop {
                    match tx.try_send_data(0, m) {
                        Ok(()) => break,
                        Err(e) => {
                            m = e.into_inner();
                            std::thread::yield_now();
                        }
                    }
                }
            }
            tx.try_send_control(0, u64::MAX).unwrap();
        });
        let ex = spawn_executor(move || async move {
            let mut next = 0;
            loop {
                match inbox.recv().await {
                    Lane::Data(m) => {
                        assert_eq!(m, next);
                        next += 1;
                    }
                    Lane::Control(m) => {
                        // Control overtakes data still queued: drain the rest.
                        assert_eq!(m, u64::MAX);
                        while let Some(Lane::Data(m)) = inbox.try_recv() {
                            assert_eq!(m, next);
                            next += 1;
                        }
                        break next;
                    }
                }
            }
        })
        .unwrap();
        sender.join().unwrap();
        assert_eq!(ex.join().unwrap(), 100);
    }

    /// Two executors ping-pong an integer through each other's inboxes 10,000 times: every hop
    /// needs a cross-thread wake of a parked task.
    #[test]
    fn ping_pong_between_two_executors() {
        const ROUNDS: u64 = 10_000;
        let (tx, inboxes) = bus::<u64>(2, 8, 8);
        let mut handles = Vec::new();
        for inbox in inboxes {
            let tx = tx.clone();
            let h = spawn_executor(move || async move {
                let me = inbox.shard();
                let peer = 1 - me;
                if me == 0 {
                    tx.try_send_data(peer, 0).unwrap();
                }
                let mut seen = 0;
                loop {
                    let n = inbox.recv().await.into_inner();
                    seen += 1;
                    if n == ROUNDS {
                        return seen;
                    }
                    // ROUNDS is the last value: whoever sends it is done.
                    tx.try_send_data(peer, n + 1).unwrap();
                    if n + 1 == ROUNDS {
                        return seen;
                    }
                }
            })
            .unwrap();
            handles.push(h);
        }
        drop(tx);
        let seen: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Values 0..=ROUNDS were each received once.
        assert_eq!(seen, ROUNDS + 1);
    }
}
