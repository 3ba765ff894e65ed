//! One admin API request off the wire: the head parsed with `httparse` (method, path, query,
//! the `Authorization` header, `Content-Length`), then the body, both bounded in size. Also the
//! response bytes (JSON, `Connection: close`).
//!
//! Only HTTP framing lives here: no routing, no broker, no token check (`api.rs`, `auth.rs`).

use futures_lite::io::AsyncReadExt;

/// Largest request head (request line + headers).
const MAX_HEAD: usize = 8 * 1024;
/// Largest request body (a publish's JSON, its payload included).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// A parsed request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The path, still percent-encoded (`/api/v1/retained/a%2Fb`).
    pub path: String,
    /// The query string without `?` (empty if none).
    pub query: String,
    /// The `Authorization` header's value, if sent.
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// Why no request could be read: answered with this status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: &str) -> Refusal {
    Refusal {
        status,
        message: message.to_string(),
    }
}

/// Reads one request; `Ok(None)` if the peer closed before sending a whole head.
pub(crate) async fn read(
    stream: &mut shards::TcpConn,
) -> std::io::Result<Option<Result<Request, Refusal>>> {
    let mut data = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (request, body_start, length) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&chunk[..n]);
        match parse_head(&data) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if data.len() > MAX_HEAD => {
                return Ok(Some(Err(refuse(431, "request head too large"))))
            }
            Ok(None) => {}
            Err(refusal) => return Ok(Some(Err(refusal))),
        }
    };
    let mut body = data.split_off(body_start);
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(Err(refuse(400, "body shorter than Content-Length"))));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some(Ok(Request { body, ..request })))
}

/// The request (without body), where its body starts in `data` and its length; `Ok(None)` if
/// the head is not complete yet.
fn parse_head(data: &[u8]) -> Result<Option<(Request, usize, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let body_start = match parsed.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(refuse(400, &format!("malformed request: {error}"))),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(refuse(400, "malformed request line"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        ..Request::default()
    };
    let mut length = 0usize;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| refuse(400, "bad header"))?;
        if header.name.eq_ignore_ascii_case("authorization") {
            request.authorization = Some(value.trim().to_string());
        } else if header.name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| refuse(400, "bad Content-Length"))?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse(
                411,
                "chunked bodies are not accepted: send Content-Length",
            ));
        }
    }
    if length > MAX_BODY {
        return Err(refuse(413, "body larger than 1 MiB"));
    }
    Ok(Some((request, body_start, length)))
}

/// A JSON response, `Connection: close`; `allow` for a 405.
pub(crate) fn response(status: u16, body: &serde_json::Value, allow: Option<&str>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let text = body.to_string();
    let mut extra = String::new();
    if let Some(allow) = allow {
        extra.push_str(&format!("Allow: {allow}\r\n"));
    }
    if status == 401 {
        extra.push_str("WWW-Authenticate: Bearer\r\n");
    }
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        text.len()
    )
    .into_bytes();
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let data = b"POST /api/v1/publish?x=1 HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}";
        let (request, start, length) = parse_head(data).expect("valid").expect("complete");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1/publish");
        assert_eq!(request.query, "x=1");
        assert_eq!(request.authorization.as_deref(), Some("Bearer t"));
        assert_eq!((&data[start..], length), (&b"{}"[..], 2));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(
            parse_head(b"\x01 / HTTP/1.1\r\n\r\n").map_err(|r| r.status),
            Err(400)
        );
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse_head(big.as_bytes()).map_err(|r| r.status), Err(413));
    }

    #[test]
    fn responses() {
        let text = String::from_utf8(response(
            405,
            &serde_json::json!({"error": "x"}),
            Some("GET"),
        ))
        .expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET\r\n") && text.ends_with("\r\n\r\n{\"error\":\"x\"}"));
    }
}
