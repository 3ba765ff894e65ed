//! Authentication and access control over real sockets: password files (good, bad and unknown
//! users, anonymous clients), refused clients' wills, topic ACLs on SUBSCRIBE and PUBLISH, the
//! example configuration, slow password verification not stalling a shard, and `amqtt_passwd`.
//!
//! Tests here run one at a time (`serial()`): the stall test measures latency and must not share
//! the machine's two cores with the others.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::plugins::password_file;
use amqtt::protocol::{
    ConnectReturnCode, LastWill, Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReturnCode, TopicFilter, TopicName,
};
use amqtt::{Broker, BrokerHandle};
use bytes::Bytes;
use common::RawClient;

/// `mkpasswd -m sha-512 -S saltsaltsaltsalt hunter2`.
const ALICE_HUNTER2: &str = "$6$saltsaltsaltsalt$dJX0KuyM7nCXuBPN.nYtdrJDotQEB1rFBumzix6FHzliKxLBinGY49pMJNvCoNf9fHmNyZ1IgX/glbcKhuXoh.";

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A broker on 127.0.0.1 from YAML (`listeners` is supplied here).
fn start(yaml: &str, shards: usize) -> (BrokerHandle, SocketAddr) {
    let text = format!("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n{yaml}");
    let mut config = BrokerConfig::from_yaml_str(&text, "test.yaml").expect("test config");
    config.shards = ShardCount::Fixed(shards);
    config.pin_shards = false;
    let handle = Broker::new(config)
        .and_then(Broker::start)
        .expect("broker starts");
    let addr = handle.address("default").expect("default listener");
    (handle, addr)
}

fn password_file(dir: &tempfile::TempDir, lines: &[(&str, &str)]) -> PathBuf {
    let path = dir.path().join("passwd");
    let text: String = lines.iter().map(|(u, h)| format!("{u}:{h}\n")).collect();
    std::fs::write(&path, format!("# test users\n\n{text}")).expect("write password file");
    path
}

fn auth_yaml(path: &Path, allow_anonymous: bool) -> String {
    format!(
        "auth:\n  allow-anonymous: {allow_anonymous}\n  password-file: {}\n  plugins: [auth_anonymous, auth_file]\n",
        path.display()
    )
}

fn login(client_id: &str, user: Option<&str>, password: Option<&str>) -> amqtt::protocol::Connect {
    let mut connect = RawClient::connect_packet(client_id, true, 30);
    connect.username = user.map(Into::into);
    connect.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    connect
}

fn connack_code(packet: &Packet) -> ConnectReturnCode {
    match packet {
        Packet::ConnAck(ack) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Connects and expects `code`; a refused connection must then be closed by the broker.
fn expect_connack(
    addr: SocketAddr,
    connect: amqtt::protocol::Connect,
    code: ConnectReturnCode,
) -> RawClient {
    let (mut client, ack) = RawClient::mqtt_connect(addr, connect);
    assert_eq!(connack_code(&ack), code);
    if code != ConnectReturnCode::Accepted {
        assert!(
            client.closed_within(Duration::from_secs(2)),
            "refused connection closed"
        );
    }
    client
}

fn subscribe(client: &mut RawClient, filters: &[(&str, QoS)]) -> Vec<SubscribeReturnCode> {
    let filters = filters
        .iter()
        .map(|(f, q)| SubscribeFilter {
            filter: TopicFilter::new(f).expect("filter"),
            qos: *q,
        })
        .collect();
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters,
    }));
    match client.recv() {
        Some(Packet::SubAck(ack)) => ack.return_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn publish(client: &mut RawClient, topic: &str, payload: &str, qos: QoS, retain: bool, id: u16) {
    client.send(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).expect("topic"),
        packet_id: (qos != QoS::AtMostOnce).then_some(id),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }));
    if qos == QoS::AtLeastOnce {
        assert_eq!(
            client.recv(),
            Some(Packet::PubAck(PubAck { packet_id: id }))
        );
    }
}

