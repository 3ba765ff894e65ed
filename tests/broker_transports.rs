//! MQTT over TLS, WebSocket and secure WebSocket, end to end over real sockets: our client transport
//! (`amqtt::transport::connect_client`) and raw tungstenite / rustls peers against the broker, with
//! 1 and 2 shards so that connections of every transport move between shards; and what
//! authentication plugins are told of each transport, and of the client's address behind a PROXY
//! protocol header.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::plugins::{Plugin, Transport};
use amqtt::protocol::{
    decode, ConnAck, Connect, ConnectReturnCode, Packet, ProtocolLevel, Publish, QoS, Subscribe,
    SubscribeFilter, TopicFilter, TopicName,
};
use amqtt::transport::{connect_client, BrokerUrl, ClientStream, ClientTransportOptions};
use amqtt::{Broker, BrokerHandle};
use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::FutureExt;

use common::certs::{self, TestCerts};
use common::{id_on_shard, AuthRecorder};

struct Setup {
    _certs: TestCerts,
    broker: BrokerHandle,
    ca: std::path::PathBuf,
}

fn start(shards: usize, extra: &str) -> (Setup, TestCerts) {
    start_with_plugins(shards, extra, Vec::new())
}

/// [`start`] with plugins added through the embedding API.
fn start_with_plugins(shards: usize, extra: &str, plugins: Vec<Plugin>) -> (Setup, TestCerts) {
    let certs = certs::make();
    let tls = certs.tls_listener_keys();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n  tls:\n    bind: 127.0.0.1:0\n{tls}  ws:\n    bind: 127.0.0.1:0\n    type: ws\n  wss:\n    bind: 127.0.0.1:0\n    type: ws\n{tls}{extra}"
    );
    let mut config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config");
    config.shards = ShardCount::Fixed(shards);
    config.pin_shards = false;
    config.connect_timeout = Duration::from_secs(3);
    let broker = plugins
        .into_iter()
        .fold(Broker::new(config).expect("broker"), Broker::with_plugin)
        .start()
        .expect("broker starts");
    let ca = certs.ca.clone();
    let again = certs::make();
    (
        Setup {
            _certs: certs,
            broker,
            ca,
        },
        again,
    )
}

impl Setup {
    fn url(&self, listener: &str) -> String {
        let addr = self.broker.address(listener).expect("listener");
        let scheme = match listener {
            "default" => "mqtt",
            "tls" => "mqtts",
            other => other,
        };
        let host = if scheme.starts_with("mqtt") {
            "127.0.0.1"
        } else {
            "localhost"
        };
        format!("{scheme}://{host}:{}/mqtt", addr.port())
    }

    /// The URL of every listener: TCP, TLS, WebSocket, secure WebSocket.
    fn urls(&self) -> Vec<String> {
        ["default", "tls", "ws", "wss"]
            .iter()
            .map(|l| self.url(l))
            .collect()
    }

    fn addr(&self, listener: &str) -> SocketAddr {
        self.broker.address(listener).expect("listener")
    }

    fn options(&self) -> ClientTransportOptions {
        ClientTransportOptions {
            ca_file: Some(self.ca.clone()),
            ..Default::default()
        }
    }
}

/// Runs `f` on a fresh executor thread (the transports run on a shard's executor), of the
/// runtime `AMQTT_RUNTIME` chooses, as the client library does.
fn on_executor<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let runtime = amqtt::config::runtime_from_env(shards::RuntimeChoice::Auto)
        .expect("AMQTT_RUNTIME")
        .resolve()
        .expect("runtime");
    shards::rt::spawn_thread("test-transport", runtime, f)
        .expect("executor")
        .join()
        .expect("executor ran")
}

struct Mqtt {
    stream: ClientStream,
    buf: BytesMut,
}

impl Mqtt {
    async fn connect(url: &str, options: &ClientTransportOptions, client_id: &str) -> Mqtt {
        let url: BrokerUrl = url.parse().expect("url");
        let stream = connect_client(&url, options)
            .await
            .expect("transport connects");
        let mut mqtt = Mqtt {
            stream,
            buf: BytesMut::new(),
        };
        mqtt.send(connect_packet(client_id)).await;
        match mqtt.recv().await {
            Some(Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Accepted,
                ..
            })) => mqtt,
            other => panic!("no CONNACK over {url:?}: {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(&mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> Option<Packet> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(packet)) = decode(&mut self.buf, usize::MAX) {
                return Some(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 4096];
            let n = async { self.stream.read(&mut chunk).await.ok() }
                .or(async {
                    shards::rt::sleep(left).await;
                    None
                })
                .await?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new(filter).expect("filter"),
                qos: QoS::AtLeastOnce,
            }],
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    async fn publish(&mut self, topic: &str, payload: Bytes) {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new(topic).expect("topic"),
            packet_id: None,
            payload,
        }))
        .await;
    }
}

