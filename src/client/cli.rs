//! What `amqtt_pub` and `amqtt_sub` share: the connection options (named as aMQTT's scripts and
//! `mosquitto_pub`/`mosquitto_sub` name them), turning them into a ready [`MqttClient`], default
//! client ids, logging, stop signals and exit codes. The binaries themselves only add their own
//! options and the publish or subscribe loop.
//!
//! The broker is named by `--url` (aMQTT's way) or by `-h HOST` / `-p PORT` (mosquitto's way, which
//! builds `mqtt://HOST:PORT`, or `mqtts://` when a CA option or `--cert` is given); with neither,
//! the -c file's `connection.uri`, else `mqtt://127.0.0.1:1883` as aMQTT and mosquitto do. `-u` /
//! `-P` set the user name and password over either. Because `-h` is the host, help is `--help`;
//! `-h` given alone still prints help, as aMQTT's scripts did ([`help_alias`]).
//!
//! TLS options are mosquitto's: `--cafile`/`--ca-file` (and `--capath`, `--ca-data`) to trust a
//! CA, `--cert` + `--key` to present a client certificate, `--insecure` to take a broker
//! certificate made for another host name.
//!
//! Without `-i` the client id is generated and no later run can resume its session, so the CLIs
//! then ask for a clean session: the broker keeps nothing after they leave. With `-i` the session
//! is resumed unless `--clean-session` is given, as aMQTT does.
//!
//! MQTT 5 is mosquitto's way too ([`super::cli_v5`]): `-V 5` (or `-D`, which implies it), `-D
//! COMMAND IDENTIFIER VALUE` for properties, `-x` for the session expiry interval.
//!
//! Exit status: [`EXIT_OK`] (0) on success, `--version` and `--help` included; [`EXIT_FAILURE`] (1)
//! when the broker cannot be reached, refuses, or an operation fails; [`EXIT_USAGE`] (2) for bad
//! options, URLs, JSON or configuration files. Every failure is one line on stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::protocol::{LastWill, ProtocolLevel, QoS, TopicName};
use crate::transport::BrokerUrl;

use super::cli_v5::{parse_properties, parse_protocol_version, CliProperties};
use super::config::ClientConfig;
use super::{ConnectOptions, MqttClient, V5Options};

/// Success (also `--version` and `--help`).
pub const EXIT_OK: u8 = 0;
/// The broker cannot be reached, refuses, or an operation fails.
pub const EXIT_FAILURE: u8 = 1;
/// Bad options, URL, JSON or configuration file.
pub const EXIT_USAGE: u8 = 2;

