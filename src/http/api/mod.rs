//! The REST API of contract section 5, one module per resource.

pub mod calls;
mod conversations;
mod dev;
mod history;
mod ice;

use axum::Router;
use axum::routing::{get, patch, post, put};

use crate::app::AppState;

pub fn router(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route(
            "/conversations/{id}",
            put(conversations::put)
                .get(conversations::get)
                .delete(conversations::delete),
        )
        .route(
            "/conversations/{id}/active-call",
            get(conversations::active_call),
        )
        .route("/calls", post(calls::initiate).get(history::list))
        .route("/calls/stats", get(history::stats))
        .route("/calls/{id}", get(calls::get))
        .route("/calls/{id}/accept", post(calls::accept))
        .route("/calls/{id}/reject", post(calls::reject))
        .route("/calls/{id}/join", post(calls::join))
        .route("/calls/{id}/leave", post(calls::leave))
        .route("/calls/{id}/end", post(calls::end))
        .route("/calls/{id}/media", patch(calls::media))
        .route("/calls/{id}/quality", get(history::quality))
        .route("/ice-servers", get(ice::ice_servers));
    // The dev token route exists only in --dev: without it, there is nothing to probe.
    if state.settings.dev {
        router.route("/dev/token", post(dev::token))
    } else {
        router
    }
}
