//! Executors: one per data shard (a glommio `LocalExecutor`, or the epoll fallback of
//! [`crate::fallback`], as [`ShardConfig::runtime`] says; pinned to a CPU, or not), plus an
//! optional light control shard, each on its own thread, with a common stop signal and a join
//! that reports panics.
//!
//! Placement rules: a pinned shard `i` runs on `cpus[i % cpus.len()]`, where `cpus` is the
//! process's affinity mask ([`available_cpus`]); an unpinned shard (and the control shard) is
//! fenced to that whole mask, so no thread started here (nor glommio's blocking-pool helper
//! threads, which follow the executor's placement) ever leaves the CPUs the process was started
//! with (`taskset`, cgroup cpusets).
//!
//! This file must not know what the shards do: it builds executors and calls the caller's
//! `start` closure on each (how an executor is placed on CPUs is in `runtime/placement.rs`). It
//! never blocks inside an executor.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cpus::available_cpus;
use crate::rt::{self, Runtime};
use crate::select::RuntimeChoice;
use crate::stop::{LocalStop, StopHandle, StopWait, Stopped};

/// Default per-executor io_uring buffer memory. glommio locks 3 × this per executor; its own
/// default (10 MiB) is far more than a network server needs.
pub const DEFAULT_IO_MEMORY: usize = 256 << 10;

/// How to start the data shards.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of data shards (at least 1).
    pub shards: usize,
    /// Pin shard `i` to the `i`-th CPU of the process's affinity mask. Then `shards` may not
    /// exceed the number of CPUs in the mask.
    pub pin: bool,
    /// glommio `io_memory` per executor, in bytes: io_uring registered buffers (registered in
    /// each of the executor's 3 rings). glommio 0.9 itself refuses to start when the soft
    /// `RLIMIT_MEMLOCK` is below 512 KiB; if locking the buffers fails above that, it only warns
    /// and does without registered buffers.
    pub io_memory: usize,
    /// Busy-poll this long before sleeping when idle (lower cross-shard latency, more CPU).
    pub spin_before_park: Option<Duration>,
    /// Thread name prefix: shard threads are `{name}-{id}`, the control shard `{name}-ctl`.
    pub name: String,
    /// The executor every shard runs (see [`crate::RuntimeChoice::resolve`]). `io_memory` and
    /// `spin_before_park` apply to glommio only.
    pub runtime: Runtime,
}

impl Default for ShardConfig {
    /// One pinned shard per CPU of the affinity mask (1 if it cannot be read), 256 KiB of
    /// io_memory, no spinning, threads named `shard-N`, the runtime `auto` resolves to.
    fn default() -> Self {
        ShardConfig {
            shards: available_cpus().map(|c| c.len()).unwrap_or(1).max(1),
            pin: true,
            io_memory: DEFAULT_IO_MEMORY,
            spin_before_park: None,
            name: "shard".to_string(),
            runtime: RuntimeChoice::Auto.resolve().unwrap_or(Runtime::Epoll),
        }
    }
}

/// What a shard knows about itself. Handed to the `start` closure on the shard's own thread.
/// Cheap to clone between tasks of that shard; not `Send`.
#[derive(Clone)]
pub struct ShardContext {
    /// This shard's index: `0..shards` for data shards; the control shard's id is `shards`
    /// (so a bus made with `shards + 1` inboxes gives it the last one).
    pub id: usize,
    /// Number of data shards.
    pub shards: usize,
    /// The CPU this shard is pinned to, if pinned.
    pub cpu: Option<usize>,
    local: Rc<LocalStop>,
    handle: StopHandle,
}

impl fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardContext")
            .field("id", &self.id)
            .field("shards", &self.shards)
            .field("cpu", &self.cpu)
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

impl ShardContext {
    /// Completes when the stop signal is raised ([`Shards::stop`], [`StopHandle::stop`], or a
    /// shard panicked). Any number of tasks on the shard may await it at once; each waiting task
    /// costs one waker clone of its own, and a dropped future unregisters.
    pub fn stopped(&self) -> Stopped {
        Stopped::new(Rc::clone(&self.local), self.handle.clone())
    }

