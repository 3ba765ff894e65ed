//! The admin API's endpoints, run on the admin worker thread (never on a shard): the request's
//! token checked, its path routed, the shards asked through [`HostClient`] (the embedding API's
//! requests) and the JSON answer built. Listings are paginated by a cursor (the last client id or
//! topic of the previous page) and bounded ([`MAX_LIMIT`] entries a page).
//!
//! No HTTP framing here (`request.rs`), no sockets (`mod.rs`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::broker::{RetainedInfo, SessionInfo};
use crate::protocol::{ProtocolLevel, QoS};

use super::super::host_client::{HostClient, HostError};
use super::super::reload::{Addresses, ReloadError, Reloader};
use super::request::Request;

/// Entries a page holds when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 1000;

/// What the endpoints need besides the shards.
pub(crate) struct Api {
    pub host: HostClient,
    /// SHA-256 of the token: compared with the request's in constant time.
    pub token_digest: [u8; 32],
    pub started: Instant,
    pub listeners: Addresses,
    /// `POST /api/v1/reload`.
    pub reloader: Arc<Mutex<Reloader>>,
}

/// A response: status, JSON body, and `Allow` for a 405.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub allow: Option<&'static str>,
}

fn ok(body: Value) -> Answer {
    Answer {
        status: 200,
        body,
        allow: None,
    }
}

pub(crate) fn error(status: u16, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({ "error": message.into() }),
        allow: None,
    }
}

fn not_allowed(method: &str, allow: &'static str) -> Answer {
    Answer {
        allow: Some(allow),
        ..error(405, format!("{method} not allowed here (allowed: {allow})"))
    }
}

fn host_error(failure: HostError) -> Answer {
    match failure {
        HostError::Topic { .. } => error(400, failure.to_string()),
        HostError::Stopped | HostError::Timeout { .. } => error(503, failure.to_string()),
    }
}

