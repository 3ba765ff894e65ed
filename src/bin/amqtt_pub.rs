//! `amqtt_pub`: publish messages, as aMQTT's `amqtt_pub` and `mosquitto_pub` do. Parses the command
//! line, reads the messages, and wires them to [`amqtt::client`]; nothing else.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use futures_lite::future::{block_on, race};

use amqtt::client::cli::{self, ConnectionArgs, Prepared, EXIT_FAILURE, EXIT_USAGE};
use amqtt::client::PendingPublish;
use amqtt::protocol::v5::ReasonCode;
use amqtt::protocol::{ProtocolLevel, QoS, TopicName};

const PROGRAM: &str = "amqtt_pub";

/// Publish MQTT messages (aMQTT's amqtt_pub; options as mosquitto_pub names them, aMQTT's long
/// names as aliases).
///
/// The broker is --url URL (aMQTT), or -h HOST [-p PORT] [-u USER] [-P PASSWORD] (mosquitto_pub);
/// with neither, mqtt://127.0.0.1:1883.
/// Exactly one of -m, -f, -l, -s, -n gives the messages. With -f and -l each line is one message,
/// without its line ending (-l skips blank lines). Exits 0 once every message has completed its
/// QoS flow; 1 if the broker cannot be reached, refuses the connection or a publish fails; 2 for
/// bad options. Errors are one line on stderr.
///
/// MQTT 5 as mosquitto_pub: -V 5, -D publish user-property NAME VALUE, -D publish
/// message-expiry-interval SECONDS, -D connect session-expiry-interval SECONDS (or -x), ...;
/// a refused connection prints the broker's reason code and reason string.
#[derive(Parser, Debug)]
#[command(
    name = "amqtt_pub",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print help (-h alone does too; with other options -h is the broker host).
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Print the version (-V is the protocol version, as in mosquitto's clients).
    #[arg(long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Topic to publish to.
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    topic: String,
    /// QoS of the messages (default: the config's topics/default_qos, else 0).
    #[arg(short = 'q', long = "qos", value_name = "QOS", value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: Option<u8>,
    /// Ask the broker to retain the messages.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// The message to send.
    #[arg(short = 'm', long = "message", value_name = "MSG")]
    message: Option<String>,
    /// Send each line of FILE as a message.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Send each line read from stdin as a message, as it arrives (blank lines are skipped).
    #[arg(short = 'l', long = "stdin-line", visible_alias = "lines")]
    lines: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file", visible_alias = "stdin")]
    stdin: bool,
    /// Send one empty message.
    #[arg(short = 'n', long = "null-message", visible_alias = "no-message")]
    null_message: bool,
    /// MQTT 5: send a topic alias instead of the topic after the first message (with -l or -f),
    /// when the broker allows aliases.
    #[arg(long = "topic-alias")]
    topic_alias: bool,
}

/// Where the messages come from.
enum Source {
    /// Known before connecting: -m, -n, -f.
    Fixed(Vec<Bytes>),
    /// -l: lines as they arrive.
    Lines,
    /// -s: everything until EOF.
    Stdin,
}

fn main() -> ExitCode {
    let args = Args::parse_from(cli::help_alias(std::env::args_os()));
    cli::init_logging(args.connection.debug);
    if let Err(e) = TopicName::new(&args.topic) {
        return cli::fail(PROGRAM, EXIT_USAGE, format!("-t '{}': {e}", args.topic));
    }
    let source = match source(&args) {
        Ok(source) => source,
        Err((code, message)) => return cli::fail(PROGRAM, code, message),
    };
    let mut prepared = match cli::prepare(&args.connection, PROGRAM) {
        Ok(prepared) => prepared,
        Err(message) => return cli::fail(PROGRAM, EXIT_USAGE, message),
    };
    if args.topic_alias && prepared.options.protocol_version != Some(ProtocolLevel::V5) {
        return cli::fail(PROGRAM, EXIT_USAGE, "--topic-alias needs MQTT 5 (-V 5)");
    }
    prepared.options.v5.topic_aliases = args.topic_alias;
    let signals = match cli::stop_signals() {
        Ok(signals) => signals,
        Err(e) => return cli::fail(PROGRAM, EXIT_FAILURE, format!("cannot watch signals: {e}")),
    };
    let qos = args.qos.and_then(QoS::from_u8);
    let retain = args.retain.then_some(true);
    block_on(run(prepared, &args.topic, qos, retain, source, signals))
}

