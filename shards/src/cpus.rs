//! CPU discovery: which CPUs this process (or the calling thread) may run on, read from the
//! kernel's affinity mask (`sched_getaffinity`, which already reflects `taskset` and cgroup
//! cpusets).
//!
//! This file only reads. It must never change any thread's affinity: placing threads is the job
//! of `runtime.rs` (through glommio's placements).

use std::io;
use std::mem::size_of;

/// Bits in one word of the kernel's CPU mask (also used to build one: `runtime/placement.rs`).
pub(crate) const WORD_BITS: usize = libc::c_ulong::BITS as usize;
/// Start with glibc's `cpu_set_t` size (1024 CPUs) and grow on `EINVAL`, up to this many CPUs.
const MAX_CPUS: usize = 1 << 20;

/// The CPUs in this process's affinity mask, sorted ascending.
///
/// "This process" is its main thread (the thread whose id is the process id): the mask the
/// process was started with, unless the main thread changed it later. Threads started by
/// [`Shards`](crate::Shards) never leave it.
///
/// CPU *quotas* (cgroup `cpu.max`) are not visible here: only which CPUs may be used.
pub fn available_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: getpid has no preconditions and cannot fail.
    affinity_of(unsafe { libc::getpid() })
}

/// The CPUs the calling thread may run on, sorted ascending. A pinned shard sees one CPU.
pub fn thread_cpus() -> io::Result<Vec<usize>> {
    affinity_of(0)
}

/// Reads the affinity mask of task `pid` (0: the calling thread).
fn affinity_of(pid: libc::pid_t) -> io::Result<Vec<usize>> {
    let mut words = 1024 / WORD_BITS;
    loop {
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        let bytes = words * size_of::<libc::c_ulong>();
        // SAFETY: `mask` is a writable buffer of exactly `bytes` bytes; glibc's wrapper writes at
        // most `bytes` bytes into it and treats it as an opaque bit array of that size.
        let rc = unsafe { libc::sched_getaffinity(pid, bytes, mask.as_mut_ptr().cast()) };
        if rc == 0 {
            let cpus: Vec<usize> = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &bits)| {
                    (0..WORD_BITS)
                        .filter(move |b| bits & (1 << b) != 0)
                        .map(move |b| w * WORD_BITS + b)
                })
                .collect();
            return Ok(cpus);
        }
        let err = io::Error::last_os_error();
        // EINVAL: the kernel's mask is wider than our buffer (more than `words` words of CPUs).
        if err.raw_os_error() == Some(libc::EINVAL) && words * WORD_BITS < MAX_CPUS {
            words *= 2;
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::parse_cpu_list;

    fn status_cpus(path: &str) -> Vec<usize> {
        let status = std::fs::read_to_string(path).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        parse_cpu_list(line)
    }

    #[test]
    fn available_cpus_matches_proc_status() {
        let cpus = available_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "sorted: {cpus:?}");
        // /proc/self/status describes the main thread, like available_cpus().
        assert_eq!(cpus, status_cpus("/proc/self/status"));
        let tid = unsafe { libc::gettid() };
        assert_eq!(
            thread_cpus().unwrap(),
            status_cpus(&format!("/proc/self/task/{tid}/status"))
        );
    }

    /// Run by `available_cpus_follows_taskset` in a child process under `taskset`.
    #[test]
    #[ignore = "child process of available_cpus_follows_taskset"]
    fn child_print_available_cpus() {
        println!("CPUS={:?}", available_cpus().unwrap());
    }

    #[test]
    fn available_cpus_follows_taskset() {
        let cpus = available_cpus().unwrap();
        let last = *cpus.last().unwrap();
        let Some(out) = crate::test_util::run_child_under_taskset(
            &last.to_string(),
            "cpus::tests::child_print_available_cpus",
        ) else {
            return; // no taskset here: covered by available_cpus_matches_proc_status
        };
        assert!(out.contains(&format!("CPUS=[{last}]")), "child said: {out}");
        // And the parent's own mask is untouched.
        assert_eq!(available_cpus().unwrap(), cpus);
    }

    #[test]
    fn parse_cpu_list_works() {
        assert_eq!(parse_cpu_list("0-2,5,7-8\n"), vec![0, 1, 2, 5, 7, 8]);
    }
}