/// Whether `presented` equals the token: both hashed, the digests compared without an early
/// exit, so the time taken says nothing about how much of it matched.
pub(crate) fn token_matches(digest: &[u8; 32], presented: &str) -> bool {
    let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    digest
        .iter()
        .zip(other.iter())
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

impl Api {
    /// Answers one request (blocking: it waits for the shards).
    pub(crate) fn answer(&self, request: &Request) -> Answer {
        let token = request
            .authorization
            .as_deref()
            .and_then(|value| value.strip_prefix("Bearer "));
        match token {
            None => return error(401, "missing bearer token (Authorization: Bearer TOKEN)"),
            Some(token) if !token_matches(&self.token_digest, token.trim()) => {
                return error(401, "wrong token")
            }
            Some(_) => {}
        }
        let Some(rest) = request.path.strip_prefix("/api/v1/") else {
            return error(404, format!("no such endpoint: {}", request.path));
        };
        let method = request.method.as_str();
        match rest.split_once('/') {
            None => match (rest, method) {
                ("info", "GET") => self.info(),
                ("sessions", "GET") => self.sessions(&request.query),
                ("retained", "GET") => self.retained(&request.query),
                ("publish", "POST") => self.publish(&request.body),
                ("reload", "POST") => self.reload(),
                ("info" | "sessions" | "retained", _) => not_allowed(method, "GET"),
                ("publish" | "reload", _) => not_allowed(method, "POST"),
                _ => error(404, format!("no such endpoint: {}", request.path)),
            },
            Some(("clients", rest)) => match rest.strip_suffix("/kick") {
                Some(name) if method == "POST" => match decoded_name(name, &request.path) {
                    Ok(client_id) => self.kick(&client_id),
                    Err(answer) => answer,
                },
                Some(_) => not_allowed(method, "POST"),
                None => error(404, format!("no such endpoint: {}", request.path)),
            },
            Some((collection, name)) => {
                let name = match decoded_name(name, &request.path) {
                    Ok(name) => name,
                    Err(answer) => return answer,
                };
                match (collection, method) {
                    ("sessions", "GET") => self.session(&name),
                    ("sessions", "DELETE") => self.delete_session(&name),
                    ("sessions", _) => not_allowed(method, "GET, DELETE"),
                    ("retained", "GET") => self.retained_one(&name),
                    ("retained", "DELETE") => self.delete_retained(&name),
                    ("retained", _) => not_allowed(method, "GET, DELETE"),
                    _ => error(404, format!("no such endpoint: {}", request.path)),
                }
            }
        }
    }

    /// Reads the configuration file again: 200 with what changed and what was kept; 422 when
    /// the file is refused (nothing changed), 409 without a file, 503 when a shard did not take
    /// its part.
    fn reload(&self) -> Answer {
        let result = self
            .reloader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .reload();
        match result {
            Ok(report) => ok(json!({
                "applied": report.applied,
                "kept": report.kept,
                "disconnected": report.disconnected,
            })),
            Err(failure) => {
                let status = match &failure {
                    ReloadError::NoFile | ReloadError::Bind { .. } => 409,
                    ReloadError::Shards(_) => 503,
                    _ => 422,
                };
                Answer {
                    body: json!({
                        "error": failure.to_string(),
                        "changed_nothing": failure.changed_nothing(),
                    }),
                    ..error(status, "")
                }
            }
        }
    }

    fn kick(&self, client_id: &str) -> Answer {
        match self.host.kick(client_id) {
            Ok(true) => ok(json!({ "kicked": client_id })),
            Ok(false) => error(404, format!("no connected client {client_id:?}")),
            Err(e) => host_error(e),
        }
    }

    fn delete_session(&self, client_id: &str) -> Answer {
        match self.host.delete_session(client_id) {
            Ok(true) => ok(json!({ "deleted": client_id })),
            Ok(false) => error(404, format!("no session {client_id:?}")),
            Err(e) => host_error(e),
        }
    }

    fn info(&self) -> Answer {
        let listeners: Vec<Value> = self
            .listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
            .collect();
        ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "shards": self.host.shards,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "listeners": listeners,
        }))
    }

    fn sessions(&self, query: &str) -> Answer {
        page_of(
            query,
            "sessions",
            || self.host.sessions(),
            |s| &s.client_id,
            session_json,
        )
    }

    fn session(&self, client_id: &str) -> Answer {
        match self.host.sessions() {
            Ok(sessions) => match sessions.iter().find(|s| s.client_id == client_id) {
                Some(session) => ok(session_json(session)),
                None => error(404, format!("no session {client_id:?}")),
            },
            Err(e) => host_error(e),
        }
    }

    fn retained(&self, query: &str) -> Answer {
        let listing = || self.host.retained_topics();
        page_of(
            query,
            "retained",
            listing,
            |r| r.topic.as_str(),
            retained_json,
        )
    }

    fn find_retained(&self, topic: &str) -> Result<Option<RetainedInfo>, HostError> {
        Ok(self
            .host
            .retained_topics()?
            .into_iter()
            .find(|r| r.topic.as_str() == topic))
    }

    fn retained_one(&self, topic: &str) -> Answer {
        match self.find_retained(topic) {
            Ok(Some(info)) => ok(retained_json(&info)),
            Ok(None) => error(404, format!("no retained message on {topic:?}")),
            Err(e) => host_error(e),
        }
    }

    fn delete_retained(&self, topic: &str) -> Answer {
        match self.find_retained(topic) {
            Ok(Some(_)) => match self
                .host
                .publish(topic, Bytes::new(), QoS::AtMostOnce, true)
            {
                Ok(()) => ok(json!({ "deleted": topic })),
                Err(e) => host_error(e),
            },
            Ok(None) => error(404, format!("no retained message on {topic:?}")),
            Err(e) => host_error(e),
        }
    }

    fn publish(&self, body: &[u8]) -> Answer {
        let spec: PublishSpec = match serde_json::from_slice(body) {
            Ok(spec) => spec,
            Err(e) => return error(400, format!("bad JSON: {e}")),
        };
        let payload = match spec.payload_encoding.as_deref().unwrap_or("utf-8") {
            "utf-8" | "utf8" => Bytes::from(spec.payload.into_bytes()),
            "base64" => match base64::engine::general_purpose::STANDARD.decode(&spec.payload) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => return error(400, format!("payload is not base64: {e}")),
            },
            other => {
                return error(
                    400,
                    format!("payload_encoding {other:?}: must be \"utf-8\" or \"base64\""),
                )
            }
        };
        let Some(qos) = QoS::from_u8(spec.qos) else {
            return error(400, format!("qos {}: must be 0, 1 or 2", spec.qos));
        };
        match self.host.publish(&spec.topic, payload, qos, spec.retain) {
            Ok(()) => ok(json!({ "published": spec.topic })),
            Err(e) => host_error(e),
        }
    }
}

