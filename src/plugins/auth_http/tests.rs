//! The HTTP plugins as the registry builds them from a configuration, and their answers without
//! a service: nothing cached and nothing reachable denies.

use std::net::TcpListener;

use super::super::{build, Credentials, TopicAccess, TopicQuery};
use super::*;
use crate::config::BrokerConfig;
use crate::protocol::TopicName;

/// A configuration whose HTTP plugins point at a port nothing listens on.
fn config(extra: &str) -> BrokerConfig {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let yaml = format!(
        "plugins:\n  amqtt.contrib.http.UserAuthHttpPlugin:\n    host: 127.0.0.1\n    port: {port}\n    \
         timeout: 1\n  amqtt.contrib.http.TopicAuthHttpPlugin:\n    host: 127.0.0.1\n    \
         port: {port}\n    timeout: 1\n{extra}"
    );
    BrokerConfig::from_yaml_str(&yaml, "test.yaml").expect("config")
}

#[test]
fn the_registry_builds_both_and_fetches_ahead_for_the_topic_plugin() {
    let set = build(&config(""), &[]).expect("plugins");
    assert_eq!(set.authenticator.names(), ["auth_http"]);
    assert_eq!(set.core.topic_names(), ["topic_http"]);
    assert!(!set.prefetch.is_empty());
    // The broker without them pays nothing.
    let plain = BrokerConfig::from_yaml_str("", "test.yaml").expect("config");
    assert!(build(&plain, &[]).expect("plugins").prefetch.is_empty());
}

#[test]
fn a_name_listed_without_its_class_settings_is_an_error() {
    let plain = BrokerConfig {
        auth_plugins: vec![HttpAuth::NAME.to_string()],
        ..BrokerConfig::default()
    };
    let e = build(&plain, &[]).expect_err("no settings").to_string();
    assert!(e.contains("UserAuthHttpPlugin"), "{e}");
}

#[test]
fn no_service_and_no_cached_answer_deny() {
    let set = build(&config(""), &[]).expect("plugins");
    let credentials = Credentials {
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(bytes::Bytes::from_static(b"p")),
        ..Credentials::default()
    };
    assert_eq!(
        set.authenticator.quick_verdict(&credentials),
        None,
        "nothing cached: the request must run on the helper thread"
    );
    assert_eq!(
        set.authenticator.decide(&credentials),
        crate::plugins::AuthVerdict::Denied
    );
    let query = TopicQuery {
        client_id: "c".into(),
        username: Some("u".into()),
        access: TopicAccess::Publish,
        topic: "a/b".into(),
    };
    assert!(set.prefetch.missing(&query.borrowed()));
    set.prefetch.fetch(std::slice::from_ref(&query));
    // The failure is not kept (the next packet asks again), and the core's check denies.
    assert!(set.prefetch.missing(&query.borrowed()));
    let topic = TopicName::new("a/b").expect("topic");
    let client = ClientInfo {
        client_id: "c",
        username: Some("u"),
    };
    assert!(!set.core.allow(&client, TopicAction::Publish(&topic)));
}

#[test]
fn no_opinion_defers_to_other_plugins_and_denies_alone() {
    let http = config("").http_topic.expect("settings");
    let alone = HttpTopic::new(http.clone(), true);
    let with_others = HttpTopic::new(http, false);
    let query = TopicQuery {
        client_id: "c".into(),
        username: None,
        access: TopicAccess::Subscribe,
        topic: "x/#".into(),
    };
    for plugin in [&alone, &with_others] {
        plugin.answers.insert(query.clone(), Answer::NoOpinion);
        assert!(TopicPrefetch::is_ready(plugin, &query.borrowed()));
    }
    let filter = crate::protocol::TopicFilter::new("x/#").expect("filter");
    let client = ClientInfo {
        client_id: "c",
        username: None,
    };
    assert!(!alone.allow(&client, TopicAction::Subscribe(&filter)));
    assert!(with_others.allow(&client, TopicAction::Subscribe(&filter)));
}
