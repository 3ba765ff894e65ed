//! A user name and password given in the broker URL (`mqtt://user:password@host:port`), so that a
//! broker that requires authentication can be benched: every CONNECT the bench sends carries them.
//!
//! They are taken off the URL text before the URL itself is parsed (`url.rs` parses the rest), so
//! the URL that reports print never holds the password. Characters are taken literally (no
//! percent-decoding): a user name cannot contain `:` or `@`.

use bytes::Bytes;

/// What a CONNECT sends in its user name and password fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<Bytes>,
}

/// Splits `scheme://user[:password]@rest` into the credentials and `scheme://rest`; a URL without
/// `@` in its authority comes back unchanged with `None`.
pub fn split(url: &str) -> Result<(Option<Credentials>, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') else {
        return Ok((None, url.to_string()));
    };
    let (username, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(Bytes::from(password.to_string()))),
        None => (userinfo, None),
    };
    if username.is_empty() {
        return Err(
            "invalid broker URL: empty user name before '@' (expected user[:password]@host)"
                .to_string(),
        );
    }
    let rest = format!("{host}{}", &rest[authority_end..]);
    let stripped = match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    };
    Ok((
        Some(Credentials {
            username: username.to_string(),
            password,
        }),
        stripped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: Option<&str>) -> Option<Credentials> {
        Some(Credentials {
            username: user.to_string(),
            password: password.map(|p| Bytes::from(p.to_string())),
        })
    }

    #[test]
    fn user_and_password_come_off_the_url() {
        assert_eq!(
            split("mqtt://alice:wonder:land@127.0.0.1:1883"),
            Ok((
                creds("alice", Some("wonder:land")),
                "mqtt://127.0.0.1:1883".to_string()
            ))
        );
        assert_eq!(
            split("mqtts://bob@[::1]:8883"),
            Ok((creds("bob", None), "mqtts://[::1]:8883".to_string()))
        );
        assert_eq!(
            split("carol:@localhost"),
            Ok((creds("carol", Some("")), "localhost".to_string()))
        );
        assert_eq!(
            split("ws://dan:pw@host:8080/mqtt"),
            Ok((creds("dan", Some("pw")), "ws://host:8080/mqtt".to_string()))
        );
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in ["mqtt://127.0.0.1:1883", "localhost", "ws://h/p@th"] {
            assert_eq!(split(url), Ok((None, url.to_string())));
        }
        assert!(split("mqtt://:pw@host").is_err());
    }
}
