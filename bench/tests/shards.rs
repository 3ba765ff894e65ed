//! `--shards/--placement` against a real 2-shard amqtt embedded in the test process: the ids land
//! where asked and the run is as clean as with normal ids.

mod common;

use std::net::SocketAddr;

use amqtt_bench::placement::Placement;
use amqtt_bench::scenario::{BenchError, Opts, Scenario};

fn start_broker(shards: usize) -> (amqtt::BrokerHandle, SocketAddr) {
    common::start_broker(common::PLAIN_YAML, shards)
}

fn opts(addr: SocketAddr, placement: Placement) -> Opts {
    Opts {
        url: format!("mqtt://{addr}"),
        n: Some(4),
        qos: 1,
        duration: 0.5,
        warmup: 0.2,
        drain: 5.0,
        threads: Some(1),
        quiet: true,
        shards: Some(2),
        placement,
        ..Opts::default()
    }
}

#[test]
fn same_and_cross_placement_on_two_shards() {
    let (_broker, addr) = start_broker(2);
    for placement in [Placement::Same, Placement::Cross] {
        for scenario in [
            Scenario::Pairs(opts(addr, placement)),
            Scenario::Fanin(opts(addr, placement)),
            Scenario::Fanout(opts(addr, placement)),
        ] {
            let name = scenario.name();
            let r = scenario.run().expect("run");
            assert_eq!(r.placement, placement);
            assert_eq!(r.shards, Some(2));
            assert_eq!(r.lost, 0, "{name} {placement:?}: {r:?}");
            assert_eq!(r.errors_total, 0, "{name} {placement:?}: {:?}", r.errors);
            assert!(r.delivered > 0, "{name} {placement:?}: {r:?}");
            let per_shard = r.clients_per_shard.clone().expect("clients per shard");
            assert_eq!(per_shard.iter().sum::<u64>(), r.clients as u64);
            match (name, placement) {
                // Pairs spread over both shards either way.
                ("pairs", _) => assert_eq!(per_shard, vec![4, 4]),
                // One publisher or subscriber, on shard 0 with everyone else...
                (_, Placement::Same) => assert_eq!(per_shard, vec![5, 0]),
                // ...or alone on shard 0, the others on shard 1.
                _ => assert_eq!(per_shard, vec![1, 4]),
            }
        }
    }
}

#[test]
fn placement_needs_shards() {
    let o = Opts {
        shards: None,
        ..opts("127.0.0.1:1".parse().expect("addr"), Placement::Same)
    };
    match Scenario::Pairs(o).run() {
        Err(BenchError::Usage(m)) => assert!(m.contains("needs --shards N"), "{m}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
    let o = Opts {
        shards: Some(1),
        ..opts("127.0.0.1:1".parse().expect("addr"), Placement::Cross)
    };
    match Scenario::Pairs(o).run() {
        Err(BenchError::Usage(m)) => assert!(m.contains("--shards 2 or more"), "{m}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
    let o = opts("127.0.0.1:1".parse().expect("addr"), Placement::Same);
    match Scenario::Conns(o).run() {
        Err(BenchError::Usage(m)) => assert!(m.contains("pairs, fanin and fanout"), "{m}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
}
