//! Test certificates made with rcgen: a CA, a server certificate for localhost/127.0.0.1 signed by it,
//! a client certificate (CN `device-7`) signed by it, a second one with the same CN that also
//! carries a SPIFFE URI and a DNS name as subject alternative names, and an unrelated self-signed CA.

#![allow(dead_code)]

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// The URI subject alternative name of the `spiffe_cert` client certificate.
pub const SPIFFE_ID: &str = "spiffe://example.org/device/device-7";

pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// CN `device-7`, SANs [`SPIFFE_ID`] and DNS `device-7.example`.
    pub spiffe_cert: PathBuf,
    pub spiffe_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed CA");
    (params, key, cert.pem())
}

pub fn make() -> TestCerts {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_params, ca_key, ca_pem) = ca("amqtt test CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("key");
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");

    let client_key = KeyPair::generate().expect("key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
    client
        .distinguished_name
        .push(DnType::CommonName, "device-7");
    let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");

    let spiffe_key = KeyPair::generate().expect("key");
    let mut spiffe = CertificateParams::new(vec!["device-7.example".to_string()]).expect("params");
    spiffe
        .distinguished_name
        .push(DnType::CommonName, "device-7");
    spiffe
        .subject_alt_names
        .push(SanType::URI(SPIFFE_ID.try_into().expect("uri")));
    let spiffe_cert = spiffe.signed_by(&spiffe_key, &issuer).expect("spiffe cert");

    let (_, _, other_pem) = ca("somebody else");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write cert");
        path
    };
    TestCerts {
        ca: write("ca.pem", ca_pem),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        spiffe_cert: write("spiffe.pem", spiffe_cert.pem()),
        spiffe_key: write("spiffe.key", spiffe_key.serialize_pem()),
        other_ca: write("other-ca.pem", other_pem),
        dir,
    }
}

impl TestCerts {
    /// The YAML keys that turn a listener into a TLS one with the server certificate (indented
    /// for a listener under `listeners:`).
    pub fn tls_listener_keys(&self) -> String {
        format!(
            "    ssl: on\n    certfile: {}\n    keyfile: {}\n",
            self.server_cert.display(),
            self.server_key.display()
        )
    }
}
