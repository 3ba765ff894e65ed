//! MQTT 5 state across a restart (`recovery.rs`): a persistent v5 session's journal, folded and
//! restored into a new core later on the wall clock, gives back its queued messages' properties,
//! their expiry (still counting: one that expired meanwhile is not sent), the subscription's
//! identifier and options, and the session's own expiry interval.

use super::mqtt5::{publish_v5, v5_connect};
use super::*;
use crate::persist::DurableState;
use crate::protocol::v5::{self, Properties};

const WALL_MS: u64 = 1_700_000_000_000;

fn persistent_v5(name: &str, clean_start: bool, expiry: u32) -> v5::Connect {
    let properties = Properties {
        session_expiry_interval: Some(expiry),
        ..Properties::default()
    };
    v5::Connect {
        clean_start,
        ..v5_connect(name, 0, properties)
    }
}

fn subscribe_with_id(filter: &str, id: u32) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: 1,
        properties: Properties {
            subscription_identifiers: vec![id],
            ..Properties::default()
        },
        filters: vec![v5::Subscription {
            filter: TopicFilter::new(filter).expect("filter"),
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: v5::RetainHandling::SendIfNew,
        }],
    })
}

fn expiring(topic: &str, payload: &'static [u8], seconds: u32) -> v5::Packet {
    let v5::Packet::Publish(mut publish) = publish_v5(topic, payload, QoS::AtLeastOnce, false)
    else {
        unreachable!("publish_v5 makes a PUBLISH");
    };
    publish.properties.message_expiry_interval = Some(seconds);
    publish.properties.user_properties = vec![("z".into(), "1".into()), ("a".into(), "2".into())];
    v5::Packet::Publish(publish)
}

fn persistent_cluster() -> Cluster {
    Cluster::with_settings(
        1,
        Settings {
            persistence: true,
            ..Settings::default()
        },
    )
}

/// Every record shard 0 journaled, folded.
fn folded(c: &mut Cluster) -> DurableState {
    let mut state = DurableState::default();
    while let Some((batch, bytes)) = c.shards[0].take_journal() {
        for record in crate::persist::codec::decode_all(bytes).expect("the journal reads") {
            state.apply(&record);
        }
        c.shards[0].handle_durable(batch);
    }
    c.run();
    state.finish();
    state
}

#[test]
fn a_restored_v5_session_keeps_properties_ids_options_and_expiries() {
    let mut c = persistent_cluster();
    let now = c.now;
    c.shards[0].set_wall_clock(now, WALL_MS);
    c.connect_v5("sub", persistent_v5("sub", true, 100), AuthVerdict::Allowed);
    c.send_v5("sub", subscribe_with_id("ex/#", 5));
    c.drop_connection("sub");
    c.connect_v5(
        "pub",
        v5_connect("pub", 0, Properties::default()),
        AuthVerdict::Allowed,
    );
    c.send_v5("pub", expiring("ex/a", b"short", 1));
    c.send_v5("pub", expiring("ex/a", b"long", 60));
    let state = folded(&mut c);

    // The broker comes back 2 s later on the wall clock: "short" expired while it was down.
    let mut c = persistent_cluster();
    let now = c.now;
    c.shards[0].restore(&state, now, WALL_MS + 2_000);
    let session = c.shards[0].sessions.iter().next().expect("restored").1;
    assert_eq!(session.expiry_interval, Some(Duration::from_secs(100)));
    let options = session
        .subscriptions
        .values()
        .next()
        .expect("a subscription");
    assert!(options.no_local && options.retain_as_published);
    assert_eq!(options.id.map(|id| id.get()), Some(5));
    c.connect_v5(
        "sub",
        persistent_v5("sub", false, 100),
        AuthVerdict::Allowed,
    );
    let got: Vec<_> = (c.packets_v5("sub").into_iter())
        .filter_map(|p| match p {
            v5::Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].payload, Bytes::from_static(b"long"));
    assert_eq!(got[0].properties.message_expiry_interval, Some(58));
    assert_eq!(got[0].properties.subscription_identifiers, [5]);
    let names: Vec<&str> = (got[0].properties.user_properties.iter())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["z", "a"]);
}

#[test]
fn a_restored_v5_session_expires_after_its_own_interval_counted_from_before_the_restart() {
    let mut c = persistent_cluster();
    let now = c.now;
    c.shards[0].set_wall_clock(now, WALL_MS);
    c.connect_v5("s", persistent_v5("s", true, 10), AuthVerdict::Allowed);
    c.drop_connection("s");
    let state = folded(&mut c);

    // 6 s of the 10 passed while the broker was down: 4 remain.
    let mut c = persistent_cluster();
    let now = c.now;
    c.shards[0].restore(&state, now, WALL_MS + 6_000);
    c.advance(Duration::from_millis(3_900));
    assert_eq!(c.shards[0].sessions.len(), 1, "not before its expiry");
    c.advance(Duration::from_millis(200));
    assert_eq!(c.shards[0].sessions.len(), 0, "gone after it");
}
