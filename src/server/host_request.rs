//! What the host program asks a shard (a [`HostRequest`], sent into the shard's inbox by
//! `embed.rs`) and how the shard answers it ([`answer`], called from its bus loop): only the core's
//! own verbs (`route`, `list_sessions`, `list_retained`, `kick_client`,
//! `delete_session`), the answer sent back on the request's
//! channel (which never blocks).
//!
//! Imports nothing of `server/` (the shard's message type carries a request, and the host side
//! sends one).

use std::cell::RefCell;
use std::sync::mpsc;

use crate::broker::{BrokerCore, ConnId, ConnPeer, Message, RetainedInfo, SessionPage};

/// Session-table slots a shard reads for one page of `BrokerHandle::sessions`: ~0.1 ms of the
/// shard's loop a page (measured: 100k sessions in 256 pages, 97 µs a page, release build).
const PAGE_SLOTS: usize = 512;

/// What the host asks a shard; the answer goes back on the channel it carries.
pub(crate) enum HostRequest {
    /// Route this message as a client's publish would be; answer once routed.
    Publish {
        message: Message,
        done: mpsc::Sender<()>,
    },
    /// A page of the shard's sessions, from this slot of its table on.
    Sessions {
        from: usize,
        reply: mpsc::Sender<SessionPage>,
    },
    /// The shard's retained topics.
    Retained {
        reply: mpsc::Sender<Vec<RetainedInfo>>,
    },
    /// Close this client's connection (sent to its home shard); answers whether there was one.
    Kick {
        client_id: String,
        reply: mpsc::Sender<bool>,
    },
    /// Remove this client's session (sent to its home shard); answers whether there was one.
    DeleteSession {
        client_id: String,
        reply: mpsc::Sender<bool>,
    },
}

/// The shard side: answers a host request on the shard's loop; `peer` is the runtime's record of
/// a connection (its address and listener, for the session listing). A reply whose caller gave up
/// (timed out) is dropped.
pub(crate) fn answer(
    core: &RefCell<BrokerCore>,
    peer: impl Fn(ConnId) -> Option<ConnPeer>,
    request: HostRequest,
) {
    match request {
        HostRequest::Publish { message, done } => {
            core.borrow_mut().route(message);
            let _ = done.send(());
        }
        HostRequest::Sessions { from, reply } => {
            let _ = reply.send(core.borrow().list_sessions_with(from, PAGE_SLOTS, peer));
        }
        HostRequest::Retained { reply } => {
            let _ = reply.send(core.borrow().list_retained());
        }
        HostRequest::Kick { client_id, reply } => {
            let _ = reply.send(core.borrow_mut().kick_client(&client_id));
        }
        HostRequest::DeleteSession { client_id, reply } => {
            let _ = reply.send(core.borrow_mut().delete_session(&client_id));
        }
    }
}
