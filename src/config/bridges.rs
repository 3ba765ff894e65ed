//! The `bridges:` block: connections to other MQTT brokers (Mosquitto's bridge model in our
//! YAML). Its raw schema, its defaults and its checks live here together, as `persistence.rs`
//! does for its block; `raw/mod.rs` holds the field, `build.rs` calls [`bridges_config`].
//!
//! ```yaml
//! bridges:
//!   to-cloud:
//!     url: mqtts://user:pw@remote:8883
//!     client_id: site1-bridge
//!     topics:
//!       - {pattern: 'sensors/#', direction: out, qos: 1, local_prefix: '', remote_prefix: 'site1/'}
//! ```
//! What must not live here: parsing URLs beyond their scheme and host (the transport does that
//! when the bridge connects), opening files or sockets.

use serde::Deserialize;

use super::scalars::Bool;
use super::*;
use crate::protocol::ProtocolLevel;

/// Default `keep_alive` of a bridge, seconds (Mosquitto's `keepalive_interval`).
pub const DEFAULT_BRIDGE_KEEP_ALIVE: u16 = 60;

/// One bridge: the remote broker, how to connect to it, and the topics it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Its name under `bridges:` (in `$SYS/broker/bridges/NAME/state` and the metrics' label).
    pub name: String,
    /// `url`: `mqtt://`, `mqtts://`, `ws://` or `wss://`, with `user:password@` if the remote
    /// wants them.
    pub url: String,
    /// `client_id` at the remote broker (default `amqtt-bridge-NAME`).
    pub client_id: String,
    /// `clean_session` at the remote broker (default `false`: the remote keeps the bridge's
    /// session and queues `in` messages while the bridge is away).
    pub clean_session: bool,
    /// `keep_alive` seconds, both connections (default 60).
    pub keep_alive: u16,
    /// `protocol_version`: the MQTT version spoken to the remote broker and to this one,
    /// [`ProtocolLevel::V311`] (default; `3.1.1`, `311`) or [`ProtocolLevel::V5`] (`5`): with 5 the
    /// messages' MQTT 5 properties cross the bridge and No Local prevents loops.
    pub protocol: ProtocolLevel,
    /// `ca_file`: PEM CA certificates that the remote's certificate is checked against (default:
    /// the system's roots).
    pub ca_file: Option<PathBuf>,
    /// `certfile` / `keyfile`: a client certificate to present (both or neither).
    pub certfile: Option<PathBuf>,
    /// See `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `insecure: true`: accept a remote certificate made for another host name (its chain is
    /// still checked), as `mosquitto_pub --insecure`.
    pub insecure: bool,
    /// `local_client_id`: the bridge's session on this broker (default `amqtt-bridge-NAME`).
    pub local_client_id: String,
    /// `local_username` / `local_password`: the credentials of that session, when this broker
    /// refuses anonymous clients.
    pub local_username: Option<String>,
    /// See `local_username`.
    pub local_password: Option<String>,
    /// `local_listener`: the listener the bridge's local session connects to over loopback
    /// (default: the first plain TCP listener).
    pub local_listener: Option<String>,
    /// `topics`: what is carried, in order (the first entry that matches a message decides).
    pub topics: Vec<BridgeTopic>,
}

/// Which way a bridge topic carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeDirection {
    /// Local messages are published at the remote broker.
    Out,
    /// The remote broker's messages are published here.
    In,
    /// Both (with loop prevention).
    Both,
}

impl BridgeDirection {
    /// Carries local messages to the remote.
    pub fn out(self) -> bool {
        matches!(self, BridgeDirection::Out | BridgeDirection::Both)
    }
    /// Carries remote messages here.
    pub fn inbound(self) -> bool {
        matches!(self, BridgeDirection::In | BridgeDirection::Both)
    }
}

/// One `topics:` entry (Mosquitto's `topic pattern direction qos local_prefix remote_prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// `pattern`: a topic filter, without the prefixes.
    pub pattern: String,
    /// `direction`: `out`, `in` or `both` (default `out`, as Mosquitto's).
    pub direction: BridgeDirection,
    /// `qos`: the highest QoS the bridge subscribes and forwards with (default 0).
    pub qos: u8,
    /// `local_prefix`: prepended to `pattern` on this broker.
    pub local_prefix: String,
    /// `remote_prefix`: prepended to `pattern` on the remote broker.
    pub remote_prefix: String,
}

