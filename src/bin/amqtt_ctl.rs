//! `amqtt_ctl`: the admin API's command-line client (the broker's `admin:` section).
//!
//! ```text
//! amqtt_ctl --token-file FILE info                      version, shards, uptime, listeners
//! amqtt_ctl --token-file FILE sessions [--all]          sessions (alias: clients), a page or all
//! amqtt_ctl --token-file FILE session ID [--delete]     one session, or delete it
//! amqtt_ctl --token-file FILE kick ID                   disconnect a client
//! amqtt_ctl --token-file FILE retained list [--all]     retained topics
//! amqtt_ctl --token-file FILE retained get|delete TOPIC
//! amqtt_ctl --token-file FILE publish TOPIC PAYLOAD [--qos N] [--retain] [--base64]
//! amqtt_ctl --token-file FILE reload                    read the configuration file again
//! ```
//! Tables by default, the API's JSON with `--json`. Only the HTTP round trips and the printing
//! live here; the endpoints are `amqtt::server`'s admin API (README, "Admin API").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Look at and act on a running amqtt broker through its admin HTTP API.
///
/// The broker serves the API when its configuration has an `admin:` section; every request
/// carries the token of `admin.token_file`. Exits non-zero with the API's error on failure.
#[derive(Parser)]
#[command(name = "amqtt_ctl", version)]
struct Cli {
    /// The admin API's base address.
    #[arg(long, default_value = "http://127.0.0.1:9884")]
    url: String,
    /// File holding the bearer token (its first line), as the broker's `admin.token_file`.
    #[arg(long)]
    token_file: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, shards, uptime and listeners.
    Info,
    /// Sessions (connected or not), by client id.
    #[command(visible_alias = "clients")]
    Sessions(Listing),
    /// One session, by client id.
    Session {
        /// Its client id.
        client_id: String,
        /// Delete it instead (its client disconnected, its subscriptions and queue dropped).
        #[arg(long)]
        delete: bool,
    },
    /// Disconnect a client (its will is published; a persistent session stays, offline).
    Kick {
        /// Its client id.
        client_id: String,
    },
    /// Retained messages.
    #[command(subcommand)]
    Retained(Retained),
    /// Publish a message as the broker (delivered to subscribers, retained with --retain).
    Publish {
        topic: String,
        /// The payload: UTF-8 text, or base64 with --base64.
        payload: String,
        /// QoS 0, 1 or 2.
        #[arg(long, default_value_t = 0)]
        qos: u8,
        /// Store it as the topic's retained message (an empty payload deletes it).
        #[arg(long)]
        retain: bool,
        /// The payload argument is base64 (for binary payloads).
        #[arg(long)]
        base64: bool,
    },
    /// Read the broker's configuration file again and apply what can change without a restart
    /// (as SIGHUP does); prints what changed and what was kept. A file the broker refuses changes
    /// nothing: the error names the file, the key and the reason.
    Reload,
}

#[derive(Subcommand)]
enum Retained {
    /// Retained topics with their QoS and size.
    List(Listing),
    /// One retained topic.
    Get { topic: String },
    /// Delete a topic's retained message.
    Delete { topic: String },
}

