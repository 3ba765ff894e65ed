//! SCRAM-SHA-256 credentials in a password file: what the broker keeps to run MQTT 5 enhanced
//! authentication with method `SCRAM-SHA-256` (`plugins/scram.rs`) without knowing the password.
//! Knows no files, users or exchanges.
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>      (base64, RFC 5803's form; PostgreSQL's)
//! ```
//!
//! From RFC 5802 §3: `SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)`,
//! `ClientKey = HMAC(SaltedPassword, "Client Key")`, `StoredKey = SHA-256(ClientKey)`,
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. A sha512-crypt or argon2 hash cannot give
//! these, which is why a user who logs in with SCRAM needs an entry of this form
//! (`amqtt_passwd --scram`). The same entry also verifies a plain CONNECT password
//! ([`ScramCredentials::verify_password`]: the keys are derived again and compared), so a user
//! needs one line for both ways of logging in.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The prefix of a SCRAM-SHA-256 entry, and the mechanism's name.
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";
/// Iterations `amqtt_passwd --scram` uses: RFC 7677's minimum recommendation (PostgreSQL's too).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Fewer iterations are refused when a file is loaded (RFC 7677 §4: at least 4096 for new entries;
/// older tools wrote fewer, and 1,000 is RFC 5802's own floor).
const MIN_ITERATIONS: u32 = 1000;
/// More would make one login cost minutes.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Random bytes of a new salt.
const SALT_BYTES: usize = 16;

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// One user's SCRAM-SHA-256 credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramCredentials {
    /// The credentials of `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Reads an entry (`SCRAM-SHA-256$...`); the reason when it is not one. Cheap: no hashing.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let malformed = |what: &str| {
            format!(
                "malformed SCRAM-SHA-256 entry ({what}): expected \
                 'SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>'"
            )
        };
        let rest = entry
            .strip_prefix(SCRAM_PREFIX)
            .ok_or_else(|| malformed("prefix"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| malformed("fields"))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| malformed("fields"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| malformed("fields"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| malformed("iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "SCRAM-SHA-256 iteration count {iterations} is not from {MIN_ITERATIONS} to \
                 {MAX_ITERATIONS}"
            ));
        }
        let salt = BASE64.decode(salt).map_err(|_| malformed("salt"))?;
        if salt.is_empty() {
            return Err(malformed("empty salt"));
        }
        let key = |text: &str, what: &str| -> Result<[u8; 32], String> {
            BASE64
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| malformed(what))
        };
        Ok(ScramCredentials {
            iterations,
            salt,
            stored_key: key(stored, "StoredKey")?,
            server_key: key(server, "ServerKey")?,
        })
    }

    /// The entry's text.
    pub fn format(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Whether `password` is the one these credentials were made of (a plain CONNECT password
    /// checked against a SCRAM entry). Costs the PBKDF2 iterations: not for an event loop.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let again = Self::derive(password, &self.salt, self.iterations);
        constant_time_eq(&again.stored_key, &self.stored_key)
    }
}

/// A new entry for `password`, with a random salt and [`SCRAM_ITERATIONS`].
pub fn hash_scram(password: &[u8]) -> std::io::Result<String> {
    let mut salt = [0u8; SALT_BYTES];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
    Ok(ScramCredentials::derive(password, &salt, SCRAM_ITERATIONS).format())
}

/// Compares without stopping at the first difference (timing tells nothing about where).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil", salt `W22ZaJ0SNY7soEsUEjb6gQ==`, 4096
    /// iterations (the exchange in `plugins/scram/tests.rs` checks the keys against the RFC's
    /// client proof).
    fn rfc7677() -> ScramCredentials {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        ScramCredentials::derive(b"pencil", &salt, 4096)
    }

    #[test]
    fn entries_round_trip_and_verify_their_password() {
        let credentials = rfc7677();
        let text = credentials.format();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert_eq!(ScramCredentials::parse(&text), Ok(credentials.clone()));
        assert!(credentials.verify_password(b"pencil"));
        assert!(!credentials.verify_password(b"pencil2"));
        let fresh = hash_scram(b"hunter2").expect("urandom");
        let parsed = ScramCredentials::parse(&fresh).expect("parses");
        assert!(parsed.verify_password(b"hunter2"));
        assert_ne!(parsed.salt, credentials.salt);
    }

    #[test]
    fn malformed_entries_say_why() {
        let good = rfc7677().format();
        for (bad, why) in [
            ("SCRAM-SHA-256$4096:c2FsdA==", "fields"),
            (&good.replacen("4096", "x", 1), "iteration count"),
            (&good.replacen("4096", "10", 1), "is not from 1000"),
            (&good.replacen("W22Z", "!!!!", 1), "salt"),
            (&format!("{good}AAAA"), "ServerKey"),
        ] {
            let error = ScramCredentials::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
