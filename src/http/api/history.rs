//! Call history, statistics and quality samples, all read from the history store.

use std::collections::BTreeMap;

use axum::extract::State;
use confab_signaling::wire::CallObject;
use confab_signaling::{CallStatus, Direction, MediaKind, OpaqueId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::calls::now_ms;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AuthUser, CallIdPath, Query};
use crate::store::{Cursor, HistoryQuery, QualityAverages, QualitySample, StatsQuery, StatsRows};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;

/// Query values arrive as text so that each bad one gets its own clear message.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only calls of this conversation.
    conversation_id: Option<String>,
    #[param(value_type = Option<CallStatus>)]
    status: Option<String>,
    #[param(value_type = Option<MediaKind>)]
    media: Option<String>,
    /// Only calls the caller made (`outgoing`) or was invited to (`incoming`).
    #[param(value_type = Option<Direction>)]
    direction: Option<String>,
    /// Page size, 1..100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    before: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ListResponse {
    calls: Vec<CallObject>,
    next_cursor: Option<String>,
}

fn parse<T: std::str::FromStr<Err = confab_signaling::SignalingError>>(
    value: Option<&str>,
) -> ApiResult<Option<T>> {
    value.map(str::parse).transpose().map_err(ApiError::from)
}

#[utoipa::path(
    get,
    path = "/calls",
    tag = "history",
    summary = "Call history",
    description = "The caller's calls (an admin's: every call), newest first, a page at a time.",
    params(ListParams),
    responses(
        (status = 200, body = ListResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed query value", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ListResponse>> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_argument(format!("limit must be 1..{MAX_LIMIT}, got {text:?}"))
            })?,
    };
    let before = params
        .before
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(|_| ApiError::invalid_argument("before is not a cursor from next_cursor"))?;
    let conversation_id = params
        .conversation_id
        .as_deref()
        .map(OpaqueId::parse)
        .transpose()?;
    let query = HistoryQuery {
        viewer: actor.user_id.clone(),
        admin: actor.admin,
        conversation_id: conversation_id.map(|c| c.as_str().to_owned()),
        status: parse::<CallStatus>(params.status.as_deref())?,
        media: parse::<MediaKind>(params.media.as_deref())?,
        direction: parse::<Direction>(params.direction.as_deref())?,
        limit,
        before,
    };
    let page = state.store.list_calls(&query).await?;
    Ok(axum::Json(ListResponse {
        calls: page
            .calls
            .into_iter()
            .map(|c| {
                CallObject::from(&state.calls.freshest(c)).with_direction(actor.user_id.as_str())
            })
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Only calls of this conversation.
    conversation_id: Option<String>,
    /// `7d`, `30d` (default) or `90d`.
    #[param(pattern = "^(7d|30d|90d)$")]
    timeframe: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsResponse {
    timeframe: &'static str,
    total: u64,
    by_media: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<&'static str, u64>,
    by_direction: BTreeMap<&'static str, u64>,
    total_duration_s: i64,
    average_duration_s: f64,
    longest_s: i64,
    shortest_s: i64,
    per_day: BTreeMap<String, u64>,
    quality: QualityAverages,
}

fn timeframe_days(text: Option<&str>) -> ApiResult<(&'static str, i64)> {
    match text.unwrap_or("30d") {
        "7d" => Ok(("7d", 7)),
        "30d" => Ok(("30d", 30)),
        "90d" => Ok(("90d", 90)),
        other => Err(ApiError::invalid_argument(format!(
            "timeframe must be 7d, 30d or 90d, got {other:?}"
        ))),
    }
}

#[utoipa::path(
    get,
    path = "/calls/stats",
    tag = "history",
    summary = "Call statistics",
    description = "Counts, durations and quality averages over the caller's calls (an admin's: every call) in a timeframe.",
    params(StatsParams),
    responses(
        (status = 200, body = StatsResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed query value", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn stats(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Query(params): Query<StatsParams>,
) -> ApiResult<axum::Json<StatsResponse>> {
    let (timeframe, days) = timeframe_days(params.timeframe.as_deref())?;
    let conversation_id = params
        .conversation_id
        .as_deref()
        .map(OpaqueId::parse)
        .transpose()?;
    let now = now_ms();
    let query = StatsQuery {
        viewer: actor.user_id.clone(),
        admin: actor.admin,
        conversation_id: conversation_id.map(|c| c.as_str().to_owned()),
        since: now - time::Duration::days(days),
    };
    let rows = state.store.stats_rows(&query).await?;
    Ok(axum::Json(aggregate(
        timeframe,
        actor.user_id.as_str(),
        rows,
    )))
}

/// Counts every status; durations only over calls that started and have ended, since an
/// ongoing call has no duration yet.
fn aggregate(timeframe: &'static str, viewer: &str, rows: StatsRows) -> StatsResponse {
    let mut by_media = BTreeMap::new();
    let mut by_status = BTreeMap::new();
    let mut by_direction = BTreeMap::new();
    let mut per_day = BTreeMap::new();
    let mut durations = Vec::new();
    for call in &rows.calls {
        *by_media.entry(call.media.as_str()).or_insert(0) += 1;
        *by_status.entry(call.status.as_str()).or_insert(0) += 1;
        let direction = if call.initiated_by.as_str() == viewer {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        *by_direction.entry(direction.as_str()).or_insert(0) += 1;
        *per_day.entry(utc_date(call.created_at)).or_insert(0) += 1;
        if let (Some(start), Some(end)) = (call.started_at, call.ended_at) {
            durations.push((end - start).whole_seconds().max(0));
        }
    }
    let total_duration_s: i64 = durations.iter().sum();
    StatsResponse {
        timeframe,
        total: rows.calls.len() as u64,
        by_media,
        by_status,
        by_direction,
        total_duration_s,
        average_duration_s: if durations.is_empty() {
            0.0
        } else {
            total_duration_s as f64 / durations.len() as f64
        },
        longest_s: durations.iter().copied().max().unwrap_or(0),
        shortest_s: durations.iter().copied().min().unwrap_or(0),
        per_day,
        quality: rows.quality,
    }
}

fn utc_date(at: OffsetDateTime) -> String {
    let date = at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QualityResponse {
    samples: Vec<QualitySample>,
}

#[utoipa::path(
    get,
    path = "/calls/{id}/quality",
    tag = "history",
    summary = "Quality samples of a call",
    description = "Participants and admins.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, body = QualityResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn quality(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<QualityResponse>> {
    // Same visibility as the call itself: participants and admins.
    state.calls.get(&actor, call_id).await?;
    let samples = state.store.quality_samples(call_id).await?;
    Ok(axum::Json(QualityResponse { samples }))
}
