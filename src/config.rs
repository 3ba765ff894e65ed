//! Broker configuration: the aMQTT broker YAML schema and its validation.
//!
//! This module reads the YAML file that aMQTT's `amqtt -c FILE` accepts, unchanged, plus a few
//! keys of our own (`shards`, `pin_shards`, `spin_before_park`, `connection_messages`, `max_inflight`, `max_queued_messages`,
//! `max_queued_bytes`, `memory_limit`, `max_packet_size`, `connect_timeout`, `max_qos`, `metrics`,
//! and per listener `max_connect_rate`), and turns it into a checked
//! [`BrokerConfig`]. `config/default.yaml` is the operator's reference for every key.
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the key path
//! (`listeners.my-tcp.bind`) and the reason, with the line and column when the YAML parser
//! knows them. Unknown keys and wrong types are errors, never silently ignored. aMQTT features
//! this broker does not implement yet are refused at load time, all of them in the function
//! `refuse_unsupported`, so that supporting one means deleting its lines there.
//!
//! What this module must not do: no I/O beyond reading the configuration file (and resolving
//! listener host names such as `localhost:1883`), no sockets, threads or runtime, and no
//! dependency on the rest of the crate. The broker consumes [`BrokerConfig`]; nothing here
//! knows how it is used.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::Deserialize;

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
pub const DEFAULT_MAX_INFLIGHT: u16 = 20;
/// Default `max_queued_messages`.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
/// Longest `spin_before_park`: beyond this a shard would burn a core for little.
pub const MAX_SPIN_BEFORE_PARK: Duration = Duration::from_millis(10);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_qos`.
pub const DEFAULT_MAX_QOS: u8 = 2;
/// Port of `metrics.bind` when it names no port (and the address when the section is empty).
pub const DEFAULT_METRICS_PORT: u16 = 9883;
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
    /// `auth.allow-anonymous`: accept clients that send no user name.
    pub allow_anonymous: bool,
    /// `auth.password-file`: `user:hash` lines for the `auth_file` plugin.
    pub password_file: Option<PathBuf>,
    /// `auth.plugins`: authentication plugins by name, in order. When the key is absent:
    /// `auth_anonymous`, plus `auth_file` when a password file is set.
    pub auth_plugins: Vec<String>,
    /// `topic-check`: access control on PUBLISH and SUBSCRIBE.
    pub topic_check: TopicCheckConfig,
    /// Number of broker shards (threads).
    pub shards: ShardCount,
    /// Pin each shard thread to its own CPU.
    pub pin_shards: bool,
    /// How long an idle shard keeps polling before it sleeps; `Duration::ZERO` (the default)
    /// sleeps at once. Spinning trades idle CPU for wake-up latency.
    pub spin_before_park: Duration,
    /// Log every connect and disconnect at INFO (Mosquitto's `connection_messages`); when off
    /// they are logged at DEBUG.
    pub connection_messages: bool,
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
    /// The Prometheus endpoint; `None` (the default) serves none.
    pub metrics: Option<MetricsConfig>,
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
    /// `acl`: user (or `anonymous`) → filters they may subscribe with; `None` = unrestricted.
    pub acl: Option<BTreeMap<String, Vec<String>>>,
    /// `publish-acl`: user (or `anonymous`) → topics they may publish to; `None` = unrestricted.
    pub publish_acl: Option<BTreeMap<String, Vec<String>>>,
}

/// `metrics:`: where the Prometheus text format is served (path `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; port 0 picks a free one.
    pub bind: SocketAddr,
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

/// Why a configuration could not be loaded. `file` is the path or origin given by the caller.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or not a mapping of keys, as a whole.
    #[error("{file}: {reason}")]
    Syntax { file: String, reason: String },
    /// A key is unknown, has the wrong type, or a value is out of range.
    #[error("{file}: key '{key}': {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
    /// A valid aMQTT setting that this broker does not implement yet.
    #[error("{file}: key '{key}': {reason}")]
    Unsupported {
        file: String,
        key: String,
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
            }],
            timeout_disconnect_delay: DEFAULT_TIMEOUT_DISCONNECT_DELAY,
            sys_interval: DEFAULT_SYS_INTERVAL,
            allow_anonymous: true,
            password_file: None,
            auth_plugins: vec![AUTH_ANONYMOUS.to_string()],
            topic_check: TopicCheckConfig::default(),
            shards: ShardCount::Auto,
            pin_shards: true,
            spin_before_park: Duration::ZERO,
            connection_messages: true,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_packet_size: MAX_PACKET_SIZE_LIMIT,
            max_queued_bytes: None,
            memory_limit: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_qos: DEFAULT_MAX_QOS,
            metrics: None,
            source: None,
        }
    }
}

impl BrokerConfig {
    /// Reads and validates a YAML configuration file. An empty file gives the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        let mut config = Self::from_yaml_str(&text, &file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates YAML text; `origin` names it in error messages (usually the file path).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw = parse(text, origin)?;
        build(raw, origin)
    }
}

// ---------------------------------------------------------------------------------------------
// Not yet supported aMQTT features: refused at load time.
// Each check below is one feature; delete its lines when the feature is implemented.
// ---------------------------------------------------------------------------------------------

