//! The client library and the CLIs against Mosquitto (Debian `mosquitto`, started by each test on a
//! free loopback port), so they are known to work with a broker other than ours. Each test is
//! skipped, with a loud message, only when the `mosquitto` binary is not installed.

mod client_support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_lite::future::block_on;

use amqtt::client::{ClientConfig, ClientError, MqttClient};
use amqtt::protocol::{ConnectReturnCode, QoS, SubscribeReturnCode};

use client_support::{eventually, pub_bin, run_cli, Mosquitto, RunningSub};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const LIMIT: Duration = Duration::from_secs(20);

fn connected(url: &str, id: &str, config: ClientConfig) -> MqttClient {
    let client = MqttClient::new(Some(id.into()), config);
    block_on(client.connect(url)).expect("connect to mosquitto");
    client
}

#[test]
fn library_round_trip_at_every_qos() {
    // A window wider than the 90 messages: Mosquitto 2.0.11 loses QoS 1 messages that queue behind
    // a full window to a QoS 2 subscriber (`mosquitto_sub` sees the same), which is not ours to test.
    let Some(mosquitto) = Mosquitto::start(
        "library_round_trip_at_every_qos",
        "max_inflight_messages 100",
    ) else {
        return;
    };
    let url = mosquitto.url();
    let sub = connected(&url, "m-sub", ClientConfig::default());
    let pubr = connected(&url, "m-pub", ClientConfig::default());
    block_on(async {
        let codes = sub.subscribe(&[("m/#", QoS::ExactlyOnce)]).await.unwrap();
        assert_eq!(codes, vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]);
        let pending: Vec<_> = (0..90)
            .map(|i| {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
                pubr.start_publish(&format!("m/{i}"), format!("{i}"), Some(qos), None)
                    .unwrap()
            })
            .collect();
        for p in pending {
            p.wait().await.expect("QoS flow completes with mosquitto");
        }
        let mut seen = BTreeSet::new();
        for _ in 0..90 {
            let m = match sub.deliver_message(WAIT).await {
                Ok(m) => m,
                Err(e) => panic!("after {} messages: {e}", seen.len()),
            };
            seen.insert(m.message.topic.as_str().to_string());
        }
        assert_eq!(seen.len(), 90);
        sub.unsubscribe(&["m/#"]).await.unwrap();
        pubr.publish("m/late", "x", Some(QoS::AtLeastOnce), None)
            .await
            .unwrap();
        assert!(sub
            .deliver_message(Some(Duration::from_millis(300)))
            .await
            .is_err());
        sub.disconnect().await.unwrap();
        pubr.disconnect().await.unwrap();
    });
}

#[test]
fn keep_alive_pings_keep_the_connection_open() {
    let Some(mosquitto) = Mosquitto::start("keep_alive_pings_keep_the_connection_open", "") else {
        return;
    };
    let config =
        ClientConfig::from_yaml_str("keep_alive: 1\nping_delay: 0.5\nauto_reconnect: false", "t")
            .unwrap();
    let client = connected(&mosquitto.url(), "m-ping", config);
    block_on(client.subscribe(&[("p", QoS::AtLeastOnce)])).unwrap();
    // Mosquitto drops a client silent for 1.5 x keep_alive; three periods of silence from the user.
    std::thread::sleep(Duration::from_secs(4));
    assert!(client.is_connected());
    block_on(client.publish("p", "still here", Some(QoS::AtLeastOnce), None)).unwrap();
    assert_eq!(
        &block_on(client.deliver_message(WAIT))
            .unwrap()
            .message
            .payload[..],
        b"still here"
    );
}

