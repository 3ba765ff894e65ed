//! `shards`: the thread-per-core runtime under amqtt-rs. It starts one executor per core (a
//! *shard*): glommio (io_uring) or, where io_uring is refused, its own epoll-only fallback; it
//! carries messages between shards, creates the listening sockets the shards accept from, and
//! moves accepted connections from one shard to another.
//!
//! It knows nothing of MQTT: messages are opaque values of the caller's type, connections are
//! file descriptors and bytes. Keep it that way; broker logic lives in the root crate. glommio is
//! named only in this crate: users spawn, sleep, yield and run blocking work through [`rt`], which
//! works the same on both runtimes.
//!
//! # Layout
//! - `cpus.rs`: [`available_cpus`] (the process's affinity mask) and [`thread_cpus`].
//! - `rt.rs`: the runtime seam, [`rt::spawn`] ([`Task`]), [`rt::sleep`] / [`Timer`],
//!   [`rt::need_preempt`] / [`rt::yield_if_needed`], [`rt::spawn_blocking`], [`rt::spawn_thread`]
//!   (an executor thread of its own, for the client); each dispatches on the thread's [`Runtime`].
//! - `durable/`: the data directory ([`durable::DataDir`]: lock, generations, each shard's
//!   snapshots and journal segments), atomic writes, and [`durable::JournalWriter`] (appends and
//!   fdatasyncs on the shard's blocking helper thread). Bytes only: the records are the caller's.
//! - `select.rs`: [`RuntimeChoice`] (`auto`, `glommio`, `epoll`) and its resolution:
//!   [`io_uring_available`] probes `io_uring_setup` once; `auto` falls back with one warning.
//! - `fallback/`: the epoll executor (`mod.rs`: task queues and the loop that blocks in the
//!   shard's epoll set; `timers.rs`; `blocking.rs`: the helper thread for blocking work).
//! - `runtime.rs`: [`Shards`] (start, control shard, stop, join), [`ShardConfig`],
//!   [`ShardContext`], [`ShardError`]. Pinned shards use glommio `Placement::Fixed` (or, on epoll,
//!   the thread's affinity); unpinned ones `Placement::Fenced` to the original mask, so no thread
//!   ever leaves it.
//! - `stop.rs`: the stop signal: [`StopHandle`] (any thread) and [`Stopped`] (a per-shard local
//!   broadcast, any number of waiting tasks).
//! - `bus.rs`: the cross-shard [`bus`]: per shard one [`Inbox`] with a control lane (drained
//!   first) and a data lane, both bounded; [`BusSender`] never blocks; a receiver is woken only
//!   when it is parked.
//! - `listener.rs`: [`reuseport_listeners`] (N `SO_REUSEPORT` sockets on one address); accept
//!   from them with [`TcpAcceptor`].
//! - `handoff.rs`: [`detach_tcp_stream`] / [`attach_tcp_stream`]: move a connection's fd across
//!   shards.
//! - `poller.rs`: the shard's epoll set (one per shard thread, registered once per socket) and the
//!   task that turns its events into wake-ups on glommio (between bursts the shard blocks in
//!   `epoll_pwait2` for a moment, then sleeps on it through glommio); the fallback executor reads
//!   the set from its own loop.
//! - `remote_wake.rs`: how other threads (the bus) wake a shard's tasks through its poller.
//! - `tcp.rs`: [`TcpConn`] (accepted, or [`TcpConn::connect`]) and [`TcpAcceptor`]: TCP sockets in
//!   that set, read and written with plain non-blocking syscalls, on both runtimes.
//! - `split.rs`: [`split_local`]: one reading task and one writing task on one stream.
//! - `limits.rs`: [`raise_limits`] (soft `RLIMIT_NOFILE` / `RLIMIT_MEMLOCK` to hard; [`raise_nofile`]
//!   for the first alone) and
//!   [`reserve_descriptors`] (the descriptor table sized before threads start).
//!
//! # Rules for users
//! - Never block or `.await` a bus send inside a shard: `try_send_*`, then drop/count or apply
//!   backpressure on `Full`.
//! - One task per shard awaits [`Inbox::recv`].
//! - A panic in any task kills its whole shard (and this crate then stops all shards): guard
//!   per-connection tasks with `catch_unwind`.
//! - glommio 0.9 keeps a 16-bit reference count per task waker: never clone one task's waker per
//!   connection or per message.
//! - Test on both runtimes: `SHARDS_TEST_RUNTIME=epoll cargo test -p shards` runs this crate's
//!   tests on the fallback executor.

mod bus;
mod cpus;
pub mod durable;
mod fallback;
mod handoff;
mod limits;
mod listener;
mod poller;
mod remote_wake;
pub mod rt;
mod runtime;
mod select;
mod split;
mod stop;
mod tcp;
#[cfg(test)]
mod test_util;

pub use bus::{bus, BusSender, Inbox, Lane, Recv, SendError};
pub use cpus::{available_cpus, thread_cpus};
pub use handoff::{attach_tcp_stream, detach_tcp_stream};
pub use limits::{
    raise_limits, raise_nofile, reserve_descriptors, Limits, MAX_RESERVED_DESCRIPTORS,
};
pub use listener::reuseport_listeners;
pub use rt::{ExecutorThread, Runtime, Task, Timer};
pub use runtime::{ShardConfig, ShardContext, ShardError, Shards, DEFAULT_IO_MEMORY};
pub use select::{io_uring_available, RuntimeChoice, UnavailableIoUring};
pub use split::{reunite, split_local, LocalReadHalf, LocalWriteHalf};
pub use stop::{StopHandle, Stopped};
pub use tcp::{TcpAcceptor, TcpConn};
