//! A look at the packet at the front of a read buffer for the topics it uses, without consuming
//! it: the runtime asks the plugins whose topic checks need I/O (`auth_http`'s ACL) before the
//! core handles the packet. Parsing is the codec's own (`publish::borrow`, `subscribe::decode`),
//! so a packet is read here exactly as the core will read it. Nothing is decided here.

use super::fixed_header::{self, PUBLISH, SUBSCRIBE};
use super::{publish, subscribe, Share};

/// The topics of one packet, as [`peek_topics`] finds them.
#[derive(Debug, PartialEq, Eq)]
pub enum PeekedTopics<'a> {
    /// A PUBLISH to this topic name.
    Publish(&'a str),
    /// A SUBSCRIBE with the filters the topic checks are asked about: each filter as it stands,
    /// but a shared subscription's filter after its share name (`$share/g/a/#` is checked as
    /// `a/#`, as the core checks it); an invalid share is left out (the core refuses it unasked).
    Subscribe(Vec<String>),
    /// Another packet type, or a PUBLISH/SUBSCRIBE the core will refuse as malformed.
    None,
}

/// The packet at the front of `buf` and how many bytes it takes; `None` when `buf` does not
/// hold a whole packet (or the fixed header is already wrong, or the packet is over
/// `max_packet_size`: the core closes the connection for those).
pub fn peek_topics(buf: &[u8], max_packet_size: usize) -> Option<(PeekedTopics<'_>, usize)> {
    peek(buf, max_packet_size, false)
}

/// As [`peek_topics`], for an MQTT 5 connection's bytes (a PUBLISH whose topic a Topic Alias
/// stands for has none to peek).
pub fn peek_topics_v5(buf: &[u8], max_packet_size: usize) -> Option<(PeekedTopics<'_>, usize)> {
    peek(buf, max_packet_size, true)
}

fn peek(buf: &[u8], max_packet_size: usize, v5: bool) -> Option<(PeekedTopics<'_>, usize)> {
    let header = fixed_header::parse(buf).ok()??;
    let total = header.header_len + header.remaining_len;
    if total > max_packet_size {
        return None;
    }
    let body = buf.get(header.header_len..total)?;
    let topics = match header.packet_type {
        PUBLISH => publish::parse(header.flags, body, v5)
            .ok()
            .and_then(|fields| std::str::from_utf8(&body[fields.topic]).ok())
            .filter(|topic| !topic.is_empty())
            .map_or(PeekedTopics::None, PeekedTopics::Publish),
        SUBSCRIBE => {
            let filters = if v5 {
                super::v5::subscribe_filters(body)
            } else {
                subscribe::decode(body).map(|s| s.filters.into_iter().map(|f| f.filter).collect())
            };
            match filters {
                Ok(filters) => PeekedTopics::Subscribe(
                    filters
                        .iter()
                        .filter_map(|f| match f.share() {
                            Share::NotShared => Some(f.as_str().to_string()),
                            Share::Shared { filter, .. } => Some(filter.as_str().to_string()),
                            Share::Invalid(_) => None,
                        })
                        .collect(),
                ),
                Err(_) => PeekedTopics::None,
            }
        }
        _ => PeekedTopics::None,
    };
    Some((topics, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::encode_packet;
    use crate::protocol::{
        Message, Packet, Publish, QoS, Subscribe, SubscribeFilter, TopicFilter, TopicName,
    };

    fn message_to_a_b() -> Message {
        Message {
            topic: TopicName::new("a/b").expect("topic"),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }
    }

    #[test]
    fn finds_the_topics_of_publish_and_subscribe_and_waits_for_whole_packets() {
        let mut buf = encode_packet(&Packet::Publish(Publish::new(
            message_to_a_b(),
            Some(7),
            false,
        )));
        let publish_len = buf.len();
        buf.extend_from_slice(&encode_packet(&Packet::Subscribe(Subscribe {
            packet_id: 8,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new("c/#").expect("filter"),
                qos: QoS::AtMostOnce,
            }],
        })));
        buf.extend_from_slice(&encode_packet(&Packet::PingReq));
        let (first, n) = peek_topics(&buf, 1 << 20).expect("publish");
        assert_eq!((first, n), (PeekedTopics::Publish("a/b"), publish_len));
        let (second, m) = peek_topics(&buf[n..], 1 << 20).expect("subscribe");
        assert_eq!(second, PeekedTopics::Subscribe(vec!["c/#".to_string()]));
        let (third, _) = peek_topics(&buf[n + m..], 1 << 20).expect("pingreq");
        assert_eq!(third, PeekedTopics::None);
        // Part of a packet: nothing yet; a packet over the limit: nothing.
        assert_eq!(peek_topics(&buf[..n - 1], 1 << 20), None);
        assert_eq!(peek_topics(&buf, n - 1), None);
    }

    #[test]
    fn mqtt5_packets_are_peeked_past_their_properties() {
        use crate::protocol::v5;
        let mut buf = bytes::BytesMut::new();
        let properties = v5::Properties {
            content_type: Some("text/plain".into()),
            ..v5::Properties::default()
        };
        v5::Packet::Publish(v5::Publish {
            properties,
            ..v5::Publish::new(message_to_a_b(), Some(1), false)
        })
        .encode(&mut buf)
        .expect("publish");
        let publish_len = buf.len();
        v5::Packet::Subscribe(v5::Subscribe {
            packet_id: 2,
            properties: v5::Properties {
                user_properties: vec![("k".into(), "v".into())],
                ..v5::Properties::default()
            },
            filters: vec![v5::Subscription {
                filter: TopicFilter::new("c/#").expect("filter"),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: v5::RetainHandling::DoNotSend,
            }],
        })
        .encode(&mut buf)
        .expect("subscribe");
        let (first, n) = peek_topics_v5(&buf, 1 << 20).expect("publish");
        assert_eq!((first, n), (PeekedTopics::Publish("a/b"), publish_len));
        let (second, _) = peek_topics_v5(&buf[n..], 1 << 20).expect("subscribe");
        assert_eq!(second, PeekedTopics::Subscribe(vec!["c/#".to_string()]));
    }

    #[test]
    fn a_shared_subscription_is_peeked_as_the_filter_the_core_checks() {
        // The core checks `$share/g/a/#` as `a/#` (handlers/subscribe.rs): the answer fetched
        // ahead must be for that filter, or the check finds none and denies.
        let filter = |f: &str| SubscribeFilter {
            filter: TopicFilter::new(f).expect("filter"),
            qos: QoS::AtMostOnce,
        };
        let buf = encode_packet(&Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![filter("$share/g/a/#"), filter("$share/g"), filter("b")],
        }));
        let (peeked, _) = peek_topics(&buf, 1 << 20).expect("subscribe");
        let wanted = vec!["a/#".to_string(), "b".to_string()];
        assert_eq!(peeked, PeekedTopics::Subscribe(wanted));
    }
}
