//! What a connection is made with: [`ConnectOptions`] (per connection, over the client's
//! config), their checks against MQTT's field limits, and the [`SessionOptions`] the sans-IO state
//! is started with; plus the limits and the error helper the other client calls check against.
//!
//! Must not: connect, hold a connection, or do I/O (the driver does).

use std::path::PathBuf;

use bytes::Bytes;

use super::state::{SessionOptions, V5Options};
use super::{ClientError, MqttClient};
use crate::protocol::v5::{Kind, Properties};
use crate::protocol::ProtocolLevel;
use crate::transport::BrokerUrl;

/// Largest remaining length MQTT can express.
pub(super) const MAX_REMAINING_LENGTH: usize = 268_435_455;
/// Longest UTF-8 string or binary field.
pub(super) const MAX_FIELD: usize = 65_535;

/// Per-connection options of [`MqttClient::connect_with`]; `None` fields fall back to the config.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Overrides `cleansession`.
    pub clean_session: Option<bool>,
    /// User name for CONNECT (overrides the URL's).
    pub username: Option<String>,
    /// Password for CONNECT (overrides the URL's).
    pub password: Option<String>,
    /// PEM file of CA certificates to trust (overrides `connection.cafile`).
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates (overrides `connection.capath`).
    pub ca_path: Option<PathBuf>,
    /// PEM CA certificates inline (overrides `connection.cadata`).
    pub ca_data: Option<String>,
    /// Client certificate (PEM) to present, with `key_file`; the two override
    /// `connection.certfile` and `connection.keyfile` together.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Overrides `check_hostname` (`Some(false)`: take a broker certificate made for another host
    /// name, as mosquitto's `--insecure`).
    pub check_hostname: Option<bool>,
    /// Extra HTTP headers for the WebSocket upgrade request.
    pub extra_headers: Vec<(String, String)>,
    /// MQTT 3.1, 3.1.1 or 5 (`None`: 3.1.1).
    pub protocol_version: Option<ProtocolLevel>,
    /// CONNECT and will properties and topic aliases; MQTT 5 only (refused at the other levels
    /// when not empty).
    pub v5: V5Options,
}

/// The error for a value the client refuses to send.
pub(super) fn invalid(what: &'static str, value: &str, reason: impl ToString) -> ClientError {
    ClientError::Invalid {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl MqttClient {
    pub(super) fn session_options(
        &self,
        url: &BrokerUrl,
        options: &ConnectOptions,
    ) -> Result<SessionOptions, ClientError> {
        if self.client_id.len() > MAX_FIELD {
            return Err(invalid(
                "client id",
                &self.client_id,
                "longer than 65,535 bytes",
            ));
        }
        let username = options.username.clone().or_else(|| url.username.clone());
        let password = options.password.clone().or_else(|| url.password.clone());
        for (what, value) in [("user name", &username), ("password", &password)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FIELD) {
                return Err(invalid(what, "…", "longer than 65,535 bytes"));
            }
        }
        let will = self.config.will.clone();
        if will.as_ref().is_some_and(|w| w.payload.len() > MAX_FIELD) {
            return Err(invalid("will message", "…", "longer than 65,535 bytes"));
        }
        let protocol = options.protocol_version.unwrap_or(ProtocolLevel::V311);
        let v5 = options.v5.clone();
        if protocol == ProtocolLevel::V5 {
            check_properties(&v5.connect_properties, Kind::Connect, "CONNECT properties")?;
            check_properties(&v5.will_properties, Kind::Will, "will properties")?;
        } else if !v5.connect_properties.is_empty() || !v5.will_properties.is_empty() {
            return Err(invalid(
                "CONNECT properties",
                "",
                "properties need MQTT 5 (protocol version 5)",
            ));
        }
        Ok(SessionOptions {
            client_id: self.client_id.clone(),
            clean_session: options.clean_session.unwrap_or(self.config.clean_session),
            keep_alive: self.config.keep_alive,
            ping_delay: self.config.ping_delay,
            connection_timeout: self.config.connection_timeout,
            will,
            username,
            password: password.map(|p| Bytes::from(p.into_bytes())),
            max_inflight: usize::from(self.config.max_inflight),
            protocol,
            v5,
        })
    }
}

/// Refuses properties `kind` may not carry or cannot encode, naming `what` they are.
pub(super) fn check_properties(
    properties: &Properties,
    kind: Kind,
    what: &'static str,
) -> Result<(), ClientError> {
    properties
        .body_len(kind)
        .map(drop)
        .map_err(|e| invalid(what, "", e))
}
