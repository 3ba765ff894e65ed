//! The built-in enhanced authentication method `SCRAM-SHA-256` (RFC 5802 and RFC 7677, without
//! channel binding), served from the SCRAM entries of `auth.password-file`
//! (`password_file/scram.rs`; `amqtt_passwd --scram` writes them).
//!
//! The exchange, one message per packet:
//! ```text
//! CONNECT  Authentication Data = client-first   n,,n=<user>,r=<client nonce>
//! AUTH 18  Authentication Data = server-first   r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! AUTH 18  Authentication Data = client-final   c=biws,r=<nonce>,p=<proof>
//! CONNACK  Authentication Data = server-final   v=<server signature>
//! ```
//! The GS2 header must be `n,,` or `y,,` (no channel binding, no authorization identity: a
//! `p=` header or an `a=` identity are refused). User names are compared as sent (the `=2C` and
//! `=3D` escapes decoded), without SASLprep: write them in the password file as clients send
//! them. An unknown user, or one whose entry is another hash, gets a made-up salt (stable per
//! user) and the same exchange, refused at its end (RFC 5802 §5.1): the exchange tells nobody
//! which users exist. Refusals: a wrong proof or an unknown user 0x86 Bad User Name or Password;
//! messages that do not follow the syntax 0x87 Not authorized. Each step costs a few HMACs (the
//! PBKDF2 was done when the entry was written): cheap enough for the event loop.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::enhanced_auth::{AuthExchange, AuthMethod, AuthStep};
use super::password_file::scram::{constant_time_eq, hmac_sha256, SCRAM_ITERATIONS};
use super::password_file::{PasswordFile, ScramCredentials};
use crate::protocol::v5::ReasonCode;

/// Random bytes of the server's part of the nonce.
const NONCE_BYTES: usize = 18;

/// The method: the users with SCRAM entries, and a per-process secret for made-up salts.
pub struct ScramSha256 {
    users: Arc<HashMap<String, ScramCredentials>>,
    secret: [u8; 32],
}

impl std::fmt::Debug for ScramSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSha256")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl ScramSha256 {
    pub const NAME: &'static str = "SCRAM-SHA-256";

    /// The method for the SCRAM entries of `file` (its other users cannot log in with SCRAM).
    pub fn new(file: &PasswordFile) -> std::io::Result<Self> {
        let users = file
            .users()
            .filter_map(|user| {
                let entry = file.hash_of(user)?;
                let credentials = ScramCredentials::parse(entry).ok()?;
                Some((user.to_string(), credentials))
            })
            .collect();
        Ok(ScramSha256 {
            users: Arc::new(users),
            secret: random()?,
        })
    }

    /// How many users have a SCRAM entry.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl AuthMethod for ScramSha256 {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn start(&self) -> Box<dyn AuthExchange> {
        Box::new(ScramExchange {
            users: self.users.clone(),
            secret: self.secret,
            server_nonce: random::<NONCE_BYTES>().ok().map(|n| BASE64.encode(n)),
            state: State::AwaitClientFirst,
        })
    }
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// One exchange, server side.
struct ScramExchange {
    users: Arc<HashMap<String, ScramCredentials>>,
    secret: [u8; 32],
    /// `None` when no randomness could be had: the exchange refuses.
    server_nonce: Option<String>,
    state: State,
}

enum State {
    AwaitClientFirst,
    AwaitClientFinal {
        user: String,
        /// `None`: an unknown user, refused at the end.
        credentials: Option<ScramCredentials>,
        gs2_header: String,
        nonce: String,
        /// client-first-message-bare "," server-first-message "," (RFC 5802's AuthMessage, so far).
        auth_message: String,
    },
    Done,
}

impl AuthExchange for ScramExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        let state = std::mem::replace(&mut self.state, State::Done);
        let data = data.unwrap_or_default();
        let step = match state {
            // No initial response in the CONNECT: an empty challenge asks for it (RFC 4422 §3.3).
            State::AwaitClientFirst if data.is_empty() => {
                self.state = State::AwaitClientFirst;
                return AuthStep::Continue(Vec::new());
            }
            State::AwaitClientFirst => self.client_first(data),
            State::AwaitClientFinal {
                user,
                credentials,
                gs2_header,
                nonce,
                auth_message,
            } => client_final(
                data,
                &user,
                credentials.as_ref(),
                &gs2_header,
                &nonce,
                auth_message,
            ),
            State::Done => Err(ReasonCode::PROTOCOL_ERROR),
        };
        step.unwrap_or_else(AuthStep::Failure)
    }
}

impl ScramExchange {
    fn client_first(&mut self, data: &[u8]) -> Result<AuthStep, ReasonCode> {
        let syntax = ReasonCode::NOT_AUTHORIZED;
        let text = std::str::from_utf8(data).map_err(|_| syntax)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text.split_once(',').ok_or(syntax)?;
        let (authzid, bare) = rest.split_once(',').ok_or(syntax)?;
        if !matches!(flag, "n" | "y") || !authzid.is_empty() {
            return Err(syntax);
        }
        let gs2_header = format!("{flag},,");
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .and_then(decode_saslname)
            .ok_or(syntax)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(syntax)?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(syntax);
        }
        let server_nonce = self
            .server_nonce
            .as_deref()
            .ok_or(ReasonCode::UNSPECIFIED_ERROR)?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let credentials = self.users.get(&user).cloned();
        let (salt, iterations) = match &credentials {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                hmac_sha256(&self.secret, user.as_bytes())[..16].to_vec(),
                SCRAM_ITERATIONS,
            ),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        self.state = State::AwaitClientFinal {
            auth_message: format!("{bare},{server_first},"),
            user,
            credentials,
            gs2_header,
            nonce,
        };
        Ok(AuthStep::Continue(server_first.into_bytes()))
    }
}

fn client_final(
    data: &[u8],
    user: &str,
    credentials: Option<&ScramCredentials>,
    gs2_header: &str,
    nonce: &str,
    mut auth_message: String,
) -> Result<AuthStep, ReasonCode> {
    let syntax = ReasonCode::NOT_AUTHORIZED;
    let text = std::str::from_utf8(data).map_err(|_| syntax)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(syntax)?;
    let mut fields = without_proof.split(',');
    let binding = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or(syntax)?;
    let echoed = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(syntax)?;
    if binding != BASE64.encode(gs2_header) || echoed != nonce {
        return Err(syntax);
    }
    let proof: [u8; 32] = BASE64
        .decode(proof)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or(syntax)?;
    auth_message.push_str(without_proof);
    let Some(credentials) = credentials else {
        log::debug!("SCRAM-SHA-256: unknown user '{user}' (or no SCRAM entry)");
        return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    };
    let signature = hmac_sha256(&credentials.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
    if !constant_time_eq(&stored_key, &credentials.stored_key) {
        log::debug!("SCRAM-SHA-256: wrong proof for user '{user}'");
        return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    }
    let server_signature = hmac_sha256(&credentials.server_key, auth_message.as_bytes());
    Ok(AuthStep::Success {
        user: Some(user.to_string()),
        data: Some(format!("v={}", BASE64.encode(server_signature)).into_bytes()),
    })
}

/// A `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` or a `,` is malformed.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3)? {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests;
