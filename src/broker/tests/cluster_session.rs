//! A session that moves between cluster nodes, core side (`cluster_session.rs`): two `Cluster`s
//! stand for two nodes, the records carried between them by hand as the link carries them.

use super::*;

/// Node A with persistent `p` subscribed to `q` (QoS 1), offline, three QoS 1 messages queued
/// for it, the first one sent before it went away and never acknowledged.
fn node_with_queued_session() -> Cluster {
    let mut a = Cluster::new(2);
    a.connect("p", false);
    a.subscribe("p", &[("q", QoS::AtLeastOnce)]);
    a.connect("pub", true);
    a.publish("pub", "q", "1", QoS::AtLeastOnce, false, 1);
    a.packets("p");
    a.drop_connection("p");
    a.publish("pub", "q", "2", QoS::AtLeastOnce, false, 2);
    a.publish("pub", "q", "3", QoS::AtLeastOnce, false, 3);
    a
}

fn release(node: &mut Cluster, client_id: &str) -> Option<Bytes> {
    let home = home_shard(client_id, node.shards.len());
    let records = node.shards[home].release_session(client_id);
    node.run();
    records
}

fn adopt(node: &mut Cluster, client_id: &str, records: Bytes) {
    let home = home_shard(client_id, node.shards.len());
    let now = node.now;
    node.shards[home]
        .adopt_session(client_id, records, now)
        .expect("the records adopt");
    node.run();
}

#[test]
fn a_released_session_resumes_on_the_other_node_with_its_messages_and_subscriptions() {
    let mut a = node_with_queued_session();
    let records = release(&mut a, "p").expect("a persistent session has records");
    assert!(
        !a.connect("p", false).session_present,
        "the session left node A"
    );
    let mut b = Cluster::new(3);
    adopt(&mut b, "p", records);
    assert!(b.connect("p", false).session_present);
    assert_eq!(b.payloads("p"), ["1", "2", "3"]);
    b.connect("pub", true);
    b.publish("pub", "q", "4", QoS::AtLeastOnce, false, 1);
    assert_eq!(b.payloads("p"), ["4"], "its subscription moved with it");
}

#[test]
fn releasing_closes_a_connected_client_as_a_takeover() {
    let mut a = Cluster::new(1);
    a.connect("p", false);
    a.subscribe("p", &[("q", QoS::ExactlyOnce)]);
    a.packets("p");
    let records = release(&mut a, "p");
    assert!(records.is_some());
    assert!(a.client("p").closed, "its connection is closed");
    assert_eq!(a.shards[0].stats.sessions_taken_over, 1);
}

#[test]
fn a_clean_session_has_nothing_to_hand_over_and_a_stranger_nothing_to_release() {
    let mut a = Cluster::new(1);
    a.connect("c", true);
    assert_eq!(release(&mut a, "c"), None);
    assert_eq!(release(&mut a, "nobody"), None);
}

#[test]
fn records_for_another_client_or_damaged_ones_are_refused() {
    let mut a = node_with_queued_session();
    let records = release(&mut a, "p").expect("records");
    let mut b = Cluster::new(1);
    let now = b.now;
    assert_eq!(
        b.shards[0].adopt_session("x", records.clone(), now),
        Err(cluster_session::AdoptError::OtherClient("p".into()))
    );
    let cut = records.slice(..records.len() - 3);
    assert!(b.shards[0].adopt_session("p", cut, now).is_err());
    assert!(!b.connect("p", false).session_present);
}

#[test]
fn unregistered_a_new_persistent_session_is_refused_and_a_clean_or_held_one_goes_on() {
    let mut c = Cluster::new(1);
    let unregistered = |c: &mut Cluster, id: &str, clean: bool, conn: ConnId| {
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(Cluster::connect_packet(id, clean)))
            .encode(&mut buf)
            .expect("encodes");
        let FirstPacket::Connect(mut pending) =
            c.shards[0].handle_first_bytes(&buf, &ListenerIdentity::Connect)
        else {
            panic!("a CONNECT");
        };
        pending.set_unregistered();
        let now = c.now;
        c.shards[0].handle_connect(conn, pending, AuthVerdict::Allowed, now)
    };
    let refused = unregistered(&mut c, "new", false, 100);
    assert_eq!(refused.code, ConnectReturnCode::ServerUnavailable);
    let clean = unregistered(&mut c, "clean", true, 101);
    assert!(clean.is_accepted());
    c.connect("held", false);
    c.drop_connection("held");
    let held = unregistered(&mut c, "held", false, 102);
    assert!(
        held.is_accepted() && held.session_present,
        "its own session goes on"
    );
}

