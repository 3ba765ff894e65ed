//! The accept loop of one listener socket on one shard: `max-connections`, `max_connect_rate`
//! (as the listener's current setup says: a reload may change them), back-off on resource
//! errors, and a task per accepted connection (`connection_task.rs`); it ends when its socket is
//! closed (a reload removed the listener). Knows nothing of MQTT.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::connection_task;
use super::settings::ListenerInfo;
use super::shard::{ListenerSlot, ShardRuntime};

pub(crate) async fn run(
    rt: Rc<ShardRuntime>,
    listener: shards::TcpAcceptor,
    info: Arc<ListenerInfo>,
    closed: Rc<Cell<bool>>,
) {
    loop {
        if rt.stopping.get() || closed.get() {
            return;
        }
        let setup = info.setup();
        if let Some(rate) = &setup.connect_rate {
            while let Some(wait) = rate.take(std::time::Instant::now()) {
                rt.stats.borrow_mut().accept_rate_waits += 1;
                shards::rt::sleep(wait).await;
            }
        }
        let accepted = listener.accept().await;
        if closed.get() {
            return;
        }
        match accepted {
            Ok(stream) => {
                let open = info.open.fetch_add(1, Ordering::Relaxed) + 1;
                let slot = ListenerSlot(info.clone());
                if setup.max_connections.is_some_and(|max| open > max) {
                    log::warn!(
                        "listener '{}': max-connections reached, closing a new connection",
                        info.name
                    );
                    rt.stats.borrow_mut().rejected_max_connections += 1;
                    drop(stream);
                    drop(slot);
                    continue;
                }
                connection_task::spawn_isolated(
                    &rt,
                    connection_task::accepted(rt.clone(), stream, slot),
                );
            }
            Err(error) => match error.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) => {
                    log::warn!(
                        "listener '{}': {error}; pausing accepts for 100 ms",
                        info.name
                    );
                    shards::rt::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    log::debug!("listener '{}': accept failed: {error}", info.name);
                    shards::rt::sleep(Duration::from_millis(1)).await;
                }
            },
        }
    }
}
