//! `amqtt_sub`: subscribe and print messages, as aMQTT's `amqtt_sub` and `mosquitto_sub` do. Parses
//! the command line and wires it to [`amqtt::client`]; nothing else.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use futures_lite::future::{block_on, race};

use amqtt::client::cli::{self, ConnectionArgs, Prepared, EXIT_FAILURE, EXIT_USAGE};
use amqtt::client::cli_v5::format_message;
use amqtt::client::{ClientError, Delivery};
use amqtt::protocol::v5::ReasonCode;
use amqtt::protocol::{QoS, SubscribeReturnCode, TopicFilter};

const PROGRAM: &str = "amqtt_sub";

/// Subscribe to MQTT topics and print each message's payload on its own line (aMQTT's amqtt_sub;
/// options as mosquitto_sub names them).
///
/// The broker is --url URL (aMQTT), or -h HOST [-p PORT] [-u USER] [-P PASSWORD] (mosquitto_sub);
/// with neither, mqtt://127.0.0.1:1883.
/// Only messages go to stdout; logs go to stderr. SIGINT and SIGTERM end the session with
/// DISCONNECT (so the broker discards the will) and exit 0. Exits 0 after -n COUNT messages; 1 if
/// the broker cannot be reached, refuses, refuses every subscription, or the connection is lost
/// for good; 2 for bad options. Errors are one line on stderr.
///
/// MQTT 5 as mosquitto_sub: -V 5, -D connect|disconnect IDENTIFIER VALUE, -x SECONDS; -F prints
/// each message's properties (%P user properties, %C content type, %E message expiry, ...).
#[derive(Parser, Debug)]
#[command(
    name = "amqtt_sub",
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
    /// Topic filter to subscribe to (repeat for more).
    #[arg(short = 't', long = "topic", value_name = "TOPIC", required = true)]
    topics: Vec<String>,
    /// QoS of the subscriptions.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after this many messages.
    #[arg(short = 'n', long = "count", value_name = "COUNT")]
    count: Option<u64>,
    /// Print the topic before each payload: "topic payload".
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print each message by this format instead, as mosquitto_sub's -F: %t topic, %p payload,
    /// %q QoS, %r retained (0/1), %l payload length, %x/%X payload in hex; MQTT 5 properties
    /// when present: %P user properties (key:value, space-separated), %C content type, %D
    /// correlation data, %E message expiry interval, %F payload format indicator, %R response
    /// topic, %S subscription identifiers; %% a percent sign; \n and \t. A newline follows.
    #[arg(
        short = 'F',
        long = "format",
        value_name = "FORMAT",
        conflicts_with = "verbose"
    )]
    format: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse_from(cli::help_alias(std::env::args_os()));
    cli::init_logging(args.connection.debug);
    for topic in &args.topics {
        if let Err(e) = TopicFilter::new(topic) {
            return cli::fail(PROGRAM, EXIT_USAGE, format!("-t '{topic}': {e}"));
        }
    }
    let prepared = match cli::prepare(&args.connection, PROGRAM) {
        Ok(prepared) => prepared,
        Err(message) => return cli::fail(PROGRAM, EXIT_USAGE, message),
    };
    if !prepared.properties.publish.is_empty() {
        return cli::fail(
            PROGRAM,
            EXIT_USAGE,
            "-D publish: amqtt_sub publishes nothing",
        );
    }
    let signals = match cli::stop_signals() {
        Ok(signals) => signals,
        Err(e) => return cli::fail(PROGRAM, EXIT_FAILURE, format!("cannot watch signals: {e}")),
    };
    block_on(run(prepared, &args, signals))
}

/// What ended the wait for the next message.
enum Next {
    Message(Result<Delivery, ClientError>),
    Signal,
}

async fn run(prepared: Prepared, args: &Args, signals: flume::Receiver<&'static str>) -> ExitCode {
    let client = &prepared.client;
    let signal = || async {
        let name = signals.recv_async().await.unwrap_or("a stop signal");
        log::info!("received {name}, disconnecting");
    };
    let connect = client.connect_with(&prepared.url, prepared.options.clone());
    match race(async { Some(connect.await) }, async {
        signal().await;
        None
    })
    .await
    {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            let message = format!("connection to {} failed: {e}", prepared.address());
            return cli::fail(PROGRAM, EXIT_FAILURE, message);
        }
        None => return ExitCode::SUCCESS,
    }

    let qos = QoS::from_u8(args.qos).unwrap_or(QoS::AtMostOnce);
    let filters: Vec<(&str, QoS)> = args.topics.iter().map(|t| (t.as_str(), qos)).collect();
    let codes = match client.subscribe(&filters).await {
        Ok(codes) => codes,
        Err(e) => {
            let _ = client.disconnect().await;
            return cli::fail(PROGRAM, EXIT_FAILURE, format!("subscribe failed: {e}"));
        }
    };
    for ((filter, _), code) in filters.iter().zip(&codes) {
        match code {
            SubscribeReturnCode::Success(granted) => {
                log::info!("subscribed to '{filter}' (QoS {})", *granted as u8)
            }
            SubscribeReturnCode::Failure => {
                log::warn!("the broker refused the subscription to '{filter}'")
            }
        }
    }
    if codes.iter().all(|c| *c == SubscribeReturnCode::Failure) {
        let _ = client.disconnect().await;
        return cli::fail(
            PROGRAM,
            EXIT_FAILURE,
            "the broker refused every subscription",
        );
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut received: u64 = 0;
    let status = loop {
        if args.count.is_some_and(|n| received >= n) {
            break ExitCode::SUCCESS;
        }
        let next = race(
            async { Next::Message(client.deliver_message(None).await) },
            async {
                signal().await;
                Next::Signal
            },
        )
        .await;
        match next {
            Next::Message(Ok(message)) => {
                received += 1;
                if let Err(e) = print(&mut out, &message, args) {
                    // Nobody reads our output any more (e.g. `| head -1`): stop quietly.
                    log::info!("stdout closed: {e}");
                    break ExitCode::SUCCESS;
                }
            }
            Next::Message(Err(e)) => {
                break cli::fail(PROGRAM, EXIT_FAILURE, e);
            }
            Next::Signal => break ExitCode::SUCCESS,
        }
    };
    let goodbye = prepared.properties.disconnect.clone();
    if let Err(e) = client.disconnect_with(ReasonCode::SUCCESS, goodbye).await {
        log::warn!("disconnect: {e}");
    }
    status
}

/// One message, one line: the payload as it is, after "topic " with -v; or as -F says.
fn print(out: &mut impl Write, delivery: &Delivery, args: &Args) -> std::io::Result<()> {
    let message = &delivery.message;
    if let Some(format) = &args.format {
        out.write_all(&format_message(
            format,
            message.topic.as_str(),
            &message.payload,
            message.qos,
            message.retain,
            delivery.properties.as_deref(),
        ))?;
        out.write_all(b"\n")?;
        return out.flush();
    }
    if args.verbose {
        out.write_all(message.topic.as_bytes())?;
        out.write_all(b" ")?;
    }
    out.write_all(&message.payload)?;
    out.write_all(b"\n")?;
    out.flush()
}
