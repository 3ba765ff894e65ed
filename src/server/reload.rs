//! Configuration reload (issue #24): [`Reloader::reload`] reads the configuration file again,
//! validates it as a start would (the same `BrokerConfig::from_file`, the plugins built, the TLS
//! material of every TLS listener read, new listeners bound), and only when all of it worked
//! applies it: listeners' setups replaced (new handshakes use the new certificates, established
//! connections keep theirs), each shard given its part over the bus (`reload_shard.rs`: plugins,
//! limits, sockets), the memory budget's limit and the log level set. A file that does not
//! validate changes nothing. Every change is logged (one line each), every setting only a restart
//! changes gets a warning, and the [`ReloadReport`] says the same to the caller (SIGHUP in the
//! binary, `POST /api/v1/reload`, [`crate::BrokerHandle::reload`]).
//!
//! Runs on the thread that asks (never a shard's); one reload at a time (the caller holds the
//! `Mutex` around the [`Reloader`]). What must not live here: the comparison of two
//! configurations (`config/reload.rs`) and anything a shard does (`reload_shard.rs`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::broker::{CoreReload, MemoryBudget};
use crate::config::{BrokerConfig, ConfigDiff, ConfigError, ListenerChange, ListenerConfig};
use crate::logging::Logs;
use crate::plugins::password_file::{PasswordFile, PasswordFileError};
use crate::plugins::{Plugin, PluginError};
use crate::protocol::QoS;
use crate::transport::tls::TlsSetupError;

use super::host_client::{HostClient, HostError};
use super::settings::ShardReload;
use super::settings::{ListenerInfo, ListenerSetup};

/// The listeners' bound addresses by name, as the handle and the admin API report them (a reload
/// opens and closes listeners).
pub(crate) type Addresses = Arc<Mutex<Vec<(String, SocketAddr)>>>;

/// Changes the configuration the binary's command line makes (`-d`): applied to every reloaded
/// configuration as it was to the first.
pub type ConfigOverrides = Box<dyn Fn(&mut BrokerConfig) + Send>;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// One line per change applied (`max_queued_messages: 1000 -> 10`, `auth.password-file: user
    /// 'bob' removed`, `listeners.tls: certificates read again`).
    pub applied: Vec<String>,
    /// One line per changed setting left as it was (it changes only at a restart).
    pub kept: Vec<String>,
    /// The client ids disconnected because their user left the password file
    /// (`reload.disconnect_removed: true`).
    pub disconnected: Vec<String>,
}

