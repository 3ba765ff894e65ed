//! Tests of the broker configuration: every key, its defaults, and the error (file, key path,
//! reason) each kind of bad input gets. No files are read except the shipped examples.

use super::*;

const F: &str = "config/broker.yaml";

fn load(text: &str) -> Result<BrokerConfig, ConfigError> {
    BrokerConfig::from_yaml_str(text, F)
}

fn ok(text: &str) -> BrokerConfig {
    match load(text) {
        Ok(c) => c,
        Err(e) => panic!("expected success, got: {e}"),
    }
}

fn err(text: &str) -> ConfigError {
    match load(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// Asserts an `Invalid` error on `key` whose message contains `needle`.
fn invalid(text: &str, key: &str, needle: &str) -> String {
    let e = err(text);
    let msg = e.to_string();
    assert!(
        matches!(e, ConfigError::Invalid { .. }),
        "not Invalid: {msg}"
    );
    assert_eq!(e.key(), Some(key), "{msg}");
    assert!(msg.starts_with(&format!("{F}: key '{key}': ")), "{msg}");
    assert!(msg.contains(needle), "'{needle}' not in: {msg}");
    msg
}

/// Asserts an `Unsupported` error on `key` whose message contains `needle`.
fn refused(text: &str, key: &str, needle: &str) -> String {
    let e = err(text);
    let msg = e.to_string();
    assert!(
        matches!(e, ConfigError::Unsupported { .. }),
        "not Unsupported: {msg}"
    );
    assert_eq!(e.key(), Some(key), "{msg}");
    assert!(msg.starts_with(&format!("{F}: key '{key}': ")), "{msg}");
    assert!(msg.contains(needle), "'{needle}' not in: {msg}");
    msg
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn names(c: &BrokerConfig) -> Vec<&str> {
    c.listeners.iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn builtin_defaults() {
    let c = BrokerConfig::default();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].name, "default");
    assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"));
    assert_eq!(c.listeners[0].kind, ListenerKind::Tcp);
    assert_eq!(c.listeners[0].max_connections, None);
    assert_eq!(c.timeout_disconnect_delay, Duration::from_secs(2));
    assert_eq!(c.sys_interval, Duration::from_secs(20));
    assert!(c.allow_anonymous);
    assert_eq!(c.shards, ShardCount::Auto);
    assert!(c.pin_shards);
    assert_eq!(c.max_inflight, 32);
    assert_eq!(c.max_queued_messages, 1000);
    assert_eq!(c.max_packet_size, 268_435_460);
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.max_qos, 2);
    assert_eq!(c.receive_maximum, 1000);
    assert_eq!(c.max_keepalive, 65535);
    assert_eq!(c.source, None);
}

#[test]
fn empty_documents_are_defaults() {
    for text in ["", "\n", "# nothing but a comment\n", "---\n", "~\n"] {
        assert_eq!(ok(text), BrokerConfig::default(), "{text:?}");
    }
}

#[test]
fn example_default_yaml_is_the_builtin_default() {
    assert_eq!(
        ok(include_str!("../../../config/default.yaml")),
        BrokerConfig::default()
    );
}

#[test]
fn example_minimal_yaml_loads() {
    let c = ok(include_str!("../../../config/minimal.yaml"));
    assert_eq!(names(&c), ["default"]);
    assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"));
}

#[test]
fn example_amqtt_yaml_loads() {
    let c = ok(include_str!("../../../config/amqtt-example.yaml"));
    assert_eq!(names(&c), ["default", "my-tcp-2", "my-ws-1"]);
    assert_eq!(c.listeners[2].kind, ListenerKind::Ws);
    assert_eq!(c.listeners[2].bind, addr("0.0.0.0:8080"));
    assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"));
    assert_eq!(c.listeners[0].max_connections, Some(1000));
    assert_eq!(c.listeners[1].bind, addr("127.0.0.1:1884"));
    assert_eq!(
        c.listeners[1].max_connections,
        Some(1000),
        "inherited from default"
    );
    assert_eq!(c.timeout_disconnect_delay, Duration::from_secs(2));
    assert_eq!(c.sys_interval, Duration::from_secs(20));
    assert!(c.allow_anonymous);
}

/// The TLS listeners left commented in amqtt-example.yaml (they need certificate files) load too
/// once uncommented, as aMQTT's documentation writes them (with its `capath` typo fixed).
#[test]
fn example_amqtt_yaml_tls_listeners_load_uncommented() {
    let text = include_str!("../../../config/amqtt-example.yaml");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("  # ") {
            Some(rest) if rest.starts_with("my-") || rest.starts_with("  ") => format!("  {rest}"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = ok(&uncommented);
    assert_eq!(
        names(&c),
        ["default", "my-tcp-2", "my-ws-1", "my-wss-1", "my-tcp-ssl-1"]
    );
    let wss = &c.listeners[3];
    assert_eq!(wss.kind, ListenerKind::Ws);
    assert_eq!(
        wss.tls.as_ref().map(|t| t.certfile.clone()),
        Some("/some/certfile".into())
    );
    let tls = c.listeners[4].tls.as_ref().expect("my-tcp-ssl-1 has TLS");
    assert_eq!(tls.capath, Some("/some/folder".into()));
    assert_eq!(tls.cadata.as_deref(), Some("certificate data"));
}

#[test]
fn example_multi_listener_yaml_loads() {
    let c = ok(include_str!("../../../config/multi-listener.yaml"));
    assert!(c.listeners.len() >= 2, "{c:?}");
    assert!(
        c.listeners.iter().all(|l| l.name != "default"),
        "default is unbound there"
    );
}

#[test]
fn the_brief_example_loads() {
    let c = ok("listeners:\n  default:\n    type: tcp\n    bind: 0.0.0.0:1883\n    max-connections: 1000\n  my-tcp-2:\n    bind: 127.0.0.1:1884\ntimeout-disconnect-delay: 2\nsys_interval: 20\nauth:\n  allow-anonymous: true\n  plugins: ['auth_anonymous']\ntopic-check:\n  enabled: false\n");
    assert_eq!(names(&c), ["default", "my-tcp-2"]);
    assert_eq!(c.listeners[1].max_connections, Some(1000));
}

#[test]
fn password_file_and_auth_plugins() {
    let c =
        ok("auth:\n  password-file: /etc/amqtt/passwd\n  plugins: [auth_anonymous, auth_file]\n");
    assert_eq!(c.password_file, Some(PathBuf::from("/etc/amqtt/passwd")));
    assert_eq!(c.auth_plugins, ["auth_anonymous", "auth_file"]);
    // Without `plugins`, a password file turns auth_file on.
    let c = ok("auth:\n  password-file: passwd\n");
    assert_eq!(c.auth_plugins, ["auth_anonymous", "auth_file"]);
    // aMQTT's own defaults spell "no password file" as null.
    let c = ok("auth:\n  password-file: ~\n  allow-anonymous: false\n");
    assert!(!c.allow_anonymous);
    assert_eq!(c.password_file, None);
    assert_eq!(c.auth_plugins, ["auth_anonymous"]);
    // Names are resolved at start (embedders add plugins), not here.
    ok("auth:\n  plugins: [my_ldap]\n");
    refused(
        "auth:\n  plugins: []\n",
        "auth.plugins",
        "empty plugin list",
    );
}

#[test]
fn topic_check_tables() {
    let c = ok("topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n    alice: ['a/#', 'users/%u/#']\n    anonymous: ~\n  publish-acl:\n    bob: ['b/+']\n");
    let t = &c.topic_check;
    assert!(t.enabled);
    assert_eq!(t.plugins, vec!["topic_acl".to_string()]);
    let acl = t.acl.as_ref().expect("acl");
    assert_eq!(
        acl["alice"],
        vec!["a/#".to_string(), "users/%u/#".to_string()]
    );
    assert!(acl["anonymous"].is_empty(), "a null list is an empty one");
    assert_eq!(
        t.publish_acl.as_ref().expect("publish-acl")["bob"],
        vec!["b/+".to_string()]
    );
    // No publish-acl: `None`, which topic_acl reads as "`acl` governs publishing".
    assert_eq!(
        ok("topic-check:\n  enabled: true\n  plugins: [topic_taboo]\n")
            .topic_check
            .publish_acl,
        None
    );
    assert_eq!((&t.subscribe_acl, &t.receive_acl), (&None, &None));
    let c = ok("topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  subscribe-acl:\n    alice: ['s/#']\n  receive-acl:\n    alice: ['r/+']\n    anonymous: []\n");
    let t = &c.topic_check;
    assert_eq!(
        t.subscribe_acl.as_ref().expect("subscribe-acl")["alice"],
        vec!["s/#".to_string()]
    );
    let receive = t.receive_acl.as_ref().expect("receive-acl");
    assert_eq!(receive["alice"], vec!["r/+".to_string()]);
    assert!(receive["anonymous"].is_empty());
    assert_eq!(ok("").topic_check, TopicCheckConfig::default());
}

#[test]
fn topic_check_needs_a_plugin_list_when_enabled() {
    refused(
        "topic-check:\n  enabled: true\n",
        "topic-check.plugins",
        "no plugin is listed",
    );
    refused(
        "topic-check:\n  enabled: true\n  plugins: []\n",
        "topic-check.plugins",
        "empty plugin list",
    );
    // Disabled topic checking may carry plugins and ACLs; they are not used.
    let c = ok("topic-check:\n  enabled: false\n  plugins: [topic_acl]\n  acl:\n    alice: ['a/#']\n    anonymous: []\n  publish-acl:\n    bob: ['b/+']\n");
    assert!(!c.topic_check.enabled);
    invalid(
        "topic-check:\n  acl: [x]\n",
        "topic-check.acl",
        "invalid type",
    );
}

#[test]
fn an_empty_plugin_section_is_nothing() {
    // The section's forms and refusals are tested in `plugins.rs`.
    for text in ["plugins: {}\n", "plugins: []\n", "plugins:\n"] {
        let c = ok(text);
        assert_eq!(c.auth_plugins, ["auth_anonymous"], "{text}");
        assert_eq!(c.sys_interval, Duration::from_secs(20), "{text}");
    }
}

#[test]
fn unknown_keys_are_errors() {
    let msg = invalid(
        "listeners:\n  default:\n    bind: 0.0.0.0:1883\nfoo: 1\n",
        "foo",
        "unknown key `foo`",
    );
    assert!(msg.contains("line 4"), "{msg}");
    invalid(
        "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    port: 1\n",
        "listeners.default.port",
        "unknown key `port`",
    );
    invalid(
        "auth:\n  allow_anonymus: true\n",
        "auth.allow_anonymus",
        "unknown key `allow_anonymus`",
    );
    invalid(
        "topic-check:\n  enable: false\n",
        "topic-check.enable",
        "unknown key",
    );
    invalid("broker:\n  x: 1\n", "broker", "unknown key");
}

#[test]
fn wrong_types_name_the_key_and_position() {
    let msg = invalid(
        "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    max-connections: lots\n",
        "listeners.default.max-connections",
        "expected an integer",
    );
    assert!(msg.contains("(line 4, column"), "{msg}");
    invalid(
        "sys_interval: soon\n",
        "sys_interval",
        "'soon' is not a duration",
    );
    invalid(
        "auth:\n  allow-anonymous: 'maybe'\n",
        "auth.allow-anonymous",
        "expected a boolean",
    );
    invalid(
        "auth:\n  plugins: auth_anonymous\n",
        "auth.plugins",
        "expected a sequence",
    );
    invalid("pin_shards: 1\n", "pin_shards", "expected a boolean");
    invalid("max_inflight: 1.5\n", "max_inflight", "expected an integer");
    invalid(
        "listeners:\n  default:\n    type: udp\n",
        "listeners.default.type",
        "`tcp` or `ws`",
    );
    invalid(
        "listeners: [a, b]\n",
        "listeners",
        "mapping of listener names",
    );
    invalid(
        "listeners:\n  default: 5\n",
        "listeners.default",
        "invalid type",
    );
    invalid("auth: yes\n", "auth", "invalid type");
}

#[test]
fn whole_document_errors() {
    let e = err("- a\n- b\n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("config/broker.yaml: expected a mapping"),
        "{e}"
    );
    let e = err("listeners: [\n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("invalid YAML"), "{e}");
    assert!(e.to_string().contains("line"), "{e}");
    let e = err("sys_interval: 1\nsys_interval: 2\n");
    assert!(e.to_string().contains("duplicate"), "{e}");
    let e = err("listeners:\n  a:\n    bind: :1\n  a:\n    bind: :2\n");
    assert!(e.to_string().contains("duplicate"), "{e}");
}

#[test]
fn yaml_merge_keys_work() {
    let c = ok("
listeners:
  default:
    bind: 127.0.0.1:1883
  a: &common
    bind: 127.0.0.1:1884
    max-connections: 3
  b:
    <<: *common
    bind: 127.0.0.1:1885
");
    assert_eq!(names(&c), ["default", "a", "b"]);
    assert_eq!(c.listeners[2].max_connections, Some(3));
    assert_eq!(c.listeners[2].bind, addr("127.0.0.1:1885"));
    invalid(
        "listeners:\n  default: &d\n    bind: :1883\n  b:\n    <<: *d\n    nope: 1\n",
        "listeners.b.nope",
        "unknown key",
    );
}

#[test]
fn allow_anonymous() {
    assert!(!ok("auth:\n  allow-anonymous: false\n").allow_anonymous);
    assert!(ok("auth:\n  allow-anonymous: true\n").allow_anonymous);
    assert!(ok("auth: {}\n").allow_anonymous);
}

#[test]
fn from_file_reads_and_records_the_source() {
    let dir = std::env::temp_dir().join(format!("amqtt-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broker.yaml");
    std::fs::write(&path, "max_qos: 1\nfoo: 2\n").expect("write");
    let e = BrokerConfig::from_file(&path).expect_err("unknown key");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: key 'foo': ", path.display())),
        "{e}"
    );

    std::fs::write(&path, "max_qos: 1\n").expect("write");
    let c = BrokerConfig::from_file(&path).expect("valid file");
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.source.as_deref(), Some(path.as_path()));

    std::fs::write(&path, "").expect("write");
    let c = BrokerConfig::from_file(&path).expect("empty file");
    assert_eq!(c.listeners, BrokerConfig::default().listeners);

    let missing = dir.join("missing.yaml");
    let e = BrokerConfig::from_file(&missing).expect_err("missing file");
    assert!(matches!(e, ConfigError::Io { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

mod bridges;
mod cluster;
mod http_plugin;
mod listeners;
mod persistence;
mod plugins;
mod reload;
mod spellings;
mod values;
