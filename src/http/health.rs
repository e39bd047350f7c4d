//! Liveness and readiness, for orchestrators.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::app::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    description = "The process is up and serving HTTP. Needs no token.",
    security(()),
    responses(
        (status = 200, body = Liveness),
    ),
)]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    status: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
    /// `ok` or `unreachable`.
    store: &'static str,
    media_workers: MediaWorkers,
    draining: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MediaWorkers {
    total: usize,
    answering: usize,
}

/// A readiness probe gives up on the store, and on each media worker, after this long rather
/// than hang.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready while the history store answers, every media worker answers and the node is not
/// draining; a load balancer should stop sending new calls otherwise. The body says which
/// check failed. In cluster mode Redis will be checked here as well.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    description = "Ready while the history store and every media worker answer and the node is not draining. Needs no token.",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Draining or unavailable; the body says which check failed", body = Readiness),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let store = async {
        tokio::time::timeout(PING_TIMEOUT, state.store.ping())
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let media = state.media.engine().ping(PING_TIMEOUT);
    let (store, workers) = tokio::join!(store, media);
    let answering = workers.iter().filter(|ok| **ok).count();
    let draining = state.drain.is_draining();
    let store_ok = store.is_ok();
    let media_ok = answering == workers.len();
    let status = if draining {
        "draining"
    } else if store_ok && media_ok {
        "ready"
    } else {
        "unavailable"
    };
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: the store does not answer");
    }
    if !media_ok {
        tracing::warn!(
            answering,
            workers = workers.len(),
            "readiness: media workers do not answer"
        );
    }
    let body = Readiness {
        status,
        database: state.store.backend_name(),
        store: if store_ok { "ok" } else { "unreachable" },
        media_workers: MediaWorkers {
            total: workers.len(),
            answering,
        },
        draining,
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
