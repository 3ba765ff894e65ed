//! The password file: `user:hash` lines, as Mosquitto's `password_file` and aMQTT's `auth_file`
//! read them, and the hashes in it.
//!
//! ```text
//! # comments and blank lines are allowed
//! alice:$6$S0mYGlv.umx7vhDV$lYrjBo6sQdGG...   <- `mkpasswd -m sha-512`, or `amqtt_passwd`
//! bob:$6$rounds=10000$saltsalt$...            <- explicit rounds are fine
//! ```
//!
//! Hashes are SHA-512 crypt (`$6$`, what `mkpasswd -m sha-512` and `amqtt_passwd` write) or
//! SHA-256 crypt (`$5$`), verified with the `sha-crypt` crate. Anything else (plain text, bcrypt,
//! argon2, a line without `:`, a user listed twice) fails at load time with `file:line`, so a typo
//! never turns into a user who silently cannot log in.
//!
//! Verifying a hash costs milliseconds on purpose (5,000 rounds by default): callers on an event
//! loop must not call [`verify`]; the `auth_file` plugin runs it on a helper thread.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use sha_crypt::password_hash::{CustomizedPasswordHasher, PasswordVerifier};
use sha_crypt::{Params, ShaCrypt};

/// The alphabet of crypt(3) salts and digests.
const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the encoded digest of `$6$` and `$5$` hashes.
const SHA512_DIGEST_CHARS: usize = 86;
const SHA256_DIGEST_CHARS: usize = 43;
/// Random bytes of a new salt: 12 bytes are 16 crypt characters, the longest salt crypt(3) uses.
const SALT_BYTES: usize = 12;

/// Why a password file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("{path}: cannot read the password file: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Malformed {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The users of a password file and their hashes.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, String>,
}

impl PasswordFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Checks the text of a password file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PasswordFileError> {
        let mut users: HashMap<String, String> = HashMap::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let malformed = |reason: String| PasswordFileError::Malformed {
                path: origin.to_string(),
                line: line_no,
                reason,
            };
            let Some((user, hash)) = parse_line(raw).map_err(malformed)? else {
                continue;
            };
            if let Some(first) = first_seen.get(user) {
                return Err(malformed(format!(
                    "user '{user}' is listed twice (first on line {first})"
                )));
            }
            first_seen.insert(user.to_string(), line_no);
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(PasswordFile { users })
    }

    /// The stored hash of `user`.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One line of a password file: `Ok(None)` for a blank line or a comment, `Ok(Some((user, hash)))`
/// for an entry, `Err(reason)` for anything else.
pub fn parse_line(raw: &str) -> Result<Option<(&str, &str)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let Some((user, hash)) = line.split_once(':') else {
        return Err("expected 'user:hash'".to_string());
    };
    check_username(user)?;
    check_hash(hash)?;
    Ok(Some((user, hash)))
}

/// A user name that fits in a password file line.
pub fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".to_string());
    }
    if user.contains(':') {
        return Err(format!("user name '{user}' contains ':'"));
    }
    if user.chars().any(char::is_control) {
        return Err("user name contains a control character".to_string());
    }
    if user.trim() != user || user.starts_with('#') {
        return Err(format!(
            "user name '{user}' starts or ends with a space, or starts with '#'"
        ));
    }
    if user.len() > usize::from(u16::MAX) {
        return Err("user name longer than 65,535 bytes".to_string());
    }
    Ok(())
}

