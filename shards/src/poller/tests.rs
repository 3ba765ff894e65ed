//! Unit tests of `poller.rs` (the parent module).

use super::*;
use crate::test_util::run_glommio as run;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The probe behind the brief wait relies on how glommio 0.9 counts executed tasks: it must
/// see a task that is ready to run, and see none when there is none.
#[test]
fn only_task_runnable_sees_other_ready_tasks() {
    run(|| async {
        assert!(only_task_runnable().await, "alone on the executor");
        let stop = Rc::new(Cell::new(false));
        let busy = glommio::spawn_local({
            let stop = Rc::clone(&stop);
            async move {
                while !stop.get() {
                    futures_lite::future::yield_now().await;
                }
            }
        });
        futures_lite::future::yield_now().await;
        assert!(!only_task_runnable().await, "another task keeps yielding");
        stop.set(true);
        busy.await;
        assert!(only_task_runnable().await, "alone again");
    });
}

/// A wake-up from another thread runs the registered local wake-up on the shard's thread:
/// at once when one is pending before a brief wait (which then does not block), and by ending
/// the wait when it comes while the shard blocks. (A poller of its own, without a drive task
/// that would take the events.)
#[test]
fn another_thread_ends_a_brief_wait() {
    let poller = Poller::new(0).unwrap();
    let remote = Arc::clone(&poller.remote);
    let woken = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&woken);
    remote.register(Arc::new(move || {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);

    // Pending before the wait: no blocking, the wake-up runs, counted as an event.
    remote.wake();
    let t0 = Instant::now();
    assert_eq!(poller.dispatch_briefly(&mut events).unwrap(), 1);
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    assert!(t0.elapsed() < BRIEF_WAIT, "did not block");

    // Nothing pending: the wait lasts its whole time and reports nothing.
    let t0 = Instant::now();
    assert_eq!(poller.dispatch_briefly(&mut events).unwrap(), 0);
    assert!(t0.elapsed() >= BRIEF_WAIT);

    // From another thread while the shard blocks: the wait ends with the wake-up.
    let notifier = std::thread::spawn({
        let remote = Arc::clone(&remote);
        move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !remote.is_asleep() && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            remote.wake();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = 0;
    while found == 0 && Instant::now() < deadline {
        found = poller.dispatch_briefly(&mut events).unwrap();
    }
    notifier.join().unwrap();
    assert!(found >= 1, "the wait ended with an event");
    assert_eq!(
        woken.load(Ordering::SeqCst),
        2,
        "the second wake-up ran once"
    );
    assert!(!remote.is_asleep());
}
