//! TLS with rustls: loading certificates and keys, the server configuration (the client's is in
//! `tls_client.rs`), and
//! [`TlsStream`], a small async adapter that drives a `rustls::Connection` over any byte stream.
//!
//! Our own adapter (rather than a wrapper crate's) because a connection must be able to move between
//! shards mid-life: [`TlsStream::into_parts`] gives back the socket and the `rustls::Connection` (which
//! is `Send` and carries all TLS state, buffered plaintext included), and [`TlsStream::from_parts`]
//! resumes on another shard without a second handshake. This file parses no MQTT and opens no sockets.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{Connection, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// A TLS set-up problem; always names the file (or setting) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{file}: {reason}")]
    File { file: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_error(file: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_file(file: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(file).map_err(|e| file_error(file, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file; an error if there is none.
pub fn load_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read_file(file)?;
    certificates_from_pem(&pem).map_err(|reason| file_error(file, reason))
}

fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read_file(file)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(file, format!("no usable private key: {e}")))
}

/// CA certificates from a file, a directory of PEM files and/or inline PEM data.
pub fn load_roots(
    cafile: Option<&Path>,
    capath: Option<&Path>,
    cadata: Option<&str>,
) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let mut add =
        |certs: Vec<CertificateDer<'static>>, origin: &Path| -> Result<(), TlsSetupError> {
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| file_error(origin, format!("unusable CA certificate: {e}")))?;
            }
            Ok(())
        };
    if let Some(file) = cafile {
        add(load_certificates(file)?, file)?;
    }
    if let Some(dir) = capath {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| file_error(dir, format!("cannot read directory: {e}")))?;
        let mut found = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            // A CA directory often holds hash links and other files: take what parses.
            if let Ok(pem) = std::fs::read(&path) {
                if let Ok(certs) = certificates_from_pem(&pem) {
                    found += certs.len();
                    add(certs, &path)?;
                }
            }
        }
        if found == 0 {
            return Err(file_error(dir, "no PEM CA certificate in this directory"));
        }
    }
    if let Some(data) = cadata {
        let certs = certificates_from_pem(data.as_bytes())
            .map_err(|r| TlsSetupError::Invalid(format!("cadata: {r}")))?;
        add(certs, Path::new("cadata"))?;
    }
    Ok(roots)
}

/// The rustls server configuration of a listener with `ssl: on`. `alpn` lists the protocols offered
/// (e.g. `mqtt` for MQTT over TLS, `http/1.1` for secure WebSocket).
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid(format!("TLS versions: {e}")))?;
    let has_ca = tls.cafile.is_some() || tls.capath.is_some() || tls.cadata.is_some();
    let builder = if has_ca {
        let roots = load_roots(
            tls.cafile.as_deref(),
            tls.capath.as_deref(),
            tls.cadata.as_deref(),
        )?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if tls.require_certificate {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsSetupError::Invalid(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let certs = load_certificates(&tls.certfile)?;
    let key = load_private_key(&tls.keyfile)?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        file_error(
            &tls.keyfile,
            format!(
                "does not match the certificate in {}: {e}",
                tls.certfile.display()
            ),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The server name to verify for a host (an IP address or a DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsSetupError::Invalid(format!("server name '{host}': {e}")))
}

/// The peer's end-entity certificate (DER), if it presented one.
pub fn peer_certificate(conn: &Connection) -> Option<&CertificateDer<'static>> {
    conn.peer_certificates()?.first()
}

/// The broker's one line for a server handshake that failed: who, and rustls's reason (a client
/// that does not trust our certificate, a plain-MQTT client on the TLS port, a missing client
/// certificate), at info so that an operator sees why a client cannot connect.
pub fn log_failed_handshake(peer: Option<std::net::SocketAddr>, error: &io::Error) {
    match peer {
        Some(peer) => log::info!("TLS handshake with {peer} failed: {error}"),
        None => log::info!("TLS handshake with a client (address unknown) failed: {error}"),
    }
}

/// TLS over `IO`: encrypts writes, decrypts reads; `handshake` completes the TLS handshake.
pub struct TlsStream<IO> {
    io: IO,
    conn: Connection,
    /// The peer closed the TCP stream (or sent close_notify).
    eof: bool,
}

/// Lets rustls' synchronous `read_tls`/`write_tls` use an async stream: `Pending` becomes `WouldBlock`.
struct SyncIo<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncIo<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncIo<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    pub fn new(io: IO, conn: impl Into<Connection>) -> Self {
        TlsStream {
            io,
            conn: conn.into(),
            eof: false,
        }
    }

    /// Resumes a connection moved from another shard (see [`TlsStream::into_parts`]).
    pub fn from_parts(io: IO, conn: Connection) -> Self {
        Self::new(io, conn)
    }

    /// The socket and the TLS state, for moving the connection. Call after a flush.
    pub fn into_parts(self) -> (IO, Connection) {
        (self.io, self.conn)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Sends what rustls has queued; `Ready(Ok(()))` once nothing is left.
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut sync = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.conn.write_tls(&mut sync) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads TLS records from the socket and processes them. `Ready(Ok(0))` at end of stream.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut sync) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if n == 0 {
            self.eof = true;
        }
        if let Err(error) = self.conn.process_new_packets() {
            // Let the peer know why (the alert is queued by rustls), then fail.
            let _ = self.poll_write_tls(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
        }
        Poll::Ready(Ok(n))
    }

    /// Completes the handshake (both roles).
    pub async fn handshake(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| loop {
            match self.poll_write_tls(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_read_tls(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    )))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end of stream like any other for MQTT.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            // Records such as session tickets or key updates may need an answer.
            if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
                return Poll::Ready(Err(e));
            }
            match this.poll_read_tls(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Keep rustls' buffer bounded: push out what is queued before accepting more.
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        if this.conn.wants_write() {
            return Poll::Pending;
        }
        let n = this.conn.writer().write(buf)?;
        if let Poll::Ready(Err(e)) = this.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        match this.poll_write_tls(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.send_close_notify();
        match this.poll_write_tls(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_close(cx),
            other => other,
        }
    }
}
