//! Connection quality samples taken from RTCP, and their averages.

use std::fmt;
use std::str::FromStr;

use confab_signaling::{ErrorCode, MediaKind, SignalingError, UserId};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::types::{DbTime, DbUuid, ROWS_PER_INSERT, StoreRow, values_list};
use super::{Store, StoreError, with_pool};

/// Which way the measured media flowed, seen from the server: `inbound` is what the
/// participant sent to the SFU, `outbound` what the SFU sent to the participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QualityDirection {
    Inbound,
    Outbound,
}

impl QualityDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityDirection::Inbound => "inbound",
            QualityDirection::Outbound => "outbound",
        }
    }
}

impl FromStr for QualityDirection {
    type Err = SignalingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(QualityDirection::Inbound),
            "outbound" => Ok(QualityDirection::Outbound),
            other => Err(SignalingError::new(
                ErrorCode::InvalidArgument,
                format!("unknown QualityDirection {other:?}"),
            )),
        }
    }
}

impl fmt::Display for QualityDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One measurement of one participant's media in one direction; serialized as an element of
/// `samples` in `GET /calls/{id}/quality`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QualitySample {
    /// Implied by the request path, so not repeated in every sample.
    #[serde(skip)]
    pub call_id: Uuid,
    pub user_id: UserId,
    pub direction: QualityDirection,
    pub kind: MediaKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub bitrate_bps: i64,
    /// Fraction lost, 0.0..=1.0.
    pub packet_loss: f64,
    pub jitter_ms: f64,
    pub rtt_ms: f64,
}

/// Averages over a set of samples; all `None` when there were none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QualityAverages {
    pub avg_packet_loss: Option<f64>,
    pub avg_jitter_ms: Option<f64>,
    pub avg_rtt_ms: Option<f64>,
    pub avg_bitrate_bps: Option<f64>,
}

impl Store {
    /// Appends a batch of samples in one transaction.
    pub async fn insert_quality_samples(
        &self,
        samples: &[QualitySample],
    ) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in samples.chunks(ROWS_PER_INSERT) {
                let text = format!(
                    "INSERT INTO quality_samples (call_id, user_id, direction, kind, at, \
                     bitrate_bps, packet_loss, jitter_ms, rtt_ms) VALUES {}",
                    values_list(chunk.len(), 9)
                );
                let mut insert = sqlx::query(&text).persistent(false);
                for s in chunk {
                    insert = insert
                        .bind(DbUuid(s.call_id))
                        .bind(s.user_id.as_str())
                        .bind(s.direction.as_str())
                        .bind(s.kind.as_str())
                        .bind(DbTime(s.at))
                        .bind(s.bitrate_bps)
                        .bind(s.packet_loss)
                        .bind(s.jitter_ms)
                        .bind(s.rtt_ms);
                }
                insert.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A call's samples, oldest first (in insertion order for equal times).
    pub async fn quality_samples(&self, call_id: Uuid) -> Result<Vec<QualitySample>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT call_id, user_id, direction, kind, at, bitrate_bps, packet_loss, \
                 jitter_ms, rtt_ms FROM quality_samples WHERE call_id = $1 ORDER BY at, id",
            )
            .bind(DbUuid(call_id))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(QualitySample {
                        call_id: row.uuid("call_id")?,
                        user_id: row.id("user_id")?,
                        direction: row.wire("direction")?,
                        kind: row.wire("kind")?,
                        at: row.time("at")?,
                        bitrate_bps: row.col("bitrate_bps")?,
                        packet_loss: row.col("packet_loss")?,
                        jitter_ms: row.col("jitter_ms")?,
                        rtt_ms: row.col("rtt_ms")?,
                    })
                })
                .collect()
        })
    }
}
