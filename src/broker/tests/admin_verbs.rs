//! What an administrator does to a session (`admin_verbs.rs`): kick its client (will published,
//! persistent session kept offline) and delete it (subscriptions gone on every shard).

use super::*;

/// `client_id`'s session on its home shard: whether it has one, and whether it is connected.
fn session(c: &Cluster, client_id: &str) -> Option<SessionInfo> {
    let home = home_shard(client_id, c.shards.len());
    c.shards[home]
        .list_sessions(0, usize::MAX / 2)
        .sessions
        .into_iter()
        .find(|s| s.client_id == client_id)
}

#[test]
fn a_kicked_client_is_closed_its_will_published_and_its_session_kept() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&b, true);
    c.subscribe(&b, &[("will/#", QoS::AtMostOnce)]);
    let connect = Cluster::with_will(
        Cluster::connect_packet(&a, false),
        "will/a",
        "gone",
        QoS::AtMostOnce,
    );
    c.connect_with(&a, connect);
    c.packets(&b);
    let home = home_shard(&a, 2);
    assert!(
        !c.shards[1 - home].kick_client(&a),
        "not on the other shard"
    );
    assert!(c.shards[home].kick_client(&a));
    c.run();
    assert!(c.client(&a).closed, "the kicked connection is closed");
    assert_eq!(c.payloads(&b), ["gone"], "its will is published");
    assert!(
        session(&c, &a).is_some_and(|s| !s.connected),
        "persistent: kept offline"
    );
    assert!(
        !c.shards[home].kick_client(&a),
        "no connection to kick any more"
    );
    assert!(!c.shards[home].kick_client("nobody"));
}

#[test]
fn a_deleted_session_loses_its_subscriptions_everywhere() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&a, false);
    c.subscribe(&a, &[("t/#", QoS::AtLeastOnce)]);
    c.connect(&b, true);
    let home = home_shard(&a, 2);
    assert!(c.shards[home].delete_session(&a));
    c.run();
    assert!(c.client(&a).closed && session(&c, &a).is_none());
    assert!(!c.shards[home].delete_session(&a), "already gone");
    // A publish from the other shard finds nobody: no queue for the deleted session.
    c.publish(&b, "t/x", "m", QoS::AtLeastOnce, false, 1);
    c.connect(&a, false);
    assert!(
        c.publishes(&a).is_empty(),
        "nothing queued, a fresh session"
    );
    let fresh = session(&c, &a).expect("a new session");
    assert!(fresh.subscriptions.is_empty() && fresh.connected);
}

#[test]
fn a_reload_closes_removed_users_only_and_caps_later_subscriptions() {
    let mut c = Cluster::new(1);
    for (client_id, user) in [("a", "alice"), ("b", "bob")] {
        let mut connect = Cluster::connect_packet(client_id, true);
        connect.username = Some(user.to_string());
        c.connect_with(client_id, connect);
    }
    let reload = CoreReload {
        plugins: None,
        allow_anonymous: true,
        max_qos: QoS::AtMostOnce,
        max_queued_messages: 10,
        max_queued_bytes: None,
        disconnect_users: ["alice".to_string()].into(),
    };
    assert_eq!(c.shards[0].reload(&reload), ["a"]);
    c.run();
    assert!(c.client("a").closed, "alice was removed");
    assert!(!c.client("b").closed, "bob stays");
    c.subscribe("b", &[("t", QoS::ExactlyOnce)]);
    assert!(
        session(&c, "b").is_some_and(|s| s.subscriptions == [("t".to_string(), QoS::AtMostOnce)]),
        "the new max_qos caps the next SUBSCRIBE"
    );
    assert_eq!(c.shards[0].settings().max_queued_messages, 10);
}
