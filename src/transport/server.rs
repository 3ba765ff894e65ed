//! The broker's side of the transports: turning an accepted TCP socket into a byte stream for its
//! listener's kind (TCP, TLS, WebSocket, secure WebSocket), after the PROXY protocol header when the
//! listener is behind a TCP proxy (`proxy-protocol: true`), and detaching / re-attaching such a
//! stream so that a connection can move to another shard.
//!
//! What moves between shards ([`DetachedStream`]) is plain `Send` data: a duplicated socket fd, the
//! rustls connection state, and for WebSocket the raw frame bytes read so far (replayed on arrival).
//! This file parses no MQTT.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::{Connection, ServerConfig, ServerConnection};
use shards::TcpConn as TcpStream;

use super::proxy_protocol::{self, Parsed, ProxyHeaderError};
use super::tls::{self, TlsSetupError, TlsStream};
use super::ws::{self, Recorder, UpgradeError, WsByteStream};
use crate::config::{ListenerConfig, ListenerKind};
use crate::plugins::{PeerCertificate, Transport};

/// How a listener's connections are set up: built once at start (certificates loaded), shared by
/// every shard.
#[derive(Clone)]
pub struct ListenerTransport {
    kind: ListenerKind,
    tls: Option<Arc<ServerConfig>>,
    /// Connections start with a PROXY protocol header (v1 or v2), read before any handshake.
    proxy_protocol: bool,
}

impl std::fmt::Debug for ListenerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.scheme())
    }
}

impl ListenerTransport {
    /// Loads the listener's certificates; errors name the file.
    pub fn new(listener: &ListenerConfig) -> Result<Self, TlsSetupError> {
        let tls = match &listener.tls {
            None => None,
            Some(settings) => {
                let alpn: &[&[u8]] = match listener.kind {
                    ListenerKind::Tcp => &[b"mqtt"],
                    ListenerKind::Ws => &[b"http/1.1"],
                };
                Some(tls::server_config(settings, alpn)?)
            }
        };
        Ok(ListenerTransport {
            kind: listener.kind,
            tls,
            proxy_protocol: listener.proxy_protocol,
        })
    }

    /// `mqtt`, `mqtts`, `ws` or `wss`.
    pub fn scheme(&self) -> &'static str {
        match (self.kind, self.tls.is_some()) {
            (ListenerKind::Tcp, false) => "mqtt",
            (ListenerKind::Tcp, true) => "mqtts",
            (ListenerKind::Ws, false) => "ws",
            (ListenerKind::Ws, true) => "wss",
        }
    }

    /// Reads the PROXY protocol header if the listener expects one, then runs the TLS handshake
    /// and/or WebSocket upgrade the listener calls for.
    pub async fn accept(&self, mut tcp: TcpStream) -> Result<Accepted, HandshakeError> {
        let peer = tcp.peer_addr().ok();
        let remote_addr = if self.proxy_protocol {
            read_proxy_header(&mut tcp).await?.or(peer)
        } else {
            peer
        };
        let stream = self.handshake(tcp, remote_addr).await?;
        Ok(Accepted {
            stream,
            remote_addr,
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: Option<SocketAddr>,
    ) -> Result<ServerStream, HandshakeError> {
        match (&self.tls, self.kind) {
            (None, ListenerKind::Tcp) => Ok(ServerStream::Tcp(tcp)),
            (None, ListenerKind::Ws) => {
                let mut tcp = tcp;
                let already = ws::accept_upgrade(&mut tcp).await?;
                let recorder = Recorder::new(tcp, &already);
                Ok(ServerStream::Ws(Box::new(
                    WsByteStream::server(recorder, already).await,
                )))
            }
            (Some(config), kind) => {
                let conn = ServerConnection::new(config.clone())
                    .map_err(|e| HandshakeError::Tls(e.to_string()))?;
                let mut tls = TlsStream::new(tcp, conn);
                if let Err(error) = tls.handshake().await {
                    tls::log_failed_handshake(peer, &error);
                    return Err(HandshakeError::Tls(error.to_string()));
                }
                if kind == ListenerKind::Tcp {
                    return Ok(ServerStream::Tls(Box::new(tls)));
                }
                let already = ws::accept_upgrade(&mut tls).await?;
                let recorder = Recorder::new(tls, &already);
                Ok(ServerStream::Wss(Box::new(
                    WsByteStream::server(recorder, already).await,
                )))
            }
        }
    }
}

/// The PROXY protocol header at the start of `tcp`, read without a byte past it (what follows is
/// TLS, WebSocket or MQTT). The client's address, `None` when the header names none.
async fn read_proxy_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, HandshakeError> {
    let mut buf = Vec::new();
    loop {
        match proxy_protocol::parse(&buf)? {
            Parsed::Complete { header, .. } => return Ok(header.source),
            Parsed::Incomplete { at_least } => {
                let filled = buf.len();
                buf.resize(filled + at_least, 0);
                let n = tcp
                    .read(&mut buf[filled..])
                    .await
                    .map_err(HandshakeError::ProxyRead)?;
                if n == 0 {
                    return Err(HandshakeError::ProxyClosed);
                }
                buf.truncate(filled + n);
            }
        }
    }
}

/// What a listener made of an accepted socket.
pub struct Accepted {
    pub stream: ServerStream,
    /// The client's address: the PROXY header's source on a `proxy-protocol` listener (when it
    /// names one), else the socket's peer.
    pub remote_addr: Option<SocketAddr>,
}

/// A failed PROXY header, TLS handshake or WebSocket upgrade: that connection is closed and counted.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("PROXY protocol: {0}")]
    Proxy(#[from] ProxyHeaderError),
    #[error("reading the PROXY protocol header: {0}")]
    ProxyRead(io::Error),
    #[error("closed before a complete PROXY protocol header")]
    ProxyClosed,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(#[from] UpgradeError),
}

/// An accepted connection after its handshakes: a byte stream whatever the transport.
/// TLS and WebSocket state is boxed: it is large, and plain TCP connections should not pay for it.
pub enum ServerStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsByteStream<Recorder<TcpStream>>>),
    Wss(Box<WsByteStream<Recorder<TlsStream<TcpStream>>>>),
}

