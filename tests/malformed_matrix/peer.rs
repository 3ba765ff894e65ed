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

    /// The next packet within `within` as raw bytes (first byte, body), for MQTT 5 packets the
    /// MQTT 3.1.1 decoder does not read; None when the broker closed or time ran out.
    pub(super) fn recv_raw(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(whole) = take_raw(&mut self.buf) {
                return Some(whole);
            }
            match self.read1() {
                Read1::Data => {}
                Read1::Closed => return None,
                Read1::Timeout if Instant::now() >= deadline => return None,
                Read1::Timeout => {}
            }
        }
    }

    /// Reads until the broker closes (within `within`): `Some` of the reason code of the last
    /// DISCONNECT it sent before (`Some(None)`: none), `None` if it kept the connection open.
    pub(super) fn disconnect_reason(&mut self, within: Duration) -> Option<Option<u8>> {
        let deadline = Instant::now() + within;
        let mut reason = None;
        loop {
            while let Some((first, body)) = take_raw(&mut self.buf) {
                if first == 0xe0 {
                    // No body is reason code 0x00 [MQTT-3.14.2.1].
                    reason = Some(body.first().copied().unwrap_or(0));
                }
            }
            match self.read1() {
                Read1::Data => {}
                Read1::Closed => return Some(reason),
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

/// Takes one whole packet off the front of `buf` as (first byte, body), without decoding it.
pub(super) fn take_raw(buf: &mut BytesMut) -> Option<(u8, Vec<u8>)> {
    let (mut length, mut at) = (0usize, 1);
    loop {
        let byte = *buf.get(at)?;
        length |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            panic!("the broker sent a remaining length over 4 bytes");
        }
    }
    if buf.len() < at + length {
        return None;
    }
    let first = buf[0];
    let body = buf[at..at + length].to_vec();
    let _ = buf.split_to(at + length);
    Some((first, body))
}
