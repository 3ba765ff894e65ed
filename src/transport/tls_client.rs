//! The client side of TLS: the rustls configuration a connection to a broker uses: which CAs it
//! trusts, the client certificate it presents, and how strictly it checks the broker's certificate.
//!
//! Three levels of checking, from aMQTT's client options (`check_hostname`, `verify_cert`) and
//! mosquitto's `--insecure`:
//! - full (the default): the chain must lead to a trusted CA and name the host of the URL;
//! - no host name check ([`ClientTls::check_hostname`] off, `--insecure`): the chain must still
//!   lead to a trusted CA, and the certificate be valid now, but may name another host;
//! - no verification ([`ClientTls::verify_cert`] off): any certificate is taken. The handshake's
//!   signatures are still checked, so the peer holds the key of the certificate it sent.
//!
//! The last two are [`RelaxedVerifier`] (which the bench's `--insecure` uses too).
//!
//! Opens no sockets and runs no handshake (`tls.rs` does); reads the certificate and key files.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::tls::{load_certificates, load_private_key, load_roots, TlsSetupError};

/// What a client's TLS needs to know; borrowed from the caller's options.
#[derive(Debug, Clone, Copy)]
pub struct ClientTls<'a> {
    /// CA certificates to trust: a PEM file, a directory of them, inline PEM. None of the three:
    /// the system's CAs.
    pub cafile: Option<&'a Path>,
    pub capath: Option<&'a Path>,
    pub cadata: Option<&'a str>,
    /// The client certificate (PEM, with any intermediates after it) and its private key; both
    /// or neither.
    pub certfile: Option<&'a Path>,
    pub keyfile: Option<&'a Path>,
    /// Check that the broker's certificate names the host of the URL.
    pub check_hostname: bool,
    /// Check the broker's certificate at all (chain, dates, name).
    pub verify_cert: bool,
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &ClientTls<'_>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid(format!("TLS versions: {e}")))?;
    let builder = if !tls.verify_cert {
        log::warn!("TLS: the broker's certificate is not verified (verify_cert: false)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::any_certificate(provider)))
    } else if !tls.check_hostname {
        let verifier = RelaxedVerifier::any_host_name(roots(tls)?, provider)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let config = match (tls.certfile, tls.keyfile) {
        (None, None) => builder.with_no_client_auth(),
        (Some(certfile), Some(keyfile)) => {
            let chain = load_certificates(certfile)?;
            let key = load_private_key(keyfile)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsSetupError::File {
                    file: keyfile.to_path_buf(),
                    reason: format!(
                        "does not match the certificate in {}: {e}",
                        certfile.display()
                    ),
                })?
        }
        (Some(_), None) => {
            return Err(TlsSetupError::Invalid(
                "a client certificate needs its private key: give keyfile (--key) too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(TlsSetupError::Invalid(
                "a client key needs its certificate: give certfile (--cert) too".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

/// The CAs given, or the system's when none is.
fn roots(tls: &ClientTls<'_>) -> Result<RootCertStore, TlsSetupError> {
    if tls.cafile.is_some() || tls.capath.is_some() || tls.cadata.is_some() {
        return load_roots(tls.cafile, tls.capath, tls.cadata);
    }
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(roots)
}

/// The broker-certificate check with part of it switched off. Either any certificate is taken
/// ([`RelaxedVerifier::any_certificate`], `verify_cert: false`, the bench's `--insecure`), or the
/// full check is made except for the host name (`check_hostname: false`, the CLIs' `--insecure`):
/// rustls checks the chain (trust, dates, usage) before the name, so a "not valid for name" error
/// means everything else passed. Either way the handshake's signatures are verified, so the peer
/// holds the key of the certificate it sent.
#[derive(Debug)]
pub struct RelaxedVerifier {
    /// `None`: take any certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl RelaxedVerifier {
    /// Takes any certificate.
    pub fn any_certificate(provider: Arc<CryptoProvider>) -> RelaxedVerifier {
        RelaxedVerifier {
            chain: None,
            provider,
        }
    }

    /// Checks everything but the host name against `roots`.
    fn any_host_name(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
    ) -> Result<RelaxedVerifier, TlsSetupError> {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Invalid(format!("certificate verifier: {e}")))?;
        Ok(RelaxedVerifier {
            chain: Some(chain),
            provider,
        })
    }
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
