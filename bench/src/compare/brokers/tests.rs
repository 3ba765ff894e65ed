//! Unit tests of `brokers.rs` (the parent module): parsing, config text, data directories.

use super::*;
use crate::compare::parse_scenario;

#[test]
fn words() {
    assert_eq!(
        split_words(r#"a 'b c' "d \" e" f\ g  "#).unwrap(),
        vec!["a", "b c", "d \" e", "f g"]
    );
    assert_eq!(split_words("").unwrap(), Vec::<String>::new());
    assert_eq!(split_words("''").unwrap(), vec![""]);
    assert!(split_words("'open").is_err());
    assert!(split_words("\"open").is_err());
    assert!(split_words("x\\").is_err());
}

#[test]
fn quoting_round_trips() {
    for w in ["plain", "with space", "it's", "", "{config}", "a|b"] {
        assert_eq!(split_words(&shell_quote(w)).unwrap(), vec![w.to_string()]);
    }
}

#[test]
fn broker_specs() {
    let b = BrokerSpec::parse("amqtt=target/release/amqtt -c {config}").unwrap();
    assert_eq!(b.name, "amqtt");
    assert_eq!(b.kind, Kind::Amqtt);
    assert_eq!(
        b.argv(Path::new("/tmp/x.yaml"), 1234, Path::new("/d")),
        vec!["target/release/amqtt", "-c", "/tmp/x.yaml"]
    );
    assert!(b
        .config_text(1234, None)
        .unwrap()
        .contains("bind: 127.0.0.1:1234"));

    let m = BrokerSpec::parse("mosq=/usr/sbin/mosquitto -c {config}").unwrap();
    assert_eq!(m.kind, Kind::Mosquitto);
    assert!(m
        .config_text(99, None)
        .unwrap()
        .contains("listener 99 127.0.0.1"));

    let n = BrokerSpec::parse("other:none=mybroker --port {port}").unwrap();
    assert_eq!(n.kind, Kind::None);
    assert_eq!(
        n.argv(Path::new("c"), 7, Path::new("d")),
        vec!["mybroker", "--port", "7"]
    );
    assert!(n.config_text(7, Some(32)).is_none());

    let forced = BrokerSpec::parse("x:mosquitto=/opt/mq -c {config}").unwrap();
    assert_eq!(forced.kind, Kind::Mosquitto);

    let r = BrokerSpec::parse("rumqttd=/tmp/rq/bin/rumqttd -q -c {config}").unwrap();
    assert_eq!(r.kind, Kind::Rumqttd);
    let toml = r.config_text(4321, None).unwrap();
    assert!(toml.contains("listen = \"127.0.0.1:4321\"\n"), "{toml}");
    assert!(toml.contains("max_inflight_count = 100\n"), "{toml}");
    let forced = BrokerSpec::parse("r2:rumqttd=/opt/broker -c {config}").unwrap();
    assert_eq!(forced.kind, Kind::Rumqttd);

    for bad in [
        "noequals",
        "=cmd {port}",
        "a b=cmd {port}",
        "x=",
        "x=mybroker",
        "x:weird=amqtt -c {config}",
        "x=amqtt",
        "x='open {port}",
    ] {
        assert!(BrokerSpec::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn appended_config_and_a_fresh_data_dir() {
    let mut a = BrokerSpec::parse("a=amqtt -c {config}").unwrap();
    assert!(!a.uses_datadir());
    a.append_config("persistence:\n  enabled: true\n  dir: {datadir}")
        .unwrap();
    assert!(a.uses_datadir());
    let text = a.config_text(1, Some(32)).unwrap();
    assert!(
        text.ends_with("max_inflight: 32\npersistence:\n  enabled: true\n  dir: {datadir}\n"),
        "{text}"
    );
    let parsed = amqtt::config::BrokerConfig::from_yaml_str(
        &text.replace(DATADIR, "/tmp/somewhere"),
        "compare",
    );
    assert!(parsed.is_ok(), "{parsed:?}");

    let mut m = BrokerSpec::parse("m=/usr/sbin/mosquitto -c {config}").unwrap();
    m.append_config("persistence true\npersistence_location {datadir}/\n")
        .unwrap();
    let text = m.config_text(1, None).unwrap();
    // Mosquitto takes the last value: the appended line comes after the harness's own.
    let false_at = text.find("persistence false").unwrap();
    assert!(text.rfind("persistence true").unwrap() > false_at, "{text}");

    let mut n = BrokerSpec::parse("n:none=broker --port {port} --data {datadir}").unwrap();
    assert!(n.uses_datadir());
    assert_eq!(
        n.argv(Path::new("c"), 7, Path::new("/d/n-1.data")),
        vec!["broker", "--port", "7", "--data", "/d/n-1.data"]
    );
    assert!(n.append_config("x").is_err());
}

#[test]
fn data_dir_size_counts_nested_files() {
    let dir = std::env::temp_dir().join(format!("amqtt-bench-size-{}", std::process::id()));
    fs::create_dir_all(dir.join("shard-0")).unwrap();
    fs::write(dir.join("a"), [0u8; 100]).unwrap();
    fs::write(dir.join("shard-0").join("b"), [0u8; 23]).unwrap();
    assert_eq!(dir_size(&dir), 123);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(dir_size(&dir), 0);
}

#[test]
fn broker_window_follows_the_scenario() {
    let window = |s: &str| parse_scenario(s, 1.0, 1.0).unwrap().broker_window();
    assert_eq!(window("pairs -n 8 --qos 1"), Some(32));
    assert_eq!(window("pairs -n 8 --qos 2 --inflight 20"), Some(20));
    assert_eq!(window("fanout -n 50 --qos 1 --inflight 10"), Some(10));
    assert_eq!(window("fanin -n 50 --qos 1"), Some(1600));
    assert_eq!(window("fanin -n 5000 --qos 1 --inflight 100"), Some(65_535));
    assert_eq!(window("pairs -n 8 --qos 0"), None);
    assert_eq!(window("pairs -n 8 --qos 1 --rate 100"), None);
    assert_eq!(window("conns -n 10 --inflight 50"), None);

    let amqtt = BrokerSpec::parse("a=amqtt -c {config}").unwrap();
    let mosq = BrokerSpec::parse("m=/usr/sbin/mosquitto -c {config}").unwrap();
    let a = amqtt.config_text(1, Some(32)).unwrap();
    assert!(a.ends_with("\nmax_inflight: 32\n"), "{a}");
    let m = mosq.config_text(1, Some(32)).unwrap();
    assert!(m.ends_with("\nmax_inflight_messages 32\n"), "{m}");
    assert!(!amqtt.config_text(1, None).unwrap().contains("inflight"));
    assert!(!mosq.config_text(1, None).unwrap().contains("inflight"));
    let rumq = BrokerSpec::parse("r=rumqttd -c {config}").unwrap();
    let windowed = |w| rumq.config_text(1, Some(w)).unwrap();
    assert!(windowed(32).contains("max_inflight_count = 100\n"));
    assert!(windowed(1600).contains("max_inflight_count = 1600\n"));
    // What compare writes must be a configuration the broker accepts.
    let parsed = amqtt::config::BrokerConfig::from_yaml_str(&a, "compare");
    assert_eq!(parsed.map(|c| c.max_inflight).ok(), Some(32));
}