/// Options both CLIs take.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// Broker URL: `{mqtt|tcp|mqtts|ssl|tls|ws|wss}://[user[:password]@]host[:port][/path]`, e.g.
    /// mqtt://localhost:1883. Default: `connection.uri` (or `broker.uri`) from the -c file, else
    /// mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL", conflicts_with_all = ["host", "port"])]
    pub url: Option<String>,
    /// Broker host, as mosquitto_pub's -h (instead of --url): connects to mqtt://HOST:PORT, or
    /// mqtts:// with --ca-file, --ca-path, --ca-data or --cert. Default: localhost.
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    pub host: Option<String>,
    /// Broker port, with -h (default: 1883, or 8883 for mqtts).
    #[arg(short = 'p', long = "port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// User name (overrides the one in the URL).
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// Password (overrides the one in the URL). Visible to other users in `ps`: prefer the -c
    /// file's connection.uri for secrets.
    #[arg(short = 'P', long = "password", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Client configuration file (aMQTT client YAML: keep_alive, auto_reconnect, will, ...).
    #[arg(short = 'c', long = "config-file", value_name = "CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Client id. Default: `<program>/<pid>-<hostname>`, with a clean session (see --clean-session).
    #[arg(short = 'i', long = "client-id", value_name = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// Keep-alive in seconds (overrides keep_alive from -c).
    #[arg(short = 'k', long = "keep-alive", value_name = "KEEP_ALIVE")]
    pub keep_alive: Option<u16>,
    /// Start a clean session. Default: resume the broker's session for the -i client id; without
    /// -i the session is always clean (a generated id can never be resumed).
    #[arg(long = "clean-session")]
    pub clean_session: bool,
    /// PEM file of CA certificates to trust (mqtts, wss). Default: the system's CAs.
    #[arg(long = "ca-file", visible_alias = "cafile", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates to trust (mqtts, wss).
    #[arg(long = "ca-path", visible_alias = "capath", value_name = "DIR")]
    pub ca_path: Option<PathBuf>,
    /// PEM CA certificates to trust, inline (mqtts, wss): --ca-data "$(cat ca.pem)".
    #[arg(long = "ca-data", value_name = "PEM", allow_hyphen_values = true)]
    pub ca_data: Option<String>,
    /// Client certificate (PEM) to present to the broker, with --key (mqtts, wss): for listeners
    /// that require one. Default: `connection.certfile` from the -c file.
    #[arg(
        long = "cert",
        visible_alias = "certfile",
        value_name = "FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of the --cert certificate.
    #[arg(
        long = "key",
        visible_alias = "keyfile",
        value_name = "FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Do not check that the broker's certificate names the host connected to (its CA is still
    /// checked): for a broker reached by an address its certificate does not list. Unsafe against
    /// a man in the middle holding any certificate from the same CA.
    #[arg(long = "insecure")]
    pub insecure: bool,
    /// Topic of the will the broker publishes if this client disappears without DISCONNECT.
    #[arg(long = "will-topic", value_name = "TOPIC")]
    pub will_topic: Option<String>,
    /// Payload of the will (required with --will-topic).
    #[arg(long = "will-message", value_name = "MESSAGE")]
    pub will_message: Option<String>,
    /// QoS of the will.
    #[arg(long = "will-qos", value_name = "QOS", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: Option<u8>,
    /// Retain the will.
    #[arg(long = "will-retain")]
    pub will_retain: bool,
    /// Extra HTTP headers for the WebSocket upgrade, as a JSON object: '{"Authorization": "..."}'.
    #[arg(long = "extra-headers", value_name = "JSON")]
    pub extra_headers: Option<String>,
    /// Debug logging on stderr (connection steps and each packet sent and received).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// MQTT version: 31, 311 or 5 (or mqttv31, mqttv311, mqttv5). Default: 311, or 5 with -D or
    /// -x.
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION",
          value_parser = parse_protocol_version)]
    pub protocol_version: Option<ProtocolLevel>,
    /// MQTT 5 property, as mosquitto's clients take it: -D COMMAND IDENTIFIER VALUE, or -D COMMAND
    /// user-property NAME VALUE. COMMAND: connect, publish, disconnect or will; IDENTIFIER: e.g.
    /// session-expiry-interval, receive-maximum, maximum-packet-size, topic-alias-maximum,
    /// message-expiry-interval, content-type, response-topic, correlation-data,
    /// payload-format-indicator, will-delay-interval, reason-string. Repeatable; implies -V 5.
    #[arg(short = 'D', long = "property", num_args = 3..=4,
          value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    pub properties: Vec<String>,
    /// MQTT 5 session expiry interval in seconds (as -D connect session-expiry-interval);
    /// implies -V 5.
    #[arg(short = 'x', long = "session-expiry-interval", value_name = "SECONDS")]
    pub session_expiry_interval: Option<u32>,
}

/// The command line with `-h` alone turned into `--help`: aMQTT's scripts took `-h` for help, and
/// with nothing else given it cannot be meant as a host.
pub fn help_alias(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 2 && args[1] == "-h" {
        args[1] = OsString::from("--help");
    }
    args
}

/// A client built from the options, not connected yet.
pub struct Prepared {
    /// The client, with its id and configuration.
    pub client: MqttClient,
    /// The URL as given.
    pub url: String,
    /// Its parsed form (for messages that should not repeat a password).
    pub broker: BrokerUrl,
    /// What `connect_with` is given: clean session, credentials, TLS trust, headers.
    pub options: ConnectOptions,
    /// `-D`'s properties (the connect and will ones are in `options` too).
    pub properties: CliProperties,
}

impl Prepared {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.broker.host, self.broker.port)
    }
}

