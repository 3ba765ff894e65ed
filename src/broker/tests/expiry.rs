//! Session expiry (`session_expiry_interval`): an offline persistent session is discarded once its
//! client has been away for the interval, not before; a resume resets the clock; the discard takes
//! the queue's memory, the subscriptions and the other shards' interest with it and is counted;
//! clean sessions and the default (no interval) are unaffected; the tick stays cheap with 100k
//! offline sessions.

use std::time::Duration;

use super::*;
use crate::broker::memory::MemoryBudget;

const INTERVAL: Duration = Duration::from_secs(10);

fn expiring(shards: usize) -> Cluster {
    Cluster::with_settings(
        shards,
        Settings {
            session_expiry_interval: Some(INTERVAL),
            ..Settings::default()
        },
    )
}

fn sessions(c: &Cluster) -> usize {
    c.shards.iter().map(|s| s.session_count()).sum()
}

fn expired(c: &Cluster) -> u64 {
    c.shards.iter().map(|s| s.stats.sessions_expired).sum()
}

/// `name` connects persistently, subscribes to `q` at QoS 1 and goes away.
fn subscribe_and_leave(c: &mut Cluster, name: &str) {
    c.connect(name, false);
    c.subscribe(name, &[("q", QoS::AtLeastOnce)]);
    c.drop_connection(name);
}

/// As [`subscribe_and_leave`], then the client `pub` publishes `payload` to `q` at QoS 1.
fn leave_with_one_queued(c: &mut Cluster, name: &str, payload: &str) {
    subscribe_and_leave(c, name);
    c.connect("pub", true);
    c.publish("pub", "q", payload, QoS::AtLeastOnce, false, 1);
}

#[test]
fn offline_session_expires_after_the_interval_and_not_before() {
    let mut c = expiring(2);
    leave_with_one_queued(&mut c, "sub", "kept");

    c.advance(INTERVAL - Duration::from_millis(1));
    assert_eq!(sessions(&c), 2, "still within the interval");
    assert_eq!(expired(&c), 0);
    c.advance(Duration::from_millis(1));
    assert_eq!(sessions(&c), 1, "only the publisher's session is left");
    assert_eq!(expired(&c), 1);

    let outcome = c.connect("sub", false);
    assert!(!outcome.session_present);
    c.publish("pub", "q", "new", QoS::AtLeastOnce, false, 2);
    assert!(
        c.publishes("sub").is_empty(),
        "neither the queued message nor the subscription survived"
    );
}

#[test]
fn resume_before_expiry_keeps_the_session_and_restarts_the_clock() {
    let mut c = expiring(1);
    leave_with_one_queued(&mut c, "sub", "1");
    c.advance(INTERVAL - Duration::from_secs(2));

    assert!(c.connect("sub", false).session_present);
    assert_eq!(c.payloads("sub"), ["1"]);
    assert_eq!(c.shards[0].expiring_session_count(), 0, "online: not filed");
    c.drop_connection("sub");

    // Past the first deadline, within the second.
    c.advance(INTERVAL - Duration::from_secs(1));
    assert_eq!(expired(&c), 0);
    assert!(c.connect("sub", false).session_present);
    c.drop_connection("sub");
    c.advance(INTERVAL);
    assert_eq!(expired(&c), 1);
    assert!(!c.connect("sub", false).session_present);
}

#[test]
fn expiry_releases_queue_memory_subscriptions_and_remote_interest() {
    let (a, b) = ids_on_distinct_shards();
    let budget = MemoryBudget::new(Some(1 << 20));
    let mut c = Cluster::with_settings(
        2,
        Settings {
            session_expiry_interval: Some(INTERVAL),
            memory: budget.clone(),
            ..Settings::default()
        },
    );
    subscribe_and_leave(&mut c, &b);
    c.connect(&a, true);
    for i in 0..5 {
        c.publish(&a, "q", "0123456789", QoS::AtLeastOnce, false, i + 1);
    }
    assert_eq!(budget.used(), 50, "queued for the offline session");
    let a_shard = home_shard(&a, 2);
    assert!(c.shards[a_shard]
        .remote_interest
        .iter()
        .any(|t| !t.is_empty()));

    c.advance(INTERVAL);
    assert_eq!(expired(&c), 1);
    assert_eq!(budget.used(), 0, "the queue's payloads were given back");
    assert_eq!(c.shards.iter().map(|s| s.queued_count()).sum::<usize>(), 0);
    assert_eq!(
        c.shards
            .iter()
            .map(|s| s.subscription_count())
            .sum::<usize>(),
        0
    );
    assert!(
        c.shards[a_shard]
            .remote_interest
            .iter()
            .all(|t| t.is_empty()),
        "the publisher's shard no longer routes 'q' to the expired session's shard"
    );
}

