//! Connection lifecycle log lines: one `info` line when a client's CONNECT is accepted or refused and
//! one when its connection ends (connects and ends at `debug` with `connection_messages: false`),
//! each with the client id, remote address, listener, shard and (on close) the reason. Connections that never send a CONNECT (port probes, timeouts, failed TLS
//! handshakes) are logged at `debug` only and counted in the metrics.
//!
//! Nothing here is on the per-message path, and nothing here decides anything: it only formats.

use std::net::SocketAddr;

use crate::broker::CloseReason;
use crate::protocol::ConnectReturnCode;

/// Who a connection is, for its log lines.
pub(crate) struct Peer<'a> {
    pub client_id: Option<&'a str>,
    /// The CONNECT's user name, when known (named on refusals).
    pub username: Option<&'a str>,
    pub addr: Option<SocketAddr>,
    pub listener: &'a str,
    pub shard: usize,
    /// Level of the connected / disconnected lines (`connection_messages`).
    pub level: log::Level,
}

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.client_id {
            Some(id) => write!(f, "client '{id}'")?,
            None => f.write_str("client")?,
        }
        if let Some(name) = self.username {
            write!(f, " (user '{name}')")?;
        }
        match self.addr {
            Some(addr) => write!(f, " from {addr}")?,
            None => f.write_str(" from an unknown address")?,
        }
        write!(f, " on listener '{}', shard {}", self.listener, self.shard)
    }
}

pub(crate) fn connected(peer: &Peer<'_>, session_present: bool) {
    log::log!(
        peer.level,
        "{peer}: connected{}",
        if session_present {
            " (session resumed)"
        } else {
            ""
        }
    );
}

pub(crate) fn refused(peer: &Peer<'_>, code: ConnectReturnCode) {
    log::info!("{peer}: CONNECT refused: {}", refusal_text(code));
}

/// `reason` is what the broker decided; `None` means the client's side of the connection ended.
pub(crate) fn closed(peer: &Peer<'_>, reason: Option<CloseReason>) {
    log::log!(peer.level, "{peer}: disconnected: {}", close_text(reason));
}

pub(crate) fn refusal_text(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Accepted => "accepted",
        ConnectReturnCode::UnacceptableProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::IdentifierRejected => "identifier rejected",
        ConnectReturnCode::ServerUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNameOrPassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

pub(crate) fn close_text(reason: Option<CloseReason>) -> &'static str {
    match reason {
        None | Some(CloseReason::ConnectionLost) => "connection closed by the client or lost",
        Some(CloseReason::ClientDisconnect) => "client sent DISCONNECT",
        Some(CloseReason::DisconnectWithWill) => "client sent DISCONNECT asking for its will",
        Some(CloseReason::ProtocolError) => "protocol error",
        Some(CloseReason::KeepAliveTimeout) => "keep-alive timeout",
        Some(CloseReason::TakenOver) => "taken over by a new connection with the same client id",
        Some(CloseReason::ServerShutdown) => "broker shutting down",
        Some(CloseReason::CredentialsExpired) => "its credentials expired",
        Some(CloseReason::Kicked) => "disconnected by an administrator",
        Some(CloseReason::AuthenticationFailed) => "re-authentication failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_client_address_listener_and_shard() {
        let peer = Peer {
            client_id: Some("sensor-1"),
            username: Some("alice"),
            addr: Some("127.0.0.1:5000".parse().expect("addr")),
            listener: "default",
            shard: 1,
            level: log::Level::Info,
        };
        assert_eq!(
            peer.to_string(),
            "client 'sensor-1' (user 'alice') from 127.0.0.1:5000 on listener 'default', shard 1"
        );
        let anonymous = Peer {
            client_id: None,
            username: None,
            addr: None,
            listener: "ws",
            shard: 0,
            level: log::Level::Debug,
        };
        assert_eq!(
            anonymous.to_string(),
            "client from an unknown address on listener 'ws', shard 0"
        );
        assert_eq!(
            close_text(Some(CloseReason::KeepAliveTimeout)),
            "keep-alive timeout"
        );
        assert_eq!(
            refusal_text(ConnectReturnCode::NotAuthorized),
            "not authorized"
        );
    }
}
