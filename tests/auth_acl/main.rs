//! Authentication and access control over real sockets: password files (good, bad and unknown
//! users, anonymous clients), refused clients' wills, topic ACLs on SUBSCRIBE and PUBLISH, the
//! example configuration, slow password verification not stalling a shard, and `amqtt_passwd`.
//!
//! Tests here run one at a time (`serial()`): the stall test measures latency and must not share
//! the machine's two cores with the others.
//!
//! The topic ACL tests are in `acl.rs` and `acl_tables.rs` (which table governs what), `amqtt_passwd`'s in `passwd.rs`, and plugins added by an
//! embedding program in `embedded.rs`, what auth plugins see of a TLS connection and `auth_cert` in
//! `cert_identity.rs`; the helpers they share are here.

#[path = "../common/mod.rs"]
mod common;

mod acl;
mod acl_tables;
mod cert_identity;
mod embedded;
mod passwd;

use std::net::SocketAddr;
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
            properties: None,
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
    let probe = password_file::hash_sha512_with(b"x", b"probe-salt-1", 50_000).expect("hash");
    let per_round = (0..2)
        .map(|_| {
            let started = Instant::now();
            assert!(password_file::verify(b"x", &probe));
            started.elapsed().as_secs_f64() / 50_000.0
        })
        .fold(f64::MAX, f64::min);
    let rounds = ((0.3 / per_round) as u32).clamp(5_000, 100_000_000);
    let slow = password_file::hash_sha512_with(b"right", b"slow-salt-12", rounds).expect("hash");
    let started = Instant::now();
    assert!(!password_file::verify(b"wrong", &slow));
    let verification = started.elapsed();
    eprintln!("{rounds} rounds of SHA-512 crypt");
    hashing_stays_off_the_event_loop(&slow, verification);
}

/// Four threads log in as a user whose `slow` hash costs `verification` with wrong passwords,
/// while a publisher and a subscriber on the same (only) shard exchange QoS 1 messages: the pair's
/// latency must stay far below one verification.
fn hashing_stays_off_the_event_loop(slow: &str, verification: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = password_file(&dir, &[("alice", ALICE_HUNTER2), ("slow", slow)]);
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
        "one verification {verification:?}; {refused} wrong passwords refused; \
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