    /// Whether the stop signal has been raised.
    pub fn is_stopping(&self) -> bool {
        self.handle.is_stopped()
    }

    /// A handle to raise the stop signal of every shard from this one (or any thread).
    pub fn stop_handle(&self) -> StopHandle {
        self.handle.clone()
    }

    /// Whether this is the control shard.
    pub fn is_control(&self) -> bool {
        self.id == self.shards
    }
}

/// Why shards could not be started or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// `shards` was 0.
    #[error("the number of shards must be at least 1")]
    NoShards,
    /// Pinning asked for more shards than there are CPUs in the process's affinity mask.
    #[error(
        "cannot pin {shards} shards: this process may only run on {} CPU(s) {cpus:?}; \
         use at most {} shards or disable pinning",
        cpus.len(),
        cpus.len()
    )]
    TooManyPinnedShards {
        /// Shards asked for.
        shards: usize,
        /// CPUs in the process's affinity mask.
        cpus: Vec<usize>,
    },
    /// The process's CPU affinity mask could not be read.
    #[error("reading this process's CPU affinity mask: {0}")]
    Affinity(#[source] io::Error),
    /// The OS refused to start a thread.
    #[error("starting the thread of {shard}: {source}")]
    Spawn {
        /// Which shard.
        shard: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// glommio could not create the executor (often: soft `RLIMIT_MEMLOCK` below 512 KiB).
    #[error("creating the executor of {shard}: {message}")]
    Executor {
        /// Which shard.
        shard: String,
        /// glommio's error, with a hint where one applies.
        message: String,
    },
    /// A shard's root future (or a task it did not guard) panicked. The stop signal is raised
    /// for all other shards when this happens.
    #[error("{shard} panicked: {message}")]
    Panicked {
        /// Which shard.
        shard: String,
        /// The panic message.
        message: String,
    },
    /// [`Shards::start_control`] was called twice.
    #[error("the control shard has already been started")]
    ControlAlreadyStarted,
}

/// Where a shard's threads may run.
#[derive(Clone)]
enum Where {
    /// Pinned to one CPU.
    Cpu(usize),
    /// Anywhere in this set (the process's original mask).
    Mask(Arc<[usize]>),
}

struct ShardThread {
    label: String,
    handle: JoinHandle<Result<(), ShardError>>,
}

/// A running group of shards. Dropping it without [`join`](Self::join) stops and joins them.
pub struct Shards {
    threads: Vec<ShardThread>,
    stop: StopHandle,
    shards: usize,
    mask: Arc<[usize]>,
    io_memory: usize,
    name: String,
    runtime: Runtime,
    control_started: bool,
}

impl fmt::Debug for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("shards", &self.shards)
            .field("threads", &self.threads.len())
            .field("control", &self.control_started)
            .field("stopped", &self.stop.is_stopped())
            .finish()
    }
}

/// Everything a shard thread needs besides its root closure.
struct Spec {
    label: String,
    thread_name: String,
    place: Where,
    io_memory: usize,
    spin_before_park: Option<Duration>,
    runtime: Runtime,
    id: usize,
    shards: usize,
    stop: StopHandle,
}

