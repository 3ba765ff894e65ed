//! `shared_subscription_strategy`: how one member of a share group is chosen for a message. A
//! configuration value (parsed and named here); the broker's `shared` module applies it.

use std::fmt;
use std::str::FromStr;

/// How the member that gets a message is chosen (`shared_subscription_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedStrategy {
    /// Each member in turn (per group, on each publishing shard).
    #[default]
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member until it leaves or goes offline.
    Sticky,
    /// By a hash of the publisher's client id: one publisher's messages go to one member while
    /// the group stays the same (as EMQX's `hash_clientid`).
    HashClientId,
}

impl SharedStrategy {
    /// The configuration's spellings, in order.
    pub const NAMES: [&'static str; 4] = ["round_robin", "random", "sticky", "hash_client_id"];

    /// The spelling in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedStrategy::RoundRobin => Self::NAMES[0],
            SharedStrategy::Random => Self::NAMES[1],
            SharedStrategy::Sticky => Self::NAMES[2],
            SharedStrategy::HashClientId => Self::NAMES[3],
        }
    }
}

impl fmt::Display for SharedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SharedStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(SharedStrategy::RoundRobin),
            "random" => Ok(SharedStrategy::Random),
            "sticky" => Ok(SharedStrategy::Sticky),
            "hash_client_id" => Ok(SharedStrategy::HashClientId),
            other => Err(format!(
                "must be one of {}, got {other:?}",
                Self::NAMES.join(", ")
            )),
        }
    }
}
