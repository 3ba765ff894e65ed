//! Process resource limits: raising the soft `RLIMIT_NOFILE` (connections) and `RLIMIT_MEMLOCK`
//! (glommio's io_uring buffers) to their hard limits at start-up, and sizing the kernel's
//! descriptor table for the connections to come while the process has one thread.
//!
//! Only soft limits move, and only up to what the hard limit allows: nothing here needs or tries
//! a privilege (`CAP_SYS_RESOURCE`).

use std::io;

/// Soft limits in force after [`raise_limits`]. `u64::MAX` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub nofile: u64,
    /// Lockable memory in bytes (`RLIMIT_MEMLOCK`).
    pub memlock: u64,
}

/// Raises the soft `RLIMIT_NOFILE` and `RLIMIT_MEMLOCK` limits to their hard limits and returns
/// the soft limits now in force.
///
/// An unlimited hard `RLIMIT_NOFILE` cannot be used as a soft limit (the kernel caps it at
/// `fs.nr_open`), so it is raised to `/proc/sys/fs/nr_open` instead.
pub fn raise_limits() -> io::Result<Limits> {
    let nofile = raise_nofile()?;
    let memlock = raise(libc::RLIMIT_MEMLOCK, None)?;
    Ok(Limits {
        nofile,
        memlock: to_u64(memlock),
    })
}

/// Raises only the soft `RLIMIT_NOFILE`, as [`raise_limits`] does, and returns it (for a process
/// that holds many sockets but no io_uring buffers, such as the load generator).
pub fn raise_nofile() -> io::Result<u64> {
    Ok(to_u64(raise(libc::RLIMIT_NOFILE, nr_open())?))
}

/// Most descriptors [`reserve_descriptors`] makes room for (the table costs the kernel ~8 bytes a
/// slot: 512 KiB here).
pub const MAX_RESERVED_DESCRIPTORS: u64 = 1 << 16;

/// Grows this process's descriptor table to at least `count` slots (at most
/// [`MAX_RESERVED_DESCRIPTORS`] and the soft `RLIMIT_NOFILE`) by duplicating a descriptor onto
/// slot `count - 1` and closing the copy; returns the slots reserved. The table never shrinks.
///
/// Call it before any thread starts. The kernel doubles the table as descriptors are opened, and
/// in a process with several threads every doubling waits for an RCU grace period
/// (`expand_files` → `synchronize_rcu`): measured on a 2-CPU VM, `accept4` stalled the accepting
/// shard 11–25 ms at each of the doublings while 5 000 clients connected, and those stalls were
/// the broker's whole CONNACK p99 (15–23 ms against Mosquitto's 3.5–4.8 ms, a single thread). With
/// one thread there is no wait.
pub fn reserve_descriptors(count: u64) -> io::Result<u64> {
    let count = count.clamp(1, MAX_RESERVED_DESCRIPTORS.min(soft_nofile()?.max(1)));
    let Ok(highest) = libc::c_int::try_from(count - 1) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let devnull = std::fs::File::open("/dev/null")?;
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new descriptor (or -1).
    let copy = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&devnull),
            libc::F_DUPFD_CLOEXEC,
            highest,
        )
    };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` was just returned to us and nothing else refers to it.
    unsafe { libc::close(copy) };
    Ok(count)
}

fn soft_nofile() -> io::Result<u64> {
    Ok(to_u64(get(libc::RLIMIT_NOFILE)?.rlim_cur))
}

/// The soft and hard limits of `resource`.
fn get(resource: Resource) -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn to_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

fn nr_open() -> Option<libc::rlim_t> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets the soft limit of `resource` to its hard limit (or to `cap_if_infinite` when the hard
/// limit is unlimited and a cap is given). Returns the soft limit now in force.
fn raise(resource: Resource, cap_if_infinite: Option<libc::rlim_t>) -> io::Result<libc::rlim_t> {
    let lim = get(resource)?;
    let target = match (lim.rlim_max, cap_if_infinite) {
        (libc::RLIM_INFINITY, Some(cap)) => cap,
        (max, _) => max,
    };
    if lim.rlim_cur == libc::RLIM_INFINITY || (lim.rlim_cur >= target) {
        return Ok(lim.rlim_cur);
    }
    let new = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size is `FDSize` in /proc/self/status.
    fn table_slots() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn reserving_descriptors_grows_the_table_and_leaves_no_descriptor_open() {
        raise_limits().unwrap();
        let wanted = (table_slots() * 4).min(MAX_RESERVED_DESCRIPTORS.min(soft_nofile().unwrap()));
        assert_eq!(reserve_descriptors(wanted).unwrap(), wanted);
        assert!(table_slots() >= wanted, "{} < {wanted}", table_slots());
        // The copy on the highest slot was closed again.
        let highest = libc::c_int::try_from(wanted - 1).unwrap();
        assert_eq!(unsafe { libc::fcntl(highest, libc::F_GETFD) }, -1);
        let ceiling = MAX_RESERVED_DESCRIPTORS.min(soft_nofile().unwrap());
        assert_eq!(reserve_descriptors(u64::MAX).unwrap(), ceiling);
    }

    #[test]
    fn raise_limits_reaches_hard_limits() {
        let limits = raise_limits().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(to_u64(lim.rlim_cur), limits.nofile);
        assert_eq!(
            raise_nofile().unwrap(),
            limits.nofile,
            "raises the same limit alone"
        );
        assert!(limits.nofile >= 64);
        if lim.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(lim.rlim_cur, lim.rlim_max);
        }
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        assert_eq!(to_u64(lim.rlim_cur), limits.memlock);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        // Idempotent.
        assert_eq!(raise_limits().unwrap(), limits);
    }
}
