//! Broker configuration: the aMQTT broker YAML schema and its validation.
//!
//! This module reads the YAML file that aMQTT's `amqtt -c FILE` accepts, unchanged, plus a few
//! keys of our own (`shards`, `pin_shards`, `spin_before_park`, `runtime`, `log_file`, `log_format`,
//! `connection_messages`, `log_packets`, `max_inflight`, `max_queued_messages`,
//! `max_queued_bytes`, `memory_limit`, `max_packet_size`, `connect_timeout`, `max_qos`,
//! `receive_maximum`, `max_keepalive`,
//! `shared_subscription_strategy`, `metrics`, `persistence`, `bridges`, `log_level`, `reload`,
//! and per listener `max_connect_rate`), and turns it into a checked
//! [`BrokerConfig`]. `config/default.yaml` is the operator's reference for every key.
//!
//! Keys are read as aMQTT reads them, `-` and `_` alike (`keys.rs`), and aMQTT's `plugins:`
//! section in both of its forms is turned into the settings of the older keys (`plugins.rs`).
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the key path
//! (`listeners.my-tcp.bind`) and the reason, with the line and column when the YAML parser
//! knows them. Unknown keys and wrong types are errors, never silently ignored. aMQTT features
//! this broker does not implement yet are refused at load time, all of them in the function
//! `refuse_unsupported` (`raw.rs`), so that supporting one means deleting its lines there
//! (aMQTT's contrib plugins: `NOT_PROVIDED` in `plugins.rs`).
//!
//! What this module must not do: no I/O beyond reading the configuration file (and resolving
//! listener host names such as `localhost:1883`), no sockets, threads or runtime, and no
//! dependency on the rest of the crate. The broker consumes [`BrokerConfig`]; nothing here
//! knows how it is used.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Port used when a listener's `bind` has no port (aMQTT's default for `type: tcp`).
pub const DEFAULT_PORT: u16 = 1883;
/// Largest MQTT 3.1.1 packet: fixed header byte + 4-byte remaining length + 268 435 455.
pub const MAX_PACKET_SIZE_LIMIT: usize = 268_435_455 + 5;
/// Smallest `max_packet_size` accepted.
pub const MIN_PACKET_SIZE: usize = 16;
/// Default `timeout-disconnect-delay`.
pub const DEFAULT_TIMEOUT_DISCONNECT_DELAY: Duration = Duration::from_secs(2);
/// Default `sys_interval`.
pub const DEFAULT_SYS_INTERVAL: Duration = Duration::from_secs(20);
/// Default `max_inflight`.
pub const DEFAULT_MAX_INFLIGHT: u16 = 32;
/// Default `receive_maximum`: as many unacknowledged QoS 1/2 PUBLISHes as a session queues by
/// default the other way (`max_queued_messages`), far above the windows clients use (20-32).
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 1000;
/// `max_keepalive` that sets no limit (the default, as Mosquitto's).
pub const NO_MAX_KEEPALIVE: u16 = u16::MAX;
/// Default `max_queued_messages`.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
/// The environment variable that overrides the `runtime` key (and chooses the client's runtime).
pub const RUNTIME_ENV: &str = "AMQTT_RUNTIME";

/// The runtime `AMQTT_RUNTIME` asks for, or `configured` when it is unset or empty; an error
/// naming the variable when its value is not `auto`, `glommio` or `epoll`.
pub fn runtime_from_env(
    configured: shards::RuntimeChoice,
) -> Result<shards::RuntimeChoice, String> {
    match std::env::var(RUNTIME_ENV) {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map_err(|e: String| format!("environment variable {RUNTIME_ENV}: {e}")),
        _ => Ok(configured),
    }
}