fn refuse_unsupported(
    file: &str,
    raw: &RawConfig,
    listeners: &[Merged<'_>],
) -> Result<(), ConfigError> {
    let refuse = |key: String, reason: String| ConfigError::Unsupported {
        file: file.to_string(),
        key,
        reason,
    };

    // Listener features (WebSocket, TLS) are all supported now; `listeners` stays for future checks.
    let _ = listeners;

    // Plugin names are resolved when the broker starts (a program embedding it may add its own).
    if let Some(plugins) = raw.auth.as_ref().and_then(|a| a.plugins.as_ref()) {
        if plugins.is_empty() {
            // aMQTT versions disagree on what an empty list means (allow all / deny all).
            return Err(refuse(
                "auth.plugins".into(),
                format!("an empty plugin list is not supported; list '{AUTH_ANONYMOUS}' or remove the key"),
            ));
        }
    }

    if let Some(topic_check) = &raw.topic_check {
        if topic_check.enabled == Some(true) {
            // aMQTT then runs every topic plugin it has installed; we want the choice spelled out.
            match &topic_check.plugins {
                None => {
                    return Err(refuse(
                        "topic-check.plugins".into(),
                        "topic checking is enabled but no plugin is listed; add \
                         `plugins: ['topic_acl']` (or 'topic_taboo')"
                            .into(),
                    ))
                }
                Some(plugins) if plugins.is_empty() => return Err(refuse(
                    "topic-check.plugins".into(),
                    "an empty plugin list is not supported; list 'topic_acl' or 'topic_taboo', \
                         or set `enabled: false`"
                        .into(),
                )),
                Some(_) => {}
            }
        }
    }

    if let Some(plugins) = &raw.plugins {
        let first = match plugins {
            serde_yaml::Value::Mapping(map) => map.keys().next().map(describe_plugin),
            serde_yaml::Value::Sequence(seq) => seq.first().map(describe_plugin),
            _ => None,
        };
        if let Some(first) = first {
            return Err(refuse(
                "plugins".into(),
                format!("plugins are not supported yet (first entry: {first}); remove the section or leave it empty"),
            ));
        }
    }

    Ok(())
}

fn describe_plugin(entry: &serde_yaml::Value) -> String {
    match entry {
        serde_yaml::Value::String(name) => format!("'{name}'"),
        serde_yaml::Value::Mapping(map) => match map.keys().next() {
            Some(serde_yaml::Value::String(name)) => format!("'{name}'"),
            _ => "a mapping".to_string(),
        },
        _ => "a non-name value".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw schema: what the YAML may contain, before defaults and range checks.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listeners: Option<RawListeners>,
    #[serde(rename = "timeout-disconnect-delay")]
    timeout_disconnect_delay: Option<Seconds>,
    sys_interval: Option<Seconds>,
    auth: Option<RawAuth>,
    #[serde(rename = "topic-check")]
    topic_check: Option<RawTopicCheck>,
    /// aMQTT 0.11 plugin section (mapping or list); only accepted when empty.
    plugins: Option<serde_yaml::Value>,
    shards: Option<ShardCount>,
    pin_shards: Option<bool>,
    spin_before_park: Option<Seconds>,
    connection_messages: Option<bool>,
    max_inflight: Option<Int>,
    max_queued_messages: Option<Int>,
    max_packet_size: Option<Size>,
    max_queued_bytes: Option<Size>,
    memory_limit: Option<Size>,
    connect_timeout: Option<Seconds>,
    /// `max-qos` is the key aMQTT itself reads.
    #[serde(alias = "max-qos")]
    max_qos: Option<Int>,
    /// Prometheus endpoint; absent or null = off.
    metrics: Option<RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    bind: Option<BindSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    #[serde(rename = "allow-anonymous")]
    allow_anonymous: Option<bool>,
    #[serde(rename = "password-file")]
    password_file: Option<String>,
    plugins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopicCheck {
    enabled: Option<bool>,
    plugins: Option<Vec<String>>,
    /// A null list (`alice: ~`) is an empty one: that user may do nothing.
    acl: Option<BTreeMap<String, Option<Vec<String>>>>,
    #[serde(rename = "publish-acl")]
    publish_acl: Option<BTreeMap<String, Option<Vec<String>>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListener {
    bind: Option<BindSpec>,
    #[serde(rename = "type")]
    kind: Option<RawKind>,
    /// aMQTT documents `max-connections` but its code reads `max_connections`: accept both.
    #[serde(rename = "max-connections", alias = "max_connections")]
    max_connections: Option<Int>,
    /// Our key: connections accepted per second; absent, 0 or -1 = unlimited.
    max_connect_rate: Option<Int>,
    ssl: Option<SslFlag>,
    // TLS material: used with `ssl: on`, accepted and ignored with `ssl: off`.
    cafile: Option<String>,
    capath: Option<String>,
    cadata: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
    /// Our key: client certificates are mandatory.
    #[serde(rename = "require-certificate")]
    require_certificate: Option<bool>,
    /// Our key (Mosquitto's name): the client certificate's CN is the user name.
    #[serde(rename = "use-identity-as-username")]
    use_identity_as_username: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Tcp,
    Ws,
}

/// `listeners:` in file order.
#[derive(Debug, Default)]
struct RawListeners(Vec<(String, RawListener)>);

impl<'de> Deserialize<'de> for RawListeners {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenersVisitor;
        impl<'de> Visitor<'de> for ListenersVisitor {
            type Value = RawListeners;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of listener names to listener settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawListeners, A::Error> {
                let mut out: Vec<(String, RawListener)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let listener: Option<RawListener> = map.next_value()?;
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!(
                            "listener '{name}' is defined twice"
                        )));
                    }
                    out.push((name, listener.unwrap_or_default()));
                }
                Ok(RawListeners(out))
            }
        }
        deserializer.deserialize_map(ListenersVisitor)
    }
}