/// Checks that `hash` is a SHA-512 or SHA-256 crypt string, without the (slow) hashing.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let unsupported = || {
        format!(
            "unsupported password hash '{}': only SHA-512 crypt ('$6$...', from `mkpasswd -m sha-512` \
             or `amqtt_passwd`) and SHA-256 crypt ('$5$...') are supported",
            preview(hash)
        )
    };
    let Some(rest) = hash.strip_prefix('$') else {
        return Err(if hash.is_empty() {
            "empty password hash".to_string()
        } else {
            "the password is not hashed: write hashes with `amqtt_passwd` or `mkpasswd -m sha-512`"
                .to_string()
        });
    };
    let mut fields: Vec<&str> = rest.split('$').collect();
    let digest_chars = match fields.first() {
        Some(&"6") => SHA512_DIGEST_CHARS,
        Some(&"5") => SHA256_DIGEST_CHARS,
        _ => return Err(unsupported()),
    };
    fields.remove(0);
    if let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        match rounds.parse::<u32>() {
            Ok(n) if (Params::ROUNDS_MIN..=Params::ROUNDS_MAX).contains(&n) => {}
            _ => {
                return Err(format!(
                    "'rounds={rounds}' must be a number from {} to {}",
                    Params::ROUNDS_MIN,
                    Params::ROUNDS_MAX
                ))
            }
        }
        fields.remove(0);
    }
    let [salt, digest] = fields.as_slice() else {
        return Err(format!(
            "malformed hash '{}': expected '$6$salt$digest'",
            preview(hash)
        ));
    };
    if salt.is_empty() || !salt.bytes().all(|b| CRYPT_ALPHABET.contains(&b)) {
        return Err(format!("malformed salt in hash '{}'", preview(hash)));
    }
    if digest.len() != digest_chars || !digest.bytes().all(|b| CRYPT_ALPHABET.contains(&b)) {
        return Err(format!(
            "malformed digest in hash '{}': expected {digest_chars} characters of [./0-9A-Za-z]",
            preview(hash)
        ));
    }
    Ok(())
}

/// The start of a hash, for error messages (never the whole digest).
fn preview(hash: &str) -> String {
    let mut out: String = hash.chars().take(12).collect();
    if hash.chars().count() > 12 {
        out.push_str("...");
    }
    out
}

/// Whether `password` matches a `$6$` / `$5$` hash. Costs milliseconds: not for an event loop.
pub fn verify(password: &[u8], hash: &str) -> bool {
    ShaCrypt::default().verify_password(password, hash).is_ok()
}