/// Longest `spin_before_park`: beyond this a shard would burn a core for little.
pub const MAX_SPIN_BEFORE_PARK: Duration = Duration::from_millis(10);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_qos`.
pub const DEFAULT_MAX_QOS: u8 = 2;
/// Port of `metrics.bind` when it names no port (and the address when the section is empty).
pub const DEFAULT_METRICS_PORT: u16 = 9883;
/// Port of `admin.bind` when it names no port (and the address when it is absent).
pub const DEFAULT_ADMIN_PORT: u16 = 9884;
/// The default authentication plugin.
const AUTH_ANONYMOUS: &str = "auth_anonymous";
/// The authentication plugin that reads `auth.password-file`, on by default when one is set.
const AUTH_FILE: &str = "auth_file";

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// The validated broker configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Bound listeners only: `default` first (if bound), then the others in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Grace period added to a client's keep-alive before a silent client is dropped.
    pub timeout_disconnect_delay: Duration,
    /// Interval of the `$SYS` statistics; `Duration::ZERO` means off.
    pub sys_interval: Duration,
    /// `session_expiry_interval` (aMQTT's key, seconds): a persistent session whose client stays
    /// away longer is discarded with its queue. `None` (absent or null, the default): never;
    /// `Duration::ZERO`: at the first tick after the client leaves.
    pub session_expiry_interval: Option<Duration>,
    /// `auth.allow-anonymous`: accept clients that send no user name.
    pub allow_anonymous: bool,
    /// `auth.password-file`: `user:hash` lines for the `auth_file` plugin.
    pub password_file: Option<PathBuf>,
    /// `auth.plugins`: authentication plugins by name, in order. When the key is absent:
    /// `auth_anonymous`, plus `auth_file` when a password file is set.
    pub auth_plugins: Vec<String>,
    /// `topic-check`: access control on PUBLISH and SUBSCRIBE.
    pub topic_check: TopicCheckConfig,
    /// Number of broker shards (threads). Default [`ShardCount::Auto`]: one per CPU the process
    /// may use, which an embedding program may want to lower (see [`crate::Broker::new`]).
    pub shards: ShardCount,
    /// Pin each shard thread to its own CPU. Default `true`: with `shards: auto` every CPU of
    /// the process gets a pinned shard, including in a program that embeds the broker; set it to
    /// `false` (YAML `pin_shards: false`) to let the kernel place the threads.
    pub pin_shards: bool,
    /// How long an idle shard keeps polling before it sleeps; `Duration::ZERO` (the default)
    /// sleeps at once. Spinning trades idle CPU for wake-up latency.
    pub spin_before_park: Duration,
    /// Which executor runs the shards: `auto` (glommio, or the epoll one where io_uring is
    /// refused), `glommio` or `epoll`. The environment variable `AMQTT_RUNTIME` overrides it
    /// ([`runtime_from_env`]).
    pub runtime: shards::RuntimeChoice,
    /// `log_file`: the file log lines are appended to (reopened on SIGHUP, for logrotate);
    /// `None` (the default): standard error. Read by the `amqtt` binary, not by the broker.
    pub log_file: Option<PathBuf>,
    /// `log_format`: how each log line is written (`auto`, `text`, `journal`, `json`). Read by
    /// the `amqtt` binary, not by the broker.
    pub log_format: LogFormat,
    /// `log_level`: the log filter in `RUST_LOG`'s syntax (`info`, `debug`,
    /// `warn,amqtt::packets=debug`); `None`: `info` (`-d`: `debug`). `RUST_LOG` and `-d` win over
    /// it. Read by the `amqtt` binary, not by the broker; a reload applies it.
    pub log_level: Option<String>,
    /// Log every connect and disconnect at INFO (Mosquitto's `connection_messages`); when off
    /// they are logged at DEBUG.
    pub connection_messages: bool,
    /// Log every packet received and sent, and every refused CONNECT, PUBLISH and SUBSCRIBE, at
    /// INFO (like `mosquitto -v`); `amqtt -d` turns it on. Off (the default) it costs one branch
    /// per packet.
    pub log_packets: bool,
    /// MQTT 5 clients get SUBACK 0x80 (unspecified error) without a Reason String for a filter
    /// the topic checks refuse, instead of 0x87 (not authorized) with one, so that they cannot
    /// tell a protected topic from a failure; MQTT 3.1.1 clients always get 0x80.
    pub hide_denial_reason: bool,
    /// aMQTT's `PacketLoggerPlugin` is listed under `plugins:`: packets are logged as with
    /// `log_packets` when the log level of `amqtt::packets` is DEBUG (`RUST_LOG=debug`), as aMQTT
    /// logs them at DEBUG. Off (the default), only `log_packets` decides.
    pub packet_logger: bool,
    /// aMQTT's `amqtt.contrib.http.UserAuthHttpPlugin` settings (plugin `auth_http`).
    pub http_user: Option<HttpPluginConfig>,
    /// aMQTT's `amqtt.contrib.http.TopicAuthHttpPlugin` settings (plugin `topic_http`).
    pub http_topic: Option<HttpPluginConfig>,
    /// Unacknowledged outgoing QoS 1/2 messages per client.
    pub max_inflight: u16,
    /// Messages queued per client beyond the in-flight window (always at least 1).
    pub max_queued_messages: usize,
    /// Largest accepted packet, in bytes, fixed header included.
    pub max_packet_size: usize,
    /// Payload bytes queued per client beyond the in-flight window; `None` means no byte limit
    /// (`max_queued_messages` still applies).
    pub max_queued_bytes: Option<usize>,
    /// Broker-wide budget for queued, retained and outgoing payload bytes; `None` means none.
    pub memory_limit: Option<usize>,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Highest QoS granted to subscriptions (0, 1 or 2).
    pub max_qos: u8,
    /// QoS 1/2 PUBLISHes an MQTT 5 client may have unacknowledged toward the broker (its
    /// Receive Maximum in CONNACK, 1-65535).
    pub receive_maximum: u16,
    /// Longest keep-alive a client may ask for, in seconds; [`NO_MAX_KEEPALIVE`] (or 0, as
    /// Mosquitto reads it) sets none.
    pub max_keepalive: u16,
    /// Which member of a share group (`$share/{group}/{filter}`) gets a message.
    pub shared_subscription_strategy: SharedStrategy,
    /// The Prometheus endpoint; `None` (the default) serves none.
    pub metrics: Option<MetricsConfig>,
    /// The admin HTTP API; `None` (the default) serves none.
    pub admin: Option<AdminConfig>,
    /// `persistence:`: the data directory and its sync policy; disabled by default.
    pub persistence: PersistenceConfig,
    /// `auth.jwt`, `topic-check.jwt`, `auth.cert`: aMQTT's contrib plugins' settings.
    pub contrib: ContribConfig,
    /// `bridges:`: connections to other MQTT brokers, in file order; none by default.
    pub bridges: Vec<BridgeConfig>,
    /// `cluster:`: this broker as a node of a cluster on NATS; `None` (the default): one node.
    pub cluster: Option<ClusterConfig>,
    /// `reload:`: what a reload (SIGHUP, the admin API) does besides applying the file.
    pub reload: ReloadConfig,
    /// The file this came from; `None` for built-in defaults or text.
    pub source: Option<PathBuf>,
}

/// `topic-check:`: which plugins check topics, and the ACL tables of `topic_acl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCheckConfig {
    /// `enabled`: with `false` (the default) no topic is checked and the rest is ignored.
    pub enabled: bool,
    /// `plugins`: topic-check plugins by name, in order (never empty when enabled).
    pub plugins: Vec<String>,
    /// `acl`: user (or `anonymous`) → topics they may publish to and filters they may subscribe
    /// with, where `publish-acl` / `subscribe-acl` are absent; `None`: not given.
    pub acl: Option<BTreeMap<String, Vec<String>>>,
    /// `publish-acl`: user (or `anonymous`) → topics they may publish to (replaces `acl` for
    /// publishing); `None`: not given.
    pub publish_acl: Option<BTreeMap<String, Vec<String>>>,
    /// `subscribe-acl`: user (or `anonymous`) → filters they may subscribe with (replaces `acl` for
    /// subscribing); `None`: not given.
    pub subscribe_acl: Option<BTreeMap<String, Vec<String>>>,
    /// `receive-acl`: user (or `anonymous`) → topics their subscriptions may deliver; `None` =
    /// unrestricted.
    pub receive_acl: Option<BTreeMap<String, Vec<String>>>,
}

