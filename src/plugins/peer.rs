//! What an authentication plugin knows about the connection a CONNECT came on, besides its
//! credentials: the listener's transport and the TLS client certificate's identity (subject, common
//! name, DNS and URI subject alternative names, so a SPIFFE ID `spiffe://…` is visible).
//!
//! Parsing only (with `x509-parser`, as `use-identity-as-username` does); the runtime reads the
//! certificate from the TLS connection and fills [`super::Credentials`]. No sockets here.

use x509_parser::extensions::GeneralName;

/// How the client reached the listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain MQTT over TCP (also the value of credentials not filled by the runtime).
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// The identity in a client's TLS certificate (its end-entity certificate, already verified by the
/// listener's `cafile` when the listener asks for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject distinguished name as text, e.g. `CN=device-7, O=Example`.
    pub subject: String,
    /// The subject's (first) common name.
    pub common_name: Option<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// URIs among the subject alternative names (a SPIFFE ID is one), in certificate order.
    pub uris: Vec<String>,
}

impl PeerCertificate {
    /// Reads a DER certificate; `None` when it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        // A malformed SAN extension leaves the lists empty: nothing is claimed that is not there.
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    _ => {}
                }
            }
        }
        Some(PeerCertificate {
            subject: cert.subject().to_string(),
            common_name,
            dns_names,
            uris,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    #[test]
    fn subject_common_name_and_sans_are_read() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["device-7.example".to_string()]).expect("p");
        params
            .distinguished_name
            .push(DnType::CommonName, "device-7");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/device/device-7"
                .try_into()
                .expect("uri"),
        ));
        let cert = params.self_signed(&key).expect("cert");
        let peer = PeerCertificate::from_der(cert.der()).expect("parses");
        assert_eq!(peer.common_name.as_deref(), Some("device-7"));
        assert!(peer.subject.contains("CN=device-7"), "{}", peer.subject);
        assert!(peer.subject.contains("O=Example"), "{}", peer.subject);
        assert_eq!(peer.dns_names, ["device-7.example"]);
        assert_eq!(peer.uris, ["spiffe://example.org/device/device-7"]);
    }

    #[test]
    fn a_certificate_without_sans_has_none_and_garbage_is_refused() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("p");
        params.distinguished_name.push(DnType::CommonName, "plain");
        let cert = params.self_signed(&key).expect("cert");
        let peer = PeerCertificate::from_der(cert.der()).expect("parses");
        assert_eq!(peer.common_name.as_deref(), Some("plain"));
        assert!(peer.dns_names.is_empty() && peer.uris.is_empty());
        assert_eq!(PeerCertificate::from_der(b"not a certificate"), None);
    }
}