/// One bridge as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of bridge keys (url, client_id, topics, ...)"
)]
pub(super) struct RawBridge {
    url: Option<String>,
    client_id: Option<String>,
    clean_session: Option<Bool>,
    keep_alive: Option<i64>,
    protocol_version: Option<VersionText>,
    ca_file: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
    insecure: Option<Bool>,
    local_client_id: Option<String>,
    local_username: Option<String>,
    local_password: Option<String>,
    local_listener: Option<String>,
    topics: Option<Vec<RawBridgeTopic>>,
}

/// One `topics:` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBridgeTopic {
    pattern: Option<String>,
    direction: Option<BridgeDirection>,
    qos: Option<i64>,
    local_prefix: Option<String>,
    remote_prefix: Option<String>,
}

/// `bridges:` in file order (a name given twice is an error).
#[derive(Debug, Default)]
pub(super) struct RawBridges(Vec<(String, Option<RawBridge>)>);

impl<'de> Deserialize<'de> for RawBridges {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BridgesVisitor;
        impl<'de> serde::de::Visitor<'de> for BridgesVisitor {
            type Value = RawBridges;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of bridge names to bridge settings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawBridges, A::Error> {
                let mut out: Vec<(String, Option<RawBridge>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let bridge: Option<RawBridge> = map.next_value()?;
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "bridge '{name}' is defined twice"
                        )));
                    }
                    out.push((name, bridge));
                }
                Ok(RawBridges(out))
            }
        }
        deserializer.deserialize_map(BridgesVisitor)
    }
}

/// The checked `bridges:` block (empty when absent).
pub(super) fn bridges_config(
    raw: Option<&RawBridges>,
    listeners: &[ListenerConfig],
    origin: &str,
) -> Result<Vec<BridgeConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.0
        .iter()
        .map(|(name, bridge)| bridge_config(name, bridge.as_ref(), listeners, origin))
        .collect()
}

fn bridge_config(
    name: &str,
    raw: Option<&RawBridge>,
    listeners: &[ListenerConfig],
    origin: &str,
) -> Result<BridgeConfig, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: if key.is_empty() {
            format!("bridges.{name}")
        } else {
            format!("bridges.{name}.{key}")
        },
        reason,
    };
    if name.is_empty() || name.contains(['/', '+', '#']) {
        return Err(invalid(
            "",
            "a bridge name must be non-empty without '/', '+' or '#' (it is a $SYS topic level)"
                .into(),
        ));
    }
    let Some(raw) = raw else {
        return Err(invalid("url", "required".into()));
    };
    let url = match raw.url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => {
            return Err(invalid(
                "url",
                "required (for example mqtts://remote:8883)".into(),
            ))
        }
    };
    check_url(&url).map_err(|reason| invalid("url", reason))?;
    let keep_alive = match raw.keep_alive {
        None => DEFAULT_BRIDGE_KEEP_ALIVE,
        Some(v) => u16::try_from(v)
            .ok()
            .filter(|&v| v >= 5)
            .ok_or_else(|| invalid("keep_alive", format!("must be 5 to 65535 seconds, got {v}")))?,
    };
    let protocol = match &raw.protocol_version {
        None => ProtocolLevel::V311,
        Some(VersionText(text)) => protocol_level(text).ok_or_else(|| {
            invalid(
                "protocol_version",
                format!("must be 3.1.1 or 5, got '{text}'"),
            )
        })?,
    };
    let certfile = raw.certfile.as_ref().map(PathBuf::from);
    let keyfile = raw.keyfile.as_ref().map(PathBuf::from);
    if certfile.is_some() != keyfile.is_some() {
        return Err(invalid(
            if certfile.is_some() {
                "keyfile"
            } else {
                "certfile"
            },
            "certfile and keyfile go together: give both or neither".into(),
        ));
    }
    let tls = url.starts_with("mqtts://") || url.starts_with("wss://");
    if !tls && (raw.ca_file.is_some() || certfile.is_some() || raw.insecure.is_some()) {
        return Err(invalid(
            "url",
            "ca_file, certfile, keyfile and insecure apply to mqtts:// and wss:// only".into(),
        ));
    }
    if let Some(listener) = &raw.local_listener {
        let usable = listeners.iter().find(|l| &l.name == listener);
        match usable {
            None => {
                return Err(invalid(
                    "local_listener",
                    format!("no listener named '{listener}'"),
                ))
            }
            Some(l) if !local_capable(l) => {
                return Err(invalid(
                    "local_listener",
                    format!(
                    "listener '{listener}' is not plain TCP (type tcp, no ssl, no proxy-protocol)"
                ),
                ))
            }
            Some(_) => {}
        }
    } else if !listeners.iter().any(local_capable) {
        return Err(invalid(
            "",
            "the bridge's local session needs a plain TCP listener (type tcp, no ssl, no \
             proxy-protocol) to connect to over loopback"
                .into(),
        ));
    }
    let topics = match raw.topics.as_deref() {
        Some(topics) if !topics.is_empty() => topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                topic_config(t)
                    .map_err(|(key, reason)| invalid(&format!("topics[{i}].{key}"), reason))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(invalid(
                "topics",
                "at least one topic entry is required".into(),
            ))
        }
    };
    let default_id = format!("amqtt-bridge-{name}");
    Ok(BridgeConfig {
        name: name.to_string(),
        url,
        client_id: raw.client_id.clone().unwrap_or_else(|| default_id.clone()),
        clean_session: raw.clean_session.is_some_and(|b| b.0),
        keep_alive,
        protocol,
        ca_file: raw.ca_file.as_ref().map(PathBuf::from),
        certfile,
        keyfile,
        insecure: raw.insecure.is_some_and(|b| b.0),
        local_client_id: raw.local_client_id.clone().unwrap_or(default_id),
        local_username: raw.local_username.clone(),
        local_password: raw.local_password.clone(),
        local_listener: raw.local_listener.clone(),
        topics,
    })
}

