//! Reading a process's CPU time and memory from `/proc`, and this process's own CPU time.
//!
//! `/proc/PID/stat` fields 14 and 15 (`utime`, `stime`, in clock ticks) give CPU time;
//! `/proc/PID/status` gives `VmRSS` (resident now) and `VmHWM` (peak resident). The parsers are
//! separate from the file reads so that they can be tested on fixed text.

use std::fs;
use std::io;

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size now, KiB.
    pub rss_kb: u64,
    /// Peak resident set size, KiB.
    pub hwm_kb: u64,
    /// Threads in the process.
    pub threads: u64,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(utime + stime ticks, threads)` from the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may contain spaces or ')': split after the
    // last ')'. What follows starts with field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let threads: u64 = fields.get(17)?.parse().ok()?;
    Some((utime + stime, threads))
}

/// `(VmRSS, VmHWM)` in KiB from the text of `/proc/PID/status` (0 when absent, as for zombies).
pub fn parse_status(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples process `pid`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (ticks, threads) = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })?;
    let (rss_kb, hwm_kb) = parse_status(&status);
    Ok(ProcSample {
        cpu_s: ticks as f64 / clock_ticks(),
        rss_kb,
        hwm_kb,
        threads,
    })
}

/// User + system CPU seconds used by this process so far (all threads).
pub fn self_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let text = "4242 (my (evil) prog) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(text), Some((325, 3)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tamqtt\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status(text), (1024, 2048));
        assert_eq!(parse_status("Name:\tzombie\n"), (0, 0));
    }

    #[test]
    fn sample_self() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.hwm_kb >= s.rss_kb, "{s:?}");
        assert!(s.threads >= 1);
        // Burn a little CPU and watch getrusage move.
        let before = self_cpu_s();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(self_cpu_s() > before);
    }

    #[test]
    fn missing_process() {
        assert!(sample(u32::MAX - 1).is_err());
    }
}
