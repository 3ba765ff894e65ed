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
fn sizes_take_units() {
    assert_eq!(ok("memory_limit: 64MiB\n").memory_limit, Some(64 << 20));
    assert_eq!(ok("memory_limit: 512 kB\n").memory_limit, Some(512_000));
    assert_eq!(ok("memory_limit: 1.5GiB\n").memory_limit, Some(3 << 29));
    assert_eq!(ok("memory_limit: 1000\n").memory_limit, Some(1000));
    assert_eq!(ok("memory_limit: 0\n").memory_limit, None);
    assert_eq!(
        ok("max_queued_bytes: 1M\n").max_queued_bytes,
        Some(1_000_000)
    );
    assert_eq!(ok("max_queued_bytes: 0\n").max_queued_bytes, None);
    assert_eq!(ok("max_packet_size: 1KiB\n").max_packet_size, 1024);
    invalid(
        "memory_limit: 64 parsecs\n",
        "memory_limit",
        "unknown size unit 'parsecs'",
    );
    invalid("memory_limit: lots\n", "memory_limit", "unknown size unit");
    invalid("memory_limit: -1\n", "memory_limit", "a size of 0 or more");
    invalid(
        "max_packet_size: 1GiB\n",
        "max_packet_size",
        "between 16 and 268435460",
    );
}

#[test]
fn spin_and_connection_messages() {
    let defaults = ok("");
    assert_eq!(defaults.spin_before_park, Duration::ZERO);
    assert!(defaults.connection_messages);
    assert_eq!(
        ok("spin_before_park: 0.0002\n").spin_before_park,
        Duration::from_micros(200)
    );
    assert!(!ok("connection_messages: false\n").connection_messages);
    assert!(!defaults.log_packets);
    assert!(ok("log_packets: true\n").log_packets);
    invalid(
        "spin_before_park: 1\n",
        "spin_before_park",
        "at most 0.01 seconds",
    );
    invalid(
        "spin_before_park: -1\n",
        "spin_before_park",
        "zero or more seconds",
    );
    invalid(
        "connection_messages: 2\n",
        "connection_messages",
        "expected a boolean",
    );
}

#[test]
fn runtime_values() {
    assert_eq!(ok("").runtime, shards::RuntimeChoice::Auto);
    assert_eq!(ok("runtime: epoll\n").runtime, shards::RuntimeChoice::Epoll);
    assert_eq!(
        ok("runtime: glommio\n").runtime,
        shards::RuntimeChoice::Glommio
    );
    invalid(
        "runtime: uring\n",
        "runtime",
        "unknown runtime 'uring': expected auto, glommio or epoll",
    );
    invalid("runtime: 1\n", "runtime", "unknown runtime '1'");
}

#[test]
fn shards_values() {
    assert_eq!(ok("shards: auto\n").shards, ShardCount::Auto);
    assert_eq!(ok("shards: AUTO\n").shards, ShardCount::Auto);
    assert_eq!(ok("shards: 4\n").shards, ShardCount::Fixed(4));
    assert_eq!(ok("shards: 1\n").shards, ShardCount::Fixed(1));
    invalid("shards: 0\n", "shards", "`auto` or a positive integer");
    invalid("shards: -3\n", "shards", "`auto` or a positive integer");
    invalid("shards: many\n", "shards", "`auto` or a positive integer");
    invalid("shards: 2.5\n", "shards", "`auto` or a positive integer");
    assert_eq!(ShardCount::Fixed(3).to_string(), "3");
    assert!(!ok("pin_shards: false\n").pin_shards);
}

#[test]
fn numeric_bounds() {
    assert_eq!(ok("max_inflight: 1\n").max_inflight, 1);
    assert_eq!(ok("max_inflight: 65535\n").max_inflight, 65535);
    invalid(
        "max_inflight: 0\n",
        "max_inflight",
        "between 1 and 65535, got 0",
    );
    invalid(
        "max_inflight: 65536\n",
        "max_inflight",
        "between 1 and 65535",
    );

    assert_eq!(ok("max_queued_messages: 1\n").max_queued_messages, 1);
    assert_eq!(
        ok("max_queued_messages: 50000\n").max_queued_messages,
        50_000
    );
    invalid(
        "max_queued_messages: 0\n",
        "max_queued_messages",
        "between 1 and",
    );
    invalid(
        "max_queued_messages: -1\n",
        "max_queued_messages",
        "between 1 and",
    );

    assert_eq!(ok("max_packet_size: 16\n").max_packet_size, 16);
    assert_eq!(
        ok("max_packet_size: 268435460\n").max_packet_size,
        MAX_PACKET_SIZE_LIMIT
    );
    invalid(
        "max_packet_size: 15\n",
        "max_packet_size",
        "between 16 and 268435460",
    );
    invalid(
        "max_packet_size: 268435461\n",
        "max_packet_size",
        "between 16 and 268435460",
    );
    let e = err("max_packet_size: 99999999999999999999\n");
    assert!(e.to_string().contains("max_packet_size"), "{e}");

    for q in 0..=2u8 {
        assert_eq!(ok(&format!("max_qos: {q}\n")).max_qos, q);
    }
    assert_eq!(ok("max-qos: 1\n").max_qos, 1, "aMQTT's spelling");
    invalid("max_qos: 3\n", "max_qos", "between 0 and 2");
    invalid("max_qos: -1\n", "max_qos", "between 0 and 2");
}

#[test]
fn durations() {
    let c = ok("timeout-disconnect-delay: 1.5\nsys_interval: 0\nconnect_timeout: 0.25\n");
    assert_eq!(c.timeout_disconnect_delay, Duration::from_millis(1500));
    assert_eq!(c.sys_interval, Duration::ZERO);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        ok("timeout-disconnect-delay: 0\n").timeout_disconnect_delay,
        Duration::ZERO
    );
    assert_eq!(ok("sys_interval: 5\n").sys_interval, Duration::from_secs(5));
    invalid(
        "connect_timeout: 0\n",
        "connect_timeout",
        "more than zero seconds",
    );
    invalid(
        "timeout-disconnect-delay: -1\n",
        "timeout-disconnect-delay",
        "zero or more seconds",
    );
    invalid(
        "sys_interval: -0.5\n",
        "sys_interval",
        "zero or more seconds",
    );
    invalid(
        "sys_interval: .nan\n",
        "sys_interval",
        "zero or more seconds",
    );
    invalid(
        "sys_interval: .inf\n",
        "sys_interval",
        "zero or more seconds",
    );
}

#[test]
fn session_expiry_interval() {
    assert_eq!(BrokerConfig::default().session_expiry_interval, None);
    assert_eq!(ok("").session_expiry_interval, None, "absent: never");
    assert_eq!(
        ok("session_expiry_interval: null\n").session_expiry_interval,
        None,
        "aMQTT's None: never"
    );
    assert_eq!(
        ok("session_expiry_interval: 3600\n").session_expiry_interval,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        ok("session_expiry_interval: 0\n").session_expiry_interval,
        Some(Duration::ZERO)
    );
    assert_eq!(
        ok("session_expiry_interval: 1.5\n").session_expiry_interval,
        Some(Duration::from_millis(1500))
    );
    invalid(
        "session_expiry_interval: -1\n",
        "session_expiry_interval",
        "zero or more seconds, got -1",
    );
    invalid(
        "session_expiry_interval: a day\n",
        "session_expiry_interval",
        "'a day' is not a duration",
    );
    invalid(
        "session_expiry_interval: .nan\n",
        "session_expiry_interval",
        "zero or more seconds",
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

mod listeners;
mod persistence;
mod plugins;
mod spellings;
