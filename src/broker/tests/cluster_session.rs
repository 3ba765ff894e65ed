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
