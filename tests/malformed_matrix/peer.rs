//! A raw peer over any of the four transports (TCP, TLS, WebSocket, secure WebSocket): it writes
//! exactly the bytes a case gives it and reads what the broker answers, with nothing well-behaved
//! in between.

use super::*;

// ---- a raw peer over any transport ----------------------------------------------------------------

/// The byte stream under MQTT (and under WebSocket): TCP or TLS over TCP.
pub(super) enum Io {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Io {
    pub(super) fn socket(&self) -> &TcpStream {
        match self {
            Io::Tcp(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Tcp(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

pub(super) enum Wire {
    Bytes(Io),
    Ws(Box<tungstenite::WebSocket<Io>>),
}

/// What one read brought.
pub(super) enum Read1 {
    Data,
    Timeout,
    Closed,
}

pub(super) fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A connection to one listener, past its TLS handshake and WebSocket upgrade, speaking raw MQTT
/// bytes (in binary WebSocket messages where there is WebSocket).
pub(super) struct Peer {
    pub(super) wire: Wire,
    pub(super) buf: BytesMut,
}

impl Peer {
    pub(super) fn open(setup: &Setup, transport: Transport) -> Peer {
        let addr = setup
            .broker
            .address(transport.listener())
            .expect("listener");
        let tcp = TcpStream::connect(addr).expect("tcp connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let io = if transport.tls() {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn = rustls::ClientConnection::new(setup.tls.clone(), name).expect("tls");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
            }
            Io::Tls(Box::new(tls))
        } else {
            Io::Tcp(tcp)
        };
        let wire = if transport.websocket() {
            let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
                "ws://localhost:{}/mqtt",
                addr.port()
            ))
            .expect("request");
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
            let (ws, _) = tungstenite::client(request, io).expect("WebSocket upgrade");
            Wire::Ws(Box::new(ws))
        } else {
            Wire::Bytes(io)
        };
        let peer = Peer {
            wire,
            buf: BytesMut::new(),
        };
        peer.socket()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        peer
    }

    pub(super) fn socket(&self) -> &TcpStream {
        match &self.wire {
            Wire::Bytes(io) => io.socket(),
            Wire::Ws(ws) => ws.get_ref().socket(),
        }
    }

    /// Sends MQTT bytes; errors are ignored (the broker may close before it has read them all).
    pub(super) fn send(&mut self, bytes: &[u8]) {
        match &mut self.wire {
            Wire::Bytes(io) => {
                let _ = io.write_all(bytes).and_then(|()| io.flush());
            }
            Wire::Ws(ws) => {
                let _ = ws.send(tungstenite::Message::binary(bytes.to_vec()));
            }
        }
    }

    pub(super) fn send_packet(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(&mut out).expect("encode");
        self.send(&out);
    }

    pub(super) fn send_text(&mut self, text: &str) {
        let Wire::Ws(ws) = &mut self.wire else {
            panic!("text frames need WebSocket");
        };
        let _ = ws.send(tungstenite::Message::text(text));
    }

    pub(super) fn read1(&mut self) -> Read1 {
        match &mut self.wire {
            Wire::Bytes(io) => {
                let mut chunk = [0u8; 4096];
                match io.read(&mut chunk) {
                    Ok(0) => Read1::Closed,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        Read1::Data
                    }
                    Err(e) if would_block(&e) => Read1::Timeout,
                    Err(_) => Read1::Closed,
                }
            }
            Wire::Ws(ws) => match ws.read() {
                Ok(tungstenite::Message::Binary(data)) => {
                    self.buf.extend_from_slice(&data);
                    Read1::Data
                }
                Ok(_) => Read1::Data,
                Err(tungstenite::Error::Io(e)) if would_block(&e) => Read1::Timeout,
                Err(_) => Read1::Closed,
            },
        }
    }

    /// The next packet within `within`; None when the broker closed the connection or time ran out.
    pub(super) fn recv(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(packet)) = decode(&mut self.buf, usize::MAX) {
                return Some(packet);
            }
            match self.read1() {
                Read1::Data => {}
                Read1::Closed => return None,
                Read1::Timeout if Instant::now() >= deadline => return None,
                Read1::Timeout => {}
            }
        }
    }

    /// Whether the broker closes the connection within `within` (what it sends first is ignored).
    pub(super) fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.read1() {
                Read1::Closed => return true,
                Read1::Data => {}
                Read1::Timeout if Instant::now() >= deadline => return false,
                Read1::Timeout => {}
            }
        }
    }

    /// Ends our sending side at the TCP level (no TLS close_notify, no WebSocket close frame), as a
    /// peer that dies mid-packet would.
    pub(super) fn shutdown_write(&mut self) {
        let _ = self.socket().shutdown(Shutdown::Write);
    }
}
