//! Shared subscriptions in the model (`broker/shared.rs`): which clients are members of which
//! group, and what is checked of groups.
//!
//! One client in four is a member of one group (`member_filter`) and has no other subscription:
//! a session in several would get one copy per subscription, which the per-client checks would
//! take for duplicates. A member reads only messages on its group's filter (the per-client
//! safety check, on the filter part). Checked:
//! - a group gets each routing of a message once, fresh (`check_group_fresh`), except a message a
//!   member's session had read when it ended: the broker may not have read its acknowledgement
//!   (an ack on a connection it is closing is never read) and hands it to another member, or a
//!   message queued in a session a crash brought back after its client had ended it;
//! - with the bus empty and every shard's changes announced, each shard counts the members every
//!   other shard counts for itself, in every group, online and offline (`check_share_counts`).
//!
//! Not checked for members: one publisher's order (a message passed on from a shard whose member
//! left takes one more hop than the messages after it), and delivery at the end (which member
//! gets a message is the strategy's choice; `broker/tests/shared.rs` pins the hand-offs down).

use super::*;

/// What the model keeps of share groups.
#[derive(Default)]
pub(super) struct GroupModel {
    /// Per (shared filter, message): fresh deliveries to the group's members.
    pub(super) fresh: HashMap<(usize, usize), u32>,
    /// Per member client: the messages its current session read (acknowledged or not).
    pub(super) member_got: HashMap<usize, Vec<usize>>,
    /// Messages a member's session read before it ended: the broker may hand them to another
    /// member, which is then their second fresh delivery to the group.
    pub(super) handed_on: HashSet<usize>,
}

/// The one shared filter client `c` subscribes to, if it is a group member.
pub(super) fn member_filter(c: usize) -> Option<usize> {
    c.is_multiple_of(4)
        .then(|| SHARED_FROM + (c / 4) % (FILTERS.len() - SHARED_FROM))
}

/// Whether filter `f` matches `topic`, a shared one by the filter after its share name.
pub(super) fn filter_matches(f: usize, topic: &TopicName) -> bool {
    let filter = TopicFilter::new(FILTERS[f]).expect("valid filter");
    match share_of(&filter) {
        Ok(Some(group)) => group.filter.matches(topic),
        _ => filter.matches(topic),
    }
}

impl Sim {
    /// Member `c` (of the group of filter `f`) read `m` fresh, on a connection of session
    /// `epoch`.
    pub(super) fn member_read(&mut self, c: usize, f: usize, m: usize, epoch: u64, routings: u32) {
        let who = &self.clients[c].id;
        self.note(format!("{who} ← m{m} fresh, member of {}", FILTERS[f]));
        if self.sessions[c].as_ref().is_none_or(|s| s.epoch != epoch) {
            // Written before its session ended, read after: the broker has handed it on.
            self.groups.handed_on.insert(m);
        }
        self.groups.member_got.entry(c).or_default().push(m);
        let fresh = self.groups.fresh.entry((f, m)).or_insert(0);
        *fresh += 1;
        let fresh = *fresh;
        // A crash may bring back a session its client had ended, with what it held.
        let again = self.groups.handed_on.contains(&m) || self.rerouted.contains(&m);
        if fresh > routings && !again {
            fail!(
                self,
                "m{m} reached {fresh} members of {} fresh but was routed {routings} time(s)",
                FILTERS[f]
            );
        }
    }

    /// With the bus empty and every shard's changes announced, each shard counts the members
    /// every other shard counts for itself, in every group (online and offline).
    pub(super) fn check_share_counts(&self) {
        if self.cores.iter().any(|core| core.shared_unannounced() > 0) {
            return;
        }
        let views: Vec<Vec<shared::ShareCount>> =
            self.cores.iter().map(BrokerCore::share_counts).collect();
        let count = |view: &[shared::ShareCount], group: &str, shard: usize| {
            view.iter()
                .find(|count| count.group == group)
                .map_or((0, 0), |count| (count.online[shard], count.offline[shard]))
        };
        for (a, own) in views.iter().enumerate() {
            for (b, view) in views.iter().enumerate().filter(|&(b, _)| b != a) {
                for group in own.iter().chain(view.iter()).map(|count| &count.group) {
                    let (mine, theirs) = (count(own, group, a), count(view, group, a));
                    if mine != theirs {
                        fail!(
                            self,
                            "shard {b} counts {theirs:?} members of {group} on shard {a}, \
                             which counts {mine:?}"
                        );
                    }
                }
            }
        }
    }
}
