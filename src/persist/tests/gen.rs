//! A seeded generator of records (every variant, every field's edge values) and of coherent
//! journals (sessions opened before they are used, messages stored before they are enqueued), and
//! helpers that encode and read them back.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::persist::codec::{encode, encode_header, FileKind, ReadError, Reader};
use crate::persist::{MsgId, Record};
use crate::protocol::v5::{Properties, RetainHandling};
use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

const CLIENT_IDS: [&str; 6] = ["a", "b", "sensor-17", "\u{e9}t\u{e9}", "", "c"];
const TOPICS: [&str; 5] = ["t", "t/a", "$SYS/x", "a/very/deep/topic/name", "/"];
const FILTERS: [&str; 6] = ["t", "t/+", "#", "+/a/#", "/", "t/a"];

/// Draws records from a seeded generator.
pub struct Gen {
    pub rng: fastrand::Rng,
    /// Longest payload drawn (a few are this long; most are under 40 bytes).
    pub max_payload: usize,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: fastrand::Rng::with_seed(seed),
            max_payload: 5000,
        }
    }

    pub fn client_id(&mut self) -> Arc<str> {
        Arc::from(CLIENT_IDS[self.rng.usize(..CLIENT_IDS.len())])
    }

    fn topic(&mut self) -> TopicName {
        TopicName::new(TOPICS[self.rng.usize(..TOPICS.len())]).expect("valid topic")
    }

    fn filter(&mut self) -> TopicFilter {
        TopicFilter::new(FILTERS[self.rng.usize(..FILTERS.len())]).expect("valid filter")
    }

    pub fn qos(&mut self) -> QoS {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][self.rng.usize(..3)]
    }

    fn packet_id(&mut self) -> u16 {
        match self.rng.u8(..4) {
            0 => 1,
            1 => u16::MAX,
            _ => self.rng.u16(1..),
        }
    }

    fn u64(&mut self) -> u64 {
        match self.rng.u8(..4) {
            0 => 0,
            1 => u64::MAX,
            _ => self.rng.u64(..1 << 40),
        }
    }

    pub fn message(&mut self) -> Message {
        let len = match self.rng.u8(..4) {
            0 => 0,
            1 => self.rng.usize(..=self.max_payload),
            _ => self.rng.usize(..=self.max_payload.min(40)),
        };
        let payload: Vec<u8> = std::iter::repeat_with(|| self.rng.u8(..))
            .take(len)
            .collect();
        Message {
            topic: self.topic(),
            payload: Bytes::from(payload),
            qos: self.qos(),
            retain: self.rng.bool(),
            properties: self.properties(),
        }
    }

    /// MQTT 5 message properties one time in three: user properties in an order that is not
    /// sorted, an expiry interval, and the other forwarded ones now and then.
    fn properties(&mut self) -> Option<Arc<Properties>> {
        if self.rng.u8(..3) != 0 {
            return None;
        }
        let mut p = Properties {
            message_expiry_interval: self.rng.bool().then(|| self.rng.u32(..)),
            user_properties: vec![("z".into(), "1".into()), ("a".into(), "\u{e9}".into())],
            ..Properties::default()
        };
        if self.rng.bool() {
            p.payload_format_utf8 = Some(self.rng.bool());
            p.content_type = Some("text/plain".into());
            p.response_topic = Some("reply/to".into());
            p.correlation_data = Some(Bytes::from_static(b"\x00\xffid"));
            p.user_properties.push(("z".into(), "again".into()));
        }
        Some(Arc::new(p))
    }

    /// Subscription options: an MQTT 3 subscription half the time, else MQTT 5 options.
    pub fn options(&mut self) -> SubOptions {
        let qos = self.qos();
        if self.rng.bool() {
            return SubOptions::qos(qos);
        }
        SubOptions {
            qos,
            no_local: self.rng.bool(),
            retain_as_published: self.rng.bool(),
            retain_handling: [
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ][self.rng.usize(..3)],
            id: std::num::NonZeroU32::new(self.rng.u32(..268_435_456)),
        }
    }

    fn expiry(&mut self) -> Option<u64> {
        self.rng.bool().then(|| self.u64())
    }

    fn option_message(&mut self) -> Option<Message> {
        self.rng.bool().then(|| self.message())
    }

    /// Any record, each variant equally likely, fields unrelated to any state.
    pub fn record(&mut self) -> Record {
        let client_id = self.client_id();
        match self.rng.u8(..20) {
            15 => Record::SessionExpiry {
                client_id,
                interval_secs: self.expiry(),
            },
            16 => Record::WillDelay {
                client_id,
                delay_secs: self.rng.u32(1..),
            },
            17 => Record::MessageExpiry {
                id: self.u64(),
                at_unix_ms: self.u64(),
            },
            18 => Record::RetainExpiry {
                topic: self.topic(),
                clock: self.u64(),
                shard: self.rng.u32(..8),
                at_unix_ms: self.u64(),
            },
            14 => Record::SessionUser {
                client_id,
                username: self.rng.bool().then(|| self.client_id()),
            },
            0 => Record::SessionOpen { client_id },
            1 => Record::SessionDrop { client_id },
            2 => Record::SessionOffline {
                client_id,
                at_unix_ms: self.u64(),
            },
            3 => Record::Subscribe {
                client_id,
                filter: self.filter(),
                options: self.options(),
            },
            4 => Record::Unsubscribe {
                client_id,
                filter: self.filter(),
            },
            5 => Record::Will {
                client_id,
                will: self.option_message(),
            },
            6 => Record::Message {
                id: self.u64(),
                message: self.message(),
            },
            7 => Record::Enqueue {
                client_id,
                id: self.u64(),
                qos: self.qos(),
            },
            8 => Record::PacketId {
                client_id,
                id: self.u64(),
                packet_id: self.packet_id(),
            },
            9 => Record::Released {
                client_id,
                id: self.u64(),
            },
            10 => Record::Done {
                client_id,
                id: self.u64(),
            },
            11 => Record::Qos2Received {
                client_id,
                packet_id: self.packet_id(),
            },
            12 => Record::Qos2Released {
                client_id,
                packet_id: self.packet_id(),
            },
            _ => {
                let topic = self.topic();
                let message = self.rng.bool().then(|| Message {
                    topic: topic.clone(),
                    retain: true,
                    ..self.message()
                });
                Record::Retain {
                    topic,
                    message,
                    clock: self.u64(),
                    shard: self.rng.u32(..8),
                }
            }
        }
    }

    /// A journal of `n` records as a shard would write it: every record about a session between
    /// its `SessionOpen` and its `SessionDrop`, messages stored before they are enqueued, packet
    /// ids, releases and dones about queued messages; now and then an `Enqueue` of an id never
    /// stored. Retained updates are numbered `(clock, shard)`.
    pub fn journal(&mut self, n: usize, shard: u32) -> Vec<Record> {
        let mut out = Vec::with_capacity(n);
        let mut next_id: MsgId = 1;
        let mut open: Vec<Arc<str>> = Vec::new();
        // (client id, message id) pairs enqueued and not yet done.
        let mut queued: Vec<(Arc<str>, MsgId)> = Vec::new();
        let mut clock = 0;
        while out.len() < n {
            if open.is_empty() || self.rng.u8(..12) == 0 {
                let client_id = self.client_id();
                if !open.contains(&client_id) {
                    open.push(client_id.clone());
                }
                out.push(Record::SessionOpen { client_id });
                continue;
            }
            let client_id = open[self.rng.usize(..open.len())].clone();
            match self.rng.u8(..20) {
                0 if self.rng.u8(..4) == 0 => {
                    open.retain(|c| *c != client_id);
                    queued.retain(|(c, _)| *c != client_id);
                    out.push(Record::SessionDrop { client_id });
                }
                0..=2 => out.push(Record::SessionOffline {
                    client_id,
                    at_unix_ms: self.rng.u64(1..1 << 42),
                }),
                3 => out.push(Record::Subscribe {
                    client_id,
                    filter: self.filter(),
                    options: self.options(),
                }),
                4 => out.push(Record::SessionExpiry {
                    client_id,
                    interval_secs: self.rng.bool().then(|| self.rng.u64(..1 << 32)),
                }),
                5 => out.push(Record::Unsubscribe {
                    client_id,
                    filter: self.filter(),
                }),
                6 => {
                    let will = self.option_message();
                    let delayed = will.is_some() && self.rng.bool();
                    out.push(Record::Will {
                        client_id: client_id.clone(),
                        will,
                    });
                    if delayed {
                        out.push(Record::WillDelay {
                            client_id,
                            delay_secs: self.rng.u32(1..100_000),
                        });
                    }
                }
                7..=9 => {
                    // One message for up to three open sessions, as routing stores it.
                    let id = next_id;
                    next_id += 1;
                    let message = self.message();
                    let expires = message
                        .properties
                        .as_ref()
                        .is_some_and(|p| p.message_expiry_interval.is_some());
                    out.push(Record::Message { id, message });
                    if expires {
                        out.push(Record::MessageExpiry {
                            id,
                            at_unix_ms: self.rng.u64(1..1 << 42),
                        });
                    }
                    let mut to = open.clone();
                    self.rng.shuffle(&mut to);
                    to.truncate(self.rng.usize(1..4));
                    for client_id in to {
                        out.push(Record::Enqueue {
                            client_id: client_id.clone(),
                            id,
                            qos: [QoS::AtLeastOnce, QoS::ExactlyOnce][self.rng.usize(..2)],
                        });
                        queued.push((client_id, id));
                    }
                }
                10 | 11 if !queued.is_empty() => {
                    let (client_id, id) = queued[self.rng.usize(..queued.len())].clone();
                    out.push(Record::PacketId {
                        client_id,
                        id,
                        packet_id: self.packet_id(),
                    });
                }
                12 if !queued.is_empty() => {
                    let (client_id, id) = queued[self.rng.usize(..queued.len())].clone();
                    out.push(Record::Released { client_id, id });
                }
                13 | 14 if !queued.is_empty() => {
                    let (client_id, id) = queued.swap_remove(self.rng.usize(..queued.len()));
                    out.push(Record::Done { client_id, id });
                }
                15 => out.push(Record::Qos2Received {
                    client_id,
                    packet_id: self.rng.u16(1..20),
                }),
                16 => out.push(Record::Qos2Released {
                    client_id,
                    packet_id: self.rng.u16(1..20),
                }),
                17 | 18 => {
                    clock += self.rng.u64(0..3);
                    let topic = self.topic();
                    let message = self.rng.bool().then(|| Message {
                        topic: topic.clone(),
                        retain: true,
                        payload: Bytes::from_static(b"r"),
                        ..self.message()
                    });
                    let expires = message.as_ref().is_some_and(|m| m.properties.is_some());
                    out.push(Record::Retain {
                        topic: topic.clone(),
                        message,
                        clock,
                        shard,
                    });
                    if expires {
                        out.push(Record::RetainExpiry {
                            topic,
                            clock,
                            shard,
                            at_unix_ms: self.rng.u64(1..1 << 42),
                        });
                    }
                }
                _ => out.push(Record::Enqueue {
                    client_id,
                    id: next_id + 1_000_000,
                    qos: QoS::AtLeastOnce,
                }),
            }
        }
        out.truncate(n);
        out
    }
}

/// A file of `kind`: the header, then `records` framed.
pub fn file(kind: FileKind, records: &[Record]) -> Bytes {
    let mut out = BytesMut::new();
    encode_header(kind, &mut out);
    for record in records {
        encode(record, &mut out).expect("encodable record");
    }
    out.freeze()
}

/// Every record of `data` (a file with its header) and the error that ended it, if any.
pub fn read(data: Bytes) -> (Vec<Record>, Option<ReadError>) {
    let (_, reader) = Reader::open(data).expect("a valid header");
    let mut records = Vec::new();
    for item in reader {
        match item {
            Ok(record) => records.push(record),
            Err(error) => return (records, Some(error)),
        }
    }
    (records, None)
}
