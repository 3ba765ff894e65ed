//! Authentication verdicts, topic checks and event plugins: a denied login, the topic ACL on
//! SUBSCRIBE, PUBLISH and wills, and what event plugins are told.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;
use crate::plugins::{
    AclTables, ClientInfo, CorePlugins, EventPlugin, TopicAcl, TopicAction, TopicPlugin,
};
use crate::protocol::{LastWill, PubAck, PubRec, SubscribeReturnCode};

type Table = std::collections::BTreeMap<String, Vec<String>>;

fn table(entries: &[(&str, &[&str])]) -> Table {
    entries
        .iter()
        .map(|(u, l)| (u.to_string(), l.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// `subscribe-acl` and `publish-acl` tables; an empty slice leaves that table out.
fn acl_settings(subscribe: &[(&str, &[&str])], publish: &[(&str, &[&str])]) -> Settings {
    let (sub, publ) = (table(subscribe), table(publish));
    acl_settings_from(AclTables {
        subscribe_acl: (!subscribe.is_empty()).then_some(&sub),
        publish_acl: (!publish.is_empty()).then_some(&publ),
        ..AclTables::default()
    })
}

fn acl_settings_from(tables: AclTables<'_>) -> Settings {
    let acl = TopicAcl::new(tables).expect("acl");
    let topic: Vec<Arc<dyn TopicPlugin>> = vec![Arc::new(acl)];
    Settings {
        plugins: CorePlugins::new(topic, vec![]),
        ..Settings::default()
    }
}

fn as_user(client_id: &str, user: &str) -> Connect {
    let mut connect = Cluster::connect_packet(client_id, true);
    connect.username = Some(user.into());
    connect
}

#[test]
fn denied_verdict_is_refused_with_not_authorized_and_nothing_else() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("will/#", QoS::AtMostOnce)]);
    c.packets("watcher");
    c.connect("victim", false);
    let mut connect = as_user("victim", "mallory");
    connect.will = Some(LastWill {
        topic: TopicName::new("will/victim").expect("topic"),
        payload: Bytes::from("never"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: None,
    });
    let outcome = c.connect_verdict("victim", connect, AuthVerdict::Denied);
    assert_eq!(outcome.code, ConnectReturnCode::NotAuthorized);
    assert_eq!(
        connack(&c.packets("victim")).code,
        ConnectReturnCode::NotAuthorized
    );
    assert!(c.client("victim").closed);
    let victim_old = c
        .clients
        .keys()
        .find(|k| k.starts_with("victim#old"))
        .cloned()
        .expect("first connection");
    assert!(
        !c.client(&victim_old).closed,
        "a refused login does not take the session over"
    );
    assert!(
        c.payloads("watcher").is_empty(),
        "its will is never published"
    );
    assert_eq!(
        c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
        0
    );
    let refused: u64 = c.shards.iter().map(|s| s.stats.refused_by_code[5]).sum();
    assert_eq!(refused, 1);
}

#[test]
fn subscribe_to_a_filter_the_acl_denies_gets_0x80_for_that_filter_only() {
    let settings = acl_settings(&[("alice", &["sensors/#", "users/%u/#"])], &[]);
    let mut c = Cluster::with_settings(2, settings);
    c.connect_with("a", as_user("a", "alice"));
    c.packets("a");
    c.subscribe(
        "a",
        &[
            ("sensors/+/temp", QoS::AtLeastOnce),
            ("#", QoS::AtLeastOnce),
            ("users/alice/inbox", QoS::AtMostOnce),
            ("users/bob/inbox", QoS::AtMostOnce),
        ],
    );
    assert_eq!(
        suback_codes(&c.packets("a")),
        vec![
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure,
        ]
    );
    let denied: u64 = c.shards.iter().map(|s| s.stats.subscribe_denied).sum();
    assert_eq!(denied, 2);
    assert_eq!(
        c.shards
            .iter()
            .map(|s| s.subscription_count())
            .sum::<usize>(),
        2
    );
    // The denied filters were not installed: nothing arrives through them.
    c.connect("pub", true);
    c.publish(
        "pub",
        "users/bob/inbox",
        "private",
        QoS::AtMostOnce,
        false,
        0,
    );
    c.publish("pub", "sensors/k/temp", "21", QoS::AtMostOnce, false, 0);
    assert_eq!(c.payloads("a"), ["21"]);
}

#[test]
fn anonymous_clients_use_the_anonymous_entry() {
    let settings = acl_settings(&[("anonymous", &["public/#"])], &[]);
    let mut c = Cluster::with_settings(1, settings);
    c.connect("anon", true);
    c.packets("anon");
    c.subscribe(
        "anon",
        &[
            ("public/x", QoS::AtMostOnce),
            ("private/x", QoS::AtMostOnce),
        ],
    );
    assert_eq!(
        suback_codes(&c.packets("anon")),
        vec![
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure
        ]
    );
}

#[test]
fn denied_publish_is_acknowledged_but_neither_delivered_nor_retained() {
    let settings = acl_settings(&[], &[("alice", &["sensors/alice/#"])]);
    let mut c = Cluster::with_settings(2, settings);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("#", QoS::AtLeastOnce)]);
    c.packets("watcher");
    c.connect_with("a", as_user("a", "alice"));
    c.packets("a");
    c.publish("a", "sensors/bob/temp", "forged", QoS::AtLeastOnce, true, 7);
    c.publish(
        "a",
        "sensors/bob/temp",
        "forged2",
        QoS::ExactlyOnce,
        false,
        8,
    );
    c.publish(
        "a",
        "sensors/bob/temp",
        "forged0",
        QoS::AtMostOnce,
        false,
        0,
    );
    let acks = c.packets("a");
    assert!(
        acks.contains(&Packet::PubAck(PubAck { packet_id: 7 })),
        "{acks:?}"
    );
    assert!(
        acks.contains(&Packet::PubRec(PubRec { packet_id: 8 })),
        "{acks:?}"
    );
    c.publish("a", "sensors/alice/temp", "ok", QoS::AtLeastOnce, false, 9);
    assert_eq!(c.payloads("watcher"), ["ok"]);
    assert_eq!(
        c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
        0
    );
    let denied: u64 = c.shards.iter().map(|s| s.stats.publish_denied).sum();
    assert_eq!(denied, 3);
}

