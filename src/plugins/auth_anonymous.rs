//! `auth_anonymous`: aMQTT's `AnonymousAuthPlugin`.
//!
//! With `allow-anonymous: true` it allows every client; with `false` it denies clients that send
//! no user name and allows the others **without checking their password** (aMQTT documents this:
//! pair it with `auth_file` to check passwords). Always answers on the event loop: it costs nothing.

use super::{AuthDecision, AuthPlugin, BoxError, Credentials};

/// The built-in `auth_anonymous` plugin.
#[derive(Debug, Clone)]
pub struct AnonymousAuth {
    allow_anonymous: bool,
}

impl AnonymousAuth {
    pub const NAME: &'static str = "auth_anonymous";

    pub fn new(allow_anonymous: bool) -> Self {
        AnonymousAuth { allow_anonymous }
    }

    fn decision(&self, credentials: &Credentials) -> AuthDecision {
        if self.allow_anonymous || credentials.username.is_some() {
            AuthDecision::Allow
        } else {
            AuthDecision::Deny
        }
    }
}

impl AuthPlugin for AnonymousAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        Ok(self.decision(credentials))
    }

    fn quick_decision(&self, credentials: &Credentials) -> Option<AuthDecision> {
        Some(self.decision(credentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(username: Option<&str>) -> Credentials {
        Credentials {
            client_id: "c".into(),
            username: username.map(Into::into),
            password: None,
            ..Credentials::default()
        }
    }

    #[test]
    fn allows_everyone_when_anonymous_is_allowed() {
        let plugin = AnonymousAuth::new(true);
        assert_eq!(
            plugin.quick_decision(&client(None)),
            Some(AuthDecision::Allow)
        );
        assert_eq!(
            plugin.quick_decision(&client(Some("u"))),
            Some(AuthDecision::Allow)
        );
    }

    #[test]
    fn otherwise_requires_a_user_name_but_not_a_password() {
        let plugin = AnonymousAuth::new(false);
        assert_eq!(
            plugin.quick_decision(&client(None)),
            Some(AuthDecision::Deny)
        );
        assert_eq!(
            plugin.quick_decision(&client(Some("u"))),
            Some(AuthDecision::Allow)
        );
        assert_eq!(
            plugin.authenticate(&client(None)).ok(),
            Some(AuthDecision::Deny)
        );
    }
}
