//! Shard-aware client ids (`--shards N --placement same|cross`).
//!
//! amqtt keeps each session on its home shard, `amqtt::broker::home_shard(client_id, shards)`
//! (FNV-1a of the id, modulo the shard count). To put a publisher and its subscribers on the same
//! shard, or on different ones, we append `k<number>` to a client's normal id, trying 0, 1, 2, ...
//! until the id hashes to the wanted shard: deterministic for a given run id. `any` keeps the
//! normal ids (wherever they hash).
//!
//! Which shard each client should land on ([`targets`]):
//!
//! | scenario | `same`                                  | `cross`                                             |
//! |----------|-----------------------------------------|-----------------------------------------------------|
//! | `pairs`  | pair i on shard i mod N                 | publisher i on i mod N, subscriber i on (i+1) mod N |
//! | `fanin`  | everyone on shard 0                     | subscriber on 0, publisher i on 1 + i mod (N−1)     |
//! | `fanout` | everyone on shard 0                     | publisher on 0, subscriber i on 1 + i mod (N−1)     |
//!
//! Which broker each client connects to when `--url` lists K cluster nodes ([`nodes`]): in
//! `pairs` publisher i on node i mod K and its subscriber on node (i+1) mod K, so that with K ≥ 2
//! every message crosses between nodes; in `fanin` and `fanout` the single subscriber (publisher)
//! on node 0 and the others round robin after it, client i on node (i+1) mod K.

use amqtt::broker::home_shard;
use clap::ValueEnum;
use serde::Serialize;

/// Where publishers live relative to their subscribers.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Normal client ids, wherever they hash.
    #[default]
    Any,
    /// Each publisher on the same shard as its subscriber(s).
    Same,
    /// Each publisher on a different shard than each of its subscribers.
    Cross,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Any => "any",
            Placement::Same => "same",
            Placement::Cross => "cross",
        }
    }
}

/// The traffic scenarios' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Publisher i → subscriber i.
    Pairs,
    /// Every publisher → one subscriber.
    Fanin,
    /// One publisher → every subscriber.
    Fanout,
}

/// Wanted home shards, by publisher and by subscriber index (in the scenario's own numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub publishers: Vec<usize>,
    pub subscribers: Vec<usize>,
}

/// Checks `--placement` against `--shards`; returns the shard count to place on (`None` for `any`).
pub fn check(placement: Placement, shards: Option<usize>) -> Result<Option<usize>, String> {
    if shards == Some(0) {
        return Err("--shards must be at least 1 (the broker's shard count)".into());
    }
    match (placement, shards) {
        (Placement::Any, _) => Ok(None),
        (Placement::Same, Some(n)) => Ok(Some(n)),
        (Placement::Cross, Some(n)) if n >= 2 => Ok(Some(n)),
        (Placement::Same, None) | (Placement::Cross, None) => Err(format!(
            "--placement {} needs --shards N, the broker's shard count (`shards:` in its YAML)",
            placement.as_str()
        )),
        (Placement::Cross, Some(n)) => Err(format!(
            "--placement cross needs --shards 2 or more (got {n}): with one shard every client \
             lives on it"
        )),
    }
}

/// Home shards for `n` (the scenario's -n) clients of `shape` over `shards` shards.
pub fn targets(shape: Shape, placement: Placement, shards: usize, n: usize) -> Targets {
    let shards = shards.max(1);
    // Cross: the "other" shards, 1..shards, round robin (shard 0 holds the single client).
    let other = |i: usize| 1 + i % (shards - 1).max(1);
    let (pubs, subs) = match shape {
        Shape::Pairs => (n, n),
        Shape::Fanin => (n, 1),
        Shape::Fanout => (1, n),
    };
    let publishers = (0..pubs)
        .map(|i| match (shape, placement) {
            (Shape::Pairs, _) => i % shards,
            (Shape::Fanin, Placement::Cross) => other(i),
            _ => 0,
        })
        .collect();
    let subscribers = (0..subs)
        .map(|i| match (shape, placement) {
            (Shape::Pairs, Placement::Cross) => (i + 1) % shards,
            (Shape::Pairs, _) => i % shards,
            (Shape::Fanout, Placement::Cross) => other(i),
            _ => 0,
        })
        .collect();
    Targets {
        publishers,
        subscribers,
    }
}