/// A new SHA-512 crypt hash of `password` with a random 16-character salt and the default 5,000
/// rounds, in the form `mkpasswd -m sha-512` writes: `$6$<salt>$<86 characters>`.
pub fn hash_password(password: &[u8]) -> std::io::Result<String> {
    let mut salt = [0u8; SALT_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    hash_password_with(password, &salt, Params::RECOMMENDED_ROUNDS)
}

/// [`hash_password`] with the salt's bytes and the rounds given (1,000 to 999,999,999; more
/// rounds make each verification slower, for logins and for attackers alike).
pub fn hash_password_with(password: &[u8], salt: &[u8], rounds: u32) -> std::io::Result<String> {
    let params =
        Params::new(rounds).map_err(|e| std::io::Error::other(format!("rounds={rounds}: {e}")))?;
    let hash = ShaCrypt::default()
        .hash_password_customized(password, salt, None, None, params)
        .map_err(|e| std::io::Error::other(format!("cannot hash the password: {e}")))?;
    // The crate always writes the rounds; crypt(3) omits the default, and so does `mkpasswd`.
    // Both forms verify the same (explicit 5,000 rounds hash exactly like the default).
    let text = hash.to_string();
    let default_rounds = format!("$rounds={}$", Params::RECOMMENDED_ROUNDS);
    Ok(text.replacen(&default_rounds, "$", 1))
}

/// A password file line for `user`.
pub fn format_line(user: &str, hash: &str) -> String {
    let mut line = String::with_capacity(user.len() + hash.len() + 2);
    let _ = write!(line, "{user}:{hash}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `mkpasswd -m sha-512 -S saltsaltsaltsalt hunter2` (Debian's `whois` package).
    const MKPASSWD_HUNTER2: &str = "$6$saltsaltsaltsalt$dJX0KuyM7nCXuBPN.nYtdrJDotQEB1rFBumzix6FHzliKxLBinGY49pMJNvCoNf9fHmNyZ1IgX/glbcKhuXoh.";
    /// Made by `echo -n secret | mkpasswd -m sha-512 -s` (random salt).
    const MKPASSWD_SECRET: &str = "$6$S0mYGlv.umx7vhDV$lYrjBo6sQdGGN8mVEroBevJU8JdXWj.EPujeY7ULnNUR5mBKVbpQHWUzyTvvJiDT.1HkiOb5bQ3VJDCCIdQ8L/";

    #[test]
    fn verifies_hashes_made_by_mkpasswd() {
        assert!(verify(b"hunter2", MKPASSWD_HUNTER2));
        assert!(!verify(b"hunter3", MKPASSWD_HUNTER2));
        assert!(!verify(b"", MKPASSWD_HUNTER2));
        assert!(verify(b"secret", MKPASSWD_SECRET));
        assert!(!verify(b"Secret", MKPASSWD_SECRET));
    }

    #[test]
    fn new_hashes_look_like_mkpasswd_output_and_verify() {
        let hash = hash_password(b"pa:ss word").expect("hash");
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(!hash.contains("rounds="), "{hash}");
        check_hash(&hash).expect("well-formed");
        let salt = hash.split('$').nth(2).expect("salt");
        assert_eq!(salt.len(), 16);
        assert!(verify(b"pa:ss word", &hash));
        assert!(!verify(b"pa:ss wore", &hash));
        assert_ne!(
            hash,
            hash_password(b"pa:ss word").expect("hash"),
            "salts differ"
        );
    }

    #[test]
    fn custom_rounds_are_written_and_verified() {
        let hash = hash_password_with(b"pw", b"0123456789ab", 2000).expect("hash");
        assert!(hash.starts_with("$6$rounds=2000$"), "{hash}");
        check_hash(&hash).expect("well-formed");
        assert!(verify(b"pw", &hash));
        assert!(hash_password_with(b"pw", b"0123456789ab", 10).is_err());
    }

    #[test]
    fn explicit_default_rounds_hash_like_implicit_ones() {
        let explicit = MKPASSWD_HUNTER2.replacen("$6$", "$6$rounds=5000$", 1);
        check_hash(&explicit).expect("well-formed");
        assert!(verify(b"hunter2", &explicit));
    }

    #[test]
    fn parses_entries_comments_and_blank_lines() {
        let text = format!(
            "# users\n\nalice:{MKPASSWD_HUNTER2}\n   \n  # indented comment\nbob:{MKPASSWD_SECRET}\r\n"
        );
        let file = PasswordFile::parse(&text, "passwd").expect("parses");
        assert_eq!(file.len(), 2);
        assert_eq!(file.hash_of("alice"), Some(MKPASSWD_HUNTER2));
        assert_eq!(file.hash_of("bob"), Some(MKPASSWD_SECRET));
        assert_eq!(file.hash_of("carol"), None);
        assert!(PasswordFile::parse("", "empty").expect("empty").is_empty());
    }

    fn malformed(text: &str) -> (usize, String) {
        match PasswordFile::parse(text, "etc/passwd") {
            Err(PasswordFileError::Malformed { path, line, reason }) => {
                assert_eq!(path, "etc/passwd");
                (line, reason)
            }
            other => panic!("expected a malformed-line error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        let good = format!("alice:{MKPASSWD_HUNTER2}\n");
        let (line, reason) = malformed(&format!("{good}\njust-a-name\n"));
        assert_eq!((line, reason.as_str()), (3, "expected 'user:hash'"));
        let (line, reason) = malformed(&format!("{good}bob:plaintext\n"));
        assert_eq!(line, 2);
        assert!(reason.contains("not hashed"), "{reason}");
        let (_, reason) = malformed("bob:$2b$12$abcdefghijklmnopqrstuv\n");
        assert!(reason.contains("unsupported password hash"), "{reason}");
        let (_, reason) = malformed(":$6$salt$abc\n");
        assert!(reason.contains("empty user name"), "{reason}");
        let (_, reason) = malformed("bob:$6$salt$tooshort\n");
        assert!(reason.contains("malformed digest"), "{reason}");
        let (_, reason) = malformed(&MKPASSWD_HUNTER2.replacen("$6$", "bob:$6$rounds=10$", 1));
        assert!(reason.contains("rounds=10"), "{reason}");
        let (line, reason) = malformed(&format!("{good}{good}"));
        assert_eq!(line, 2);
        assert!(
            reason.contains("listed twice (first on line 1)"),
            "{reason}"
        );
        let (_, reason) = malformed("bob:\n");
        assert!(reason.contains("empty password hash"), "{reason}");
    }

    #[test]
    fn error_messages_do_not_print_whole_digests() {
        let (_, reason) = malformed(&format!("bob:{}x\n", MKPASSWD_HUNTER2));
        assert!(!reason.contains("dJX0KuyM7"), "{reason}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let error = PasswordFile::load(Path::new("/nonexistent/amqtt-passwd")).unwrap_err();
        assert!(matches!(error, PasswordFileError::Io { .. }));
        assert!(
            error.to_string().starts_with("/nonexistent/amqtt-passwd: "),
            "{error}"
        );
    }
}