impl Shards {
    /// Starts `config.shards` executors, each on its own thread, and calls `start` once on each
    /// shard's thread to build that shard's root future. Returns once every executor has been
    /// created (or with the first creation error, after stopping the others).
    ///
    /// A shard ends when its root future completes: await [`ShardContext::stopped`] in it.
    ///
    /// `pin = true`: shard `i` is pinned to `cpus[i % cpus.len()]` with `cpus` =
    /// [`available_cpus`], and more shards than CPUs is an error. `pin = false`: unpinned, but
    /// confined to the process's affinity mask.
    pub fn start<F, Fut>(config: ShardConfig, start: F) -> Result<Shards, ShardError>
    where
        F: Fn(ShardContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if config.shards == 0 {
            return Err(ShardError::NoShards);
        }
        let cpus = available_cpus().map_err(ShardError::Affinity)?;
        if config.pin && config.shards > cpus.len() {
            return Err(ShardError::TooManyPinnedShards {
                shards: config.shards,
                cpus,
            });
        }
        let mask: Arc<[usize]> = cpus.into();
        let mut this = Shards {
            threads: Vec::with_capacity(config.shards + 1),
            stop: StopHandle::new(),
            shards: config.shards,
            mask: Arc::clone(&mask),
            io_memory: config.io_memory,
            name: config.name.clone(),
            runtime: config.runtime,
            control_started: false,
        };
        let start = Arc::new(start);
        let (ready_tx, ready_rx) = mpsc::channel();
        for id in 0..config.shards {
            let place = if config.pin {
                Where::Cpu(mask[id % mask.len()])
            } else {
                Where::Mask(Arc::clone(&mask))
            };
            let label = match place {
                Where::Cpu(cpu) => format!("shard {id} (cpu {cpu})"),
                Where::Mask(_) => format!("shard {id}"),
            };
            let spec = Spec {
                label,
                thread_name: format!("{}-{id}", config.name),
                place,
                io_memory: config.io_memory,
                spin_before_park: config.spin_before_park,
                runtime: config.runtime,
                id,
                shards: config.shards,
                stop: this.stop.clone(),
            };
            let start = Arc::clone(&start);
            if let Err(e) = this.spawn(spec, ready_tx.clone(), move |ctx| start(ctx)) {
                drop(ready_tx);
                this.abort();
                return Err(e);
            }
        }
        drop(ready_tx);
        this.await_ready(ready_rx, config.shards)?;
        Ok(this)
    }

    /// Starts the control shard: one more executor, unpinned but confined to the process's
    /// affinity mask, without spinning. Its [`ShardContext::id`] is the number of data shards.
    pub fn start_control<F, Fut>(&mut self, start: F) -> Result<(), ShardError>
    where
        F: FnOnce(ShardContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if self.control_started {
            return Err(ShardError::ControlAlreadyStarted);
        }
        self.control_started = true;
        let spec = Spec {
            label: "control shard".to_string(),
            thread_name: format!("{}-ctl", self.name),
            place: Where::Mask(Arc::clone(&self.mask)),
            io_memory: self.io_memory,
            spin_before_park: None,
            runtime: self.runtime,
            id: self.shards,
            shards: self.shards,
            stop: self.stop.clone(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        self.spawn(spec, ready_tx, start)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // That thread has already ended; collect it.
                if let Some(t) = self.threads.pop() {
                    let _ = t.handle.join();
                }
                Err(e)
            }
            // It died before reporting: its join result says why.
            Err(_) => match self.threads.pop() {
                Some(t) => Err(join_one(t).err().unwrap_or_else(|| ShardError::Panicked {
                    shard: "control shard".to_string(),
                    message: "ended before its executor was ready".to_string(),
                })),
                None => Err(ShardError::ControlAlreadyStarted),
            },
        }
    }

    /// Number of data shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Raises the stop signal: every [`ShardContext::stopped`] completes. Returns at once;
    /// [`join`](Self::join) waits for the shards to finish.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// A cloneable, `Send + Sync` handle to [`stop`](Self::stop) from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for every shard thread to end. Returns the first error (a shard that panicked);
    /// further errors are logged.
    pub fn join(mut self) -> Result<(), ShardError> {
        self.join_all()
    }

