//! Which runtime to run: [`RuntimeChoice`] (`auto`, `glommio`, `epoll`, as a user writes it) and
//! its resolution against what the kernel allows. `auto` means glommio unless `io_uring_setup` is
//! refused (Docker 25+'s and containerd's default seccomp profiles, gVisor,
//! `kernel.io_uring_disabled=2`, old kernels): then the epoll fallback, with one warning per
//! process saying why. glommio itself would panic on every executor ("kernel too old").
//!
//! The probe is one raw `io_uring_setup` system call, made once per process.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::rt::Runtime;

/// The runtime as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RuntimeChoice {
    /// glommio if io_uring is available, else the epoll fallback (with a warning).
    #[default]
    Auto,
    /// glommio, or an error at start if io_uring is not available.
    Glommio,
    /// Always the epoll fallback.
    Epoll,
}

impl RuntimeChoice {
    /// The accepted spellings, for error messages and help texts.
    pub const NAMES: &'static str = "auto, glommio or epoll";

    /// The runtime to run. `Auto` probes io_uring (once per process) and logs one warning if it
    /// falls back; `Glommio` fails with [`UnavailableIoUring`] when io_uring is refused.
    pub fn resolve(self) -> Result<Runtime, UnavailableIoUring> {
        match self {
            RuntimeChoice::Epoll => Ok(Runtime::Epoll),
            RuntimeChoice::Glommio => match io_uring_available() {
                Ok(()) => Ok(Runtime::Glommio),
                Err(e) => Err(UnavailableIoUring(e)),
            },
            RuntimeChoice::Auto => match io_uring_available() {
                Ok(()) => Ok(Runtime::Glommio),
                Err(e) => {
                    static WARNED: OnceLock<()> = OnceLock::new();
                    WARNED.get_or_init(|| {
                        log::warn!(
                            "io_uring is not available ({e}): running on the epoll runtime \
                             instead of glommio. Likely a seccomp profile that blocks \
                             io_uring_setup (Docker's and containerd's default ones do; see \
                             deploy/docker/seccomp-io_uring.json) or kernel.io_uring_disabled. \
                             Set `runtime: epoll` (or AMQTT_RUNTIME=epoll) to silence this."
                        );
                    });
                    Ok(Runtime::Epoll)
                }
            },
        }
    }
}

impl FromStr for RuntimeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RuntimeChoice::Auto),
            "glommio" => Ok(RuntimeChoice::Glommio),
            "epoll" => Ok(RuntimeChoice::Epoll),
            other => Err(format!(
                "unknown runtime '{other}': expected {}",
                RuntimeChoice::NAMES
            )),
        }
    }
}

impl fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Glommio => "glommio",
            RuntimeChoice::Epoll => "epoll",
        })
    }
}

/// `runtime: glommio` was asked for, but the kernel refuses io_uring.
#[derive(Debug, thiserror::Error)]
#[error(
    "the glommio runtime needs io_uring, which this host refuses ({0}); use `runtime: auto` or \
     `runtime: epoll`, or allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp \
     profile (deploy/docker/seccomp-io_uring.json)"
)]
pub struct UnavailableIoUring(#[source] pub io::Error);

/// Whether this process may create an io_uring: `Err` with the kernel's answer (`EPERM` from a
/// seccomp filter, `ENOSYS` on old kernels or gVisor, ...). Probed once per process.
pub fn io_uring_available() -> Result<(), io::Error> {
    static PROBED: OnceLock<Result<(), i32>> = OnceLock::new();
    PROBED
        .get_or_init(probe_io_uring)
        .map_err(io::Error::from_raw_os_error)
}

/// One `io_uring_setup` for a 1-entry ring, closed at once, on a thread of its own: the kernel
/// tears a ring down asynchronously through work queued to the thread that made it, which
/// interrupts that thread's next blocking call (a `recv` with a timeout then fails with `EINTR`:
/// seen in tests, where the caller's thread goes on to use sockets).
fn probe_io_uring() -> Result<(), i32> {
    std::thread::Builder::new()
        .name("io_uring-probe".into())
        .spawn(probe_on_this_thread)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))?
        .join()
        .unwrap_or(Err(libc::ENOSYS))
}

fn probe_on_this_thread() -> Result<(), i32> {
    // `struct io_uring_params` is 120 bytes; all zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: the kernel reads and writes at most the 120 bytes of `params`; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS));
    }
    // SAFETY: `fd` is the ring just created, owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for (s, c) in [
            ("auto", RuntimeChoice::Auto),
            ("glommio", RuntimeChoice::Glommio),
            ("epoll", RuntimeChoice::Epoll),
        ] {
            assert_eq!(s.parse::<RuntimeChoice>().unwrap(), c);
            assert_eq!(c.to_string(), s);
        }
        let e = "uring".parse::<RuntimeChoice>().unwrap_err();
        assert!(e.contains("auto, glommio or epoll"), "{e}");
        assert_eq!(RuntimeChoice::Epoll.resolve().unwrap(), Runtime::Epoll);
    }

    /// `auto` and `glommio` agree with the probe (whatever this host allows).
    #[test]
    fn resolution_follows_the_probe() {
        match io_uring_available() {
            Ok(()) => {
                assert_eq!(RuntimeChoice::Auto.resolve().unwrap(), Runtime::Glommio);
                assert_eq!(RuntimeChoice::Glommio.resolve().unwrap(), Runtime::Glommio);
            }
            Err(_) => {
                assert_eq!(RuntimeChoice::Auto.resolve().unwrap(), Runtime::Epoll);
                assert!(RuntimeChoice::Glommio.resolve().is_err());
            }
        }
    }
}