#[test]
fn a_will_the_acl_denies_is_not_published() {
    let settings = acl_settings(&[], &[("alice", &["status/alice"])]);
    let mut c = Cluster::with_settings(2, settings);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("#", QoS::AtMostOnce)]);
    c.packets("watcher");
    for (name, topic) in [("w1", "status/alice"), ("w2", "status/bob")] {
        let connect = Cluster::with_will(
            as_user(name, "alice"),
            topic,
            &format!("{name} gone"),
            QoS::AtMostOnce,
        );
        c.connect_with(name, connect);
        c.drop_connection(name);
    }
    assert_eq!(c.payloads("watcher"), ["w1 gone"]);
    let wills: u64 = c.shards.iter().map(|s| s.stats.wills_published).sum();
    assert_eq!(wills, 1);
}

/// A topic plugin that allows each publish topic once and denies it after: an answer fetched
/// ahead that has expired by the time it is asked again (the HTTP plugin's cache).
struct AllowsOnce(Mutex<HashSet<String>>);

impl TopicPlugin for AllowsOnce {
    fn name(&self) -> &str {
        "allows-once"
    }
    fn allow(&self, _: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        let mut asked = self.0.lock().unwrap_or_else(|p| p.into_inner());
        asked.insert(action.topic().to_string())
    }
}