/// `metrics:`: where the Prometheus text format is served (path `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; port 0 picks a free one.
    pub bind: SocketAddr,
}

/// `admin:`: where the admin HTTP API is served (paths under `/api/v1/`), and the file holding
/// the bearer token every request must carry (read when the broker starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address of the HTTP endpoint; port 0 picks a free one.
    pub bind: SocketAddr,
    /// `token_file`: the token's file (its first line, surrounding blanks trimmed).
    pub token_file: PathBuf,
}

/// One listener that will be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The name under `listeners:` (`default`, `my-tcp-2`, ...).
    pub name: String,
    /// Resolved address to listen on.
    pub bind: SocketAddr,
    /// Transport.
    pub kind: ListenerKind,
    /// Simultaneous connections allowed; `None` means unlimited.
    pub max_connections: Option<usize>,
    /// New connections accepted per second (our key `max_connect_rate`); `None` means unlimited.
    pub max_connect_rate: Option<u32>,
    /// TLS settings when `ssl: on`.
    pub tls: Option<TlsConfig>,
    /// `proxy-protocol: true`: the listener is behind a TCP proxy (HAProxy `send-proxy` or
    /// `send-proxy-v2`, a cloud load balancer) and every connection starts with a PROXY protocol
    /// header, whose source address is the client's; a connection without one is closed.
    pub proxy_protocol: bool,
}

