//! Which nodes make up the deployment, how loaded each one is, and which have gone silent
//! (contract section 10): every node writes its record to Redis with a heartbeat; a node whose
//! last heartbeat is older than [`Registry::LOST_AFTER`] is lost. New calls are placed on the
//! least-loaded live node that is not draining.
//!
//! Heartbeats are timed by Redis's own clock (`TIME` inside the scripts), so that nodes whose
//! clocks disagree still agree on who is live. Tests may substitute a [`ManualClock`].
//!
//! Keys (see `docs/cluster.md`): a hash `nodes` (id → record as JSON) and a sorted set
//! `node-heartbeats` (id scored by its last heartbeat in milliseconds). One id has one field in
//! each, so a node restarted on the same id replaces its record instead of adding one.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ClusterError, Keys};

/// What a node tells the others about itself, rewritten on every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// When this run of the node started: a restart on the same id has a new one.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Where other nodes reach this node's HTTP API.
    pub http_url: String,
    /// The media addresses its SDP announces.
    pub rtc_addrs: Vec<SocketAddr>,
    /// Calls hosted here.
    pub calls: u32,
    /// Joined participants across those calls.
    pub participants: u32,
    /// Process CPU use over the last interval, as a share of the machine (0.0 ..= 1.0).
    pub cpu_ratio: f64,
    /// Stops taking new calls (section 10).
    pub draining: bool,
}

impl NodeRecord {
    /// Load, least first: joined participants (each one is media to forward), then CPU use (what
    /// the participants cost, and whatever else runs on the machine), then calls; ties go to the
    /// smaller id, so every node that sees the same records picks the same one.
    pub fn cmp_load(&self, other: &NodeRecord) -> Ordering {
        self.participants
            .cmp(&other.participants)
            .then(self.cpu_ratio.total_cmp(&other.cpu_ratio))
            .then(self.calls.cmp(&other.calls))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// The node a new call goes to among `nodes` (all live): the least loaded that is not draining.
pub fn least_loaded<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Option<&'a NodeRecord> {
    nodes
        .into_iter()
        .filter(|n| !n.draining)
        .min_by(|a, b| a.cmp_load(b))
}

/// What a heartbeat found in Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum Beat {
    /// The record of this same run was there: nothing happened in between.
    Renewed,
    /// There was no record of this run: the node's first heartbeat, or the first after it was
    /// declared lost (its calls have been or are being ended by another node), or a restart on
    /// the same id, in which case `replaced` is the previous run's record, whose calls are gone.
    Registered { replaced: Option<NodeRecord> },
}

/// Milliseconds set by hand: tests move time forward without waiting for it.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn starting_at(millis: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(millis)))
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, AtomicOrdering::SeqCst);
    }

    pub fn now_millis(&self) -> i64 {
        self.0.load(AtomicOrdering::SeqCst)
    }
}

/// The clock heartbeats are measured by.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// Redis's `TIME`: one clock for every node.
    #[default]
    Redis,
    Manual(ManualClock),
}

impl Clock {
    /// The scripts' `now` argument: empty means "ask Redis".
    fn arg(&self) -> String {
        match self {
            Clock::Redis => String::new(),
            Clock::Manual(clock) => clock.now_millis().to_string(),
        }
    }
}

/// Shared by the scripts: `now` in milliseconds, from `ARGV[1]` or from Redis's clock.
const NOW: &str = r"
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// KEYS: nodes, heartbeats. ARGV: now, id, record. Returns the record it replaced, if any.
const HEARTBEAT: &str = r"
local previous = redis.call('HGET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[2])
return previous
";

/// KEYS: nodes, heartbeats. ARGV: now, window. Returns the records heard from within the window.
const LIVE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], now - tonumber(ARGV[2]), '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
";

/// KEYS: nodes, heartbeats. ARGV: now, window. Removes the nodes silent for longer than the
/// window and returns their records: each lost node is returned to exactly one caller.
const CLAIM_LOST: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[2])))
local lost = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[1], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if record then table.insert(lost, record) end
end
return lost
";

/// KEYS: nodes, heartbeats. ARGV: id. Returns whether there was a record.
const DEREGISTER: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
";

fn script(body: &str, needs_now: bool) -> Script {
    if needs_now {
        Script::new(&format!("{NOW}{body}"))
    } else {
        Script::new(body)
    }
}

/// The node registry of one deployment (one key prefix).
#[derive(Clone)]
pub struct Registry {
    conn: ConnectionManager,
    keys: Keys,
    lost_after: Duration,
    clock: Clock,
    scripts: Arc<Scripts>,
}

struct Scripts {
    heartbeat: Script,
    live: Script,
    claim_lost: Script,
    deregister: Script,
}

impl Registry {
    /// A node silent this long is lost (contract section 10).
    pub const LOST_AFTER: Duration = Duration::from_secs(10);
    /// How often a node should heartbeat: several beats fit in the window, so one slow beat does
    /// not make a node lost.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

