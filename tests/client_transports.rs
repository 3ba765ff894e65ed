//! The client library and CLIs over mqtts, ws and wss against our broker: the URL schemes, CA
//! options and extra WebSocket headers reach the shared transport code.

mod common;

use std::process::Command;
use std::time::Duration;

use amqtt::client::{ClientConfig, ConnectOptions, MqttClient};
use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::protocol::QoS;
use amqtt::{Broker, BrokerHandle};
use futures_lite::future::block_on;

fn start() -> (BrokerHandle, common::certs::TestCerts) {
    let certs = common::certs::make();
    let tls = certs.tls_listener_keys();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n  tls:\n    bind: 127.0.0.1:0\n{tls}  ws:\n    bind: 127.0.0.1:0\n    type: ws\n  wss:\n    bind: 127.0.0.1:0\n    type: ws\n{tls}"
    );
    let mut config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config");
    config.shards = ShardCount::Fixed(2);
    config.pin_shards = false;
    (
        Broker::new(config).and_then(Broker::start).expect("start"),
        certs,
    )
}

fn url(broker: &BrokerHandle, listener: &str, scheme: &str) -> String {
    let port = broker.address(listener).expect("listener").port();
    format!("{scheme}://localhost:{port}/mqtt")
}

#[test]
fn library_round_trip_over_every_scheme() {
    let (broker, certs) = start();
    for (listener, scheme) in [("tls", "mqtts"), ("ws", "ws"), ("wss", "wss")] {
        let options = ConnectOptions {
            ca_file: Some(certs.ca.clone()),
            extra_headers: vec![("X-Test".into(), "1".into())],
            ..Default::default()
        };
        let sub = MqttClient::new(Some(format!("sub-{scheme}")), ClientConfig::default());
        let publisher = MqttClient::new(Some(format!("pub-{scheme}")), ClientConfig::default());
        block_on(async {
            sub.connect_with(&url(&broker, listener, scheme), options.clone())
                .await
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            publisher
                .connect_with(&url(&broker, listener, scheme), options)
                .await
                .expect("publisher connects");
            sub.subscribe(&[("t/#", QoS::ExactlyOnce)])
                .await
                .expect("subscribe");
            publisher
                .publish(
                    "t/x",
                    vec![7u8; 50_000],
                    Some(QoS::ExactlyOnce),
                    Some(false),
                )
                .await
                .expect("publish");
            let message = sub
                .deliver_message(Some(Duration::from_secs(5)))
                .await
                .expect("message");
            assert_eq!(message.message.payload.len(), 50_000, "{scheme}");
            assert_eq!(message.message.qos, QoS::ExactlyOnce);
            sub.disconnect().await.expect("disconnect");
            publisher.disconnect().await.expect("disconnect");
        });
    }
}

#[test]
fn untrusted_certificate_is_a_clear_error() {
    let (broker, certs) = start();
    let client = MqttClient::new(None, ClientConfig::default());
    let options = ConnectOptions {
        ca_file: Some(certs.other_ca.clone()),
        ..Default::default()
    };
    let error = block_on(client.connect_with(&url(&broker, "tls", "mqtts"), options))
        .expect_err("untrusted server")
        .to_string();
    assert!(
        error.contains("TLS: invalid peer certificate: UnknownIssuer")
            && error.contains("give that CA with --ca-file"),
        "{error}"
    );
}

#[test]
fn cli_pub_and_sub_over_wss_and_mqtts() {
    use std::io::{BufRead, BufReader};
    let (broker, certs) = start();
    let publish = |message: &str, retain: bool, broker_args: &[String]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amqtt_pub"));
        cmd.args(broker_args)
            .args(["-t", "cli/x", "-m", message, "-q", "1"]);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("amqtt_pub runs");
        assert!(out.status.success(), "amqtt_pub over mqtts: {out:?}");
    };
    let by_url_and_ca_file = [
        "--url".to_string(),
        url(&broker, "tls", "mqtts"),
        "--ca-file".to_string(),
        certs.ca.display().to_string(),
    ];
    // mosquitto's way: -h and -p, TLS because a CA is given; the CA inline as `"$(cat ca.pem)"`
    // gives it, starting with "-----BEGIN".
    let by_host_and_ca_data = [
        "-h".to_string(),
        "localhost".to_string(),
        "-p".to_string(),
        broker.address("tls").expect("tls").port().to_string(),
        "--ca-data".to_string(),
        std::fs::read_to_string(&certs.ca).expect("read the CA"),
    ];
    // Retained first: once amqtt_sub prints it, it is subscribed and the live one must follow.
    publish("retained over tls", true, &by_url_and_ca_file);
    let mut sub = Command::new(env!("CARGO_BIN_EXE_amqtt_sub"))
        .args([
            "--url",
            &url(&broker, "wss", "wss"),
            "-t",
            "cli/#",
            "-n",
            "2",
            "--ca-file",
        ])
        .arg(&certs.ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("amqtt_sub runs");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("retained over tls")
    );
    publish("live over tls", false, &by_host_and_ca_data);
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("live over tls")
    );
    let status = sub.wait().expect("amqtt_sub ends");
    assert!(status.success());
}
