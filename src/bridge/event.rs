//! What wakes a bridge's thread (`run.rs`), from its local session (`local.rs`) and its remote
//! client (`remote.rs`), and the timings both sides share. Plain definitions: no behaviour.

use std::time::Duration;

use crate::client::Delivery;

use super::local::LocalEvent;

/// Longest wait between connection attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the bridge looks at its connections when nothing happens.
pub(super) const TICK: Duration = Duration::from_millis(500);

/// What wakes the bridge.
#[derive(Debug)]
pub(super) enum Event {
    Local(LocalEvent),
    /// A message from the remote broker (of the remote client `generation`).
    Remote(Delivery),
    /// The remote client `0` gave up or failed a publish (`1`, why).
    RemoteEnded(u64, String),
    /// The remote acknowledged one forwarded message.
    Forwarded,
    Stop,
}
