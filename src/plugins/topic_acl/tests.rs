//! Unit tests of `topic_acl`: subscription coverage, which table governs publishing, subscribing
//! and receiving, per-user entries, `%u`/`%c`, and errors for invalid entries.

use super::*;
use crate::protocol::TopicName;

type Table = BTreeMap<String, Vec<String>>;

fn name(s: &str) -> TopicName {
    TopicName::new(s).expect("topic name")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("filter")
}

fn covers(allowed: &str, requested: &str) -> bool {
    filter_covers(&filter(allowed), &filter(requested))
}

fn table(entries: &[(&str, &[&str])]) -> Table {
    entries
        .iter()
        .map(|(user, list)| {
            (
                user.to_string(),
                list.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

/// The plugin built from `(key, table)` pairs, keys as in the configuration.
fn acl_of(tables: &[(&str, &Table)]) -> Result<TopicAcl, AclEntryError> {
    let mut t = AclTables::default();
    for &(key, table) in tables {
        match key {
            "acl" => t.acl = Some(table),
            "publish-acl" => t.publish_acl = Some(table),
            "subscribe-acl" => t.subscribe_acl = Some(table),
            "receive-acl" => t.receive_acl = Some(table),
            other => panic!("no table {other}"),
        }
    }
    TopicAcl::new(t)
}

fn plugin(tables: &[(&str, &Table)]) -> TopicAcl {
    acl_of(tables).expect("acl")
}

const ALICE: ClientInfo<'static> = ClientInfo {
    client_id: "alice-phone",
    username: Some("alice"),
};
const ANON: ClientInfo<'static> = ClientInfo {
    client_id: "anon-1",
    username: None,
};

fn may_subscribe(acl: &TopicAcl, client: &ClientInfo<'_>, f: &str) -> bool {
    acl.allow(client, TopicAction::Subscribe(&filter(f)))
}

fn may_publish(acl: &TopicAcl, client: &ClientInfo<'_>, t: &str) -> bool {
    acl.allow(client, TopicAction::Publish(&name(t)))
}

fn may_receive(acl: &TopicAcl, client: &ClientInfo<'_>, t: &str) -> bool {
    acl.allow(client, TopicAction::Receive(&name(t)))
}

#[test]
fn coverage_follows_topic_matching() {
    assert!(covers("a/b", "a/b"));
    assert!(covers("a/+", "a/b"));
    assert!(covers("a/+", "a/+"));
    assert!(
        !covers("a/+", "a/#"),
        "a/# reaches a/b/c, which a/+ does not allow"
    );
    assert!(!covers("a/+", "a/b/c"));
    assert!(!covers("a/+", "a"));
    assert!(covers("a/#", "a"), "a/# matches its parent");
    assert!(covers("a/#", "a/#"));
    assert!(covers("a/#", "a/+/c"));
    assert!(covers("a/#", "a/b/#"));
    assert!(!covers("a/#", "b/#"));
    assert!(
        !covers("a/+/#", "a/#"),
        "a/# matches a, which a/+/# does not"
    );
    assert!(covers("#", "a/b"));
    assert!(covers("#", "#"));
    assert!(covers("+/+", "+/b"));
    assert!(!covers("a/b", "a/+"));
    assert!(!covers("a/b", "a/b/c"));
    assert!(!covers("a/b/c", "a/b"));
}

#[test]
fn wildcards_do_not_cover_dollar_topics() {
    assert!(!covers("#", "$SYS/#"));
    assert!(!covers("+/broker", "$SYS/broker"));
    assert!(covers("$SYS/#", "$SYS/broker/uptime"));
    // A wildcard first level of the request cannot reach `$` topics either.
    assert!(covers("#", "+/x"));
}

#[test]
fn acl_alone_governs_publishing_and_subscribing() {
    let t = table(&[
        ("alice", &["alice/#", "chat/+"]),
        ("anonymous", &["public/#"]),
        ("bob", &[]),
    ]);
    let acl = plugin(&[("acl", &t)]);
    assert!(may_subscribe(&acl, &ALICE, "alice/#"));
    assert!(may_subscribe(&acl, &ALICE, "chat/room1"));
    assert!(!may_subscribe(&acl, &ALICE, "chat/#"));
    assert!(!may_subscribe(&acl, &ALICE, "#"));
    assert!(!may_subscribe(&acl, &ALICE, "public/x"));
    // Publishing follows the same lists (aMQTT's code would allow all of these).
    assert!(may_publish(&acl, &ALICE, "alice/x"));
    assert!(may_publish(&acl, &ALICE, "alice"));
    assert!(may_publish(&acl, &ALICE, "chat/room1"));
    assert!(!may_publish(&acl, &ALICE, "bob/x"));
    assert!(!may_publish(&acl, &ALICE, "chat/room1/deeper"));
    assert!(may_publish(&acl, &ANON, "public/x"));
    assert!(!may_publish(&acl, &ANON, "alice/x"));
    let bob = ClientInfo {
        client_id: "b",
        username: Some("bob"),
    };
    assert!(
        !may_subscribe(&acl, &bob, "public/x"),
        "empty list: nothing"
    );
    assert!(!may_publish(&acl, &bob, "public/x"), "empty list: nothing");
    let carol = ClientInfo {
        client_id: "c",
        username: Some("carol"),
    };
    assert!(
        !may_subscribe(&acl, &carol, "public/x"),
        "unlisted: nothing"
    );
    assert!(!may_publish(&acl, &carol, "anything"), "unlisted: nothing");
    // No receive-acl: whatever a subscription matches is delivered.
    assert!(!acl.checks_receive());
    assert!(may_receive(&acl, &carol, "anything"));
    assert_eq!(
        acl.describe(),
        "publish governed by 'acl' (no publish-acl), subscribe by 'acl', receive unrestricted"
    );
}

#[test]
fn publish_acl_replaces_acl_for_publishing_only() {
    let subscribing = table(&[("alice", &["sensors/#"])]);
    let publishing = table(&[("alice", &["sensors/alice/+", "$SYS/x"])]);
    let acl = plugin(&[("acl", &subscribing), ("publish-acl", &publishing)]);
    assert!(may_publish(&acl, &ALICE, "sensors/alice/temp"));
    assert!(
        !may_publish(&acl, &ALICE, "sensors/bob/temp"),
        "acl allows it, publish-acl does not: publish-acl decides"
    );
    assert!(!may_publish(&acl, &ALICE, "sensors/alice/temp/raw"));
    assert!(may_publish(&acl, &ALICE, "$SYS/x"));
    assert!(!may_publish(&acl, &ANON, "sensors/alice/temp"));
    assert!(may_subscribe(&acl, &ALICE, "sensors/bob/temp"));
    assert!(!may_subscribe(&acl, &ALICE, "$SYS/x"));
    assert_eq!(
        acl.describe(),
        "publish governed by 'publish-acl', subscribe by 'acl', receive unrestricted"
    );
}

#[test]
fn publish_acl_alone_leaves_subscribing_open() {
    let acl = plugin(&[("publish-acl", &table(&[("alice", &["a/#"])]))]);
    assert!(may_subscribe(&acl, &ANON, "#"));
    assert!(!may_publish(&acl, &ANON, "a/b"));
    assert!(may_publish(&acl, &ALICE, "a/b"));
}

#[test]
fn subscribe_acl_replaces_acl_for_subscribing_only() {
    let both = table(&[("alice", &["alice/#"])]);
    let subscribing = table(&[("alice", &["news/#"])]);
    let acl = plugin(&[("acl", &both), ("subscribe-acl", &subscribing)]);
    assert!(may_subscribe(&acl, &ALICE, "news/today"));
    assert!(
        !may_subscribe(&acl, &ALICE, "alice/x"),
        "subscribe-acl decides"
    );
    assert!(
        may_publish(&acl, &ALICE, "alice/x"),
        "acl still governs publishing"
    );
    assert!(!may_publish(&acl, &ALICE, "news/today"));
    assert_eq!(
        acl.describe(),
        "publish governed by 'acl' (no publish-acl), subscribe by 'subscribe-acl', receive unrestricted"
    );
    // Alone, subscribe-acl restricts nothing else.
    let acl = plugin(&[("subscribe-acl", &subscribing)]);
    assert!(may_publish(&acl, &ANON, "anything"));
    assert!(!may_subscribe(&acl, &ANON, "news/#"));
    assert_eq!(
        acl.describe(),
        "publish unrestricted (neither publish-acl nor acl), subscribe by 'subscribe-acl', receive unrestricted"
    );
}

#[test]
fn receive_acl_limits_deliveries_per_user() {
    let receiving = table(&[
        ("alice", &["sensors/#", "users/%u/#"]),
        ("anonymous", &["public/+"]),
    ]);
    let acl = plugin(&[("receive-acl", &receiving)]);
    assert!(acl.checks_receive());
    assert!(may_receive(&acl, &ALICE, "sensors/kitchen/temp"));
    assert!(may_receive(&acl, &ALICE, "users/alice/inbox"));
    assert!(!may_receive(&acl, &ALICE, "users/bob/inbox"));
    assert!(!may_receive(&acl, &ALICE, "secret/x"));
    assert!(!may_receive(&acl, &ALICE, "$SYS/broker/uptime"));
    assert!(may_receive(&acl, &ANON, "public/x"));
    assert!(!may_receive(&acl, &ANON, "public/x/y"));
    let carol = ClientInfo {
        client_id: "c",
        username: Some("carol"),
    };
    assert!(!may_receive(&acl, &carol, "public/x"), "unlisted: nothing");
    // receive-acl alone leaves publishing and subscribing open: a subscriber on `#` is allowed,
    // and receives only what its list matches.
    assert!(may_subscribe(&acl, &ALICE, "#"));
    assert!(may_publish(&acl, &ALICE, "secret/x"));
    assert_eq!(
        acl.describe(),
        "publish unrestricted (neither publish-acl nor acl), subscribe unrestricted, receive by 'receive-acl'"
    );
}

#[test]
fn hash_entries_do_not_reach_dollar_topics() {
    let acl = plugin(&[("publish-acl", &table(&[("alice", &["#"])]))]);
    assert!(may_publish(&acl, &ALICE, "a/b"));
    assert!(!may_publish(&acl, &ALICE, "$SYS/broker/uptime"));
}

#[test]
fn user_and_client_id_placeholders() {
    let t = table(&[
        ("alice", &["users/%u/#", "clients/%c/+"]),
        ("anonymous", &["users/%u/#", "clients/%c/in"]),
    ]);
    let acl = plugin(&[("acl", &t), ("receive-acl", &t)]);
    assert!(may_subscribe(&acl, &ALICE, "users/alice/inbox"));
    assert!(!may_subscribe(&acl, &ALICE, "users/bob/inbox"));
    assert!(may_subscribe(&acl, &ALICE, "clients/alice-phone/in"));
    assert!(!may_subscribe(&acl, &ALICE, "clients/other/in"));
    assert!(may_publish(&acl, &ALICE, "users/alice/outbox"));
    assert!(!may_publish(&acl, &ALICE, "users/bob/outbox"));
    assert!(may_publish(&acl, &ALICE, "clients/alice-phone/status"));
    assert!(may_receive(&acl, &ALICE, "clients/alice-phone/cmd"));
    assert!(!may_receive(&acl, &ALICE, "clients/bob-phone/cmd"));
    // %u never matches an anonymous client; %c still does.
    assert!(!may_subscribe(&acl, &ANON, "users/anonymous/inbox"));
    assert!(!may_publish(&acl, &ANON, "users/anonymous/inbox"));
    assert!(may_subscribe(&acl, &ANON, "clients/anon-1/in"));
    assert!(may_receive(&acl, &ANON, "clients/anon-1/in"));
    // Values that would widen the entry make it inapplicable.
    let sneaky = ClientInfo {
        client_id: "#",
        username: Some("alice"),
    };
    assert!(!may_subscribe(&acl, &sneaky, "clients/#"));
    assert!(!may_receive(&acl, &sneaky, "clients/x/y"));
    let slashy = ClientInfo {
        client_id: "x",
        username: Some("alice/../bob"),
    };
    let acl2 = plugin(&[("acl", &table(&[("alice/../bob", &["users/%u/#"])]))]);
    assert!(!may_subscribe(&acl2, &slashy, "users/alice/../bob/x"));
    assert!(!may_publish(&acl2, &slashy, "users/alice/../bob/x"));
}

#[test]
fn invalid_entries_are_reported_with_their_place() {
    let bad = table(&[("alice", &["ok/+", "bad/#/more"])]);
    for key in ["acl", "publish-acl", "subscribe-acl", "receive-acl"] {
        let error = acl_of(&[(key, &bad)]).expect_err("invalid");
        assert_eq!(
            (error.table, error.user.as_str(), error.index),
            (key, "alice", 1)
        );
        assert!(error.reason.contains("bad/#/more"), "{}", error.reason);
    }
    let error = acl_of(&[("acl", &table(&[("bob", &["a+%u/y"])]))]).expect_err("invalid");
    assert_eq!((error.table, error.index), ("acl", 0));
}

#[test]
fn no_table_allows_everything() {
    let acl = plugin(&[]);
    assert!(acl.is_unrestricted());
    assert!(may_publish(&acl, &ANON, "a"));
    assert!(may_subscribe(&acl, &ANON, "#"));
    assert!(!acl.checks_receive());
}
