//! What every scenario run shares: the run's context ([`RunCtx`]: the options resolved, the
//! broker URL and TLS target, a fresh run id for topics), sampling the broker and the generator
//! ([`Monitor`]), progress lines, waiting for connections, and the report's common fields.
//!
//! Knows no particular scenario: each lives in its own file and uses these.

use std::io;
use std::time::Duration;

use amqtt::protocol::{QoS, TopicFilter, TopicName};

use crate::clock::{now_ns, ns_to_secs};
use crate::engine::{ClientPlan, Engine, EngineResult, LatencyOrigin, Mode, Plan, Server, Totals};
use crate::placement::{self};
use crate::procstat::{self, ProcSample};
use crate::report::{
    progress_line, BrokerFigures, ConnectFigures, GeneratorFigures, ProcessCpu, Report,
};
use crate::simple::SimpleClient;
use crate::stats::Latency;

use super::*;

pub(super) struct RunCtx {
    /// `--url` as reports print it (a comma-separated list for a cluster; no passwords).
    pub(super) url: String,
    /// The brokers of `--url`, at least one.
    pub(super) servers: Vec<Server>,
    pub(super) credentials: Option<crate::credentials::Credentials>,
    /// Shard count to place client ids on (`--placement same|cross`).
    pub(super) place_on: Option<usize>,
    pub(super) n: usize,
    pub(super) qos: QoS,
    pub(super) threads: usize,
    pub(super) cpus: Vec<usize>,
    pub(super) run_id: u32,
    /// `PREFIX/RUNID`.
    pub(super) base: String,
    pub(super) opts: Opts,
}

impl RunCtx {
    pub(super) fn topic(&self, suffix: &str) -> Result<TopicName, BenchError> {
        TopicName::new(&format!("{}/{suffix}", self.base))
            .map_err(|e| BenchError::Usage(format!("topic: {e}")))
    }

    pub(super) fn filter(&self, suffix: &str) -> Result<TopicFilter, BenchError> {
        TopicFilter::new(&format!("{}/{suffix}", self.base))
            .map_err(|e| BenchError::Usage(format!("topic filter: {e}")))
    }

    pub(super) fn client_id(&self, role: &str, i: usize) -> String {
        format!("ab{:08x}{role}{i}", self.run_id)
    }

    /// [`RunCtx::client_id`], suffixed to land on home shard `shard` under `--placement`.
    pub(super) fn placed_id(&self, role: &str, i: usize, shard: Option<&usize>) -> String {
        let id = self.client_id(role, i);
        match (self.place_on, shard) {
            (Some(shards), Some(&shard)) => placement::id_on_shard(&id, shard, shards),
            _ => id,
        }
    }

    /// The server (index into [`RunCtx::servers`]) of the `i`-th client of a scenario that spreads
    /// its clients round robin.
    pub(super) fn round_robin(&self, i: usize) -> usize {
        i % self.servers.len().max(1)
    }

    /// A blocking client on server `server`.
    pub(super) fn connect_simple(
        &self,
        server: usize,
        client_id: &str,
        clean_session: bool,
        timeout: Duration,
    ) -> io::Result<(SimpleClient, bool)> {
        let server = &self.servers[server % self.servers.len().max(1)];
        SimpleClient::connect_to(
            server.addr,
            server.tls.as_ref(),
            self.credentials.as_ref(),
            client_id,
            clean_session,
            timeout,
        )
    }

