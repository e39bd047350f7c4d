//! Call snapshots with their participants, and the media events of a call.

use confab_signaling::{Call, MediaState, Participant, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::types::{DbTime, DbUuid, ROWS_PER_INSERT, StoreRow, values_list};
use super::{Store, StoreError, with_pool};

/// A participant's media switches as they were at `at`, kept so a call's media can be
/// replayed after it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEvent {
    pub call_id: Uuid,
    pub user_id: UserId,
    pub at: OffsetDateTime,
    pub state: MediaState,
}

/// The columns [`calls_from_rows`] reads: a call (`c`) left-joined with its participants (`p`),
/// whose clashing names get a `p_` prefix.
pub(super) const CALL_COLUMNS: &str = "c.id, c.conversation_id, c.kind, c.media, \
    c.initiated_by, c.status, c.created_at, c.started_at, c.ended_at, c.end_reason, \
    c.ended_by, c.version, p.user_id AS p_user_id, p.name AS p_name, p.status AS p_status, \
    p.joined_at AS p_joined_at, p.left_at AS p_left_at, p.left_reason AS p_left_reason, \
    p.audio_muted AS p_audio_muted, p.video_enabled AS p_video_enabled, \
    p.screen_sharing AS p_screen_sharing";

const UPSERT_CALL: &str = "INSERT INTO calls (id, conversation_id, kind, media, \
    initiated_by, status, created_at, started_at, ended_at, end_reason, ended_by, version) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
    ON CONFLICT (id) DO UPDATE SET conversation_id = excluded.conversation_id, \
    kind = excluded.kind, media = excluded.media, initiated_by = excluded.initiated_by, \
    status = excluded.status, created_at = excluded.created_at, \
    started_at = excluded.started_at, ended_at = excluded.ended_at, \
    end_reason = excluded.end_reason, ended_by = excluded.ended_by, \
    version = excluded.version \
    WHERE calls.version < excluded.version";

const PARTICIPANT_COLUMNS: usize = 11;

impl Store {
    /// Upserts the call and all its participants in one transaction, but only if
    /// `call.version` is newer than the stored one: snapshots are written from a queue, and a
    /// write that finishes late must never roll a call back. Returns whether it was applied.
    ///
    /// The participant rows are replaced wholesale. The version check on the call row takes
    /// that row's lock first, so two writers of one call never interleave their participants.
    pub async fn save_call(&self, call: &Call) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let applied = sqlx::query(UPSERT_CALL)
                .bind(DbUuid(call.id))
                .bind(call.conversation_id.as_ref().map(|c| c.as_str()))
                .bind(call.kind.as_str())
                .bind(call.media.as_str())
                .bind(call.initiated_by.as_str())
                .bind(call.status.as_str())
                .bind(DbTime(call.created_at))
                .bind(call.started_at.map(DbTime))
                .bind(call.ended_at.map(DbTime))
                .bind(call.end_reason.as_deref())
                .bind(call.ended_by.as_ref().map(|u| u.as_str()))
                .bind(call.version)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            if !applied {
                return Ok(false);
            }
            sqlx::query("DELETE FROM call_participants WHERE call_id = $1")
                .bind(DbUuid(call.id))
                .execute(&mut *tx)
                .await?;
            let numbered = call.participants.iter().enumerate().collect::<Vec<_>>();
            for chunk in numbered.chunks(ROWS_PER_INSERT) {
                let text = format!(
                    "INSERT INTO call_participants (call_id, user_id, position, name, status, \
                     joined_at, left_at, left_reason, audio_muted, video_enabled, \
                     screen_sharing) VALUES {}",
                    values_list(chunk.len(), PARTICIPANT_COLUMNS)
                );
                let mut insert = sqlx::query(&text).persistent(false);
                for &(position, p) in chunk {
                    insert = insert
                        .bind(DbUuid(call.id))
                        .bind(p.user_id.as_str())
                        .bind(position as i64)
                        .bind(p.name.as_str())
                        .bind(p.status.as_str())
                        .bind(p.joined_at.map(DbTime))
                        .bind(p.left_at.map(DbTime))
                        .bind(p.left_reason.map(|r| r.as_str()))
                        .bind(p.media.audio_muted)
                        .bind(p.media.video_enabled)
                        .bind(p.media.screen_sharing);
                }
                insert.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The newest stored snapshot of a call, participants in call order.
    pub async fn get_call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        // One statement, so the call and its participants come from the same snapshot even
        // while a writer replaces them.
        let text = format!(
            "SELECT {CALL_COLUMNS} FROM calls c \
             LEFT JOIN call_participants p ON p.call_id = c.id \
             WHERE c.id = $1 ORDER BY p.position"
        );
        let calls = with_pool!(self, pool => {
            let rows = sqlx::query(&text).bind(DbUuid(id)).fetch_all(pool).await?;
            calls_from_rows(&rows)?
        });
        Ok(calls.into_iter().next())
    }

