//! Reading the history: pages of calls for `GET /calls` and raw rows for `GET /calls/stats`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_signaling::{Call, CallStatus, Direction, MediaKind, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::calls::{CALL_COLUMNS, calls_from_rows};
use super::quality::QualityAverages;
use super::types::{DbTime, DbUuid, StoreRow};
use super::{Store, StoreError, with_pool};

/// One page request of a user's call history, newest first. The caller has validated
/// `limit` (1..=100).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub viewer: UserId,
    /// Admins see every call; anyone else only the calls they have a participant row in.
    pub admin: bool,
    pub conversation_id: Option<String>,
    pub status: Option<CallStatus>,
    pub media: Option<MediaKind>,
    /// Relative to the viewer: outgoing means the viewer initiated the call.
    pub direction: Option<Direction>,
    pub limit: u32,
    /// Continue after this position, from a previous page's `next_cursor`.
    pub before: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub calls: Vec<Call>,
    /// Present only when at least one more call follows this page.
    pub next_cursor: Option<Cursor>,
}

/// A position in the history order `(created_at, id)`. Keyset pagination stays exact while
/// new calls are added at the head, which an offset would not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a history cursor")]
pub struct InvalidCursor;

/// 8 bytes of big-endian unix microseconds (PostgreSQL's precision) and 16 bytes of UUID.
const CURSOR_LEN: usize = 24;

impl Cursor {
    /// The position of `call`: the next page starts right after it.
    fn of(call: &Call) -> Cursor {
        Cursor {
            created_at: call.created_at,
            id: call.id,
        }
    }

    /// An opaque, URL-safe token: clients pass it back and must not build their own.
    pub fn encode(&self) -> String {
        // OffsetDateTime's range (±9999 years) fits in i64 microseconds.
        let micros = self.created_at.unix_timestamp_nanos().div_euclid(1_000) as i64;
        let mut bytes = [0u8; CURSOR_LEN];
        bytes[..8].copy_from_slice(&micros.to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Cursor, InvalidCursor> {
        let bytes: [u8; CURSOR_LEN] = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| InvalidCursor)?
            .try_into()
            .map_err(|_| InvalidCursor)?;
        let (micros, id) = bytes.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| InvalidCursor)?);
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .map_err(|_| InvalidCursor)?;
        let id = Uuid::from_slice(id).map_err(|_| InvalidCursor)?;
        Ok(Cursor { created_at, id })
    }
}

/// The calls behind `GET /calls/stats`: those created at or after `since`, with the same
/// visibility as the history.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub viewer: UserId,
    pub admin: bool,
    pub conversation_id: Option<String>,
    pub since: OffsetDateTime,
}

/// Raw material for the statistics; the contract's aggregation is done by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRows {
    /// Oldest first.
    pub calls: Vec<CallSummary>,
    /// Over every quality sample of exactly those calls.
    pub quality: QualityAverages,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallSummary {
    pub status: CallStatus,
    pub media: MediaKind,
    pub initiated_by: UserId,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub ended_at: Option<OffsetDateTime>,
}

/// A value for a numbered placeholder of a query assembled at run time.
enum Arg<'a> {
    Text(&'a str),
    Time(DbTime),
    Uuid(DbUuid),
    Int(i64),
}

/// The values of a query assembled at run time. Filters are added only when present, rather
/// than written as `($n IS NULL OR …)`, so that each shape of query gets a plan that can use
/// its index.
#[derive(Default)]
struct Args<'a>(Vec<Arg<'a>>);

impl<'a> Args<'a> {
    /// Adds a value and returns its placeholder.
    fn push(&mut self, arg: Arg<'a>) -> String {
        self.0.push(arg);
        format!("${}", self.0.len())
    }
}

/// Binds every value of an [`Args`] in order. A macro rather than a function so that it
/// expands inside each backend's arm of `with_pool!`.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in &$args.0 {
            query = match arg {
                Arg::Text(v) => query.bind(*v),
                Arg::Time(v) => query.bind(*v),
                Arg::Uuid(v) => query.bind(*v),
                Arg::Int(v) => query.bind(*v),
            };
        }
        query
    }};
}

/// Conditions on `calls c` selecting what the viewer may see, in one conversation if given.
fn visible<'a>(
    args: &mut Args<'a>,
    viewer: &'a UserId,
    admin: bool,
    conversation_id: Option<&'a str>,
) -> Vec<String> {
    let mut conditions = Vec::new();
    if !admin {
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM call_participants v WHERE v.call_id = c.id AND v.user_id = {})",
            args.push(Arg::Text(viewer.as_str()))
        ));
    }
    if let Some(id) = conversation_id {
        conditions.push(format!("c.conversation_id = {}", args.push(Arg::Text(id))));
    }
    conditions
}

