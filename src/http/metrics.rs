//! `GET /metrics` in the Prometheus text format, optionally behind a bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use confab_signaling::ErrorCode;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::bearer_token;

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "The Prometheus text format. Needs the metrics token as a bearer token when one is configured (CONFAB_METRICS_TOKEN), and none otherwise.",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "`UNAUTHENTICATED`: a metrics token is configured and was not given", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.settings.metrics_token {
        let given = bearer_token(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        if !given.is_ok_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) {
            return ApiError::new(ErrorCode::Unauthenticated, "metrics need the metrics token")
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Compares without an early exit, so response timing does not reveal a prefix of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
