//! The bridge's session on this broker: one connection over loopback to a plain TCP listener of
//! the broker itself, at the bridge's `protocol_version` (`wire.rs`), with a persistent session,
//! so that the broker queues, journals and redelivers the bridge's `out` messages like any
//! subscriber's.
//!
//! It differs from `src/client` in one way that matters: it does not acknowledge a message when
//! it arrives. The bridge acknowledges it ([`LocalLink::ack`]: PUBACK, or PUBREC for QoS 2) once
//! the remote broker has (PUBACK / PUBCOMP); until then the broker holds it in the bridge's
//! session and sends it again after a reconnect or a restart. The broker's in-flight window
//! (`max_inflight`) bounds how many wait in the bridge at once.
//!
//! A reader thread per connection decodes packets and hands them to the bridge's event channel;
//! writes come from the bridge's threads under a mutex. Blocking std sockets: loopback, and
//! never on a shard thread. What must not live here: topic mapping, the remote side, the packets'
//! forms at each level (`wire.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::wire::{self, Incoming, LocalPublish, Login, Outgoing};
use crate::protocol::{ProtocolLevel, QoS, TopicFilter};

/// How long connecting and CONNACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the local session could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalError {
    /// The socket failed.
    #[error("local connection to {addr}: {source}")]
    Io {
        /// The listener's address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The broker refused the CONNECT.
    #[error("this broker refused the bridge's session: {0} (local_username / local_password?)")]
    Refused(String),
    /// The broker sent something else than CONNACK first, or bytes that are no MQTT.
    #[error("local connection: {0}")]
    Protocol(String),
}

/// What the reader thread reports to the bridge.
#[derive(Debug)]
pub(crate) enum LocalEvent {
    /// A message for the remote broker; acknowledge it with [`LocalLink::ack`] on this link.
    Message(Arc<LocalLink>, LocalPublish),
    /// The broker acknowledged the bridge's publish with this id (PUBACK, or PUBCOMP).
    Done(u16),
    /// The connection ended (the bridge reconnects).
    Closed(String),
}

/// Who connects, and to what.
#[derive(Debug, Clone)]
pub(crate) struct LocalOptions {
    pub addr: SocketAddr,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: u16,
    pub filters: Vec<(TopicFilter, QoS)>,
    /// MQTT 3.1.1 or 5.
    pub level: ProtocolLevel,
}

/// One connection of the bridge's local session.
#[derive(Debug)]
pub(crate) struct LocalLink {
    writer: Mutex<TcpStream>,
    addr: SocketAddr,
    level: ProtocolLevel,
    closed: AtomicBool,
    /// When the link was made, and the last write in milliseconds since then: the keep-alive
    /// counts the client's packets, so a PINGREQ goes out when the bridge has written nothing
    /// for half of it, however much it reads.
    opened: Instant,
    last_write_ms: AtomicU64,
    /// The session's keep-alive, and half of it (how often a PINGREQ goes out when idle).
    keep_alive: Duration,
    ping_every: Duration,
}

