//! What authentication plugins see of a connection, over real TLS sockets with client certificates
//! made by the test: an added plugin records the remote address, listener name, transport and the
//! certificate's CN and SPIFFE URI; the built-in `auth_cert` accepts the SPIFFE device whose client
//! id is its device id and refuses a certificate without a URI, or another client id.

use std::io::{Read, Write};

use super::*;
use amqtt::plugins::{Plugin, Transport};
use bytes::BytesMut;
use common::certs::{self, TestCerts, SPIFFE_ID};
use common::AuthRecorder;

/// Connects over TLS presenting `cert`/`key`, sends CONNECT with `client_id`; the CONNACK's code
/// and the client's own address (the broker's remote address).
fn tls_connect(
    addr: SocketAddr,
    certs: &TestCerts,
    cert: &Path,
    key: &Path,
    client_id: &str,
) -> (ConnectReturnCode, SocketAddr) {
    let roots = amqtt::transport::tls::load_roots(Some(&certs.ca), None, None).expect("roots");
    let chain = amqtt::transport::tls::load_certificates(cert).expect("chain");
    let key = amqtt::transport::tls::load_private_key(key).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
    let tcp = std::net::TcpStream::connect(addr).expect("tcp");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = tcp.local_addr().expect("local address");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(RawClient::connect_packet(client_id, true, 30)))
        .encode(&mut out)
        .expect("encode");
    tls.write_all(&out).expect("send CONNECT");
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some(packet) = amqtt::protocol::decode(&mut buf, usize::MAX).expect("decodes") {
            return (connack_code(&packet), local);
        }
        let n = tls.read(&mut chunk).expect("CONNACK");
        assert!(n > 0, "closed before CONNACK");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A broker whose `default` listener wants client certificates from the test CA.
fn start_mtls(certs: &TestCerts, plugins: &str, added: Vec<Plugin>) -> (BrokerHandle, SocketAddr) {
    let yaml = format!(
        "{}    cafile: {}\n    require-certificate: true\nauth:\n  plugins: [{plugins}]\n",
        certs.tls_listener_keys(),
        certs.ca.display()
    );
    super::embedded::start_with(&yaml, added)
}

#[test]
fn auth_plugins_see_address_listener_transport_and_certificate() {
    let _serial = serial();
    let certs = certs::make();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_broker, addr) = start_mtls(
        &certs,
        "recorder",
        vec![Plugin::auth(AuthRecorder(seen.clone()))],
    );
    let (code, local) = tls_connect(addr, &certs, &certs.spiffe_cert, &certs.spiffe_key, "d7");
    assert_eq!(code, ConnectReturnCode::Accepted);
    let (code, plain_local) =
        tls_connect(addr, &certs, &certs.client_cert, &certs.client_key, "plain");
    assert_eq!(code, ConnectReturnCode::Accepted);

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let spiffe = seen.iter().find(|c| c.client_id == "d7").expect("d7 seen");
    assert_eq!(spiffe.remote_addr, Some(local));
    assert_eq!(spiffe.listener, "default");
    assert_eq!(spiffe.transport, Transport::Tls);
    let cert = spiffe.certificate.as_ref().expect("certificate seen");
    assert_eq!(cert.common_name.as_deref(), Some("device-7"));
    assert!(cert.subject.contains("CN=device-7"), "{}", cert.subject);
    assert_eq!(cert.uris, [SPIFFE_ID]);
    assert_eq!(cert.dns_names, ["device-7.example"]);

    let plain = seen
        .iter()
        .find(|c| c.client_id == "plain")
        .expect("plain seen");
    assert_eq!(plain.remote_addr, Some(plain_local));
    let cert = plain.certificate.as_ref().expect("certificate seen");
    assert_eq!(cert.common_name.as_deref(), Some("device-7"));
    assert!(cert.uris.is_empty(), "{cert:?}");
}

#[test]
fn auth_cert_accepts_the_spiffe_device_and_refuses_the_rest() {
    let _serial = serial();
    let certs = certs::make();
    let (_broker, addr) = start_mtls(&certs, "auth_cert", Vec::new());
    let connect = |cert: &Path, key: &Path, id: &str| tls_connect(addr, &certs, cert, key, id).0;
    let (spiffe, spiffe_key) = (&certs.spiffe_cert, &certs.spiffe_key);
    // Several times: with two shards, some arrive on the other shard and are handed over, TLS
    // state (the peer certificate) included.
    for _ in 0..4 {
        assert_eq!(
            connect(spiffe, spiffe_key, "device-7"),
            ConnectReturnCode::Accepted
        );
    }
    // The device id in the URI must be the client id (aMQTT's rule).
    assert_eq!(
        connect(spiffe, spiffe_key, "device-8"),
        ConnectReturnCode::NotAuthorized
    );
    // A verified certificate without a URI SAN is not an identity for auth_cert.
    assert_eq!(
        connect(&certs.client_cert, &certs.client_key, "device-7"),
        ConnectReturnCode::NotAuthorized
    );
}
