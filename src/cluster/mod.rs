//! Cluster mode's shared state in Redis: which nodes exist and how loaded they are
//! ([`registry`]), and the rules that must hold across every node at once ([`seats`]: a user is
//! joined in at most one call, a conversation has at most one live call).
//!
//! These are building blocks: each works on its own against a Redis server, and nothing in the
//! call service uses them yet. `docs/cluster.md` lists the keys, their lifetimes and the
//! scripts' rules.

pub mod connection;
pub mod error;
pub mod keys;
pub mod node_id;
pub mod registry;
pub mod seats;

pub use connection::connect;
pub use error::ClusterError;
pub use keys::Keys;
pub use registry::{Beat, Clock, ManualClock, NodeRecord, Registry};
pub use seats::{Claim, Seats};
