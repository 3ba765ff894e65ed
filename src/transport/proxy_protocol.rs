//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a TCP proxy
//! sends as the first bytes of a connection to say who the client really is. Sans-IO: [`parse`]
//! takes the bytes read so far and says how many more to read, what the header says, or why it is
//! refused. Reading the socket is the listener's job (`server.rs`), which reads no byte past the
//! header: what follows belongs to TLS, WebSocket or MQTT.
//!
//! - Version 1: one text line, `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
//!   `PROXY UNKNOWN ...\r\n`, at most 107 bytes with its CRLF.
//! - Version 2: a 12-byte signature, version/command, family/transport, a big-endian length, then the
//!   addresses and TLVs (skipped). The whole header is bounded here by [`MAX_V2_LEN`].
//!
//! A header that names no client address (v1 `UNKNOWN`; v2 `LOCAL`, such as a proxy's own health
//! check, or an `UNSPEC` or UNIX-socket family) is valid: the connection's own peer address stands.
//! This file knows no MQTT and no socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The version 1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, CRLF included (the specification's bound).
pub const MAX_V1_LEN: usize = 107;
/// The shortest version 1 line: `PROXY UNKNOWN\r\n`. Shorter than any version 2 header, so a first
/// read of this many bytes never reads past a valid header of either version.
const MIN_HEADER_LEN: usize = 15;
/// The longest version 2 header accepted, fixed part included. The addresses take at most 216
/// bytes (UNIX sockets); the rest is TLVs, which proxies keep small (SSL details, a unique id, a
/// cloud endpoint id).
pub const MAX_V2_LEN: usize = 4096;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client's address as the proxy saw it; `None` when the header names none (see the
    /// file's doc): the connection's own peer address stands then.
    pub source: Option<SocketAddr>,
}

/// Where parsing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header is not complete: read at most `at_least` more bytes (fewer arriving is fine;
    /// parse again with them). Never more than the header can still hold, so nothing past it is
    /// read.
    Incomplete { at_least: usize },
    /// The header is the first `len` bytes.
    Complete { header: ProxyHeader, len: usize },
}

/// Why a header is refused; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY protocol v1 line longer than {MAX_V1_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY protocol v1 line: {0}")]
    V1(&'static str),
    #[error("PROXY protocol v2 header of {0} bytes, more than the {MAX_V2_LEN} accepted")]
    V2TooLong(usize),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
}

/// Parses the start of a connection (`bytes`: everything read so far, nothing skipped).
pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    match bytes.first() {
        None => Ok(Parsed::Incomplete {
            at_least: MIN_HEADER_LEN,
        }),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(ProxyHeaderError::Missing),
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let prefix = bytes.len().min(V1_PREFIX.len());
    if bytes[..prefix] != V1_PREFIX[..prefix] {
        return Err(ProxyHeaderError::Missing);
    }
    let scanned = &bytes[..bytes.len().min(MAX_V1_LEN)];
    if let Some(end) = scanned.iter().position(|&b| b == b'\r' || b == b'\n') {
        if scanned[end] == b'\n' {
            return Err(ProxyHeaderError::V1("a line break that is not CRLF"));
        }
        match scanned.get(end..end + 2) {
            Some(b"\r\n") => {
                let source = v1_source(&bytes[V1_PREFIX.len().min(end)..end])?;
                return Ok(Parsed::Complete {
                    header: ProxyHeader { version: 1, source },
                    len: end + 2,
                });
            }
            Some(_) => return Err(ProxyHeaderError::V1("a line break that is not CRLF")),
            // A lone '\r' at the end: its '\n' is next.
            None if end + 1 < MAX_V1_LEN => return Ok(Parsed::Incomplete { at_least: 1 }),
            None => return Err(ProxyHeaderError::V1TooLong),
        }
    }
    if bytes.len() >= MAX_V1_LEN {
        return Err(ProxyHeaderError::V1TooLong);
    }
    let at_least = v1_min_remaining(bytes).min(MAX_V1_LEN - bytes.len());
    Ok(Parsed::Incomplete { at_least })
}

