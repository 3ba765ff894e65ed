//! Tests of aMQTT's contrib HTTP plugins' settings (`amqtt.contrib.http.UserAuthHttpPlugin`,
//! `TopicAuthHttpPlugin`): aMQTT's defaults, every setting, and the refusals with their keys.

use super::*;

const USER: &str = "amqtt.contrib.http.UserAuthHttpPlugin";
const TOPIC: &str = "amqtt.contrib.http.TopicAuthHttpPlugin";

#[test]
fn defaults_are_amqtts_and_the_plugins_join_their_chains() {
    let c = ok(&format!(
        "plugins:\n  {USER}:\n    host: auth.local\n    port: 8080\n  {TOPIC}:\n    host: ::1\n    port: 81\n"
    ));
    assert_eq!(c.auth_plugins, ["auth_http"]);
    assert!(c.topic_check.enabled);
    assert_eq!(c.topic_check.plugins, ["topic_http"]);
    let user = c.http_user.expect("user plugin");
    assert_eq!(
        user,
        HttpPluginConfig {
            url: "http://auth.local:8080/user".into(),
            method: HttpMethod::Get,
            params: ParamsMode::Json,
            response: ResponseMode::Json,
            tls: false,
            user_agent: "amqtt".into(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(5),
        }
    );
    let topic = c.http_topic.expect("topic plugin");
    assert_eq!(topic.url, "http://[::1]:81/acl");
}

#[test]
fn every_setting_is_read() {
    let c = ok(&format!(
        "plugins:\n  - {TOPIC}:\n      host: 127.0.0.1\n      port: 443\n      topic_uri: /mqtt/acl\n      \
         request_method: PUT\n      params_mode: form\n      response_mode: text\n      \
         with_tls: true\n      user_agent: broker-1\n      superuser_uri: /su\n      \
         timeout: 250ms\n      cache-ttl: 2min\n  - {USER}:\n      host: h\n      port: 1\n      \
         request_method: post\n      response_mode: status\n"
    ));
    let topic = c.http_topic.expect("topic plugin");
    assert_eq!(topic.url, "https://127.0.0.1:443/mqtt/acl");
    assert_eq!(
        (topic.method, topic.params, topic.response, topic.tls),
        (HttpMethod::Put, ParamsMode::Form, ResponseMode::Text, true)
    );
    assert_eq!(topic.user_agent, "broker-1");
    assert_eq!(topic.timeout, Duration::from_millis(250));
    assert_eq!(topic.cache_ttl, Duration::from_secs(120));
    let user = c.http_user.expect("user plugin");
    assert_eq!(
        (user.method, user.response),
        (HttpMethod::Post, ResponseMode::Status)
    );
}

#[test]
fn wrong_or_missing_settings_name_their_key() {
    let key = |class: &str, name: &str| format!("plugins.{class}.{name}");
    let cases: [(String, String, &str); 10] = [
        (
            format!("{USER}:\n    port: 1\n"),
            key(USER, "host"),
            "required",
        ),
        (
            format!("{USER}:\n    host: h\n"),
            key(USER, "port"),
            "required",
        ),
        (
            format!("{USER}:\n    host: h\n    port: 70000\n"),
            key(USER, "port"),
            "not a TCP port",
        ),
        (
            format!("{USER}:\n    host: a/b\n    port: 1\n"),
            key(USER, "host"),
            "not a host",
        ),
        (
            format!("{USER}:\n    host: h\n    port: 1\n    user_uri: user\n"),
            key(USER, "user_uri"),
            "must start with '/'",
        ),
        (
            format!("{USER}:\n    host: h\n    port: 1\n    topic_uri: /acl\n"),
            key(USER, "topic_uri"),
            "TopicAuthHttpPlugin",
        ),
        (
            format!("{TOPIC}:\n    host: h\n    port: 1\n    request_method: delete\n"),
            key(TOPIC, "request_method"),
            "not one of get, post, put",
        ),
        (
            format!("{TOPIC}:\n    host: h\n    port: 1\n    response_mode: xml\n"),
            key(TOPIC, "response_mode"),
            "not one of status, json, text",
        ),
        (
            format!("{TOPIC}:\n    host: h\n    port: 1\n    timeout: 0\n"),
            key(TOPIC, "timeout"),
            "more than 0",
        ),
        (
            format!("{TOPIC}:\n    host: h\n    port: 1\n    cache_ttl: 0.5\n"),
            key(TOPIC, "cache_ttl"),
            "at least 1 s",
        ),
    ];
    for (plugin, key, needle) in cases {
        invalid(&format!("plugins:\n  {plugin}"), &key, needle);
    }
    // An unknown setting is a YAML error naming it.
    let e = err(&format!(
        "plugins:\n  {USER}:\n    host: h\n    port: 1\n    url: http://x\n"
    ));
    assert!(e.to_string().contains("url"), "{e}");
}

#[test]
fn configured_both_ways_is_refused() {
    invalid(
        &format!(
            "auth:\n  plugins: [auth_anonymous]\nplugins:\n  {USER}:\n    host: h\n    port: 1\n"
        ),
        &format!("plugins.{USER}"),
        "auth.plugins",
    );
    invalid(
        &format!(
            "topic-check:\n  enabled: false\nplugins:\n  {TOPIC}:\n    host: h\n    port: 1\n"
        ),
        &format!("plugins.{TOPIC}"),
        "topic-check",
    );
}
