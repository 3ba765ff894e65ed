//! Shared helpers for socket-level tests: start an embedded broker on loopback, and a minimal raw
//! MQTT client (std sockets + our codec) for the cases third-party clients refuse to produce, and an
//! authentication plugin that records what it was shown.

#![allow(dead_code)]

pub mod certs;
pub mod rumqttc_client;
pub mod rumqttc_publishes;

use std::sync::{Arc, Mutex};

use amqtt::plugins::{AuthDecision, AuthPlugin, BoxError, Credentials};

/// An authentication plugin (named `recorder`) that abstains and keeps the credentials of every
/// CONNECT it is asked about: what plugins see.
pub struct AuthRecorder(pub Arc<Mutex<Vec<Credentials>>>);

impl AuthPlugin for AuthRecorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn authenticate(&self, c: &Credentials) -> Result<AuthDecision, BoxError> {
        self.0.lock().expect("lock").push(c.clone());
        Ok(AuthDecision::Abstain)
    }
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, ShardCount};
use amqtt::protocol::{decode, Connect, Packet, ProtocolLevel};
use amqtt::{Broker, BrokerHandle};
use bytes::BytesMut;

/// A broker on 127.0.0.1 with an ephemeral port and `shards` unpinned shards.
pub fn start_broker(shards: usize) -> (BrokerHandle, SocketAddr) {
    start_broker_with(shards, |_| {})
}

pub fn start_broker_with(
    shards: usize,
    adjust: impl FnOnce(&mut BrokerConfig),
) -> (BrokerHandle, SocketAddr) {
    start_broker_full(shards, adjust, Vec::new())
}

/// [`start_broker`] with these plugins added ([`Broker::with_plugin`]).
pub fn start_broker_plugins(
    shards: usize,
    plugins: Vec<amqtt::plugins::Plugin>,
) -> (BrokerHandle, SocketAddr) {
    start_broker_full(shards, |_| {}, plugins)
}

fn start_broker_full(
    shards: usize,
    adjust: impl FnOnce(&mut BrokerConfig),
    plugins: Vec<amqtt::plugins::Plugin>,
) -> (BrokerHandle, SocketAddr) {
    let yaml = "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n";
    let mut config = BrokerConfig::from_yaml_str(yaml, "test").expect("test config");
    config.shards = ShardCount::Fixed(shards);
    config.pin_shards = false;
    adjust(&mut config);
    let handle = Broker::new(config)
        .map(|broker| plugins.into_iter().fold(broker, Broker::with_plugin))
        .and_then(Broker::start)
        .expect("broker starts");
    let addr = handle.address("default").expect("default listener");
    (handle, addr)
}

/// A blocking MQTT connection driven packet by packet.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawClient {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Connect {
        Connect {
            protocol: ProtocolLevel::V311,
            clean_session: clean,
            keep_alive,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// TCP connect + CONNECT; returns the client and the CONNACK.
    pub fn mqtt_connect(addr: SocketAddr, connect: Connect) -> (RawClient, Packet) {
        let mut client = RawClient::connect_tcp(addr);
        client.send(&Packet::Connect(Box::new(connect)));
        let ack = client.recv().expect("CONNACK");
        (client, ack)
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(&mut out).expect("encode");
        self.stream.write_all(&out).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Next packet, or None when the broker closed the connection (or on timeout).
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Some(packet)) = decode(&mut self.buf, usize::MAX) {
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits up to `within` for the broker to close the connection; true if it did.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Client ids whose sessions live on each shard of a `shards`-shard broker.
pub fn id_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| amqtt::broker::home_shard(id, shards) == shard)
        .expect("an id for every shard")
}
