//! TLS listeners as the operator configures them: a certificate file that is missing or a key
//! that does not match fails the start naming the file, and mutual TLS with
//! `use-identity-as-username` lets in only the certificate's holder, named by its CN.
//!
//! Must not: test traffic over the transports (`broker_transports.rs` does).

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::protocol::{decode, Connect, ConnectReturnCode, Packet, ProtocolLevel};
use amqtt::Broker;
use bytes::BytesMut;

use common::certs;

#[test]
fn missing_certificate_file_fails_at_start_naming_it() {
    let yaml = "listeners:\n  default:\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: /nonexistent/server.pem\n    keyfile: /nonexistent/server.key\n";
    let config = BrokerConfig::from_yaml_str(yaml, "test").expect("config parses");
    let error = Broker::new(config)
        .and_then(Broker::start)
        .err()
        .expect("start fails")
        .to_string();
    assert!(error.contains("/nonexistent/server.pem"), "{error}");
}

#[test]
fn mismatched_key_fails_at_start_naming_it() {
    let certs = certs::make();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: {}\n    keyfile: {}\n",
        certs.server_cert.display(),
        certs.client_key.display()
    );
    let config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config parses");
    let error = Broker::new(config)
        .and_then(Broker::start)
        .err()
        .expect("start fails")
        .to_string();
    assert!(error.contains("client.key"), "{error}");
}

/// Mutual TLS with the client certificate's CN as user name: anonymous clients are refused, the
/// certificate holder gets in; a client without a certificate fails the handshake.
#[test]
fn mutual_tls_identity_is_the_username() {
    let certs = certs::make();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: {}\n    keyfile: {}\n    cafile: {}\n    require-certificate: true\n    use-identity-as-username: true\nauth:\n  allow-anonymous: false\n",
        certs.server_cert.display(),
        certs.server_key.display(),
        certs.ca.display()
    );
    let mut config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config");
    config.shards = ShardCount::Fixed(2);
    config.pin_shards = false;
    let broker = Broker::new(config).and_then(Broker::start).expect("start");
    let addr = broker.address("default").expect("addr");

    let roots = amqtt::transport::tls::load_roots(Some(&certs.ca), None, None).expect("roots");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = amqtt::transport::tls::load_certificates(&certs.client_cert).expect("chain");
    let key = amqtt::transport::tls::load_private_key(&certs.client_key).expect("key");
    let with_cert = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    let without_cert = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mqtt_over = |config: rustls::ClientConfig| {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let mut tls =
            rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr).expect("tcp"));
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = BytesMut::new();
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session: true,
            keep_alive: 0,
            client_id: "mtls".into(),
            will: None,
            username: None,
            password: None,
        }))
        .encode(&mut out)
        .expect("encode");
        tls.write_all(&out)?;
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 256];
        loop {
            if let Ok(Some(packet)) = decode(&mut buf, usize::MAX) {
                return Ok::<Packet, std::io::Error>(packet);
            }
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match mqtt_over(with_cert) {
        Ok(Packet::ConnAck(ack)) => assert_eq!(
            ack.code,
            ConnectReturnCode::Accepted,
            "CN became the user name"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        mqtt_over(without_cert).is_err(),
        "no client certificate, no connection"
    );
}