    /// Removes the persistent sessions of `clients` (a clean-session connect and DISCONNECT each,
    /// on the client's own server), so that they hold no queue in the broker after the run;
    /// returns a warning if some could not be.
    pub(super) fn remove_sessions<'a>(
        &self,
        clients: impl IntoIterator<Item = &'a ClientPlan>,
    ) -> Option<String> {
        let mut failed = 0;
        for c in clients.into_iter().filter(|c| !c.clean_session) {
            match self.connect_simple(c.server, &c.client_id, true, Duration::from_secs(5)) {
                Ok((c, _)) => {
                    let _ = c.disconnect();
                }
                Err(_) => failed += 1,
            }
        }
        (failed > 0)
            .then(|| format!("{failed} persistent sessions could not be removed afterwards"))
    }

    pub(super) fn plan(&self, clients: Vec<ClientPlan>, publishers: Vec<u32>, mode: Mode) -> Plan {
        let o = &self.opts;
        Plan {
            servers: self.servers.clone(),
            credentials: self.credentials.clone(),
            run_id: self.run_id,
            qos: self.qos,
            size: o.size,
            mode,
            threads: self.threads,
            pin_threads: o.pin_threads,
            keep_alive: o.keep_alive,
            connect_concurrency: o.inflight.map_or(100, |v| v as usize),
            connect_rate: None,
            latency_origin: LatencyOrigin::Payload,
            clients,
            publishers,
            stall_timeout_ns: 2_000_000_000,
            protocol: o.protocol,
            topic_alias: o.topic_alias,
        }
    }

    pub(super) fn say(&self, line: &str) {
        if !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    pub(super) fn check_fds(&self, connections: usize) -> Result<(), BenchError> {
        let limit = shards::raise_nofile()
            .map_err(|e| BenchError::Run(format!("cannot read the descriptor limit: {e}")))?;
        if connections as u64 + 64 > limit {
            return Err(BenchError::Usage(format!(
                "{connections} connections need more file descriptors than the limit of {limit} \
                 (raise `ulimit -n`, or use a smaller -n)"
            )));
        }
        Ok(())
    }
}

