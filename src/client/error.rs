//! The client's typed errors: what a caller of [`MqttClient`](super::MqttClient) can be told.
//!
//! Every error is `Clone` (transport errors are shared behind an `Arc`), because one lost connection
//! can fail many waiting callers at once, each of which gets its own copy.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{ConnectReturnCode, DecodeError};
use crate::transport::{TransportError, UrlError};

use crate::protocol::v5::ReasonCode;

use super::state::{refusal_reason, with_reason, ConnectionError, PublishFailure};

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker URL does not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// TCP, TLS or WebSocket could not be set up (unreachable, untrusted certificate, ...).
    #[error(transparent)]
    Transport(Arc<TransportError>),
    /// The broker answered CONNACK with a non-zero return code.
    #[error("connection refused by the broker: {}", refusal_reason(*.0))]
    Refused(ConnectReturnCode),
    /// The broker answered an MQTT 5 CONNECT with a failure reason code (and maybe a Reason
    /// String).
    #[error("connection refused by the broker: {}", with_reason(*code, reason_string))]
    RefusedWithReason {
        /// CONNACK's reason code.
        code: ReasonCode,
        /// CONNACK's Reason String, if sent.
        reason_string: Option<String>,
    },
    /// The broker sent an MQTT 5 DISCONNECT.
    #[error("the broker disconnected: {}", with_reason(*code, reason_string))]
    ServerDisconnected {
        /// DISCONNECT's reason code.
        code: ReasonCode,
        /// DISCONNECT's Reason String, if sent.
        reason_string: Option<String>,
    },
    /// One publish failed (MQTT 5: refused by the broker, or against the broker's limits); the
    /// connection goes on.
    #[error(transparent)]
    PublishFailed(PublishFailure),
    /// No CONNACK arrived within `connection_timeout`.
    #[error("the broker did not answer CONNECT within {0:?}")]
    ConnAckTimeout(Duration),
    /// No PINGRESP (or anything else) arrived within the keep-alive period.
    #[error("the broker did not answer PINGREQ within {0:?}")]
    KeepAliveTimeout(Duration),
    /// `deliver_message` waited its whole timeout.
    #[error("no message within {0:?}")]
    Timeout(Duration),
    /// The broker broke the protocol; the connection was closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection was lost and `auto_reconnect` is off.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// Auto-reconnect used up `reconnect_retries`.
    #[error("gave up reconnecting after {attempts} attempt(s); last error: {last}")]
    ReconnectFailed {
        /// Attempts made since the connection was lost.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// The operation needs a connection: call `connect` first (or again).
    #[error("not connected")]
    NotConnected,
    /// `connect` was called on a client that is already connected.
    #[error("already connected")]
    AlreadyConnected,
    /// `disconnect` was called (or the client dropped) before the operation completed.
    #[error("disconnected before the operation completed")]
    Disconnected,
    /// A topic name, topic filter, client id or QoS the protocol cannot carry.
    #[error("invalid {what} '{value}': {reason}")]
    Invalid {
        /// What it is: "topic name", "client id", ...
        what: &'static str,
        /// The value refused ("…" for one too long or secret to repeat).
        value: String,
        /// Why.
        reason: String,
    },
    /// All 65,535 packet identifiers are in use.
    #[error("too many requests in flight (no free packet identifier)")]
    TooManyInflight,
    /// The client's I/O thread could not be started.
    #[error("cannot start the client's I/O thread: {0}")]
    Runtime(String),
}

impl From<TransportError> for ClientError {
    fn from(error: TransportError) -> Self {
        ClientError::Transport(Arc::new(error))
    }
}

