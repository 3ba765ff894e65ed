//! The standard Prometheus `process_*` families (the names every client library's process
//! collector exports), read from `/proc/self` when `/metrics` is scraped: resident and virtual
//! memory, CPU seconds, open and maximum file descriptors, start time.
//!
//! They describe the whole process, so a program that embeds several brokers exports the same
//! values from each. Only reading and formatting here: nothing is kept between scrapes, and a
//! file that cannot be read leaves its families out rather than exporting a made-up value.

use std::fmt::Write as _;

/// What one scrape read from `/proc/self`; `None` where the kernel did not say.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Fields of `/proc/self/stat` that the families need, in clock ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl ProcessStats {
    /// Reads this process's numbers now.
    pub fn read() -> ProcessStats {
        // SAFETY: sysconf takes a constant and returns a number; no memory is passed.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = (ticks > 0).then_some(ticks as f64);
        let page = u64::try_from(page).ok().filter(|p| *p > 0);
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        ProcessStats {
            cpu_seconds: stat.zip(ticks).map(|(s, t)| (s.utime + s.stime) as f64 / t),
            resident_bytes: stat.zip(page).map(|(s, p)| s.rss_pages * p),
            virtual_bytes: stat.map(|s| s.vsize),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot_time)
                .map(|((s, t), boot)| boot as f64 + s.starttime as f64 / t),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| parse_max_fds(&text)),
        }
    }

    /// Appends the families that have a value, in the text format, sorted by name.
    pub fn render(&self, out: &mut String) {
        let families: [(&str, &str, &str, Option<String>); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds.map(|v| v.to_string()),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds.map(|v| v.to_string()),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v.to_string()),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v.to_string()),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds.map(|v| v.to_string()),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v.to_string()),
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            }
        }
    }
}

/// `/proc/self/stat`: the command name (field 2) is in parentheses and may hold spaces, so the
/// fields are counted from the last `)`; the first one after it is field 3 (state).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time in Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of the `Max open files` line of `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as the kernel writes it.
        let text = "4242 (amqtt (shard 1)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 \
                    5 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn boot_time_and_fd_limit_are_read_from_their_lines() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            65536                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(65536));
    }

    #[test]
    fn this_process_reports_every_family() {
        let stats = ProcessStats::read();
        let resident = stats.resident_bytes.expect("resident memory");
        assert!(resident > 1 << 20, "{resident} bytes resident");
        assert!(stats.virtual_bytes.expect("virtual memory") >= resident);
        assert!(stats.open_fds.expect("open fds") >= 3);
        assert!(stats.max_fds.expect("max fds") >= stats.open_fds.unwrap_or(0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let started = stats.start_time_seconds.expect("start time");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        assert!(stats.cpu_seconds.expect("cpu seconds") >= 0.0);

        let mut out = String::new();
        stats.render(&mut out);
        for family in [
            "process_cpu_seconds_total",
            "process_max_fds",
            "process_open_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_virtual_memory_bytes",
        ] {
            assert!(out.contains(&format!("# TYPE {family} ")), "{out}");
            assert!(out.contains(&format!("\n{family} ")), "{out}");
        }
    }
}
