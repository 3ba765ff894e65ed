//! The broker URL as amqtt-bench takes it: `mqtt://host:port`, `mqtts://`, or a bare `host:port`
//! (meaning `mqtt://host:port`). IPv6 hosts go in brackets: `mqtt://[::1]:1883`.
//!
//! Parsing is `amqtt::transport::BrokerUrl`'s, the workspace's one URL parser; this file holds only
//! what amqtt-bench adds on top: the bare form, what it refuses (WebSocket schemes, which this
//! version cannot generate load over; credentials, which it never sends; a path on mqtt(s)://,
//! which means nothing there) and how it resolves the host (IPv4 first).

use std::net::{SocketAddr, ToSocketAddrs};

pub use amqtt::transport::{BrokerUrl, Scheme};

/// Parses `text` and refuses what this version of amqtt-bench cannot use; the error says why.
pub fn parse(text: &str) -> Result<BrokerUrl, String> {
    let url = if text.contains("://") {
        text.parse::<BrokerUrl>()
    } else {
        format!("mqtt://{text}").parse::<BrokerUrl>()
    }
    .map_err(|e| e.to_string())?;
    let refuse = |why: &str| Err(format!("invalid broker URL {text:?}: {why}"));
    if url.username.is_some() || url.password.is_some() || text.contains('@') {
        return refuse("user names and passwords in the URL are not supported");
    }
    match url.scheme {
        Scheme::Mqtt | Scheme::Mqtts if url.path != "/" => {
            refuse("mqtt:// and mqtts:// URLs take no path")
        }
        Scheme::Mqtt | Scheme::Mqtts => Ok(url),
        Scheme::Ws | Scheme::Wss => Err(format!(
            "{}:// ({}) is not supported by this version of amqtt-bench yet; \
             only mqtt:// (plain TCP) and mqtts:// (TLS) are",
            url.scheme,
            if url.scheme == Scheme::Ws {
                "MQTT over WebSocket"
            } else {
                "MQTT over secure WebSocket"
            }
        )),
    }
}

/// Resolves host and port (IPv4 first).
pub fn socket_addr(url: &BrokerUrl) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{} resolves to no address", url.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BrokerUrl {
        parse(s).unwrap()
    }

    #[test]
    fn forms_bench_accepts() {
        assert_eq!(p("mqtt://127.0.0.1:1884").port, 1884);
        assert_eq!(p("mqtt://localhost").port, 1883);
        assert_eq!(p("tcp://h").scheme, Scheme::Mqtt);
        assert_eq!(p("mqtts://h").port, 8883);
        assert_eq!(p("MQTTS://h").scheme, Scheme::Mqtts);
        assert_eq!(p("tls://h").scheme, Scheme::Mqtts);
        assert_eq!(p("127.0.0.1:1885"), p("mqtt://127.0.0.1:1885"));
        assert_eq!(p("localhost").port, 1883);
        assert_eq!(p("mqtt://h:1/").port, 1);
        assert_eq!(p("mqtt://[::1]:1999").host, "::1");
        assert_eq!(p("[::1]").port, 1883);
        assert_eq!(p("mqtt://[::1]:1999").to_string(), "mqtt://[::1]:1999");
    }

    #[test]
    fn errors() {
        for (bad, says) in [
            (
                "http://h",
                "scheme must be mqtt, tcp, mqtts, ssl, tls, ws or wss",
            ),
            ("mqtt://", "missing host"),
            ("mqtt://:1883", "missing host"),
            ("mqtt://h:0", "invalid port"),
            ("mqtt://h:65536", "invalid port"),
            ("mqtt://h:x", "invalid port"),
            (
                "mqtt://::1:1883",
                "IPv6 addresses must be written in brackets",
            ),
            ("mqtt://[::1", "missing ']' after IPv6 address"),
            ("mqtt://[::1]x", "unexpected text after ']'"),
            (
                "mqtt://u:p@h",
                "user names and passwords in the URL are not supported",
            ),
            (
                "mqtt://@h",
                "user names and passwords in the URL are not supported",
            ),
            ("mqtt://h/path", "mqtt:// and mqtts:// URLs take no path"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with("invalid broker URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_tcp_and_tls_are_supported() {
        for url in ["ws://h", "wss://h", "ws://h:8080/mqtt"] {
            let e = parse(url).unwrap_err();
            assert!(e.contains("not supported by this version"), "{e}");
        }
    }

    #[test]
    fn resolves_loopback() {
        let a = socket_addr(&p("mqtt://127.0.0.1:1234")).unwrap();
        assert_eq!(a, "127.0.0.1:1234".parse().unwrap());
        assert!(socket_addr(&p("mqtt://localhost:1")).is_ok());
    }
}
