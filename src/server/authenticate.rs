//! The authentication plugins' verdict on a CONNECT, without stalling the shard.
//!
//! Plugins that can answer at once (`auth_anonymous`, `auth_file` for a password it verified
//! before, any plugin for a client without a user name) are asked on the event loop. Otherwise
//! the whole chain runs on the shard's blocking helper thread (`shards::rt::spawn_blocking`),
//! while this connection's task waits and the shard goes on serving its other connections. A
//! SHA-512 crypt verification costs milliseconds; on the loop, a burst of wrong passwords would
//! delay every client of the shard by that much each.
//!
//! The pool's thread follows the shard's placement (a pinned shard shares its CPU with it), so
//! the thread lowers its own scheduling priority once (nice 10): when both are runnable the shard
//! gets most of the CPU, and hashing takes what is left. The pool has one thread per shard, so
//! verifications of one shard queue behind each other; a flood of wrong passwords delays other
//! logins that need hashing, not traffic.
//!
//! Asked only for the credentials the core hands out (`PendingConnect::credentials`): not for
//! connections of a listener with `use-identity-as-username`, whose verified client certificate is
//! the authentication (as in Mosquitto), nor for a CONNECT refused anyway.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::plugins::{AuthVerdict, Authenticator, Credentials};

/// Niceness of the helper thread that verifies passwords (0 is normal, 19 the lowest priority).
const HELPER_NICENESS: libc::c_int = 10;

/// Asks the authentication plugins about a CONNECT's `credentials`; never blocks the event loop.
pub(crate) async fn verdict(
    authenticator: &Arc<Authenticator>,
    credentials: Credentials,
) -> AuthVerdict {
    if let Some(verdict) = authenticator.quick_verdict(&credentials) {
        return verdict;
    }
    let authenticator = Arc::clone(authenticator);
    shards::rt::spawn_blocking(move || {
        lower_priority_once();
        // `decide` already turns a plugin's panic into a denial; this also covers our own code,
        // because a panic must not unwind through the runtime's blocking helper thread.
        catch_unwind(AssertUnwindSafe(|| authenticator.decide(&credentials)))
            .unwrap_or(AuthVerdict::Denied)
    })
    .await
}

/// Lowers the calling thread's priority, the first time it is called on that thread.
fn lower_priority_once() {
    thread_local!(static LOWERED: Cell<bool> = const { Cell::new(false) });
    LOWERED.with(|lowered| {
        if lowered.replace(true) {
            return;
        }
        // SAFETY: `gettid` and `setpriority` only read their integer arguments; on Linux
        // `PRIO_PROCESS` with a thread id changes that thread only. Raising one's own niceness
        // needs no privilege.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HELPER_NICENESS)
        };
        if rc != 0 {
            log::debug!(
                "cannot lower the priority of the authentication thread: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}