#[test]
fn online_and_clean_sessions_do_not_expire() {
    let mut c = expiring(1);
    c.connect("online", false);
    c.subscribe("online", &[("q", QoS::AtMostOnce)]);
    c.connect("clean", true);
    c.subscribe("clean", &[("q", QoS::AtMostOnce)]);
    c.packets("online");
    c.packets("clean");
    c.advance(INTERVAL * 3);
    assert_eq!(expired(&c), 0);
    assert_eq!(sessions(&c), 2);
    c.connect("pub", true);
    c.publish("pub", "q", "still here", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads("online"), ["still here"]);
    assert_eq!(c.payloads("clean"), ["still here"]);
}

#[test]
fn without_an_interval_sessions_never_expire() {
    let mut c = Cluster::new(1);
    subscribe_and_leave(&mut c, "sub");
    assert_eq!(c.shards[0].expiring_session_count(), 0);
    c.advance(Duration::from_secs(10 * 365 * 86_400));
    assert_eq!(expired(&c), 0);
    assert!(c.connect("sub", false).session_present);
}

#[test]
fn zero_interval_discards_the_session_at_the_next_tick_or_connect() {
    let mut c = Cluster::with_settings(
        1,
        Settings {
            session_expiry_interval: Some(Duration::ZERO),
            ..Settings::default()
        },
    );
    subscribe_and_leave(&mut c, "sub");
    // Past its expiry: a CONNECT before the tick finds it gone too.
    assert!(!c.connect("sub", false).session_present);
    assert_eq!(expired(&c), 1);
    c.drop_connection("sub");
    c.advance(Duration::from_millis(250));
    assert_eq!(expired(&c), 2);
    assert!(!c.connect("sub", false).session_present);
}

#[test]
fn clean_takeover_of_an_offline_session_unfiles_it() {
    let mut c = expiring(1);
    subscribe_and_leave(&mut c, "sub");
    assert_eq!(c.shards[0].expiring_session_count(), 1);
    c.advance(INTERVAL / 2);
    assert!(!c.connect("sub", true).session_present);
    assert_eq!(c.shards[0].expiring_session_count(), 0);
    // The next session reuses the slab slot: the old deadline must not reach it.
    c.drop_connection("sub");
    subscribe_and_leave(&mut c, "other");
    c.advance(INTERVAL - Duration::from_secs(1));
    assert_eq!(expired(&c), 0);
    c.advance(Duration::from_secs(1));
    assert_eq!(expired(&c), 1);
}

#[test]
fn set_offline_since_files_a_recovered_session_under_its_old_stamp() {
    let mut c = expiring(1);
    subscribe_and_leave(&mut c, "sub");
    let key = c.shards[0].session_by_client_id["sub"];
    // Recovery: the client left long before this run started.
    let long_ago = c.now.checked_sub(INTERVAL * 2).expect("test clock");
    c.shards[0].set_offline_since(key, Some(long_ago));
    assert_eq!(
        c.shards[0].expiring_session_count(),
        1,
        "re-filed, not doubled"
    );
    c.advance(Duration::from_millis(250));
    assert_eq!(expired(&c), 1);
}

#[test]
fn tick_with_100k_offline_sessions() {
    const N: usize = 100_000;
    let mut c = expiring(1);
    for i in 0..N {
        let id = format!("s{i}");
        c.connect(&id, false);
        c.drop_connection(&id);
        c.clients.remove(&id);
    }
    let core = &mut c.shards[0];
    assert_eq!(core.expiring_session_count(), N);

    // A second before the deadline: the expiry pass looks at one entry.
    let now = c.now + INTERVAL - Duration::from_secs(1);
    let started = Instant::now();
    core.expire_sessions(now);
    let pass = started.elapsed();
    let started = Instant::now();
    core.handle_tick(now);
    let tick = started.elapsed();
    assert_eq!(core.session_count(), N);

    // All due at once: discarded over a few ticks, each of them short.
    let mut ticks = 0;
    let mut longest = Duration::ZERO;
    while core.session_count() > 0 && ticks < 100 {
        let started = Instant::now();
        core.handle_tick(now + Duration::from_secs(1));
        longest = longest.max(started.elapsed());
        ticks += 1;
        assert_eq!(core.stats.sessions_expired, (ticks * 10_000).min(N) as u64);
    }
    assert_eq!(core.session_count(), 0);
    assert_eq!(ticks, 10);
    eprintln!(
        "{N} offline sessions: expiry pass with none due {pass:?}, whole tick {tick:?}; \
         all due: discarded in {ticks} ticks, the longest {longest:?}"
    );
    assert!(
        pass < Duration::from_millis(1),
        "nothing due must not cost a scan: {pass:?}"
    );
}
