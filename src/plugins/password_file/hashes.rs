//! The password hashes a password file may hold: which schemes, how each is checked when the file
//! is loaded (cheap, no hashing), verified (slow on purpose) and written. Knows no files and no
//! users: that is `password_file.rs`.
//!
//! | scheme | looks like | written by |
//! |---|---|---|
//! | argon2id, argon2i, argon2d | `$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>` (PHC string) | aMQTT 0.12's documented helper (argon2-cffi's `PasswordHasher()`), pwdlib, passlib's `argon2`, `amqtt_passwd` (default) |
//! | bcrypt | `$2b$12$<22 characters of salt><31 of hash>`, also `$2a$`, `$2y$` | passlib's `bcrypt`, Python's `bcrypt`, `htpasswd -B` |
//! | SHA-512 crypt | `$6$[rounds=N$]<salt>$<86 characters>` | `mkpasswd -m sha-512`, `openssl passwd -6`, aMQTT up to 0.11 (passlib, `rounds=656000`), `amqtt_passwd --sha512` |
//! | SHA-256 crypt | `$5$[rounds=N$]<salt>$<43 characters>` | `mkpasswd -m sha-256`, `openssl passwd -5` |
//! | SCRAM-SHA-256 | `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>` (RFC 5803) | `amqtt_passwd --scram` (`scram.rs`); also MQTT 5 enhanced authentication |
//!
//! Anything else is refused by [`check_hash`] with the scheme's name (`$1$`, `$y$`, Mosquitto 2's
//! `$7$`, ...), so a file never loads with a user who could not log in. Whatever [`check_hash`]
//! accepts, [`verify`] can verify: a `false` from it means a wrong password, never a bad hash.
//!
//! Costs are the hash's own (its parameters are in it): argon2 with aMQTT's parameters needs
//! 64 MiB and tens of milliseconds per verification, bcrypt cost 12 a few hundred milliseconds,
//! SHA-512 crypt a few milliseconds at 5,000 rounds. Never call [`verify`] on an event loop.
//! bcrypt reads at most the first 72 bytes of a password (every implementation does).

use std::io::Read;

use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use sha_crypt::password_hash::CustomizedPasswordHasher;
use sha_crypt::{Params as ShaParams, ShaCrypt};

use super::scram::{ScramCredentials, SCRAM_PREFIX};

/// The alphabet of crypt(3) salts and digests.
const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the encoded digest of `$6$` and `$5$` hashes.
const SHA512_DIGEST_CHARS: usize = 86;
const SHA256_DIGEST_CHARS: usize = 43;
/// Random bytes of a new SHA-crypt salt: 12 bytes are 16 crypt characters, the longest salt
/// crypt(3) uses.
const SHA_SALT_BYTES: usize = 12;
/// A bcrypt hash: `$2b$` + two cost digits + `$` + 22 characters of salt + 31 of hash.
const BCRYPT_LEN: usize = 60;
const BCRYPT_SALT_CHARS: usize = 22;
/// bcrypt's base64 alphabet: crypt(3)'s characters in another order.
const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The argon2 parameters `amqtt_passwd` writes: argon2-cffi's `PasswordHasher()` defaults (RFC
/// 9106's second recommended option), which is what aMQTT 0.12's documentation tells users to
/// run, and what passlib's `argon2` writes too: argon2id, version 19, 64 MiB, 3 passes, 4 lanes,
/// a 16-byte salt and a 32-byte hash.
pub const ARGON2_MEMORY_KIB: u32 = 65_536;
pub const ARGON2_PASSES: u32 = 3;
pub const ARGON2_LANES: u32 = 4;
const ARGON2_SALT_BYTES: usize = 16;
const ARGON2_HASH_BYTES: usize = 32;

/// A hash scheme a password file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2id,
    Argon2i,
    Argon2d,
    Bcrypt,
    Sha512Crypt,
    Sha256Crypt,
    ScramSha256,
}

