//! Tests of the fallback executor on its own: tasks, timers in deadline order, wake-ups from other
//! threads (while it blocks in epoll), stopping with tasks still waiting, blocking work, panics.
//! The shared tests of the crate (`SHARDS_TEST_RUNTIME=epoll`) run the sockets, the bus and the
//! shards on it as well.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::{self, spawn_thread, Runtime};

fn on_epoll<F, T>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_thread("fallback-test", Runtime::Epoll, f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn spawned_tasks_run_and_return_values() {
    let total = on_epoll(|| async {
        let tasks: Vec<_> = (0..100u64)
            .map(|i| rt::spawn(async move { i * 2 }))
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await;
        }
        // Detached tasks run too.
        let seen = Rc::new(RefCell::new(0));
        for _ in 0..10 {
            let seen = Rc::clone(&seen);
            rt::spawn(async move { *seen.borrow_mut() += 1 }).detach();
        }
        futures_lite::future::yield_now().await;
        futures_lite::future::yield_now().await;
        assert_eq!(*seen.borrow(), 10);
        total
    });
    assert_eq!(total, 9900);
}

#[test]
fn timers_fire_in_deadline_order_and_not_early() {
    let order = on_epoll(|| async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<_> = [50u64, 10, 30, 20, 40]
            .into_iter()
            .map(|ms| {
                let order = Rc::clone(&order);
                rt::spawn(async move {
                    rt::sleep(Duration::from_millis(ms)).await;
                    assert!(start.elapsed() >= Duration::from_millis(ms), "fired early");
                    order.borrow_mut().push(ms);
                })
            })
            .collect();
        // A timer dropped before its deadline never fires and does not keep the shard waiting.
        drop(rt::Timer::new(Duration::from_secs(3600)));
        for t in tasks {
            t.await;
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        let order = order.borrow().clone();
        order
    });
    assert_eq!(order, vec![10, 20, 30, 40, 50]);
}

/// A task parked on a channel is woken by another thread while the executor blocks in
/// `epoll_pwait2` with nothing else to do (no timer pending): 200 round trips.
#[test]
fn another_thread_wakes_a_parked_task() {
    let (to_shard, from_outside) = flume::bounded::<u32>(1);
    let (to_outside, from_shard) = flume::bounded::<u32>(1);
    let outside = std::thread::spawn(move || {
        for i in 0..200 {
            if i % 20 == 0 {
                // Let the shard fall asleep first now and then.
                std::thread::sleep(Duration::from_millis(5));
            }
            to_shard.send(i).unwrap();
            assert_eq!(from_shard.recv().unwrap(), i + 1);
        }
    });
    on_epoll(move || async move {
        while let Ok(i) = from_outside.recv_async().await {
            to_outside.send_async(i + 1).await.unwrap();
        }
    });
    outside.join().unwrap();
}

/// The root future ends while tasks still wait (on a timer, on a channel nobody sends to): the
/// executor returns, and their futures are dropped on the shard's thread.
#[test]
fn ending_drops_the_waiting_tasks() {
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let (_keep, never) = flume::bounded::<()>(1);
    let d = Arc::clone(&dropped);
    on_epoll(move || async move {
        let guard = Dropped(Arc::clone(&d));
        rt::spawn(async move {
            let _guard = guard;
            rt::sleep(Duration::from_secs(3600)).await;
        })
        .detach();
        let guard = Dropped(d);
        rt::spawn(async move {
            let _guard = guard;
            let _ = never.recv_async().await;
        })
        .detach();
        rt::sleep(Duration::from_millis(10)).await;
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

#[test]
fn blocking_work_runs_off_the_shard() {
    let (shard, helper) = on_epoll(|| async {
        let shard = std::thread::current().id();
        // The shard keeps running tasks while the helper blocks.
        let ticks = Rc::new(RefCell::new(0));
        let ticker = rt::spawn({
            let ticks = Rc::clone(&ticks);
            async move {
                for _ in 0..5 {
                    rt::sleep(Duration::from_millis(5)).await;
                    *ticks.borrow_mut() += 1;
                }
            }
        });
        let helper = rt::spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(50));
            std::thread::current().id()
        })
        .await;
        assert!(
            *ticks.borrow() >= 3,
            "the shard ran while the helper blocked"
        );
        ticker.await;
        (shard, helper)
    });
    assert_ne!(shard, helper);
}

#[test]
fn a_panicking_blocking_job_panics_the_awaiting_task() {
    let joined = spawn_thread("fallback-test", Runtime::Epoll, || async {
        rt::spawn_blocking(|| panic!("boom")).await;
    })
    .unwrap()
    .join();
    assert!(joined.is_err());
}

#[test]
fn need_preempt_after_the_turn_budget() {
    on_epoll(|| async {
        futures_lite::future::yield_now().await;
        assert!(!rt::need_preempt(), "a fresh turn");
        let start = Instant::now();
        while !rt::need_preempt() {
            assert!(start.elapsed() < Duration::from_secs(1));
        }
        rt::yield_if_needed().await;
        assert!(!rt::need_preempt(), "a new turn after yielding");
    });
}