/// The fewest bytes that can still complete the line begun in `bytes` (no CRLF in it yet): each
/// field still to come at its shortest, then CRLF. Lets the reader take the line in a few reads
/// instead of one byte at a time.
fn v1_min_remaining(bytes: &[u8]) -> usize {
    let at_start = MIN_HEADER_LEN.saturating_sub(bytes.len());
    let Some(rest) = bytes.get(V1_PREFIX.len()..) else {
        return at_start;
    };
    let mut fields = rest.split(|&b| b == b' ');
    let protocol = fields.next().unwrap_or_default();
    // Shortest source, destination, source port, destination port.
    let shortest: &[usize] = match protocol {
        _ if !rest.contains(&b' ') => {
            return at_start.max(4usize.saturating_sub(protocol.len()) + 2)
        }
        b"TCP4" => &[7, 7, 1, 1],
        b"TCP6" => &[2, 2, 1, 1],
        // UNKNOWN (anything may follow until CRLF), or a bad protocol the complete line will name.
        _ => return at_start.max(2),
    };
    let done = rest.iter().filter(|&&b| b == b' ').count() - 1;
    let current = rest.rsplit(|&b| b == b' ').next().unwrap_or_default().len();
    let Some((this, later)) = shortest.get(done..).and_then(|s| s.split_first()) else {
        // More fields than the line holds: the complete line will be refused; just need CRLF.
        return at_start.max(2);
    };
    let fields_left = this.saturating_sub(current) + later.iter().map(|n| n + 1).sum::<usize>();
    at_start.max(fields_left + 2)
}

/// The source address of a complete v1 line (`line`: after `PROXY `, before CRLF).
fn v1_source(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::V1;
    // UNKNOWN: whatever follows it is ignored, as the specification asks.
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(None);
    }
    let line = std::str::from_utf8(line).map_err(|_| bad("not ASCII"))?;
    let mut fields = line.split(' ');
    let ipv6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err(bad("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let fields: Vec<&str> = fields.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(bad(
            "not four fields after the protocol, single-space separated",
        ));
    };
    let address = |text: &str| -> Result<IpAddr, ProxyHeaderError> {
        let ip = if ipv6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| bad("an address that is not of the protocol's family"))
    };
    let port = |text: &str| -> Result<u16, ProxyHeaderError> {
        let digits =
            !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = text.len() > 1 && text.starts_with('0');
        match text.parse::<u16>() {
            Ok(port) if digits && !leading_zero => Ok(port),
            _ => Err(bad("a port that is not a number from 0 to 65535")),
        }
    };
    let source = SocketAddr::new(address(source)?, port(source_port)?);
    address(destination)?;
    port(destination_port)?;
    Ok(Some(source))
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let prefix = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..prefix] != V2_SIGNATURE[..prefix] {
        return Err(ProxyHeaderError::Missing);
    }
    if let Some(&version_command) = bytes.get(12) {
        if version_command >> 4 != 2 {
            return Err(ProxyHeaderError::V2("version is not 2"));
        }
        if version_command & 0x0f > 1 {
            return Err(ProxyHeaderError::V2("command is neither LOCAL nor PROXY"));
        }
    }
    let Some(fixed) = bytes.get(..16) else {
        return Ok(Parsed::Incomplete {
            at_least: 16 - bytes.len(),
        });
    };
    let len = 16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_V2_LEN {
        return Err(ProxyHeaderError::V2TooLong(len));
    }
    let Some(body) = bytes.get(16..len) else {
        return Ok(Parsed::Incomplete {
            at_least: len - bytes.len(),
        });
    };
    let local = fixed[12] & 0x0f == 0;
    let source = if local {
        // The proxy's own connection (a health check): addresses, if any, are ignored.
        None
    } else {
        v2_source(fixed[13], body)?
    };
    Ok(Parsed::Complete {
        header: ProxyHeader { version: 2, source },
        len,
    })
}

/// The source address of a v2 PROXY command, from its family/transport byte and the bytes after
/// the fixed part (addresses, then TLVs, which are skipped).
fn v2_source(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::V2;
    let need = |n: usize| match body.get(..n) {
        Some(addresses) => Ok(addresses),
        None => Err(bad("length too short for the addresses of its family")),
    };
    match family {
        // UNSPEC: the proxy does not know the addresses.
        0x00 => Ok(None),
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = need(12)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        // TCP over IPv6.
        0x21 => {
            let a = need(36)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // A UNIX stream socket: no IP address to name.
        0x31 => need(216).map(|_| None),
        0x12 | 0x22 | 0x32 => Err(bad("a datagram (UDP) connection on a TCP listener")),
        _ => Err(bad("unknown address family or transport")),
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
