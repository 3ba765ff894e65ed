//! The HTTP endpoints the control shard serves, `metrics:` and `admin:`: their `bind` (default
//! address, no MQTT listener's port) and the admin API's `token_file` (required; the file itself
//! is read when the broker starts, not here). What must not live here: opening sockets or files.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::build::parse_bind;
use super::raw::{BindSpec, RawAdmin};
use super::{AdminConfig, ConfigError, ListenerConfig, DEFAULT_ADMIN_PORT};

/// The `bind` of an HTTP endpoint (`metrics:`, `admin:`): an address (default
/// `127.0.0.1:default_port`) that no MQTT listener uses.
pub(super) fn endpoint_bind(
    raw: Option<&BindSpec>,
    default_port: u16,
    section: &str,
    listeners: &[ListenerConfig],
    origin: &str,
) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: format!("{section}.bind"),
        reason,
    };
    let bind = match raw {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), default_port),
        Some(spec) => parse_bind(&spec.0, default_port).map_err(invalid)?,
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
                "{bind} overlaps listener '{}' ({}): the {section} endpoint needs a port of its own",
                listener.name, listener.bind
            )));
        }
    }
    Ok(bind)
}

/// `admin:`: its address and its token file (required; read when the broker starts).
pub(super) fn admin_config(
    raw: Option<&RawAdmin>,
    listeners: &[ListenerConfig],
    origin: &str,
) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bind = endpoint_bind(
        raw.bind.as_ref(),
        DEFAULT_ADMIN_PORT,
        "admin",
        listeners,
        origin,
    )?;
    let token_file = match raw.token_file.as_deref().map(str::trim) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            return Err(ConfigError::Invalid {
                file: origin.to_string(),
                key: "admin.token_file".to_string(),
                reason: "required: the admin API serves nobody without a token".to_string(),
            })
        }
    };
    Ok(Some(AdminConfig { bind, token_file }))
}