/// A size in bytes: an integer, or a number with a unit (`64MiB`, `512 kB`, `1.5GiB`). Units:
/// `B`; `k`/`kB`/`KB`, `M`/`MB`, `G`/`GB` (powers of 1000); `KiB`, `MiB`, `GiB` (powers of 1024).
#[derive(Debug, Clone, Copy)]
struct Size(u64);

/// Parses the text form of [`Size`]; the error says what is wrong.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "M" | "MB" => 1000 * 1000,
        "G" | "GB" => 1000 * 1000 * 1000,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use B, kB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (for example 1048576, 512kB or 64MiB)"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes.round() as u64)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, such as 1048576 or 64MiB")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &"a size of 0 or more"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// An integer value (any sign; ranges are checked later with a clear message).
#[derive(Debug, Clone, Copy)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a smaller integer"))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A number of seconds, integer or fractional (checked for sign later).
#[derive(Debug, Clone, Copy)]
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

/// `ssl:` accepts a boolean or the strings `on`/`off`/`true`/`false` (any case). YAML 1.2,
/// which serde_yaml follows, reads a bare `on` as a string, PyYAML as a boolean.
#[derive(Debug, Clone, Copy)]
struct SslFlag(bool);

impl<'de> Deserialize<'de> for SslFlag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SslVisitor;
        impl Visitor<'_> for SslVisitor {
            type Value = SslFlag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("on, off, true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SslFlag, E> {
                Ok(SslFlag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SslFlag, E> {
                match v.to_ascii_lowercase().as_str() {
                    "on" | "true" => Ok(SslFlag(true)),
                    "off" | "false" => Ok(SslFlag(false)),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(SslVisitor)
    }
}

/// `bind:` as written: a string, or a bare port number.
#[derive(Debug, Clone)]
struct BindSpec(String);

impl<'de> Deserialize<'de> for BindSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BindVisitor;
        impl Visitor<'_> for BindVisitor {
            type Value = BindSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address like \"0.0.0.0:1883\", \"[::1]:1883\" or \":1883\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BindSpec, E> {
                Ok(BindSpec(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BindSpec, E> {
                Ok(BindSpec(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BindSpec, E> {
                Ok(BindSpec(v.to_string()))
            }
        }
        deserializer.deserialize_any(BindVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for ShardCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShardsVisitor;
        impl Visitor<'_> for ShardsVisitor {
            type Value = ShardCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or a positive integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShardCount, E> {
                if v.eq_ignore_ascii_case("auto") {
                    Ok(ShardCount::Auto)
                } else {
                    Err(E::invalid_value(Unexpected::Str(v), &self))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ShardCount, E> {
                match usize::try_from(v) {
                    Ok(n) if n > 0 => Ok(ShardCount::Fixed(n)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ShardCount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(ShardsVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing: YAML text -> RawConfig, with key paths and positions in errors.
// ---------------------------------------------------------------------------------------------

fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    // First pass: plain YAML, to report syntax errors as such and see the document's shape.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: origin.to_string(),
        reason: format!("invalid YAML: {e}"),
    })?;
    let has_merge_keys = match &doc {
        serde_yaml::Value::Null => return Ok(RawConfig::default()),
        serde_yaml::Value::Mapping(_) => contains_merge_key(&doc),
        other => {
            return Err(ConfigError::Syntax {
                file: origin.to_string(),
                reason: format!(
                    "expected a mapping of configuration keys (like 'listeners:') at the top level, found {}",
                    value_kind(other)
                ),
            })
        }
    };
    let result = if has_merge_keys {
        // `<<: *anchor` (PyYAML supports it) needs the merged tree; positions are lost then.
        let mut doc = doc;
        doc.apply_merge().map_err(|e| ConfigError::Syntax {
            file: origin.to_string(),
            reason: format!("invalid YAML merge key: {e}"),
        })?;
        serde_path_to_error::deserialize(doc)
    } else {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
    };
    result.map_err(|e| serde_error(origin, &e))
}

fn contains_merge_key(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || contains_merge_key(v)),
        serde_yaml::Value::Sequence(seq) => seq.iter().any(contains_merge_key),
        serde_yaml::Value::Tagged(tagged) => contains_merge_key(&tagged.value),
        _ => false,
    }
}

fn value_kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Turns a serde error into `Invalid { key, reason }`, keeping the position if known.
fn serde_error(origin: &str, err: &serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let key = err.path().to_string();
    let inner = err.inner();
    let mut reason = inner.to_string();
    let location = inner.location();
    // serde_yaml's message is "<its path>: <message> at line L column C"; keep <message>.
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = reason.strip_suffix(&suffix) {
            reason = stripped.to_string();
        }
    }
    let mut prefix: &str = &key;
    loop {
        if let Some(rest) = reason
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(": "))
        {
            reason = rest.to_string();
            break;
        }
        match prefix.rfind(['.', '[']) {
            Some(cut) if cut > 0 => prefix = &prefix[..cut],
            _ => break,
        }
    }
    reason = reason
        .replacen("unknown field", "unknown key", 1)
        .replacen("duplicate field", "duplicate key", 1)
        .replacen("unknown variant", "unknown value", 1);
    if let Some(loc) = location {
        reason = format!("{reason} (line {}, column {})", loc.line(), loc.column());
    }
    if key == "." {
        ConfigError::Syntax {
            file: origin.to_string(),
            reason,
        }
    } else {
        ConfigError::Invalid {
            file: origin.to_string(),
            key,
            reason,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building: defaults, listener inheritance, range checks.
// ---------------------------------------------------------------------------------------------

/// A listener setting together with the listener it is written under.
struct Field<'a, T> {
    value: &'a T,
    owner: &'a str,
    key: &'static str,
}

impl<T> Field<'_, T> {
    fn key(&self) -> String {
        format!("listeners.{}.{}", self.owner, self.key)
    }

    fn inherited_by(&self, listener: &str) -> String {
        if self.owner == listener {
            String::new()
        } else {
            format!(" (inherited by listener '{listener}')")
        }
    }
}

/// A listener after applying the `default` listener's settings.
struct Merged<'a> {
    name: &'a str,
    bind: Option<Field<'a, BindSpec>>,
    kind: Option<Field<'a, RawKind>>,
    max_connections: Option<Field<'a, Int>>,
    max_connect_rate: Option<Field<'a, Int>>,
    ssl: Option<Field<'a, SslFlag>>,
    cafile: Option<Field<'a, String>>,
    capath: Option<Field<'a, String>>,
    cadata: Option<Field<'a, String>>,
    certfile: Option<Field<'a, String>>,
    keyfile: Option<Field<'a, String>>,
    require_certificate: Option<Field<'a, bool>>,
    use_identity_as_username: Option<Field<'a, bool>>,
}

fn pick<'a, T>(
    own: &'a Option<T>,
    name: &'a str,
    default: Option<&'a Option<T>>,
    key: &'static str,
) -> Option<Field<'a, T>> {
    if let Some(value) = own {
        return Some(Field {
            value,
            owner: name,
            key,
        });
    }
    match default {
        Some(Some(value)) => Some(Field {
            value,
            owner: "default",
            key,
        }),
        _ => None,
    }
}

/// Every entry of `listeners` inherits what `default` sets; `default` comes first.
fn merge_listeners(raw: &RawListeners) -> Vec<Merged<'_>> {
    let default = raw
        .0
        .iter()
        .find(|(name, _)| name == "default")
        .map(|(_, l)| l);
    let ordered = raw
        .0
        .iter()
        .filter(|(name, _)| name == "default")
        .chain(raw.0.iter().filter(|(name, _)| name != "default"));
    ordered
        .map(|(name, own)| {
            let inherit = if name == "default" { None } else { default };
            Merged {
                name,
                bind: pick(&own.bind, name, inherit.map(|d| &d.bind), "bind"),
                kind: pick(&own.kind, name, inherit.map(|d| &d.kind), "type"),
                max_connections: pick(
                    &own.max_connections,
                    name,
                    inherit.map(|d| &d.max_connections),
                    "max-connections",
                ),
                max_connect_rate: pick(
                    &own.max_connect_rate,
                    name,
                    inherit.map(|d| &d.max_connect_rate),
                    "max_connect_rate",
                ),
                ssl: pick(&own.ssl, name, inherit.map(|d| &d.ssl), "ssl"),
                cafile: pick(&own.cafile, name, inherit.map(|d| &d.cafile), "cafile"),
                capath: pick(&own.capath, name, inherit.map(|d| &d.capath), "capath"),
                cadata: pick(&own.cadata, name, inherit.map(|d| &d.cadata), "cadata"),
                certfile: pick(
                    &own.certfile,
                    name,
                    inherit.map(|d| &d.certfile),
                    "certfile",
                ),
                keyfile: pick(&own.keyfile, name, inherit.map(|d| &d.keyfile), "keyfile"),
                require_certificate: pick(
                    &own.require_certificate,
                    name,
                    inherit.map(|d| &d.require_certificate),
                    "require-certificate",
                ),
                use_identity_as_username: pick(
                    &own.use_identity_as_username,
                    name,
                    inherit.map(|d| &d.use_identity_as_username),
                    "use-identity-as-username",
                ),
            }
        })
        .collect()
}

/// The TLS settings of a listener with `ssl: on`: `certfile` and `keyfile` are required, and
/// `require-certificate` needs a CA to check client certificates against. Files are read at start.
fn listener_tls(listener: &Merged<'_>, origin: &str) -> Result<Option<TlsConfig>, ConfigError> {
    let ssl_on = listener.ssl.as_ref().is_some_and(|f| f.value.0);
    if !ssl_on {
        return Ok(None);
    }
    let missing = |key: &str| ConfigError::Invalid {
        file: origin.to_string(),
        key: format!("listeners.{}.{key}", listener.name),
        reason: "required when ssl is on".to_string(),
    };
    let path = |f: &Option<Field<'_, String>>| f.as_ref().map(|f| PathBuf::from(f.value));
    let certfile = path(&listener.certfile).ok_or_else(|| missing("certfile"))?;
    let keyfile = path(&listener.keyfile).ok_or_else(|| missing("keyfile"))?;
    let tls = TlsConfig {
        certfile,
        keyfile,
        cafile: path(&listener.cafile),
        capath: path(&listener.capath),
        cadata: listener.cadata.as_ref().map(|f| f.value.clone()),
        require_certificate: listener
            .require_certificate
            .as_ref()
            .is_some_and(|f| *f.value),
        use_identity_as_username: listener
            .use_identity_as_username
            .as_ref()
            .is_some_and(|f| *f.value),
    };
    if tls.require_certificate
        && tls.cafile.is_none()
        && tls.capath.is_none()
        && tls.cadata.is_none()
    {
        return Err(ConfigError::Invalid {
            file: origin.to_string(),
            key: format!("listeners.{}.require-certificate", listener.name),
            reason:
                "client certificates need a CA to be checked against: set cafile, capath or cadata"
                    .to_string(),
        });
    }
    if tls.use_identity_as_username && !tls.require_certificate {
        return Err(ConfigError::Invalid {
            file: origin.to_string(),
            key: format!("listeners.{}.use-identity-as-username", listener.name),
            reason: "needs require-certificate: true".to_string(),
        });
    }
    Ok(Some(tls))
}

fn build(raw: RawConfig, origin: &str) -> Result<BrokerConfig, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: key.to_string(),
        reason,
    };
    let defaults = BrokerConfig::default();

    let no_listeners = RawListeners::default();
    let merged = merge_listeners(raw.listeners.as_ref().unwrap_or(&no_listeners));
    refuse_unsupported(origin, &raw, &merged)?;

    let listeners = match &raw.listeners {
        None => defaults.listeners.clone(),
        Some(_) => {
            let mut listeners = Vec::new();
            for listener in &merged {
                let Some(bind) = &listener.bind else {
                    log::debug!(
                        "{origin}: listener '{}' has no 'bind' address; it is not started",
                        listener.name
                    );
                    continue;
                };
                let address = parse_bind(&bind.value.0, DEFAULT_PORT).map_err(|reason| {
                    invalid(
                        &bind.key(),
                        format!("{reason}{}", bind.inherited_by(listener.name)),
                    )
                })?;
                let max_connections = match &listener.max_connections {
                    None => None,
                    Some(field) => match field.value.0 {
                        -1 => None,
                        n if n > 0 => Some(usize::try_from(n).map_err(|_| {
                            invalid(&field.key(), format!("{n} is too large"))
                        })?),
                        n => {
                            return Err(invalid(
                                &field.key(),
                                format!(
                                    "must be a positive number of connections, or -1 for unlimited; got {n}{}",
                                    field.inherited_by(listener.name)
                                ),
                            ))
                        }
                    },
                };
                let max_connect_rate = match &listener.max_connect_rate {
                    None => None,
                    Some(field) => match field.value.0 {
                        -1 | 0 => None,
                        n if n > 0 => Some(u32::try_from(n).map_err(|_| {
                            invalid(&field.key(), format!("{n} is too large"))
                        })?),
                        n => {
                            return Err(invalid(
                                &field.key(),
                                format!(
                                    "must be a number of connections per second, or 0 for unlimited; got {n}{}",
                                    field.inherited_by(listener.name)
                                ),
                            ))
                        }
                    },
                };
                let kind = match listener.kind.as_ref().map(|k| *k.value) {
                    Some(RawKind::Ws) => ListenerKind::Ws,
                    Some(RawKind::Tcp) | None => ListenerKind::Tcp,
                };
                let tls = listener_tls(listener, origin)?;
                listeners.push(ListenerConfig {
                    name: listener.name.to_string(),
                    bind: address,
                    kind,
                    max_connections,
                    max_connect_rate,
                    tls,
                });
            }
            if listeners.is_empty() {
                return Err(invalid(
                    "listeners",
                    "no listener has a 'bind' address, so the broker would not listen anywhere \
                     (for example, add 'bind: 0.0.0.0:1883' under 'listeners.default')"
                        .to_string(),
                ));
            }
            listeners
        }
    };

    let seconds = |key: &str, value: Option<Seconds>, default: Duration, allow_zero: bool| {
        let Some(Seconds(secs)) = value else {
            return Ok(default);
        };
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
            invalid(key, format!("must be {expected} seconds, got {secs}"))
        })
    };
    let integer = |key: &str, value: Option<Int>, default: i64, min: i64, max: i64| match value {
        None => Ok(default),
        Some(Int(v)) if (min..=max).contains(&v) => Ok(v),
        Some(Int(v)) => Err(invalid(
            key,
            format!("must be between {min} and {max}, got {v}"),
        )),
    };

    let timeout_disconnect_delay = seconds(
        "timeout-disconnect-delay",
        raw.timeout_disconnect_delay,
        defaults.timeout_disconnect_delay,
        true,
    )?;
    let sys_interval = seconds(
        "sys_interval",
        raw.sys_interval,
        defaults.sys_interval,
        true,
    )?;
    let connect_timeout = seconds(
        "connect_timeout",
        raw.connect_timeout,
        defaults.connect_timeout,
        false,
    )?;
    let spin_before_park = seconds(
        "spin_before_park",
        raw.spin_before_park,
        defaults.spin_before_park,
        true,
    )?;
    if spin_before_park > MAX_SPIN_BEFORE_PARK {
        return Err(invalid(
            "spin_before_park",
            format!(
                "must be at most {} seconds, got {}",
                MAX_SPIN_BEFORE_PARK.as_secs_f64(),
                spin_before_park.as_secs_f64()
            ),
        ));
    }
    let max_inflight = integer(
        "max_inflight",
        raw.max_inflight,
        i64::from(DEFAULT_MAX_INFLIGHT),
        1,
        i64::from(u16::MAX),
    )?;
    let max_queued_messages = integer(
        "max_queued_messages",
        raw.max_queued_messages,
        DEFAULT_MAX_QUEUED_MESSAGES as i64,
        1,
        i64::MAX,
    )?;
    let size = |key: &str, value: Option<Size>, min: u64, max: u64| match value {
        None => Ok(None),
        Some(Size(v)) if (min..=max).contains(&v) => Ok(Some(v)),
        Some(Size(v)) => Err(invalid(
            key,
            format!("must be between {min} and {max} bytes, got {v}"),
        )),
    };
    let max_packet_size = size(
        "max_packet_size",
        raw.max_packet_size,
        MIN_PACKET_SIZE as u64,
        MAX_PACKET_SIZE_LIMIT as u64,
    )?
    .unwrap_or(MAX_PACKET_SIZE_LIMIT as u64);
    // 0 means no limit, as in Mosquitto.
    let max_queued_bytes =
        size("max_queued_bytes", raw.max_queued_bytes, 0, u64::MAX)?.filter(|&v| v > 0);
    let memory_limit = size("memory_limit", raw.memory_limit, 0, u64::MAX)?.filter(|&v| v > 0);
    let max_qos = integer("max_qos", raw.max_qos, i64::from(DEFAULT_MAX_QOS), 0, 2)?;
    let metrics = metrics_config(raw.metrics.as_ref(), &listeners, origin)?;

    let range_error = |key: &str| invalid(key, "value out of range for this platform".to_string());
    let password_file = raw
        .auth
        .as_ref()
        .and_then(|a| a.password_file.as_ref())
        .map(PathBuf::from);
    Ok(BrokerConfig {
        listeners,
        timeout_disconnect_delay,
        sys_interval,
        allow_anonymous: raw
            .auth
            .as_ref()
            .and_then(|a| a.allow_anonymous)
            .unwrap_or(defaults.allow_anonymous),
        password_file: password_file.clone(),
        auth_plugins: raw
            .auth
            .as_ref()
            .and_then(|a| a.plugins.clone())
            .unwrap_or_else(|| {
                let mut names = vec![AUTH_ANONYMOUS.to_string()];
                if password_file.is_some() {
                    names.push(AUTH_FILE.to_string());
                }
                names
            }),
        topic_check: topic_check_config(raw.topic_check.as_ref()),
        shards: raw.shards.unwrap_or(defaults.shards),
        pin_shards: raw.pin_shards.unwrap_or(defaults.pin_shards),
        spin_before_park,
        connection_messages: raw
            .connection_messages
            .unwrap_or(defaults.connection_messages),
        max_inflight: u16::try_from(max_inflight).map_err(|_| range_error("max_inflight"))?,
        max_queued_messages: usize::try_from(max_queued_messages)
            .map_err(|_| range_error("max_queued_messages"))?,
        max_packet_size: usize::try_from(max_packet_size)
            .map_err(|_| range_error("max_packet_size"))?,
        max_queued_bytes: max_queued_bytes
            .map(usize::try_from)
            .transpose()
            .map_err(|_| range_error("max_queued_bytes"))?,
        memory_limit: memory_limit
            .map(usize::try_from)
            .transpose()
            .map_err(|_| range_error("memory_limit"))?,
        connect_timeout,
        max_qos: u8::try_from(max_qos).map_err(|_| range_error("max_qos"))?,
        metrics,
        source: None,
    })
}

