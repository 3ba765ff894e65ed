//! Broker URLs as aMQTT's clients take them:
//! `{mqtt|tcp|mqtts|ssl|tls|ws|wss}://[user[:password]@]host[:port][/path]`, e.g. `mqtt://localhost:1883`
//! (`tcp` is another name for `mqtt`, `ssl` for `mqtts`, as in paho).
//!
//! Default ports: mqtt 1883, mqtts 8883, ws 80, wss 443. Scheme aliases: `tcp` for mqtt, `ssl` and
//! `tls` for mqtts. IPv6 hosts go in brackets: `mqtt://[::1]:1883`. The path matters only for
//! WebSocket (default `/`). Percent-escapes in user name and password are decoded. Pure parsing, no
//! I/O. The one URL parser of the workspace: the client, the CLIs and amqtt-bench use it.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// WebSocket path, starting with `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL '{url}': {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let fail = |reason| UrlError {
            url: url.to_string(),
            reason,
        };
        let (scheme, rest) = url.split_once("://").ok_or(fail(
            "expected scheme://host[:port], e.g. mqtt://localhost:1883",
        ))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => Scheme::Mqtt,
            "mqtts" | "ssl" | "tls" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(fail("scheme must be mqtt, tcp, mqtts, ssl, tls, ws or wss")),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = percent_decode(user).ok_or(fail("bad percent-escape in user name"))?;
                let pass = match pass {
                    Some(p) => {
                        Some(percent_decode(p).ok_or(fail("bad percent-escape in password"))?)
                    }
                    None => None,
                };
                ((!user.is_empty()).then_some(user), pass)
            }
        };
        let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
            let (host, after) = stripped
                .split_once(']')
                .ok_or(fail("missing ']' after IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(fail("unexpected text after ']'")),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(fail("IPv6 addresses must be written in brackets"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(fail("missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(fail("invalid port"))?,
            None => scheme.default_port(),
        };
        Ok(BrokerUrl {
            scheme,
            host: host.to_string(),
            port,
            username,
            password,
            path: path.to_string(),
        })
    }
}

/// `scheme://host:port`, then the path for WebSocket; never the user name or password, so a URL
/// can go into logs and reports as it is.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.scheme.is_websocket() {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BrokerUrl {
        s.parse().expect("valid URL")
    }

    #[test]
    fn default_ports_per_scheme() {
        assert_eq!(parse("mqtt://h").port, 1883);
        assert_eq!(parse("mqtts://h").port, 8883);
        assert_eq!(parse("ws://h").port, 80);
        assert_eq!(parse("wss://h").port, 443);
    }

    #[test]
    fn credentials_host_port_path() {
        let url = parse("wss://user:p%40ss@broker.example:8443/mqtt");
        assert_eq!(url.scheme, Scheme::Wss);
        assert_eq!(url.username.as_deref(), Some("user"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.host, "broker.example");
        assert_eq!(url.port, 8443);
        assert_eq!(url.path, "/mqtt");
        let url = parse("mqtt://:secret@[::1]:1884");
        assert_eq!(url.username, None);
        assert_eq!(url.password.as_deref(), Some("secret"));
        assert_eq!(url.host, "::1");
        assert_eq!(url.port, 1884);
        assert_eq!(url.path, "/");
    }

    #[test]
    fn scheme_aliases() {
        assert_eq!(parse("tcp://h").scheme, Scheme::Mqtt);
        assert_eq!(parse("ssl://h").scheme, Scheme::Mqtts);
        assert_eq!(parse("TLS://h").scheme, Scheme::Mqtts);
        assert_eq!(parse("tls://h").port, 8883);
    }

    #[test]
    fn display_is_canonical_and_without_credentials() {
        for (url, shown) in [
            ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
            ("tcp://h", "mqtt://h:1883"),
            ("mqtt://u:secret@h:1884/", "mqtt://h:1884"),
            ("ws://h:80/mqtt", "ws://h:80/mqtt"),
            ("wss://[::1]:443/a", "wss://[::1]:443/a"),
            ("wss://h", "wss://h:443/"),
        ] {
            assert_eq!(parse(url).to_string(), shown, "{url}");
            let again = parse(shown);
            assert_eq!(
                (again.scheme, &again.host, again.port),
                (parse(url).scheme, &parse(url).host, parse(url).port)
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, reason) in [
            (
                "localhost:1883",
                "expected scheme://host[:port], e.g. mqtt://localhost:1883",
            ),
            (
                "mqtt:host",
                "expected scheme://host[:port], e.g. mqtt://localhost:1883",
            ),
            (
                "http://h",
                "scheme must be mqtt, tcp, mqtts, ssl, tls, ws or wss",
            ),
            ("mqtt://", "missing host"),
            ("mqtt://h:99999", "invalid port"),
            ("mqtt://h:0", "invalid port"),
            ("mqtt://[::1", "missing ']' after IPv6 address"),
            (
                "mqtt://::1:1883",
                "IPv6 addresses must be written in brackets",
            ),
            ("mqtt://::1", "IPv6 addresses must be written in brackets"),
            ("mqtt://u%zz@h", "bad percent-escape in user name"),
        ] {
            let error = bad.parse::<BrokerUrl>().expect_err(bad);
            assert_eq!(error.reason, reason, "{bad}");
        }
    }
}
