//! The settings of aMQTT's contrib HTTP plugins, `amqtt.contrib.http.UserAuthHttpPlugin` (who may
//! connect) and `amqtt.contrib.http.TopicAuthHttpPlugin` (which topics a client may use), with
//! aMQTT's keys and defaults: `host`, `port`, `user_uri` (`/user`) or `topic_uri` (`/acl`),
//! `request_method` (`get`), `params_mode` (`json`), `response_mode` (`json`), `with_tls`,
//! `user_agent` (`amqtt`), `superuser_uri` (accepted, unused as in aMQTT) and `timeout` (5 s);
//! and ours: `cache_ttl` (how long an answer is reused, 5 s).
//!
//! [`RawHttp`] is what the file holds, [`HttpPluginConfig`] what the plugin gets: the URL
//! assembled, the modes typed, the durations checked. What must not live here: the HTTP client
//! and the decisions (`src/plugins/auth_http`), or any I/O.

use std::time::Duration;

use serde::Deserialize;

use super::scalars::{Bool, Seconds};

/// aMQTT's default `timeout`, in seconds.
const DEFAULT_TIMEOUT: f64 = 5.0;
/// Default `cache_ttl`, in seconds.
const DEFAULT_CACHE_TTL: f64 = 5.0;
/// The shortest `cache_ttl`: an ACL answer fetched for a packet must still be there when the
/// core checks that packet, a moment later.
const MIN_CACHE_TTL: f64 = 1.0;

/// `request_method`: how the request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `get` (aMQTT's default).
    Get,
    /// `post`.
    Post,
    /// `put`.
    Put,
}

/// `params_mode`: where the parameters go. `json`: a JSON object in the body (GET included, as
/// aMQTT sends it); `form`: the query string for GET, a url-encoded form body for POST and PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsMode {
    /// `json` (aMQTT's default).
    Json,
    /// `form`.
    Form,
}

/// `response_mode`: how the answer is read.
/// - `status`: 2xx grants, 4xx denies, any other status is no opinion.
/// - `json`: a 2xx with `{"ok": true}` grants, `{"ok": false}` denies, no `ok` (or `null`) is no
///   opinion (the key in any letter case); any other status denies.
/// - `text`: a 2xx whose body is `ok` (any letter case) grants; anything else denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// `status`.
    Status,
    /// `json` (aMQTT's default).
    Json,
    /// `text`.
    Text,
}

/// One HTTP plugin's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPluginConfig {
    /// `http(s)://host:port` and `user_uri` or `topic_uri`.
    pub url: String,
    /// `request_method`.
    pub method: HttpMethod,
    /// `params_mode`.
    pub params: ParamsMode,
    /// `response_mode`.
    pub response: ResponseMode,
    /// `with_tls`: the service's certificate is checked against the system's CAs.
    pub tls: bool,
    /// `user_agent`: the `User-Agent` header of every request.
    pub user_agent: String,
    /// The longest one request may take (connecting included); past it the check denies.
    pub timeout: Duration,
    /// How long an answer (granted, denied, no opinion) is reused; failures are not kept.
    pub cache_ttl: Duration,
}

/// Which of the two classes the settings are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpClass {
    User,
    Topic,
}

/// The settings as written under the class name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    host: Option<String>,
    port: Option<u64>,
    user_uri: Option<String>,
    topic_uri: Option<String>,
    request_method: Option<String>,
    params_mode: Option<String>,
    response_mode: Option<String>,
    with_tls: Option<Bool>,
    user_agent: Option<String>,
    superuser_uri: Option<String>,
    timeout: Option<Seconds>,
    cache_ttl: Option<Seconds>,
}

/// A setting's problem: the key under the class, and why.
pub(super) type SettingError = (&'static str, String);

/// One of `choices` (aMQTT's values are lower case; upper case is read too).
fn choice<T: Copy>(
    key: &'static str,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, SettingError> {
    let Some(value) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            (key, format!("'{value}' is not one of {}", names.join(", ")))
        })
}

