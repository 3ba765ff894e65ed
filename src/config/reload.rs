//! What a configuration reload compares: [`ConfigDiff::between`] the running configuration and
//! the file read again, sorting every setting that differs into what a running broker applies
//! (plugins and ACLs, queue and memory limits, `max_qos`, `log_level`, listeners) and what only a
//! restart changes (`shards`, `persistence`, ...), each with a line for the log. Also the
//! `reload:` key ([`ReloadConfig`]) and the check of `log_level`.
//!
//! Plain data: nothing here reads a file other than what it is given, applies anything or
//! knows the broker (`server/reload.rs` applies a diff).

use std::fmt::Debug;

use super::{BrokerConfig, ListenerConfig};

/// `reload:`: what a reload does besides applying the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadConfig {
    /// `reload.disconnect_removed`: close the connections of users that a reloaded password file
    /// no longer lists (default false: they stay connected until they reconnect).
    pub disconnect_removed: bool,
}

/// Checks a `log_level` value: `RUST_LOG`'s syntax, a level (`info`) and/or `target=level`
/// entries separated by commas. Returns it trimmed.
pub(super) fn log_level(spec: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a level (error, warn, info, debug, trace, off) and/or \
                            target=level entries separated by commas, e.g. `warn,amqtt::packets=debug`";
    if spec.is_empty() {
        return Err(format!("empty: {EXPECTED}"));
    }
    // env_filter would take a bare word for a target name: `loud` would log everything of a
    // module named `loud` and nothing else. Each entry must name a level.
    for entry in spec.split(',').map(str::trim) {
        let level = entry.rsplit_once('=').map_or(entry, |(_, level)| level);
        if level.parse::<log::LevelFilter>().is_err() {
            return Err(format!("{entry:?} names no level: {EXPECTED}"));
        }
    }
    env_filter::Builder::new()
        .try_parse(spec)
        .map(|_| spec.to_string())
        .map_err(|e| format!("{e}: {EXPECTED}"))
}

/// How one listener differs between the running configuration and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerChange {
    /// In the new file only: opened.
    Added(ListenerConfig),
    /// In the running configuration only: closed (its connections stay).
    Removed(String),
    /// Its `bind` or `type` changed: closed and opened again (its connections stay).
    Reopened(ListenerConfig),
    /// Same address and type, other settings changed (`max-connections`, `max_connect_rate`,
    /// `ssl` and its files, `proxy-protocol`): applied to new connections.
    Changed(ListenerConfig),
}

/// What differs between the running configuration and a new one (see the module docs).
#[derive(Debug, Default)]
pub struct ConfigDiff {
    /// One line per changed setting a running broker applies.
    pub applied: Vec<String>,
    /// One line per changed setting that only a restart applies; a reload leaves it as it was.
    pub kept: Vec<String>,
    /// The listeners opened, closed or changed.
    pub listeners: Vec<ListenerChange>,
    /// The authentication or topic plugins' settings changed (the plugins are built again).
    pub plugins: bool,
    /// `max_queued_messages`, `max_queued_bytes`, `memory_limit` or `max_qos` changed.
    pub limits: bool,
    /// `log_level` changed.
    pub log_level: bool,
}

