//! `call:data` (contract section 6): who may send app data into a call, and who receives it.
//!
//! The relay keeps nothing: the book already knows who is joined, and the payload is opaque.
//! Deciding here, next to the call state, keeps the rule in one tested place; the binary only
//! delivers to the users returned.

use serde_json::Value;
use uuid::Uuid;

use super::{CallBook, participant_or_forbidden};
use crate::error::{ErrorCode, SignalingError};
use crate::model::{ParticipantStatus, UserId};

/// The largest `payload`, measured as compact JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

impl CallBook {
    /// The users that `sender`'s `call:data` goes to: every other joined participant, or only
    /// those named in `to`, in the call's participant order.
    ///
    /// Checks, in this order: the payload's size (`PAYLOAD_TOO_LARGE`) and an empty `to`
    /// (`INVALID_ARGUMENT`); the call being live (`CALL_NOT_FOUND`; the binary refines an
    /// ended call as for every call operation); the sender being a participant (`FORBIDDEN`)
    /// and joined (`INVALID_STATE`); every user in `to` being another joined participant
    /// (`INVALID_ARGUMENT`, `details.user_ids` naming the others). A user named twice in `to`
    /// receives it once.
    pub fn data_recipients(
        &self,
        call_id: Uuid,
        sender: &UserId,
        payload: &Value,
        to: Option<&[UserId]>,
    ) -> Result<Vec<UserId>, SignalingError> {
        let size = serialized_len(payload);
        if size > MAX_PAYLOAD_BYTES {
            return Err(SignalingError::new(
                ErrorCode::PayloadTooLarge,
                format!("payload is {size} bytes as JSON; at most {MAX_PAYLOAD_BYTES} are relayed"),
            ));
        }
        if to.is_some_and(<[UserId]>::is_empty) {
            return Err(SignalingError::invalid_argument(
                "to must name at least one user, or be left out to reach everyone",
            ));
        }
        let call = self.live(call_id)?;
        let me = participant_or_forbidden(call, sender)?;
        if me.status != ParticipantStatus::Joined {
            return Err(SignalingError::invalid_state(format!(
                "{sender} is not joined in call {call_id}: participant is {}",
                me.status
            )));
        }
        let others: Vec<&UserId> = call
            .joined()
            .map(|p| &p.user_id)
            .filter(|u| *u != sender)
            .collect();
        let Some(to) = to else {
            return Ok(others.into_iter().cloned().collect());
        };
        let strangers: Vec<&str> = to
            .iter()
            .filter(|u| !others.contains(u))
            .map(UserId::as_str)
            .collect();
        if !strangers.is_empty() {
            let mut refusal = SignalingError::invalid_argument(format!(
                "to names {} who {} not another joined participant of call {call_id}",
                strangers.join(", "),
                if strangers.len() == 1 { "is" } else { "are" }
            ));
            refusal.details = Some(serde_json::json!({ "user_ids": strangers }));
            return Err(refusal);
        }
        Ok(others
            .into_iter()
            .filter(|u| to.contains(u))
            .cloned()
            .collect())
    }
}

/// Length of the compact JSON text of `value`, without building it.
fn serialized_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
