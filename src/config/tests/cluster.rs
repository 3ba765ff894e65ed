//! Tests of the `cluster:` block: its keys and defaults, the shipped example, and the error (key
//! path, reason) for each kind of bad value.

use std::time::Duration;

use super::*;

const LISTENER: &str = "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:1883\n";

fn cluster(body: &str) -> String {
    format!("{LISTENER}cluster:\n{body}")
}

#[test]
fn one_node_by_default_and_the_defaults_of_a_cluster() {
    assert!(BrokerConfig::default().cluster.is_none());
    assert!(ok(LISTENER).cluster.is_none());
    let c = ok(&cluster("  node: a\n  nats: ['nats://127.0.0.1:4222']\n"));
    assert_eq!(
        c.cluster,
        Some(ClusterConfig {
            node: "a".into(),
            nats: vec!["nats://127.0.0.1:4222".into()],
            name: DEFAULT_CLUSTER_NAME.into(),
            replicas: 1,
            user: None,
            password: None,
            token: None,
            credentials: None,
            ca_file: None,
            certfile: None,
            keyfile: None,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
        })
    );
    let c = ok(&cluster(
        "  node: n_2\n  nats: ['tls://h:4222']\n  name: prod\n  replicas: 3\n  user: u\n  password: p\n  ack_timeout: 0.5\n  ca_file: /ca.pem\n",
    ));
    let c = c.cluster.unwrap();
    assert_eq!((c.name.as_str(), c.replicas), ("prod", 3));
    assert_eq!(c.ack_timeout, Duration::from_millis(500));
    assert_eq!(c.user.as_deref(), Some("u"));
}

#[test]
fn example_cluster_yaml_loads() {
    let c = ok(include_str!("../../../config/cluster.yaml"));
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.node, "node-1");
    assert_eq!(cluster.nats.len(), 3);
    assert_eq!(cluster.replicas, 3);
}

#[test]
fn bad_cluster_blocks_name_the_key_and_the_reason() {
    let nats = "  nats: ['nats://h:4222']\n";
    invalid(&cluster(nats), "cluster.node", "required");
    invalid(
        &cluster(&format!("  node: 'a.b'\n{nats}")),
        "cluster.node",
        "letters, digits",
    );
    invalid(&cluster("  node: a\n"), "cluster.nats", "required");
    invalid(
        &cluster("  node: a\n  nats: ['http://h']\n"),
        "cluster.nats",
        "not a nats:// or tls:// URL",
    );
    invalid(
        &cluster(&format!("  node: a\n{nats}  replicas: 7\n")),
        "cluster.replicas",
        "1 to 5",
    );
    invalid(
        &cluster(&format!("  node: a\n{nats}  user: u\n")),
        "cluster.password",
        "give both or neither",
    );
    invalid(
        &cluster(&format!("  node: a\n{nats}  ack_timeout: 0\n")),
        "cluster.ack_timeout",
        "0.01 to 60",
    );
    invalid(
        &cluster(&format!("  node: a\n{nats}  name: 'x y'\n")),
        "cluster.name",
        "letters, digits",
    );
}

#[test]
fn a_changed_cluster_block_is_kept_until_a_restart() {
    let old = ok(&cluster("  node: a\n  nats: ['nats://h:4222']\n"));
    let new = ok(&cluster("  node: b\n  nats: ['nats://h:4222']\n"));
    let diff = ConfigDiff::between(&old, &new);
    assert!(diff.kept.iter().any(|line| line.starts_with("cluster:")));
}
