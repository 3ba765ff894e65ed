//! What arrives from the other shards: [`BrokerCore::handle_bus`] takes one bus message (a
//! publish or a batch of them, a retained update, a durability watermark, an interest or share
//! group announcement and its confirmation, a message for a share group's member) and hands it to
//! the part of the core that owns it. Dispatch only: the rules live in the files it calls.

use crate::protocol::QoS;

use super::shared::Targeted;
use super::{BrokerCore, BusMessage, PublishBatch};

impl BrokerCore {
    /// A message from another shard.
    pub fn handle_bus(&mut self, message: BusMessage) {
        self.stats.bus_received += match &message {
            BusMessage::Publishes(batch, _) => batch.len() as u64,
            _ => 1,
        };
        match message {
            BusMessage::Publish(message) => {
                if message.retain {
                    // The control shard's `$SYS` messages: one writer, applied as made here.
                    let version = self.retained.next_version(self.retain_version_shard());
                    self.apply_retained(&message, version);
                }
                // Every shard gets it: the first one serves the share groups.
                if self.shard == 0 {
                    self.route_shared(&message, None);
                }
                self.deliver_local(message, None);
            }
            BusMessage::Publishes(batch, stamp) => {
                let mark = self.journal_mark();
                let bytes = batch.into_bytes();
                let mut qos12 = 0;
                for publish in PublishBatch::read(&bytes) {
                    qos12 += usize::from(publish.qos != QoS::AtMostOnce);
                    self.deliver_batched(&bytes, publish);
                }
                if let Some(stamp) = stamp {
                    self.delivery_received(stamp, mark);
                }
                self.arrived_across(qos12);
            }
            BusMessage::Retained {
                message,
                version,
                stamp,
            } => {
                let mark = self.journal_mark();
                self.apply_retained(&message, version);
                self.deliver_local(message, None);
                if let Some(stamp) = stamp {
                    self.delivery_received(stamp, mark);
                }
            }
            BusMessage::RetainedLoad { message, version } => {
                self.apply_retained(&message, version);
            }
            BusMessage::Durable { from, upto } => self.durable_confirmed(from, upto),
            BusMessage::ShareMembers {
                from,
                group,
                online,
                offline,
                token,
            } => {
                self.share_members_announced(from, &group, online, offline);
                if let Some(token) = token {
                    self.send_bus(from, BusMessage::SharedAck { token });
                }
            }
            BusMessage::SharedAck { token } => self.interest_confirmed(token),
            BusMessage::SharedPublish {
                group,
                message,
                hash,
                hops,
                stamp,
                local_only,
            } => {
                let to = Targeted {
                    hash,
                    hops,
                    local_only,
                };
                self.shared_publish_received(&group, &message, to, stamp);
            }
            BusMessage::Interest {
                from,
                filter,
                added,
                token,
            } => {
                if let Some(table) = self.remote_interest.get_mut(from) {
                    self.last_remote.forget();
                    if added {
                        table.entry(&filter, || ());
                    } else {
                        table.remove(&filter);
                    }
                }
                if let Some(token) = token {
                    self.send_bus(from, BusMessage::InterestAck { token });
                }
            }
            BusMessage::InterestAck { token } => {
                self.announcement_confirmed(token);
                self.interest_confirmed(token);
            }
            BusMessage::SessionRelease { token, client_id } => {
                self.session_release_asked(token, &client_id);
            }
            BusMessage::SessionCopy { token, client_id } => {
                self.session_copy_asked(token, &client_id);
            }
            BusMessage::SessionLate {
                token,
                client_id,
                records,
            } => self.session_late_asked(token, &client_id, records),
            // Between the runtime and the link, or for the link: never the core's.
            BusMessage::SessionClaim { .. }
            | BusMessage::SessionClaimed { .. }
            | BusMessage::SessionReleased { .. }
            | BusMessage::SessionsHeld { .. }
            | BusMessage::SessionProfile { .. }
            | BusMessage::SessionLateTaken { .. } => {}
        }
    }
}
