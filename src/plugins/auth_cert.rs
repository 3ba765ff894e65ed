//! `auth_cert`: aMQTT's `amqtt.contrib.cert.CertificateAuthPlugin` — the client's TLS certificate
//! is its identity.
//!
//! As in aMQTT, the certificate's first URI subject alternative name must be a SPIFFE device ID,
//! `spiffe://DOMAIN/device/ID`, and `ID` must be the CONNECT's client id; anything else (no
//! certificate, no URI, another shape, another client id, another domain) is denied. aMQTT's
//! setting `uri_domain` (`auth.cert.uri_domain`, or `uri_domain` under the class in `plugins:`)
//! fixes `DOMAIN`; without it any domain is accepted. The certificate itself is verified by the listener (`cafile`,
//! `require-certificate`); this plugin only reads it. Costs nothing: answers on the event loop.

use super::{AuthDecision, AuthPlugin, BoxError, Credentials};

/// The built-in `auth_cert` plugin.
#[derive(Debug, Clone)]
pub struct CertAuth {
    /// aMQTT's `uri_domain`; `None` accepts any SPIFFE trust domain.
    uri_domain: Option<String>,
}

impl CertAuth {
    pub const NAME: &'static str = "auth_cert";

    pub fn new(uri_domain: Option<String>) -> Self {
        CertAuth { uri_domain }
    }

    /// `ID` of `spiffe://DOMAIN/device/ID` (the domain checked when one is configured).
    fn device_id<'u>(&self, uri: &'u str) -> Option<&'u str> {
        let (domain, id) = uri.strip_prefix("spiffe://")?.split_once("/device/")?;
        let domain_ok = match &self.uri_domain {
            Some(expected) => domain == expected,
            None => !domain.is_empty() && !domain.contains('/'),
        };
        (domain_ok && !id.is_empty() && !id.contains('/')).then_some(id)
    }
}

impl AuthPlugin for CertAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        let uri = credentials
            .certificate
            .as_ref()
            .and_then(|cert| cert.uris.first());
        Ok(match uri.and_then(|uri| self.device_id(uri)) {
            Some(id) if id == credentials.client_id => AuthDecision::Allow,
            _ => AuthDecision::Deny,
        })
    }

    /// The whole decision: it reads two strings, so it is made on the event loop.
    fn quick_decision(&self, credentials: &Credentials) -> Option<AuthDecision> {
        self.authenticate(credentials).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plugins::PeerCertificate;

    fn client(client_id: &str, uris: Option<&[&str]>) -> Credentials {
        Credentials {
            client_id: client_id.into(),
            certificate: uris.map(|uris| {
                Arc::new(PeerCertificate {
                    subject: "CN=x".into(),
                    common_name: Some("x".into()),
                    dns_names: Vec::new(),
                    uris: uris.iter().map(|u| u.to_string()).collect(),
                })
            }),
            ..Credentials::default()
        }
    }

    #[test]
    fn the_first_uri_san_must_name_the_client_id_as_a_spiffe_device() {
        let any = CertAuth::new(None);
        let device = "spiffe://example.org/device/dev-7";
        let decide = |p: &CertAuth, c: Credentials| p.authenticate(&c).expect("no error");
        assert_eq!(
            decide(&any, client("dev-7", Some(&[device]))),
            AuthDecision::Allow
        );
        assert_eq!(
            decide(&any, client("dev-8", Some(&[device]))),
            AuthDecision::Deny
        );
        assert_eq!(decide(&any, client("dev-7", Some(&[]))), AuthDecision::Deny);
        assert_eq!(decide(&any, client("dev-7", None)), AuthDecision::Deny);
        // Only the first URI counts, as in aMQTT.
        let second = client("dev-7", Some(&["https://example.org", device]));
        assert_eq!(decide(&any, second), AuthDecision::Deny);
        for bad in [
            "spiffe://example.org/device/dev-7/extra",
            "spiffe://example.org/user/dev-7",
            "spiffe:///device/dev-7",
            "https://example.org/device/dev-7",
        ] {
            assert_eq!(
                decide(&any, client("dev-7", Some(&[bad]))),
                AuthDecision::Deny,
                "{bad}"
            );
        }
        let pinned = CertAuth::new(Some("example.org".into()));
        assert_eq!(
            decide(&pinned, client("dev-7", Some(&[device]))),
            AuthDecision::Allow
        );
        let other = client("dev-7", Some(&["spiffe://evil.org/device/dev-7"]));
        assert_eq!(decide(&pinned, other), AuthDecision::Deny);
        assert_eq!(
            any.quick_decision(&client("dev-7", None)),
            Some(AuthDecision::Deny)
        );
    }
}
