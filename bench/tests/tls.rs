//! `mqtts://` end to end: amqtt embedded in the test process with a TLS listener (certificates
//! made here with rcgen), the `amqtt-bench` binary run against it as a user would.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn self_signed_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (params, key, pem)
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_params, ca_key, ca_pem) = self_signed_ca("amqtt-bench test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let (_, _, other_pem) = self_signed_ca("an unrelated CA");
    for (name, text) in [
        ("ca.pem", ca_pem),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
        ("other-ca.pem", other_pem),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write certificate");
    }
    Certs { dir }
}

fn start_tls_broker(certs: &Certs) -> (amqtt::BrokerHandle, SocketAddr) {
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n    type: tcp\n    ssl: on\n    \
         certfile: {}\n    keyfile: {}\nsys_interval: 0\n",
        certs.path("server.pem").display(),
        certs.path("server.key").display()
    );
    common::start_broker(&yaml, 1)
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amqtt-bench"))
        .args(args)
        .output()
        .expect("run amqtt-bench")
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "amqtt-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object on stdout")
}

fn pairs_args<'a>(url: &'a str, trust: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "pairs",
        "-n",
        "2",
        "--qos",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--threads",
        "1",
        "--url",
        url,
        "--json",
        "-q",
    ];
    args.extend_from_slice(trust);
    args
}

fn str_path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn pairs_over_tls_with_the_right_ca() {
    let certs = make_certs();
    let (_broker, addr) = start_tls_broker(&certs);
    let url = format!("mqtts://127.0.0.1:{}", addr.port());
    let ca = certs.path("ca.pem");
    let r = json(&bench(&pairs_args(&url, &["--cafile", str_path(&ca)])));
    assert_eq!(r["url"], url.as_str());
    assert!(r["delivered"].as_u64().unwrap_or(0) > 100, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["errors_total"], 0, "{r}");
    assert_eq!(r["connect"]["connections"], 4, "{r}");

    // --insecure: the same broker without naming its CA.
    let r = json(&bench(&pairs_args(&url, &["--insecure"])));
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["delivered"].as_u64().unwrap_or(0) > 100, "{r}");

    // The blocking set-up client speaks TLS too (retained preload and clean-up).
    let r = json(&bench(&[
        "retained",
        "--messages",
        "50",
        "--duration",
        "5",
        "--url",
        &url,
        "--cafile",
        str_path(&ca),
        "--json",
        "-q",
    ]));
    assert_eq!(r["delivered"], 50, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
}

#[test]
fn wrong_ca_fails_clearly() {
    let certs = make_certs();
    let (_broker, addr) = start_tls_broker(&certs);
    let url = format!("mqtts://127.0.0.1:{}", addr.port());
    let other = certs.path("other-ca.pem");
    let out = bench(&pairs_args(&url, &["--cafile", str_path(&other)]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS handshake with the broker failed")
            && stderr.contains("invalid peer certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("tls 4"), "{stderr}");
}

#[test]
fn tls_options_are_checked() {
    let out = bench(&["pairs", "--url", "mqtt://127.0.0.1:1", "--insecure"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mqtts:// URLs only"), "{stderr}");

    let out = bench(&[
        "pairs",
        "--url",
        "mqtts://127.0.0.1:1",
        "--cafile",
        "/nonexistent/ca.pem",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--cafile /nonexistent/ca.pem"), "{stderr}");

    let out = bench(&["pairs", "--url", "ws://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
}
