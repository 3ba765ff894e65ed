//! The connection scenarios: `conns` (connect N clients, hold them, measure connect rate,
//! CONNACK latency and broker memory per connection) and `storm` (persistent sessions dropped
//! and reconnected at once, round after round).
//!
//! Only builds the plan and reads the engine's figures: the connecting itself is the engine's.

use crate::clock::{now_ns, ns_to_secs, secs_to_ns};
use crate::engine::{ClientPlan, Engine, Mode};
use crate::report::{Report, StormFigures};

use super::run::*;
use super::*;

/// conns: connect N clients, hold them, measure memory.
pub(super) fn run_conns(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    ctx.check_fds(n)?;
    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| ClientPlan {
            client_id: ctx.client_id("c", i),
            clean_session: true,
            group: i,
            publish: None,
            subscribe: Vec::new(),
            subscribe_at_run: false,
            streams: Vec::new(),
            server: ctx.round_robin(i),
        })
        .collect();
    let mut plan = ctx.plan(clients, Vec::new(), Mode::Closed { inflight: 1 });
    plan.connect_rate = o.rate;
    let mut report = base_report("conns", ctx, n, 0, 0);
    report.mode = "connections".into();
    report.inflight = Some(plan.connect_concurrency as u32);
    report.rate_per_publisher = None;
    report.qos = 0;
    report.warmup_s = 0.0;

    let mut mon = Monitor::new(&o.broker_pid)?;
    let rss_before = mon.sample();
    mon.mark_start();
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    mon.mark_end();
    let rss_connected = mon.sample();
    let hold_end = now_ns() + secs_to_ns(o.duration);
    while now_ns() < hold_end {
        let t = engine.totals();
        progress.tick(
            ctx,
            &engine,
            &mut mon,
            "hold",
            &format!("  connected {}", t.connected),
        );
        sleep_ms(20);
    }
    let held = engine.totals();
    report.warnings.extend(engine.first_failures());
    let r = engine.finish()?;
    report.duration_s = connect_s;
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.latency_us = r.connect_latency.percentiles();
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, connect_s);
    report.broker = mon.broker_figures(connect_s, 0);
    if let (Some(b), Some(before), Some(after)) =
        (report.broker.as_mut(), rss_before, rss_connected)
    {
        if b.cpu_s > 0.0 {
            b.connects_per_broker_cpu_s = Some(connected.connected as f64 / b.cpu_s);
        }
        if connected.connected > 0 {
            b.rss_per_conn_bytes = Some(
                (after.rss_kb as f64 - before.rss_kb as f64) * 1024.0 / connected.connected as f64,
            );
        }
        b.rss_start_kb = before.rss_kb;
    }
    if held.connected < connected.connected {
        report.warnings.push(format!(
            "{} connections were closed by the broker while held",
            connected.connected - held.connected
        ));
    }
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}

/// storm: persistent sessions reconnecting at once, round after round.
pub(super) fn run_storm(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    ctx.check_fds(n)?;
    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| -> Result<ClientPlan, BenchError> {
            Ok(ClientPlan {
                client_id: ctx.client_id("st", i),
                clean_session: false,
                group: i,
                publish: None,
                subscribe: vec![ctx.filter(&format!("st/{i}"))?],
                subscribe_at_run: false,
                streams: Vec::new(),
                server: ctx.round_robin(i),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut plan = ctx.plan(clients, Vec::new(), Mode::Closed { inflight: 1 });
    plan.connect_rate = o.rate;
    let sessions = plan.clients.clone();
    let mut report = base_report("storm", ctx, n, 0, n);
    report.mode = "storm".into();
    report.inflight = Some(plan.connect_concurrency as u32);
    report.rate_per_publisher = None;
    report.warmup_s = 0.0;

    let mut mon = Monitor::new(&o.broker_pid)?;
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    mon.mark_start();
    let t_start = now_ns();
    let t_end = t_start + secs_to_ns(o.duration);
    let mut rounds = 0u64;
    let mut round_ms = Vec::new();
    let mut failure = None;
    loop {
        rounds += 1;
        let r0 = now_ns();
        engine.storm(rounds);
        match wait_connected(
            ctx,
            &engine,
            &mut mon,
            &mut progress,
            n as u64 * (rounds + 1),
            "storm",
        ) {
            Ok(_) => round_ms.push(ns_to_secs(now_ns() - r0) * 1e3),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if now_ns() >= t_end {
            break;
        }
    }
    let t_stop = now_ns();
    mon.mark_end();
    report.warnings.extend(engine.first_failures());
    let r = engine.finish()?;
    if let Some(e) = failure {
        return Err(e);
    }
    let cleanup = ctx.remove_sessions(&sessions);
    let window_s = ns_to_secs(t_stop - t_start);
    report.duration_s = window_s;
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.latency_us = r.reconnect_latency.percentiles();
    round_ms.sort_by(f64::total_cmp);
    let reconnects = r.reconnect_latency.count();
    report.storm = Some(StormFigures {
        rounds,
        reconnects,
        reconnect_per_s: reconnects as f64 / window_s.max(1e-9),
        round_ms_median: round_ms.get(round_ms.len() / 2).copied().unwrap_or(0.0),
        round_ms_max: round_ms.last().copied().unwrap_or(0.0),
        latency_us: r.reconnect_latency.percentiles(),
    });
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, 0);
    report.warnings.extend(cleanup);
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}
