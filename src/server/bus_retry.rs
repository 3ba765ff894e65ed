//! Bus sends that a full lane refused, retried from a task of their own: for the callers that must
//! not wait (the bus loop, the tick, a connection being closed). A publisher's reader, which may
//! wait, retries in place with `ShardRuntime::send_blocked`.
//!
//! Spawns that one task and nothing else; knows nothing of the tasks that call it.

use std::rc::Rc;

use super::shard::{BusBacklog, ShardRuntime};

/// Like `ShardRuntime::send_blocked`, from a context that must not wait: a detached task.
pub(crate) fn send_blocked_later(rt: &Rc<ShardRuntime>, blocked: BusBacklog) {
    if blocked.is_empty() {
        return;
    }
    let rt = rt.clone();
    shards::rt::spawn(async move { rt.send_blocked(blocked).await }).detach();
}
