//! The runtime's side of topic checks that need I/O ([`crate::plugins::TopicPrefetch`]): before
//! the core handles what a connection sent, the topics of its whole PUBLISH and SUBSCRIBE
//! packets are looked at (`protocol::peek_topics`), and the answers the plugins do not hold yet
//! are fetched on the shard's blocking helper thread while this connection's reading waits. The
//! shard's other connections go on meanwhile; this connection's packets keep their order.
//!
//! Called by `read_loop.rs` only when such a plugin is configured, and by `connection_task.rs`
//! for a CONNECT's will (checked by the core when it answers the CONNECT). Decides nothing: a
//! missing answer is the plugin's to deny.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;

use crate::broker::ConnId;
use crate::plugins::{TopicAccess, TopicQuery, TopicQueryRef};
use crate::protocol::{peek_topics, peek_topics_v5, PeekedTopics};

use super::shard::ShardRuntime;

/// The most questions fetched in one go: a burst of packets to distinct topics is fetched in
/// batches, and a failing service costs one timeout per batch (the plugin skips the rest of it).
const BATCH: usize = 64;

/// Fetches the answer for publishing a CONNECT's will to `topic`, when a plugin lacks it, on the
/// shard's blocking helper thread (this connection waits; the shard goes on).
pub(super) async fn fetch_will(
    rt: &Rc<ShardRuntime>,
    client_id: &str,
    username: Option<&str>,
    topic: &str,
) {
    let prefetch = &rt.prefetch.borrow().clone();
    let query = TopicQueryRef {
        client_id,
        username,
        access: TopicAccess::Publish,
        topic,
    };
    if !prefetch.missing(&query) {
        return;
    }
    let missing = vec![TopicQuery {
        client_id: client_id.into(),
        username: username.map(Into::into),
        access: TopicAccess::Publish,
        topic: topic.to_string(),
    }];
    let prefetch = prefetch.clone();
    shards::rt::spawn_blocking(move || {
        // As in `fetch_ahead`: no panic unwinds through the helper thread.
        let _ = catch_unwind(AssertUnwindSafe(|| prefetch.fetch(&missing)));
    })
    .await;
}

/// Looks at the whole packets of `buf` past its first `*looked` bytes (already looked at), and
/// advances `*looked` past those it covered. Returns the fetch to wait for when some answers are
/// missing; `None` when every whole packet of `buf` can be handled now.
pub(super) fn fetch_ahead(
    rt: &Rc<ShardRuntime>,
    conn: ConnId,
    buf: &[u8],
    looked: &mut usize,
) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
    let prefetch = &rt.prefetch.borrow().clone();
    let (client_id, username) = rt.core.borrow().client_identity(conn)?;
    let max_packet_size = rt.shared.core.max_packet_size;
    let peek = if rt.core.borrow().is_v5(conn) {
        peek_topics_v5
    } else {
        peek_topics
    };
    let mut missing: Vec<TopicQuery> = Vec::new();
    while missing.len() < BATCH {
        let Some((topics, len)) = buf.get(*looked..).and_then(|b| peek(b, max_packet_size)) else {
            break;
        };
        *looked += len;
        let mut ask = |access: TopicAccess, topic: &str| {
            let query = TopicQueryRef {
                client_id: &client_id,
                username: username.as_deref(),
                access,
                topic,
            };
            if prefetch.missing(&query) && !missing.iter().any(|m| m.borrowed() == query) {
                missing.push(TopicQuery {
                    client_id: client_id.clone(),
                    username: username.clone(),
                    access,
                    topic: topic.to_string(),
                });
            }
        };
        match topics {
            // The usual case: one topic, borrowed from the read buffer.
            PeekedTopics::Publish(topic) => ask(TopicAccess::Publish, topic),
            PeekedTopics::Subscribe(filters) => {
                for filter in &filters {
                    ask(TopicAccess::Subscribe, filter);
                }
            }
            PeekedTopics::None => {}
        }
    }
    if missing.is_empty() {
        return None;
    }
    let prefetch = prefetch.clone();
    Some(Box::pin(async move {
        shards::rt::spawn_blocking(move || {
            // `fetch` turns a plugin's panic into a log line; this covers ours, because a panic
            // must not unwind through the runtime's helper thread.
            let _ = catch_unwind(AssertUnwindSafe(|| prefetch.fetch(&missing)));
        })
        .await
    }))
}