impl Scheme {
    /// The scheme's usual name (passlib's, for the crypt ones).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Argon2d => "argon2d",
            Scheme::Bcrypt => "bcrypt",
            Scheme::Sha512Crypt => "sha512_crypt",
            Scheme::Sha256Crypt => "sha256_crypt",
            Scheme::ScramSha256 => "scram-sha-256",
        }
    }
}

/// The schemes that are read, for error messages.
const SUPPORTED: &str = "argon2id/argon2i/argon2d ('$argon2id$...', aMQTT 0.12), bcrypt \
     ('$2b$', '$2a$', '$2y$'), SHA-512 crypt ('$6$'), SHA-256 crypt ('$5$') and SCRAM-SHA-256 ('SCRAM-SHA-256$...', \
     `amqtt_passwd --scram`)";

/// The scheme a hash names in its first `$...$` field, if it is one that is read.
fn scheme_of(hash: &str) -> Option<Scheme> {
    if hash.starts_with(SCRAM_PREFIX) {
        return Some(Scheme::ScramSha256);
    }
    let id = hash.strip_prefix('$')?.split('$').next()?;
    Some(match id {
        "argon2id" => Scheme::Argon2id,
        "argon2i" => Scheme::Argon2i,
        "argon2d" => Scheme::Argon2d,
        "2a" | "2b" | "2y" => Scheme::Bcrypt,
        "6" => Scheme::Sha512Crypt,
        "5" => Scheme::Sha256Crypt,
        _ => return None,
    })
}

/// Checks that `hash` is a hash of a supported scheme that [`verify`] can verify, and says which
/// scheme it is. Cheap: no hashing.
pub fn check_hash(hash: &str) -> Result<Scheme, String> {
    if hash.starts_with(SCRAM_PREFIX) {
        return ScramCredentials::parse(hash).map(|_| Scheme::ScramSha256);
    }
    let Some(rest) = hash.strip_prefix('$') else {
        return Err(if hash.is_empty() {
            "empty password hash".to_string()
        } else {
            "the password is not hashed: write hashes with `amqtt_passwd`".to_string()
        });
    };
    let Some(scheme) = scheme_of(hash) else {
        let id = rest.split('$').next().unwrap_or_default();
        // Scheme names are short words (`pbkdf2-sha256`); anything else may be a secret.
        let name_like =
            id.len() <= 24 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        return Err(format!(
            "unsupported password hash scheme '${}$'{}: supported are {SUPPORTED}; \
             write one with `amqtt_passwd`",
            if name_like {
                id.to_string()
            } else {
                preview(id)
            },
            known_unsupported(id)
                .map(|name| format!(" ({name})"))
                .unwrap_or_default()
        ));
    };
    match scheme {
        Scheme::Sha512Crypt => check_sha_crypt(hash, SHA512_DIGEST_CHARS),
        Scheme::Sha256Crypt => check_sha_crypt(hash, SHA256_DIGEST_CHARS),
        Scheme::Argon2id | Scheme::Argon2i | Scheme::Argon2d => check_argon2(hash),
        Scheme::Bcrypt => check_bcrypt(hash),
        Scheme::ScramSha256 => Ok(()),
    }?;
    Ok(scheme)
}

/// What an unsupported scheme identifier usually is, to tell the user what they have.
fn known_unsupported(id: &str) -> Option<&'static str> {
    Some(match id {
        "1" => "MD5 crypt",
        "apr1" => "Apache's MD5",
        "2x" => "bcrypt with crypt_blowfish's 8-bit bug",
        "y" | "gy" => "yescrypt",
        "7" => "Mosquitto 2's PBKDF2-SHA512",
        "scrypt" => "passlib's scrypt",
        "pbkdf2" | "pbkdf2-sha256" | "pbkdf2-sha512" => "passlib's PBKDF2",
        _ => return None,
    })
}

/// The start of a hash, for error messages (never the whole digest).
pub(crate) fn preview(hash: &str) -> String {
    let mut out: String = hash.chars().take(12).collect();
    if hash.chars().count() > 12 {
        out.push_str("...");
    }
    out
}

