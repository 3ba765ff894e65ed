//! A deliberately tiny HTTP/1.x server for the Prometheus endpoint, run on the control shard:
//! `GET /metrics` (and `HEAD`) answers the text exposition format, any other path 404, any other
//! method 405. One request per connection (`Connection: close`), each connection its own task, so
//! concurrent scrapes do not wait for each other; a bounded number of them at once.
//!
//! Its accept loop, timeouts and response writing are shared with the admin API (`admin/`), which
//! reads its own requests (with bodies).
//!
//! It must not grow into a web framework: no keep-alive, no chunked encoding, no TLS.
//! Request heads are capped in size and time, and nothing a client sends is trusted further than
//! the request line.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::FutureExt;

/// Largest request head read (request line + headers).
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head, and then to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections served at once; more are closed at accept.
const MAX_CONCURRENT: usize = 64;

/// The exposition format's content type (text format 0.0.4).
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /metrics`; `head_only` for `HEAD`.
    Metrics {
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads the request line of a complete head (`head` ends with an empty line).
pub(crate) fn route(head: &[u8]) -> Route {
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return Route::BadRequest;
    };
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    if path == "/metrics" {
        Route::Metrics { head_only }
    } else {
        Route::NotFound
    }
}

/// The full response for a route; `body` is only called for the metrics page.
pub(crate) fn response(route: Route, body: impl FnOnce() -> String) -> Vec<u8> {
    let (status, content_type, body, head_only) = match route {
        Route::Metrics { head_only } => ("200 OK", METRICS_CONTENT_TYPE, body(), head_only),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
            false,
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
            false,
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            false,
        ),
    };
    let allow = if route == Route::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Accepts until the task is dropped; `render` builds the metrics body.
pub(crate) async fn serve(listener: shards::TcpAcceptor, render: Rc<dyn Fn() -> String>) {
    accept_bounded(
        listener,
        MAX_CONCURRENT,
        "metrics endpoint",
        move |stream| {
            let render = render.clone();
            async move {
                let _ = handle(stream, render.as_ref()).await;
            }
        },
    )
    .await
}

/// Accepts until the task is dropped, each connection served by `serve` in a task of its own, at
/// most `max` at once (more are closed at accept); `what` names the endpoint in the log. The
/// admin API's accept loop too.
pub(crate) async fn accept_bounded<F, Fut>(
    listener: shards::TcpAcceptor,
    max: usize,
    what: &'static str,
    serve: F,
) where
    F: Fn(shards::TcpConn) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                log::debug!("{what}: accept failed: {error}");
                shards::rt::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.get() >= max {
            log::debug!("{what}: {max} connections in progress, closing one");
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let active = active.clone();
        let served = serve(stream);
        shards::rt::spawn(async move {
            served.await;
            active.set(active.get() - 1);
        })
        .detach();
    }
}

/// `work` (reading a request), or `None` if it takes longer than [`IO_TIMEOUT`].
pub(crate) async fn within_timeout<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    async { Some(work.await) }
        .or(async {
            shards::rt::sleep(IO_TIMEOUT).await;
            None
        })
        .await
}

/// Writes a whole response and closes the connection, giving up after [`IO_TIMEOUT`].
pub(crate) async fn send_and_close(
    stream: &mut shards::TcpConn,
    bytes: &[u8],
) -> std::io::Result<()> {
    let sent = within_timeout(async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.close().await
    })
    .await;
    sent.unwrap_or(Ok(()))
}

async fn handle(mut stream: shards::TcpConn, render: &dyn Fn() -> String) -> std::io::Result<()> {
    let route = match within_timeout(read_head(&mut stream)).await {
        Some(Ok(Some(head))) => route(&head),
        Some(Ok(None)) => Route::BadRequest,
        Some(Err(error)) => return Err(error),
        None => return Ok(()),
    };
    send_and_close(&mut stream, &response(route, render)).await
}

/// Reads until the blank line that ends a request head; `None` if it is too long or the peer
/// closes first.
async fn read_head(stream: &mut shards::TcpConn) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let ok = String::from_utf8(response(Route::Metrics { head_only: false }, || {
            "a 1\n".to_string()
        }))
        .expect("utf-8");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        assert!(ok.contains("Connection: close\r\n"));
        assert!(ok.ends_with("\r\n\r\na 1\n"));
        let head = String::from_utf8(response(Route::Metrics { head_only: true }, || {
            "a 1\n".to_string()
        }))
        .expect("utf-8");
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        let missing =
            String::from_utf8(response(Route::NotFound, || unreachable!())).expect("utf-8");
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let method =
            String::from_utf8(response(Route::MethodNotAllowed, || unreachable!())).expect("utf-8");
        assert!(method.contains("Allow: GET, HEAD\r\n"));
    }
}