pub(super) fn new_run_id() -> u32 {
    // Mix the clock and the PID: unique enough to tell runs apart on one broker.
    let mut x = now_ns() ^ (u64::from(std::process::id()) << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

/// Samples the broker processes (`--broker-pid`, none or several: a cluster's nodes and its
/// nats-server) and the generator's CPU. Broker figures are the processes' sums.
pub(super) struct Monitor {
    pub(super) pids: Vec<u32>,
    /// The largest sum of the processes' peaks seen.
    pub(super) peak_rss_kb: u64,
    pub(super) start: Option<Vec<ProcSample>>,
    pub(super) end: Option<Vec<ProcSample>>,
    pub(super) first: Option<ProcSample>,
    pub(super) gen_start: f64,
    pub(super) gen_end: f64,
    pub(super) warnings: Vec<String>,
}

/// Several processes' samples as one: CPU, memory and threads added up.
fn total(samples: &[ProcSample]) -> ProcSample {
    samples
        .iter()
        .fold(ProcSample::default(), |a, s| ProcSample {
            cpu_s: a.cpu_s + s.cpu_s,
            rss_kb: a.rss_kb + s.rss_kb,
            hwm_kb: a.hwm_kb + s.hwm_kb.max(s.rss_kb),
            threads: a.threads + s.threads,
        })
}

impl Monitor {
    pub(super) fn new(pids: &[u32]) -> Result<Monitor, BenchError> {
        let mut m = Monitor {
            pids: pids.to_vec(),
            peak_rss_kb: 0,
            start: None,
            end: None,
            first: None,
            gen_start: 0.0,
            gen_end: 0.0,
            warnings: Vec::new(),
        };
        let mut samples = Vec::new();
        for &pid in pids {
            samples.push(procstat::sample(pid).map_err(|e| {
                BenchError::Usage(format!("--broker-pid {pid}: cannot read /proc/{pid}: {e}"))
            })?);
        }
        if !samples.is_empty() {
            let t = total(&samples);
            m.first = Some(t);
            m.peak_rss_kb = t.hwm_kb;
        }
        Ok(m)
    }

    /// One sample of each process, in `pids` order (`None` without processes or if one failed).
    fn sample_each(&mut self) -> Option<Vec<ProcSample>> {
        if self.pids.is_empty() {
            return None;
        }
        let mut samples = Vec::with_capacity(self.pids.len());
        for &pid in &self.pids {
            match procstat::sample(pid) {
                Ok(s) => samples.push(s),
                Err(e) => {
                    let w = format!("broker pid {pid} could not be sampled: {e}");
                    if !self.warnings.contains(&w) {
                        self.warnings.push(w);
                    }
                    return None;
                }
            }
        }
        self.peak_rss_kb = self.peak_rss_kb.max(total(&samples).hwm_kb);
        Some(samples)
    }

    /// The processes' sum now.
    pub(super) fn sample(&mut self) -> Option<ProcSample> {
        self.sample_each().map(|s| total(&s))
    }

    pub(super) fn mark_start(&mut self) {
        self.start = self.sample_each();
        self.gen_start = procstat::self_cpu_s();
    }

    pub(super) fn mark_end(&mut self) {
        self.end = self.sample_each();
        self.gen_end = procstat::self_cpu_s();
    }

    /// CPU seconds of each process in the window, if both ends were sampled.
    fn cpu_each(&self) -> Option<Vec<f64>> {
        let (start, end) = (self.start.as_ref()?, self.end.as_ref()?);
        Some(
            end.iter()
                .zip(start)
                .map(|(e, s)| e.cpu_s - s.cpu_s)
                .collect(),
        )
    }

    pub(super) fn broker_figures(
        &mut self,
        window_s: f64,
        delivered: u64,
    ) -> Option<BrokerFigures> {
        let pid = *self.pids.first()?;
        let last = self.sample();
        let each = self.cpu_each().unwrap_or_default();
        let cpu_s: f64 = each.iter().sum();
        let processes = if self.pids.len() > 1 {
            self.pids
                .iter()
                .zip(&each)
                .map(|(&pid, &cpu_s)| ProcessCpu { pid, cpu_s })
                .collect()
        } else {
            Vec::new()
        };
        Some(BrokerFigures {
            pid,
            processes,
            cpu_s,
            cpu_cores: if window_s > 0.0 {
                cpu_s / window_s
            } else {
                0.0
            },
            delivered_per_broker_cpu_s: if cpu_s > 0.0 {
                delivered as f64 / cpu_s
            } else {
                0.0
            },
            peak_rss_kb: self.peak_rss_kb,
            rss_start_kb: self.first.map_or(0, |s| s.rss_kb),
            rss_end_kb: last.map_or(0, |s| s.rss_kb),
            rss_per_conn_bytes: None,
            connects_per_broker_cpu_s: None,
            threads: last.map_or(0, |s| s.threads),
        })
    }

    pub(super) fn generator(&self, ctx: &RunCtx, window_s: f64) -> GeneratorFigures {
        let cpu_s = (self.gen_end - self.gen_start).max(0.0);
        GeneratorFigures {
            threads: ctx.threads,
            cpus: ctx.cpus.clone(),
            cpu_s,
            utilisation: if window_s > 0.0 {
                cpu_s / (window_s * ctx.threads as f64)
            } else {
                0.0
            },
        }
    }
}

/// Prints a progress line once a second.
pub(super) struct Progress {
    pub(super) start: u64,
    pub(super) next: u64,
    pub(super) last: Totals,
    pub(super) last_t: u64,
}

impl Progress {
    pub(super) fn new() -> Progress {
        let now = now_ns();
        Progress {
            start: now,
            next: now + 1_000_000_000,
            last: Totals::default(),
            last_t: now,
        }
    }

    pub(super) fn tick(
        &mut self,
        ctx: &RunCtx,
        engine: &Engine,
        mon: &mut Monitor,
        phase: &str,
        extra: &str,
    ) {
        let now = now_ns();
        if now < self.next {
            return;
        }
        self.next += 1_000_000_000;
        let t = engine.totals();
        let dt = ns_to_secs(now - self.last_t).max(1e-9);
        let interval = engine.take_interval();
        let p99 = (interval.count() > 0).then(|| interval.percentiles().p99);
        let mut extra = extra.to_string();
        if let Some(s) = mon.sample() {
            extra.push_str(&format!("  broker rss {:.0} MiB", s.rss_kb as f64 / 1024.0));
        }
        ctx.say(&progress_line(
            ns_to_secs(now - self.start),
            phase,
            (t.sent - self.last.sent) as f64 / dt,
            (t.delivered - self.last.delivered) as f64 / dt,
            p99,
            t.errors,
            &extra,
        ));
        self.last = t;
        self.last_t = now;
    }
}

pub(super) fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Waits until `target` clients have settled (ready or failed). Returns the time taken.
pub(super) fn wait_connected(
    ctx: &RunCtx,
    engine: &Engine,
    mon: &mut Monitor,
    progress: &mut Progress,
    target: u64,
    what: &str,
) -> Result<f64, BenchError> {
    let start = now_ns();
    // Generous: 30 s plus 10 ms per client.
    let limit = start + 30_000_000_000 + target * 10_000_000;
    loop {
        let t = engine.totals();
        if t.settled >= target {
            return Ok(ns_to_secs(now_ns() - start));
        }
        if engine.worker_failed() {
            return Err(BenchError::Run("a generator thread failed".into()));
        }
        if now_ns() > limit {
            return Err(BenchError::Run(format!(
                "{what}: only {} of {target} clients settled in time",
                t.settled
            )));
        }
        progress.tick(
            ctx,
            engine,
            mon,
            what,
            &format!("  connected {}/{}", t.connected, engine.clients()),
        );
        sleep_ms(2);
    }
}

pub(super) fn base_report(
    name: &str,
    ctx: &RunCtx,
    clients: usize,
    publishers: usize,
    subscribers: usize,
) -> Report {
    let o = &ctx.opts;
    Report {
        scenario: name.to_string(),
        url: ctx.url.clone(),
        qos: o.qos,
        size: o.size,
        clients,
        publishers,
        subscribers,
        mode: if o.rate.is_some() { "open" } else { "closed" }.into(),
        rate_per_publisher: o.rate,
        inflight: if o.rate.is_some() {
            None
        } else {
            Some(o.inflight.unwrap_or(32))
        },
        warmup_s: o.warmup,
        placement: o.placement,
        shards: o.shards,
        persistent: o.persistent,
        protocol: o.protocol as u8,
        topic_alias: o.topic_alias,
        ..Report::default()
    }
}

pub(super) fn connect_figures(
    engine_clients: usize,
    t: &Totals,
    time_s: f64,
    lat: &Latency,
) -> ConnectFigures {
    ConnectFigures {
        connections: t.connected,
        failed: (engine_clients as u64).saturating_sub(t.connected),
        time_s,
        connect_per_s: if time_s > 0.0 {
            t.connected as f64 / time_s
        } else {
            0.0
        },
        latency_us: lat.percentiles(),
    }
}

/// The delivery accounting of a finished run into `report`: messages expected, lost, duplicated
/// and out of order, the latency percentiles and the errors.
pub(super) fn delivery_figures(report: &mut Report, r: &EngineResult) {
    report.expected = r.expected;
    report.lost = r.lost;
    report.duplicated = r.duplicated;
    report.out_of_order = r.out_of_order;
    report.latency_us = r.latency.percentiles();
    report.ack_latency_us = (r.ack_latency.count() > 0).then(|| r.ack_latency.percentiles());
    report.errors = r.errors;
    report.errors_total = r.errors.total();
}

/// `: <the first TLS failure>; <the first failed connect and its OS reason>`, or nothing.
pub(super) fn failure_detail(engine: &Engine) -> String {
    let failures = engine.first_failures();
    if failures.is_empty() {
        String::new()
    } else {
        format!(": {}", failures.join("; "))
    }
}

pub(super) fn finish_warnings(report: &mut Report, mon: &mut Monitor) {
    report.warnings.append(&mut mon.warnings);
    let g = &report.generator;
    if g.utilisation > 0.85 {
        report.warnings.push(format!(
            "the generator used {:.0}% of its {} thread(s): it may be the bottleneck; \
             give it more CPUs (--threads) or measure a lighter load",
            g.utilisation * 100.0,
            g.threads
        ));
    }
}