/// Seconds that must be positive (and at least `min`).
fn duration(
    key: &'static str,
    value: Option<Seconds>,
    default: f64,
    min: f64,
) -> Result<Duration, SettingError> {
    let seconds = value.map_or(default, |s| s.0);
    if !seconds.is_finite() || seconds < min || seconds <= 0.0 || seconds > 86_400.0 {
        let floor = if min > 0.0 {
            format!("at least {min} s")
        } else {
            "more than 0".to_string()
        };
        return Err((
            key,
            format!("{seconds} s: must be {floor} and at most a day"),
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl RawHttp {
    /// The checked settings of `class`.
    pub(super) fn check(self, class: HttpClass) -> Result<HttpPluginConfig, SettingError> {
        let (uri_key, default_uri, other_key, other) = match class {
            HttpClass::User => ("user_uri", "/user", "topic_uri", &self.topic_uri),
            HttpClass::Topic => ("topic_uri", "/acl", "user_uri", &self.user_uri),
        };
        if other.is_some() {
            let owner = match class {
                HttpClass::User => "TopicAuthHttpPlugin",
                HttpClass::Topic => "UserAuthHttpPlugin",
            };
            return Err((
                other_key,
                format!("is a setting of amqtt.contrib.http.{owner}, not of this class"),
            ));
        }
        let host = match self.host.as_deref().map(str::trim) {
            Some(host) if !host.is_empty() && !host.contains(['/', ' ', '?', '#', '@']) => host,
            Some(host) => return Err(("host", format!("'{host}' is not a host name or address"))),
            None => return Err(("host", "required: the HTTP service's host".to_string())),
        };
        let port = match self.port {
            Some(port @ 1..=65535) => port,
            Some(port) => return Err(("port", format!("{port} is not a TCP port"))),
            None => return Err(("port", "required: the HTTP service's port".to_string())),
        };
        let uri = match class {
            HttpClass::User => self.user_uri.as_deref(),
            HttpClass::Topic => self.topic_uri.as_deref(),
        }
        .unwrap_or(default_uri);
        if !uri.starts_with('/') {
            return Err((uri_key, format!("'{uri}' must start with '/'")));
        }
        let tls = self.with_tls.is_some_and(|b| b.0);
        // An IPv6 address is written in brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let scheme = if tls { "https" } else { "http" };
        if self.superuser_uri.is_some() {
            log::info!(
                "superuser_uri is accepted but not used (aMQTT does not call it either): \
                 superusers are answered by {uri_key}"
            );
        }
        Ok(HttpPluginConfig {
            url: format!("{scheme}://{host}:{port}{uri}"),
            method: choice(
                "request_method",
                self.request_method.as_deref(),
                HttpMethod::Get,
                &[
                    ("get", HttpMethod::Get),
                    ("post", HttpMethod::Post),
                    ("put", HttpMethod::Put),
                ],
            )?,
            params: choice(
                "params_mode",
                self.params_mode.as_deref(),
                ParamsMode::Json,
                &[("json", ParamsMode::Json), ("form", ParamsMode::Form)],
            )?,
            response: choice(
                "response_mode",
                self.response_mode.as_deref(),
                ResponseMode::Json,
                &[
                    ("status", ResponseMode::Status),
                    ("json", ResponseMode::Json),
                    ("text", ResponseMode::Text),
                ],
            )?,
            tls,
            user_agent: self.user_agent.unwrap_or_else(|| "amqtt".to_string()),
            timeout: duration("timeout", self.timeout, DEFAULT_TIMEOUT, 0.0)?,
            cache_ttl: duration(
                "cache_ttl",
                self.cache_ttl,
                DEFAULT_CACHE_TTL,
                MIN_CACHE_TTL,
            )?,
        })
    }
}
