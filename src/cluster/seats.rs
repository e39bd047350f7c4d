//! The rules that must hold across every node at once (contract sections 3 and 10): a user is
//! joined in at most one call, and a conversation has at most one ringing or ongoing call.
//!
//! Each rule is one Redis key holding the call that owns it, changed only by a Lua script that
//! reads and writes it in one step. Redis runs one script at a time, so two nodes claiming the
//! same user (or conversation) for different calls at the same moment cannot both win: the
//! loser is told which call holds it, for `details.call_id` of `USER_BUSY` /
//! `ACTIVE_CALL_EXISTS`.
//!
//! Keys (see `docs/cluster.md`): `seat:{user}` and `active-call:{conversation}` hold a call id;
//! `call-seats:{call}` is the set of users seated in a call, so the call's seats can be freed
//! when it ends. None expires: a seat is freed by the node hosting its call, or, when that node
//! is lost, by the node that claims it from the registry.

use std::sync::Arc;

use confab_signaling::{ErrorCode, OpaqueId, SignalingError};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{ClusterError, Keys};

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claim holds (also when this same call held it already).
    Granted,
    /// Another call holds it.
    Taken(Uuid),
}

impl Claim {
    pub fn is_granted(self) -> bool {
        self == Claim::Granted
    }

    /// `Ok` when granted; otherwise the refusal with `code`, `message(holder)` and
    /// `details.call_id` = the holder.
    pub fn or_refuse(
        self,
        code: ErrorCode,
        message: impl FnOnce(Uuid) -> String,
    ) -> Result<(), SignalingError> {
        match self {
            Claim::Granted => Ok(()),
            Claim::Taken(holder) => {
                Err(SignalingError::new(code, message(holder)).with_call_id(holder))
            }
        }
    }
}

/// KEYS: holder[, members]. ARGV: call[, member]. Takes the holder key for the call unless
/// another call has it; returns that other call, or nothing when granted.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[2]) end
return false
";

/// KEYS: holder[, members]. ARGV: call[, member]. Frees the holder key if this call has it;
/// returns 1 if it did.
const RELEASE: &str = r"
if KEYS[2] then redis.call('SREM', KEYS[2], ARGV[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Seats and active calls of one deployment (one key prefix).
#[derive(Clone)]
pub struct Seats {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    release: Script,
}

impl Seats {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Seats {
        Seats {
            conn,
            keys,
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                release: Script::new(RELEASE),
            }),
        }
    }

    /// Seats `user` in `call`, unless the user is joined in another call.
    pub async fn claim_seat(&self, user: &OpaqueId, call: Uuid) -> Result<Claim, ClusterError> {
        let holder: Option<String> = self
            .scripts
            .claim
            .key(self.keys.seat(user))
            .key(self.keys.call_seats(call))
            .arg(call.to_string())
            .arg(user.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        claim(holder)
    }

    /// Frees `user`'s seat if it is in `call`; returns whether it was.
    pub async fn release_seat(&self, user: &OpaqueId, call: Uuid) -> Result<bool, ClusterError> {
        let released: i64 = self
            .scripts
            .release
            .key(self.keys.seat(user))
            .key(self.keys.call_seats(call))
            .arg(call.to_string())
            .arg(user.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }

    /// The call `user` is joined in, if any.
    pub async fn seat_of(&self, user: &OpaqueId) -> Result<Option<Uuid>, ClusterError> {
        let holder: Option<String> = self.conn.clone().get(self.keys.seat(user)).await?;
        holder.as_deref().map(call_id).transpose()
    }

    /// Frees every seat in `call` (the call ended); returns how many there were. Each seat is
    /// freed only if it still holds this call.
    pub async fn release_call_seats(&self, call: Uuid) -> Result<usize, ClusterError> {
        let members: Vec<String> = self
            .conn
            .clone()
            .smembers(self.keys.call_seats(call))
            .await?;
        let mut released = 0;
        for member in &members {
            let user = OpaqueId::parse(member).map_err(|e| ClusterError::Corrupt {
                what: "seat member",
                message: e.message,
            })?;
            if self.release_seat(&user, call).await? {
                released += 1;
            }
        }
        let _: () = self.conn.clone().del(self.keys.call_seats(call)).await?;
        Ok(released)
    }

    /// Makes `call` the conversation's live call, unless another call is.
    pub async fn claim_active_call(
        &self,
        conversation: &OpaqueId,
        call: Uuid,
    ) -> Result<Claim, ClusterError> {
        let holder: Option<String> = self
            .scripts
            .claim
            .key(self.keys.active_call(conversation))
            .arg(call.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        claim(holder)
    }

    /// Frees the conversation if `call` is its live call; returns whether it was.
    pub async fn release_active_call(
        &self,
        conversation: &OpaqueId,
        call: Uuid,
    ) -> Result<bool, ClusterError> {
        let released: i64 = self
            .scripts
            .release
            .key(self.keys.active_call(conversation))
            .arg(call.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }

    /// The conversation's ringing or ongoing call, if any.
    pub async fn active_call(&self, conversation: &OpaqueId) -> Result<Option<Uuid>, ClusterError> {
        let holder: Option<String> = self
            .conn
            .clone()
            .get(self.keys.active_call(conversation))
            .await?;
        holder.as_deref().map(call_id).transpose()
    }
}

fn call_id(text: &str) -> Result<Uuid, ClusterError> {
    Uuid::parse_str(text).map_err(|e| ClusterError::Corrupt {
        what: "call id",
        message: e.to_string(),
    })
}

fn claim(holder: Option<String>) -> Result<Claim, ClusterError> {
    match holder {
        None => Ok(Claim::Granted),
        Some(holder) => call_id(&holder).map(Claim::Taken),
    }
}