impl LocalLink {
    /// Connects, waits for CONNACK, subscribes, and starts the reader thread that sends
    /// [`LocalEvent`]s on `events` (through `wrap`).
    pub(crate) fn connect<E: Send + 'static>(
        options: &LocalOptions,
        events: flume::Sender<E>,
        wrap: fn(LocalEvent) -> E,
    ) -> Result<Arc<LocalLink>, LocalError> {
        let addr = options.addr;
        let io = |source| LocalError::Io { addr, source };
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(io)?;
        let level = options.level;
        let login = Login {
            client_id: &options.client_id,
            username: options.username.as_deref(),
            password: options.password.as_deref(),
            keep_alive: options.keep_alive,
        };
        write_packet(&mut stream, level, &Outgoing::Connect(login)).map_err(io)?;
        let mut buf = BytesMut::with_capacity(8192);
        match read_packet(&mut stream, level, &mut buf).map_err(io)? {
            Some(Incoming::ConnAck(Ok(()))) => {}
            Some(Incoming::ConnAck(Err(refused))) => return Err(LocalError::Refused(refused)),
            Some(other) => return Err(LocalError::Protocol(format!("{other:?} before CONNACK"))),
            None => return Err(LocalError::Protocol("closed before CONNACK".into())),
        }
        if !options.filters.is_empty() {
            write_packet(&mut stream, level, &Outgoing::Subscribe(&options.filters)).map_err(io)?;
        }
        let ping_every = Duration::from_secs(u64::from(options.keep_alive.max(2)) / 2);
        stream.set_read_timeout(Some(ping_every)).map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
        let link = Arc::new(LocalLink {
            writer: Mutex::new(stream),
            addr,
            level,
            closed: AtomicBool::new(false),
            opened: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            keep_alive: Duration::from_secs(u64::from(options.keep_alive)),
            ping_every,
        });
        let for_reader = Arc::clone(&link);
        let filters = options.filters.clone();
        std::thread::Builder::new()
            .name("amqtt-bridge-local".into())
            .spawn(move || {
                let reason = for_reader.read_loop(reader, buf, &events, wrap, &filters);
                for_reader.closed.store(true, Ordering::SeqCst);
                let _ = events.send(wrap(LocalEvent::Closed(reason)));
            })
            .map_err(io)?;
        Ok(link)
    }

    /// Acknowledges a message the broker sent on this link: PUBACK (QoS 1) or PUBREC (QoS 2; the
    /// reader answers the PUBREL). Nothing for QoS 0, nor when the link has closed (the broker
    /// sends the message again on the next one).
    pub(crate) fn ack(&self, publish: &LocalPublish) {
        let packet = match (publish.message.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => Outgoing::PubAck(packet_id),
            (QoS::ExactlyOnce, Some(packet_id)) => Outgoing::PubRec(packet_id),
            _ => return,
        };
        // A write error closes the reader's side too; it reports the loss.
        let _ = self.write(&packet);
    }

    /// Publishes a message from the remote broker here (the bridge chose its packet id).
    pub(crate) fn publish(&self, publish: &LocalPublish) -> std::io::Result<()> {
        self.write(&Outgoing::Publish(publish))
    }

    /// The connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends DISCONNECT and closes the socket (the reader then ends).
    pub(crate) fn close(&self) {
        let _ = self.write(&Outgoing::Disconnect);
        if let Ok(stream) = self.writer.lock() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn write(&self, packet: &Outgoing<'_>) -> std::io::Result<()> {
        let mut stream = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("writer lock poisoned"))?;
        write_packet(&mut stream, self.level, packet)?;
        let since = self.opened.elapsed().as_millis();
        self.last_write_ms
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(())
    }

    /// Reads until the connection ends; the reason it ended.
    fn read_loop<E>(
        self: &Arc<Self>,
        mut stream: TcpStream,
        mut buf: BytesMut,
        events: &flume::Sender<E>,
        wrap: fn(LocalEvent) -> E,
        filters: &[(TopicFilter, QoS)],
    ) -> String {
        let (keep_alive, ping_every) = (self.keep_alive, self.ping_every);
        let mut heard = Instant::now();
        loop {
            let read = read_packet(&mut stream, self.level, &mut buf);
            let last_write = Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed));
            if self.opened.elapsed().saturating_sub(last_write) >= ping_every {
                if let Err(e) = self.write(&Outgoing::PingReq) {
                    return e.to_string();
                }
            }
            let packet = match read {
                Ok(Some(packet)) => packet,
                Ok(None) => return format!("{} closed the connection", self.addr),
                Err(e) if is_timeout(&e) => {
                    if heard.elapsed() > keep_alive + keep_alive / 2 {
                        return "no answer to PINGREQ within the keep-alive".into();
                    }
                    continue;
                }
                Err(e) => return e.to_string(),
            };
            heard = Instant::now();
            let answer = match packet {
                Incoming::Publish(publish) => {
                    let event = LocalEvent::Message(Arc::clone(self), publish);
                    if events.send(wrap(event)).is_err() {
                        return "the bridge stopped".into();
                    }
                    continue;
                }
                Incoming::Done(packet_id, refused) => {
                    if let Some(why) = refused {
                        log::warn!("bridge: this broker refused a message from the remote: {why}");
                    }
                    if events.send(wrap(LocalEvent::Done(packet_id))).is_err() {
                        return "the bridge stopped".into();
                    }
                    continue;
                }
                Incoming::PubRec(packet_id) => Outgoing::PubRel(packet_id),
                Incoming::PubRel(packet_id) => Outgoing::PubComp(packet_id),
                Incoming::SubAck(refused) => {
                    for (_, (filter, _)) in refused.iter().zip(filters).filter(|(r, _)| **r) {
                        log::warn!(
                            "bridge: this broker refused the local subscription to '{}'",
                            filter.as_str()
                        );
                    }
                    continue;
                }
                Incoming::PingResp => continue,
                Incoming::ConnAck(_) => return "a second CONNACK from this broker".into(),
                Incoming::Unexpected(name) => return format!("unexpected {name} from this broker"),
            };
            if let Err(e) = self.write(&answer) {
                return e.to_string();
            }
        }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn write_packet(
    stream: &mut TcpStream,
    level: ProtocolLevel,
    packet: &Outgoing<'_>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    wire::encode(level, packet, &mut out)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&out)
}

/// The next packet; `None` when the peer closed the connection. A read timeout is returned as
/// the error it is (the caller pings), with the bytes read so far kept in `buf`.
fn read_packet(
    stream: &mut TcpStream,
    level: ProtocolLevel,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Incoming>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match wire::decode(level, buf) {
            Ok(Some(packet)) => return Ok(Some(packet)),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