/// `topic-check:` as given; the plugins check their own settings when the broker starts.
fn topic_check_config(raw: Option<&RawTopicCheck>) -> TopicCheckConfig {
    let Some(raw) = raw else {
        return TopicCheckConfig::default();
    };
    let table = |t: &Option<BTreeMap<String, Option<Vec<String>>>>| {
        t.as_ref().map(|t| {
            t.iter()
                .map(|(user, list)| (user.clone(), list.clone().unwrap_or_default()))
                .collect()
        })
    };
    TopicCheckConfig {
        enabled: raw.enabled.unwrap_or(false),
        plugins: raw.plugins.clone().unwrap_or_default(),
        acl: table(&raw.acl),
        publish_acl: table(&raw.publish_acl),
    }
}

/// `metrics:`: an address (default `127.0.0.1:9883`) that no MQTT listener uses.
fn metrics_config(
    raw: Option<&RawMetrics>,
    listeners: &[ListenerConfig],
    origin: &str,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: "metrics.bind".to_string(),
        reason,
    };
    let bind = match &raw.bind {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_METRICS_PORT),
        Some(spec) => parse_bind(&spec.0, DEFAULT_METRICS_PORT).map_err(invalid)?,
    };
    if bind.port() != 0 {
        let clash = listeners.iter().find(|l| {
            l.bind.port() == bind.port()
                && l.bind.is_ipv4() == bind.is_ipv4()
                && (l.bind.ip() == bind.ip()
                    || l.bind.ip().is_unspecified()
                    || bind.ip().is_unspecified())
        });
        if let Some(listener) = clash {
            return Err(invalid(format!(
                "{bind} overlaps listener '{}' ({}): the metrics endpoint needs a port of its own",
                listener.name, listener.bind
            )));
        }
    }
    Ok(Some(MetricsConfig { bind }))
}