    fn join_all(&mut self) -> Result<(), ShardError> {
        let mut first = None;
        for t in self.threads.drain(..) {
            if let Err(e) = join_one(t) {
                if first.is_none() {
                    first = Some(e);
                } else {
                    log::error!("{e}");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops and joins whatever was started, ignoring errors (used when start-up fails).
    fn abort(&mut self) {
        self.stop();
        let _ = self.join_all();
    }

    /// Waits for `count` start-up reports; on any failure, stops everything and returns the
    /// most telling error.
    fn await_ready(
        &mut self,
        ready: mpsc::Receiver<Result<(), ShardError>>,
        count: usize,
    ) -> Result<(), ShardError> {
        let mut first_err = None;
        let mut reported = 0;
        // Ends early only if a thread died without reporting (its sender is then dropped).
        while reported < count {
            match ready.recv() {
                Ok(r) => {
                    reported += 1;
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
                Err(_) => break,
            }
        }
        if first_err.is_none() && reported == count {
            return Ok(());
        }
        self.stop();
        let joined = self.join_all();
        Err(first_err
            .or(joined.err())
            .unwrap_or_else(|| ShardError::Panicked {
                shard: "a shard".to_string(),
                message: "ended before its executor was ready".to_string(),
            }))
    }

    fn spawn<G, Fut>(
        &mut self,
        spec: Spec,
        ready: mpsc::Sender<Result<(), ShardError>>,
        root: G,
    ) -> Result<(), ShardError>
    where
        G: FnOnce(ShardContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let label = spec.label.clone();
        let handle = std::thread::Builder::new()
            .name(spec.thread_name.clone())
            .spawn(move || shard_thread(spec, ready, root))
            .map_err(|source| ShardError::Spawn {
                shard: label.clone(),
                source,
            })?;
        self.threads.push(ShardThread { label, handle });
        Ok(())
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
            let _ = self.join_all();
        }
    }
}

fn join_one(t: ShardThread) -> Result<(), ShardError> {
    match t.handle.join() {
        Ok(r) => r,
        // shard_thread catches panics; this is only a panic in that wrapper itself.
        Err(payload) => Err(ShardError::Panicked {
            shard: t.label,
            message: panic_message(payload.as_ref()),
        }),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Body of a shard thread.
fn shard_thread<G, Fut>(
    spec: Spec,
    ready: mpsc::Sender<Result<(), ShardError>>,
    root: G,
) -> Result<(), ShardError>
where
    G: FnOnce(ShardContext) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let label = spec.label.clone();
    let stop = spec.stop.clone();
    match catch_unwind(AssertUnwindSafe(move || run_shard(spec, ready, root))) {
        Ok(()) => Ok(()),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            log::error!("{label} panicked: {message}; stopping all shards");
            stop.stop();
            Err(ShardError::Panicked {
                shard: label,
                message,
            })
        }
    }
}

fn run_shard<G, Fut>(spec: Spec, ready: mpsc::Sender<Result<(), ShardError>>, root: G)
where
    G: FnOnce(ShardContext) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let executor = match placement::build_executor(&spec) {
        Ok(ex) => ex,
        Err(message) => {
            let _ = ready.send(Err(ShardError::Executor {
                shard: spec.label,
                message,
            }));
            return;
        }
    };
    // After this the thread may only end through its root future (or a panic).
    let _ = ready.send(Ok(()));
    drop(ready);

    let stop = spec.stop;
    let slot = stop.register_watcher();
    let local = Rc::new(LocalStop::default());
    let ctx = ShardContext {
        id: spec.id,
        shards: spec.shards,
        cpu: match spec.place {
            Where::Cpu(c) => Some(c),
            Where::Mask(_) => None,
        },
        local: Rc::clone(&local),
        handle: stop.clone(),
    };
    let body = async move {
        // Drops the watcher's waker on this thread, inside the executor, however we leave.
        struct Unregister(StopHandle, Arc<futures_util::task::AtomicWaker>);
        impl Drop for Unregister {
            fn drop(&mut self) {
                self.0.unregister_watcher(&self.1);
            }
        }
        let _unregister = Unregister(stop.clone(), Arc::clone(&slot));
        let watcher = StopWait { handle: stop, slot };
        rt::spawn(async move {
            watcher.await;
            local.fire();
        })
        .detach();
        root(ctx).await;
    };
    match executor {
        placement::Executor::Glommio(ex) => {
            rt::set_current(Runtime::Glommio);
            ex.run(body);
        }
        placement::Executor::Epoll(ex) => {
            rt::set_current(Runtime::Epoll);
            ex.run(body);
        }
    }
}

mod placement;
#[cfg(test)]
mod tests;
