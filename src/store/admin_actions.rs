//! The admin actions of a call's history: who removed or muted whom, and when.

use confab_signaling::UserId;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::types::{DbTime, DbUuid, StoreRow};
use super::{Store, StoreError, with_pool};

/// One admin action on a participant.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminAction {
    pub call_id: Uuid,
    /// `removed` or `muted`.
    pub action: &'static str,
    /// The acting admin.
    pub by: UserId,
    /// The participant acted on.
    pub user_id: UserId,
    pub at: OffsetDateTime,
    /// `{"reason"}` for a removal, the muted sources for a mute.
    pub detail: Value,
}

/// A stored action row; the action word is read back as text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAdminAction {
    pub action: String,
    pub by: UserId,
    pub user_id: UserId,
    pub at: OffsetDateTime,
    pub detail: Value,
}

impl Store {
    pub async fn insert_admin_action(&self, a: &AdminAction) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO admin_actions (call_id, action, by_user, user_id, at, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(DbUuid(a.call_id))
            .bind(a.action)
            .bind(a.by.as_str())
            .bind(a.user_id.as_str())
            .bind(DbTime(a.at))
            .bind(a.detail.to_string())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A call's admin actions, oldest first.
    pub async fn admin_actions(&self, call_id: Uuid) -> Result<Vec<StoredAdminAction>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT action, by_user, user_id, at, detail FROM admin_actions \
                 WHERE call_id = $1 ORDER BY at, id",
            )
            .bind(DbUuid(call_id))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let detail: String = row.col("detail")?;
                    Ok(StoredAdminAction {
                        action: row.col("action")?,
                        by: row.id("by_user")?,
                        user_id: row.id("user_id")?,
                        at: row.time("at")?,
                        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
    }
}