/// The will's topic is checked at CONNECT, and its publication later does not depend on the
/// plugin answering the same again.
#[test]
fn a_will_allowed_at_connect_is_published_however_long_after() {
    let topic: Vec<Arc<dyn TopicPlugin>> = vec![Arc::new(AllowsOnce(Mutex::default()))];
    let mut c = Cluster::with_settings(
        2,
        Settings {
            plugins: CorePlugins::new(topic, vec![]),
            ..Settings::default()
        },
    );
    c.connect("watcher", true);
    c.subscribe("watcher", &[("status/#", QoS::AtMostOnce)]);
    c.packets("watcher");
    let connect = Cluster::with_will(
        as_user("w1", "alice"),
        "status/w1",
        "w1 gone",
        QoS::AtMostOnce,
    );
    c.connect_with("w1", connect);
    c.drop_connection("w1");
    assert_eq!(c.payloads("watcher"), ["w1 gone"]);
}

#[test]
fn acl_alone_also_governs_publishes_and_wills() {
    let acl = table(&[("alice", &["alice/#"]), ("anonymous", &["#"])]);
    let settings = acl_settings_from(AclTables {
        acl: Some(&acl),
        ..AclTables::default()
    });
    let mut c = Cluster::with_settings(2, settings);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("#", QoS::ExactlyOnce)]);
    c.packets("watcher");
    c.connect_with("a", as_user("a", "alice"));
    c.packets("a");
    c.publish("a", "bob/x", "forged0", QoS::AtMostOnce, false, 0);
    c.publish("a", "bob/x", "forged1", QoS::AtLeastOnce, true, 7);
    c.publish("a", "bob/x", "forged2", QoS::ExactlyOnce, false, 8);
    let acks = c.packets("a");
    assert!(acks.contains(&Packet::PubAck(PubAck { packet_id: 7 })));
    assert!(acks.contains(&Packet::PubRec(PubRec { packet_id: 8 })));
    c.publish("a", "alice/x", "ok", QoS::AtLeastOnce, false, 9);
    assert_eq!(c.payloads("watcher"), ["ok"]);
    assert_eq!(
        c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
        0
    );
    let will = Cluster::with_will(as_user("w", "alice"), "bob/x", "w gone", QoS::AtLeastOnce);
    c.connect_with("w", will);
    c.drop_connection("w");
    let will = Cluster::with_will(as_user("v", "alice"), "alice/s", "v gone", QoS::AtMostOnce);
    c.connect_with("v", will);
    c.drop_connection("v");
    assert_eq!(c.payloads("watcher"), ["v gone"]);
}

#[test]
fn receive_acl_filters_each_subscribers_deliveries_and_retained_messages() {
    let receive = table(&[("alice", &["sensors/#", "users/%u/#"])]);
    let settings = acl_settings_from(AclTables {
        receive_acl: Some(&receive),
        ..AclTables::default()
    });
    let (alice_id, other_id) = ids_on_distinct_shards();
    let mut c = Cluster::with_settings(2, settings);
    c.connect_with(&alice_id, as_user(&alice_id, "alice"));
    c.connect(&other_id, true);
    for name in [&alice_id, &other_id] {
        c.subscribe(name, &[("#", QoS::AtLeastOnce)]);
        c.packets(name);
    }
    c.connect("pub", true);
    let sent = [
        ("sensors/a", QoS::AtMostOnce),
        ("secret/b", QoS::AtMostOnce),
        ("users/alice/c", QoS::AtLeastOnce),
        ("users/bob/d", QoS::AtLeastOnce),
        ("secret/e", QoS::ExactlyOnce),
    ];
    for (i, (topic, qos)) in sent.into_iter().enumerate() {
        c.publish("pub", topic, topic, qos, i == 1, i as u16 + 1);
    }
    assert_eq!(c.payloads(&alice_id), ["sensors/a", "users/alice/c"]);
    // `other_id` is anonymous and `anonymous` is not listed: it receives nothing.
    assert!(c.payloads(&other_id).is_empty());
    // Retained messages after a SUBACK are deliveries too.
    c.publish("pub", "sensors/r", "sensors/r", QoS::AtMostOnce, true, 0);
    c.payloads(&alice_id);
    c.connect_with("late", as_user("late", "alice"));
    c.packets("late");
    c.subscribe("late", &[("#", QoS::AtMostOnce)]);
    assert_eq!(c.payloads("late"), ["sensors/r"]);
    let denied: u64 = c.shards.iter().map(|s| s.stats.receive_denied).sum();
    assert_eq!(
        denied,
        3 + 5 + 1 + 1,
        "alice 3, anonymous 5 + 1 retained, late 1 retained"
    );
}

