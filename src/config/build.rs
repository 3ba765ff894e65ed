//! Building a [`BrokerConfig`] from the raw schema: defaults, listener inheritance from the
//! `default` listener, range checks and bind-address resolution. Knows no YAML syntax (that is
//! `raw.rs`).

use std::collections::BTreeMap;

use super::bridges::bridges_config;
use super::cluster::cluster_config;
use super::endpoints::{admin_config, endpoint_bind, parse_bind};
use super::persistence::persistence_config;
use super::raw::plugins::apply;
use super::raw::*;
use super::scalars::Bool;
use super::*;

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

impl Field<'_, Int> {
    /// A limit: `None` for the values in `unlimited`, the value when it is positive, and otherwise
    /// an error for `listener` saying what the key takes (`expected`).
    fn limit<T: TryFrom<i64>>(
        &self,
        unlimited: &[i64],
        expected: &str,
        listener: &str,
        origin: &str,
    ) -> Result<Option<T>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            file: origin.to_string(),
            key: self.key(),
            reason,
        };
        match self.value.0 {
            n if unlimited.contains(&n) => Ok(None),
            n if n > 0 => T::try_from(n)
                .map(Some)
                .map_err(|_| invalid(format!("{n} is too large"))),
            n => Err(invalid(format!(
                "{expected}; got {n}{}",
                self.inherited_by(listener)
            ))),
        }
    }
}