/// Every transport publishes to every other, with subscriber and publisher on different shards.
fn all_transports_interoperate(shards: usize) {
    let (setup, _) = start(shards, "");
    let urls = setup.urls();
    let options = setup.options();
    on_executor(move || async move {
        for (i, sub_url) in urls.iter().enumerate() {
            let mut sub = Mqtt::connect(
                sub_url,
                &options,
                &id_on_shard(&format!("sub{i}"), 0, shards),
            )
            .await;
            sub.subscribe("x/#").await;
            for (j, pub_url) in urls.iter().enumerate() {
                let mut publisher = Mqtt::connect(
                    pub_url,
                    &options,
                    &id_on_shard(&format!("pub{i}{j}"), shards - 1, shards),
                )
                .await;
                // Big enough to span several WebSocket frames and TLS records.
                let payload = Bytes::from(vec![b'a' + (j as u8); 100_000]);
                publisher.publish(&format!("x/{j}"), payload.clone()).await;
                match sub.recv().await {
                    Some(Packet::Publish(p)) => {
                        assert_eq!(p.topic.as_str(), format!("x/{j}"));
                        assert_eq!(p.payload, payload, "{pub_url} → {sub_url}");
                    }
                    other => panic!("{pub_url} → {sub_url}: {other:?}"),
                }
            }
        }
    });
}

/// Authentication plugins are told which listener and transport each client came through, and
/// from where; a client without a certificate shows none.
#[test]
fn auth_plugins_see_each_clients_listener_and_transport() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (setup, _) = start_with_plugins(2, "", vec![Plugin::auth(AuthRecorder(seen.clone()))]);
    let listeners = ["default", "tls", "ws", "wss"];
    let urls: Vec<String> = listeners.iter().map(|l| setup.url(l)).collect();
    let options = setup.options();
    on_executor(move || async move {
        for (listener, url) in listeners.iter().zip(&urls) {
            Mqtt::connect(url, &options, listener).await;
        }
    });
    let seen = seen.lock().expect("lock").clone();
    let expected = [
        ("default", Transport::Tcp),
        ("tls", Transport::Tls),
        ("ws", Transport::Ws),
        ("wss", Transport::Wss),
    ];
    for (listener, transport) in expected {
        let c = seen
            .iter()
            .find(|c| c.client_id == listener)
            .unwrap_or_else(|| panic!("{listener}: not seen in {seen:?}"));
        assert_eq!((c.listener.as_str(), c.transport), (listener, transport));
        assert!(c.remote_addr.is_some_and(|a| a.ip().is_loopback()), "{c:?}");
        assert_eq!(c.certificate, None, "{listener}");
    }
}

/// A clean-session MQTT 3.1.1 CONNECT.
fn connect_packet(client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolLevel::V311,
        clean_session: true,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    }))
}

fn connect_bytes(client_id: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    connect_packet(client_id).encode(&mut out).expect("encode");
    out.to_vec()
}

/// On `proxy-protocol` listeners, plugins are told the address of the PROXY header (v1 and v2),
/// over TCP and over WebSocket (the header comes before the upgrade), on the shard that accepted
/// the connection and on the one it moved to.
#[test]
fn auth_plugins_see_the_address_a_proxy_protocol_header_names() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxied = "  proxied:\n    bind: 127.0.0.1:0\n    proxy-protocol: true\n  \
                   proxied-ws:\n    bind: 127.0.0.1:0\n    type: ws\n    proxy_protocol: true\n";
    let (setup, _) = start_with_plugins(2, proxied, vec![Plugin::auth(AuthRecorder(seen.clone()))]);
    let connack = [0x20, 2, 0, 0];
    let mut expected = Vec::new();
    for shard in 0..2 {
        // TCP, version 2, IPv4.
        let id = id_on_shard("pp-tcp", shard, 2);
        let port = 40000 + shard as u16;
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        header.extend_from_slice(&[198, 51, 100, 7, 10, 0, 0, 1]);
        header.extend_from_slice(&port.to_be_bytes());
        header.extend_from_slice(&1883u16.to_be_bytes());
        let mut tcp = std::net::TcpStream::connect(setup.addr("proxied")).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        tcp.write_all(&[header, connect_bytes(&id)].concat())
            .expect("write");
        let mut ack = [0u8; 4];
        tcp.read_exact(&mut ack).expect("CONNACK");
        assert_eq!(ack, connack);
        expected.push((
            id,
            "proxied",
            Transport::Tcp,
            format!("198.51.100.7:{port}"),
        ));
        // WebSocket, version 1, IPv6.
        let id = id_on_shard("pp-ws", shard, 2);
        let addr = setup.addr("proxied-ws");
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        tcp.write_all(format!("PROXY TCP6 2001:db8::7 2001:db8::1 {port} 8080\r\n").as_bytes())
            .expect("write");
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/mqtt"
        ))
        .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
        let (mut ws, _) = tungstenite::client(request, tcp).expect("upgrade");
        ws.send(tungstenite::Message::binary(connect_bytes(&id)))
            .expect("send");
        match ws.read().expect("CONNACK") {
            tungstenite::Message::Binary(ack) => assert_eq!(&ack[..], connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        expected.push((
            id,
            "proxied-ws",
            Transport::Ws,
            format!("[2001:db8::7]:{port}"),
        ));
    }
    let seen = seen.lock().expect("lock").clone();
    for (id, listener, transport, addr) in expected {
        let c = seen
            .iter()
            .find(|c| c.client_id == id)
            .unwrap_or_else(|| panic!("{id}: not seen in {seen:?}"));
        assert_eq!((c.listener.as_str(), c.transport), (listener, transport));
        assert_eq!(c.remote_addr, Some(addr.parse().expect("addr")), "{id}");
    }
}