impl From<ConnectionError> for ClientError {
    fn from(error: ConnectionError) -> Self {
        match error {
            ConnectionError::Refused(code) => ClientError::Refused(code),
            ConnectionError::ConnAckTimeout(d) => ClientError::ConnAckTimeout(d),
            ConnectionError::PingTimeout(d) => ClientError::KeepAliveTimeout(d),
            ConnectionError::Violation(reason) => ClientError::Protocol(reason),
            ConnectionError::RefusedV5 {
                code,
                reason_string,
            } => ClientError::RefusedWithReason {
                code,
                reason_string,
            },
            ConnectionError::ServerDisconnect {
                code,
                reason_string,
            } => ClientError::ServerDisconnected {
                code,
                reason_string,
            },
        }
    }
}

impl ClientError {
    /// `error` as the reason of a [`ClientError::Invalid`] topic name or filter: its bare reason,
    /// since the message already says "invalid topic name '...'".
    pub(crate) fn invalid_topic(what: &'static str, value: &str, error: DecodeError) -> Self {
        let reason = match error {
            DecodeError::InvalidTopicName(reason) | DecodeError::InvalidTopicFilter(reason) => {
                reason.to_string()
            }
            other => other.to_string(),
        };
        ClientError::Invalid {
            what,
            value: value.to_string(),
            reason,
        }
    }

    /// This error as the end of an established connection: a [`ClientError::ConnectionLost`] that
    /// names its cause once.
    pub(crate) fn into_lost(self) -> Self {
        match self {
            lost @ ClientError::ConnectionLost(_) => lost,
            other => ClientError::ConnectionLost(other.to_string()),
        }
    }

    /// True for errors that end the connection attempt rather than a single operation: used by the
    /// CLIs to choose between "cannot connect" and other messages.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Transport(_)
                | ClientError::Refused(_)
                | ClientError::RefusedWithReason { .. }
                | ClientError::ServerDisconnected { .. }
                | ClientError::ConnAckTimeout(_)
                | ClientError::KeepAliveTimeout(_)
                | ClientError::ConnectionLost(_)
                | ClientError::ReconnectFailed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_words() {
        assert_eq!(
            ClientError::Refused(ConnectReturnCode::IdentifierRejected).to_string(),
            "connection refused by the broker: client identifier rejected"
        );
        assert_eq!(
            ClientError::from(ConnectionError::Refused(
                ConnectReturnCode::ServerUnavailable
            ))
            .to_string(),
            "connection refused by the broker: server unavailable"
        );
    }

    #[test]
    fn v5_refusals_say_code_and_reason_string() {
        let refused = ClientError::from(ConnectionError::RefusedV5 {
            code: ReasonCode::NOT_AUTHORIZED,
            reason_string: Some("no ACL for you".into()),
        });
        assert_eq!(
            refused.to_string(),
            "connection refused by the broker: not authorized (0x87): no ACL for you"
        );
        assert!(refused.is_connection_error());
        let gone = ClientError::from(ConnectionError::ServerDisconnect {
            code: ReasonCode::SESSION_TAKEN_OVER,
            reason_string: None,
        });
        assert_eq!(
            gone.to_string(),
            "the broker disconnected: session taken over (0x8e)"
        );
        let failed = ClientError::PublishFailed(PublishFailure::Refused {
            code: ReasonCode::QUOTA_EXCEEDED,
            reason_string: None,
        });
        assert_eq!(
            failed.to_string(),
            "the broker refused the message: quota exceeded (0x97)"
        );
        assert!(!failed.is_connection_error());
    }

    #[test]
    fn each_cause_is_said_once() {
        let lost = ClientError::ConnectionLost("the broker closed the connection".into());
        assert_eq!(
            lost.into_lost().to_string(),
            "connection lost: the broker closed the connection"
        );
        assert_eq!(
            ClientError::KeepAliveTimeout(Duration::from_secs(3))
                .into_lost()
                .to_string(),
            "connection lost: the broker did not answer PINGREQ within 3s"
        );
        let name = crate::protocol::TopicName::new("a/+").unwrap_err();
        assert_eq!(
            ClientError::invalid_topic("topic name", "a/+", name).to_string(),
            "invalid topic name 'a/+': contains a wildcard character"
        );
    }
}
