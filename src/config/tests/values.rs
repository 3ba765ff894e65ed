//! Typed values and their bounds: sizes with units, durations, numeric ranges, `runtime`,
//! `shards`, `spin_before_park`, `connection_messages`, `session_expiry_interval`, `log_file`,
//! `log_format`, `shared_subscription_strategy`.

use super::*;

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
fn log_keys() {
    let defaults = ok("");
    assert_eq!(defaults.log_file, None);
    assert_eq!(defaults.log_format, LogFormat::Auto);
    let c = ok("log_file: /var/log/amqtt/amqtt.log\nlog-format: json\n");
    assert_eq!(c.log_file, Some(PathBuf::from("/var/log/amqtt/amqtt.log")));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(ok("log_file: null\n").log_file, None);
    for name in ["auto", "text", "journal", "json"] {
        let format: LogFormat = name.parse().expect("a log format");
        assert_eq!(format.to_string(), name);
        assert_eq!(ok(&format!("log_format: {name}\n")).log_format, format);
    }
    invalid(
        "log_format: syslog\n",
        "log_format",
        "unknown log format 'syslog': expected auto, text, journal or json",
    );
    invalid("log_file: ''\n", "log_file", "must name a file");
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

/// A `u16` key whose values run from `min` to 65535: both ends are read, and one outside each.
fn u16_key_bounds(key: &str, min: u16, read: fn(&BrokerConfig) -> u16) {
    assert_eq!(read(&ok(&format!("{key}: {min}\n"))), min, "{key}");
    assert_eq!(read(&ok(&format!("{key}: 65535\n"))), 65535, "{key}");
    let range = format!("between {min} and 65535");
    invalid(&format!("{key}: {}\n", i32::from(min) - 1), key, &range);
    invalid(&format!("{key}: 65536\n"), key, &range);
}

#[test]
fn numeric_bounds() {
    invalid(
        "max_inflight: 0\n",
        "max_inflight",
        "between 1 and 65535, got 0",
    );
    u16_key_bounds("max_inflight", 1, |c| c.max_inflight);
    u16_key_bounds("receive_maximum", 1, |c| c.receive_maximum);
    assert_eq!(ok("receive-maximum: 20\n").receive_maximum, 20);
    u16_key_bounds("max_keepalive", 0, |c| c.max_keepalive);

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
fn shared_subscription_strategy() {
    use crate::config::SharedStrategy;
    assert_eq!(
        ok("").shared_subscription_strategy,
        SharedStrategy::RoundRobin
    );
    for name in SharedStrategy::NAMES {
        let c = ok(&format!("shared_subscription_strategy: {name}\n"));
        assert_eq!(c.shared_subscription_strategy.as_str(), name);
    }
    assert_eq!(
        ok("shared-subscription-strategy: sticky\n").shared_subscription_strategy,
        SharedStrategy::Sticky,
        "either spelling"
    );
    invalid(
        "shared_subscription_strategy: fastest\n",
        "shared_subscription_strategy",
        "must be one of round_robin, random, sticky, hash_client_id",
    );
}
