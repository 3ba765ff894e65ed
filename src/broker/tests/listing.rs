//! What the host program lists (`listing.rs`): sessions in bounded pages that cover the table,
//! retained topics in order without the deleted ones.

use super::*;

#[test]
fn sessions_come_in_bounded_pages_that_cover_the_table() {
    let mut c = Cluster::new(1);
    for i in 0..5 {
        c.connect(&format!("c{i}"), true);
    }
    c.subscribe("c3", &[("a/#", QoS::AtLeastOnce)]);
    let core = &c.shards[0];
    let mut seen = Vec::new();
    let mut from = Some(0);
    let mut pages = 0;
    while let Some(start) = from {
        let page = core.list_sessions(start, 2);
        assert!(page.sessions.len() <= 2, "a page holds at most its slots");
        seen.extend(page.sessions);
        from = page.next;
        pages += 1;
    }
    assert!(pages >= 3, "5 sessions in pages of 2 slots: {pages} pages");
    seen.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let ids: Vec<&str> = seen.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4"]);
    assert!(seen.iter().all(|s| s.connected && s.clean_session));
    assert_eq!(
        seen[3].subscriptions,
        [("a/#".to_string(), QoS::AtLeastOnce)]
    );
}

#[test]
fn retained_topics_are_listed_in_order_without_deleted_ones() {
    let mut c = Cluster::new(1);
    c.connect("p", true);
    c.publish("p", "b/1", "xyz", QoS::AtLeastOnce, true, 1);
    c.publish("p", "a/1", "x", QoS::AtMostOnce, true, 0);
    c.publish("p", "c/1", "gone", QoS::AtMostOnce, true, 0);
    c.publish("p", "c/1", "", QoS::AtMostOnce, true, 0);
    let mut listed = c.shards[0].list_retained();
    RetainedInfo::sort(&mut listed);
    assert_eq!(
        listed,
        [
            RetainedInfo {
                topic: TopicName::new("a/1").expect("topic"),
                qos: QoS::AtMostOnce,
                size: 1
            },
            RetainedInfo {
                topic: TopicName::new("b/1").expect("topic"),
                qos: QoS::AtLeastOnce,
                size: 3
            },
        ]
    );
}
