//! The `cluster:` block: this broker as one node of a cluster whose nodes meet on NATS
//! (JetStream for what must survive). Its raw schema, defaults and checks live here, as
//! `bridges.rs` does for its block; `raw/mod.rs` holds the field, `build.rs` calls
//! [`cluster_config`]. Absent, the broker is a single node exactly as without this file.
//!
//! ```yaml
//! cluster:
//!   node: node-a
//!   nats: ['nats://10.0.0.5:4222', 'nats://10.0.0.6:4222']
//! ```
//! What must not live here: connecting to NATS or reading the credential files (the cluster
//! link does that when it starts).

use std::time::Duration;

use serde::Deserialize;

use super::*;

/// Default `name`: the prefix of the cluster's NATS subjects, streams and buckets.
pub const DEFAULT_CLUSTER_NAME: &str = "amqtt";
/// Default `replicas` of the cluster's JetStream streams and buckets.
pub const DEFAULT_REPLICAS: usize = 1;
/// Default `ack_timeout`: how long a SUBSCRIBE waits for the other nodes to confirm it.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The checked `cluster:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `node`: this node's name, unique in the cluster (letters, digits, `-` and `_`).
    pub node: String,
    /// `nats`: NATS server URLs (`nats://` or `tls://`), tried in turn.
    pub nats: Vec<String>,
    /// `name`: the cluster's name, the prefix of its subjects, streams and buckets (default
    /// `amqtt`): clusters with different names can share NATS servers.
    pub name: String,
    /// `replicas`: copies of each JetStream stream and bucket (1 to 5, default 1; 3 on a NATS
    /// cluster of 3 or more servers).
    pub replicas: usize,
    /// `user` / `password` for NATS (both or neither).
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// `token`: a NATS authentication token.
    pub token: Option<String>,
    /// `credentials`: a NATS `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// `ca_file`: PEM CA certificates for the servers' TLS certificates (implies TLS).
    pub ca_file: Option<PathBuf>,
    /// `certfile` / `keyfile`: a client certificate for NATS (both or neither).
    pub certfile: Option<PathBuf>,
    /// See `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `ack_timeout`: seconds a SUBSCRIBE waits for the other live nodes, and a CONNECT for the
    /// hand-off of its session (default 2); a node
    /// that has not answered by then is left to catch up from the interest sync.
    pub ack_timeout: Duration,
}

/// `cluster:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of cluster keys (node, nats, ...)"
)]
pub(super) struct RawCluster {
    node: Option<String>,
    nats: Option<Vec<String>>,
    name: Option<String>,
    replicas: Option<i64>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    credentials: Option<String>,
    ca_file: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
    ack_timeout: Option<f64>,
}

/// A name that is one NATS subject token and one stream-name part.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The checked `cluster:` block (`None` when absent).
pub(super) fn cluster_config(
    raw: Option<&RawCluster>,
    origin: &str,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: format!("cluster.{key}"),
        reason,
    };
    let node = match raw.node.as_deref() {
        Some(node) if plain_name(node) => node.to_string(),
        Some(node) => {
            return Err(invalid(
                "node",
                format!("'{node}' must be 1-64 letters, digits, '-' or '_'"),
            ))
        }
        None => return Err(invalid("node", "required: this node's name".into())),
    };
    let name = raw
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_string());
    if !plain_name(&name) {
        return Err(invalid(
            "name",
            format!("'{name}' must be 1-64 letters, digits, '-' or '_'"),
        ));
    }
    let nats = raw.nats.clone().unwrap_or_default();
    if nats.is_empty() {
        return Err(invalid(
            "nats",
            "required: a list of NATS URLs, for example ['nats://127.0.0.1:4222']".into(),
        ));
    }
    for url in &nats {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("nats" | "tls")) {
            return Err(invalid(
                "nats",
                format!("'{url}' is not a nats:// or tls:// URL"),
            ));
        }
    }
    let replicas = match raw.replicas {
        None => DEFAULT_REPLICAS,
        Some(r @ 1..=5) => r as usize,
        Some(r) => return Err(invalid("replicas", format!("must be 1 to 5, got {r}"))),
    };
    if raw.user.is_some() != raw.password.is_some() {
        return Err(invalid(
            if raw.user.is_some() {
                "password"
            } else {
                "user"
            },
            "user and password go together: give both or neither".into(),
        ));
    }
    if raw.certfile.is_some() != raw.keyfile.is_some() {
        return Err(invalid(
            if raw.certfile.is_some() {
                "keyfile"
            } else {
                "certfile"
            },
            "certfile and keyfile go together: give both or neither".into(),
        ));
    }
    let ack_timeout = match raw.ack_timeout {
        None => DEFAULT_ACK_TIMEOUT,
        Some(s) if s.is_finite() && (0.01..=60.0).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(invalid(
                "ack_timeout",
                format!("must be 0.01 to 60 seconds, got {s}"),
            ))
        }
    };
    Ok(Some(ClusterConfig {
        node,
        nats,
        name,
        replicas,
        user: raw.user.clone(),
        password: raw.password.clone(),
        token: raw.token.clone(),
        credentials: raw.credentials.as_ref().map(PathBuf::from),
        ca_file: raw.ca_file.as_ref().map(PathBuf::from),
        certfile: raw.certfile.as_ref().map(PathBuf::from),
        keyfile: raw.keyfile.as_ref().map(PathBuf::from),
        ack_timeout,
    }))
}