/// Why a reload changed nothing (or, for [`ReloadError::Shards`], not everything).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The broker was started without a configuration file: there is nothing to read again.
    #[error("no configuration file to reload (the broker was started without -c FILE)")]
    NoFile,
    /// The file does not validate (it names the file, the key and the reason).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A plugin cannot be built from it: unknown name, password file, ACL entry.
    #[error("{0}")]
    Plugins(#[from] PluginError),
    /// The password file cannot be read.
    #[error("{0}")]
    PasswordFile(#[from] PasswordFileError),
    /// A TLS listener's certificate or key cannot be loaded.
    #[error("{file}: key 'listeners.{name}': {source}")]
    Tls {
        /// The configuration file.
        file: String,
        /// The listener's name.
        name: String,
        /// What is wrong with its TLS material.
        source: TlsSetupError,
    },
    /// A new listener's address cannot be bound.
    #[error("{file}: key 'listeners.{name}.bind': cannot bind {addr}: {source}")]
    Bind {
        /// The configuration file.
        file: String,
        /// The listener's name.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// A shard did not take its part: the listeners' setups, the memory limit and the shards that
    /// answered have the new settings, the others may not.
    #[error("reload incomplete: {0}")]
    Shards(#[from] HostError),
}

impl ReloadError {
    /// Whether the file (or the machine, for a bind) refused it and nothing changed.
    pub fn changed_nothing(&self) -> bool {
        !matches!(self, ReloadError::Shards(_))
    }
}

/// What a reload needs to know of the running broker.
pub(crate) struct Reloader {
    /// The configuration running now (after the overrides).
    pub config: BrokerConfig,
    pub added: Vec<Plugin>,
    pub overrides: Option<ConfigOverrides>,
    /// The binary's logger, for `log_level`; `None` for an embedding program.
    pub logs: Option<Logs>,
    pub host: HostClient,
    /// The running listeners, in configuration order.
    pub listeners: Vec<Arc<ListenerInfo>>,
    pub addresses: Addresses,
    pub memory: Arc<MemoryBudget>,
    /// The password file running now, to name the users added and removed.
    pub users: Option<PasswordFile>,
}

/// A listener a reload opens: its info and one socket per shard.
struct Opening {
    info: Arc<ListenerInfo>,
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Reloader {
    /// The running password file, read at start (`None` without `auth.password-file`).
    pub fn password_file(config: &BrokerConfig) -> Result<Option<PasswordFile>, PasswordFileError> {
        config
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()
    }

    /// Reads the configuration file again and applies it (see the module docs).
    pub fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let result = match self.config.source.clone() {
            None => Err(ReloadError::NoFile),
            Some(path) => BrokerConfig::from_file(&path)
                .map_err(ReloadError::from)
                .and_then(|new| self.apply_checked(new)),
        };
        Self::logged(result)
    }

    /// Applies `new` (validated by whoever built it), all or nothing up to the shards' parts.
    pub fn apply(&mut self, new: BrokerConfig) -> Result<ReloadReport, ReloadError> {
        let result = self.apply_checked(new);
        Self::logged(result)
    }

    /// A refused reload's error line.
    fn logged(result: Result<ReloadReport, ReloadError>) -> Result<ReloadReport, ReloadError> {
        if let Err(error) = &result {
            if error.changed_nothing() {
                log::error!("configuration reload refused, nothing changed: {error}");
            } else {
                log::error!("{error}");
            }
        }
        result
    }

    fn apply_checked(&mut self, mut new: BrokerConfig) -> Result<ReloadReport, ReloadError> {
        if let Some(overrides) = &self.overrides {
            overrides(&mut new);
        }
        let file = new
            .source
            .as_ref()
            .map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
        let diff = ConfigDiff::between(&self.config, &new);
        let mut applied = diff.applied.clone();

        // Everything is built before anything changes.
        let users = Self::password_file(&new)?;
        let plugins = if diff.plugins || users != self.users {
            Some(crate::plugins::build(&new, &self.added)?)
        } else {
            None
        };
        let removed = removed_users(self.users.as_ref(), users.as_ref(), &mut applied);
        let (setups, openings, closing) = self.listener_changes(&new, &diff, &file)?;
        for listener in new.listeners.iter().filter(|l| l.tls.is_some()) {
            if self.listeners.iter().any(|info| info.name == listener.name) {
                applied.push(format!(
                    "listeners.{}: certificate and key read again (new TLS handshakes use them)",
                    listener.name
                ));
            }
        }

        // Now applied: listeners' setups, then every shard's part, then the process-wide rest.
        for (info, setup) in setups {
            info.replace(setup);
        }
        let memory_limit = new.memory_limit.filter(|_| diff.limits);
        let core = CoreReload {
            plugins: plugins.as_ref().map(|p| p.core.clone()),
            allow_anonymous: new.allow_anonymous,
            max_qos: QoS::from_u8(new.max_qos).unwrap_or(QoS::ExactlyOnce),
            max_queued_messages: new.max_queued_messages,
            max_queued_bytes: new.max_queued_bytes,
            disconnect_users: if new.reload.disconnect_removed {
                removed
            } else {
                HashSet::new()
            },
        };
        let authenticator = plugins.as_ref().map(|p| Arc::new(p.authenticator.clone()));
        // Socket i of every opened listener goes to shard i, as at start.
        let mut open: Vec<Vec<_>> = (0..self.host.shards).map(|_| Vec::new()).collect();
        let mut opened = Vec::new();
        for opening in openings {
            for (shard, socket) in opening.sockets.into_iter().enumerate() {
                if let Some(sockets) = open.get_mut(shard) {
                    sockets.push((socket, opening.info.clone()));
                }
            }
            opened.push((opening.info, opening.addr));
        }
        let parts = open
            .into_iter()
            .map(|open| ShardReload {
                core: core.clone(),
                authenticator: authenticator.clone(),
                prefetch: plugins.as_ref().map(|p| p.prefetch.clone()),
                close: closing.clone(),
                open,
                done: None,
            })
            .collect();
        if let Some(limit) = memory_limit {
            self.memory.set_limit(limit);
        }
        if diff.log_level {
            if let Some(logs) = &self.logs {
                if let Err(reason) = logs.set_level(new.log_level.as_deref()) {
                    applied.retain(|line| !line.starts_with("log_level:"));
                    log::warn!("log_level not applied: {reason}");
                }
            }
        }
        self.update_listeners(&closing, opened, &new);
        self.config = ConfigDiff::running_after(&self.config, &new);
        self.users = users;
        let disconnected = self.host.reload(parts)?;

        log::info!(
            "configuration reloaded from {file}: {}",
            if applied.is_empty() {
                "nothing to change".to_string()
            } else {
                format!("{} change(s)", applied.len())
            }
        );
        for line in &applied {
            log::info!("reload: {line}");
        }
        for line in &diff.kept {
            log::warn!("reload: {line}");
        }
        Ok(ReloadReport {
            applied,
            kept: diff.kept,
            disconnected,
        })
    }

    /// The new setups of listeners that stay (certificates read again for every TLS one), the
    /// listeners to open (bound now, one socket per shard), and the names of those to close.
    #[allow(clippy::type_complexity)]
    fn listener_changes(
        &self,
        new: &BrokerConfig,
        diff: &ConfigDiff,
        file: &str,
    ) -> Result<
        (
            Vec<(Arc<ListenerInfo>, ListenerSetup)>,
            Vec<Opening>,
            Vec<String>,
        ),
        ReloadError,
    > {
        let tls_error = |name: &str, source| ReloadError::Tls {
            file: file.to_string(),
            name: name.to_string(),
            source,
        };
        let mut setups = Vec::new();
        let mut openings = Vec::new();
        let mut closing = Vec::new();
        for listener in &new.listeners {
            let change = diff.listeners.iter().find(|c| match c {
                ListenerChange::Added(l) | ListenerChange::Reopened(l) => l.name == listener.name,
                _ => false,
            });
            let running = self.listeners.iter().find(|i| i.name == listener.name);
            match (change, running) {
                (Some(_), running) => {
                    let setup = ListenerSetup::new(listener, None)
                        .map_err(|e| tls_error(&listener.name, e))?;
                    let info = match running {
                        // Moved: the same count of open connections, new sockets.
                        Some(info) => {
                            closing.push(listener.name.clone());
                            setups.push((info.clone(), setup));
                            info.clone()
                        }
                        None => Arc::new(ListenerInfo::new(listener.name.clone(), setup)),
                    };
                    openings.push(self.bind(listener, info, file)?);
                }
                (None, Some(info)) => {
                    let changed = diff.listeners.iter().any(
                        |c| matches!(c, ListenerChange::Changed(l) if l.name == listener.name),
                    );
                    if changed || listener.tls.is_some() {
                        let setup = ListenerSetup::new(listener, Some(&info.setup()))
                            .map_err(|e| tls_error(&listener.name, e))?;
                        setups.push((info.clone(), setup));
                    }
                }
                (None, None) => {}
            }
        }
        for change in &diff.listeners {
            if let ListenerChange::Removed(name) = change {
                closing.push(name.clone());
            }
        }
        Ok((setups, openings, closing))
    }

    /// Binds `listener`'s address, one SO_REUSEPORT socket per shard.
    fn bind(
        &self,
        listener: &ListenerConfig,
        info: Arc<ListenerInfo>,
        file: &str,
    ) -> Result<Opening, ReloadError> {
        let (sockets, addr) =
            bind_listener(listener, self.host.shards).map_err(|source| ReloadError::Bind {
                file: file.to_string(),
                name: listener.name.clone(),
                addr: listener.bind,
                source,
            })?;
        Ok(Opening {
            info,
            sockets,
            addr,
        })
    }

    /// The running listeners and their addresses after a reload.
    fn update_listeners(
        &mut self,
        closing: &[String],
        opened: Vec<(Arc<ListenerInfo>, SocketAddr)>,
        new: &BrokerConfig,
    ) {
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        addresses.retain(|(name, _)| !closing.contains(name));
        self.listeners.retain(|info| !closing.contains(&info.name));
        for (info, addr) in opened {
            log::info!(
                "Listener '{}' bind to {addr} (opened by a reload)",
                info.name
            );
            addresses.push((info.name.clone(), addr));
            if !self
                .listeners
                .iter()
                .any(|running| Arc::ptr_eq(running, &info))
            {
                self.listeners.push(info);
            }
        }
        // Configuration order, as at start.
        let position = |name: &str| new.listeners.iter().position(|l| l.name == name);
        addresses.sort_by_key(|(name, _)| position(name));
        self.listeners.sort_by_key(|info| position(&info.name));
    }
}

/// Binds `listener`'s address, one SO_REUSEPORT socket per shard (at start and at a reload);
/// with the address bound (the real port when the configuration said 0).
pub(crate) fn bind_listener(
    listener: &ListenerConfig,
    shards: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let sockets = shards::reuseport_listeners(listener.bind, shards, 4096)?;
    let addr = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(listener.bind);
    Ok((sockets, addr))
}

/// The users `before` lists and `after` does not (each also named in `applied`, with those added).
fn removed_users(
    before: Option<&PasswordFile>,
    after: Option<&PasswordFile>,
    applied: &mut Vec<String>,
) -> HashSet<String> {
    let names = |file: Option<&PasswordFile>| -> HashSet<String> {
        file.map(|f| f.users().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (before, after) = (names(before), names(after));
    let mut added: Vec<&String> = after.difference(&before).collect();
    let mut removed: Vec<&String> = before.difference(&after).collect();
    added.sort();
    removed.sort();
    for user in added {
        applied.push(format!("auth.password-file: user '{user}' added"));
    }
    for user in &removed {
        applied.push(format!("auth.password-file: user '{user}' removed"));
    }
    removed.into_iter().cloned().collect()
}
