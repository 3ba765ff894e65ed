//! The figures compared: for each kind of scenario, the metrics read from a run's report (name,
//! whether higher is better, how to print a value; the first is the scenario's headline), the
//! median over rounds, and `ReportCtx`: the collected results of the matrix and what the report
//! says about them, as the Markdown and SVG writers read them.
//!
//! Reads finished reports only: it starts no broker, runs no scenario and writes no file.

use std::time::Duration;

use super::{BrokerSpec, CompareArgs, Results};
use crate::report::{dur_us, si, Report};
use crate::scenario::Scenario;

/// A headline figure of a report.
#[derive(Debug, Clone, Copy)]
pub(super) struct Metric {
    pub(super) name: &'static str,
    pub(super) higher_is_better: bool,
    get: fn(&Report) -> Option<f64>,
    pub(super) fmt: fn(f64) -> String,
}

fn fmt_rate(v: f64) -> String {
    format!("{}/s", si(v))
}
fn fmt_us(v: f64) -> String {
    dur_us(v)
}
fn fmt_cores(v: f64) -> String {
    format!("{v:.2}")
}
fn fmt_mib(v: f64) -> String {
    format!("{:.1} MiB", v / 1024.0)
}
fn fmt_bytes(v: f64) -> String {
    format!("{v:.0} B")
}
fn fmt_count(v: f64) -> String {
    format!("{v:.0}")
}

// The metrics more than one kind of scenario reports.
const DELIVERED: Metric = Metric {
    name: "delivered msg/s",
    higher_is_better: true,
    get: |r| Some(r.delivered_per_s),
    fmt: fmt_rate,
};
const LATENCY_P50: Metric = Metric {
    name: "latency p50",
    higher_is_better: false,
    get: |r| Some(r.latency_us.p50),
    fmt: fmt_us,
};
const LATENCY_P99: Metric = Metric {
    name: "latency p99",
    higher_is_better: false,
    get: |r| Some(r.latency_us.p99),
    fmt: fmt_us,
};
const BROKER_CORES: Metric = Metric {
    name: "broker CPU (cores)",
    higher_is_better: false,
    get: |r| r.broker.as_ref().map(|b| b.cpu_cores),
    fmt: fmt_cores,
};
const BROKER_PEAK_RSS: Metric = Metric {
    name: "broker peak RSS",
    higher_is_better: false,
    get: |r| r.broker.as_ref().map(|b| b.peak_rss_kb as f64),
    fmt: fmt_mib,
};
const LOST: Metric = Metric {
    name: "lost (per run)",
    higher_is_better: false,
    get: |r| Some(r.lost as f64),
    fmt: fmt_count,
};

const ACK_P50: Metric = Metric {
    name: "publish → ack p50",
    higher_is_better: false,
    get: |r| r.ack_latency_us.as_ref().map(|a| a.p50),
    fmt: fmt_us,
};
const ACK_P99: Metric = Metric {
    name: "publish → ack p99",
    higher_is_better: false,
    get: |r| r.ack_latency_us.as_ref().map(|a| a.p99),
    fmt: fmt_us,
};

/// The metrics of a scenario, its headline first; at QoS 1/2 the traffic scenarios add the
/// publish → PUBACK / PUBCOMP latency.
pub(super) fn metrics_for(sc: &Scenario) -> Vec<Metric> {
    let mut metrics = scenario_metrics(sc);
    if matches!(
        sc,
        Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_)
    ) && sc.opts().qos > 0
    {
        metrics.extend([ACK_P50, ACK_P99]);
    }
    metrics
}

