//! Client configuration: aMQTT's client YAML (what `amqtt_pub -c` / `amqtt_sub -c` read).
//!
//! Keys, with aMQTT's defaults:
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `keep_alive` | 10 | seconds, sent in CONNECT; 0 turns keep-alive off |
//! | `ping_delay` | 1 | PINGREQ goes out this many seconds before the keep-alive period ends |
//! | `default_qos` | 0 | QoS of a publish that names none |
//! | `default_retain` | false | retain flag of a publish that names none |
//! | `auto_reconnect` | true | reconnect when an established connection is lost |
//! | `reconnect_retries` | 2 | attempts per loss; negative: forever |
//! | `reconnect_max_interval` | 10 | cap, in seconds, of the doubling wait between attempts |
//! | `connection_timeout` | 60 | seconds for TCP/TLS/WS set-up, and again for CONNACK |
//! | `cleansession` | true | clean session flag (the CLIs use `--clean-session` instead) |
//! | `topics` | — | per topic name: `qos`, `retain` for publishes that name none |
//! | `will` | — | `topic`, `message`, `qos` (0), `retain` (false) |
//! | `connection` (or `broker`) | — | `uri` ([`DEFAULT_BROKER_URL`] when absent), `cafile`, `capath`, `cadata`, `certfile` + `keyfile` (client certificate) |
//! | `check_hostname` | true | mqtts/wss: the broker's certificate must name the URL's host |
//! | `verify_cert` | true | mqtts/wss: verify the broker's certificate at all (false: take any) |
//! | `max_inflight` | 100 | ours: outgoing QoS 1/2 messages awaiting acknowledgement at once |
//!
//! Accepted and ignored: `plugins` (aMQTT's logging plugins; we log through `log`) and
//! `qos1_puback_timeout` (we never give up on an acknowledgement: unacknowledged messages are
//! re-sent after a reconnect instead).
//! Unknown keys and wrong types are errors naming the file, the key and the reason, as the broker's
//! `src/config/` does. No I/O beyond reading the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::config::{read_file, ConfigError, Seconds};
use crate::protocol::{LastWill, QoS, TopicName};

/// The broker a client connects to when neither the caller nor `connection.uri` names one, as
/// aMQTT's and mosquitto's clients do.
pub const DEFAULT_BROKER_URL: &str = "mqtt://127.0.0.1:1883";

/// The validated client configuration. `Default` gives aMQTT's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// PINGREQ goes out this long before the keep-alive period ends.
    pub ping_delay: Duration,
    /// QoS of a publish that names none (and has no `topics:` entry).
    pub default_qos: QoS,
    /// Retain flag of a publish that names none (and has no `topics:` entry).
    pub default_retain: bool,
    /// Reconnect when an established connection is lost.
    pub auto_reconnect: bool,
    /// Reconnect attempts after a loss; negative means forever.
    pub reconnect_retries: i64,
    /// Cap of the doubling wait between reconnect attempts.
    pub reconnect_max_interval: Duration,
    /// Limit for the transport set-up, and separately for the CONNACK.
    pub connection_timeout: Duration,
    /// `cleansession` in the YAML.
    pub clean_session: bool,
    /// Per-topic defaults for publishes that give no QoS or retain flag.
    pub topics: BTreeMap<String, TopicDefaults>,
    /// The will the broker publishes if the connection ends without DISCONNECT (`will:`: `topic`,
    /// `message`, `qos`, `retain`).
    pub will: Option<LastWill>,
    /// Broker URL and TLS trust (`connection:` or `broker:`).
    pub connection: ConnectionConfig,
    /// mqtts/wss: the broker's certificate must name the host of the URL (`false`: any name, the
    /// chain is still verified).
    pub check_hostname: bool,
    /// mqtts/wss: verify the broker's certificate (`false`: take any certificate).
    pub verify_cert: bool,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement at once; more wait their turn.
    pub max_inflight: u16,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

/// `topics: {name: {qos, retain}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    /// QoS of a publish to this topic that names none.
    pub qos: QoS,
    /// Retain flag of a publish to this topic that names none.
    pub retain: bool,
}

/// `connection:` (aMQTT's older name: `broker:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Broker URL, used when the caller gives none (`amqtt_pub -c` without `--url`).
    pub uri: Option<String>,
    /// PEM file of CA certificates to trust.
    pub cafile: Option<PathBuf>,
    /// Directory of PEM CA certificates to trust.
    pub capath: Option<PathBuf>,
    /// PEM CA certificates to trust, inline.
    pub cadata: Option<String>,
    /// The client certificate to present (PEM), with `keyfile`.
    pub certfile: Option<PathBuf>,
    /// The private key of `certfile` (PEM).
    pub keyfile: Option<PathBuf>,
}