/// `protocol_version` as written: a number (`5`, `311`, `5.0`) or a string (`3.1.1`, `mqttv50`).
#[derive(Debug)]
pub(super) struct VersionText(String);

impl<'de> Deserialize<'de> for VersionText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VersionVisitor;
        impl serde::de::Visitor<'_> for VersionVisitor {
            type Value = VersionText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an MQTT version: 3.1.1 or 5")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
        }
        deserializer.deserialize_any(VersionVisitor)
    }
}

/// The level a `protocol_version` names: ours (`3.1.1`, `311`, `5`), or Mosquitto's
/// `bridge_protocol_version` spellings (`mqttv311`, `mqttv50`).
fn protocol_level(text: &str) -> Option<ProtocolLevel> {
    match text.trim().to_ascii_lowercase().as_str() {
        "3.1.1" | "311" | "mqttv311" => Some(ProtocolLevel::V311),
        "5" | "5.0" | "mqttv5" | "mqttv50" => Some(ProtocolLevel::V5),
        _ => None,
    }
}

/// A listener the bridge's local session can use: plain TCP, no PROXY header.
pub fn local_capable(listener: &ListenerConfig) -> bool {
    listener.kind == ListenerKind::Tcp && listener.tls.is_none() && !listener.proxy_protocol
}

/// The URL's scheme is one the client speaks, and it names a host.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("'{url}' is not a URL like mqtt://host:1883"));
    };
    if !matches!(scheme, "mqtt" | "mqtts" | "ws" | "wss") {
        return Err(format!(
            "unknown scheme '{scheme}': expected mqtt, mqtts, ws or wss"
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("'{url}' names no host"));
    }
    Ok(())
}

/// One checked `topics:` entry; the error names the key within the entry.
fn topic_config(raw: &RawBridgeTopic) -> Result<BridgeTopic, (&'static str, String)> {
    let pattern = match raw.pattern.as_deref() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => {
            return Err((
                "pattern",
                "required: a topic filter such as 'sensors/#'".into(),
            ))
        }
    };
    check_filter(&pattern).map_err(|reason| ("pattern", reason))?;
    let qos = match raw.qos {
        None => 0,
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|&q| q <= 2)
            .ok_or(("qos", format!("must be 0, 1 or 2, got {v}")))?,
    };
    let local_prefix = raw.local_prefix.clone().unwrap_or_default();
    let remote_prefix = raw.remote_prefix.clone().unwrap_or_default();
    for (key, prefix) in [
        ("local_prefix", &local_prefix),
        ("remote_prefix", &remote_prefix),
    ] {
        if prefix.contains(['+', '#', '\0']) {
            return Err((key, format!("'{prefix}' may not contain '+', '#' or NUL")));
        }
    }
    Ok(BridgeTopic {
        pattern,
        direction: raw.direction.unwrap_or(BridgeDirection::Out),
        qos,
        local_prefix,
        remote_prefix,
    })
}

/// A topic filter as MQTT allows it: `#` last and alone in its level, `+` alone in its level.
fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wildcard = level.contains(['+', '#']);
        if wildcard && level.len() != 1 {
            return Err(format!("'{filter}': '+' and '#' must fill a whole level"));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!("'{filter}': '#' must be the last level"));
        }
    }
    if filter.contains('\0') {
        return Err(format!("'{filter}' contains NUL"));
    }
    Ok(())
}
