//! `auth_jwt` and `topic_jwt`: aMQTT's `amqtt.contrib.jwt` plugins — a JSON Web Token in the
//! CONNECT's password field is the client's credential.
//!
//! - `auth_jwt` (`UserAuthJwtPlugin`): allows a client whose token verifies with `secret_key` and
//!   `algorithm` and whose `user_claim` equals its user name; denies every other client (no
//!   password, not a token, bad signature, expired, not yet valid, another user).
//! - `topic_jwt` (`TopicAuthJwtPlugin`, [`topics.rs`](topics)): what a client may publish to,
//!   subscribe with and receive are the topic filters its token lists in `publish_claim`,
//!   `subscribe_claim` and `receive_claim`; nothing without a valid token.
//!
//! Verification follows PyJWT's `jwt.decode`, which aMQTT calls: the signature with the one
//! configured algorithm (the header's `alg` must be it), `exp` and `nbf` when present (integers,
//! no leeway), a token carrying `aud` refused (no audience is configured). Differences, all
//! stricter or fixes: aMQTT 0.12 verifies with HS256 whatever `algorithm` says, we use
//! `algorithm` (so RS256/ES256 tokens work, `secret_key` then being the PEM public key); aMQTT
//! lets a client without a user name in with a token that has no `user_claim`, we deny it; and a
//! token's `exp` also ends the connection when it passes ([`AuthDecision::AllowUntil`]), where
//! aMQTT only refuses the next CONNECT. Algorithms: `HS256`, `HS384`, `HS512`, `RS256`, `RS384`,
//! `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA`; aMQTT's `ES256K`, `ES512` and
//! `ES521` are refused at start (the verifying library, on `ring`, has no such curves).
//!
//! Verifying costs microseconds (HMAC) to a tenth of a millisecond (RSA, ECDSA): it runs on the
//! shard's blocking helper, like every authentication. What must not live here: configuration
//! parsing (`config/contrib.rs`).

mod topics;

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthDecision, AuthPlugin, BoxError, Credentials};
use crate::config::JwtUserSettings;

pub use topics::JwtTopics;

/// A token's claims.
type Claims = Map<String, Value>;

/// Verifies tokens with one key and one algorithm.
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Why a token is refused (logged at debug, never shown to the client).
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("no password")]
    Missing,
    #[error("the password is not a token: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("claim '{0}' is not an integer")]
    NotAnInteger(&'static str),
}

impl Verifier {
    /// The verifier of `algorithm` with `secret_key`; the error says which of the two is wrong.
    fn new(secret_key: &str, algorithm: &str) -> Result<Verifier, (&'static str, String)> {
        let algorithm = parse_algorithm(algorithm).map_err(|reason| ("algorithm", reason))?;
        let pem = secret_key.as_bytes();
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                if secret_key.is_empty() {
                    return Err(("secret_key", "an empty HMAC secret".into()));
                }
                Ok(DecodingKey::from_secret(pem))
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|e| {
            let reason = format!("not a PEM public key for {algorithm:?} ({e})");
            ("secret_key", reason)
        })?;
        let mut validation = Validation::new(algorithm);
        // PyJWT's defaults: `exp` optional, no leeway, `nbf` checked.
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_nbf = true;
        Ok(Verifier { key, validation })
    }

    /// The claims of a valid token, and its `exp` if it has one.
    fn verify(&self, password: Option<&[u8]>) -> Result<(Claims, Option<SystemTime>), TokenError> {
        let token = std::str::from_utf8(password.ok_or(TokenError::Missing)?)
            .map_err(TokenError::NotUtf8)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims;
        // The library ignores an `exp` or `nbf` that is not an integer; PyJWT refuses the token.
        let integer = |name: &'static str| match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or(TokenError::NotAnInteger(name)),
        };
        integer("nbf")?;
        let expiry = integer("exp")?.map(|exp| SystemTime::UNIX_EPOCH + Duration::from_secs(exp));
        Ok((claims, expiry))
    }

    /// [`verify`](Self::verify) of a CONNECT's password; why a token is refused is logged at
    /// debug, with the name of the `plugin` asking.
    fn verify_connect(
        &self,
        plugin: &str,
        credentials: &Credentials,
    ) -> Option<(Claims, Option<SystemTime>)> {
        self.verify(credentials.password.as_deref())
            .map_err(|error| {
                log::debug!(
                    "{plugin}: token of '{}' (user {:?}) refused: {error}",
                    credentials.client_id,
                    credentials.username
                )
            })
            .ok()
    }
}

/// aMQTT's algorithm names, as far as the library verifies them.
fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    const KNOWN: &str = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, \
                         ES384, EdDSA";
    match name {
        "ES256K" | "ES512" | "ES521" => Err(format!(
            "'{name}' is not supported by amqtt-rs (supported: {KNOWN})"
        )),
        _ => name
            .parse::<Algorithm>()
            .map_err(|_| format!("unknown algorithm '{name}' (supported: {KNOWN})")),
    }
}

/// The `auth_jwt` plugin.
pub struct JwtAuth {
    verifier: Verifier,
    user_claim: String,
}

impl JwtAuth {
    pub const NAME: &'static str = "auth_jwt";

    /// The plugin, or which setting is wrong and why.
    pub fn new(settings: &JwtUserSettings) -> Result<JwtAuth, (&'static str, String)> {
        Ok(JwtAuth {
            verifier: Verifier::new(&settings.secret_key, &settings.algorithm)?,
            user_claim: settings.user_claim.clone(),
        })
    }
}

impl AuthPlugin for JwtAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        let Some((claims, expiry)) = self.verifier.verify_connect(Self::NAME, credentials) else {
            return Ok(AuthDecision::Deny);
        };
        let user = claims.get(&self.user_claim).and_then(Value::as_str);
        if user.is_none() || user != credentials.username.as_deref() {
            log::debug!(
                "auth_jwt: token of '{}' names user {user:?} in '{}', the CONNECT {:?}",
                credentials.client_id,
                self.user_claim,
                credentials.username
            );
            return Ok(AuthDecision::Deny);
        }
        Ok(expiry.map_or(AuthDecision::Allow, AuthDecision::AllowUntil))
    }
}

#[cfg(test)]
mod tests;
