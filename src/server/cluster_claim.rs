//! A CONNECT on a cluster node claims its client id in the cluster's session directory before
//! the core answers it: the connection's task asks the cluster link over the bus
//! (`BusMessage::SessionClaim`) and waits for its answer (`BusMessage::SessionClaimed`, routed
//! here by the shard's bus loop). A session another node handed over is given to the core
//! (`BrokerCore::adopt_session`); a directory out of reach marks the CONNECT unregistered (the
//! core then refuses a new persistent session). Once the CONNECT is answered, the link learns
//! the session's profile for the directory ([`connected`]). Glue only: the directory is `src/cluster`'s,
//! the MQTT rules the core's.

use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::broker::{BusMessage, Claim, PendingConnect};

use super::shard::{ShardMessage, ShardRuntime};

/// How long a CONNECT waits for the link at most: the link bounds its own work by
/// `cluster.ack_timeout` (at most 60 s); this only guards against a link that is gone.
const CLAIM_WAIT: Duration = Duration::from_secs(65);

/// The link answered claim `token`.
pub(crate) fn answered(rt: &ShardRuntime, token: u64, claim: Claim) {
    let mut waiting = rt.claims.waiting.borrow_mut();
    if let Some((slot, waker)) = waiting.get_mut(&token) {
        *slot = Some(claim);
        if let Some(waker) = waker.take() {
            waker.wake();
        }
    }
}

/// Claims `pending`'s client id for this node when the broker is a cluster node (nothing
/// otherwise, nor for a generated client id): takes in the session another node handed over,
/// or marks the CONNECT unregistered when the directory is out of reach.
pub(crate) async fn claim(rt: &Rc<ShardRuntime>, pending: &mut PendingConnect) {
    let client_id = pending.client_id();
    // Only a client the core will let in may take its id from another node: not one still to
    // authenticate (MQTT 5 AUTH: not claimed, served by this node only), nor an anonymous one
    // the core refuses.
    let anonymous_refused = !rt.shared.core.allow_anonymous && pending.username().is_none();
    if !rt.shared.core.cluster_link
        || client_id.is_empty()
        || pending.enhanced_auth()
        || anonymous_refused
    {
        return;
    }
    let client_id: Arc<str> = client_id.into();
    let token = rt.claims.next.get() + 1;
    rt.claims.next.set(token);
    let message = BusMessage::SessionClaim {
        from: rt.id,
        token,
        client_id: client_id.clone(),
        clean: pending.starts_clean(),
    };
    let link = rt.shared.shards;
    if rt
        .bus
        .try_send_control(link, ShardMessage::Core(message, None))
        .is_err()
    {
        log::warn!(
            "shard {}: cannot reach the cluster link to claim '{client_id}'",
            rt.id
        );
        pending.set_unregistered();
        return;
    }
    rt.claims.waiting.borrow_mut().insert(token, (None, None));
    let answer = std::future::poll_fn(|cx| {
        let mut waiting = rt.claims.waiting.borrow_mut();
        match waiting.get_mut(&token) {
            Some((Some(_), _)) => Poll::Ready(waiting.remove(&token).and_then(|(c, _)| c)),
            Some((None, waker)) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(None),
        }
    })
    .or(async {
        shards::rt::sleep(CLAIM_WAIT).await;
        None
    })
    .await;
    rt.claims.waiting.borrow_mut().remove(&token);
    match answer {
        Some(Claim::Owned(Some(records))) if !pending.starts_clean() => {
            let adopted = rt
                .core
                .borrow_mut()
                .adopt_session(&client_id, records, Instant::now());
            match adopted {
                Ok(()) => log::info!("client '{client_id}': its session came from another node"),
                Err(error) => log::warn!("client '{client_id}': {error}; starting afresh"),
            }
            let blocked = rt.apply_actions();
            rt.send_blocked(blocked).await;
        }
        Some(Claim::Owned(_)) => {}
        Some(Claim::Unavailable) | None => pending.set_unregistered(),
    }
}

/// The core answered the CONNECT of `conn`: on a cluster node, the link learns its session's
/// profile for the directory entry (`BrokerCore::announce_session_profile`; sent with the
/// CONNECT's own actions).
pub(crate) fn connected(rt: &ShardRuntime, conn: crate::broker::ConnId) {
    if rt.shared.core.cluster_link {
        rt.core.borrow_mut().announce_session_profile(conn);
    }
}
