//! Tests of the shard runtime: stopping (from outside and from a shard, with many waiters), a
//! panicking shard, pinned shards on their CPUs and a clear error when there are too few, and
//! unpinned threads kept in the process's CPU mask. This crate knows no MQTT.

use super::*;
use crate::cpus::thread_cpus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn unpinned(shards: usize, name: &str) -> ShardConfig {
    ShardConfig {
        shards,
        pin: false,
        name: name.to_string(),
        runtime: crate::test_util::runtime(),
        ..ShardConfig::default()
    }
}

#[test]
fn stop_wakes_many_waiters_and_join_returns() {
    let woken = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&woken);
    let shards = Shards::start(unpinned(2, "stopjoin"), move |ctx| {
        let woken = Arc::clone(&w);
        async move {
            assert!(!ctx.is_control());
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let (ctx, woken) = (ctx.clone(), Arc::clone(&woken));
                tasks.push(crate::rt::spawn(async move {
                    ctx.stopped().await;
                    woken.fetch_add(1, Ordering::SeqCst);
                }));
            }
            ctx.stopped().await;
            assert!(ctx.is_stopping());
            for t in tasks {
                t.await;
            }
        }
    })
    .unwrap();
    assert_eq!(shards.shards(), 2);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(woken.load(Ordering::SeqCst), 0);
    let handle = shards.stop_handle();
    std::thread::spawn(move || handle.stop()).join().unwrap();
    shards.join().unwrap();
    assert_eq!(woken.load(Ordering::SeqCst), 200);
}

#[test]
fn control_shard_and_stop_from_a_shard() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut shards = Shards::start(unpinned(2, "ctl"), move |ctx| {
        let seen = Arc::clone(&s);
        async move {
            seen.lock().unwrap().push((ctx.id, ctx.is_control()));
            ctx.stopped().await;
        }
    })
    .unwrap();
    let s = Arc::clone(&seen);
    shards
        .start_control(move |ctx| async move {
            s.lock().unwrap().push((ctx.id, ctx.is_control()));
            assert_eq!(ctx.cpu, None);
            // The control shard decides to stop everything.
            crate::rt::sleep(Duration::from_millis(10)).await;
            ctx.stop_handle().stop();
            ctx.stopped().await;
        })
        .unwrap();
    assert!(matches!(
        shards.start_control(|_ctx| async {}),
        Err(ShardError::ControlAlreadyStarted)
    ));
    shards.join().unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![(0, false), (1, false), (2, true)]);
}

#[test]
fn panicking_shard_is_reported_and_stops_the_others() {
    let shards = Shards::start(unpinned(2, "panic"), |ctx| async move {
        if ctx.id == 1 {
            crate::rt::sleep(Duration::from_millis(5)).await;
            panic!("boom on shard 1");
        }
        ctx.stopped().await;
    })
    .unwrap();
    // No stop() here: shard 1's panic must stop shard 0.
    match shards.join() {
        Err(ShardError::Panicked { shard, message }) => {
            assert_eq!(shard, "shard 1");
            assert!(message.contains("boom on shard 1"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn too_many_pinned_shards_is_a_clear_error() {
    let cpus = available_cpus().unwrap();
    let config = ShardConfig {
        shards: cpus.len() + 1,
        pin: true,
        ..ShardConfig::default()
    };
    let err = Shards::start(config, |_ctx| async {}).unwrap_err();
    assert!(
        matches!(err, ShardError::TooManyPinnedShards { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot pin {} shards", cpus.len() + 1)),
        "{msg}"
    );
    assert!(msg.contains("disable pinning"), "{msg}");
    let zero = ShardConfig {
        shards: 0,
        ..ShardConfig::default()
    };
    assert!(matches!(
        Shards::start(zero, |_ctx| async {}),
        Err(ShardError::NoShards)
    ));
}

#[test]
fn pinned_shards_run_on_their_cpu() {
    let cpus = available_cpus().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    let config = ShardConfig {
        shards: cpus.len(),
        pin: true,
        name: "pinned".to_string(),
        ..ShardConfig::default()
    };
    let shards = Shards::start(config, move |ctx| {
        let g = Arc::clone(&g);
        async move {
            g.lock()
                .unwrap()
                .push((ctx.id, ctx.cpu, thread_cpus().unwrap()));
        }
    })
    .unwrap();
    shards.join().unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort();
    let want: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(i, &c)| (i, Some(c), vec![c]))
        .collect();
    assert_eq!(got, want);
}

/// Child process of `unpinned_threads_stay_in_the_taskset_mask`: run under `taskset -c N`.
#[test]
#[ignore = "child process of unpinned_threads_stay_in_the_taskset_mask"]
fn child_unpinned_threads_stay_in_mask() {
    let mask = available_cpus().unwrap();
    println!("MASK={mask:?}");
    // Pinning more shards than the mask allows is refused even though the machine has more.
    let err = Shards::start(
        ShardConfig {
            shards: mask.len() + 1,
            pin: true,
            ..ShardConfig::default()
        },
        |_ctx| async {},
    )
    .unwrap_err();
    assert!(matches!(err, ShardError::TooManyPinnedShards { .. }));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut shards = Shards::start(
        ShardConfig {
            shards: 2,
            pin: false,
            spin_before_park: Some(Duration::from_micros(10)),
            name: "fence".to_string(),
            ..ShardConfig::default()
        },
        move |ctx| {
            let s = Arc::clone(&s);
            async move {
                s.lock().unwrap().push(thread_cpus().unwrap());
                ctx.stopped().await;
            }
        },
    )
    .unwrap();
    let s = Arc::clone(&seen);
    shards
        .start_control(move |ctx| async move {
            s.lock().unwrap().push(thread_cpus().unwrap());
            ctx.stopped().await;
        })
        .unwrap();
    while seen.lock().unwrap().len() < 3 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Every thread of the process, glommio's helpers included.
    let mut threads = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let status = std::fs::read_to_string(entry.unwrap().path().join("status")).unwrap();
        let name = status.lines().next().unwrap().to_string();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let cpus = crate::test_util::parse_cpu_list(list);
        assert!(
            cpus.iter().all(|c| mask.contains(c)),
            "thread {name} may run on {cpus:?}, outside {mask:?}"
        );
        threads += 1;
    }
    shards.stop();
    shards.join().unwrap();
    for cpus in seen.lock().unwrap().iter() {
        assert_eq!(cpus, &mask);
    }
    println!("THREADS_OK={threads}");
}

#[test]
fn unpinned_threads_stay_in_the_taskset_mask() {
    let cpus = available_cpus().unwrap();
    let last = *cpus.last().unwrap();
    let Some(out) = crate::test_util::run_child_under_taskset(
        &last.to_string(),
        "runtime::tests::child_unpinned_threads_stay_in_mask",
    ) else {
        return;
    };
    assert!(out.contains(&format!("MASK=[{last}]")), "child said: {out}");
    assert!(out.contains("THREADS_OK="), "child said: {out}");
}