#[test]
fn all_transports_interoperate_one_shard() {
    all_transports_interoperate(1);
}

#[test]
fn all_transports_interoperate_two_shards() {
    all_transports_interoperate(2);
}

#[test]
fn untrusted_server_certificate_is_refused_by_the_client() {
    let (setup, other) = start(1, "");
    let url = setup.url("tls");
    let options = ClientTransportOptions {
        ca_file: Some(other.other_ca.clone()),
        ..Default::default()
    };
    let error = on_executor(move || async move {
        let url: BrokerUrl = url.parse().expect("url");
        connect_client(&url, &options)
            .await
            .err()
            .map(|e| e.to_string())
    });
    let error = error.expect("handshake must fail");
    assert!(error.contains("TLS"), "{error}");
}

#[test]
fn websocket_text_frame_is_closed_with_1003() {
    use tungstenite::protocol::frame::coding::CloseCode;
    let (setup, _) = start(1, "");
    let addr = setup.addr("ws");
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/mqtt"))
            .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (mut ws, response) = tungstenite::client(request, stream).expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..])
    );
    ws.send(tungstenite::Message::text("hello"))
        .expect("send text");
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Unsupported);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("expected a close frame with 1003, got {e}"),
        }
    }
}

#[test]
fn websocket_upgrade_with_wrong_version_is_refused() {
    let (setup, _) = start(1, "");
    let mut stream = std::net::TcpStream::connect(setup.addr("ws")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13"));
}

/// A client taken over (the broker closes its connection) that goes on writing for a while is
/// not reset, over every transport: the broker shuts its side down after the transport's goodbye
/// and reads on until the client closes too (the lingering close). Closed at once with input
/// unread, the socket was reset and the client's next write failed with EPIPE.
#[test]
fn a_client_writing_after_the_brokers_close_is_not_reset() {
    let (setup, _) = start(1, "");
    let urls = setup.urls();
    let options = setup.options();
    on_executor(move || async move {
        for (i, url) in urls.iter().enumerate() {
            let id = format!("linger{i}");
            let mut old = Mqtt::connect(url, &options, &id).await;
            let _new = Mqtt::connect(url, &options, &id).await;
            // PINGREQs, as a client that has not read anything yet goes on sending.
            for _ in 0..60 {
                let wrote = old.stream.write_all(&[0xC0, 0x00].repeat(10)).await;
                let flushed = old.stream.flush().await;
                if let Err(e) = wrote.and(flushed) {
                    panic!("{url}: a write after the broker's close failed: {e}");
                }
                shards::rt::sleep(Duration::from_millis(5)).await;
            }
            // What the broker answered before its close, then the end of the stream.
            while let Some(packet) = old.recv().await {
                assert!(matches!(packet, Packet::PingResp), "{url}: {packet:?}");
            }
        }
    });
}

#[test]
fn stalled_handshakes_do_not_delay_other_clients() {
    let (setup, _) = start(2, "");
    // Ten sockets that open TCP and never say a word, on the TLS and WS listeners.
    let idle: Vec<std::net::TcpStream> = (0..10)
        .map(|i| {
            std::net::TcpStream::connect(setup.addr(if i % 2 == 0 { "tls" } else { "wss" }))
                .expect("connect")
        })
        .collect();
    let urls = [setup.url("tls"), setup.url("wss")];
    let options = setup.options();
    let elapsed = on_executor(move || async move {
        let start = Instant::now();
        for (i, url) in urls.iter().enumerate() {
            Mqtt::connect(url, &options, &format!("busy{i}")).await;
        }
        start.elapsed()
    });
    assert!(
        elapsed < Duration::from_secs(1),
        "connects took {elapsed:?} next to stalled handshakes"
    );
    drop(idle);
}
