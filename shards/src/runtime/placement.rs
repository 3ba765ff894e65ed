//! How a shard's executor is placed on CPUs: pinned to one CPU, or fenced to the process's whole
//! affinity mask, and the error a failed executor start reports (with the memlock hint).
//!
//! Only placement: what runs on the executor, and the threads around it, are `runtime.rs`'s job.

use std::io;

use glommio::{CpuSet, LocalExecutor, LocalExecutorBuilder, Placement};

use super::{Spec, Where};
use crate::cpus::WORD_BITS;
use crate::rt::Runtime;

/// A shard's executor, made on its thread.
pub(super) enum Executor {
    Glommio(LocalExecutor),
    Epoll(crate::fallback::Executor),
}

/// Creates the executor of `spec.runtime` on the current thread, placed as `spec` says (the
/// fallback executor: the thread's affinity set here, which its helper thread inherits).
pub(super) fn build_executor(spec: &Spec) -> Result<Executor, String> {
    match spec.runtime {
        Runtime::Glommio => build_glommio(spec).map(Executor::Glommio),
        Runtime::Epoll => {
            match &spec.place {
                Where::Cpu(cpu) => set_thread_affinity(&[*cpu]),
                Where::Mask(mask) => set_thread_affinity(mask),
            }
            .map_err(|e| format!("setting CPU affinity: {e}"))?;
            crate::fallback::Executor::new(spec.thread_name.clone())
                .map(Executor::Epoll)
                .map_err(|e| format!("creating the epoll set: {e}"))
        }
    }
}

fn build_glommio(spec: &Spec) -> Result<LocalExecutor, String> {
    let placement = match &spec.place {
        Where::Cpu(cpu) => Placement::Fixed(*cpu),
        Where::Mask(mask) => fenced(mask)?,
    };
    let mut builder = LocalExecutorBuilder::new(placement).io_memory(spec.io_memory);
    if let Some(spin) = spec.spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    builder.make().map_err(|e| {
        let mut message = e.to_string();
        if message.contains("MemLockLimit") {
            // glommio 0.9 refuses to start below 512 KiB of soft RLIMIT_MEMLOCK, whatever
            // io_memory is (CAP_IPC_LOCK does not help). Above that, failing to lock its buffers
            // is only a warning.
            message.push_str(
                " (glommio needs a soft RLIMIT_MEMLOCK of at least 512 KiB: raise it with \
                 `ulimit -l 1024` in the shell, LimitMEMLOCK=infinity in a systemd unit or \
                 `--ulimit memlock=-1` for docker; a program embedding the broker can call \
                 shards::raise_limits() first)",
            );
        }
        message
    })
}

/// An unpinned placement that still keeps the executor (and glommio's helper threads) inside
/// `mask`. glommio's `Placement::Unbound` would leave the thread's inherited affinity alone and
/// also silently disable `spin_before_park`; `Fenced` sets the affinity explicitly.
fn fenced(mask: &[usize]) -> Result<Placement, String> {
    match CpuSet::online() {
        Ok(online) => {
            let set = online.filter(|l| mask.contains(&l.cpu));
            if set.is_empty() {
                Err(format!(
                    "none of the CPUs in this process's affinity mask {mask:?} is online"
                ))
            } else {
                Ok(Placement::Fenced(set))
            }
        }
        Err(e) => {
            // No readable topology (unusual /sys): confine the thread ourselves and let glommio
            // inherit it. Helper threads it spawns inherit it too.
            log::warn!(
                "glommio cannot read the CPU topology ({e}); running unpinned without \
                 spin_before_park"
            );
            set_thread_affinity(mask).map_err(|e| format!("setting CPU affinity: {e}"))?;
            Ok(Placement::Unbound)
        }
    }
}

fn set_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    let max = cpus.iter().copied().max().unwrap_or(0);
    let words = (max / WORD_BITS + 1).max(1024 / WORD_BITS);
    let mut mask: Vec<libc::c_ulong> = vec![0; words];
    for &c in cpus {
        mask[c / WORD_BITS] |= 1 << (c % WORD_BITS);
    }
    let bytes = words * std::mem::size_of::<libc::c_ulong>();
    // SAFETY: `mask` is a readable buffer of `bytes` bytes.
    let rc = unsafe { libc::sched_setaffinity(0, bytes, mask.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