/// Parses a listener `bind` value the way aMQTT does, plus IPv6 and host names:
/// `host:port`, `[ipv6]:port`, `:port` / `port` / empty (all IPv4 interfaces), `host` alone
/// (default port). Host names are resolved now; an IPv4 result is preferred.
fn parse_bind(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if text.is_empty() {
        return Ok(SocketAddr::new(any, default_port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let parse_port = |port: &str| -> Result<u16, String> {
        if port.is_empty() {
            return Ok(default_port);
        }
        port.parse::<u16>().map_err(|_| {
            format!("'{port}' in bind address '{text}' is not a port number (0-65535)")
        })
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "bind address '{text}' has '[' without a closing ']'"
            ));
        };
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("'{host}' in bind address '{text}' is not an IPv6 address"))?;
        let port = match after {
            "" => default_port,
            _ => match after.strip_prefix(':') {
                Some(port) => parse_port(port)?,
                None => {
                    return Err(format!(
                        "bind address '{text}' has text after ']' that is not ':port'"
                    ))
                }
            },
        };
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, parse_port(port)?),
        None if text.bytes().all(|b| b.is_ascii_digit()) => ("", parse_port(text)?),
        None => (text, default_port),
    };
    if host.is_empty() {
        return Ok(SocketAddr::new(any, port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.contains(':') || host.contains(char::is_whitespace) {
        return Err(format!(
            "bind address '{text}' is not of the form 'host:port', '[ipv6]:port' or ':port'"
        ));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}' of bind address '{text}': {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("host '{host}' of bind address '{text}' has no address"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
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
        assert_eq!(c.max_inflight, 20);
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
            ok(include_str!("../config/default.yaml")),
            BrokerConfig::default()
        );
    }

    #[test]
    fn example_minimal_yaml_loads() {
        let c = ok(include_str!("../config/minimal.yaml"));
        assert_eq!(names(&c), ["default"]);
        assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"));
    }

    #[test]
    fn example_amqtt_yaml_loads() {
        let c = ok(include_str!("../config/amqtt-example.yaml"));
        assert_eq!(names(&c), ["default", "my-tcp-2"]);
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

    #[test]
    fn example_multi_listener_yaml_loads() {
        let c = ok(include_str!("../config/multi-listener.yaml"));
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
    fn listeners_inherit_default_and_override_it() {
        let c = ok("
listeners:
  a:
    bind: 127.0.0.1:1884
  default:
    type: tcp
    max-connections: 50
    bind: 0.0.0.0:1883
  b:
    bind: 127.0.0.1:1885
    max-connections: -1
  c:
    bind: 127.0.0.1:1886
    max_connections: 7
");
        assert_eq!(
            names(&c),
            ["default", "a", "b", "c"],
            "default first, then file order"
        );
        assert_eq!(c.listeners[0].max_connections, Some(50));
        assert_eq!(c.listeners[1].max_connections, Some(50));
        assert_eq!(c.listeners[2].max_connections, None);
        assert_eq!(c.listeners[3].max_connections, Some(7));
        assert_eq!(c.listeners[1].bind, addr("127.0.0.1:1884"));
    }

    #[test]
    fn listener_with_only_a_name_inherits_everything() {
        let c = ok("listeners:\n  default:\n    bind: 127.0.0.1:1883\n  twin:\n");
        assert_eq!(names(&c), ["default", "twin"]);
        assert_eq!(c.listeners[1].bind, addr("127.0.0.1:1883"));
    }

    #[test]
    fn unbound_listeners_are_skipped() {
        let c =
            ok("listeners:\n  default:\n    max-connections: 10\n  x:\n    bind: 127.0.0.1:1884\n");
        assert_eq!(names(&c), ["x"]);
        assert_eq!(c.listeners[0].max_connections, Some(10));
    }

    #[test]
    fn no_bound_listener_is_an_error() {
        invalid(
            "listeners:\n  default:\n    type: tcp\n  x: {}\n",
            "listeners",
            "no listener has a 'bind'",
        );
        invalid("listeners: {}\n", "listeners", "no listener has a 'bind'");
    }

    #[test]
    fn null_listeners_means_builtin_default() {
        assert_eq!(
            ok("listeners:\n").listeners,
            BrokerConfig::default().listeners
        );
    }

    #[test]
    fn display_format_matches_the_contract() {
        let e = err("listeners:\n  default:\n    bind: 0.0.0.0:1883\n  tls-1:\n    bind: 0.0.0.0:8883\n    ssl: on\n    certfile: /c.pem\n");
        assert_eq!(
            e.to_string(),
            "config/broker.yaml: key 'listeners.tls-1.keyfile': required when ssl is on"
        );
    }

    #[test]
    fn websocket_listeners_inherit_their_type() {
        let c = ok("listeners:\n  default:\n    bind: 0.0.0.0:1883\n  w:\n    type: ws\n    bind: 0.0.0.0:8080\n");
        assert_eq!(c.listeners[0].kind, ListenerKind::Tcp);
        assert_eq!(c.listeners[1].kind, ListenerKind::Ws);
        let c = ok("listeners:\n  default:\n    type: ws\n  w:\n    bind: 0.0.0.0:8080\n");
        assert_eq!(c.listeners[0].kind, ListenerKind::Ws);
    }

    #[test]
    fn tls_listeners_need_certificate_and_key() {
        for on in ["on", "ON", "'on'", "true", "True", "\"true\""] {
            let c = ok(&format!(
                "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: {on}\n    certfile: /c.pem\n    keyfile: /k.pem\n"
            ));
            let tls = c.listeners[0].tls.as_ref().expect("tls");
            assert_eq!(tls.certfile, PathBuf::from("/c.pem"));
            assert!(!tls.require_certificate);
        }
        invalid(
            "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: on\n    keyfile: /k.pem\n",
            "listeners.default.certfile",
            "required when ssl is on",
        );
        for off in ["off", "OFF", "false", "'false'"] {
            let c = ok(&format!(
                "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    ssl: {off}\n    certfile: /x.pem\n    keyfile: /x.key\n    cafile: /ca\n    capath: /cas\n    cadata: PEM\n"
            ));
            assert!(c.listeners[0].tls.is_none());
        }
        invalid(
            "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    ssl: maybe\n",
            "listeners.default.ssl",
            "on, off, true or false",
        );
    }

    #[test]
    fn mutual_tls_needs_a_ca_and_identity_needs_mutual_tls() {
        let base = "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: on\n    certfile: /c.pem\n    keyfile: /k.pem\n";
        invalid(
            &format!("{base}    require-certificate: true\n"),
            "listeners.default.require-certificate",
            "need a CA",
        );
        invalid(
            &format!("{base}    use-identity-as-username: true\n"),
            "listeners.default.use-identity-as-username",
            "require-certificate",
        );
        let c = ok(&format!(
            "{base}    cafile: /ca.pem\n    require-certificate: true\n    use-identity-as-username: true\n"
        ));
        let tls = c.listeners[0].tls.as_ref().expect("tls");
        assert!(tls.require_certificate && tls.use_identity_as_username);
        assert_eq!(tls.cafile, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn password_file_and_auth_plugins() {
        let c = ok(
            "auth:\n  password-file: /etc/amqtt/passwd\n  plugins: [auth_anonymous, auth_file]\n",
        );
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
        // No publish-acl: `None`, which topic_acl reads as "publishing is not restricted".
        assert_eq!(
            ok("topic-check:\n  enabled: true\n  plugins: [topic_taboo]\n")
                .topic_check
                .publish_acl,
            None
        );
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
    fn refuses_plugin_section() {
        refused(
            "plugins:\n  amqtt.plugins.sys.broker.BrokerSysPlugin:\n    sys_interval: 20\n",
            "plugins",
            "'amqtt.plugins.sys.broker.BrokerSysPlugin'",
        );
        refused("plugins:\n  - auth_file\n", "plugins", "'auth_file'");
        refused(
            "plugins:\n  - amqtt.plugins.authentication.AnonymousAuthPlugin:\n      allow-anonymous: true\n",
            "plugins",
            "AnonymousAuthPlugin",
        );
        ok("plugins: {}\n");
        ok("plugins: []\n");
        ok("plugins:\n");
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
            "auth:\n  allow_anonymous: true\n",
            "auth.allow_anonymous",
            "allow-anonymous",
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
            "expected a number of seconds",
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
    fn bind_forms() {
        let bind =
            |b: &str| ok(&format!("listeners:\n  default:\n    bind: {b}\n")).listeners[0].bind;
        assert_eq!(bind("0.0.0.0:1883"), addr("0.0.0.0:1883"));
        assert_eq!(bind("127.0.0.1:1884"), addr("127.0.0.1:1884"));
        assert_eq!(bind("':1885'"), addr("0.0.0.0:1885"));
        assert_eq!(bind("1886"), addr("0.0.0.0:1886"));
        assert_eq!(bind("'1887'"), addr("0.0.0.0:1887"));
        assert_eq!(bind("'[::1]:1888'"), addr("[::1]:1888"));
        assert_eq!(bind("'[::]'"), addr("[::]:1883"));
        assert_eq!(bind("'::1'"), addr("[::1]:1883"));
        assert_eq!(bind("10.1.2.3"), addr("10.1.2.3:1883"));
        assert_eq!(bind("'10.1.2.3:'"), addr("10.1.2.3:1883"));
        assert_eq!(bind("''"), addr("0.0.0.0:1883"));
        assert_eq!(bind("127.0.0.1:0"), addr("127.0.0.1:0"));
        let local = bind("localhost:1889");
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 1889);
    }

    #[test]
    fn bad_bind_addresses() {
        let bad = |b: &str, needle: &str| {
            invalid(
                &format!("listeners:\n  default:\n    bind: {b}\n"),
                "listeners.default.bind",
                needle,
            )
        };
        bad("0.0.0.0:99999", "not a port number");
        bad("0.0.0.0:http", "not a port number");
        bad("'[::1:1883'", "without a closing ']'");
        bad("'[nope]:1883'", "not an IPv6 address");
        bad("'[::1]x'", "after ']'");
        bad("'1:2:3:4:5'", "is not of the form");
        bad("no-such-host.invalid:1883", "cannot resolve host");
        bad("[1883]", "expected an address");
        let msg = invalid(
            "listeners:\n  default:\n    bind: 'x:y'\n  other: {}\n",
            "listeners.default.bind",
            "not a port",
        );
        assert!(
            !msg.contains("inherited"),
            "default itself fails first: {msg}"
        );
    }

    #[test]
    fn max_connections_values() {
        let mc = |v: &str| {
            load(&format!(
                "listeners:\n  default:\n    bind: :1883\n    max-connections: {v}\n"
            ))
            .map(|c| c.listeners[0].max_connections)
        };
        assert_eq!(mc("-1").ok(), Some(None));
        assert_eq!(mc("1").ok(), Some(Some(1)));
        assert_eq!(mc("100000").ok(), Some(Some(100_000)));
        for bad in ["0", "-2"] {
            let msg = mc(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                msg.contains("key 'listeners.default.max-connections'"),
                "{msg}"
            );
            assert!(msg.contains("-1 for unlimited"), "{msg}");
        }
    }

    #[test]
    fn max_connect_rate_values() {
        let rate = |v: &str| {
            load(&format!(
                "listeners:\n  default:\n    bind: :1883\n    max_connect_rate: {v}\n  other:\n    bind: :1884\n"
            ))
            .map(|c| (c.listeners[0].max_connect_rate, c.listeners[1].max_connect_rate))
        };
        assert_eq!(rate("0").ok(), Some((None, None)));
        assert_eq!(rate("-1").ok(), Some((None, None)));
        // Inherited from `default` like every listener key.
        assert_eq!(rate("500").ok(), Some((Some(500), Some(500))));
        let msg = rate("-5").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("key 'listeners.default.max_connect_rate'"),
            "{msg}"
        );
        assert!(msg.contains("0 for unlimited"), "{msg}");
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
}