impl ConnectionConfig {
    /// `uri`, or [`DEFAULT_BROKER_URL`].
    pub fn uri_or_default(&self) -> &str {
        self.uri.as_deref().unwrap_or(DEFAULT_BROKER_URL)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keep_alive: 10,
            ping_delay: Duration::from_secs(1),
            default_qos: QoS::AtMostOnce,
            default_retain: false,
            auto_reconnect: true,
            reconnect_retries: 2,
            reconnect_max_interval: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
            clean_session: true,
            topics: BTreeMap::new(),
            will: None,
            connection: ConnectionConfig::default(),
            check_hostname: true,
            verify_cert: true,
            max_inflight: 100,
            source: None,
        }
    }
}

/// Why a client configuration could not be loaded.
/// Errors name the file, the key and the reason, as the broker configuration's do.
pub type ClientConfigError = ConfigError;

impl ClientConfig {
    /// Reads and validates a YAML file. An empty file gives the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ClientConfigError> {
        let (file, text) = read_file(path)?;
        let mut config = Self::from_yaml_str(&text, &file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates YAML text; `origin` names it in error messages.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ClientConfigError> {
        // `-` and `_` alike in keys (`keep-alive` is `keep_alive`), as in the broker's file; a
        // duplicate key is refused at its own line.
        let text = &crate::config::respell_keys(text, origin).map_err(|e| match e {
            crate::config::ConfigError::Invalid { file, key, reason } => {
                ClientConfigError::Invalid { file, key, reason }
            }
            other => ClientConfigError::Syntax {
                file: origin.to_string(),
                reason: other.to_string(),
            },
        })?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ClientConfigError::Syntax {
                file: origin.to_string(),
                reason: format!("invalid YAML: {e}"),
            })?;
        match doc {
            serde_yaml::Value::Null => return Ok(ClientConfig::default()),
            serde_yaml::Value::Mapping(_) => {}
            _ => return Err(ClientConfigError::Syntax {
                file: origin.to_string(),
                reason:
                    "expected a mapping of configuration keys (like 'keep_alive:') at the top level"
                        .into(),
            }),
        }
        let raw: RawConfig = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(
            text,
        ))
        .map_err(|e| {
            let (key, reason) = crate::config::key_and_reason(&e);
            ClientConfigError::Invalid {
                file: origin.to_string(),
                key,
                reason,
            }
        })?;
        build(raw, origin)
    }

    /// QoS and retain flag for a publish on `topic` that names neither: the `topics:` entry for
    /// that exact topic name, else `default_qos` / `default_retain`.
    pub fn publish_defaults(&self, topic: &str) -> TopicDefaults {
        self.topics.get(topic).copied().unwrap_or(TopicDefaults {
            qos: self.default_qos,
            retain: self.default_retain,
        })
    }
}

/// serde_yaml appends "at line X column Y"; the key path already says where.
// -- raw schema -----------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    keep_alive: Option<u16>,
    ping_delay: Option<Seconds>,
    default_qos: Option<u8>,
    default_retain: Option<Flag>,
    auto_reconnect: Option<Flag>,
    reconnect_retries: Option<i64>,
    reconnect_max_interval: Option<Seconds>,
    connection_timeout: Option<Seconds>,
    cleansession: Option<Flag>,
    topics: Option<BTreeMap<String, Option<RawTopic>>>,
    will: Option<RawWill>,
    connection: Option<RawConnection>,
    broker: Option<RawConnection>,
    check_hostname: Option<Flag>,
    verify_cert: Option<Flag>,
    plugins: Option<serde_yaml::Value>,
    #[allow(dead_code)]
    qos1_puback_timeout: Option<Seconds>,
    max_inflight: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopic {
    qos: Option<u8>,
    retain: Option<Flag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWill {
    topic: String,
    message: String,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConnection {
    uri: Option<String>,
    cafile: Option<PathBuf>,
    capath: Option<PathBuf>,
    cadata: Option<String>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
}

/// A boolean, also written `on`/`off`/`yes`/`no` as PyYAML (which aMQTT uses) reads them.
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FlagVisitor;
        impl Visitor<'_> for FlagVisitor {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v.to_ascii_lowercase().as_str() {
                    "on" | "yes" | "true" => Ok(Flag(true)),
                    "off" | "no" | "false" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(FlagVisitor)
    }
}

// -- validation -----------------------------------------------------------------------------------

