//! Listening sockets: several `SO_REUSEPORT` TCP listeners on one address (one per shard, so the
//! kernel spreads incoming connections across shards), created with `socket2` on any thread.
//! Each shard accepts from its own with [`crate::TcpAcceptor`], on either runtime.
//!
//! Nothing here accepts connections or knows what protocol runs on them.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Binds `count` `SO_REUSEPORT` (and `SO_REUSEADDR`) TCP listener sockets to the same address,
/// each listening with backlog `backlog`, non-blocking and close-on-exec.
///
/// If `addr`'s port is 0 the first socket picks a free port and the others reuse it, so all
/// returned listeners share one `local_addr()`. For IPv6 addresses `IPV6_V6ONLY` is set (bind the
/// IPv4 and IPv6 addresses separately if both are wanted).
///
/// The listeners are plain std listeners: move one to each shard and accept from it there with
/// [`crate::TcpAcceptor`]. `count` must be at least 1.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<Vec<TcpListener>> {
    if count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "reuseport_listeners: count must be at least 1",
        ));
    }
    if addr.port() != 0 {
        refuse_if_taken(addr)?;
    }
    let mut out = Vec::with_capacity(count);
    let mut bind_to = addr;
    for _ in 0..count {
        let listener = bind_one(bind_to, backlog).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding listener socket to {bind_to}: {e}"),
            )
        })?;
        if bind_to.port() == 0 {
            bind_to = listener.local_addr()?;
        }
        out.push(listener);
    }
    Ok(out)
}

/// Fails with `AddrInUse` if anything already listens on `addr`. `SO_REUSEPORT` would otherwise let
/// a second broker (or anything else of the same user with `SO_REUSEPORT`) bind the same port
/// without an error, and the kernel would split new connections between the two processes: a
/// publisher and its subscriber could land in different brokers. A plain bind (no
/// `SO_REUSEPORT`) is refused by any listener on the address, so it is tried first and released.
fn refuse_if_taken(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: sockets in TIME_WAIT from an earlier run do not count as taken.
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&SockAddr::from(addr)).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("{addr} is already in use (another process listens on it)"),
            )
        } else {
            io::Error::new(e.kind(), format!("binding listener socket to {addr}: {e}"))
        }
    })
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    // socket2 creates sockets with SOCK_CLOEXEC on Linux.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ShardConfig, Shards};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};
    use std::net::{Ipv6Addr, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn port_zero_shares_one_port() {
        let ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 3, 64).unwrap();
        let addr = ls[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for l in &ls {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
        assert!(matches!(
            reuseport_listeners(addr, 0, 64),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput
        ));
    }

    #[test]
    fn a_taken_port_is_refused_even_to_reuseport() {
        let first = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 2, 64).unwrap();
        let addr = first[0].local_addr().unwrap();
        let second = reuseport_listeners(addr, 2, 64);
        match second {
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
                assert!(e.to_string().contains("already in use"), "{e}");
            }
            Ok(_) => panic!("a second set of listeners bound {addr}"),
        }
        // A plain listener counts too.
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        assert!(reuseport_listeners(taken, 1, 64).is_err());
        // Free again once the first set is gone.
        drop(first);
        assert_eq!(reuseport_listeners(addr, 2, 64).unwrap().len(), 2);
    }

    #[test]
    fn ipv6_is_v6only() {
        let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
        let ls = match reuseport_listeners(addr, 2, 64) {
            Ok(ls) => ls,
            // No IPv6 loopback in this sandbox.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => return,
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => return,
            Err(e) => panic!("{e}"),
        };
        let sock = socket2::SockRef::from(&ls[0]);
        assert!(sock.only_v6().unwrap());
        assert_eq!(ls[0].local_addr().unwrap(), ls[1].local_addr().unwrap());
    }

    /// Two shards each accept from their own reuseport socket; every connection is answered by
    /// exactly one of them. One shard starts accepting before any client connects, so its accept
    /// really waits (io_uring path) rather than finding a connection already queued.
    #[test]
    fn reuseport_listeners_accept_on_two_shards() {
        const CONNS: usize = 24;
        let listeners = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 2, 128).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let slots: Arc<Mutex<Vec<Option<TcpListener>>>> =
            Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
        let accepted: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        let ready = Arc::new(AtomicUsize::new(0));
        let config = ShardConfig {
            shards: 2,
            pin: false,
            name: "accept".into(),
            runtime: crate::test_util::runtime(),
            ..ShardConfig::default()
        };
        let (acc, rdy) = (Arc::clone(&accepted), Arc::clone(&ready));
        let shards = Shards::start(config, move |ctx| {
            let std_listener = slots.lock().unwrap()[ctx.id].take().unwrap();
            let (accepted, ready) = (Arc::clone(&acc), Arc::clone(&rdy));
            async move {
                let listener = crate::TcpAcceptor::new(std_listener).unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
                let accept_loop = async {
                    loop {
                        let mut s = listener.accept().await.unwrap();
                        accepted[ctx.id].fetch_add(1, Ordering::SeqCst);
                        crate::rt::spawn(async move {
                            let mut b = [0u8; 1];
                            s.read_exact(&mut b).await.unwrap();
                            s.write_all(&[b[0] + 1]).await.unwrap();
                        })
                        .detach();
                    }
                };
                futures_lite::future::or(accept_loop, ctx.stopped()).await;
            }
        })
        .unwrap();
        while ready.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        for i in 0..CONNS {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8 + 1);
        }
        shards.stop();
        shards.join().unwrap();
        let counts: Vec<usize> = accepted.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        assert_eq!(counts.iter().sum::<usize>(), CONNS, "per shard: {counts:?}");
    }
}
