//! The raw YAML schema of the broker configuration and its parsing: what the file may contain
//! (before defaults and range checks), typed scalars (sizes, seconds, bind addresses), the aMQTT
//! features refused at load time, and YAML text → [`RawConfig`] with key paths in errors. The only
//! file that knows serde_yaml; it applies no defaults and checks no ranges (that is `build.rs`).

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::Deserialize;

use super::keys::{respell, Spelled};
use super::persistence::RawPersistence;
use super::scalars::{Bool, Seconds};
use plugins::RawPlugins;

pub(super) mod plugins;
use super::*;

// ---------------------------------------------------------------------------------------------
// Not yet supported aMQTT features: refused at load time.
// Each check below is one feature; delete its lines when the feature is implemented.
// ---------------------------------------------------------------------------------------------

pub(super) fn refuse_unsupported(file: &str, raw: &RawConfig) -> Result<(), ConfigError> {
    let refuse = |key: String, reason: String| ConfigError::Unsupported {
        file: file.to_string(),
        key,
        reason,
    };

    // Listener features (WebSocket, TLS) are all supported now: nothing to refuse there.

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
        if topic_check.enabled == Some(Bool(true)) {
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

    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw schema: what the YAML may contain, before defaults and range checks.
// ---------------------------------------------------------------------------------------------

// Field names are the `_` form of the keys: `keys.rs` respells `max-connections`,
// `timeout-disconnect-delay`, `topic-check`, ... before serde sees them.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) listeners: Option<RawListeners>,
    pub(super) timeout_disconnect_delay: Option<Seconds>,
    pub(super) sys_interval: Option<Seconds>,
    /// aMQTT 0.11's key: seconds a persistent session outlives its client; absent or null = never.
    pub(super) session_expiry_interval: Option<Seconds>,
    pub(super) auth: Option<RawAuth>,
    pub(super) topic_check: Option<RawTopicCheck>,
    /// aMQTT's plugin section: 0.10's list of entry-point names, 0.11's mapping of class names to
    /// their settings (`plugins.rs`).
    pub(super) plugins: Option<RawPlugins>,
    pub(super) shards: Option<ShardCount>,
    pub(super) pin_shards: Option<Bool>,
    pub(super) spin_before_park: Option<Seconds>,
    pub(super) runtime: Option<String>,
    pub(super) log_file: Option<String>,
    pub(super) log_format: Option<String>,
    /// `log_level`: `RUST_LOG`'s syntax (`info`, `warn,amqtt::packets=debug`).
    pub(super) log_level: Option<String>,
    pub(super) connection_messages: Option<Bool>,
    pub(super) log_packets: Option<Bool>,
    pub(super) hide_denial_reason: Option<Bool>,
    pub(super) max_inflight: Option<Int>,
    pub(super) max_queued_messages: Option<Int>,
    pub(super) max_packet_size: Option<Size>,
    pub(super) max_queued_bytes: Option<Size>,
    pub(super) memory_limit: Option<Size>,
    pub(super) connect_timeout: Option<Seconds>,
    /// `max-qos` is the key aMQTT itself reads.
    pub(super) max_qos: Option<Int>,
    /// MQTT 5 clients' unacknowledged QoS 1/2 PUBLISHes (the CONNACK's Receive Maximum).
    pub(super) receive_maximum: Option<Int>,
    /// Mosquitto's `max_keepalive`.
    pub(super) max_keepalive: Option<Int>,
    /// Which member of a share group gets a message (`round_robin`, ...).
    pub(super) shared_subscription_strategy: Option<String>,
    /// Prometheus endpoint; absent or null = off.
    pub(super) metrics: Option<RawMetrics>,
    /// The admin HTTP API; absent = off.
    pub(super) admin: Option<RawAdmin>,
    /// Journal and snapshots (`persistence.rs`); absent = off.
    pub(super) persistence: Option<RawPersistence>,
    /// Bridges to other brokers (`bridges.rs`); absent = none.
    pub(super) bridges: Option<super::bridges::RawBridges>,
    /// This broker as a node of a cluster on NATS (`cluster.rs`); absent = a single node.
    pub(super) cluster: Option<super::cluster::RawCluster>,
    /// What a reload does besides applying the file (`config/reload.rs`).
    pub(super) reload: Option<RawReload>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReload {
    pub(super) disconnect_removed: Option<Bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub(super) bind: Option<BindSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) bind: Option<BindSpec>,
    pub(super) token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub(super) allow_anonymous: Option<Bool>,
    pub(super) password_file: Option<String>,
    pub(super) plugins: Option<Vec<String>>,
    /// `auth.jwt`, `auth.cert`: the settings of `auth_jwt` and `auth_cert` (`contrib.rs`).
    pub(super) jwt: Option<super::contrib::JwtUserSettings>,
    pub(super) cert: Option<super::contrib::CertSettings>,
}

/// An ACL table: user (or `anonymous`) → topics. A null list (`alice: ~`) is an empty one: that
/// user may do nothing.
pub(super) type AclTable = BTreeMap<String, Option<Vec<String>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTopicCheck {
    pub(super) enabled: Option<Bool>,
    pub(super) plugins: Option<Vec<String>>,
    pub(super) acl: Option<AclTable>,
    pub(super) publish_acl: Option<AclTable>,
    /// `subscribe-acl` (aMQTT 0.11+): governs subscribing in place of `acl`.
    pub(super) subscribe_acl: Option<BTreeMap<String, Vec<String>>>,
    /// `receive-acl` (aMQTT 0.11+): what a user may receive, checked at delivery.
    pub(super) receive_acl: Option<BTreeMap<String, Vec<String>>>,
    /// `topic-check.jwt`: the settings of `topic_jwt` (`contrib.rs`).
    pub(super) jwt: Option<super::contrib::JwtTopicSettings>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListener {
    pub(super) bind: Option<BindSpec>,
    #[serde(rename = "type")]
    pub(super) kind: Option<RawKind>,
    /// aMQTT documents `max-connections` and its code reads `max_connections`: one key.
    pub(super) max_connections: Option<Int>,
    /// Our key: connections accepted per second; absent, 0 or -1 = unlimited.
    pub(super) max_connect_rate: Option<Int>,
    pub(super) ssl: Option<Bool>,
    // TLS material: used with `ssl: on`, accepted and ignored with `ssl: off`.
    pub(super) cafile: Option<String>,
    pub(super) capath: Option<String>,
    pub(super) cadata: Option<String>,
    pub(super) certfile: Option<String>,
    pub(super) keyfile: Option<String>,
    /// Our key: client certificates are mandatory.
    pub(super) require_certificate: Option<Bool>,
    /// Our key (Mosquitto's name): the client certificate's CN is the user name.
    pub(super) use_identity_as_username: Option<Bool>,
    /// Our key: connections start with a PROXY protocol header (v1 or v2).
    pub(super) proxy_protocol: Option<Bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawKind {
    Tcp,
    Ws,
}

/// `listeners:` in file order.
#[derive(Debug, Default)]
pub(super) struct RawListeners(pub(super) Vec<(String, RawListener)>);

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
pub(super) struct Size(pub(super) u64);

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
pub(super) struct Int(pub(super) i64);

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

/// `bind:` as written: a string, or a bare port number.
#[derive(Debug, Clone)]
pub(super) struct BindSpec(pub(super) String);

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

/// The raw configuration in `text`, and how the file spells its keys (for later errors).
pub(super) fn parse(text: &str, origin: &str) -> Result<(RawConfig, Spelled), ConfigError> {
    // `-` and `_` alike in keys; duplicates refused at their own line.
    let spelled = respell(text, origin)?;
    // First pass: plain YAML, to report syntax errors as such and see the document's shape.
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&spelled.text).map_err(|e| ConfigError::Syntax {
            file: origin.to_string(),
            reason: format!("invalid YAML: {e}"),
        })?;
    let has_merge_keys = match &doc {
        serde_yaml::Value::Null => return Ok((RawConfig::default(), spelled)),
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
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&spelled.text))
    };
    match result {
        Ok(raw) => Ok((raw, spelled)),
        Err(e) => Err(spelled.respell_error(serde_error(origin, &e))),
    }
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
    let (key, reason) = key_and_reason(err);
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

/// A YAML deserialization error as the key it concerns and a reason that does not repeat that key:
/// serde's own words, with "field" said as "key", integer types said as the range they accept
/// ("an integer 0–65535", not "u16"), and the position as "(line L, column C)". The broker's and the
/// client's configuration both report through it.
pub(crate) fn key_and_reason(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> (String, String) {
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
    for (rust, range) in INTEGER_RANGES {
        if let Some(stripped) = reason.strip_suffix(&format!("expected {rust}")) {
            // serde calls a negative number for an unsigned type a wrong type; to a reader it is
            // a value out of range.
            let stripped = stripped.replacen("invalid type: integer", "invalid value: integer", 1);
            reason = format!("{stripped}expected {range}");
            break;
        }
    }
    if let Some(loc) = location {
        reason = format!("{reason} (line {}, column {})", loc.line(), loc.column());
    }
    (key, reason)
}

/// serde's names of integer types, as a user reads them.
const INTEGER_RANGES: [(&str, &str); 8] = [
    ("u8", "an integer 0–255"),
    ("u16", "an integer 0–65535"),
    ("u32", "an integer 0–4294967295"),
    ("u64", "an integer 0 or more"),
    ("usize", "an integer 0 or more"),
    ("i32", "an integer"),
    ("i64", "an integer"),
    ("isize", "an integer"),
];