fn build(raw: RawConfig, file: &str) -> Result<ClientConfig, ClientConfigError> {
    let invalid = |key: &str, reason: String| ClientConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        reason,
    };
    let qos = |key: &str, v: u8| {
        QoS::from_u8(v).ok_or_else(|| invalid(key, format!("QoS must be 0, 1 or 2, not {v}")))
    };
    let seconds = |key: &str, s: Seconds, allow_zero: bool| {
        if !s.0.is_finite() || s.0 < 0.0 || (!allow_zero && s.0 == 0.0) || s.0 > 1e9 {
            let range = if allow_zero {
                "0 or more"
            } else {
                "more than 0"
            };
            return Err(invalid(
                key,
                format!("must be a number of seconds, {range}, not {}", s.0),
            ));
        }
        Ok(Duration::from_secs_f64(s.0))
    };

    let mut config = ClientConfig::default();
    if let Some(v) = raw.keep_alive {
        config.keep_alive = v;
    }
    if let Some(v) = raw.ping_delay {
        config.ping_delay = seconds("ping_delay", v, true)?;
    }
    if let Some(v) = raw.default_qos {
        config.default_qos = qos("default_qos", v)?;
    }
    if let Some(v) = raw.default_retain {
        config.default_retain = v.0;
    }
    if let Some(v) = raw.auto_reconnect {
        config.auto_reconnect = v.0;
    }
    if let Some(v) = raw.reconnect_retries {
        config.reconnect_retries = v;
    }
    if let Some(v) = raw.reconnect_max_interval {
        config.reconnect_max_interval = seconds("reconnect_max_interval", v, true)?;
    }
    if let Some(v) = raw.connection_timeout {
        config.connection_timeout = seconds("connection_timeout", v, false)?;
    }
    if let Some(v) = raw.cleansession {
        config.clean_session = v.0;
    }
    if let Some(v) = raw.max_inflight {
        if v == 0 {
            return Err(invalid("max_inflight", "must be at least 1".into()));
        }
        config.max_inflight = v;
    }
    for (name, topic) in raw.topics.unwrap_or_default() {
        let key = format!("topics.{name}");
        TopicName::new(&name).map_err(|e| invalid(&key, e.to_string()))?;
        let topic = topic.unwrap_or_default();
        let defaults = TopicDefaults {
            qos: match topic.qos {
                Some(v) => qos(&format!("{key}.qos"), v)?,
                None => QoS::AtMostOnce,
            },
            retain: topic.retain.is_some_and(|f| f.0),
        };
        config.topics.insert(name, defaults);
    }
    if let Some(will) = raw.will {
        config.will = Some(LastWill {
            topic: TopicName::new(&will.topic)
                .map_err(|e| invalid("will.topic", format!("invalid topic name: {e}")))?,
            payload: Bytes::from(will.message.into_bytes()),
            qos: match will.qos {
                Some(v) => qos("will.qos", v)?,
                None => QoS::AtMostOnce,
            },
            retain: will.retain.is_some_and(|f| f.0),
            properties: None,
        });
    }
    let (section, connection) = match (raw.connection, raw.broker) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "broker",
                "give 'connection' or its older name 'broker', not both".into(),
            ))
        }
        (Some(c), None) => ("connection", Some(c)),
        (None, Some(c)) => ("broker", Some(c)),
        (None, None) => ("connection", None),
    };
    if let Some(c) = connection {
        // As aMQTT: a certificate without its key (or the reverse) is a mistake, said at load.
        match (&c.certfile, &c.keyfile) {
            (Some(_), None) => {
                return Err(invalid(
                    &format!("{section}.certfile"),
                    "a client certificate needs its private key: give keyfile too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &format!("{section}.keyfile"),
                    "a client key needs its certificate: give certfile too".into(),
                ))
            }
            _ => {}
        }
        config.connection = ConnectionConfig {
            uri: c.uri,
            cafile: c.cafile,
            capath: c.capath,
            cadata: c.cadata,
            certfile: c.certfile,
            keyfile: c.keyfile,
        };
    }
    if let Some(v) = raw.check_hostname {
        config.check_hostname = v.0;
    }
    if let Some(v) = raw.verify_cert {
        config.verify_cert = v.0;
    }
    if let Some(plugins) = raw.plugins {
        check_plugins(&plugins).map_err(|reason| invalid("plugins", reason))?;
    }
    Ok(config)
}

/// Only aMQTT's logging plugins are accepted (and ignored: we log through `log`).
fn check_plugins(plugins: &serde_yaml::Value) -> Result<(), String> {
    let names: Vec<String> = match plugins {
        serde_yaml::Value::Null => Vec::new(),
        serde_yaml::Value::Mapping(map) => map
            .keys()
            .map(|k| k.as_str().unwrap_or("?").to_string())
            .collect(),
        serde_yaml::Value::Sequence(seq) => seq
            .iter()
            .map(|v| match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Mapping(m) => m
                    .keys()
                    .next()
                    .and_then(|k| k.as_str())
                    .unwrap_or("?")
                    .to_string(),
                _ => "?".to_string(),
            })
            .collect(),
        _ => return Err("expected a mapping or list of plugins".into()),
    };
    match names.iter().find(|n| !n.contains("logging_amqtt")) {
        Some(name) => Err(format!(
            "plugin '{name}' is not supported (only aMQTT's logging plugins are accepted)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
