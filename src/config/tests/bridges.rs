//! Tests of the `bridges:` block: every key, the defaults, the shipped example, and the error
//! (key path, reason) for each kind of bad value.

use super::*;
use crate::protocol::ProtocolLevel;

const LISTENER: &str = "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:1883\n";

fn bridge(body: &str) -> String {
    format!("{LISTENER}bridges:\n  cloud:\n{body}")
}

#[test]
fn no_bridges_by_default_and_the_defaults_of_one() {
    assert!(BrokerConfig::default().bridges.is_empty());
    let c = ok(&bridge(
        "    url: mqtt://remote:1883\n    topics:\n      - {pattern: 'a/#'}\n",
    ));
    assert_eq!(
        c.bridges,
        [BridgeConfig {
            name: "cloud".into(),
            url: "mqtt://remote:1883".into(),
            client_id: "amqtt-bridge-cloud".into(),
            clean_session: false,
            keep_alive: DEFAULT_BRIDGE_KEEP_ALIVE,
            protocol: ProtocolLevel::V311,
            ca_file: None,
            certfile: None,
            keyfile: None,
            insecure: false,
            local_client_id: "amqtt-bridge-cloud".into(),
            local_username: None,
            local_password: None,
            local_listener: None,
            topics: vec![BridgeTopic {
                pattern: "a/#".into(),
                direction: BridgeDirection::Out,
                qos: 0,
                local_prefix: String::new(),
                remote_prefix: String::new(),
            }],
        }]
    );
}

#[test]
fn every_key_is_read_with_either_spelling() {
    let c = ok(&bridge(
        "    url: mqtts://u:p@remote:8883
    client-id: site1
    clean_session: true
    keep-alive: 30
    ca_file: /ca.pem
    certfile: /c.pem
    keyfile: /c.key
    insecure: yes
    local_client_id: here
    local_username: bridge
    local_password: pw
    local_listener: default
    topics:
      - {pattern: 'sensors/#', direction: out, qos: 1, local_prefix: '', remote_prefix: 'site1/'}
      - {pattern: 'cmd/+', direction: both, qos: 2, local_prefix: 'l/', remote_prefix: 'r/'}
",
    ));
    let b = &c.bridges[0];
    assert_eq!(b.client_id, "site1");
    assert!(b.clean_session && b.insecure);
    assert_eq!(b.keep_alive, 30);
    assert_eq!(b.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(b.keyfile, Some(PathBuf::from("/c.key")));
    assert_eq!(b.local_client_id, "here");
    assert_eq!(b.local_username.as_deref(), Some("bridge"));
    assert_eq!(b.local_listener.as_deref(), Some("default"));
    assert_eq!(b.topics[1].direction, BridgeDirection::Both);
    assert_eq!(b.topics[1].qos, 2);
    assert_eq!(b.topics[1].remote_prefix, "r/");
}

#[test]
fn protocol_version_takes_our_spellings_and_mosquittos() {
    for (written, level) in [
        ("3.1.1", ProtocolLevel::V311),
        ("'3.1.1'", ProtocolLevel::V311),
        ("311", ProtocolLevel::V311),
        ("mqttv311", ProtocolLevel::V311),
        ("5", ProtocolLevel::V5),
        ("5.0", ProtocolLevel::V5),
        ("'5'", ProtocolLevel::V5),
        ("mqttv50", ProtocolLevel::V5),
        ("MQTTv5", ProtocolLevel::V5),
    ] {
        let c = ok(&bridge(&format!(
            "    url: mqtt://r\n    protocol-version: {written}\n    topics:\n      - {{pattern: 'a'}}\n"
        )));
        assert_eq!(c.bridges[0].protocol, level, "{written}");
    }
    for bad in ["3.1", "4", "6", "mqttv31", "v5", "[5]"] {
        let text = bridge(&format!(
            "    url: mqtt://r\n    protocol_version: {bad}\n    topics:\n      - {{pattern: 'a'}}\n"
        ));
        if bad == "[5]" {
            // Not a scalar: serde's error, naming what is expected.
            let e = err(&text);
            assert!(e.to_string().contains("3.1.1 or 5"), "{e}");
        } else {
            invalid(
                &text,
                "bridges.cloud.protocol_version",
                &format!("must be 3.1.1 or 5, got '{bad}'"),
            );
        }
    }
}

#[test]
fn example_bridges_yaml_loads() {
    let c = ok(include_str!("../../../config/bridges.yaml"));
    assert_eq!(c.bridges.len(), 1);
    assert_eq!(c.bridges[0].name, "to-cloud");
    assert_eq!(c.bridges[0].topics.len(), 2);
    assert_eq!(c.bridges[0].protocol, ProtocolLevel::V5);
    assert!(c.persistence.enabled);
}

#[test]
fn bad_bridges_name_the_key_and_the_reason() {
    let topics = "    topics:\n      - {pattern: 'a/#'}\n";
    invalid(&bridge(topics), "bridges.cloud.url", "required");
    for (url, needle) in [
        ("http://remote", "unknown scheme 'http'"),
        ("remote:1883", "is not a URL"),
        ("mqtt://:1883", "names no host"),
    ] {
        invalid(
            &bridge(&format!("    url: {url}\n{topics}")),
            "bridges.cloud.url",
            needle,
        );
    }
    invalid(
        &bridge("    url: mqtt://r\n"),
        "bridges.cloud.topics",
        "at least one",
    );
    invalid(
        &bridge(&format!(
            "    url: mqtt://r\n    ca_file: /ca.pem\n{topics}"
        )),
        "bridges.cloud.url",
        "mqtts:// and wss:// only",
    );
    invalid(
        &bridge(&format!(
            "    url: mqtts://r\n    certfile: /c.pem\n{topics}"
        )),
        "bridges.cloud.keyfile",
        "give both or neither",
    );
    invalid(
        &bridge(&format!("    url: mqtt://r\n    keep_alive: 0\n{topics}")),
        "bridges.cloud.keep_alive",
        "5 to 65535",
    );
    invalid(
        &bridge(&format!(
            "    url: mqtt://r\n    local_listener: nope\n{topics}"
        )),
        "bridges.cloud.local_listener",
        "no listener named 'nope'",
    );
    for (entry, key, needle) in [
        ("{qos: 1}", "pattern", "required"),
        ("{pattern: 'a/#/b'}", "pattern", "must be the last level"),
        ("{pattern: 'a+'}", "pattern", "whole level"),
        ("{pattern: 'a', qos: 3}", "qos", "0, 1 or 2"),
        (
            "{pattern: 'a', remote_prefix: 'x/#/'}",
            "remote_prefix",
            "may not contain",
        ),
    ] {
        invalid(
            &bridge(&format!(
                "    url: mqtt://r\n    topics:\n      - {entry}\n"
            )),
            &format!("bridges.cloud.topics[0].{key}"),
            needle,
        );
    }
    let e = err(&bridge(
        "    url: mqtt://r\n    topics:\n      - {pattern: 'a', direction: sideways}\n",
    ));
    assert!(e.to_string().contains("sideways"), "{e}");
    let e = err(&bridge(&format!(
        "    url: mqtt://r\n    colour: blue\n{topics}"
    )));
    assert!(e.to_string().contains("colour"), "{e}");
    // The local session needs a plain TCP listener.
    let ws_only = format!(
        "listeners:\n  default:\n    type: ws\n    bind: 127.0.0.1:8080\nbridges:\n  cloud:\n    url: mqtt://r\n{topics}"
    );
    invalid(&ws_only, "bridges.cloud", "plain TCP listener");
}