#[test]
fn a_recovered_session_is_checked_for_its_journaled_user_before_its_client_is_back() {
    let receive = table(&[("dave", &["news/#"]), ("anonymous", &["#"])]);
    let mut settings = acl_settings_from(AclTables {
        receive_acl: Some(&receive),
        ..AclTables::default()
    });
    settings.persistence = true;
    let persistent_dave = || {
        let mut connect = as_user("dave", "dave");
        connect.clean_session = false;
        connect
    };
    let mut c = Cluster::with_settings(1, settings.clone());
    c.connect_with("dave", persistent_dave());
    c.subscribe("dave", &[("#", QoS::AtLeastOnce)]);
    let mut state = crate::persist::DurableState::default();
    let fold = |c: &mut Cluster, state: &mut crate::persist::DurableState| {
        while let Some((batch, bytes)) = c.shards[0].take_journal() {
            for record in crate::persist::codec::decode_all(bytes).expect("the journal reads") {
                state.apply(&record);
            }
            c.shards[0].handle_durable(batch);
        }
    };
    fold(&mut c, &mut state);
    state.finish();
    // A restart: the journal keeps dave's session, subscription and user name; his queue is
    // checked for dave while he is away (news/ queued, sports/ refused).
    let mut c = Cluster::with_settings(1, settings.clone());
    let now = c.now;
    c.shards[0].restore(&state, now, 0);
    c.connect("pub", true);
    c.publish("pub", "news/a", "a", QoS::AtLeastOnce, false, 1);
    c.publish("pub", "sports/x", "x", QoS::AtLeastOnce, false, 2);
    assert_eq!(
        c.shards[0].stats.receive_denied, 1,
        "sports/x refused for dave"
    );
    // The user survives a second restart through the snapshot the first recovery wrote.
    let mut state = crate::persist::DurableState::default();
    for record in c.shards[0].snapshot_records() {
        state.apply(&record);
    }
    state.finish();
    let mut c = Cluster::with_settings(1, settings);
    let now = c.now;
    c.shards[0].restore(&state, now, 0);
    c.connect("pub", true);
    c.publish("pub", "news/b", "b", QoS::AtLeastOnce, false, 3);
    c.publish("pub", "sports/c", "c", QoS::AtLeastOnce, false, 4);
    c.connect_with("dave", persistent_dave());
    assert_eq!(c.payloads("dave"), ["a", "b"]);
    assert_eq!(c.shards[0].stats.receive_denied, 1);
}

