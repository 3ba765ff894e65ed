//! `auth_file`: aMQTT's `FileAuthPlugin` (and Mosquitto's `password_file`): users and password
//! hashes (argon2, bcrypt, SHA-512/SHA-256 crypt: `password_file`) from `auth.password-file`.
//!
//! - no user name: abstains (the `auth_anonymous` plugin and `allow-anonymous` decide);
//! - a user name without a password, an unknown user or a wrong password: denies (CONNACK 0x05);
//! - the right password: allows.
//!
//! Cost: a hash verification takes milliseconds (SHA-512 crypt, 5,000 rounds) to tens or hundreds
//! of milliseconds (argon2 with aMQTT's parameters, bcrypt cost 12) by design, so it runs in
//! [`AuthPlugin::authenticate`], which the runtime calls on a helper thread. An unknown user costs
//! the same as a wrong password (the file's first hash is verified and the result thrown away), so
//! timing does not reveal who exists.
//! Once a user's password has been verified, a salted SHA-512 of (user, password) is remembered
//! (never the password), and the next login with the same password is answered by
//! [`AuthPlugin::quick_decision`] in about a microsecond, on the event loop: a reconnect storm of
//! known clients costs no hashing. The file is read once, at start.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha512};

use super::password_file::{self, PasswordFile, PasswordFileError};
use super::{AuthDecision, AuthPlugin, BoxError, Credentials, ScramSha256};

/// Verified credentials remembered at most; the cache is emptied when it is full.
const CACHE_CAPACITY: usize = 65_536;
/// Verified for unknown users when the file has no user at all (the password of this hash is
/// random and was thrown away).
const DUMMY_HASH: &str = "$6$q7B1spv3mvdkwgh6$Mye./1JP2erxMVYUFflzqBtkBC3S6lAGo0JA0prC5B1YhpMp/YzVKf2sV3WJoXIM8YINxZuIObEe9P1XvvoJb1";

/// The built-in `auth_file` plugin.
pub struct FileAuth {
    users: PasswordFile,
    /// User → salted digest of the last password verified for them.
    verified: Mutex<HashMap<String, [u8; 64]>>,
    /// Random per process, so digests in memory cannot be looked up in a precomputed table.
    /// `None` (no randomness available) disables the cache.
    cache_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for FileAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl FileAuth {
    pub const NAME: &'static str = "auth_file";

    /// Reads and checks the password file.
    pub fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let users = PasswordFile::load(path)?;
        log::info!(
            "{} user(s) loaded from password file {}",
            users.len(),
            path.display()
        );
        Ok(Self::new(users))
    }

    pub fn new(users: PasswordFile) -> Self {
        let mut key = [0u8; 32];
        let cache_key = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map(|()| key)
            .map_err(|e| log::warn!("auth_file: no randomness ({e}); not caching verified logins"))
            .ok();
        FileAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            cache_key,
        }
    }

    /// The `SCRAM-SHA-256` enhanced authentication method for the file's SCRAM entries; `None`
    /// when it has none.
    pub fn scram_method(&self) -> std::io::Result<Option<ScramSha256>> {
        let method = ScramSha256::new(&self.users)?;
        if !method.is_empty() {
            log::info!(
                "{} user(s) of the password file can use SCRAM-SHA-256",
                method.len()
            );
        }
        Ok((!method.is_empty()).then_some(method))
    }

    fn digest(&self, user: &str, password: &[u8]) -> Option<[u8; 64]> {
        let key = self.cache_key?;
        let mut hasher = Sha512::new();
        hasher.update(key);
        hasher.update((user.len() as u64).to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update(password);
        Some(hasher.finalize().into())
    }

    fn remembered(&self, user: &str, password: &[u8]) -> bool {
        let Some(digest) = self.digest(user, password) else {
            return false;
        };
        let Ok(cache) = self.verified.lock() else {
            return false;
        };
        cache
            .get(user)
            .is_some_and(|known| constant_time_eq(known, &digest))
    }

    fn remember(&self, user: &str, password: &[u8]) {
        let Some(digest) = self.digest(user, password) else {
            return;
        };
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= CACHE_CAPACITY && !cache.contains_key(user) {
                cache.clear();
            }
            cache.insert(user.to_string(), digest);
        }
    }
}

