//! The HTTP endpoints the control shard serves, `metrics:` and `admin:`: their `bind` (default
//! address, no MQTT listener's port) and the admin API's `token_file` (required; the file itself
//! is read when the broker starts, not here); and how a `bind` is parsed, listeners' too
//! ([`parse_bind`]). What must not live here: opening sockets or files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

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

/// Parses a listener `bind` value the way aMQTT does, plus IPv6 and host names:
/// `host:port`, `[ipv6]:port`, `:port` / `port` / empty (all IPv4 interfaces), `host` alone
/// (default port). Host names are resolved now; an IPv4 result is preferred.
pub(super) fn parse_bind(text: &str, default_port: u16) -> Result<SocketAddr, String> {
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
