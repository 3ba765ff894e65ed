//! The admin HTTP API (`admin:` in the configuration; off by default): JSON endpoints under
//! `/api/v1/` to look at and act on a running broker, every request carrying the bearer token of
//! `admin.token_file`.
//!
//! Who does what: the control shard accepts the connections and reads and writes the bytes
//! (`request.rs`), a bounded number at once; every parsed request goes to one worker thread of
//! its own (`amqtt-admin`), which answers it (`api.rs`) by asking the shards through the
//! embedding API's host requests, blocking on them there. So neither the control shard's loop nor
//! a data shard ever waits for an admin request: a data shard only answers a host request (a
//! page of its sessions, its retained listing, a publish) between its other work.
//!
//! What must not live here: a second way into the shards (only `HostClient`), or any of the
//! broker's state (it asks each time).

mod api;
mod request;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::host_client::HostClient;
use super::reload::{Addresses, Reloader};
use api::Api;
use request::Request;

/// Connections served at once; more are closed at accept.
const MAX_CONCURRENT: usize = 32;
/// Requests waiting for the worker thread; more are answered 503.
const QUEUE: usize = 32;

/// Everything the control shard needs to serve the admin API (built when the broker starts).
pub(crate) struct AdminSetup {
    /// Bound, not yet listening on the control shard.
    pub listener: std::net::TcpListener,
    api: Api,
}

/// Why the admin token could not be read.
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin.token_file: cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "admin.token_file: {} holds no token (its first line is empty)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

impl AdminSetup {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        token: &str,
        host: HostClient,
        started: Instant,
        listeners: Addresses,
        reloader: Arc<Mutex<Reloader>>,
    ) -> AdminSetup {
        AdminSetup {
            listener,
            api: Api {
                host,
                token_digest: Sha256::digest(token.as_bytes()).into(),
                started,
                listeners,
                reloader,
            },
        }
    }
}

/// A request for the worker thread, and where its response bytes go.
type Job = (Request, flume::Sender<Vec<u8>>);

/// Serves the admin API until the task is dropped (the worker thread then ends with it).
pub(crate) async fn serve(setup: AdminSetup) {
    let listener = match shards::TcpAcceptor::new(setup.listener) {
        Ok(listener) => listener,
        Err(error) => {
            log::error!("admin API unusable: {error}");
            return;
        }
    };
    let (jobs, worker_jobs) = flume::bounded::<Job>(QUEUE);
    let api = setup.api;
    let worker = std::thread::Builder::new()
        .name("amqtt-admin".to_string())
        .spawn(move || {
            for (request, reply) in worker_jobs.iter() {
                let answer = api.answer(&request);
                let _ = reply.send(request::response(answer.status, &answer.body, answer.allow));
            }
        });
    if let Err(error) = worker {
        log::error!("admin API unusable: cannot start its thread: {error}");
        return;
    }
    super::http::accept_bounded(listener, MAX_CONCURRENT, "admin API", move |stream| {
        let jobs = jobs.clone();
        async move {
            let _ = handle(stream, &jobs).await;
        }
    })
    .await
}

async fn handle(mut stream: shards::TcpConn, jobs: &flume::Sender<Job>) -> std::io::Result<()> {
    let bytes = match super::http::within_timeout(request::read(&mut stream)).await {
        None | Some(Ok(None)) => return Ok(()),
        Some(Err(error)) => return Err(error),
        Some(Ok(Some(Err(refusal)))) => {
            request::response(refusal.status, &json!({ "error": refusal.message }), None)
        }
        Some(Ok(Some(Ok(request)))) => {
            let (reply, answer) = flume::bounded(1);
            match jobs.try_send((request, reply)) {
                // The worker answers within the host requests' own deadline.
                Ok(()) => match answer.recv_async().await {
                    Ok(bytes) => bytes,
                    Err(_) => busy("the admin worker has stopped"),
                },
                Err(_) => busy("too many admin requests waiting: retry"),
            }
        }
    };
    super::http::send_and_close(&mut stream, &bytes).await
}

fn busy(message: &str) -> Vec<u8> {
    request::response(503, &json!({ "error": message }), None)
}