/// Nodes (indexes into `--url`'s list of `nodes` brokers) for `n` (the scenario's -n) clients of
/// `shape`; one node puts everyone on it.
pub fn nodes(shape: Shape, nodes: usize, n: usize) -> Targets {
    let nodes = nodes.max(1);
    let next = |i: usize| (i + 1) % nodes;
    let (publishers, subscribers) = match shape {
        Shape::Pairs => (
            (0..n).map(|i| i % nodes).collect(),
            (0..n).map(next).collect(),
        ),
        Shape::Fanin => ((0..n).map(next).collect(), vec![0]),
        Shape::Fanout => (vec![0], (0..n).map(next).collect()),
    };
    Targets {
        publishers,
        subscribers,
    }
}

/// `base` + `k<number>` for the smallest number whose id has home shard `shard` of `shards`.
pub fn id_on_shard(base: &str, shard: usize, shards: usize) -> String {
    let shards = shards.max(1);
    let shard = shard % shards;
    // FNV-1a spreads consecutive suffixes evenly: a hit comes within a few × `shards` tries.
    // The bound only guards against a broken hash.
    for k in 0..(shards as u64).saturating_mul(10_000).max(10_000) {
        let id = format!("{base}k{k}");
        if home_shard(&id, shards) == shard {
            return id;
        }
    }
    format!("{base}k")
}

