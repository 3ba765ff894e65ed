//! Byte-stream transports shared by the broker's listeners and the client: TCP, TLS (rustls),
//! WebSocket and secure WebSocket (tungstenite), plus broker URLs and the PROXY protocol header a
//! listener behind a TCP proxy reads first.
//!
//! Every transport yields something that implements `AsyncRead + AsyncWrite` over the shard's sockets
//! (`shards::TcpConn`);
//! none of them parses MQTT. The broker's side (accepting, handshakes, hand-off between shards) and the
//! client's side (`connect_client`) live here so the two never drift apart.

// Public for the client, the CLIs and the tests; embedders reach it only through `BrokerConfig`
// and the client: not yet documented item by item (TODO: the client's part).
#![allow(missing_docs)]

pub mod proxy_protocol;
pub mod server;
pub mod tls;
pub mod tls_client;
pub mod url;
pub mod ws;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use shards::TcpConn as TcpStream;

pub use url::{BrokerUrl, Scheme, UrlError};

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot resolve '{host}': {source}")]
    Resolve { host: String, source: io::Error },
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

/// A failed client TLS handshake. An untrusted broker certificate is the usual first-hour failure
/// (a self-signed CA not given), and a certificate for another name the second: both say what to do.
fn handshake_error(error: io::Error) -> TransportError {
    let certificate_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::InvalidCertificate(e) => Some(e),
            _ => None,
        });
    let hint = match certificate_error {
        Some(rustls::CertificateError::UnknownIssuer) => {
            " (the broker's certificate is not signed by a CA this client trusts: give that CA \
             with --ca-file, --ca-path or --ca-data, or cafile in the client config)"
        }
        Some(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => {
            " (the broker's certificate is for another host name: connect by a name it lists, \
             or skip the name check with --insecure or check_hostname: false in the client config)"
        }
        _ => "",
    };
    TransportError::Tls(format!("{error}{hint}"))
}

/// Client-side transport settings (TLS trust and WebSocket headers).
#[derive(Debug, Clone, Default)]
pub struct ClientTransportOptions {
    /// PEM file of CA certificates to trust (`--ca-file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Directory of PEM CA certificates (`--ca-path`).
    pub ca_path: Option<std::path::PathBuf>,
    /// PEM CA certificates inline (`--ca-data`).
    pub ca_data: Option<String>,
    /// The client certificate to present (PEM; `--cert`, `certfile`), with `key_file`.
    pub cert_file: Option<std::path::PathBuf>,
    /// The private key of `cert_file` (`--key`, `keyfile`).
    pub key_file: Option<std::path::PathBuf>,
    /// Take a broker certificate issued for another host name (`--insecure`,
    /// `check_hostname: false`); the chain is still verified.
    pub skip_hostname_check: bool,
    /// Take any broker certificate (`verify_cert: false`).
    pub skip_cert_verification: bool,
    /// Extra HTTP headers for the WebSocket upgrade request (`--extra-headers`).
    pub extra_headers: Vec<(String, String)>,
    /// Limit for TCP connect plus handshakes; `None` = 10 s.
    pub connect_timeout: Option<Duration>,
}

/// A client's connection to a broker, whatever the scheme.
/// TLS and WebSocket state is boxed: it is large, and plain TCP connections should not pay for it.
pub enum ClientStream {
    Tcp(TcpStream),
    Tls(Box<tls::TlsStream<TcpStream>>),
    Ws(Box<ws::WsByteStream<TcpStream>>),
    Wss(Box<ws::WsByteStream<tls::TlsStream<TcpStream>>>),
}

/// Connects to the broker named by `url` (TCP, then TLS and WebSocket handshakes as the scheme says).
/// Must run on a shard's executor (see `shards::rt`).
pub async fn connect_client(
    url: &BrokerUrl,
    options: &ClientTransportOptions,
) -> Result<ClientStream, TransportError> {
    let addr = format!("{}:{}", url.host, url.port);
    let limit = options.connect_timeout.unwrap_or(Duration::from_secs(10));
    let tcp: TcpStream = {
        use futures_lite::FutureExt;
        let addr_for_err = addr.clone();
        let connect = async {
            let host = url.host.clone();
            let port = url.port;
            let addrs: Vec<std::net::SocketAddr> =
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                    .map_err(|source| TransportError::Resolve {
                        host: url.host.clone(),
                        source,
                    })?
                    .collect();
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(TransportError::Connect {
                addr: addr.clone(),
                source: last,
            })
        };
        connect
            .or(async {
                shards::rt::sleep(limit).await;
                Err(TransportError::Timeout(addr_for_err))
            })
            .await?
    };
    let _ = tcp.set_nodelay(true);
    let handshakes = async {
        let tls = if url.scheme.is_tls() {
            let config = tls_client::client_config(&tls_client::ClientTls {
                cafile: options.ca_file.as_deref(),
                capath: options.ca_path.as_deref(),
                cadata: options.ca_data.as_deref(),
                certfile: options.cert_file.as_deref(),
                keyfile: options.key_file.as_deref(),
                check_hostname: !options.skip_hostname_check,
                verify_cert: !options.skip_cert_verification,
            })
            .map_err(|e| TransportError::Tls(e.to_string()))?;
            let name =
                tls::server_name(&url.host).map_err(|e| TransportError::Tls(e.to_string()))?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            let mut stream = tls::TlsStream::new(tcp, conn);
            stream.handshake().await.map_err(handshake_error)?;
            Ok::<_, TransportError>(Secured::Tls(stream))
        } else {
            Ok(Secured::Plain(tcp))
        }?;
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let ws_url = format!(
            "{}://{host}:{}{}",
            if url.scheme.is_tls() { "wss" } else { "ws" },
            url.port,
            url.path
        );
        let ws_error = |e: tungstenite::Error| TransportError::WebSocket(e.to_string());
        Ok(match (url.scheme.is_websocket(), tls) {
            (false, Secured::Plain(tcp)) => ClientStream::Tcp(tcp),
            (false, Secured::Tls(tls)) => ClientStream::Tls(Box::new(tls)),
            (true, Secured::Plain(tcp)) => ClientStream::Ws(Box::new(
                ws::WsByteStream::client(tcp, &ws_url, &options.extra_headers)
                    .await
                    .map_err(ws_error)?,
            )),
            (true, Secured::Tls(tls)) => ClientStream::Wss(Box::new(
                ws::WsByteStream::client(tls, &ws_url, &options.extra_headers)
                    .await
                    .map_err(ws_error)?,
            )),
        })
    };
    let addr = format!("{}:{}", url.host, url.port);
    {
        use futures_lite::FutureExt;
        handshakes
            .or(async {
                shards::rt::sleep(limit).await;
                Err(TransportError::Timeout(addr))
            })
            .await
    }
}

/// The stream under a possible WebSocket layer (short-lived: not worth boxing).
#[allow(clippy::large_enum_variant)]
enum Secured {
    Plain(TcpStream),
    Tls(tls::TlsStream<TcpStream>),
}

macro_rules! delegate_client {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ClientStream::Tcp($s) => $e,
            ClientStream::Tls($s) => $e,
            ClientStream::Ws($s) => $e,
            ClientStream::Wss($s) => $e,
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        delegate_client!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate_client!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_client!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_client!(self, s => Pin::new(s).poll_close(cx))
    }
}
