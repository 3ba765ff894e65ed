//! The cluster link's series (`amqtt_cluster_*`), from its counters (`crate::cluster::ClusterStats`),
//! and their descriptions. Copied by the control shard once a second; nothing here counts.

use metrics::{counter, describe_counter, describe_gauge, gauge};

/// The cluster link's series.
pub(super) fn update(cluster: &crate::cluster::ClusterStats) {
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    gauge!("amqtt_cluster_connected", "node" => cluster.node.clone())
        .set(flag(cluster.connected()));
    gauge!("amqtt_cluster_nodes").set(cluster.nodes() as f64);
    for (direction, path, value) in [
        ("out", "core", cluster.sent_core()),
        ("out", "jetstream", cluster.sent_stored()),
        ("in", "core", cluster.received_core()),
        ("in", "jetstream", cluster.received_stored()),
    ] {
        counter!("amqtt_cluster_messages_total", "direction" => direction, "path" => path)
            .absolute(value);
    }
    counter!("amqtt_cluster_messages_dropped_total").absolute(cluster.dropped());
    counter!("amqtt_cluster_interest_timeouts_total").absolute(cluster.interest_timeouts());
    gauge!("amqtt_cluster_filters", "side" => "local").set(cluster.local_filters() as f64);
    gauge!("amqtt_cluster_filters", "side" => "remote").set(cluster.remote_filters() as f64);
}

/// The descriptions of the cluster's series.
pub(super) fn describe() {
    describe_gauge!(
        "amqtt_cluster_connected",
        "1 while the cluster link is connected to NATS with the cluster's streams set up, else 0."
    );
    describe_gauge!(
        "amqtt_cluster_nodes",
        "Live nodes of the cluster, this one included (liveness entries renewed within 10 s)."
    );
    describe_counter!(
        "amqtt_cluster_messages_total",
        "Messages between this node and the others, once per node: path core = QoS 0 over core NATS, jetstream = QoS 1/2 through the nodes' mailboxes (out: stored there)."
    );
    describe_counter!(
        "amqtt_cluster_messages_dropped_total",
        "QoS 0 messages for or from other nodes dropped (NATS away, or a shard's bus lane full), and QoS 1/2 ones for other nodes beyond 64 MiB kept while NATS is away with persistence off."
    );
    describe_counter!(
        "amqtt_cluster_interest_timeouts_total",
        "Subscription changes of this node that some live node did not confirm within cluster.ack_timeout."
    );
    describe_gauge!(
        "amqtt_cluster_filters",
        "Distinct topic filters: local = this node's sessions', remote = the other nodes' together."
    );
}