    /// Calls still ringing or ongoing, oldest first: after a restart these are the calls the
    /// server was in the middle of.
    pub async fn live_calls(&self) -> Result<Vec<Call>, StoreError> {
        // The status list is spelled out so the partial index `calls_live` matches it.
        let text = format!(
            "SELECT {CALL_COLUMNS} FROM calls c \
             LEFT JOIN call_participants p ON p.call_id = c.id \
             WHERE c.status IN ('ringing', 'ongoing') \
             ORDER BY c.created_at, c.id, p.position"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&text).fetch_all(pool).await?;
            calls_from_rows(&rows)
        })
    }

    /// Appends a batch of media events in one transaction.
    pub async fn insert_media_events(&self, events: &[MediaEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in events.chunks(ROWS_PER_INSERT) {
                let text = format!(
                    "INSERT INTO media_events (call_id, user_id, at, audio_muted, \
                     video_enabled, screen_sharing) VALUES {}",
                    values_list(chunk.len(), 6)
                );
                let mut insert = sqlx::query(&text).persistent(false);
                for e in chunk {
                    insert = insert
                        .bind(DbUuid(e.call_id))
                        .bind(e.user_id.as_str())
                        .bind(DbTime(e.at))
                        .bind(e.state.audio_muted)
                        .bind(e.state.video_enabled)
                        .bind(e.state.screen_sharing);
                }
                insert.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A call's media events, oldest first (in insertion order for equal times).
    pub async fn media_events(&self, call_id: Uuid) -> Result<Vec<MediaEvent>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT call_id, user_id, at, audio_muted, video_enabled, screen_sharing \
                 FROM media_events WHERE call_id = $1 ORDER BY at, id",
            )
            .bind(DbUuid(call_id))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(MediaEvent {
                        call_id: row.uuid("call_id")?,
                        user_id: row.id("user_id")?,
                        at: row.time("at")?,
                        state: MediaState {
                            audio_muted: row.col("audio_muted")?,
                            video_enabled: row.col("video_enabled")?,
                            screen_sharing: row.col("screen_sharing")?,
                        },
                    })
                })
                .collect()
        })
    }
}

/// Folds rows of [`CALL_COLUMNS`] into calls. Rows of one call must be adjacent and in
/// participant order; a call without participants has one row with NULL `p_*` columns.
pub(super) fn calls_from_rows<R: StoreRow>(rows: &[R]) -> Result<Vec<Call>, StoreError> {
    let mut calls: Vec<Call> = Vec::new();
    for row in rows {
        let id = row.uuid("id")?;
        if calls.last().is_none_or(|c| c.id != id) {
            calls.push(Call {
                id,
                conversation_id: row.opt_id("conversation_id")?,
                kind: row.wire("kind")?,
                media: row.wire("media")?,
                initiated_by: row.id("initiated_by")?,
                status: row.wire("status")?,
                created_at: row.time("created_at")?,
                started_at: row.opt_time("started_at")?,
                ended_at: row.opt_time("ended_at")?,
                end_reason: row.col("end_reason")?,
                ended_by: row.opt_id("ended_by")?,
                participants: Vec::new(),
                version: row.col("version")?,
            });
        }
        let Some(user_id) = row.opt_id("p_user_id")? else {
            continue;
        };
        let participant = Participant {
            user_id,
            name: row.col("p_name")?,
            status: row.wire("p_status")?,
            joined_at: row.opt_time("p_joined_at")?,
            left_at: row.opt_time("p_left_at")?,
            left_reason: row.opt_wire("p_left_reason")?,
            media: MediaState {
                audio_muted: row.col("p_audio_muted")?,
                video_enabled: row.col("p_video_enabled")?,
                screen_sharing: row.col("p_screen_sharing")?,
            },
        };
        if let Some(call) = calls.last_mut() {
            call.participants.push(participant);
        }
    }
    Ok(calls)
}
