//! Unit tests of the client configuration: aMQTT's defaults, every key, and errors that name the
//! file, the key and the reason once.

use super::*;

fn load(yaml: &str) -> Result<ClientConfig, ClientConfigError> {
    ClientConfig::from_yaml_str(yaml, "client.yaml")
}

#[test]
fn empty_text_gives_amqtt_defaults() {
    let config = load("").unwrap();
    assert_eq!(config, ClientConfig::default());
    assert_eq!(config.keep_alive, 10);
    assert_eq!(config.reconnect_retries, 2);
    assert!(config.auto_reconnect && config.clean_session);
}

#[test]
fn amqtt_default_client_yaml_loads() {
    let yaml = "---\nkeep_alive: 10\nping_delay: 1\ndefault_qos: 0\ndefault_retain: false\n\
                auto_reconnect: true\ncleansession: true\nreconnect_max_interval: 10\n\
                reconnect_retries: 2\nbroker:\n  uri: \"mqtt://127.0.0.1\"\n";
    let config = load(yaml).unwrap();
    assert_eq!(config.connection.uri.as_deref(), Some("mqtt://127.0.0.1"));
}

#[test]
fn every_key_is_read() {
    let yaml = r#"
keep_alive: 30
ping_delay: 0.5
default_qos: 1
default_retain: yes
auto_reconnect: off
reconnect_retries: -1
reconnect_max_interval: 0.2
connection_timeout: 3
cleansession: false
max_inflight: 7
topics:
  a/b: {qos: 2, retain: true}
  c:
will:
  topic: dead/c1
  message: gone
  qos: 1
  retain: true
connection:
  uri: mqtt://u:p@127.0.0.1:1884
  cafile: /etc/ca.pem
  certfile: /etc/client.pem
  keyfile: /etc/client.key
check_hostname: false
verify_cert: no
plugins:
  amqtt.plugins.logging_amqtt.PacketLoggerPlugin: {}
qos1_puback_timeout: 5
"#;
    let c = load(yaml).unwrap();
    assert_eq!(c.keep_alive, 30);
    assert_eq!(c.ping_delay, Duration::from_millis(500));
    assert_eq!(c.default_qos, QoS::AtLeastOnce);
    assert!(c.default_retain);
    assert!(!c.auto_reconnect);
    assert_eq!(c.reconnect_retries, -1);
    assert_eq!(c.reconnect_max_interval, Duration::from_millis(200));
    assert_eq!(c.connection_timeout, Duration::from_secs(3));
    assert!(!c.clean_session);
    assert_eq!(c.max_inflight, 7);
    assert_eq!(
        c.publish_defaults("a/b"),
        TopicDefaults {
            qos: QoS::ExactlyOnce,
            retain: true
        }
    );
    assert_eq!(
        c.publish_defaults("c"),
        TopicDefaults {
            qos: QoS::AtMostOnce,
            retain: false
        }
    );
    assert_eq!(
        c.publish_defaults("other"),
        TopicDefaults {
            qos: QoS::AtLeastOnce,
            retain: true
        }
    );
    let will = c.will.unwrap();
    assert_eq!(will.topic.as_str(), "dead/c1");
    assert_eq!(&will.payload[..], b"gone");
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
    assert_eq!(c.connection.cafile, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(
        c.connection.certfile,
        Some(PathBuf::from("/etc/client.pem"))
    );
    assert_eq!(c.connection.keyfile, Some(PathBuf::from("/etc/client.key")));
    assert!(!c.check_hostname && !c.verify_cert);
}

#[test]
fn the_default_broker_is_amqtt_and_mosquitto_s() {
    let config = load("keep_alive: 5").unwrap();
    assert_eq!(config.connection.uri, None);
    assert_eq!(config.connection.uri_or_default(), "mqtt://127.0.0.1:1883");
    assert!(config.check_hostname && config.verify_cert);
}

#[test]
fn errors_name_the_file_key_and_reason() {
    for (yaml, key, reason) in [
        ("default_qos: 3", "default_qos", "QoS must be 0, 1 or 2"),
        ("keep_alive: 70000", "keep_alive", "invalid value"),
        ("keep_alive: abc", "keep_alive", "invalid type"),
        (
            "reconnect_max_interval: -1",
            "reconnect_max_interval",
            "0 or more",
        ),
        ("connection_timeout: 0", "connection_timeout", "more than 0"),
        ("bogus: 1", "bogus", "unknown key `bogus`"),
        (
            "topics:\n  a/+: {qos: 1}",
            "topics.a/+",
            "invalid topic name",
        ),
        ("topics:\n  a: {qos: 5}", "topics.a.qos", "QoS must be"),
        ("will:\n  topic: t", "will", "missing field `message`"),
        (
            "will:\n  topic: t\n  message: m\n  qos: 9",
            "will.qos",
            "QoS must be",
        ),
        (
            "connection:\n  certfile: c.pem",
            "connection.certfile",
            "needs its private key",
        ),
        (
            "broker:\n  keyfile: c.key",
            "broker.keyfile",
            "needs its certificate",
        ),
        ("plugins:\n  my.Plugin: {}", "plugins", "plugin 'my.Plugin'"),
        ("auto_reconnect: maybe", "auto_reconnect", "invalid value"),
    ] {
        match load(yaml) {
            Err(ClientConfigError::Invalid {
                file,
                key: k,
                reason: r,
            }) => {
                assert_eq!(file, "client.yaml", "{yaml}");
                assert_eq!(k, key, "{yaml}");
                assert!(r.contains(reason), "{yaml}: {r}");
            }
            other => panic!("{yaml}: {other:?}"),
        }
    }
    assert!(matches!(
        load("- a\n- b"),
        Err(ClientConfigError::Syntax { .. })
    ));
    assert!(matches!(
        load("a: [b"),
        Err(ClientConfigError::Syntax { .. })
    ));
}

#[test]
fn a_wrong_integer_says_its_key_once_and_the_range() {
    assert_eq!(
        load("keep_alive: ten").unwrap_err().to_string(),
        "client.yaml: key 'keep_alive': invalid type: string \"ten\", expected an integer \
         0–65535 (line 1, column 13)"
    );
    assert_eq!(
        load("topics:\n  a: {qos: -1}").unwrap_err().to_string(),
        "client.yaml: key 'topics.a.qos': invalid value: integer `-1`, expected an integer \
         0–255 (line 2, column 12)"
    );
}

#[test]
fn from_file_names_the_missing_file() {
    let err = ClientConfig::from_file(Path::new("/nonexistent/client.yaml")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("/nonexistent/client.yaml: cannot read"));
}

#[test]
fn dash_and_underscore_are_one_key_and_topic_names_are_kept() {
    let config = load("keep-alive: 30\ndefault-qos: 1\ntopics:\n  a-b/c_d:\n    qos: 2\n").unwrap();
    assert_eq!(config.keep_alive, 30);
    assert_eq!(config.default_qos, QoS::AtLeastOnce);
    assert_eq!(config.publish_defaults("a-b/c_d").qos, QoS::ExactlyOnce);
    let err = load("keep_alive: 5\nkeep-alive: 6\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'keep-alive' (line 2, column 1) and 'keep_alive' (line 1)"),
        "{err}"
    );
}