/// Loads the config, applies the options, checks them. `Err` is a one-line usage error.
pub fn prepare(args: &ConnectionArgs, program: &str) -> Result<Prepared, String> {
    let mut config = match &args.config_file {
        Some(path) => ClientConfig::from_file(path).map_err(|e| e.to_string())?,
        None => ClientConfig::default(),
    };
    if let Some(keep_alive) = args.keep_alive {
        config.keep_alive = keep_alive;
    }
    if let Some(will) = will_from_args(args)? {
        config.will = Some(will);
    }
    let extra_headers = match &args.extra_headers {
        Some(json) => parse_extra_headers(json)?,
        None => Vec::new(),
    };
    let url = match (&args.url, args.host.is_some() || args.port.is_some()) {
        (Some(url), _) => url.clone(),
        (None, true) => url_from_host_and_port(args),
        (None, false) => config.connection.uri_or_default().to_string(),
    };
    let broker: BrokerUrl = url
        .parse()
        .map_err(|e: crate::transport::UrlError| e.to_string())?;
    if args.cert_file.is_some() && !broker.scheme.is_tls() {
        return Err(format!(
            "--cert and --key need a TLS connection (mqtts:// or wss://), not {}://",
            broker.scheme
        ));
    }
    // A generated id cannot be resumed by any later run: its session would only linger.
    let (client_id, clean_session) = match &args.client_id {
        Some(id) => (id.clone(), args.clean_session),
        None => (default_client_id(program), true),
    };
    let mut properties = parse_properties(&args.properties)?;
    if let Some(seconds) = args.session_expiry_interval {
        properties.connect.session_expiry_interval = Some(seconds);
    }
    let wants_v5 = !properties.is_empty();
    let protocol_version = match args.protocol_version {
        None if wants_v5 => ProtocolLevel::V5,
        None => ProtocolLevel::V311,
        Some(ProtocolLevel::V5) => ProtocolLevel::V5,
        Some(_) if wants_v5 => return Err("-D and -x need MQTT 5 (-V 5)".into()),
        Some(level) => level,
    };
    let options = ConnectOptions {
        clean_session: Some(clean_session),
        username: args.username.clone(),
        password: args.password.clone(),
        ca_file: args.ca_file.clone(),
        ca_path: args.ca_path.clone(),
        ca_data: args.ca_data.clone(),
        cert_file: args.cert_file.clone(),
        key_file: args.key_file.clone(),
        check_hostname: args.insecure.then_some(false),
        extra_headers,
        protocol_version: Some(protocol_version),
        v5: V5Options {
            connect_properties: properties.connect.clone(),
            will_properties: properties.will.clone(),
            topic_aliases: false,
            no_local: false,
        },
    };
    if !properties.will.is_empty() && config.will.is_none() {
        return Err("-D will needs --will-topic and --will-message".into());
    }
    Ok(Prepared {
        client: MqttClient::new(Some(client_id), config),
        url,
        broker,
        options,
        properties,
    })
}

/// `-h HOST -p PORT` as a URL: TLS when a CA option or a client certificate asks for it, as
/// mosquitto does.
fn url_from_host_and_port(args: &ConnectionArgs) -> String {
    let tls = args.ca_file.is_some()
        || args.ca_path.is_some()
        || args.ca_data.is_some()
        || args.cert_file.is_some();
    let scheme = if tls { "mqtts" } else { "mqtt" };
    let host = args.host.as_deref().unwrap_or("localhost");
    let port = args.port.unwrap_or(if tls { 8883 } else { 1883 });
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

fn will_from_args(args: &ConnectionArgs) -> Result<Option<LastWill>, String> {
    match (&args.will_topic, &args.will_message) {
        (Some(topic), Some(message)) => {
            let topic = TopicName::new(topic)
                .map_err(|e| format!("--will-topic '{topic}' is not a valid topic name: {e}"))?;
            Ok(Some(LastWill {
                topic,
                payload: bytes::Bytes::from(message.clone().into_bytes()),
                qos: args
                    .will_qos
                    .and_then(QoS::from_u8)
                    .unwrap_or(QoS::AtMostOnce),
                retain: args.will_retain,
                properties: None,
            }))
        }
        (Some(_), None) | (None, Some(_)) => {
            Err("--will-topic and --will-message must be given together".into())
        }
        (None, None) if args.will_qos.is_some() || args.will_retain => {
            Err("--will-qos and --will-retain need --will-topic and --will-message".into())
        }
        (None, None) => Ok(None),
    }
}

/// `--extra-headers`: a JSON object of header names to strings (numbers and booleans are written
/// out as text).
pub fn parse_extra_headers(json: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("--extra-headers is not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("--extra-headers must be a JSON object of header names to values".into());
    };
    map.into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => Ok((name, s)),
            serde_json::Value::Number(n) => Ok((name, n.to_string())),
            serde_json::Value::Bool(b) => Ok((name, b.to_string())),
            _ => Err(format!(
                "--extra-headers: the value of '{name}' must be a string, number or boolean"
            )),
        })
        .collect()
}

/// `<program>/<pid>-<hostname>`, as aMQTT's scripts name their clients.
pub fn default_client_id(program: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{program}/{}-{host}", std::process::id())
}