/// The next PUBLISH within `within`, acknowledging QoS 1; `None` if none came.
fn next_publish(client: &mut RawClient, within: Duration) -> Option<Publish> {
    client
        .stream
        .set_read_timeout(Some(within))
        .expect("timeout");
    let packet = client.recv();
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    match packet? {
        Packet::Publish(p) => {
            if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                client.send(&Packet::PubAck(PubAck { packet_id: id }));
            }
            Some(p)
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn payload(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

#[test]
fn password_file_accepts_good_users_and_refuses_the_rest_with_not_authorized() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2)]);
    let (_broker, addr) = start(&auth_yaml(&path, false), 2);
    let refused = ConnectReturnCode::NotAuthorized;

    let mut alice = expect_connack(
        addr,
        login("alice-1", Some("alice"), Some("hunter2")),
        ConnectReturnCode::Accepted,
    );
    expect_connack(
        addr,
        login("bad-pw", Some("alice"), Some("hunter3")),
        refused,
    );
    expect_connack(addr, login("no-pw", Some("alice"), None), refused);
    expect_connack(
        addr,
        login("unknown", Some("mallory"), Some("hunter2")),
        refused,
    );
    expect_connack(addr, login("anon", None, None), refused);
    // A refused login with alice's client id did not take her session over.
    expect_connack(addr, login("alice-1", Some("alice"), Some("nope")), refused);
    alice.send(&Packet::PingReq);
    assert_eq!(
        alice.recv(),
        Some(Packet::PingResp),
        "alice is still connected"
    );
    // The same password again is answered from the cache of verified logins: still accepted.
    expect_connack(
        addr,
        login("alice-2", Some("alice"), Some("hunter2")),
        ConnectReturnCode::Accepted,
    );
}

#[test]
fn anonymous_clients_pass_when_allowed_and_named_ones_still_need_their_password() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2)]);
    let (_broker, addr) = start(&auth_yaml(&path, true), 1);
    expect_connack(addr, login("anon", None, None), ConnectReturnCode::Accepted);
    expect_connack(
        addr,
        login("a", Some("alice"), Some("hunter2")),
        ConnectReturnCode::Accepted,
    );
    expect_connack(
        addr,
        login("b", Some("alice"), Some("x")),
        ConnectReturnCode::NotAuthorized,
    );
}

#[test]
fn mosquitto_clients_log_in_with_the_password_file() {
    let _serial = serial();
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("mosquitto_pub not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2)]);
    let (_broker, addr) = start(&auth_yaml(&path, false), 1);
    let port = addr.port().to_string();
    let run = |password: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv311",
                "-t",
                "t",
                "-m",
                "x",
            ])
            .args(["-u", "alice", "-P", password, "-q", "1"])
            .output()
            .expect("mosquitto_pub runs")
    };
    let good = run("hunter2");
    assert!(good.status.success(), "{good:?}");
    let bad = run("wrong");
    assert!(!bad.status.success(), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(
        stderr.contains("not authorised") || stderr.contains("not authorized"),
        "{stderr}"
    );
}

#[test]
fn a_refused_clients_will_is_never_published() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2)]);
    let (_broker, addr) = start(&auth_yaml(&path, false), 2);
    let mut watcher = expect_connack(
        addr,
        login("watcher", Some("alice"), Some("hunter2")),
        ConnectReturnCode::Accepted,
    );
    assert_eq!(
        subscribe(&mut watcher, &[("will/#", QoS::AtLeastOnce)]),
        [SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );

    let with_will = |id: &str, password: &str| {
        let mut connect = login(id, Some("alice"), Some(password));
        connect.will = Some(LastWill {
            topic: TopicName::new(&format!("will/{id}")).expect("topic"),
            payload: Bytes::from(format!("{id} gone")),
            qos: QoS::AtLeastOnce,
            retain: true,
        });
        connect
    };
    // Refused, then the socket drops: nothing is published, nothing retained.
    drop(expect_connack(
        addr,
        with_will("intruder", "wrong"),
        ConnectReturnCode::NotAuthorized,
    ));
    // Control: an accepted client whose connection is lost does publish its will.
    let accepted = expect_connack(
        addr,
        with_will("member", "hunter2"),
        ConnectReturnCode::Accepted,
    );
    drop(accepted);
    let got = next_publish(&mut watcher, Duration::from_secs(5)).expect("the member's will");
    assert_eq!(payload(&got), "member gone");
    assert!(next_publish(&mut watcher, Duration::from_millis(300)).is_none());
    let mut late = expect_connack(
        addr,
        login("late", Some("alice"), Some("hunter2")),
        ConnectReturnCode::Accepted,
    );
    subscribe(&mut late, &[("will/#", QoS::AtMostOnce)]);
    let retained = next_publish(&mut late, Duration::from_secs(2)).expect("retained will");
    assert_eq!(retained.topic.as_str(), "will/member");
    assert!(
        next_publish(&mut late, Duration::from_millis(300)).is_none(),
        "no will of the intruder"
    );
}

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

