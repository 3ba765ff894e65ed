//! Blocking work for the fallback executor: one helper thread per executor, started on first use,
//! runs the jobs in order (as glommio's default blocking pool of one thread does); the task awaits
//! the result through a one-slot channel, whose waker brings it back to the shard.
//!
//! The helper thread inherits the shard thread's CPU affinity, so it stays within the process's
//! mask. It ends when the executor does (its job queue closes).

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use super::with_current;

type Job = Box<dyn FnOnce() + Send>;

/// The helper thread's job queue, once started.
pub(super) struct Helper {
    name: String,
    jobs: RefCell<Option<mpsc::Sender<Job>>>,
}

impl Helper {
    pub(super) fn new(name: String) -> Helper {
        Helper {
            name,
            jobs: RefCell::new(None),
        }
    }

    /// Hands `job` to the helper thread (started if need be). If no thread can be started, the
    /// job runs here, blocking the shard, with an error logged.
    fn submit(&self, job: Job) {
        let mut jobs = self.jobs.borrow_mut();
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name(format!("{}-blk", self.name))
            .spawn(move || rx.into_iter().for_each(|job| job()));
        match started {
            Ok(_) => {
                let _ = tx.send(job);
                *jobs = Some(tx);
            }
            Err(e) => {
                drop(jobs);
                log::error!(
                    "cannot start a thread for blocking work ({e}); running it on the shard"
                );
                job();
            }
        }
    }

    /// Closes the job queue: the helper thread ends after the jobs already queued.
    pub(super) fn close(&self) {
        self.jobs.borrow_mut().take();
    }
}

/// Runs `f` on the current executor's helper thread; the future completes with its result. A
/// panic in `f` resumes on the awaiting task.
///
/// # Panics
/// If the thread runs no fallback executor.
pub(crate) fn spawn_blocking<F, R>(f: F) -> impl Future<Output = R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = flume::bounded::<Result<R, Box<dyn Any + Send>>>(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    with_current(|l| l.blocking.submit(job));
    async move {
        match rx.recv_async().await {
            Ok(Ok(value)) => value,
            Ok(Err(payload)) => resume_unwind(payload),
            Err(flume::RecvError::Disconnected) => {
                panic!("the blocking helper thread ended before the job ran")
            }
        }
    }
}