impl AuthPlugin for FileAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn quick_decision(&self, credentials: &Credentials) -> Option<AuthDecision> {
        let Some(user) = &credentials.username else {
            return Some(AuthDecision::Abstain);
        };
        let Some(password) = &credentials.password else {
            return Some(AuthDecision::Deny);
        };
        if self.users.hash_of(user).is_some() && self.remembered(user, password) {
            return Some(AuthDecision::Allow);
        }
        None
    }

    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        let Some(user) = &credentials.username else {
            return Ok(AuthDecision::Abstain);
        };
        let Some(password) = &credentials.password else {
            return Ok(AuthDecision::Deny);
        };
        let Some(hash) = self.users.hash_of(user) else {
            let decoy = self.users.decoy_hash().unwrap_or(DUMMY_HASH);
            let _ = password_file::verify(password, decoy);
            log::debug!("auth_file: unknown user '{user}'");
            return Ok(AuthDecision::Deny);
        };
        if password_file::verify(password, hash) {
            self.remember(user, password);
            Ok(AuthDecision::Allow)
        } else {
            log::debug!("auth_file: wrong password for user '{user}'");
            Ok(AuthDecision::Deny)
        }
    }
}

fn constant_time_eq(a: &[u8; 64], b: &[u8; 64]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// `mkpasswd -m sha-512 -S saltsaltsaltsalt hunter2`.
    const HUNTER2: &str = "$6$saltsaltsaltsalt$dJX0KuyM7nCXuBPN.nYtdrJDotQEB1rFBumzix6FHzliKxLBinGY49pMJNvCoNf9fHmNyZ1IgX/glbcKhuXoh.";

    fn plugin() -> FileAuth {
        FileAuth::new(PasswordFile::parse(&format!("alice:{HUNTER2}\n"), "test").expect("file"))
    }

    fn creds(user: Option<&str>, password: Option<&str>) -> Credentials {
        Credentials {
            client_id: "c".into(),
            username: user.map(Into::into),
            password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            ..Credentials::default()
        }
    }

    #[test]
    fn dummy_hash_is_well_formed() {
        password_file::check_hash(DUMMY_HASH).expect("well-formed");
    }

    #[test]
    fn decides_by_user_and_password() {
        let p = plugin();
        let decide = |c: Credentials| p.authenticate(&c).expect("no error");
        assert_eq!(
            decide(creds(Some("alice"), Some("hunter2"))),
            AuthDecision::Allow
        );
        assert_eq!(
            decide(creds(Some("alice"), Some("hunter3"))),
            AuthDecision::Deny
        );
        assert_eq!(decide(creds(Some("alice"), None)), AuthDecision::Deny);
        assert_eq!(
            decide(creds(Some("mallory"), Some("hunter2"))),
            AuthDecision::Deny
        );
        assert_eq!(decide(creds(None, None)), AuthDecision::Abstain);
    }

    #[test]
    fn argon2_and_bcrypt_users_log_in_and_are_remembered() {
        let argon2 = password_file::hash_argon2id(b"wonderland").expect("hash");
        let bcrypt = bcrypt::hash_with_salt("builder", 4, *b"0123456789abcdef")
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoB);
        let file = format!("alice:{argon2}\nbob:{bcrypt}\ncarol:{HUNTER2}\n");
        let p = FileAuth::new(PasswordFile::parse(&file, "test").expect("file"));
        for (user, password) in [
            ("alice", "wonderland"),
            ("bob", "builder"),
            ("carol", "hunter2"),
        ] {
            let good = creds(Some(user), Some(password));
            assert_eq!(
                p.authenticate(&good).ok(),
                Some(AuthDecision::Allow),
                "{user}"
            );
            assert_eq!(p.quick_decision(&good), Some(AuthDecision::Allow), "{user}");
            let bad = creds(Some(user), Some("hunter3"));
            assert_eq!(
                p.authenticate(&bad).ok(),
                Some(AuthDecision::Deny),
                "{user}"
            );
        }
        let unknown = creds(Some("mallory"), Some("wonderland"));
        assert_eq!(p.authenticate(&unknown).ok(), Some(AuthDecision::Deny));
    }

    #[test]
    fn a_verified_password_is_answered_quickly_next_time() {
        let p = plugin();
        let good = creds(Some("alice"), Some("hunter2"));
        assert_eq!(p.quick_decision(&good), None, "not verified yet");
        assert_eq!(p.authenticate(&good).ok(), Some(AuthDecision::Allow));
        assert_eq!(p.quick_decision(&good), Some(AuthDecision::Allow));
        // Another password for the same user still goes the slow way (and fails).
        let bad = creds(Some("alice"), Some("hunter3"));
        assert_eq!(p.quick_decision(&bad), None);
        assert_eq!(p.authenticate(&bad).ok(), Some(AuthDecision::Deny));
        // A failure does not evict the good entry.
        assert_eq!(p.quick_decision(&good), Some(AuthDecision::Allow));
        // Cheap cases are always quick.
        assert_eq!(
            p.quick_decision(&creds(None, None)),
            Some(AuthDecision::Abstain)
        );
        assert_eq!(
            p.quick_decision(&creds(Some("alice"), None)),
            Some(AuthDecision::Deny)
        );
    }
}
