//! A small blocking MQTT client for setup and clean-up work outside the measured engine:
//! preloading retained messages, clearing them, removing persistent sessions, and probing that a
//! freshly started broker answers CONNECT. Speaks plain TCP or TLS (`mqtts://`, blocking rustls).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use amqtt::protocol::{
    decode, Connect, ConnectReturnCode, Packet, ProtocolLevel, Publish, QoS, TopicName,
    PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::{Bytes, BytesMut};
use rustls::{ClientConnection, StreamOwned};

use crate::credentials::Credentials;
use crate::tls::TlsTarget;

/// A blocking socket, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A connected blocking client.
pub struct SimpleClient {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

fn proto_err(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl SimpleClient {
    /// Connects over plain TCP and completes CONNECT/CONNACK. Returns the client and
    /// `session_present`.
    pub fn connect(
        addr: SocketAddr,
        client_id: &str,
        clean_session: bool,
        timeout: Duration,
    ) -> io::Result<(SimpleClient, bool)> {
        SimpleClient::connect_to(addr, None, None, client_id, clean_session, timeout)
    }

    /// Connects over TCP, or TLS with `tls`, and completes CONNECT/CONNACK (with the user name
    /// and password of `credentials`).
    pub fn connect_to(
        addr: SocketAddr,
        tls: Option<&TlsTarget>,
        credentials: Option<&Credentials>,
        client_id: &str,
        clean_session: bool,
        timeout: Duration,
    ) -> io::Result<(SimpleClient, bool)> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(target) => {
                let conn = target
                    .connect()
                    .map_err(|e| io::Error::other(format!("TLS set-up failed: {e}")))?;
                Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        };
        let mut c = SimpleClient {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        };
        c.send(&Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session,
            keep_alive: 60,
            client_id: client_id.to_string(),
            will: None,
            username: credentials.map(|c| c.username.clone()),
            password: credentials.and_then(|c| c.password.clone()),
        })))?;
        c.flush()?;
        match c.read_packet()? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Accepted => {
                Ok((c, ack.session_present))
            }
            Packet::ConnAck(ack) => Err(proto_err(format!("CONNACK refused: {:?}", ack.code))),
            other => Err(proto_err(format!("expected CONNACK, got {other:?}"))),
        }
    }

    /// Queues a packet (sent on [`SimpleClient::flush`]).
    pub fn send(&mut self, p: &Packet) -> io::Result<()> {
        p.encode(&mut self.wbuf)
            .map_err(|e| proto_err(e.to_string()))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.stream.flush()?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads one packet (blocking up to the timeout given at connect).
    pub fn read_packet(&mut self) -> io::Result<Packet> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match decode(&mut self.rbuf, PROTOCOL_MAX_PACKET_SIZE) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(proto_err(e.to_string())),
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ));
            }
            self.rbuf.extend_from_slice(&buf[..n]);
        }
    }

    /// Publishes `messages` at QoS 1, keeping up to `window` unacknowledged, and waits for
    /// every PUBACK.
    pub fn publish_all(
        &mut self,
        messages: impl IntoIterator<Item = (TopicName, Bytes, bool)>,
        window: usize,
    ) -> io::Result<u64> {
        let mut next_id: u16 = 1;
        let mut outstanding = 0usize;
        let mut sent = 0u64;
        for (topic, payload, retain) in messages {
            while outstanding >= window.max(1) {
                self.flush()?;
                self.await_puback()?;
                outstanding -= 1;
            }
            self.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain,
                topic,
                packet_id: Some(next_id),
                payload,
            }))?;
            next_id = next_id.checked_add(1).unwrap_or(1);
            outstanding += 1;
            sent += 1;
        }
        self.flush()?;
        while outstanding > 0 {
            self.await_puback()?;
            outstanding -= 1;
        }
        Ok(sent)
    }

    fn await_puback(&mut self) -> io::Result<()> {
        loop {
            match self.read_packet()? {
                Packet::PubAck(_) => return Ok(()),
                Packet::PingResp | Packet::Publish(_) => {}
                other => return Err(proto_err(format!("expected PUBACK, got {other:?}"))),
            }
        }
    }

    /// Sends DISCONNECT and closes.
    pub fn disconnect(mut self) -> io::Result<()> {
        self.send(&Packet::Disconnect)?;
        self.flush()?;
        match &mut self.stream {
            Stream::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Stream::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                let _ = s.sock.shutdown(std::net::Shutdown::Both);
            }
        }
        Ok(())
    }
}

/// Waits until an MQTT broker at `addr` answers CONNECT, or `timeout` passes.
pub fn wait_until_ready(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let start = Instant::now();
    let mut last = io::Error::new(io::ErrorKind::TimedOut, "no answer");
    while start.elapsed() < timeout {
        match SimpleClient::connect(addr, "amqtt-bench-probe", true, Duration::from_secs(2)) {
            Ok((c, _)) => {
                let _ = c.disconnect();
                return Ok(());
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("broker at {addr} did not answer CONNECT within {timeout:?}: {last}"),
    ))
}