/// Clients per home shard.
pub fn per_shard<'a>(ids: impl IntoIterator<Item = &'a str>, shards: usize) -> Vec<u64> {
    let mut counts = vec![0u64; shards.max(1)];
    for id in ids {
        counts[home_shard(id, shards)] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker's hash, written out: the bench must agree with it.
    fn fnv1a(id: &str, shards: usize) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % shards as u64) as usize
    }

    #[test]
    fn ids_land_on_the_wanted_shard() {
        for shards in [1, 2, 3, 4, 7] {
            for shard in 0..shards {
                for i in 0..20 {
                    let base = format!("ab0123abcdp{i}");
                    let id = id_on_shard(&base, shard, shards);
                    assert!(id.starts_with(&format!("{base}k")), "{id}");
                    assert_eq!(home_shard(&id, shards), shard, "{id}");
                    assert_eq!(fnv1a(&id, shards), shard, "{id}");
                    // Deterministic.
                    assert_eq!(id, id_on_shard(&base, shard, shards));
                    assert!(
                        id.len() <= 23,
                        "{id} longer than MQTT's guaranteed 23 bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn suffixes_keep_ids_distinct() {
        // "p1" + "k11" and "p11" + "k1" must not collide: the letter separates them.
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            for shard in 0..2 {
                assert!(seen.insert(id_on_shard(&format!("abp{i}s{shard}"), shard, 2)));
            }
        }
    }

    #[test]
    fn pairs_same_and_cross() {
        let t = targets(Shape::Pairs, Placement::Same, 2, 5);
        assert_eq!(t.publishers, vec![0, 1, 0, 1, 0]);
        assert_eq!(t.subscribers, t.publishers);
        let t = targets(Shape::Pairs, Placement::Cross, 3, 4);
        assert_eq!(t.publishers, vec![0, 1, 2, 0]);
        assert_eq!(t.subscribers, vec![1, 2, 0, 1]);
        for (p, s) in t.publishers.iter().zip(&t.subscribers) {
            assert_ne!(p, s);
        }
    }

    #[test]
    fn fanin_and_fanout() {
        let t = targets(Shape::Fanin, Placement::Same, 2, 3);
        assert_eq!((t.publishers, t.subscribers), (vec![0, 0, 0], vec![0]));
        let t = targets(Shape::Fanin, Placement::Cross, 3, 4);
        assert_eq!((t.publishers, t.subscribers), (vec![1, 2, 1, 2], vec![0]));
        let t = targets(Shape::Fanout, Placement::Cross, 2, 3);
        assert_eq!((t.publishers, t.subscribers), (vec![0], vec![1, 1, 1]));
        let t = targets(Shape::Fanout, Placement::Same, 4, 2);
        assert_eq!((t.publishers, t.subscribers), (vec![0], vec![0, 0]));
    }

    #[test]
    fn placed_ids_end_to_end() {
        // What run_traffic does for `pairs --placement cross --shards 2`.
        let t = targets(Shape::Pairs, Placement::Cross, 2, 8);
        for i in 0..8 {
            let p = id_on_shard(&format!("ab00c0ffeep{i}"), t.publishers[i], 2);
            let s = id_on_shard(&format!("ab00c0ffees{i}"), t.subscribers[i], 2);
            assert_ne!(home_shard(&p, 2), home_shard(&s, 2), "{p} {s}");
        }
        let ids: Vec<String> = (0..6)
            .map(|i| id_on_shard(&format!("x{i}"), i % 3, 3))
            .collect();
        assert_eq!(per_shard(ids.iter().map(String::as_str), 3), vec![2, 2, 2]);
    }

    #[test]
    fn pairs_across_nodes_never_share_one() {
        let t = nodes(Shape::Pairs, 2, 5);
        assert_eq!(t.publishers, vec![0, 1, 0, 1, 0]);
        assert_eq!(t.subscribers, vec![1, 0, 1, 0, 1]);
        let t = nodes(Shape::Pairs, 3, 4);
        assert_eq!(t.publishers, vec![0, 1, 2, 0]);
        assert_eq!(t.subscribers, vec![1, 2, 0, 1]);
        for k in 2..6 {
            let t = nodes(Shape::Pairs, k, 17);
            for (p, s) in t.publishers.iter().zip(&t.subscribers) {
                assert_ne!(p, s, "{k} nodes");
                assert!(*p < k && *s < k);
            }
        }
    }

    #[test]
    fn one_node_takes_everyone() {
        for shape in [Shape::Pairs, Shape::Fanin, Shape::Fanout] {
            let t = nodes(shape, 1, 6);
            assert!(t.publishers.iter().chain(&t.subscribers).all(|&n| n == 0));
            // 0 (nonsense) is one node too.
            assert_eq!(nodes(shape, 0, 6), t);
        }
    }

    #[test]
    fn fans_spread_round_robin() {
        let t = nodes(Shape::Fanin, 2, 4);
        assert_eq!((t.publishers, t.subscribers), (vec![1, 0, 1, 0], vec![0]));
        let t = nodes(Shape::Fanout, 3, 5);
        assert_eq!(
            (t.publishers, t.subscribers),
            (vec![0], vec![1, 2, 0, 1, 2])
        );
        // Each node gets its share: 6 subscribers over 3 nodes, 2 each.
        let t = nodes(Shape::Fanout, 3, 6);
        for node in 0..3 {
            assert_eq!(t.subscribers.iter().filter(|&&s| s == node).count(), 2);
        }
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(check(Placement::Any, None), Ok(None));
        assert_eq!(check(Placement::Any, Some(2)), Ok(None));
        assert_eq!(check(Placement::Same, Some(1)), Ok(Some(1)));
        assert_eq!(check(Placement::Cross, Some(2)), Ok(Some(2)));
        let e = check(Placement::Cross, Some(1)).unwrap_err();
        assert!(e.contains("--shards 2 or more"), "{e}");
        let e = check(Placement::Cross, None).unwrap_err();
        assert!(e.contains("needs --shards N"), "{e}");
        let e = check(Placement::Same, None).unwrap_err();
        assert!(e.contains("needs --shards N"), "{e}");
        assert!(check(Placement::Any, Some(0)).is_err());
    }
}