/// A connection on its way to another shard: `Send`, no shard-local types inside.
pub struct DetachedStream {
    fd: OwnedFd,
    tls: Option<Connection>,
    /// For WebSocket: every byte read since the upgrade, replayed on arrival.
    websocket: Option<Vec<u8>>,
}

impl ServerStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Tcp(s) => s,
            ServerStream::Tls(s) => s.get_ref(),
            ServerStream::Ws(s) => s.get_ref().get_ref(),
            ServerStream::Wss(s) => s.get_ref().get_ref().get_ref(),
        }
    }

    /// The socket, for shutdown(2).
    pub fn raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    pub fn set_nodelay(&self) {
        let _ = self.tcp().set_nodelay(true);
    }

    /// Whether bytes read must be kept for a possible move (WebSocket replays them).
    pub fn is_websocket(&self) -> bool {
        matches!(self, ServerStream::Ws(_) | ServerStream::Wss(_))
    }

    /// The client certificate's common name (mutual TLS), if any.
    pub fn peer_common_name(&self) -> Option<String> {
        self.peer_certificate()?.common_name
    }

    /// The client certificate's identity (mutual TLS), if the client presented one.
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        let conn = match self {
            ServerStream::Tls(s) => s.connection(),
            ServerStream::Wss(s) => s.get_ref().get_ref().connection(),
            _ => return None,
        };
        PeerCertificate::from_der(tls::peer_certificate(conn)?)
    }

    /// The kind of transport, as authentication plugins see it.
    pub fn transport(&self) -> Transport {
        match self {
            ServerStream::Tcp(_) => Transport::Tcp,
            ServerStream::Tls(_) => Transport::Tls,
            ServerStream::Ws(_) => Transport::Ws,
            ServerStream::Wss(_) => Transport::Wss,
        }
    }

    /// Stops remembering WebSocket bytes once the connection has settled on its shard.
    pub fn stop_recording(&mut self) {
        match self {
            ServerStream::Ws(s) => drop(s.get_mut().stop_recording()),
            ServerStream::Wss(s) => drop(s.get_mut().stop_recording()),
            _ => {}
        }
    }

    /// Flushes pending TLS records, then takes the connection apart for a move.
    pub async fn detach(self) -> io::Result<DetachedStream> {
        match self {
            ServerStream::Tcp(tcp) => Ok(DetachedStream {
                fd: shards::detach_tcp_stream(tcp),
                tls: None,
                websocket: None,
            }),
            ServerStream::Tls(mut tls) => {
                tls.flush().await?;
                let (tcp, conn) = (*tls).into_parts();
                Ok(DetachedStream {
                    fd: shards::detach_tcp_stream(tcp),
                    tls: Some(conn),
                    websocket: None,
                })
            }
            ServerStream::Ws(ws) => {
                let (tcp, recorded) = (*ws).into_inner().into_inner();
                Ok(DetachedStream {
                    fd: shards::detach_tcp_stream(tcp),
                    tls: None,
                    websocket: Some(recorded),
                })
            }
            ServerStream::Wss(ws) => {
                let (mut tls, recorded) = (*ws).into_inner().into_inner();
                tls.flush().await?;
                let (tcp, conn) = tls.into_parts();
                Ok(DetachedStream {
                    fd: shards::detach_tcp_stream(tcp),
                    tls: Some(conn),
                    websocket: Some(recorded),
                })
            }
        }
    }

    /// Rebuilds a moved connection on this shard. WebSocket bytes read before the move are
    /// replayed, so the MQTT bytes they carried are read again.
    pub async fn attach(detached: DetachedStream) -> io::Result<ServerStream> {
        let tcp = shards::attach_tcp_stream(detached.fd)?;
        Ok(match (detached.tls, detached.websocket) {
            (None, None) => ServerStream::Tcp(tcp),
            (Some(conn), None) => ServerStream::Tls(Box::new(TlsStream::from_parts(tcp, conn))),
            (None, Some(replay)) => {
                let recorder = Recorder::new(tcp, &[]);
                let mut ws = WsByteStream::server(recorder, replay).await;
                ws.get_mut().stop_recording();
                ServerStream::Ws(Box::new(ws))
            }
            (Some(conn), Some(replay)) => {
                let recorder = Recorder::new(TlsStream::from_parts(tcp, conn), &[]);
                let mut ws = WsByteStream::server(recorder, replay).await;
                ws.get_mut().stop_recording();
                ServerStream::Wss(Box::new(ws))
            }
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ServerStream::Tcp($s) => $e,
            ServerStream::Tls($s) => $e,
            ServerStream::Ws($s) => $e,
            ServerStream::Wss($s) => $e,
        }
    };
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_close(cx))
    }
}