impl ConfigDiff {
    /// Compares every setting of `old` (running) and `new` (just read and validated).
    pub fn between(old: &BrokerConfig, new: &BrokerConfig) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        // Every field named, so that a new setting cannot be forgotten here.
        let BrokerConfig {
            listeners,
            timeout_disconnect_delay,
            sys_interval,
            session_expiry_interval,
            allow_anonymous,
            password_file,
            auth_plugins,
            topic_check,
            shards,
            pin_shards,
            spin_before_park,
            runtime,
            log_file,
            log_format,
            log_level,
            connection_messages,
            log_packets,
            hide_denial_reason,
            packet_logger,
            http_user,
            http_topic,
            max_inflight,
            max_queued_messages,
            max_packet_size,
            max_queued_bytes,
            memory_limit,
            connect_timeout,
            max_qos,
            receive_maximum,
            max_keepalive,
            metrics,
            admin,
            persistence,
            contrib,
            bridges,
            cluster,
            shared_subscription_strategy,
            reload,
            source: _,
        } = new;
        // Plugins: their settings may hold secrets, so lines name the key only.
        let plugin_keys = [
            (
                "auth.allow-anonymous",
                allow_anonymous != &old.allow_anonymous,
            ),
            ("auth.password-file", password_file != &old.password_file),
            ("auth.plugins", auth_plugins != &old.auth_plugins),
            ("topic-check", topic_check != &old.topic_check),
            ("plugins (auth_http)", http_user != &old.http_user),
            ("plugins (topic_http)", http_topic != &old.http_topic),
            (
                "auth.jwt, topic-check.jwt, auth.cert",
                contrib != &old.contrib,
            ),
        ];
        for (key, changed) in plugin_keys {
            if changed {
                diff.plugins = true;
                diff.applied.push(format!("{key}: changed"));
            }
        }
        diff.limits |= diff.value(
            "max_queued_messages",
            &old.max_queued_messages,
            max_queued_messages,
            true,
        );
        diff.limits |= diff.value(
            "max_queued_bytes",
            &old.max_queued_bytes,
            max_queued_bytes,
            true,
        );
        // The budget counts bytes only while it has a limit: turning it on or off needs a start.
        let counting = old.memory_limit.is_some() == memory_limit.is_some();
        diff.limits |= diff.value("memory_limit", &old.memory_limit, memory_limit, counting);
        diff.limits |= diff.value("max_qos", &old.max_qos, max_qos, true);
        diff.log_level = diff.value("log_level", &old.log_level, log_level, true);
        diff.value(
            "reload.disconnect_removed",
            &old.reload.disconnect_removed,
            &reload.disconnect_removed,
            true,
        );
        // Bridges hold credentials (the url, local_password): the line names the key only.
        if bridges != &old.bridges {
            diff.kept
                .push("bridges: changed in the file, kept (changes only at a restart)".into());
        }
        // The cluster block holds NATS credentials: the line names the key only.
        if cluster != &old.cluster {
            diff.kept
                .push("cluster: changed in the file, kept (changes only at a restart)".into());
        }
        diff.value(
            "shared_subscription_strategy",
            &old.shared_subscription_strategy,
            shared_subscription_strategy,
            false,
        );
        diff.value("shards", &old.shards, shards, false);
        diff.value("pin_shards", &old.pin_shards, pin_shards, false);
        diff.value(
            "spin_before_park",
            &old.spin_before_park,
            spin_before_park,
            false,
        );
        diff.value("runtime", &old.runtime, runtime, false);
        diff.value("log_file", &old.log_file, log_file, false);
        diff.value("log_format", &old.log_format, log_format, false);
        diff.value(
            "connection_messages",
            &old.connection_messages,
            connection_messages,
            false,
        );
        diff.value("log_packets", &old.log_packets, log_packets, false);
        diff.value(
            "hide_denial_reason",
            &old.hide_denial_reason,
            hide_denial_reason,
            false,
        );
        diff.value(
            "plugins (PacketLoggerPlugin)",
            &old.packet_logger,
            packet_logger,
            false,
        );
        diff.value(
            "timeout-disconnect-delay",
            &old.timeout_disconnect_delay,
            timeout_disconnect_delay,
            false,
        );
        diff.value("sys_interval", &old.sys_interval, sys_interval, false);
        diff.value(
            "session_expiry_interval",
            &old.session_expiry_interval,
            session_expiry_interval,
            false,
        );
        diff.value("max_inflight", &old.max_inflight, max_inflight, false);
        diff.value(
            "receive_maximum",
            &old.receive_maximum,
            receive_maximum,
            false,
        );
        diff.value("max_keepalive", &old.max_keepalive, max_keepalive, false);
        diff.value(
            "max_packet_size",
            &old.max_packet_size,
            max_packet_size,
            false,
        );
        diff.value(
            "connect_timeout",
            &old.connect_timeout,
            connect_timeout,
            false,
        );
        diff.value("metrics", &old.metrics, metrics, false);
        diff.value("admin", &old.admin, admin, false);
        diff.value("persistence", &old.persistence, persistence, false);
        diff.compare_listeners(&old.listeners, listeners);
        diff
    }

    /// Notes one setting; whether it changed and is applied.
    fn value<T: PartialEq + Debug>(&mut self, key: &str, old: &T, new: &T, live: bool) -> bool {
        if old == new {
            return false;
        }
        if live {
            self.applied.push(format!("{key}: {old:?} -> {new:?}"));
        } else {
            self.kept.push(format!(
                "{key}: {new:?} in the file, {old:?} kept (changes only at a restart)"
            ));
        }
        live
    }

    fn compare_listeners(&mut self, old: &[ListenerConfig], new: &[ListenerConfig]) {
        for listener in old {
            if !new.iter().any(|l| l.name == listener.name) {
                self.applied
                    .push(format!("listeners.{}: removed (closed)", listener.name));
                self.listeners
                    .push(ListenerChange::Removed(listener.name.clone()));
            }
        }
        for listener in new {
            let name = &listener.name;
            let change = match old.iter().find(|l| &l.name == name) {
                None => {
                    self.applied
                        .push(format!("listeners.{name}: added on {}", listener.bind));
                    ListenerChange::Added(listener.clone())
                }
                Some(before) if before == listener => continue,
                Some(before) if before.bind != listener.bind || before.kind != listener.kind => {
                    self.applied.push(format!(
                        "listeners.{name}: moved from {} ({:?}) to {} ({:?}) (closed and opened again)",
                        before.bind, before.kind, listener.bind, listener.kind
                    ));
                    ListenerChange::Reopened(listener.clone())
                }
                Some(before) => {
                    let mut what = Vec::new();
                    if before.max_connections != listener.max_connections {
                        what.push(format!(
                            "max-connections {:?} -> {:?}",
                            before.max_connections, listener.max_connections
                        ));
                    }
                    if before.max_connect_rate != listener.max_connect_rate {
                        what.push(format!(
                            "max_connect_rate {:?} -> {:?}",
                            before.max_connect_rate, listener.max_connect_rate
                        ));
                    }
                    if before.tls != listener.tls {
                        what.push("ssl settings changed".to_string());
                    }
                    if before.proxy_protocol != listener.proxy_protocol {
                        what.push(format!("proxy-protocol -> {}", listener.proxy_protocol));
                    }
                    self.applied
                        .push(format!("listeners.{name}: {}", what.join(", ")));
                    ListenerChange::Changed(listener.clone())
                }
            };
            self.listeners.push(change);
        }
    }

    /// `new` with the settings only a restart changes taken from `running`: what the broker runs
    /// after the reload, the next reload's starting point (which warns again about them).
    pub fn running_after(running: &BrokerConfig, new: &BrokerConfig) -> BrokerConfig {
        let mut after = new.clone();
        after.shards = running.shards;
        after.pin_shards = running.pin_shards;
        after.spin_before_park = running.spin_before_park;
        after.runtime = running.runtime;
        after.log_file.clone_from(&running.log_file);
        after.log_format = running.log_format;
        after.connection_messages = running.connection_messages;
        after.log_packets = running.log_packets;
        after.packet_logger = running.packet_logger;
        after.timeout_disconnect_delay = running.timeout_disconnect_delay;
        after.sys_interval = running.sys_interval;
        after.session_expiry_interval = running.session_expiry_interval;
        after.max_inflight = running.max_inflight;
        after.receive_maximum = running.receive_maximum;
        after.max_keepalive = running.max_keepalive;
        after.max_packet_size = running.max_packet_size;
        after.connect_timeout = running.connect_timeout;
        after.metrics.clone_from(&running.metrics);
        after.admin.clone_from(&running.admin);
        after.persistence.clone_from(&running.persistence);
        after.bridges.clone_from(&running.bridges);
        after.cluster.clone_from(&running.cluster);
        if running.memory_limit.is_some() != new.memory_limit.is_some() {
            after.memory_limit = running.memory_limit;
        }
        after
    }

    /// Whether the new file changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.kept.is_empty()
    }
}