#[test]
fn a_will_the_acl_denies_is_dropped_at_connect_and_never_journaled() {
    let acl = table(&[("alice", &["alice/#"])]);
    let mut settings = acl_settings_from(AclTables {
        acl: Some(&acl),
        ..AclTables::default()
    });
    settings.persistence = true;
    let mut c = Cluster::with_settings(1, settings);
    for (name, topic) in [("w1", "bob/will"), ("w2", "alice/will")] {
        let mut connect =
            Cluster::with_will(as_user(name, "alice"), topic, "gone", QoS::AtLeastOnce);
        connect.clean_session = false;
        c.connect_with(name, connect);
    }
    let mut journaled = Vec::new();
    while let Some((batch, bytes)) = c.shards[0].take_journal() {
        let records = crate::persist::codec::decode_all(bytes).expect("the journal reads");
        journaled.extend(records.into_iter().filter_map(|record| match record {
            crate::persist::Record::Will {
                client_id,
                will: Some(will),
            } => Some((client_id.to_string(), will.topic.as_str().to_string())),
            _ => None,
        }));
        c.shards[0].handle_durable(batch);
    }
    assert_eq!(journaled, [("w2".to_string(), "alice/will".to_string())]);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl EventPlugin for Arc<Recorder> {
    fn name(&self) -> &str {
        "recorder"
    }
    fn client_connected(&self, client: &ClientInfo<'_>) {
        self.push(format!(
            "connected {} {:?}",
            client.client_id, client.username
        ));
    }
    fn client_disconnected(&self, client: &ClientInfo<'_>) {
        self.push(format!("disconnected {}", client.client_id));
    }
    fn message_received(&self, client: &ClientInfo<'_>, message: &Message) {
        self.push(format!("message {} {}", client.client_id, message.topic));
    }
    fn subscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter, granted: QoS) {
        self.push(format!(
            "subscribed {} {filter} {granted:?}",
            client.client_id
        ));
    }
    fn unsubscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter) {
        self.push(format!("unsubscribed {} {filter}", client.client_id));
    }
    fn retained_message(&self, message: &Message) {
        self.push(format!("retained {} {:?}", message.topic, message.payload));
    }
}

impl Recorder {
    fn push(&self, event: String) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

/// A cluster of `shards` whose only plugin is a [`Recorder`].
fn recording_cluster(shards: usize) -> (Arc<Recorder>, Cluster) {
    let recorder = Arc::new(Recorder::default());
    let events: Vec<Arc<dyn EventPlugin>> = vec![Arc::new(recorder.clone())];
    let settings = Settings {
        plugins: CorePlugins::new(vec![], events),
        ..Settings::default()
    };
    (recorder, Cluster::with_settings(shards, settings))
}

#[test]
fn event_plugins_hear_connects_messages_subscriptions_and_disconnects() {
    let (recorder, mut c) = recording_cluster(1);
    c.connect_with("a", as_user("a", "alice"));
    c.subscribe("a", &[("t/#", QoS::ExactlyOnce)]);
    c.publish("a", "t/1", "x", QoS::AtMostOnce, false, 0);
    c.publish("a", "$SYS/x", "x", QoS::AtMostOnce, false, 0);
    c.send("a", Packet::Disconnect);
    c.connect_verdict("b", as_user("b", "mallory"), AuthVerdict::Denied);
    assert_eq!(
        recorder.take(),
        [
            "connected a Some(\"alice\")",
            "subscribed a t/# ExactlyOnce",
            "message a t/1",
            "disconnected a",
        ],
        "refused clients and dropped messages are not reported"
    );
}

#[test]
fn event_plugins_hear_unsubscribes_and_retained_updates_once_per_broker() {
    let (recorder, mut c) = recording_cluster(2);
    c.connect("a", true);
    c.subscribe("a", &[("t/#", QoS::AtMostOnce)]);
    c.publish("a", "t/r", "v", QoS::AtMostOnce, true, 0);
    c.publish("a", "t/r", "", QoS::AtMostOnce, true, 0);
    c.send(
        "a",
        Packet::Unsubscribe(crate::protocol::Unsubscribe {
            packet_id: 2,
            filters: vec![
                TopicFilter::new("t/#").expect("filter"),
                TopicFilter::new("never").expect("filter"),
            ],
        }),
    );
    // A host publish goes through `route` as well.
    c.shards[1].route(Message {
        topic: TopicName::new("t/host").expect("topic"),
        payload: Bytes::from_static(b"h"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: None,
    });
    c.run();
    assert_eq!(
        recorder.take(),
        [
            "connected a None",
            "subscribed a t/# AtMostOnce",
            "message a t/r",
            "retained t/r b\"v\"",
            "message a t/r",
            "retained t/r b\"\"",
            "unsubscribed a t/#",
            "retained t/host b\"h\"",
        ],
        "each retained update once (not again on the shard that copies it), unknown filters not"
    );
}
