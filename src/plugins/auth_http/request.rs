//! One question to the HTTP service, sent and read as aMQTT's `amqtt.contrib.http` does: the
//! parameters in a JSON body or a form (the query string for GET), the answer read by status,
//! JSON `ok` or text (see [`ResponseMode`]). Blocking: run it on a helper thread, never on a
//! shard's event loop. Every request is bounded by the configured `timeout`.

use std::sync::Arc;

use crate::config::{HttpMethod, HttpPluginConfig, ParamsMode, ResponseMode};

/// The most of an answer's body that is read: an answer is a word or a small JSON object.
const MAX_BODY: u64 = 64 * 1024;

/// What the service said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Granted,
    Denied,
    /// aMQTT's "noop": the service leaves the decision to the other plugins.
    NoOpinion,
}

/// Why there is no answer; the check then denies.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckError {
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error(
        "{url}: status {status}, and the body is not a JSON object with a boolean 'ok' ({detail})"
    )]
    NotJson {
        url: String,
        status: u16,
        detail: String,
    },
}

/// A parameter's value: text (`None` for an anonymous client's user name) or a number (`acc`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Text(Option<&'a str>),
    Number(u8),
}

/// The service one plugin asks: its settings and a connection pool.
pub(super) struct Service {
    agent: ureq::Agent,
    config: HttpPluginConfig,
}

impl Service {
    pub(super) fn new(config: HttpPluginConfig) -> Self {
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Statuses are answers here (4xx denies), not errors.
            .http_status_as_error(false)
            .user_agent(config.user_agent.as_str());
        if config.tls {
            builder = builder.tls_config(tls_config());
        }
        Service {
            agent: builder.build().into(),
            config,
        }
    }

    pub(super) fn url(&self) -> &str {
        &self.config.url
    }

    /// Sends `params` and reads the answer. Blocks up to the configured timeout.
    pub(super) fn ask(&self, params: &[(&str, Param<'_>)]) -> Result<Answer, CheckError> {
        let url = self.config.url.as_str();
        let request_error = |source| CheckError::Request {
            url: url.to_string(),
            source,
        };
        let mut response = match self.config.params {
            ParamsMode::Json => {
                let body = json_body(params);
                match self.config.method {
                    HttpMethod::Get => self.agent.get(url).force_send_body(),
                    HttpMethod::Post => self.agent.post(url),
                    HttpMethod::Put => self.agent.put(url),
                }
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
            }
            ParamsMode::Form => {
                let pairs = form_pairs(params);
                match self.config.method {
                    HttpMethod::Get => self.agent.get(url).query_pairs(pairs).call(),
                    HttpMethod::Post => self.agent.post(url).send_form(pairs),
                    HttpMethod::Put => self.agent.put(url).send_form(pairs),
                }
            }
        }
        .map_err(request_error)?;
        let status = response.status().as_u16();
        log::debug!("{url}: status {status}");
        let success = (200..300).contains(&status);
        match self.config.response {
            ResponseMode::Status => Ok(match status {
                200..=299 => Answer::Granted,
                400..=499 => Answer::Denied,
                _ => Answer::NoOpinion,
            }),
            ResponseMode::Text => {
                if !success {
                    return Ok(Answer::Denied);
                }
                let body = read_body(&mut response).map_err(request_error)?;
                Ok(if body.eq_ignore_ascii_case("ok") {
                    Answer::Granted
                } else {
                    Answer::Denied
                })
            }
            ResponseMode::Json => {
                if !success {
                    return Ok(Answer::Denied);
                }
                let body = read_body(&mut response).map_err(request_error)?;
                json_answer(&body).map_err(|detail| CheckError::NotJson {
                    url: url.to_string(),
                    status,
                    detail,
                })
            }
        }
    }
}

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, ureq::Error> {
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The parameters as a JSON object (`null` for a missing user name, as aMQTT sends `None`).
fn json_body(params: &[(&str, Param<'_>)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Param::Text(Some(text)) => serde_json::Value::from(*text),
                Param::Text(None) => serde_json::Value::Null,
                Param::Number(n) => serde_json::Value::from(*n),
            };
            (name.to_string(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// The parameters as form fields; a missing user name is left out.
fn form_pairs<'a>(params: &[(&'a str, Param<'a>)]) -> Vec<(&'a str, String)> {
    params
        .iter()
        .filter_map(|(name, value)| match value {
            Param::Text(Some(text)) => Some((*name, text.to_string())),
            Param::Text(None) => None,
            Param::Number(n) => Some((*name, n.to_string())),
        })
        .collect()
}

/// aMQTT's reading of a JSON answer: the `ok` key in any letter case; `true` grants, `false`
/// denies, absent or `null` is no opinion. Anything else (not JSON, not an object, `ok` not a
/// boolean) is an error, which denies.
fn json_answer(body: &str) -> Result<Answer, String> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!("{} is not an object", shorten(body)));
    };
    let ok = object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("ok"))
        .map(|(_, v)| v);
    match ok {
        None | Some(serde_json::Value::Null) => Ok(Answer::NoOpinion),
        Some(serde_json::Value::Bool(true)) => Ok(Answer::Granted),
        Some(serde_json::Value::Bool(false)) => Ok(Answer::Denied),
        Some(other) => Err(format!("'ok' is {other}")),
    }
}

/// At most 80 characters of `text`, for a log line.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// TLS with ring (as the rest of the broker) and the system's CAs.
fn tls_config() -> ureq::tls::TlsConfig {
    let roots: Vec<ureq::tls::Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_read_as_amqtt_reads_them() {
        assert_eq!(json_answer(r#"{"ok": true}"#), Ok(Answer::Granted));
        assert_eq!(
            json_answer(r#"{"Ok": false, "error": "no"}"#),
            Ok(Answer::Denied)
        );
        assert_eq!(json_answer(r#"{"OK": null}"#), Ok(Answer::NoOpinion));
        assert_eq!(json_answer(r#"{"error": "later"}"#), Ok(Answer::NoOpinion));
        // Garbage is an error (which denies), never a grant.
        assert!(json_answer("<html>").is_err());
        assert!(json_answer("[true]").is_err());
        assert!(json_answer(r#"{"ok": "yes"}"#).is_err());
    }

    #[test]
    fn parameters_as_json_and_form() {
        let params = [
            ("username", Param::Text(None)),
            ("topic", Param::Text(Some("a/b"))),
            ("acc", Param::Number(2)),
        ];
        let json: serde_json::Value = serde_json::from_str(&json_body(&params)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"username": null, "topic": "a/b", "acc": 2})
        );
        assert_eq!(
            form_pairs(&params),
            vec![("topic", "a/b".to_string()), ("acc", "2".to_string())]
        );
    }
}
