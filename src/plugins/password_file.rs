//! The password file: `user:hash` lines, as Mosquitto's `password_file` and aMQTT's `auth_file`
//! read them. The hashes in it (argon2, bcrypt, SHA-512/SHA-256 crypt) are `password_file/hashes.rs`.
//!
//! ```text
//! # comments and blank lines are allowed
//! alice:$argon2id$v=19$m=65536,t=3,p=4$...     <- `amqtt_passwd`, aMQTT 0.12's helper (argon2-cffi)
//! bob:$2b$12$...                              <- bcrypt (passlib, Python's `bcrypt`)
//! carol:$6$S0mYGlv.umx7vhDV$lYrjBo6sQdGG...   <- `mkpasswd -m sha-512`, `amqtt_passwd --sha512`
//! dave:$6$rounds=656000$7q5woVbd0edZzaJx$...  <- aMQTT up to 0.11 (passlib); explicit rounds are fine
//! erin:SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>  <- `amqtt_passwd --scram`: also MQTT 5 SCRAM
//! ```
//!
//! Anything else (plain text, a scheme that is not read, a malformed hash, a line without `:`, a
//! user listed twice) fails at load time with `file:line` and the reason (the scheme's name for an
//! unsupported one), so a typo never turns into a user who silently cannot log in.
//!
//! Verifying a hash costs milliseconds to hundreds of milliseconds on purpose: callers on an
//! event loop must not call [`verify`]; the `auth_file` plugin runs it on a helper thread.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

mod hashes;
pub mod scram;

pub use scram::{hash_scram, ScramCredentials};

pub use hashes::{
    check_hash, hash_argon2id, hash_argon2id_with, hash_password, hash_sha512, hash_sha512_with,
    verify, Scheme, ARGON2_LANES, ARGON2_MEMORY_KIB, ARGON2_PASSES,
};

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, String>,
    /// The hash of the file's first user: what an unknown user's password is verified against,
    /// so that the answer takes as long as for a user who exists (the result is thrown away).
    first_hash: Option<String>,
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
        let mut first_hash = None;
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
            first_hash.get_or_insert_with(|| hash.to_string());
        }
        Ok(PasswordFile { users, first_hash })
    }

    /// The stored hash of `user`.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// A hash of the file's scheme and cost (its first user's), to verify an unknown user's
    /// password against so that refusing them costs what refusing a known user costs.
    pub fn decoy_hash(&self) -> Option<&str> {
        self.first_hash.as_deref()
    }

    /// The users it lists, in no order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
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
    fn parses_entries_comments_and_blank_lines() {
        let text = format!(
            "# users\n\nalice:{MKPASSWD_HUNTER2}\n   \n  # indented comment\nbob:{MKPASSWD_SECRET}\r\n"
        );
        let file = PasswordFile::parse(&text, "passwd").expect("parses");
        assert_eq!(file.len(), 2);
        assert_eq!(file.hash_of("alice"), Some(MKPASSWD_HUNTER2));
        assert_eq!(file.hash_of("bob"), Some(MKPASSWD_SECRET));
        assert_eq!(file.hash_of("carol"), None);
        assert_eq!(
            file.decoy_hash(),
            Some(MKPASSWD_HUNTER2),
            "the first user's"
        );
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
        let (line, reason) = malformed(&format!("{good}bob:$7$101$c2FsdA$aGFzaA==\n"));
        assert_eq!(line, 2);
        assert!(
            reason.contains("unsupported password hash scheme '$7$' (Mosquitto 2's PBKDF2-SHA512)"),
            "{reason}"
        );
        let (_, reason) = malformed("bob:$2b$12$abcdefghijklmnopqrstuv\n");
        assert!(reason.contains("malformed bcrypt hash"), "{reason}");
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
