//! The webhook outbox: events waiting for a receiver, kept so that a restart loses none.
//!
//! One row per (event, receiver URL). Rows of one call and URL form a queue ordered by `seq`;
//! only its head is ever delivered, so a receiver gets a call's events in order, and a failing
//! event holds back the later events of its call to that URL but nothing else. A row leaves
//! the table when its receiver took it or when delivery gave up on it.

use time::OffsetDateTime;
use uuid::Uuid;

use super::types::{DbTime, DbUuid, ROWS_PER_INSERT, StoreRow, values_list};
use super::{Store, StoreError, with_pool};

/// An event for one receiver, as it is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxRow {
    pub event_id: Uuid,
    pub url: String,
    pub call_id: Uuid,
    /// The exact JSON body sent on every attempt (and signed).
    pub body: String,
    pub created_at: OffsetDateTime,
}

/// A queued event for one receiver, with its delivery progress.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub url: String,
    pub call_id: Uuid,
    pub body: String,
    pub created_at: OffsetDateTime,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: OffsetDateTime,
}

const OUTBOX_COLUMNS: usize = 7;

impl Store {
    /// Queues rows in one transaction; their `seq` follows the slice order.
    pub async fn insert_outbox_rows(&self, rows: &[NewOutboxRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let text = format!(
                    "INSERT INTO webhook_outbox (event_id, url, call_id, body, created_at, \
                     attempts, next_attempt_at) VALUES {}",
                    values_list(chunk.len(), OUTBOX_COLUMNS)
                );
                let mut insert = sqlx::query(&text).persistent(false);
                for row in chunk {
                    insert = insert
                        .bind(DbUuid(row.event_id))
                        .bind(row.url.as_str())
                        .bind(DbUuid(row.call_id))
                        .bind(row.body.as_str())
                        .bind(DbTime(row.created_at))
                        .bind(0_i64)
                        .bind(DbTime(row.created_at));
                }
                insert.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The head of each (call, URL) queue, soonest due first, at most `limit` of them.
    pub async fn outbox_heads(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT o.seq, o.event_id, o.url, o.call_id, o.body, o.created_at, o.attempts, \
                 o.next_attempt_at FROM webhook_outbox o \
                 WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox e \
                 WHERE e.call_id = o.call_id AND e.url = o.url AND e.seq < o.seq) \
                 ORDER BY o.next_attempt_at, o.seq LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(OutboxRow {
                        seq: row.col("seq")?,
                        event_id: row.uuid("event_id")?,
                        url: row.col("url")?,
                        call_id: row.uuid("call_id")?,
                        body: row.col("body")?,
                        created_at: row.time("created_at")?,
                        attempts: row.col("attempts")?,
                        next_attempt_at: row.time("next_attempt_at")?,
                    })
                })
                .collect()
        })
    }

    /// Removes a row: delivered, or given up.
    pub async fn delete_outbox_row(&self, seq: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM webhook_outbox WHERE seq = $1")
                .bind(seq)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_outbox_row(
        &self,
        seq: i64,
        attempts: i64,
        next_attempt_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = $2, next_attempt_at = $3 WHERE seq = $1",
            )
            .bind(seq)
            .bind(attempts)
            .bind(DbTime(next_attempt_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Rows still waiting for delivery.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
                .fetch_one(pool)
                .await?;
            Ok(count)
        })
    }
}