/// A page of a listing (sorted by `key`), `{field: [...], "next_cursor": ...}`: `query` checked
/// before `fetch` asks the shards.
fn page_of<T>(
    query: &str,
    field: &str,
    fetch: impl FnOnce() -> Result<Vec<T>, HostError>,
    key: impl Fn(&T) -> &str,
    to_json: fn(&T) -> Value,
) -> Answer {
    let page = match Page::parse(query) {
        Ok(page) => page,
        Err(reason) => return error(400, reason),
    };
    match fetch() {
        Ok(listing) => {
            let (items, next) = page.cut(&listing, key);
            let items: Vec<Value> = items.iter().map(to_json).collect();
            ok(json!({ field: items, "next_cursor": next }))
        }
        Err(e) => host_error(e),
    }
}

/// `POST /api/v1/publish`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSpec {
    topic: String,
    #[serde(default)]
    payload: String,
    /// `utf-8` (default) or `base64`.
    payload_encoding: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

fn session_json(s: &SessionInfo) -> Value {
    let subscriptions: Vec<Value> = s
        .subscriptions
        .iter()
        .map(|(filter, qos)| json!({ "filter": filter, "qos": *qos as u8 }))
        .collect();
    json!({
        "client_id": s.client_id,
        "username": s.username,
        "connected": s.connected,
        "clean_session": s.clean_session,
        "shard": s.shard,
        "protocol": s.protocol.map(protocol_name),
        "address": s.address.map(|a| a.to_string()),
        "listener": s.listener,
        "subscriptions": subscriptions,
        "queued": s.queued,
        "inflight": s.inflight,
    })
}

/// `"3.1"`, `"3.1.1"` or `"5"`.
fn protocol_name(level: ProtocolLevel) -> &'static str {
    match level {
        ProtocolLevel::V31 => "3.1",
        ProtocolLevel::V311 => "3.1.1",
        ProtocolLevel::V5 => "5",
    }
}

fn retained_json(r: &RetainedInfo) -> Value {
    json!({ "topic": r.topic.as_str(), "qos": r.qos as u8, "size": r.size })
}

/// `limit` and `cursor` of a listing.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    limit: usize,
    /// The key after which the page starts (exclusive).
    cursor: Option<String>,
}

impl Page {
    fn parse(query: &str) -> Result<Page, String> {
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "limit" => {
                    page.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => return Err(format!("limit {value:?}: must be 1 to {MAX_LIMIT}")),
                    }
                }
                "cursor" => page.cursor = Some(value),
                other => return Err(format!("unknown query parameter {other:?}")),
            }
        }
        Ok(page)
    }

    /// The page of `sorted` (sorted by `key`) and the cursor of the next one, if any.
    fn cut<'a, T>(&self, sorted: &'a [T], key: impl Fn(&T) -> &str) -> (&'a [T], Option<String>) {
        let start = match &self.cursor {
            Some(cursor) => sorted.partition_point(|item| key(item) <= cursor.as_str()),
            None => 0,
        };
        let end = start.saturating_add(self.limit).min(sorted.len());
        let items = &sorted[start..end];
        let next = (end < sorted.len())
            .then(|| items.last().map(|item| key(item).to_string()))
            .flatten();
        (items, next)
    }
}

/// The client id or topic at the end of a path, decoded: 400 if it is not valid percent-encoded
/// UTF-8, 404 if empty.
fn decoded_name(name: &str, path: &str) -> Result<String, Answer> {
    match percent_decode(name) {
        Ok(name) if !name.is_empty() => Ok(name),
        Ok(_) => Err(error(404, format!("no such endpoint: {path}"))),
        Err(reason) => Err(error(400, reason)),
    }
}

/// `%XX` sequences decoded (`+` is kept: topics may contain it); the result must be UTF-8.
pub(crate) fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let digest: [u8; 32] = Sha256::digest(b"secret").into();
        assert!(token_matches(&digest, "secret"));
        assert!(!token_matches(&digest, "secreT"));
        assert!(!token_matches(&digest, ""));
    }

    #[test]
    fn pages() {
        let keys = ["a", "b", "c", "d", "e"];
        let page = Page::parse("limit=2").expect("valid");
        let (items, next) = page.cut(&keys, |k| k);
        assert_eq!((items, next.as_deref()), (&keys[..2], Some("b")));
        let page = Page::parse("limit=2&cursor=d").expect("valid");
        let (items, next) = page.cut(&keys, |k| k);
        assert_eq!((items, next), (&keys[4..], None));
        assert!(Page::parse("limit=0").is_err());
        assert!(Page::parse("limit=1001").is_err());
        assert!(Page::parse("limit=x").is_err());
        assert!(Page::parse("page=2").is_err());
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c"), Ok("a/b+c".to_string()));
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