fn source(args: &Args) -> Result<Source, (u8, String)> {
    let given = [
        args.message.is_some(),
        args.file.is_some(),
        args.lines,
        args.stdin,
        args.null_message,
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err((
            EXIT_USAGE,
            "give exactly one of -m MSG, -f FILE, -l, -s or -n".into(),
        ));
    }
    if let Some(message) = &args.message {
        return Ok(Source::Fixed(vec![Bytes::from(
            message.clone().into_bytes(),
        )]));
    }
    if args.null_message {
        return Ok(Source::Fixed(vec![Bytes::new()]));
    }
    if let Some(path) = &args.file {
        let text = std::fs::read(path)
            .map_err(|e| (EXIT_FAILURE, format!("cannot read {}: {e}", path.display())))?;
        return Ok(Source::Fixed(lines_of(&text, false)));
    }
    Ok(if args.lines {
        Source::Lines
    } else {
        Source::Stdin
    })
}

/// Splits `text` into lines without their endings (`\n` or `\r\n`); a last line needs no ending.
fn lines_of(text: &[u8], skip_blank: bool) -> Vec<Bytes> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(strip_cr)
        .filter(|l| !(skip_blank && l.is_empty()))
        .map(Bytes::copy_from_slice)
        .collect()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads stdin on a thread of its own (so a signal can interrupt the wait): each message on the
/// channel, then the channel closes.
fn read_stdin(per_line: bool) -> flume::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = flume::unbounded();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        if !per_line {
            let mut all = Vec::new();
            let _ = tx.send(input.read_to_end(&mut all).map(|_| Bytes::from(all)));
            return;
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    let text = strip_cr(line.strip_suffix(b"\n").unwrap_or(&line));
                    if !text.is_empty() && tx.send(Ok(Bytes::copy_from_slice(text))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

async fn run(
    prepared: Prepared,
    topic: &str,
    qos: Option<QoS>,
    retain: Option<bool>,
    source: Source,
    signals: flume::Receiver<&'static str>,
) -> ExitCode {
    let client = &prepared.client;
    let connect = client.connect_with(&prepared.url, prepared.options.clone());
    let interrupted = async {
        let _ = signals.recv_async().await;
        None
    };
    match race(async { Some(connect.await) }, interrupted).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            let message = format!("connection to {} failed: {e}", prepared.address());
            return cli::fail(PROGRAM, EXIT_FAILURE, message);
        }
        None => return ExitCode::from(EXIT_FAILURE),
    }
    let id = client
        .assigned_client_id()
        .unwrap_or_else(|| client.client_id().to_string());
    log::info!("{id} connected to {}", prepared.address());

    let mut pending: Vec<PendingPublish> = Vec::new();
    let mut start = |payload: Bytes| -> Result<(), String> {
        let publish = client
            .start_publish_with(
                topic,
                payload,
                qos,
                retain,
                prepared.properties.publish.clone(),
            )
            .map_err(|e| format!("publish to '{topic}' failed: {e}"))?;
        pending.push(publish);
        Ok(())
    };
    let fed = match source {
        Source::Fixed(messages) => messages.into_iter().try_for_each(&mut start),
        Source::Lines | Source::Stdin => {
            let input = read_stdin(matches!(source, Source::Lines));
            loop {
                let next = race(async { Some(input.recv_async().await) }, async {
                    let _ = signals.recv_async().await;
                    None
                })
                .await;
                match next {
                    Some(Ok(Ok(payload))) => {
                        if let Err(e) = start(payload) {
                            break Err(e);
                        }
                    }
                    Some(Ok(Err(e))) => break Err(format!("cannot read stdin: {e}")),
                    // End of input, or a stop signal: send what was read, then disconnect.
                    Some(Err(_)) | None => break Ok(()),
                }
            }
        }
    };
    let mut status = match fed {
        Ok(()) => None,
        Err(message) => Some(cli::fail(PROGRAM, EXIT_FAILURE, message)),
    };
    for publish in pending {
        let done = race(async { Some(publish.wait().await) }, async {
            let _ = signals.recv_async().await;
            None
        })
        .await;
        match done {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                status.get_or_insert_with(|| {
                    cli::fail(
                        PROGRAM,
                        EXIT_FAILURE,
                        format!("publish to '{topic}' failed: {e}"),
                    )
                });
                break;
            }
            None => {
                status.get_or_insert(ExitCode::from(EXIT_FAILURE));
                break;
            }
        }
    }
    let goodbye = prepared.properties.disconnect.clone();
    if let Err(e) = client.disconnect_with(ReasonCode::SUCCESS, goodbye).await {
        log::warn!("disconnect: {e}");
    }
    status.unwrap_or(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_endings() {
        let lines = lines_of(b"a\r\nb\n\nc", false);
        assert_eq!(lines, vec!["a", "b", "", "c"]);
        assert_eq!(lines_of(b"a\n\n", true), vec!["a"]);
        assert!(lines_of(b"", false).is_empty());
    }
}