fn scenario_metrics(sc: &Scenario) -> Vec<Metric> {
    match sc {
        Scenario::Pairs(o) | Scenario::Fanin(o) | Scenario::Fanout(o) if o.rate.is_some() => vec![
            LATENCY_P50,
            LATENCY_P99,
            Metric {
                name: "latency p99.9",
                higher_is_better: false,
                get: |r| Some(r.latency_us.p999),
                fmt: fmt_us,
            },
            Metric {
                name: "latency max",
                higher_is_better: false,
                get: |r| Some(r.latency_us.max),
                fmt: fmt_us,
            },
            DELIVERED,
            BROKER_CORES,
            LOST,
        ],
        Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_) => vec![
            DELIVERED,
            LATENCY_P50,
            LATENCY_P99,
            BROKER_CORES,
            Metric {
                name: "delivered per broker CPU-s",
                higher_is_better: true,
                get: |r| r.broker.as_ref().map(|b| b.delivered_per_broker_cpu_s),
                fmt: |v| si(v),
            },
            BROKER_PEAK_RSS,
            LOST,
        ],
        Scenario::Conns(_) => vec![
            Metric {
                name: "connections/s",
                higher_is_better: true,
                get: |r| Some(r.connect.connect_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "CONNACK p50",
                higher_is_better: false,
                get: |r| Some(r.connect.latency_us.p50),
                fmt: fmt_us,
            },
            Metric {
                name: "CONNACK p99",
                higher_is_better: false,
                get: |r| Some(r.connect.latency_us.p99),
                fmt: fmt_us,
            },
            Metric {
                name: "connects per broker CPU-s",
                higher_is_better: true,
                get: |r| r.broker.as_ref().and_then(|b| b.connects_per_broker_cpu_s),
                fmt: |v| si(v),
            },
            Metric {
                name: "broker RSS per connection",
                higher_is_better: false,
                get: |r| r.broker.as_ref().and_then(|b| b.rss_per_conn_bytes),
                fmt: fmt_bytes,
            },
            BROKER_PEAK_RSS,
        ],
        Scenario::Storm(_) => vec![
            Metric {
                name: "reconnects/s",
                higher_is_better: true,
                get: |r| r.storm.as_ref().map(|s| s.reconnect_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "reconnect p99",
                higher_is_better: false,
                get: |r| r.storm.as_ref().map(|s| s.latency_us.p99),
                fmt: fmt_us,
            },
            Metric {
                name: "sessions lost",
                higher_is_better: false,
                get: |r| Some(r.errors.session_lost as f64),
                fmt: fmt_count,
            },
        ],
        Scenario::Retained(_) => vec![
            Metric {
                name: "retained delivered msg/s",
                higher_is_better: true,
                get: |r| Some(r.delivered_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "time for the whole set",
                higher_is_better: false,
                get: |r| r.retained.as_ref().map(|x| x.time_s * 1e6),
                fmt: fmt_us,
            },
            BROKER_PEAK_RSS,
        ],
    }
}

/// Median of the values (mean of the middle two for even counts); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

pub(super) struct ReportCtx<'a> {
    /// `/proc/loadavg` at the start and the end of the matrix.
    pub(super) load: (String, String),
    pub(super) args: &'a CompareArgs,
    pub(super) argv: &'a [String],
    pub(super) brokers: &'a [BrokerSpec],
    pub(super) versions: &'a [String],
    pub(super) scenarios: &'a [Scenario],
    pub(super) scenario_texts: &'a [String],
    pub(super) modes: &'a [(&'a str, bool)],
    pub(super) broker_cpus: &'a [usize],
    pub(super) gen_cpus: &'a [usize],
    pub(super) all_cpus: &'a [usize],
    pub(super) results: &'a Results,
    pub(super) failures: &'a [String],
    pub(super) elapsed: Duration,
}

impl ReportCtx<'_> {
    pub(super) fn median_of(&self, mi: usize, si_: usize, bi: usize, m: &Metric) -> Option<f64> {
        let reports = self.results.get(&(mi, si_, bi))?;
        let vals: Vec<f64> = reports.iter().filter_map(|r| (m.get)(r)).collect();
        median(&vals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::parse_scenario;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    fn names(scenario: &str) -> Vec<&'static str> {
        let sc = parse_scenario(scenario, 1.0, 1.0).unwrap();
        metrics_for(&sc).iter().map(|m| m.name).collect()
    }

    #[test]
    fn each_scenario_reports_its_metrics_headline_first() {
        assert_eq!(
            names("pairs -n 8 --qos 1"),
            [
                "delivered msg/s",
                "latency p50",
                "latency p99",
                "broker CPU (cores)",
                "delivered per broker CPU-s",
                "broker peak RSS",
                "lost (per run)",
                "publish → ack p50",
                "publish → ack p99"
            ]
        );
        assert_eq!(names("fanout -n 50"), names("fanin -n 50"));
        // QoS 0 has no acknowledgement to time.
        assert!(!names("pairs -n 8 --qos 0")
            .iter()
            .any(|n| n.contains("ack")));
        let mut r = Report::default();
        assert_eq!((ACK_P99.get)(&r), None);
        r.ack_latency_us = Some(crate::stats::Percentiles {
            p99: 1500.0,
            ..Default::default()
        });
        assert_eq!((ACK_P99.get)(&r), Some(1500.0));
        assert_eq!(
            names("pairs -n 8 --rate 1000"),
            [
                "latency p50",
                "latency p99",
                "latency p99.9",
                "latency max",
                "delivered msg/s",
                "broker CPU (cores)",
                "lost (per run)"
            ]
        );
        assert_eq!(
            names("conns -n 10"),
            [
                "connections/s",
                "CONNACK p50",
                "CONNACK p99",
                "connects per broker CPU-s",
                "broker RSS per connection",
                "broker peak RSS"
            ]
        );
        assert_eq!(
            names("storm -n 10"),
            ["reconnects/s", "reconnect p99", "sessions lost"]
        );
        assert_eq!(
            names("retained"),
            [
                "retained delivered msg/s",
                "time for the whole set",
                "broker peak RSS"
            ]
        );
    }
}
