//! MQTT over WebSocket: the server's HTTP upgrade (RFC 6455, subprotocol `mqtt` or `mqttv3.1`), the
//! client's, and [`WsByteStream`], which turns binary WebSocket messages into the byte stream MQTT
//! expects (a packet may span messages, and a message may hold several packets).
//!
//! The server performs the upgrade itself rather than through tungstenite's handshake so that it
//! knows exactly which bytes were read: a connection handed to another shard is rebuilt there from the
//! raw WebSocket bytes ([`Recorder`]) with `from_partially_read`. Text frames are refused with close
//! code 1003 (unsupported data). This file parses no MQTT.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_lite::Stream;
use futures_util::Sink;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

/// The longest HTTP upgrade request accepted.
const MAX_REQUEST: usize = 16 * 1024;

/// Why an upgrade was refused (the HTTP status has already been sent when possible).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("I/O during the WebSocket upgrade: {0}")]
    Io(#[from] io::Error),
    #[error("bad WebSocket upgrade request: {0}")]
    BadRequest(&'static str),
    #[error("WebSocket upgrade request larger than {MAX_REQUEST} bytes")]
    TooLarge,
}

/// A stream that can remember the bytes read through it, so a WebSocket connection can be replayed
/// on another shard. Recording stops with [`Recorder::stop_recording`].
pub struct Recorder<S> {
    inner: S,
    recorded: Option<Vec<u8>>,
}

impl<S> Recorder<S> {
    /// Starts recording with `already` (bytes read before this wrapper existed).
    pub fn new(inner: S, already: &[u8]) -> Self {
        Recorder {
            inner,
            recorded: Some(already.to_vec()),
        }
    }

    pub fn stop_recording(&mut self) -> Vec<u8> {
        self.recorded.take().unwrap_or_default()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> (S, Vec<u8>) {
        (self.inner, self.recorded.unwrap_or_default())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(recorded)) = (&result, this.recorded.as_mut()) {
            recorded.extend_from_slice(&buf[..*n]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// What a valid upgrade request asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub key: String,
    /// The subprotocol we answer with (`mqtt` preferred, then `mqttv3.1`), if the client offered one.
    pub subprotocol: Option<&'static str>,
    pub path: String,
}

/// Parses an HTTP upgrade request; `Ok(None)` when more bytes are needed. Returns the request and
/// the length of the header block.
pub fn parse_upgrade(bytes: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::BadRequest("not an HTTP request")),
    };
    if request.method != Some("GET") {
        return Err(UpgradeError::BadRequest("method must be GET"));
    }
    if request.version != Some(1) {
        return Err(UpgradeError::BadRequest("HTTP/1.1 required"));
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<&str>>()
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("Upgrade", "websocket") {
        return Err(UpgradeError::BadRequest("missing 'Upgrade: websocket'"));
    }
    if !has_token("Connection", "upgrade") {
        return Err(UpgradeError::BadRequest("missing 'Connection: Upgrade'"));
    }
    if header("Sec-WebSocket-Version").first().map(|v| v.trim()) != Some("13") {
        return Err(UpgradeError::BadRequest("Sec-WebSocket-Version must be 13"));
    }
    let key = match header("Sec-WebSocket-Key").first() {
        Some(k) if !k.trim().is_empty() => k.trim().to_string(),
        _ => return Err(UpgradeError::BadRequest("missing Sec-WebSocket-Key")),
    };
    let offered: Vec<String> = header("Sec-WebSocket-Protocol")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let subprotocol = ["mqtt", "mqttv3.1"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    Ok(Some((
        UpgradeRequest {
            key,
            subprotocol,
            path: request.path.unwrap_or("/").to_string(),
        },
        len,
    )))
}

fn switching_protocols(request: &UpgradeRequest) -> String {
    let accept = tungstenite::handshake::derive_accept_key(request.key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(protocol) = request.subprotocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    response
}

/// Server side of the upgrade on `stream`: reads the request, answers 101 (or 400/426 and fails).
/// Returns the bytes read after the request (the start of the WebSocket stream).
pub async fn accept_upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, UpgradeError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpgradeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_upgrade(&buf) {
            Ok(Some((request, len))) => {
                stream
                    .write_all(switching_protocols(&request).as_bytes())
                    .await?;
                stream.flush().await?;
                return Ok(buf.split_off(len));
            }
            Ok(None) if buf.len() > MAX_REQUEST => {
                let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n").await;
                return Err(UpgradeError::TooLarge);
            }
            Ok(None) => {}
            Err(error) => {
                let response: &[u8] = match error {
                    UpgradeError::BadRequest("Sec-WebSocket-Version must be 13") => {
                        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    }
                    _ => b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                };
                let _ = stream.write_all(response).await;
                let _ = stream.flush().await;
                return Err(error);
            }
        }
    }
}

/// Frame and message limits: MQTT's own maximum packet size is enforced above this layer.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

/// Binary WebSocket messages as a byte stream.
pub struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsByteStream<S> {
    /// Wraps a stream whose upgrade is done; `already` holds bytes read past the upgrade.
    pub async fn server(stream: S, already: Vec<u8>) -> Self {
        let ws =
            WebSocketStream::from_partially_read(stream, already, Role::Server, Some(ws_config()))
                .await;
        WsByteStream {
            ws,
            pending: Bytes::new(),
            closed: false,
        }
    }

    /// Client side: sends the upgrade request for `url` (with `extra_headers`) and checks the answer.
    pub async fn client(
        stream: S,
        url: &str,
        extra_headers: &[(String, String)],
    ) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        for (name, value) in extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
            headers.insert(name, value);
        }
        let (ws, _response) =
            async_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
        Ok(WsByteStream {
            ws,
            pending: Bytes::new(),
            closed: false,
        })
    }

    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    /// The underlying stream; buffered WebSocket state is dropped (a moved connection replays it).
    pub fn into_inner(self) -> S {
        self.ws.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.ws.get_mut()
    }
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        // The peer went away without a close frame: a lost connection, not bad input.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "WebSocket reset without close frame",
        ),
        // Anything else is a frame that breaks RFC 6455: the runtime counts it as malformed input.
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = buf.len().min(this.pending.len());
                buf[..n].copy_from_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(n));
            }
            if this.closed {
                return Poll::Ready(Ok(0));
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.closed = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    this.closed = true;
                    return match e {
                        tungstenite::Error::ConnectionClosed
                        | tungstenite::Error::AlreadyClosed => Poll::Ready(Ok(0)),
                        other => Poll::Ready(Err(ws_error(other))),
                    };
                }
                Poll::Ready(Some(Ok(message))) => match message {
                    Message::Binary(data) => this.pending = data,
                    Message::Close(_) => this.closed = true,
                    Message::Text(_) => {
                        // MQTT is binary only [MQTT-6.0.0-1]: close with 1003 (unsupported data).
                        let frame = CloseFrame {
                            code: CloseCode::Unsupported,
                            reason: "MQTT over WebSocket uses binary frames".into(),
                        };
                        if let Poll::Ready(Ok(())) = Pin::new(&mut this.ws).poll_ready(cx) {
                            let _ = Pin::new(&mut this.ws).start_send(Message::Close(Some(frame)));
                            let _ = Pin::new(&mut this.ws).poll_flush(cx);
                        }
                        this.closed = true;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "WebSocket text frame",
                        )));
                    }
                    // Pings are answered by tungstenite; pongs and raw frames carry nothing for us.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                },
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.ws).poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            Poll::Ready(Ok(())) => {}
        }
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(ws_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n";

    #[test]
    fn parses_a_valid_upgrade_and_prefers_mqtt() {
        let (request, len) = parse_upgrade(GOOD.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!(len, GOOD.len());
        assert_eq!(request.subprotocol, Some("mqtt"));
        assert_eq!(request.path, "/mqtt");
        let response = switching_protocols(&request);
        // RFC 6455's own example key and accept value.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    }

    #[test]
    fn partial_requests_need_more_bytes() {
        assert!(parse_upgrade(&GOOD.as_bytes()[..40])
            .expect("no error")
            .is_none());
    }

    #[test]
    fn refuses_requests_that_break_rfc_6455() {
        for (bad, why) in [
            (
                GOOD.replace("Version: 13", "Version: 8"),
                "Sec-WebSocket-Version must be 13",
            ),
            (GOOD.replace("GET", "POST"), "method must be GET"),
            (
                GOOD.replace("Upgrade: websocket\r\n", ""),
                "missing 'Upgrade: websocket'",
            ),
            (
                GOOD.replace("keep-alive, Upgrade", "keep-alive"),
                "missing 'Connection: Upgrade'",
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                "missing Sec-WebSocket-Key",
            ),
        ] {
            match parse_upgrade(bad.as_bytes()) {
                Err(UpgradeError::BadRequest(reason)) => assert_eq!(reason, why),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn old_subprotocol_name_is_accepted() {
        let request = GOOD.replace("mqttv3.1, mqtt", "mqttv3.1");
        let (parsed, _) = parse_upgrade(request.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed.subprotocol, Some("mqttv3.1"));
    }
}