fn all_of(conditions: &[String]) -> String {
    if conditions.is_empty() {
        "TRUE".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

impl Store {
    /// One page of history, newest first by `(created_at, id)`, with participants.
    pub async fn list_calls(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let mut args = Args::default();
        let mut conditions = visible(&mut args, &q.viewer, q.admin, q.conversation_id.as_deref());
        if let Some(status) = q.status {
            let status = args.push(Arg::Text(status.as_str()));
            conditions.push(format!("c.status = {status}"));
        }
        if let Some(media) = q.media {
            let media = args.push(Arg::Text(media.as_str()));
            conditions.push(format!("c.media = {media}"));
        }
        if let Some(direction) = q.direction {
            let viewer = args.push(Arg::Text(q.viewer.as_str()));
            conditions.push(match direction {
                Direction::Outgoing => format!("c.initiated_by = {viewer}"),
                Direction::Incoming => format!("c.initiated_by <> {viewer}"),
            });
        }
        if let Some(cursor) = q.before {
            let created_at = args.push(Arg::Time(DbTime(cursor.created_at)));
            let id = args.push(Arg::Uuid(DbUuid(cursor.id)));
            conditions.push(format!("(c.created_at, c.id) < ({created_at}, {id})"));
        }
        let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
        // One row more than asked tells whether another page follows.
        let fetch = args.push(Arg::Int(i64::from(q.limit) + 1));
        // The page is cut in a CTE and joined with its participants in the same statement:
        // one round trip, and one snapshot of each call with its participants.
        let text = format!(
            "WITH page AS (SELECT * FROM calls c WHERE {} \
             ORDER BY c.created_at DESC, c.id DESC LIMIT {fetch}) \
             SELECT {CALL_COLUMNS} FROM page c \
             LEFT JOIN call_participants p ON p.call_id = c.id \
             ORDER BY c.created_at DESC, c.id DESC, p.position",
            all_of(&conditions)
        );
        let mut calls = with_pool!(self, pool => {
            let rows = bind_args!(sqlx::query(&text), args).fetch_all(pool).await?;
            calls_from_rows(&rows)?
        });
        let next_cursor = if calls.len() > limit {
            calls.truncate(limit);
            calls.last().map(Cursor::of)
        } else {
            None
        };
        Ok(HistoryPage { calls, next_cursor })
    }

    /// The calls created since `q.since` that the viewer may see, and the averages of their
    /// quality samples.
    pub async fn stats_rows(&self, q: &StatsQuery) -> Result<StatsRows, StoreError> {
        let mut args = Args::default();
        let mut conditions = visible(&mut args, &q.viewer, q.admin, q.conversation_id.as_deref());
        let since = args.push(Arg::Time(DbTime(q.since)));
        conditions.push(format!("c.created_at >= {since}"));
        let filter = all_of(&conditions);
        let calls_text = format!(
            "SELECT c.status, c.media, c.initiated_by, c.created_at, c.started_at, c.ended_at \
             FROM calls c WHERE {filter} ORDER BY c.created_at, c.id"
        );
        // The CAST keeps PostgreSQL's AVG of a BIGINT from being NUMERIC, which sqlx can only
        // read with an extra decimal crate.
        let quality_text = format!(
            "SELECT AVG(q.packet_loss) AS avg_packet_loss, AVG(q.jitter_ms) AS avg_jitter_ms, \
             AVG(q.rtt_ms) AS avg_rtt_ms, \
             AVG(CAST(q.bitrate_bps AS DOUBLE PRECISION)) AS avg_bitrate_bps \
             FROM quality_samples q WHERE q.call_id IN (SELECT c.id FROM calls c WHERE {filter})"
        );
        with_pool!(self, pool => {
            let rows = bind_args!(sqlx::query(&calls_text), args).fetch_all(pool).await?;
            let calls = rows
                .iter()
                .map(|row| {
                    Ok(CallSummary {
                        status: row.wire("status")?,
                        media: row.wire("media")?,
                        initiated_by: row.id("initiated_by")?,
                        created_at: row.time("created_at")?,
                        started_at: row.opt_time("started_at")?,
                        ended_at: row.opt_time("ended_at")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let row = bind_args!(sqlx::query(&quality_text), args).fetch_one(pool).await?;
            let quality = QualityAverages {
                avg_packet_loss: row.col("avg_packet_loss")?,
                avg_jitter_ms: row.col("avg_jitter_ms")?,
                avg_rtt_ms: row.col("avg_rtt_ms")?,
                avg_bitrate_bps: row.col("avg_bitrate_bps")?,
            };
            Ok(StatsRows { calls, quality })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cursor_round_trips_through_its_text() {
        let cursor = Cursor {
            created_at: datetime!(2026-11-22 03:20:01.123456 UTC),
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        };
        let text = cursor.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text), Ok(cursor));
    }

    #[test]
    fn cursor_rejects_anything_else() {
        let valid = Cursor {
            created_at: datetime!(2026-01-01 0:00 UTC),
            id: Uuid::nil(),
        }
        .encode();
        let too_far = URL_SAFE_NO_PAD.encode([[0x7f; 8].as_slice(), &[0; 16]].concat());
        for text in [
            "",
            "garbage!",
            &valid[1..],
            &format!("{valid}A"),
            &format!("{valid}=="),
            &too_far,
        ] {
            assert_eq!(Cursor::decode(text), Err(InvalidCursor), "{text:?}");
        }
    }
}
