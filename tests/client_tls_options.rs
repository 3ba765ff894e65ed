//! The client's TLS options against our broker, with certificates the test makes: a client
//! certificate (`--cert`/`--key` on the CLIs, `certfile`/`keyfile` in the client YAML) for
//! listeners that require one, over mqtts and wss; and `--insecure` / `check_hostname: false` /
//! `verify_cert: false` for a broker whose certificate names another host.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use amqtt::client::{ClientConfig, MqttClient};
use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::{Broker, BrokerHandle};
use common::certs::TestCerts;
use futures_lite::future::block_on;

/// A broker with four TLS listeners on `host`: `tls` and `wss` require a client certificate
/// signed by the test CA, `tls_open` and `wss_open` do not.
fn start(host: &str) -> (BrokerHandle, TestCerts) {
    let certs = common::certs::make();
    let tls = certs.tls_listener_keys();
    let mutual = format!(
        "{tls}    cafile: {}\n    require-certificate: true\n",
        certs.ca.display()
    );
    let yaml = format!(
        "listeners:\n  default:\n    bind: {host}:0\n\
         \x20 tls:\n    bind: {host}:0\n{mutual}\
         \x20 wss:\n    bind: {host}:0\n    type: ws\n{mutual}\
         \x20 tls_open:\n    bind: {host}:0\n{tls}\
         \x20 wss_open:\n    bind: {host}:0\n    type: ws\n{tls}"
    );
    let mut config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config");
    config.shards = ShardCount::Fixed(2);
    config.pin_shards = false;
    (
        Broker::new(config).and_then(Broker::start).expect("start"),
        certs,
    )
}

fn url(broker: &BrokerHandle, listener: &str, host: &str) -> String {
    let addr = broker.address(listener).expect("listener");
    let scheme = if listener.starts_with("wss") {
        "wss"
    } else {
        "mqtts"
    };
    format!("{scheme}://{host}:{}/mqtt", addr.port())
}

fn publish(url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amqtt_pub"))
        .args(["--url", url, "-t", "tls/x", "-m", "hello", "-q", "1"])
        .args(extra)
        .output()
        .expect("amqtt_pub runs")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `--ca-file` with the test CA, `--cert` with the client certificate and `--key KEY`.
fn with_cert<'a>(certs: &'a TestCerts, key: &'a Path) -> [&'a str; 6] {
    [
        "--ca-file",
        path(&certs.ca),
        "--cert",
        path(&certs.client_cert),
        "--key",
        path(key),
    ]
}

#[test]
fn a_listener_requiring_certificates_takes_cli_clients_with_cert_and_key() {
    let (broker, certs) = start("127.0.0.1");
    for listener in ["tls", "wss"] {
        let url = url(&broker, listener, "localhost");
        let accepted = publish(&url, &with_cert(&certs, &certs.client_key));
        assert!(accepted.status.success(), "{listener}: {accepted:?}");

        let without = publish(&url, &["--ca-file", path(&certs.ca)]);
        assert_eq!(without.status.code(), Some(1), "{listener}: {without:?}");
        let stderr = String::from_utf8_lossy(&without.stderr);
        assert!(
            stderr.starts_with("amqtt_pub: connection to localhost:")
                && stderr.contains("CertificateRequired"),
            "{listener}: {stderr}"
        );

        // A certificate with the wrong key is refused before anything is sent.
        let mismatched = publish(&url, &with_cert(&certs, &certs.server_key));
        assert_eq!(mismatched.status.code(), Some(1), "{mismatched:?}");
        let stderr = String::from_utf8_lossy(&mismatched.stderr);
        assert!(
            stderr.contains("does not match the certificate"),
            "{stderr}"
        );
    }
    // --cert needs --key, and a TLS URL.
    let alone = publish(
        &url(&broker, "tls", "localhost"),
        &["--cert", path(&certs.client_cert)],
    );
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    let plain = format!(
        "mqtt://127.0.0.1:{}",
        broker.address("default").expect("default").port()
    );
    let plain = publish(&plain, &with_cert(&certs, &certs.client_key));
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("need a TLS connection"));
}

#[test]
fn the_client_yaml_certfile_and_keyfile_reach_the_handshake() {
    let (broker, certs) = start("127.0.0.1");
    let yaml = |with_cert: bool| {
        let mut yaml = format!(
            "auto_reconnect: false\nconnection:\n  cafile: {}\n",
            certs.ca.display()
        );
        if with_cert {
            yaml += &format!(
                "  certfile: {}\n  keyfile: {}\n",
                certs.client_cert.display(),
                certs.client_key.display()
            );
        }
        ClientConfig::from_yaml_str(&yaml, "client.yaml").expect("client yaml")
    };
    for listener in ["tls", "wss"] {
        let url = url(&broker, listener, "localhost");
        let client = MqttClient::new(None, yaml(true));
        block_on(client.connect(&url)).unwrap_or_else(|e| panic!("{listener}: {e}"));
        block_on(client.disconnect()).expect("disconnect");
        let refused = MqttClient::new(None, yaml(false));
        let error = block_on(refused.connect(&url)).expect_err("no certificate");
        assert!(
            error.to_string().contains("CertificateRequired"),
            "{listener}: {error}"
        );
    }
}

/// The broker listens on 127.0.0.2, which its certificate (localhost, 127.0.0.1) does not name.
#[test]
fn insecure_takes_a_certificate_for_another_host_name_but_not_from_another_ca() {
    let (broker, certs) = start("127.0.0.2");
    for listener in ["tls_open", "wss_open"] {
        let url = url(&broker, listener, "127.0.0.2");
        let refused = publish(&url, &["--ca-file", path(&certs.ca)]);
        assert_eq!(refused.status.code(), Some(1), "{listener}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("certificate not valid for name \"127.0.0.2\"")
                && stderr.contains("--insecure"),
            "{listener}: {stderr}"
        );

        let accepted = publish(&url, &["--ca-file", path(&certs.ca), "--insecure"]);
        assert!(accepted.status.success(), "{listener}: {accepted:?}");

        // --insecure skips the name only: a CA the client does not trust is still refused.
        let untrusted = publish(&url, &["--cafile", path(&certs.other_ca), "--insecure"]);
        assert_eq!(
            untrusted.status.code(),
            Some(1),
            "{listener}: {untrusted:?}"
        );
        let stderr = String::from_utf8_lossy(&untrusted.stderr);
        assert!(stderr.contains("UnknownIssuer"), "{listener}: {stderr}");
    }

    // The same from aMQTT's client options in the library.
    let url = url(&broker, "tls_open", "127.0.0.2");
    let connect = |extra: &str| {
        let yaml = format!(
            "auto_reconnect: false\nconnection:\n  cafile: {}\n{extra}",
            certs.other_ca.display()
        );
        let config = ClientConfig::from_yaml_str(&yaml, "client.yaml").expect("yaml");
        let client = MqttClient::new(None, config);
        let result = block_on(client.connect(&url)).map_err(|e| e.to_string());
        if result.is_ok() {
            block_on(client.disconnect()).expect("disconnect");
        }
        result
    };
    let error = connect("check_hostname: false\n").expect_err("other CA");
    assert!(error.contains("UnknownIssuer"), "{error}");
    connect("verify_cert: false\n").expect("verify_cert: false takes any certificate");
}