#[test]
fn unknown_plugins_and_malformed_password_files_fail_at_start() {
    let _serial = serial();
    let start_error = |yaml: &str| {
        let text = format!("listeners:\n  default:\n    bind: 127.0.0.1:0\n{yaml}");
        let config = BrokerConfig::from_yaml_str(&text, "test.yaml").expect("loads");
        match Broker::new(config).and_then(Broker::start) {
            Ok(_) => panic!("started with {yaml:?}"),
            Err(error) => error.to_string(),
        }
    };
    let error = start_error("auth:\n  plugins: [auth_anonymous, auth_ldap]\n");
    assert!(
        error.contains("key 'auth.plugins[1]'")
            && error.contains("unknown authentication plugin 'auth_ldap'"),
        "{error}"
    );
    let error = start_error("topic-check:\n  enabled: true\n  plugins: [topic_nope]\n");
    assert!(error.contains("key 'topic-check.plugins[0]'"), "{error}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passwd");
    std::fs::write(&path, format!("alice:{ALICE_HUNTER2}\n# ok\nbob:secret\n")).expect("write");
    let error = start_error(&format!("auth:\n  password-file: {}\n", path.display()));
    assert!(
        error.contains(&format!("{}:3:", path.display())) && error.contains("not hashed"),
        "{error}"
    );
}

/// Many wrong passwords whose hashes cost ~100 ms each, while a publisher and a subscriber on the
/// same (only) shard exchange QoS 1 messages: the pair's latency must stay far below one
/// verification, which shows the hashing runs off the event loop.
#[test]
fn slow_password_verification_does_not_stall_the_shards_other_clients() {
    let _serial = serial();
    // Calibrate: rounds so that one verification takes about 300 ms on this machine and build.
    let probe = password_file::hash_password_with(b"x", b"probe-salt-1", 50_000).expect("hash");
    let per_round = (0..2)
        .map(|_| {
            let started = Instant::now();
            assert!(password_file::verify(b"x", &probe));
            started.elapsed().as_secs_f64() / 50_000.0
        })
        .fold(f64::MAX, f64::min);
    let rounds = ((0.3 / per_round) as u32).clamp(5_000, 100_000_000);
    let slow = password_file::hash_password_with(b"right", b"slow-salt-12", rounds).expect("hash");
    let started = Instant::now();
    assert!(!password_file::verify(b"wrong", &slow));
    let verification = started.elapsed();

    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2), ("slow", &slow)]);
    let (_broker, addr) = start(&auth_yaml(&path, true), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let refusals = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, refusals) = (stop.clone(), refusals.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let connect = login(&format!("attacker-{i}-{n}"), Some("slow"), Some("wrong"));
                    let mut client = RawClient::connect_tcp(addr);
                    client
                        .stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .expect("timeout");
                    client.send(&Packet::Connect(Box::new(connect)));
                    if let Some(Packet::ConnAck(ack)) = client.recv() {
                        assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
                        refusals.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let mut subscriber =
        expect_connack(addr, login("sub", None, None), ConnectReturnCode::Accepted);
    subscribe(&mut subscriber, &[("latency", QoS::AtLeastOnce)]);
    let mut publisher = expect_connack(addr, login("pub", None, None), ConnectReturnCode::Accepted);
    let mut worst = Duration::ZERO;
    let mut slow_trips = 0;
    let test_started = Instant::now();
    let mut sent = 0u16;
    // Enough round trips to span several verifications (at least 1.5 s of attack).
    while test_started.elapsed() < Duration::from_millis(1500).max(verification * 8) {
        sent += 1;
        let t0 = Instant::now();
        publish(
            &mut publisher,
            "latency",
            &sent.to_string(),
            QoS::AtLeastOnce,
            false,
            sent,
        );
        let got = next_publish(&mut subscriber, Duration::from_secs(10)).expect("delivered");
        assert_eq!(payload(&got), sent.to_string());
        let trip = t0.elapsed();
        worst = worst.max(trip);
        slow_trips += usize::from(trip > Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("attacker thread");
    }
    let refused = refusals.load(Ordering::Relaxed);
    eprintln!(
        "one verification {verification:?} ({rounds} rounds); {refused} wrong passwords refused; \
         {sent} round trips, worst {worst:?}, {slow_trips} over 10 ms"
    );
    // The helper thread that hashed lowered its own priority (field 19 of /proc/…/stat: nice).
    let niced = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            stat.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(16)?
                .parse::<i32>()
                .ok()
        })
        .filter(|&nice| nice > 0)
        .count();
    assert!(niced >= 1, "no thread runs at a lowered priority");
    // The queue of wrong passwords was never empty: verifications ran the whole time.
    assert!(refused >= 3, "the attack ran ({refused} refusals)");
    assert!(
        worst < verification / 3,
        "a round trip took {worst:?}, one verification takes {verification:?}: the loop waited on hashing"
    );
}

