//! `mqtts://`: the rustls client configuration (`--cafile`, `--insecure`, or the system's trusted
//! roots) and the TLS stream types of the engine and the blocking setup client.
//!
//! The engine drives a [`rustls::ClientConnection`] over its non-blocking mio socket by hand
//! (`read_tls` / `process_new_packets` / `reader()` in, `writer()` / `write_tls` out): the
//! handshake runs in the same event loop as everything else. Plain `mqtt://` never touches this.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqtt::transport::tls_client::RelaxedVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// The operating system's trusted roots.
    #[default]
    System,
    /// The CA certificates of a PEM file.
    CaFile(PathBuf),
    /// Any certificate (benchmarking a broker with a self-signed certificate). Handshake
    /// signatures are still checked, so the connection is encrypted, just not authenticated.
    Insecure,
}

/// Why a TLS client configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Everything needed to open TLS connections to one broker.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    /// From the URL host: a DNS name or an IP address.
    pub server_name: ServerName<'static>,
}

impl TlsTarget {
    /// Builds the client configuration for `host` (the URL's host, IPs allowed).
    pub fn new(host: &str, trust: &Trust) -> Result<TlsTarget, TlsError> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            TlsError(format!(
                "mqtts://: {host:?} is neither a DNS name nor an IP address: {e}"
            ))
        })?;
        Ok(TlsTarget {
            config: Arc::new(client_config(trust)?),
            server_name,
        })
    }

    /// A new client session (one per connection).
    pub fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up: {e}")))?;
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            // Accepts every certificate, for any name; checks handshake signatures only.
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::any_certificate(provider)))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from_file(path)?)
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The CA certificates of a PEM file.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|e| TlsError(format!("--cafile {shown}: cannot read: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsError(format!("--cafile {shown}: bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("--cafile {shown}: unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError(format!(
            "--cafile {shown}: no CERTIFICATE found in the file"
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError(
            "mqtts://: no trusted CA certificates found on this system; \
             give the broker's CA with --cafile PATH, or --insecure"
                .into(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_hosts() {
        for host in ["127.0.0.1", "::1", "localhost", "broker.example.com"] {
            assert!(
                TlsTarget::new(host, &Trust::Insecure).is_ok(),
                "{host} should be accepted"
            );
        }
        let e = TlsTarget::new("bad host!", &Trust::Insecure).unwrap_err();
        assert!(e.0.contains("neither a DNS name"), "{e}");
    }

    #[test]
    fn cafile_errors_are_clear() {
        let e = client_config(&Trust::CaFile("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(
            e.0.contains("--cafile /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("amqtt-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(&Trust::CaFile(empty)).unwrap_err();
        assert!(e.0.contains("no CERTIFICATE"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
