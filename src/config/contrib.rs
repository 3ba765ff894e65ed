//! The settings of aMQTT's contrib plugins that amqtt-rs provides, with aMQTT's own key names:
//!
//! | aMQTT class (`plugins:` mapping) | our key (older form) | our plugin name |
//! | --- | --- | --- |
//! | `amqtt.contrib.jwt.UserAuthJwtPlugin` | `auth.jwt` | `auth_jwt` |
//! | `amqtt.contrib.jwt.TopicAuthJwtPlugin` | `topic-check.jwt` | `topic_jwt` |
//! | `amqtt.contrib.cert.CertificateAuthPlugin` | `auth.cert` | `auth_cert` |
//!
//! Here they are read (serde, unknown keys refused, required keys required; `raw` holds them
//! where the file puts them, `build.rs` gathers them) and kept as given;
//! the plugins (`src/plugins/auth_jwt`, `src/plugins/auth_cert.rs`) check the values (an
//! algorithm they support, a key that parses) when the broker starts. What must not live here:
//! any verification, or I/O.

use std::fmt;

use serde::Deserialize;

/// aMQTT's default `algorithm`.
const DEFAULT_ALGORITHM: &str = "HS256";

/// `UserAuthJwtPlugin`'s settings: the token in the password field, its `user_claim` naming the
/// user.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtUserSettings {
    /// The HMAC secret (HS*), or the PEM public key that verifies the signatures (RS*, PS*,
    /// ES*, EdDSA).
    pub secret_key: String,
    /// The claim whose value must equal the CONNECT's user name.
    pub user_claim: String,
    /// `HS256` (aMQTT's default), `HS384`, `HS512`, `RS256`, ... (see the plugin).
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
}

/// `TopicAuthJwtPlugin`'s settings: the claims that list the topics a token's holder may use.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtTopicSettings {
    /// As `auth_jwt`'s: the HMAC secret, or the PEM public key.
    pub secret_key: String,
    /// The claim listing the topic filters the client may publish to.
    pub publish_claim: String,
    /// The claim listing the topic filters the client may subscribe with.
    pub subscribe_claim: String,
    /// The claim listing the topic filters the client may receive messages on.
    pub receive_claim: String,
    /// As `auth_jwt`'s.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
}

/// `CertificateAuthPlugin`'s settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSettings {
    /// The trust domain of the devices' SPIFFE IDs (`spiffe://DOMAIN/device/ID`).
    pub uri_domain: String,
}

/// What the contrib plugins are configured with; `None`: not configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContribConfig {
    /// `auth.jwt` (`auth_jwt`).
    pub jwt_user: Option<JwtUserSettings>,
    /// `topic-check.jwt` (`topic_jwt`).
    pub jwt_topic: Option<JwtTopicSettings>,
    /// `auth.cert` (`auth_cert`); without it `auth_cert` accepts any SPIFFE trust domain.
    pub cert: Option<CertSettings>,
}

fn default_algorithm() -> String {
    DEFAULT_ALGORITHM.to_string()
}

/// The secret never reaches a log line.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for JwtUserSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtUserSettings")
            .field("secret_key", &REDACTED)
            .field("user_claim", &self.user_claim)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl fmt::Debug for JwtTopicSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtTopicSettings")
            .field("secret_key", &REDACTED)
            .field("publish_claim", &self.publish_claim)
            .field("subscribe_claim", &self.subscribe_claim)
            .field("receive_claim", &self.receive_claim)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}