    pub fn new(conn: ConnectionManager, keys: Keys) -> Registry {
        Registry {
            conn,
            keys,
            lost_after: Self::LOST_AFTER,
            clock: Clock::Redis,
            scripts: Arc::new(Scripts {
                heartbeat: script(HEARTBEAT, true),
                live: script(LIVE, true),
                claim_lost: script(CLAIM_LOST, true),
                deregister: script(DEREGISTER, false),
            }),
        }
    }

    /// Another silence window than the contract's 10 s (tests).
    pub fn with_lost_after(mut self, lost_after: Duration) -> Registry {
        self.lost_after = lost_after;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Registry {
        self.clock = clock;
        self
    }

    fn window_millis(&self) -> i64 {
        i64::try_from(self.lost_after.as_millis()).unwrap_or(i64::MAX)
    }

    /// Writes `record` and marks its node as heard from now. A `cpu_ratio` outside 0.0 ..= 1.0
    /// is written clamped (a NaN as 0.0), so that every node can read the record back.
    pub async fn heartbeat(&self, record: &NodeRecord) -> Result<Beat, ClusterError> {
        let mut written = record.clone();
        written.cpu_ratio = if record.cpu_ratio.is_finite() {
            record.cpu_ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let json = serde_json::to_string(&written).map_err(|e| ClusterError::Corrupt {
            what: "node record",
            message: e.to_string(),
        })?;
        let previous: Option<String> = self
            .scripts
            .heartbeat
            .key(self.keys.nodes())
            .key(self.keys.heartbeats())
            .arg(self.clock.arg())
            .arg(&record.id)
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let previous = previous.map(|p| decode(&p)).transpose()?;
        Ok(match previous {
            Some(p) if p.started_at == record.started_at => Beat::Renewed,
            replaced => Beat::Registered { replaced },
        })
    }

    /// The nodes heard from within the window, by id. A record this node cannot read (one
    /// written by an incompatible version) is left out with a warning rather than failing the
    /// whole list, so one bad record cannot stop placement.
    pub async fn live_nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let records: Vec<Option<String>> = self
            .scripts
            .live
            .key(self.keys.nodes())
            .key(self.keys.heartbeats())
            .arg(self.clock.arg())
            .arg(self.window_millis())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut nodes: Vec<NodeRecord> = records
            .iter()
            .flatten()
            .filter_map(|r| readable(r))
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Takes the nodes silent for longer than the window out of the registry and returns them,
    /// so that the caller ends their calls. Two nodes asking at once never get the same node.
    /// Unreadable records are removed too, and left out with a warning.
    pub async fn claim_lost_nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let records: Vec<String> = self
            .scripts
            .claim_lost
            .key(self.keys.nodes())
            .key(self.keys.heartbeats())
            .arg(self.clock.arg())
            .arg(self.window_millis())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(records.iter().filter_map(|r| readable(r)).collect())
    }

    /// Where a new call goes: the least-loaded live node that is not draining (see
    /// [`NodeRecord::cmp_load`]); `None` when there is none. Two calls placed at the same moment
    /// may land on the same node: the loads are the last heartbeats', which is good enough to
    /// spread calls, and no rule depends on it.
    pub async fn place_call(&self) -> Result<Option<NodeRecord>, ClusterError> {
        let nodes = self.live_nodes().await?;
        Ok(least_loaded(&nodes).cloned())
    }

    /// Removes a node's record at a clean shutdown, so nobody waits for it to go silent.
    /// Returns whether it was there.
    pub async fn deregister(&self, id: &str) -> Result<bool, ClusterError> {
        let removed: i64 = self
            .scripts
            .deregister
            .key(self.keys.nodes())
            .key(self.keys.heartbeats())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }
}

fn decode(json: &str) -> Result<NodeRecord, ClusterError> {
    serde_json::from_str(json).map_err(|e| ClusterError::Corrupt {
        what: "node record",
        message: e.to_string(),
    })
}

/// The record, or `None` with a warning.
fn readable(json: &str) -> Option<NodeRecord> {
    match decode(json) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(error = %e, "node record left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32, cpu_ratio: f64, draining: bool) -> NodeRecord {
        NodeRecord {
            id: id.to_owned(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            http_url: format!("http://{id}:8080"),
            rtc_addrs: vec![],
            calls: participants / 2,
            participants,
            cpu_ratio,
            draining,
        }
    }

    #[test]
    fn the_least_loaded_node_that_is_not_draining_is_placed() {
        let nodes = [
            node("a", 10, 0.1, false),
            node("b", 2, 0.9, false),
            node("c", 2, 0.3, false),
            node("d", 0, 0.0, true),
        ];
        assert_eq!(least_loaded(&nodes).map(|n| n.id.as_str()), Some("c"));
        let draining = [node("a", 0, 0.0, true)];
        assert_eq!(least_loaded(&draining), None);
    }

    #[test]
    fn equal_loads_go_to_the_smaller_id() {
        let nodes = [node("b", 1, 0.5, false), node("a", 1, 0.5, false)];
        assert_eq!(least_loaded(&nodes).map(|n| n.id.as_str()), Some("a"));
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut record = node("n1", 3, 0.25, false);
        record.rtc_addrs = vec!["10.0.0.1:50000".parse().unwrap()];
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(decode(&json).unwrap(), record);
    }
}
