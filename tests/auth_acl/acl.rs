//! Topic ACLs over real sockets: filters refused on SUBSCRIBE, publishes acknowledged but
//! dropped on PUBLISH (and counted by the metrics endpoint), and the example ACL configuration.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

const ACL_YAML: &str = "topic-check:
  enabled: true
  plugins: [topic_acl]
  acl:
    alice: ['sensors/#', 'users/%u/#']
    bob: ['#']
    anonymous: ['public/#']
  publish-acl:
    alice: ['sensors/alice/#']
    bob: ['#']
    anonymous: ['public/#']
";

fn acl_broker(shards: usize) -> (BrokerHandle, SocketAddr) {
    start(ACL_YAML, shards)
}

#[test]
fn subscribe_acl_refuses_filters_with_0x80_and_other_clients_are_unaffected() {
    let _serial = serial();
    let (_broker, addr) = acl_broker(2);
    let mut alice = expect_connack(
        addr,
        login("alice", Some("alice"), None),
        ConnectReturnCode::Accepted,
    );
    let mut bob = expect_connack(
        addr,
        login("bob", Some("bob"), None),
        ConnectReturnCode::Accepted,
    );
    let mut anon = expect_connack(addr, login("anon", None, None), ConnectReturnCode::Accepted);
    assert_eq!(
        subscribe(
            &mut alice,
            &[
                ("sensors/+/temp", QoS::AtLeastOnce),
                ("secret/#", QoS::AtLeastOnce),
                ("#", QoS::AtMostOnce),
                ("users/alice/#", QoS::AtMostOnce),
                ("users/bob/#", QoS::AtMostOnce),
            ]
        ),
        [
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure,
        ]
    );
    assert_eq!(
        subscribe(&mut bob, &[("#", QoS::AtLeastOnce)]),
        [SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        subscribe(
            &mut anon,
            &[
                ("public/#", QoS::AtMostOnce),
                ("sensors/#", QoS::AtMostOnce)
            ]
        ),
        [
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure
        ]
    );

    let mut publisher = expect_connack(
        addr,
        login("pub", Some("bob"), None),
        ConnectReturnCode::Accepted,
    );
    publish(
        &mut publisher,
        "secret/plans",
        "s",
        QoS::AtLeastOnce,
        false,
        1,
    );
    publish(
        &mut publisher,
        "users/bob/inbox",
        "b",
        QoS::AtLeastOnce,
        false,
        2,
    );
    publish(
        &mut publisher,
        "sensors/kitchen/temp",
        "21",
        QoS::AtLeastOnce,
        false,
        3,
    );
    // bob (allowed everything) gets all three, in order.
    let got: Vec<String> = (0..3)
        .map(|_| payload(&next_publish(&mut bob, Duration::from_secs(5)).expect("bob receives")))
        .collect();
    assert_eq!(got, ["s", "b", "21"]);
    // alice only through her granted filter.
    assert_eq!(
        payload(&next_publish(&mut alice, Duration::from_secs(5)).expect("alice receives")),
        "21"
    );
    assert!(next_publish(&mut alice, Duration::from_millis(300)).is_none());
    assert!(next_publish(&mut anon, Duration::from_millis(100)).is_none());
}

/// `amqtt_messages_dropped_total{reason="topic_denied"}` summed over shards, once it reaches
/// `at_least` (the shards report once a second).
fn denied_publishes(metrics: SocketAddr, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(metrics).expect("metrics connect");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        let total: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("amqtt_messages_dropped_total{")
                    && l.contains("reason=\"topic_denied\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        if total >= at_least || Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn publish_acl_acknowledges_but_neither_delivers_nor_retains_and_counts() {
    let _serial = serial();
    let yaml = format!("{ACL_YAML}metrics:\n  bind: 127.0.0.1:0\n");
    let (broker, addr) = start(&yaml, 2);
    let metrics = broker.metrics_address().expect("metrics endpoint");
    let mut bob = expect_connack(
        addr,
        login("bob", Some("bob"), None),
        ConnectReturnCode::Accepted,
    );
    subscribe(&mut bob, &[("#", QoS::AtLeastOnce)]);
    let mut alice = expect_connack(
        addr,
        login("alice", Some("alice"), None),
        ConnectReturnCode::Accepted,
    );
    // Denied: PUBACK all the same (publish() checks it), no delivery, no retained copy.
    publish(
        &mut alice,
        "sensors/bob/temp",
        "forged",
        QoS::AtLeastOnce,
        true,
        1,
    );
    publish(
        &mut alice,
        "sensors/bob/temp",
        "forged0",
        QoS::AtMostOnce,
        false,
        0,
    );
    // Allowed: delivered.
    publish(
        &mut alice,
        "sensors/alice/temp",
        "real",
        QoS::AtLeastOnce,
        false,
        2,
    );
    assert_eq!(
        payload(&next_publish(&mut bob, Duration::from_secs(5)).expect("delivered")),
        "real"
    );
    assert!(next_publish(&mut bob, Duration::from_millis(300)).is_none());
    let mut late = expect_connack(
        addr,
        login("late", Some("bob"), None),
        ConnectReturnCode::Accepted,
    );
    subscribe(&mut late, &[("sensors/#", QoS::AtMostOnce)]);
    assert!(
        next_publish(&mut late, Duration::from_millis(500)).is_none(),
        "nothing retained"
    );
    // An anonymous client may publish to public/ only; alice is unaffected by the refusals.
    let mut anon = expect_connack(addr, login("anon", None, None), ConnectReturnCode::Accepted);
    publish(
        &mut anon,
        "sensors/alice/temp",
        "anon-forged",
        QoS::AtLeastOnce,
        false,
        3,
    );
    publish(
        &mut alice,
        "sensors/alice/temp",
        "real2",
        QoS::AtLeastOnce,
        false,
        4,
    );
    assert_eq!(
        payload(&next_publish(&mut bob, Duration::from_secs(5)).expect("delivered")),
        "real2"
    );
    assert_eq!(denied_publishes(metrics, 3), 3);
}

#[test]
fn example_acl_configuration_starts_and_enforces_its_rules() {
    let _serial = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        BrokerConfig::from_file(&root.join("config/acl.yaml")).expect("config/acl.yaml loads");
    // The example names its password file relative to the repository root.
    config.password_file = config.password_file.map(|p| root.join(p));
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
    config.shards = ShardCount::Fixed(1);
    config.pin_shards = false;
    let broker = Broker::new(config).and_then(Broker::start).expect("starts");
    let addr = broker.address("default").expect("listener");
    expect_connack(
        addr,
        login("anon", None, None),
        ConnectReturnCode::NotAuthorized,
    );
    expect_connack(
        addr,
        login("x", Some("alice"), Some("builder")),
        ConnectReturnCode::NotAuthorized,
    );
    let mut alice = expect_connack(
        addr,
        login("alice-phone", Some("alice"), Some("wonderland")),
        ConnectReturnCode::Accepted,
    );
    let mut bob = expect_connack(
        addr,
        login("bob-pc", Some("bob"), Some("builder")),
        ConnectReturnCode::Accepted,
    );
    assert_eq!(
        subscribe(
            &mut alice,
            &[
                ("sensors/#", QoS::AtMostOnce),
                ("#", QoS::AtMostOnce),
                ("users/alice/inbox", QoS::AtMostOnce)
            ]
        ),
        [
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Success(QoS::AtMostOnce)
        ]
    );
    publish(
        &mut bob,
        "sensors/alice/temp",
        "forged",
        QoS::AtLeastOnce,
        false,
        1,
    );
    publish(
        &mut bob,
        "users/alice/inbox",
        "hi alice",
        QoS::AtLeastOnce,
        false,
        2,
    );
    assert_eq!(
        payload(&next_publish(&mut alice, Duration::from_secs(5)).expect("inbox")),
        "hi alice"
    );
    assert!(next_publish(&mut alice, Duration::from_millis(300)).is_none());
}