/// Listener transport (`type:`); TLS is orthogonal (`ssl:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT over TCP (`mqtt://`, or `mqtts://` with `ssl: on`).
    Tcp,
    /// MQTT over WebSocket (`ws://`, or `wss://` with `ssl: on`).
    Ws,
}

/// A listener's TLS material, as aMQTT names the keys, plus our mutual-TLS switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub certfile: PathBuf,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
    /// CA certificates (PEM file) that client certificates are checked against.
    pub cafile: Option<PathBuf>,
    /// Directory of PEM CA certificates.
    pub capath: Option<PathBuf>,
    /// PEM CA certificates inline.
    pub cadata: Option<String>,
    /// `require-certificate: true`: clients must present a certificate signed by the CAs.
    pub require_certificate: bool,
    /// `use-identity-as-username: true`: the certificate's CN becomes the client's user name.
    pub use_identity_as_username: bool,
}

/// The `shards` key: `auto` (one per available CPU) or a fixed positive number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// One shard per CPU available to the process.
    Auto,
    /// Exactly this many shards (at least 1).
    Fixed(usize),
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardCount::Auto => f.write_str("auto"),
            ShardCount::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// The `log_format` key (and `amqtt --log-format`): how each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `journal` when standard error is the systemd journal (`JOURNAL_STREAM` names it), else
    /// `text`.
    #[default]
    Auto,
    /// `[2026-01-31T12:00:00.123Z INFO  amqtt::server] message`: UTC timestamp, level, target.
    Text,
    /// `<6>[INFO  amqtt::server] message`: no timestamp (the journal adds its own) and the
    /// syslog priority in sd-daemon's `<N>` prefix, so that journald records each line's level.
    Journal,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`.
    Json,
}

impl LogFormat {
    /// The values the key takes, for messages.
    pub const NAMES: &'static str = "auto, text, journal or json";
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "journal" => Ok(LogFormat::Journal),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format '{other}': expected {}",
                LogFormat::NAMES
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Journal => "journal",
            LogFormat::Json => "json",
        })
    }
}

/// Why a configuration could not be loaded. `file` is the path or origin given by the caller.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Io {
        /// The file's path.
        file: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or not a mapping of keys, as a whole.
    #[error("{file}: {reason}")]
    Syntax {
        /// The file's path (or a name for text given directly).
        file: String,
        /// What the parser said, with the line and column when known.
        reason: String,
    },
    /// A key is unknown, has the wrong type, or a value is out of range.
    #[error("{file}: key '{key}': {reason}")]
    Invalid {
        /// The file's path (or a name for text given directly).
        file: String,
        /// The key's path, e.g. `listeners.my-tcp.bind`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid aMQTT setting that this broker does not implement yet.
    #[error("{file}: key '{key}': {reason}")]
    Unsupported {
        /// The file's path (or a name for text given directly).
        file: String,
        /// The key's path.
        key: String,
        /// What is not supported, and what to do instead.
        reason: String,
    },
}

impl ConfigError {
    /// The key path the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } | ConfigError::Unsupported { key, .. } => Some(key),
            ConfigError::Io { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

impl Default for BrokerConfig {
    /// The built-in configuration: one TCP listener `default` on `0.0.0.0:1883`, unlimited.
    fn default() -> Self {
        BrokerConfig {
            listeners: vec![ListenerConfig {
                name: "default".to_string(),
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
                kind: ListenerKind::Tcp,
                max_connections: None,
                max_connect_rate: None,
                tls: None,
                proxy_protocol: false,
            }],
            timeout_disconnect_delay: DEFAULT_TIMEOUT_DISCONNECT_DELAY,
            sys_interval: DEFAULT_SYS_INTERVAL,
            session_expiry_interval: None,
            allow_anonymous: true,
            password_file: None,
            auth_plugins: vec![AUTH_ANONYMOUS.to_string()],
            topic_check: TopicCheckConfig::default(),
            shards: ShardCount::Auto,
            pin_shards: true,
            spin_before_park: Duration::ZERO,
            runtime: shards::RuntimeChoice::Auto,
            log_file: None,
            log_format: LogFormat::Auto,
            log_level: None,
            connection_messages: true,
            log_packets: false,
            hide_denial_reason: false,
            packet_logger: false,
            http_user: None,
            http_topic: None,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_packet_size: MAX_PACKET_SIZE_LIMIT,
            max_queued_bytes: None,
            memory_limit: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_qos: DEFAULT_MAX_QOS,
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            max_keepalive: NO_MAX_KEEPALIVE,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            metrics: None,
            admin: None,
            persistence: PersistenceConfig::default(),
            contrib: ContribConfig::default(),
            bridges: Vec::new(),
            cluster: None,
            reload: ReloadConfig::default(),
            source: None,
        }
    }
}

impl BrokerConfig {
    /// Reads and validates a YAML configuration file. An empty file gives the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let (file, text) = read_file(path)?;
        let mut config = Self::from_yaml_str(&text, &file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates YAML text; `origin` names it in error messages (usually the file path).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let (raw, spelled) = parse(text, origin)?;
        build(raw, origin).map_err(|e| spelled.respell_error(e))
    }
}

/// A configuration file's name as errors show it, and its text.
pub(crate) fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(source) => Err(ConfigError::Io { file, source }),
    }
}

/// A number of seconds as a [`Duration`]: finite, and more than zero (or zero too when
/// `allow_zero`); otherwise the reason, without the key.
fn duration(Seconds(secs): Seconds, allow_zero: bool) -> Result<Duration, String> {
    let ok = secs.is_finite() && (secs > 0.0 || (allow_zero && secs == 0.0));
    let duration = if ok {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    };
    duration.ok_or_else(|| {
        let expected = if allow_zero {
            "zero or more"
        } else {
            "more than zero"
        };
        format!("must be {expected} seconds, got {secs}")
    })
}

mod bridges;
mod build;
mod cluster;
mod contrib;
mod endpoints;
mod http_plugin;
mod keys;
mod persistence;
mod raw;
mod reload;
mod scalars;
mod shared_strategy;
#[cfg(test)]
mod tests;

pub use bridges::{
    local_capable, BridgeConfig, BridgeDirection, BridgeTopic, DEFAULT_BRIDGE_KEEP_ALIVE,
};
pub use cluster::{ClusterConfig, DEFAULT_ACK_TIMEOUT, DEFAULT_CLUSTER_NAME};
pub use contrib::{CertSettings, ContribConfig, JwtTopicSettings, JwtUserSettings};
pub use http_plugin::{HttpMethod, HttpPluginConfig, ParamsMode, ResponseMode};
pub use persistence::{
    FsyncPolicy, PersistenceConfig, DEFAULT_FSYNC_INTERVAL, DEFAULT_PERSISTENCE_DIR,
    DEFAULT_SNAPSHOT_INTERVAL,
};
pub use reload::{ConfigDiff, ListenerChange, ReloadConfig};
pub use shared_strategy::SharedStrategy;

use build::build;
pub(crate) use keys::respell_keys;
pub(crate) use raw::key_and_reason;
use raw::parse;
pub(crate) use scalars::Seconds;