// ---- amqtt_passwd ------------------------------------------------------------------------

fn passwd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amqtt_passwd"))
        .args(args)
        .output()
        .expect("amqtt_passwd runs")
}

fn users(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn amqtt_passwd_batch_mode_creates_updates_and_deletes_and_the_broker_accepts_the_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passwd");
    let file = path.to_str().expect("utf-8 path");

    let missing = passwd(&["-b", file, "alice", "pw"]);
    assert!(!missing.status.success(), "without -c the file must exist");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("use -c"));

    assert!(passwd(&["-c", "-b", file, "alice", "first"])
        .status
        .success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new password file is private");
    assert!(passwd(&["-b", file, "bob", "builder"]).status.success());
    // A comment added by hand survives updates.
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.insert_str(0, "# managed by hand too\n");
    std::fs::write(&path, text).expect("write");
    assert!(
        passwd(&["-b", file, "alice", "wonderland"])
            .status
            .success(),
        "update"
    );
    assert!(passwd(&["-b", file, "carol", "c"]).status.success());
    assert!(passwd(&["-D", file, "carol"]).status.success());
    assert_eq!(users(&path), ["alice", "bob"]);
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .starts_with("# managed by hand too\n"));

    let bad = passwd(&["-D", file, "carol"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not in"));
    assert!(
        !passwd(&["-b", file, "dave"]).status.success(),
        "-b needs a password"
    );
    assert!(
        !passwd(&["-b", file, "a:b", "x"]).status.success(),
        "':' in a user name"
    );
    assert!(
        !passwd(&["-b", file, "erin", ""]).status.success(),
        "empty password"
    );

    // Every line is what `mkpasswd -m sha-512` would write for that salt.
    let text = std::fs::read_to_string(&path).expect("read");
    let alice_hash = text
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .expect("alice")
        .to_string();
    assert!(password_file::verify(b"wonderland", &alice_hash));
    if let Ok(out) = Command::new("mkpasswd")
        .args([
            "-m",
            "sha-512",
            "-S",
            alice_hash.split('$').nth(2).expect("salt"),
            "wonderland",
        ])
        .output()
    {
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), alice_hash);
        }
    }

    let (_broker, addr) = start(&auth_yaml(&path, false), 1);
    expect_connack(
        addr,
        login("a", Some("alice"), Some("wonderland")),
        ConnectReturnCode::Accepted,
    );
    expect_connack(
        addr,
        login("a2", Some("alice"), Some("first")),
        ConnectReturnCode::NotAuthorized,
    );
    expect_connack(
        addr,
        login("b", Some("bob"), Some("builder")),
        ConnectReturnCode::Accepted,
    );
    expect_connack(
        addr,
        login("c", Some("carol"), Some("c")),
        ConnectReturnCode::NotAuthorized,
    );
}

#[test]
fn amqtt_passwd_prompts_twice_on_the_terminal() {
    let _serial = serial();
    // `script` gives the tool a terminal; what we write to its stdin is typed on it.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script (util-linux) not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passwd");
    let run = |typed: &str| {
        let command = format!(
            "{} -c {} alice",
            env!("CARGO_BIN_EXE_amqtt_passwd"),
            path.display()
        );
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script runs");
        let mut stdin = child.stdin.take().expect("stdin");
        for line in typed.lines() {
            // One line at a time, after the prompt had time to turn echo off.
            std::thread::sleep(Duration::from_millis(300));
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        child.wait_with_output().expect("output")
    };
    let out = run("s3cret\ns3cret\n");
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        screen.contains("Password:") && screen.contains("Reenter password:"),
        "{screen}"
    );
    assert!(
        !screen.contains("s3cret"),
        "the password was echoed: {screen}"
    );
    let text = std::fs::read_to_string(&path).expect("written");
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .expect("alice");
    assert!(password_file::verify(b"s3cret", hash));

    let out = run("one\ntwo\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("do not match"),
        "{out:?}"
    );
}

// ---- plugins added by an embedding program -------------------------------------------------