#[test]
fn refusal_by_mosquitto_is_reported_in_words() {
    let Some(mosquitto) = Mosquitto::start(
        "refusal_by_mosquitto_is_reported_in_words",
        "allow_anonymous false",
    ) else {
        return;
    };
    let client = MqttClient::new(None, ClientConfig::default());
    let err = block_on(client.connect(&mosquitto.url())).unwrap_err();
    assert!(
        matches!(err, ClientError::Refused(ConnectReturnCode::NotAuthorized)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "connection refused by the broker: not authorized"
    );

    let run = run_cli(
        pub_bin(),
        &["--url", &mosquitto.url(), "-t", "a", "-m", "x"],
        b"",
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("not authorized"), "{}", run.stderr);
}

#[test]
fn cli_pub_to_cli_sub_through_mosquitto() {
    let Some(mosquitto) = Mosquitto::start("cli_pub_to_cli_sub_through_mosquitto", "") else {
        return;
    };
    let url = mosquitto.url();
    let mut sub = RunningSub::spawn(&["--url", &url, "-t", "cli/#", "-q", "2", "-v", "-n", "4"]);
    assert!(
        sub.wait_stderr("subscribed to", 1, LIMIT),
        "{}",
        sub.stderr()
    );
    for (args, stdin) in [
        (vec!["-t", "cli/m", "-m", "hello", "-q", "1"], &b""[..]),
        (vec!["-t", "cli/l", "-l", "-q", "2"], &b"a\r\n\nb\n"[..]),
        (vec!["-t", "cli/n", "-n"], &b""[..]),
    ] {
        let mut all = vec!["--url", url.as_str()];
        all.extend(args);
        let run = run_cli(pub_bin(), &all, stdin, LIMIT);
        assert!(run.status.success(), "{}", run.stderr);
    }
    let mut lines: Vec<String> = (0..4)
        .map(|_| sub.next_text(Duration::from_secs(5)).expect("a line"))
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["cli/l a", "cli/l b", "cli/m hello", "cli/n "]);
    let status = client_support::wait_exit(&mut sub.child, LIMIT).expect("exits after -n 4");
    assert!(status.success());
}

/// Mosquitto with persistence restarts under a running `amqtt_sub` (auto_reconnect on, clean
/// session off): its session survives, so QoS 1 messages published while it is away, by a
/// publisher that itself buffers them during the outage, are all delivered when it is back.
#[test]
fn amqtt_sub_resumes_its_session_across_a_mosquitto_restart() {
    let Some(mut mosquitto) = Mosquitto::start(
        "amqtt_sub_resumes_its_session_across_a_mosquitto_restart",
        "persistence true",
    ) else {
        return;
    };
    let url = mosquitto.url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.yaml");
    std::fs::write(
        &config,
        "auto_reconnect: true\nreconnect_retries: -1\nreconnect_max_interval: 0.3\n",
    )
    .unwrap();
    let sub = RunningSub::spawn(&[
        "--url",
        &url,
        "-t",
        "gap/#",
        "-q",
        "1",
        "-i",
        "m-gap-sub",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert!(
        sub.wait_stderr("subscribed to", 1, LIMIT),
        "{}",
        sub.stderr()
    );
    let publisher_config = ClientConfig::from_yaml_str(
        "auto_reconnect: true\nreconnect_retries: -1\nreconnect_max_interval: 0.3\ncleansession: false",
        "t",
    )
    .unwrap();
    let publisher = connected(&url, "m-gap-pub", publisher_config);

    mosquitto.stop();
    assert!(eventually(Duration::from_secs(5), || !publisher.is_connected()));
    let during: Vec<_> = (1..=20)
        .map(|i| {
            publisher
                .start_publish(
                    &format!("gap/{i}"),
                    format!("m{i}"),
                    Some(QoS::AtLeastOnce),
                    None,
                )
                .unwrap()
        })
        .collect();
    mosquitto.restart();
    for p in during {
        block_on(p.wait()).expect("re-sent after the reconnect");
    }
    let mut got: Vec<String> = (1..=20)
        .map(|_| {
            sub.next_text(Duration::from_secs(10))
                .expect("every message from the gap")
        })
        .collect();
    got.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        sub.stderr().contains("session present: true"),
        "the session was resumed:\n{}",
        sub.stderr()
    );
    block_on(publisher.disconnect()).unwrap();
}