fn check_sha_crypt(hash: &str, digest_chars: usize) -> Result<(), String> {
    // `$6$[rounds=N$]salt$digest`: skip the empty field before the first `$` and the id.
    let mut fields: Vec<&str> = hash.split('$').skip(2).collect();
    if let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        match rounds.parse::<u32>() {
            Ok(n) if (ShaParams::ROUNDS_MIN..=ShaParams::ROUNDS_MAX).contains(&n) => {}
            _ => {
                return Err(format!(
                    "'rounds={rounds}' must be a number from {} to {}",
                    ShaParams::ROUNDS_MIN,
                    ShaParams::ROUNDS_MAX
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

fn check_argon2(hash: &str) -> Result<(), String> {
    let malformed =
        |why: &dyn std::fmt::Display| format!("malformed argon2 hash '{}': {why}", preview(hash));
    let parsed = PasswordHash::new(hash).map_err(|e| malformed(&e))?;
    Algorithm::new(parsed.algorithm.as_str()).map_err(|e| malformed(&e))?;
    // Without `v=` the hash is of Argon2 1.0 (0x10); nothing current writes that: refused rather
    // than guessed.
    let version = parsed
        .version
        .ok_or_else(|| malformed(&"no 'v=' (version 19 is expected)"))?;
    Version::try_from(version).map_err(|e| malformed(&e))?;
    argon2::Params::try_from(&parsed).map_err(|e| malformed(&e))?;
    match (&parsed.salt, &parsed.hash) {
        (Some(_), Some(_)) => Ok(()),
        _ => Err(malformed(&"no salt or no hash")),
    }
}

fn check_bcrypt(hash: &str) -> Result<(), String> {
    let malformed = |why: &str| format!("malformed bcrypt hash '{}': {why}", preview(hash));
    if hash.len() != BCRYPT_LEN || !hash.is_ascii() {
        return Err(malformed("expected 60 characters ('$2b$12$' and 53 more)"));
    }
    let (cost, salt_and_hash) = (&hash[4..6], &hash[7..]);
    if hash.as_bytes()[6] != b'$' {
        return Err(malformed("expected a two-digit cost after the scheme"));
    }
    match cost.parse::<u32>() {
        Ok(4..=31) if cost.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(malformed("the cost must be 04 to 31")),
    }
    // bcrypt's base64 (its own alphabet order, no padding): 22 characters carry the 16-byte salt
    // and 31 the 23-byte hash, so the last character of each has 4 and 2 unused low bits, which
    // must be zero (the crate decodes strictly; a string it cannot decode would make a user who
    // can never log in).
    let values: Option<Vec<u8>> = salt_and_hash
        .bytes()
        .map(|b| {
            BCRYPT_ALPHABET
                .iter()
                .position(|&a| a == b)
                .map(|v| v as u8)
        })
        .collect();
    let Some(values) = values else {
        return Err(malformed(
            "salt and hash must be characters of [./0-9A-Za-z]",
        ));
    };
    if values[BCRYPT_SALT_CHARS - 1] & 0x0f != 0 || values[values.len() - 1] & 0x03 != 0 {
        return Err(malformed("not canonical bcrypt base64"));
    }
    Ok(())
}

/// Whether `password` matches `hash`, of any scheme [`check_hash`] accepts. Costs milliseconds to
/// hundreds of milliseconds (the hash's parameters decide): not for an event loop.
pub fn verify(password: &[u8], hash: &str) -> bool {
    match scheme_of(hash) {
        Some(Scheme::Sha512Crypt | Scheme::Sha256Crypt) => {
            ShaCrypt::default().verify_password(password, hash).is_ok()
        }
        Some(Scheme::Argon2id | Scheme::Argon2i | Scheme::Argon2d) => {
            Argon2::default().verify_password(password, hash).is_ok()
        }
        Some(Scheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(Scheme::ScramSha256) => ScramCredentials::parse(hash)
            .is_ok_and(|credentials| credentials.verify_password(password)),
        None => false,
    }
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A new hash of `password` in the default scheme, argon2id ([`hash_argon2id`]).
pub fn hash_password(password: &[u8]) -> std::io::Result<String> {
    hash_argon2id(password)
}

/// A new argon2id hash of `password` with a random 16-byte salt and argon2-cffi's default
/// parameters ([`ARGON2_MEMORY_KIB`], ...): the string aMQTT 0.12's documented helper writes.
pub fn hash_argon2id(password: &[u8]) -> std::io::Result<String> {
    hash_argon2id_with(password, &random_bytes::<ARGON2_SALT_BYTES>()?)
}

/// [`hash_argon2id`] with the salt's bytes given (at least 8).
pub fn hash_argon2id_with(password: &[u8], salt: &[u8]) -> std::io::Result<String> {
    let params = argon2::Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_PASSES,
        ARGON2_LANES,
        Some(ARGON2_HASH_BYTES),
    )
    .map_err(|e| std::io::Error::other(format!("argon2 parameters: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password, salt)
        .map(|hash| hash.to_string())
        .map_err(|e| std::io::Error::other(format!("cannot hash the password: {e}")))
}

/// A new SHA-512 crypt hash of `password` with a random 16-character salt and the default 5,000
/// rounds, in the form `mkpasswd -m sha-512` writes: `$6$<salt>$<86 characters>`.
pub fn hash_sha512(password: &[u8]) -> std::io::Result<String> {
    hash_sha512_with(
        password,
        &random_bytes::<SHA_SALT_BYTES>()?,
        ShaParams::RECOMMENDED_ROUNDS,
    )
}

/// [`hash_sha512`] with the salt's bytes and the rounds given (1,000 to 999,999,999; more rounds
/// make each verification slower, for logins and for attackers alike).
pub fn hash_sha512_with(password: &[u8], salt: &[u8], rounds: u32) -> std::io::Result<String> {
    let params = ShaParams::new(rounds)
        .map_err(|e| std::io::Error::other(format!("rounds={rounds}: {e}")))?;
    let hash = ShaCrypt::default()
        .hash_password_customized(password, salt, None, None, params)
        .map_err(|e| std::io::Error::other(format!("cannot hash the password: {e}")))?;
    // The crate always writes the rounds; crypt(3) omits the default, and so does `mkpasswd`.
    // Both forms verify the same (explicit 5,000 rounds hash exactly like the default).
    let text = hash.to_string();
    let default_rounds = format!("$rounds={}$", ShaParams::RECOMMENDED_ROUNDS);
    Ok(text.replacen(&default_rounds, "$", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `mkpasswd -m sha-512 -S saltsaltsaltsalt hunter2` (Debian's `whois` package).
    const MKPASSWD_HUNTER2: &str = "$6$saltsaltsaltsalt$dJX0KuyM7nCXuBPN.nYtdrJDotQEB1rFBumzix6FHzliKxLBinGY49pMJNvCoNf9fHmNyZ1IgX/glbcKhuXoh.";
    /// Made by `echo -n secret | mkpasswd -m sha-512 -s` (random salt).
    const MKPASSWD_SECRET: &str = "$6$S0mYGlv.umx7vhDV$lYrjBo6sQdGGN8mVEroBevJU8JdXWj.EPujeY7ULnNUR5mBKVbpQHWUzyTvvJiDT.1HkiOb5bQ3VJDCCIdQ8L/";
    /// `openssl passwd -6 -salt saltsalt hunter2` (OpenSSL 3).
    const OPENSSL6_HUNTER2: &str = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
    /// `openssl passwd -5 -salt saltsaltsaltsalt hunter2`; passlib's
    /// `sha256_crypt.using(salt="saltsaltsaltsalt", rounds=5000).hash("hunter2")` writes the same.
    const OPENSSL5_HUNTER2: &str =
        "$5$saltsaltsaltsalt$LTm0e1epoLCOhH8WjaKAzYHFbzuOTFXssEJnxJiG5YC";
    /// aMQTT up to 0.11: `passlib.apps.custom_app_context.hash("hunter2")` (passlib 1.7.4).
    const PASSLIB_APP_HUNTER2: &str = "$6$rounds=656000$7q5woVbd0edZzaJx$T6s7H7th6R6lPDbhqFkWSWhMq.Yp1zfVsFxeaq0BYJWP7hdTnXpJs/dzP4AHJCtb4u2rqVv4snDMZb5K3vEls0";
    /// aMQTT 0.12's documented helper, argon2-cffi 25.1.0:
    /// `PasswordHasher().hash("hunter2", salt=b"saltsaltsaltsalt")`; passlib 1.7.4's
    /// `argon2.using(salt=b"saltsaltsaltsalt").hash("hunter2")` writes the same string.
    const ARGON2_CFFI_HUNTER2: &str = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$pPTP3jRT/pIWWzxcv3EAVcpUi/BYRV15jdAXhnnzTak";
    /// pwdlib 0.4.2 (what aMQTT 0.12's `FileAuthPlugin` verifies with):
    /// `pwdlib.hashers.argon2.Argon2Hasher().hash("hunter2")` (random salt).
    const PWDLIB_HUNTER2: &str = "$argon2id$v=19$m=65536,t=3,p=4$NRJpOhVPZEvCOcptpEfFow$QcI78zxknBcp3BLc5hU+cH913WD/Dq2WxVS0THTh8sI";
    /// passlib 1.7.4: `argon2.using(type="i", salt=b"saltsaltsaltsalt").hash("hunter2")`.
    const PASSLIB_ARGON2I_HUNTER2: &str = "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$yOjiIth+h5pkOCNRM6vyUnXHf5ZnRkulIriEOUkiuGg";
    /// argon2-cffi: `PasswordHasher(time_cost=1, memory_cost=1024, parallelism=2,
    /// type=Type.D).hash("hunter2", salt=b"saltsaltsaltsalt")`.
    const ARGON2D_HUNTER2: &str = "$argon2d$v=19$m=1024,t=1,p=2$c2FsdHNhbHRzYWx0c2FsdA$DmrkvBHmX14HGjiq4wyYWTh1Y1RHN7jpVyMv1mvuugM";
    /// passlib 1.7.4 with bcrypt 4.3.0: `bcrypt.using(salt="saltsaltsaltsaltsaltsu",
    /// rounds=4).hash("hunter2")`; Python's `bcrypt.hashpw(b"hunter2",
    /// b"$2b$04$saltsaltsaltsaltsaltsu")` writes the same.
    const BCRYPT_2B_HUNTER2: &str = "$2b$04$saltsaltsaltsaltsaltsucCyT51P6p64olwYITOM1u1RvzRpCdjC";
    /// passlib: `bcrypt.using(ident="2a", salt="saltsaltsaltsaltsaltsu", rounds=5).hash("hunter2")`.
    const BCRYPT_2A_HUNTER2: &str = "$2a$05$saltsaltsaltsaltsaltsuDnVSQEiSRR720/Sb/QnPhzJOamcj.Ti";
    /// passlib: the same with `ident="2y"` (PHP's and `htpasswd -B`'s prefix).
    const BCRYPT_2Y_HUNTER2: &str = "$2y$05$saltsaltsaltsaltsaltsuDnVSQEiSRR720/Sb/QnPhzJOamcj.Ti";
    /// passlib: `bcrypt.hash("hunter2")` (random salt, cost 12).
    const PASSLIB_BCRYPT12_HUNTER2: &str =
        "$2b$12$/GZjDS2FtMN43IYJQol98eSRHR0N8DdI2tYKRsXb85m/AejKDd9Ra";

    #[test]
    fn verifies_hashes_made_by_the_real_tools() {
        for (hash, scheme) in [
            (MKPASSWD_HUNTER2, Scheme::Sha512Crypt),
            (OPENSSL6_HUNTER2, Scheme::Sha512Crypt),
            (OPENSSL5_HUNTER2, Scheme::Sha256Crypt),
            (PASSLIB_APP_HUNTER2, Scheme::Sha512Crypt),
            (ARGON2_CFFI_HUNTER2, Scheme::Argon2id),
            (PWDLIB_HUNTER2, Scheme::Argon2id),
            (PASSLIB_ARGON2I_HUNTER2, Scheme::Argon2i),
            (ARGON2D_HUNTER2, Scheme::Argon2d),
            (BCRYPT_2B_HUNTER2, Scheme::Bcrypt),
            (BCRYPT_2A_HUNTER2, Scheme::Bcrypt),
            (BCRYPT_2Y_HUNTER2, Scheme::Bcrypt),
            (PASSLIB_BCRYPT12_HUNTER2, Scheme::Bcrypt),
        ] {
            assert_eq!(check_hash(hash), Ok(scheme), "{hash}");
            assert!(verify(b"hunter2", hash), "{hash}");
            assert!(!verify(b"hunter3", hash), "{hash}");
            assert!(!verify(b"", hash), "{hash}");
        }
        assert!(verify(b"secret", MKPASSWD_SECRET));
        assert!(!verify(b"Secret", MKPASSWD_SECRET));
    }

    #[test]
    fn bcrypt_reads_the_first_72_bytes_as_every_implementation_does() {
        let long = [b'x'; 80];
        let hash = bcrypt::hash_with_salt(long, 4, *b"0123456789abcdef")
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoB);
        assert!(verify(&long, &hash));
        assert!(verify(&long[..72], &hash));
        assert!(!verify(&long[..71], &hash));
    }

    #[test]
    fn new_hashes_are_argon2id_with_argon2_cffis_parameters() {
        let hash = hash_password(b"pa:ss word").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"),
            "{hash}"
        );
        assert_eq!(check_hash(&hash), Ok(Scheme::Argon2id));
        // 16 bytes of salt and 32 of hash, in unpadded base64.
        let fields: Vec<&str> = hash.split('$').collect();
        assert_eq!((fields[4].len(), fields[5].len()), (22, 43), "{hash}");
        assert!(verify(b"pa:ss word", &hash));
        assert!(!verify(b"pa:ss wore", &hash));
        assert_ne!(
            hash,
            hash_password(b"pa:ss word").expect("hash"),
            "salts differ"
        );
        // With argon2-cffi's salt, exactly argon2-cffi's string.
        assert_eq!(
            hash_argon2id_with(b"hunter2", b"saltsaltsaltsalt").expect("hash"),
            ARGON2_CFFI_HUNTER2
        );
    }

    #[test]
    fn new_sha512_hashes_look_like_mkpasswd_output_and_verify() {
        let hash = hash_sha512(b"pa:ss word").expect("hash");
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(!hash.contains("rounds="), "{hash}");
        assert_eq!(check_hash(&hash), Ok(Scheme::Sha512Crypt));
        let salt = hash.split('$').nth(2).expect("salt");
        assert_eq!(salt.len(), 16);
        assert!(verify(b"pa:ss word", &hash));
        assert!(!verify(b"pa:ss wore", &hash));
    }

    #[test]
    fn custom_rounds_are_written_and_verified() {
        let hash = hash_sha512_with(b"pw", b"0123456789ab", 2000).expect("hash");
        assert!(hash.starts_with("$6$rounds=2000$"), "{hash}");
        check_hash(&hash).expect("well-formed");
        assert!(verify(b"pw", &hash));
        assert!(hash_sha512_with(b"pw", b"0123456789ab", 10).is_err());
    }

    #[test]
    fn explicit_default_rounds_hash_like_implicit_ones() {
        let explicit = MKPASSWD_HUNTER2.replacen("$6$", "$6$rounds=5000$", 1);
        check_hash(&explicit).expect("well-formed");
        assert!(verify(b"hunter2", &explicit));
    }

    #[test]
    fn unsupported_schemes_are_named() {
        for (hash, named) in [
            ("$1$saltsalt$abcdefghijklmnopqrstuv", "'$1$' (MD5 crypt)"),
            ("$y$j9T$salt$hash", "'$y$' (yescrypt)"),
            (
                "$7$101$c2FsdA$aGFzaA==",
                "'$7$' (Mosquitto 2's PBKDF2-SHA512)",
            ),
            (
                "$2x$05$saltsaltsaltsaltsaltsuDnVSQEiSRR720/Sb/QnPhzJOamcj.Ti",
                "'$2x$' (bcrypt",
            ),
            (
                "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA",
                "'$scrypt$' (passlib's",
            ),
            ("$md6$x$y", "'$md6$': supported are"),
        ] {
            let reason = check_hash(hash).expect_err(hash);
            assert!(
                reason.contains(&format!("unsupported password hash scheme {named}")),
                "{reason}"
            );
            assert!(!verify(b"x", hash));
        }
        assert!(check_hash("hunter2").unwrap_err().contains("not hashed"));
        assert!(check_hash("").unwrap_err().contains("empty"));
    }

    #[test]
    fn malformed_argon2_and_bcrypt_hashes_are_refused_at_load() {
        let refused = |hash: &str, expected: &str| {
            let reason = check_hash(hash).expect_err(hash);
            assert!(reason.contains(expected), "{hash}: {reason}");
            assert!(!reason.contains("pPTP3jRT"), "prints the digest: {reason}");
        };
        let good = ARGON2_CFFI_HUNTER2;
        refused(&good.replace("v=19$", ""), "no 'v='");
        refused(&good.replace("v=19", "v=18"), "malformed argon2 hash");
        refused(&good.replace("m=65536", "m=1"), "malformed argon2 hash");
        refused(&good.replace("t=3", "t=0"), "malformed argon2 hash");
        refused(&good.replace("p=4", "p=x"), "malformed argon2 hash");
        refused(
            &good.replace("$pPTP3jRT/pIWWzxcv3EAVcpUi/BYRV15jdAXhnnzTak", ""),
            "no salt or no hash",
        );
        refused(
            &good.replace("c2FsdHNhbHRzYWx0c2FsdA", "c2Fs!"),
            "malformed",
        );
        let good = BCRYPT_2B_HUNTER2;
        refused(&good.replacen("$04$", "$03$", 1), "cost must be 04 to 31");
        refused(&good.replacen("$04$", "$32$", 1), "cost must be 04 to 31");
        refused(&good.replacen("$04$", "$4$", 1), "expected 60 characters");
        refused(&good[..59], "expected 60 characters");
        refused(&good.replacen("salt", "sa+t", 1), "[./0-9A-Za-z]");
        // Unused low bits set in the salt's or the hash's last character: the crate cannot
        // decode it, so neither can a login.
        for bad in [
            good.replacen("saltsu", "saltsv", 1),
            format!("{}D", &good[..59]),
        ] {
            refused(&bad, "not canonical bcrypt base64");
            assert!(bcrypt::verify(b"hunter2", &bad).is_err(), "{bad}");
        }
    }
}

/// What one verification costs per scheme, at the parameters the tools write by default:
/// `cargo test --release --lib measure_verification_costs -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore = "a measurement, not a check: run by hand"]
    fn measure_verification_costs() {
        let bcrypt12 = bcrypt::hash_with_salt("pw", 12, *b"0123456789abcdef")
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoB);
        for (name, hash) in [
            (
                "argon2id m=65536,t=3,p=4",
                hash_argon2id(b"pw").expect("hash"),
            ),
            ("bcrypt cost 12", bcrypt12),
            (
                "sha512_crypt 5000 rounds",
                hash_sha512(b"pw").expect("hash"),
            ),
            (
                "sha512_crypt 656000 rounds (passlib)",
                hash_sha512_with(b"pw", b"0123456789ab", 656_000).expect("hash"),
            ),
        ] {
            let n = 10;
            let started = std::time::Instant::now();
            for _ in 0..n {
                assert!(verify(b"pw", &hash));
            }
            eprintln!("{name}: {:?} per verification", started.elapsed() / n);
        }
    }
}
