//! Process resource limits: raising the soft `RLIMIT_NOFILE` (connections) and `RLIMIT_MEMLOCK`
//! (glommio's io_uring buffers) to their hard limits at start-up.
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
    let nofile = raise(libc::RLIMIT_NOFILE, nr_open())?;
    let memlock = raise(libc::RLIMIT_MEMLOCK, None)?;
    Ok(Limits {
        nofile: to_u64(nofile),
        memlock: to_u64(memlock),
    })
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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
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

    #[test]
    fn raise_limits_reaches_hard_limits() {
        let limits = raise_limits().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(to_u64(lim.rlim_cur), limits.nofile);
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