mod embedded {
    use super::*;
    use amqtt::plugins::{
        AuthDecision, AuthPlugin, BoxError, ClientInfo, Credentials, EventPlugin, Plugin,
        TopicAction, TopicPlugin,
    };

    /// Allows the password `let-me-in`, denies any other, abstains for anonymous clients.
    struct Token;

    impl AuthPlugin for Token {
        fn name(&self) -> &str {
            "token"
        }
        fn authenticate(&self, c: &Credentials) -> Result<AuthDecision, BoxError> {
            Ok(match (&c.username, c.password.as_deref()) {
                (None, _) => AuthDecision::Abstain,
                (Some(_), Some(b"let-me-in")) => AuthDecision::Allow,
                (Some(_), _) => AuthDecision::Deny,
            })
        }
    }

    /// A plugin with a bug.
    struct Broken;

    impl AuthPlugin for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
            panic!("a bug in a plugin")
        }
    }

    struct NoSecrets;

    impl TopicPlugin for NoSecrets {
        fn name(&self) -> &str {
            "no_secrets"
        }
        fn allow(&self, _: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
            !action.topic().starts_with("secret/")
        }
    }

    struct Connections(Arc<AtomicU64>);

    impl EventPlugin for Connections {
        fn name(&self) -> &str {
            "connections"
        }
        fn client_connected(&self, _: &ClientInfo<'_>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn start_with(yaml: &str, plugins: Vec<Plugin>) -> (BrokerHandle, SocketAddr) {
        let text = format!("listeners:\n  default:\n    bind: 127.0.0.1:0\n{yaml}");
        let mut config = BrokerConfig::from_yaml_str(&text, "test.yaml").expect("config");
        config.shards = ShardCount::Fixed(2);
        config.pin_shards = false;
        let broker = plugins
            .into_iter()
            .fold(Broker::new(config).expect("broker"), Broker::with_plugin)
            .start()
            .expect("starts");
        let addr = broker.address("default").expect("listener");
        (broker, addr)
    }

    #[test]
    fn plugins_added_through_the_builder_authenticate_check_topics_and_hear_events() {
        let _serial = serial();
        let connected = Arc::new(AtomicU64::new(0));
        let (_broker, addr) = start_with(
            "",
            vec![
                Plugin::auth(Token),
                Plugin::topic(NoSecrets),
                Plugin::events(Connections(connected.clone())),
            ],
        );
        let mut ok = expect_connack(
            addr,
            login("a", Some("anyone"), Some("let-me-in")),
            ConnectReturnCode::Accepted,
        );
        expect_connack(
            addr,
            login("b", Some("anyone"), Some("guess")),
            ConnectReturnCode::NotAuthorized,
        );
        expect_connack(addr, login("c", None, None), ConnectReturnCode::Accepted);
        assert_eq!(
            subscribe(
                &mut ok,
                &[("secret/#", QoS::AtMostOnce), ("open/#", QoS::AtMostOnce)]
            ),
            [
                SubscribeReturnCode::Failure,
                SubscribeReturnCode::Success(QoS::AtMostOnce)
            ]
        );
        assert_eq!(
            connected.load(Ordering::Relaxed),
            2,
            "refused clients are not reported"
        );
    }

    #[test]
    fn a_panicking_auth_plugin_denies_and_the_broker_goes_on() {
        let _serial = serial();
        let (_broker, addr) = start_with(
            "auth:\n  plugins: [auth_anonymous, broken]\n",
            vec![Plugin::auth(Broken)],
        );
        for i in 0..3 {
            expect_connack(
                addr,
                login(&format!("c{i}"), Some("u"), Some("p")),
                ConnectReturnCode::NotAuthorized,
            );
        }
        expect_connack(
            addr,
            login("anon", None, None),
            ConnectReturnCode::NotAuthorized,
        );
    }

    #[test]
    fn an_added_plugin_with_a_builtin_name_fails_at_start() {
        let _serial = serial();
        struct Impostor;
        impl AuthPlugin for Impostor {
            fn name(&self) -> &str {
                "auth_file"
            }
            fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
                Ok(AuthDecision::Allow)
            }
        }
        let config = BrokerConfig::from_yaml_str(
            "listeners:\n  default:\n    bind: 127.0.0.1:0\n",
            "test.yaml",
        )
        .expect("config");
        let error = match Broker::new(config)
            .expect("broker")
            .with_plugin(Plugin::auth(Impostor))
            .start()
        {
            Ok(_) => panic!("started"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("plugin 'auth_file'") && error.contains("built-in"),
            "{error}"
        );
    }
}
