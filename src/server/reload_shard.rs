//! The shard side of a configuration reload: a [`ShardReload`] (plain data, in `settings.rs`) arrives in the shard's inbox (sent
//! by `reload.rs` through `host_client.rs`) and [`apply`] runs it on the shard's loop, between
//! its other work: the core's new settings and plugins, the runtime's new authentication and
//! prefetching plugins, listening sockets closed and opened. Also [`start_listener`], the one
//! way a shard starts accepting on a socket (at start and at a reload).
//!
//! Nothing here reads a file or decides what changes: the reload was validated and built whole
//! before any shard got its part.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use super::accept_loop;
use super::settings::{ListenerInfo, ShardReload};
use super::shard::{Listening, ShardRuntime};

/// Applies `reload` on this shard (its bus loop applies the core's actions after it).
pub(crate) fn apply(rt: &Rc<ShardRuntime>, reload: ShardReload) {
    let ShardReload {
        core,
        authenticator,
        prefetch,
        close,
        open,
        done,
    } = reload;
    if let Some(authenticator) = authenticator {
        *rt.authenticator.borrow_mut() = authenticator;
    }
    if let Some(prefetch) = prefetch {
        *rt.prefetch.borrow_mut() = prefetch;
    }
    let disconnected = rt.core.borrow_mut().reload(&core);
    rt.listening.borrow_mut().retain(|listening| {
        let closing = close.contains(&listening.name);
        if closing {
            listening.close();
        }
        !closing
    });
    for (socket, info) in open {
        start_listener(rt, socket, info);
    }
    // The reloading thread may have given up waiting: nothing to tell then.
    if let Some(done) = done {
        let _ = done.send(disconnected);
    }
}

/// Starts accepting on `socket` (this shard's socket of `info`'s listener).
pub(crate) fn start_listener(
    rt: &Rc<ShardRuntime>,
    socket: std::net::TcpListener,
    info: Arc<ListenerInfo>,
) {
    let fd = socket.as_raw_fd();
    match shards::TcpAcceptor::new(socket) {
        Ok(acceptor) => {
            let closed = Rc::new(Cell::new(false));
            rt.listening.borrow_mut().push(Listening {
                name: info.name.clone(),
                fd,
                closed: closed.clone(),
            });
            shards::rt::spawn(accept_loop::run(rt.clone(), acceptor, info, closed)).detach();
        }
        Err(error) => log::error!(
            "shard {}: listener '{}' unusable: {error}",
            rt.id,
            info.name
        ),
    }
}
