//! The traffic scenarios, `pairs`, `fanin` and `fanout`: their clients and topics, the engine
//! run through warm-up, measurement and drain, and their report (throughput, latency, loss).
//!
//! Only builds the plan and reads the engine's figures: the load itself is the engine's.

use amqtt::protocol::{QoS, TopicName};

use crate::clock::{now_ns, ns_to_secs, secs_to_ns};
use crate::engine::{ClientPlan, Engine, Mode, PublishPlan};
use crate::placement::{self, Shape};
use crate::report::Report;

use super::run::*;
use super::*;

/// pairs / fanin / fanout.
pub(super) fn run_traffic(name: &str, ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    let mut clients = Vec::new();
    let publishers: Vec<u32>;
    let pub_plan = |i: usize, topic: TopicName| PublishPlan {
        publisher: i as u32,
        topic,
        retain: false,
    };
    let client = |id: String, group: usize, server: usize| ClientPlan {
        client_id: id,
        clean_session: true,
        group,
        publish: None,
        subscribe: Vec::new(),
        subscribe_at_run: false,
        streams: Vec::new(),
        server,
    };
    let shape = match name {
        "pairs" => Shape::Pairs,
        "fanin" => Shape::Fanin,
        _ => Shape::Fanout,
    };
    // Wanted home shards (empty without --placement: the normal ids).
    let targets = match ctx.place_on {
        Some(shards) => placement::targets(shape, o.placement, shards, n),
        None => placement::Targets {
            publishers: Vec::new(),
            subscribers: Vec::new(),
        },
    };
    // Which --url each client connects to.
    let nodes = placement::nodes(shape, ctx.servers.len(), n);
    let pub_id = |i: usize| ctx.placed_id("p", i, targets.publishers.get(i));
    let sub_id = |i: usize| ctx.placed_id("s", i, targets.subscribers.get(i));
    // --persistent: subscribers with clean session 0, removed again after the run.
    let subscriber = |i: usize, group: usize| ClientPlan {
        clean_session: !o.persistent,
        ..client(sub_id(i), group, nodes.subscribers[i])
    };
    match shape {
        Shape::Pairs => {
            publishers = vec![1; n];
            for i in 0..n {
                let mut s = subscriber(i, i);
                s.subscribe = vec![ctx.filter(&i.to_string())?];
                s.streams = vec![(i as u32, 0)];
                clients.push(s);
                let mut p = client(pub_id(i), i, nodes.publishers[i]);
                p.publish = Some(pub_plan(i, ctx.topic(&i.to_string())?));
                clients.push(p);
            }
        }
        Shape::Fanin => {
            publishers = vec![1; n];
            let mut s = subscriber(0, 0);
            s.subscribe = vec![ctx.filter("+")?];
            s.streams = (0..n as u32).map(|i| (i, 0)).collect();
            clients.push(s);
            for i in 0..n {
                let mut p = client(pub_id(i), i, nodes.publishers[i]);
                p.publish = Some(pub_plan(i, ctx.topic(&i.to_string())?));
                clients.push(p);
            }
        }
        Shape::Fanout => {
            publishers = vec![n as u32];
            for i in 0..n {
                let mut s = subscriber(i, i);
                s.subscribe = vec![ctx.filter("all")?];
                s.streams = vec![(0, i as u32)];
                clients.push(s);
            }
            let mut p = client(pub_id(0), 0, nodes.publishers[0]);
            p.publish = Some(pub_plan(0, ctx.topic("all")?));
            clients.push(p);
        }
    }
    let clients_per_shard = o
        .shards
        .filter(|&s| s > 0)
        .map(|s| placement::per_shard(clients.iter().map(|c| c.client_id.as_str()), s));
    let n_pubs = publishers.len();
    let n_subs = clients.len() - n_pubs;
    let n_clients = clients.len();
    ctx.check_fds(n_clients)?;
    let persistent: Vec<ClientPlan> = clients
        .iter()
        .filter(|c| !c.clean_session)
        .cloned()
        .collect();
    let mode = match o.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed {
            inflight: o.inflight.unwrap_or(32),
        },
    };
    let mut plan = ctx.plan(clients, publishers, mode);
    plan.connect_concurrency = 100;
    let mut report = base_report(name, ctx, n_clients, n_pubs, n_subs);
    report.clients_per_shard = clients_per_shard;

    let mut mon = Monitor::new(&o.broker_pid)?;
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(
        ctx,
        &engine,
        &mut mon,
        &mut progress,
        n_clients as u64,
        "connect",
    )?;
    let after_connect = engine.totals();
    if after_connect.connected < n_clients as u64 {
        let why = failure_detail(&engine);
        let r = engine.finish()?;
        let _ = ctx.remove_sessions(&persistent);
        return Err(BenchError::Run(format!(
            "only {} of {n_clients} clients could connect and subscribe {}{why}",
            after_connect.connected,
            crate::report::error_detail(&r.errors)
        )));
    }

    let t_run = now_ns() + 1_000_000;
    let t_warm = t_run + secs_to_ns(o.warmup);
    let t_end = t_warm + secs_to_ns(o.duration);
    engine.run(t_run, t_warm, t_end);
    let mut started = false;
    loop {
        let now = now_ns();
        if !started && now >= t_warm {
            mon.mark_start();
            started = true;
        }
        if now >= t_end {
            mon.mark_end();
            break;
        }
        if engine.worker_failed() {
            return Err(BenchError::Run("a generator thread failed".into()));
        }
        let phase = if started { "measure" } else { "warm-up" };
        progress.tick(ctx, &engine, &mut mon, phase, "");
        sleep_ms(
            ((t_end.min(if started { u64::MAX } else { t_warm }) - now) / 1_000_000).clamp(0, 20),
        );
    }
    engine.drain();
    // Wait for the last messages: until all expected arrived, nothing arrived for a second, or
    // the drain limit.
    let drain_start = now_ns();
    let limit = drain_start + secs_to_ns(o.drain);
    let mut last_unique = 0;
    let mut last_change = drain_start;
    loop {
        let now = now_ns();
        let t = engine.totals();
        if engine.publishers_stopped() && t.unique >= engine.expected() {
            break;
        }
        if t.unique != last_unique {
            last_unique = t.unique;
            last_change = now;
        } else if now - last_change > 1_000_000_000 && engine.publishers_stopped() {
            break;
        }
        if now > limit {
            report.warnings.push(format!(
                "drain limit of {} s reached with messages still missing",
                o.drain
            ));
            break;
        }
        progress.tick(ctx, &engine, &mut mon, "drain", "");
        sleep_ms(2);
    }
    report.warnings.extend(engine.first_failures());
    let r = engine.finish()?;
    report.warnings.extend(ctx.remove_sessions(&persistent));

    let window_s = ns_to_secs(t_end - t_warm);
    report.duration_s = window_s;
    report.sent = r.sent_window;
    report.delivered = r.delivered_window;
    report.sent_per_s = r.sent_window as f64 / window_s.max(1e-9);
    report.delivered_per_s = r.delivered_window as f64 / window_s.max(1e-9);
    delivery_figures(&mut report, &r);
    report.connect = connect_figures(n_clients, &after_connect, connect_s, &r.connect_latency);
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, r.delivered_window);
    finish_warnings(&mut report, &mut mon);
    if ctx.qos != QoS::AtMostOnce && r.lost > 0 {
        report.warnings.push(format!(
            "{} QoS {} messages lost: the broker dropped messages it had acknowledged",
            r.lost, ctx.opts.qos
        ));
    }
    if ctx.qos == QoS::ExactlyOnce && r.duplicated > 0 {
        report.warnings.push(format!(
            "{} duplicates at QoS 2 (exactly once was violated)",
            r.duplicated
        ));
    }
    if let Mode::Open { .. } = mode {
        let expected_sent = o.rate.unwrap_or(0.0) * n_pubs as f64 * window_s;
        if (r.sent_window as f64) < expected_sent * 0.95 {
            report.warnings.push(format!(
                "sent only {} of the {:.0} scheduled messages in the window",
                r.sent_window, expected_sent
            ));
        }
    }
    Ok(report)
}