/// A listener after applying the `default` listener's settings.
pub(super) struct Merged<'a> {
    name: &'a str,
    bind: Option<Field<'a, BindSpec>>,
    kind: Option<Field<'a, RawKind>>,
    max_connections: Option<Field<'a, Int>>,
    max_connect_rate: Option<Field<'a, Int>>,
    ssl: Option<Field<'a, Bool>>,
    cafile: Option<Field<'a, String>>,
    capath: Option<Field<'a, String>>,
    cadata: Option<Field<'a, String>>,
    certfile: Option<Field<'a, String>>,
    keyfile: Option<Field<'a, String>>,
    require_certificate: Option<Field<'a, Bool>>,
    use_identity_as_username: Option<Field<'a, Bool>>,
    proxy_protocol: Option<Field<'a, Bool>>,
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
            // One key of this listener, or of `default` when this one does not set it.
            macro_rules! pick {
                ($field:ident, $key:literal) => {
                    pick(&own.$field, name, inherit.map(|d| &d.$field), $key)
                };
            }
            Merged {
                name,
                bind: pick!(bind, "bind"),
                kind: pick!(kind, "type"),
                max_connections: pick!(max_connections, "max-connections"),
                max_connect_rate: pick!(max_connect_rate, "max_connect_rate"),
                ssl: pick!(ssl, "ssl"),
                cafile: pick!(cafile, "cafile"),
                capath: pick!(capath, "capath"),
                cadata: pick!(cadata, "cadata"),
                certfile: pick!(certfile, "certfile"),
                keyfile: pick!(keyfile, "keyfile"),
                require_certificate: pick!(require_certificate, "require-certificate"),
                use_identity_as_username: pick!(
                    use_identity_as_username,
                    "use-identity-as-username"
                ),
                proxy_protocol: pick!(proxy_protocol, "proxy-protocol"),
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
            .is_some_and(|f| f.value.0),
        use_identity_as_username: listener
            .use_identity_as_username
            .as_ref()
            .is_some_and(|f| f.value.0),
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

pub(super) fn build(mut raw: RawConfig, origin: &str) -> Result<BrokerConfig, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: key.to_string(),
        reason,
    };
    let defaults = BrokerConfig::default();

    let from_plugins = apply(&mut raw, origin)?;
    refuse_unsupported(origin, &raw)?;
    let no_listeners = RawListeners::default();
    let merged = merge_listeners(raw.listeners.as_ref().unwrap_or(&no_listeners));

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
                    // aMQTT's default, and its documented "unlimited", is 0.
                    Some(field) => field.limit(
                        &[-1, 0],
                        "must be a number of connections, or 0 (or -1) for unlimited",
                        listener.name,
                        origin,
                    )?,
                };
                let max_connect_rate = match &listener.max_connect_rate {
                    None => None,
                    Some(field) => field.limit(
                        &[-1, 0],
                        "must be a number of connections per second, or 0 for unlimited",
                        listener.name,
                        origin,
                    )?,
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
                    proxy_protocol: listener.proxy_protocol.as_ref().is_some_and(|f| f.value.0),
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
        value.map_or(Ok(default), |secs| {
            duration(secs, allow_zero).map_err(|reason| invalid(key, reason))
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
    let session_expiry_interval = match raw.session_expiry_interval {
        None => None,
        value => Some(seconds(
            "session_expiry_interval",
            value,
            Duration::ZERO,
            true,
        )?),
    };
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
    let runtime = match raw.runtime.as_deref() {
        None => defaults.runtime,
        Some(name) => name.parse().map_err(|e: String| invalid("runtime", e))?,
    };
    let log_file = match raw.log_file.as_deref() {
        None => None,
        Some("") => {
            return Err(invalid(
                "log_file",
                "must name a file (or be null for standard error)".to_string(),
            ))
        }
        Some(path) => Some(PathBuf::from(path)),
    };
    let shared_subscription_strategy = match raw.shared_subscription_strategy.as_deref() {
        None => defaults.shared_subscription_strategy,
        Some(name) => name
            .parse()
            .map_err(|e: String| invalid("shared_subscription_strategy", e))?,
    };
    let log_format = match raw.log_format.as_deref() {
        None => defaults.log_format,
        Some(name) => name.parse().map_err(|e: String| invalid("log_format", e))?,
    };
    let log_level = match raw.log_level.as_deref().map(str::trim) {
        None => None,
        Some(spec) => Some(super::reload::log_level(spec).map_err(|e| invalid("log_level", e))?),
    };
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
    let receive_maximum = integer(
        "receive_maximum",
        raw.receive_maximum,
        i64::from(DEFAULT_RECEIVE_MAXIMUM),
        1,
        i64::from(u16::MAX),
    )?;
    let max_keepalive = integer(
        "max_keepalive",
        raw.max_keepalive,
        i64::from(NO_MAX_KEEPALIVE),
        0,
        i64::from(u16::MAX),
    )?;
    let metrics = match &raw.metrics {
        None => None,
        Some(raw) => Some(MetricsConfig {
            bind: endpoint_bind(
                raw.bind.as_ref(),
                DEFAULT_METRICS_PORT,
                "metrics",
                &listeners,
                origin,
            )?,
        }),
    };
    let admin = admin_config(raw.admin.as_ref(), &listeners, origin)?;
    let bridges = bridges_config(raw.bridges.as_ref(), &listeners, origin)?;

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
        session_expiry_interval,
        allow_anonymous: raw
            .auth
            .as_ref()
            .and_then(|a| a.allow_anonymous)
            .map_or(defaults.allow_anonymous, |b| b.0),
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
        pin_shards: raw.pin_shards.map_or(defaults.pin_shards, |b| b.0),
        spin_before_park,
        runtime,
        log_file,
        log_format,
        log_level,
        connection_messages: raw
            .connection_messages
            .map_or(defaults.connection_messages, |b| b.0),
        log_packets: raw.log_packets.map_or(defaults.log_packets, |b| b.0),
        hide_denial_reason: raw
            .hide_denial_reason
            .map_or(defaults.hide_denial_reason, |b| b.0),
        packet_logger: from_plugins.packet_logger,
        http_user: from_plugins.http_user,
        http_topic: from_plugins.http_topic,
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
        receive_maximum: u16::try_from(receive_maximum)
            .map_err(|_| range_error("receive_maximum"))?,
        max_keepalive: u16::try_from(max_keepalive).map_err(|_| range_error("max_keepalive"))?,
        shared_subscription_strategy,
        metrics,
        admin,
        persistence: persistence_config(raw.persistence.as_ref(), origin)?,
        bridges,
        cluster: cluster_config(raw.cluster.as_ref(), origin)?,
        contrib: ContribConfig {
            jwt_user: raw.auth.as_ref().and_then(|a| a.jwt.clone()),
            jwt_topic: raw.topic_check.as_ref().and_then(|t| t.jwt.clone()),
            cert: raw.auth.as_ref().and_then(|a| a.cert.clone()),
        },
        reload: ReloadConfig {
            disconnect_removed: raw
                .reload
                .as_ref()
                .and_then(|r| r.disconnect_removed)
                .is_some_and(|b| b.0),
        },
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
        enabled: raw.enabled.is_some_and(|b| b.0),
        plugins: raw.plugins.clone().unwrap_or_default(),
        acl: table(&raw.acl),
        publish_acl: table(&raw.publish_acl),
        subscribe_acl: raw.subscribe_acl.clone(),
        receive_acl: raw.receive_acl.clone(),
    }
}
