//! Broker URLs: `mqtt://host:port`, `mqtts://`, `ws://host:port/path`, `wss://`.
//!
//! All four schemes parse (so a typo is reported as a typo), but this version of amqtt-bench speaks
//! MQTT over TCP and over TLS only: [`BrokerUrl::require_supported`] turns the WebSocket ones into
//! a clear error.
//! A bare `host:port` means `mqtt://host:port`. IPv6 hosts go in brackets: `mqtt://[::1]:1883`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Transport named by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TCP (`mqtt://`, also `tcp://`).
    Mqtt,
    /// MQTT over TLS (`mqtts://`, also `ssl://`, `tls://`).
    Mqtts,
    /// MQTT over WebSocket (`ws://`).
    Ws,
    /// MQTT over WebSocket over TLS (`wss://`).
    Wss,
}

impl Scheme {
    /// Port used when the URL has none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    /// The canonical scheme name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path for WebSocket URLs (`/mqtt` when absent); empty for mqtt/mqtts.
    pub path: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl BrokerUrl {
    /// Parses `scheme://host[:port][/path]` or a bare `host[:port]`.
    pub fn parse(text: &str) -> Result<BrokerUrl, UrlError> {
        let err = |why: &str| UrlError(format!("invalid broker URL {text:?}: {why}"));
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) => {
                let scheme = match s.to_ascii_lowercase().as_str() {
                    "mqtt" | "tcp" => Scheme::Mqtt,
                    "mqtts" | "ssl" | "tls" => Scheme::Mqtts,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    _ => {
                        return Err(err(&format!(
                            "unknown scheme {s:?} (expected mqtt, mqtts, ws or wss)"
                        )))
                    }
                };
                (scheme, rest)
            }
            None => (Scheme::Mqtt, text),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(err("user names and passwords in the URL are not supported"));
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (host, tail) = after
                .split_once(']')
                .ok_or_else(|| err("missing ']' after IPv6 address"))?;
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| err("expected ':port' after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err(err("IPv6 addresses must be written in brackets")),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(err(&format!("bad port {p:?}"))),
                Ok(p) => p,
            },
        };
        let path = match scheme {
            Scheme::Ws | Scheme::Wss if path.is_empty() => "/mqtt".to_string(),
            Scheme::Ws | Scheme::Wss => path.to_string(),
            Scheme::Mqtt | Scheme::Mqtts if path.is_empty() || path == "/" => String::new(),
            Scheme::Mqtt | Scheme::Mqtts => {
                return Err(err("mqtt:// and mqtts:// URLs take no path"))
            }
        };
        Ok(BrokerUrl {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// Refuses transports this version cannot generate load over.
    pub fn require_supported(&self) -> Result<(), UrlError> {
        match self.scheme {
            Scheme::Mqtt | Scheme::Mqtts => Ok(()),
            other => Err(UrlError(format!(
                "{}:// ({}) is not supported by this version of amqtt-bench yet; \
                 only mqtt:// (plain TCP) and mqtts:// (TLS) are",
                other.as_str(),
                match other {
                    Scheme::Ws => "MQTT over WebSocket",
                    _ => "MQTT over secure WebSocket",
                }
            ))),
        }
    }

    /// Resolves host and port (IPv4 first).
    pub fn socket_addr(&self) -> Result<SocketAddr, UrlError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| UrlError(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| UrlError(format!("{} resolves to no address", self.host)))
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}{}",
                self.scheme.as_str(),
                self.host,
                self.port,
                self.path
            )
        } else {
            write!(
                f,
                "{}://{}:{}{}",
                self.scheme.as_str(),
                self.host,
                self.port,
                self.path
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BrokerUrl {
        BrokerUrl::parse(s).unwrap()
    }

    #[test]
    fn schemes_and_default_ports() {
        assert_eq!(p("mqtt://127.0.0.1:1884").port, 1884);
        assert_eq!(p("mqtt://localhost").port, 1883);
        assert_eq!(p("tcp://h").scheme, Scheme::Mqtt);
        assert_eq!(p("mqtts://h").port, 8883);
        assert_eq!(p("MQTTS://h").scheme, Scheme::Mqtts);
        assert_eq!(p("ws://h").port, 80);
        assert_eq!(p("ws://h").path, "/mqtt");
        assert_eq!(p("wss://h:8443/x/y").path, "/x/y");
        assert_eq!(p("wss://h").port, 443);
        assert_eq!(p("127.0.0.1:1885"), p("mqtt://127.0.0.1:1885"));
        assert_eq!(p("mqtt://h:1/").path, "");
    }

    #[test]
    fn ipv6() {
        let u = p("mqtt://[::1]:1999");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 1999);
        assert_eq!(p("mqtt://[::1]").port, 1883);
        assert_eq!(u.to_string(), "mqtt://[::1]:1999");
        assert!(BrokerUrl::parse("mqtt://::1:1883").is_err());
        assert!(BrokerUrl::parse("mqtt://[::1").is_err());
        assert!(BrokerUrl::parse("mqtt://[::1]x").is_err());
    }

    #[test]
    fn errors() {
        for bad in [
            "http://h",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:65536",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/path",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn only_tcp_and_tls_are_supported() {
        assert!(p("mqtt://h").require_supported().is_ok());
        assert!(p("mqtts://h").require_supported().is_ok());
        for url in ["ws://h", "wss://h"] {
            let e = p(url).require_supported().unwrap_err().to_string();
            assert!(e.contains("not supported"), "{e}");
        }
    }

    #[test]
    fn resolves_loopback() {
        let a = p("mqtt://127.0.0.1:1234").socket_addr().unwrap();
        assert_eq!(a, "127.0.0.1:1234".parse().unwrap());
        assert!(p("mqtt://localhost:1").socket_addr().is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "mqtt://127.0.0.1:1883",
            "ws://h:80/mqtt",
            "wss://[::1]:443/a",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }
}
