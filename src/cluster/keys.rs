//! Every Redis key cluster mode uses, built in one place from one prefix, so that two
//! deployments (or two tests) can share a Redis server without seeing each other's keys.

use confab_signaling::OpaqueId;
use uuid::Uuid;

/// The key names under a prefix such as `confab:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(Keys::DEFAULT_PREFIX)
    }
}

impl Keys {
    pub const DEFAULT_PREFIX: &'static str = "confab:";

    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash: node id → the node's record (JSON).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Sorted set: node id scored by its last heartbeat (milliseconds, Redis's clock).
    pub fn heartbeats(&self) -> String {
        format!("{}node-heartbeats", self.prefix)
    }

    /// String: the call a user is joined in.
    pub fn seat(&self, user: &OpaqueId) -> String {
        format!("{}seat:{user}", self.prefix)
    }

    /// Set: the users holding a seat in a call, so the call's seats can be freed at once.
    pub fn call_seats(&self, call: Uuid) -> String {
        format!("{}call-seats:{call}", self.prefix)
    }

    /// String: a conversation's ringing or ongoing call.
    pub fn active_call(&self, conversation: &OpaqueId) -> String {
        format!("{}active-call:{conversation}", self.prefix)
    }
}
