//! The `retained` scenario: preload a set of retained messages with a simple client, then time
//! how long N subscribers take to receive the whole set.
//!
//! Only drives clients and reads their figures; it shares nothing with the traffic scenarios.

use std::time::Duration;

use amqtt::protocol::TopicName;

use crate::clock::{now_ns, ns_to_secs, secs_to_ns};
use crate::engine::{ClientPlan, Engine, LatencyOrigin, Mode};
use crate::payload::Header;
use crate::report::{Report, RetainedFigures};

use super::run::*;
use super::*;

/// retained: preload a retained set, subscribe, time its arrival.
pub(super) fn run_retained(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    let m = o.messages.unwrap_or(10_000);
    if m == 0 {
        return Err(BenchError::Usage("--messages must be at least 1".into()));
    }
    ctx.check_fds(n + 1)?;
    let mut mon = Monitor::new(&o.broker_pid)?;
    let mut report = base_report("retained", ctx, n, 0, n);
    report.mode = "retained".into();
    report.inflight = None;
    report.rate_per_publisher = None;
    report.warmup_s = 0.0;

    // Preload.
    let preload_start = now_ns();
    let topics: Vec<TopicName> = (0..m)
        .map(|i| ctx.topic(&format!("r/{i}")))
        .collect::<Result<_, _>>()?;
    let (mut pubc, _) = ctx
        .connect_simple(0, &ctx.client_id("r", 0), true, Duration::from_secs(10))
        .map_err(|e| BenchError::Run(format!("preload: cannot connect: {e}")))?;
    let messages = topics.iter().enumerate().map(|(i, t)| {
        let payload = Header {
            run_id: ctx.run_id,
            publisher: 0,
            seq: i as u64,
            sent_ns: now_ns(),
        }
        .to_payload(o.size);
        (t.clone(), payload, true)
    });
    pubc.publish_all(messages, 500)
        .map_err(|e| BenchError::Run(format!("preload: {e}")))?;
    let preload_s = ns_to_secs(now_ns() - preload_start);

    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| -> Result<ClientPlan, BenchError> {
            Ok(ClientPlan {
                client_id: ctx.client_id("s", i),
                clean_session: true,
                group: i,
                publish: None,
                subscribe: vec![ctx.filter("r/#")?],
                subscribe_at_run: true,
                streams: vec![(0, i as u32)],
                server: ctx.round_robin(i),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut plan = ctx.plan(clients, vec![n as u32], Mode::Closed { inflight: 1 });
    plan.latency_origin = LatencyOrigin::Subscribe;
    let engine = Engine::start(plan)?;
    engine.set_external_sent(0, m as u64);
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    let expected = (m * n) as u64;
    mon.mark_start();
    let t_run = now_ns();
    let t_end = t_run + secs_to_ns(o.duration.max(1.0));
    engine.run(t_run, t_run, u64::MAX);
    let mut done_at = None;
    loop {
        let now = now_ns();
        let t = engine.totals();
        if t.unique >= expected {
            done_at = Some(now);
            break;
        }
        if now >= t_end {
            break;
        }
        progress.tick(
            ctx,
            &engine,
            &mut mon,
            "receive",
            &format!("  {}/{expected}", t.unique),
        );
        sleep_ms(1);
    }
    mon.mark_end();
    let t_done = done_at.unwrap_or_else(now_ns);
    // A little longer, to catch duplicates.
    sleep_ms(200);
    report.warnings.extend(engine.first_failures());
    let r = engine.finish()?;

    // Clear the retained set (empty retained payloads delete it).
    let clear = topics
        .iter()
        .map(|t| (t.clone(), bytes::Bytes::new(), true));
    if let Err(e) = pubc.publish_all(clear, 500).and_then(|_| pubc.disconnect()) {
        report
            .warnings
            .push(format!("could not clear the retained messages: {e}"));
    }

    let window_s = ns_to_secs(t_done - t_run);
    report.duration_s = window_s;
    report.sent = m as u64;
    report.delivered = r.unique;
    report.sent_per_s = m as f64 / preload_s.max(1e-9);
    report.delivered_per_s = r.unique as f64 / window_s.max(1e-9);
    delivery_figures(&mut report, &r);
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, r.unique);
    report.retained = Some(RetainedFigures {
        messages: m as u64,
        subscribers: n as u64,
        time_s: window_s,
        preload_s,
    });
    if done_at.is_none() {
        report.warnings.push(format!(
            "only {} of {expected} retained deliveries arrived within {} s",
            r.unique,
            o.duration.max(1.0)
        ));
    }
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}