#[derive(clap::Args)]
struct Listing {
    /// Entries a page (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this client id or topic (a previous page's `next_cursor`).
    #[arg(long)]
    cursor: Option<String>,
    /// Follow the cursors to the end (every page).
    #[arg(long)]
    all: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("amqtt_ctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let token = std::fs::read_to_string(&cli.token_file)
        .map_err(|e| format!("cannot read {}: {e}", cli.token_file.display()))?;
    let token = token.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("{} holds no token", cli.token_file.display()));
    }
    let api = Api {
        base: format!("{}/api/v1", cli.url.trim_end_matches('/')),
        token,
        agent: ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into(),
    };
    match &cli.command {
        Command::Info => {
            let info = api.call("GET", "/info", None)?;
            show(cli.json, &info, print_info);
        }
        Command::Sessions(listing) => {
            let page = api.list("/sessions", "sessions", listing)?;
            show(cli.json, &page, print_sessions);
        }
        Command::Session {
            client_id,
            delete: false,
        } => {
            let session = api.call("GET", &format!("/sessions/{}", encode(client_id)), None)?;
            show(cli.json, &json!({ "sessions": [session] }), print_sessions);
        }
        Command::Session {
            client_id,
            delete: true,
        } => {
            let done = api.call("DELETE", &format!("/sessions/{}", encode(client_id)), None)?;
            show(cli.json, &done, |_| {
                println!("deleted the session of {client_id}")
            });
        }
        Command::Kick { client_id } => {
            let done = api.call(
                "POST",
                &format!("/clients/{}/kick", encode(client_id)),
                None,
            )?;
            show(cli.json, &done, |_| println!("disconnected {client_id}"));
        }
        Command::Retained(Retained::List(listing)) => {
            let page = api.list("/retained", "retained", listing)?;
            show(cli.json, &page, print_retained);
        }
        Command::Retained(Retained::Get { topic }) => {
            let one = api.call("GET", &format!("/retained/{}", encode(topic)), None)?;
            show(cli.json, &json!({ "retained": [one] }), print_retained);
        }
        Command::Retained(Retained::Delete { topic }) => {
            let done = api.call("DELETE", &format!("/retained/{}", encode(topic)), None)?;
            show(cli.json, &done, |_| {
                println!("deleted the retained message of {topic}")
            });
        }
        Command::Publish {
            topic,
            payload,
            qos,
            retain,
            base64,
        } => {
            let body = json!({
                "topic": topic,
                "payload": payload,
                "payload_encoding": if *base64 { "base64" } else { "utf-8" },
                "qos": qos,
                "retain": retain,
            });
            let done = api.call("POST", "/publish", Some(&body))?;
            show(cli.json, &done, |_| println!("published to {topic}"));
        }
        Command::Reload => {
            let report = api.call("POST", "/reload", None)?;
            show(cli.json, &report, print_reload);
        }
    }
    Ok(())
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    /// One request; the JSON answer of a 200, the API's error message otherwise.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("POST", body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .content_type("application/json")
                .send(body.map_or_else(String::new, Value::to_string)),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = sent.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON ({e}): {text}"))?;
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"].as_str().unwrap_or(text.as_str());
            Err(format!("{} ({status})", message))
        }
    }

    /// A listing's page, or every page with `--all` (merged under `key`).
    fn list(&self, path: &str, key: &str, listing: &Listing) -> Result<Value, String> {
        let mut cursor = listing.cursor.clone();
        let mut items = Vec::new();
        loop {
            let mut query = format!("{path}?limit={}", listing.limit);
            if let Some(cursor) = &cursor {
                query.push_str(&format!("&cursor={}", encode(cursor)));
            }
            let mut page = self.call("GET", &query, None)?;
            if let Some(Value::Array(part)) = page.get_mut(key).map(Value::take) {
                items.extend(part);
            }
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if !listing.all || cursor.is_none() {
                return Ok(json!({ key: items, "next_cursor": cursor }));
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters (a topic's `/` included).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn show(as_json: bool, value: &Value, table: impl Fn(&Value)) {
    if as_json {
        println!("{value:#}");
    } else {
        table(value);
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn print_info(info: &Value) {
    println!("version  {}", text(&info["version"]));
    println!("shards   {}", text(&info["shards"]));
    println!("uptime   {} s", text(&info["uptime_seconds"]));
    for listener in info["listeners"].as_array().into_iter().flatten() {
        println!(
            "listener {} {}",
            text(&listener["name"]),
            text(&listener["address"])
        );
    }
}

fn print_sessions(page: &Value) {
    println!(
        "{:<32} {:<16} {:<9} {:>5} {:>6} {:>8} SUBSCRIPTIONS",
        "CLIENT ID", "USER", "CONNECTED", "SHARD", "QUEUED", "INFLIGHT"
    );
    for s in page["sessions"].as_array().into_iter().flatten() {
        let subscriptions: Vec<String> = s["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sub| format!("{}@{}", text(&sub["filter"]), text(&sub["qos"])))
            .collect();
        println!(
            "{:<32} {:<16} {:<9} {:>5} {:>6} {:>8} {}",
            text(&s["client_id"]),
            text(&s["username"]),
            text(&s["connected"]),
            text(&s["shard"]),
            text(&s["queued"]),
            text(&s["inflight"]),
            subscriptions.join(" ")
        );
    }
    print_next(page);
}

fn print_retained(page: &Value) {
    println!("{:<48} {:>3} {:>8}", "TOPIC", "QOS", "SIZE");
    for r in page["retained"].as_array().into_iter().flatten() {
        println!(
            "{:<48} {:>3} {:>8}",
            text(&r["topic"]),
            text(&r["qos"]),
            text(&r["size"])
        );
    }
    print_next(page);
}

fn print_reload(report: &Value) {
    let lines = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|items| items.iter().map(text).collect())
            .unwrap_or_default()
    };
    let (applied, kept, disconnected) = (lines("applied"), lines("kept"), lines("disconnected"));
    if applied.is_empty() && kept.is_empty() {
        println!("reloaded: nothing changed");
    }
    for line in applied {
        println!("applied: {line}");
    }
    for line in kept {
        println!("kept until a restart: {line}");
    }
    for client_id in disconnected {
        println!("disconnected: {client_id}");
    }
}

fn print_next(page: &Value) {
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("(more: --cursor {cursor:?}, or --all)");
    }
}