/// Logs go to stderr: warnings by default, everything from `-d` (`RUST_LOG` overrides both).
pub fn init_logging(debug: bool) {
    let level = if debug { "debug" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

/// SIGINT and SIGTERM, delivered as their names on a channel (from a thread of their own), so a
/// CLI can race them against its work and end with DISCONNECT.
pub fn stop_signals() -> std::io::Result<flume::Receiver<&'static str>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let (tx, rx) = flume::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if tx.send(name).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Prints `program: message` on stderr and returns `code`.
pub fn fail(program: &str, code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{program}: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> ConnectionArgs {
        ConnectionArgs {
            url: Some(url.into()),
            ..ConnectionArgs::default()
        }
    }

    #[test]
    fn extra_headers_must_be_a_json_object_of_scalars() {
        assert_eq!(
            parse_extra_headers(r#"{"A": "x", "B": 2, "C": true}"#).unwrap(),
            vec![
                ("A".to_string(), "x".to_string()),
                ("B".to_string(), "2".to_string()),
                ("C".to_string(), "true".to_string())
            ]
        );
        assert!(parse_extra_headers("{")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_extra_headers("[1]")
            .unwrap_err()
            .contains("JSON object"));
        assert!(parse_extra_headers(r#"{"A": null}"#)
            .unwrap_err()
            .contains("'A'"));
    }

    #[test]
    fn will_options_go_together() {
        let mut a = args("mqtt://h");
        a.will_topic = Some("w".into());
        assert!(prepare(&a, "p").err().unwrap().contains("together"));
        let mut a = args("mqtt://h");
        a.will_retain = true;
        assert!(prepare(&a, "p")
            .err()
            .unwrap()
            .contains("need --will-topic"));
        let mut a = args("mqtt://h");
        a.will_topic = Some("w/+".into());
        a.will_message = Some("m".into());
        assert!(prepare(&a, "p")
            .err()
            .unwrap()
            .contains("not a valid topic"));
        let mut a = args("mqtt://h");
        a.will_topic = Some("w".into());
        a.will_message = Some("m".into());
        a.will_qos = Some(1);
        let prepared = prepare(&a, "p").unwrap();
        let will = prepared.client.config().will.clone().unwrap();
        assert_eq!((will.topic.as_str(), will.qos), ("w", QoS::AtLeastOnce));
    }

    #[test]
    fn url_errors_are_one_line() {
        let err = prepare(&args("http://h"), "p").err().unwrap();
        assert_eq!(
            err,
            "invalid broker URL 'http://h': scheme must be mqtt, tcp, mqtts, ssl, tls, ws or wss"
        );
    }

    #[test]
    fn without_url_or_host_the_broker_is_the_local_default() {
        let prepared = prepare(&ConnectionArgs::default(), "p").unwrap();
        assert_eq!(prepared.url, "mqtt://127.0.0.1:1883");
        assert_eq!(prepared.address(), "127.0.0.1:1883");
    }

    #[test]
    fn a_client_certificate_means_tls() {
        let mut a = ConnectionArgs {
            host: Some("broker".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("c.key".into()),
            ..ConnectionArgs::default()
        };
        let prepared = prepare(&a, "p").unwrap();
        assert_eq!(prepared.url, "mqtts://broker:8883");
        assert_eq!(prepared.options.key_file, Some(PathBuf::from("c.key")));
        a.host = None;
        a.url = Some("mqtt://broker".into());
        let err = prepare(&a, "p").err().unwrap();
        assert!(err.contains("need a TLS connection"), "{err}");
        a.url = Some("wss://broker/mqtt".into());
        a.insecure = true;
        let prepared = prepare(&a, "p").unwrap();
        assert_eq!(prepared.options.check_hostname, Some(false));
    }

    #[test]
    fn properties_choose_mqtt_5() {
        let mut a = args("mqtt://h");
        a.properties = vec!["connect".into(), "receive-maximum".into(), "10".into()];
        let prepared = prepare(&a, "p").unwrap();
        assert_eq!(prepared.options.protocol_version, Some(ProtocolLevel::V5));
        assert_eq!(
            prepared.options.v5.connect_properties.receive_maximum,
            Some(10)
        );
        a.protocol_version = Some(ProtocolLevel::V311);
        assert!(prepare(&a, "p").err().unwrap().contains("need MQTT 5"));
        let mut a = args("mqtt://h");
        a.session_expiry_interval = Some(60);
        let prepared = prepare(&a, "p").unwrap();
        assert_eq!(
            prepared
                .options
                .v5
                .connect_properties
                .session_expiry_interval,
            Some(60)
        );
        let a = args("mqtt://h");
        assert_eq!(
            prepare(&a, "p").unwrap().options.protocol_version,
            Some(ProtocolLevel::V311)
        );
    }

    #[test]
    fn default_client_id_names_program_and_pid() {
        let id = default_client_id("amqtt_pub");
        assert!(
            id.starts_with(&format!("amqtt_pub/{}-", std::process::id())),
            "{id}"
        );
    }
}
