//! What the bench's socket tests share: an amqtt broker embedded in the test process.

use std::net::SocketAddr;

use amqtt::config::{BrokerConfig, ShardCount};

/// Starts a broker from `yaml` with `shards` unpinned shards; its `default` listener's address.
pub fn start_broker(yaml: &str, shards: usize) -> (amqtt::BrokerHandle, SocketAddr) {
    let mut config = BrokerConfig::from_yaml_str(yaml, "test").expect("config");
    config.shards = ShardCount::Fixed(shards);
    config.pin_shards = false;
    let handle = amqtt::Broker::new(config)
        .expect("broker")
        .start()
        .expect("start");
    let addr = handle.address("default").expect("address");
    (handle, addr)
}

/// A plain TCP listener on an ephemeral loopback port, `$SYS` off.
// Each test crate compiles this module on its own; the TLS tests bring their own YAML.
#[allow(dead_code)]
pub const PLAIN_YAML: &str = "listeners:\n  default:\n    bind: 127.0.0.1:0\nsys_interval: 0\n";