fn profile(node: &Cluster, client_id: &str) -> Option<Bytes> {
    let shard = &node.shards[home_shard(client_id, node.shards.len())];
    let key = *shard.session_by_client_id.get(client_id)?;
    shard.session_profile(key)
}

#[test]
fn a_profile_makes_the_session_again_with_its_subscriptions_and_no_messages() {
    let mut a = Cluster::new(2);
    a.connect("p", false);
    a.subscribe("p", &[("q", QoS::AtLeastOnce), ("r/+", QoS::ExactlyOnce)]);
    a.drop_connection("p");
    a.connect("pub", true);
    a.publish("pub", "q", "queued", QoS::AtLeastOnce, false, 1);
    let records = profile(&a, "p").expect("a persistent session has a profile");
    let mut b = Cluster::new(2);
    adopt(&mut b, "p", records);
    assert!(b.connect("p", false).session_present);
    assert!(b.payloads("p").is_empty(), "no messages in a profile");
    b.connect("pub", true);
    b.publish("pub", "q", "4", QoS::AtLeastOnce, false, 1);
    b.publish("pub", "r/x", "5", QoS::ExactlyOnce, false, 2);
    assert_eq!(b.payloads("p"), ["4", "5"], "both subscriptions made again");
    a.connect("c", true);
    assert_eq!(profile(&a, "c"), None, "a clean session has none");
}

#[test]
fn a_profile_is_cut_short_past_its_limit() {
    let mut a = Cluster::new(1);
    a.connect("big", false);
    let filters: Vec<String> = (0..2_000).map(|i| format!("{i:0>60}")).collect();
    for chunk in filters.chunks(100) {
        let chunk: Vec<(&str, QoS)> = chunk
            .iter()
            .map(|f| (f.as_str(), QoS::AtLeastOnce))
            .collect();
        a.subscribe("big", &chunk);
    }
    let records = profile(&a, "big").expect("a profile");
    assert!(
        records.len() > MAX_PROFILE_BYTES,
        "marked too large by its length"
    );
    assert!(
        records.len() < MAX_PROFILE_BYTES + 200,
        "not all 120 KB of it"
    );
}

#[test]
fn late_messages_join_the_session_where_it_lives_now_once_each() {
    let mut a = node_with_queued_session();
    let records = profile(&a, "p").expect("profile");
    let mut b = Cluster::new(2);
    adopt(&mut b, "p", records.clone());
    assert!(b.connect("p", false).session_present);
    b.connect("pub", true);
    b.publish("pub", "q", "new", QoS::AtLeastOnce, false, 1);
    assert_eq!(b.payloads("p"), ["new"]);
    // Node A comes back and hands over what it held: the live session gets it.
    let late = release(&mut a, "p").expect("records");
    let home = home_shard("p", b.shards.len());
    let taken = b.shards[home].take_late_messages("p", late.clone());
    b.run();
    assert_eq!(taken, Ok(3));
    assert_eq!(b.payloads("p"), ["1", "2", "3"]);
    // Offline, they wait in its queue.
    let mut offline = Cluster::new(2);
    adopt(&mut offline, "p", records);
    let home_there = home_shard("p", offline.shards.len());
    let taken = offline.shards[home_there].take_late_messages("p", late.clone());
    offline.run();
    assert_eq!(taken, Ok(3));
    assert!(offline.connect("p", false).session_present);
    assert_eq!(offline.payloads("p"), ["1", "2", "3"]);
    // A client that started clean there has no session to take them.
    b.connect("p", true);
    assert_eq!(b.shards[home].take_late_messages("p", late), Ok(0));
}
