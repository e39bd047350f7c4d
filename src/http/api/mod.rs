//! The REST API of contract section 5, one module per resource.

mod admin;
pub mod calls;
mod conversations;
mod dev;
mod drain;
mod history;
mod ice;
pub mod openapi;

use crate::app::AppState;
use crate::http::route::Route;

/// Every REST route: one entry per operation, its template under `/api/v1` and its handler.
/// The router, the request metrics' `route` labels and the OpenAPI document's check are all
/// built from this one list; a route added here without an `#[utoipa::path]` entry in
/// [`crate::http::openapi`] fails `tests/openapi.rs`.
pub fn routes(state: &AppState) -> Vec<Route> {
    let mut routes = vec![
        Route::put("/conversations/{id}", conversations::put),
        Route::get("/conversations/{id}", conversations::get),
        Route::delete("/conversations/{id}", conversations::delete),
        Route::get(
            "/conversations/{id}/active-call",
            conversations::active_call,
        ),
        Route::post("/calls", calls::initiate),
        Route::get("/calls", history::list),
        Route::get("/calls/stats", history::stats),
        Route::get("/calls/{id}", calls::get),
        Route::post("/calls/{id}/accept", calls::accept),
        Route::post("/calls/{id}/reject", calls::reject),
        Route::post("/calls/{id}/join", calls::join),
        Route::post("/calls/{id}/leave", calls::leave),
        Route::post("/calls/{id}/end", calls::end),
        Route::patch("/calls/{id}/media", calls::media),
        Route::get("/calls/{id}/quality", history::quality),
        Route::get("/ice-servers", ice::ice_servers),
        Route::post("/admin/drain", drain::drain),
        Route::get("/admin/calls", admin::calls),
        Route::get("/admin/nodes", admin::nodes),
        Route::post("/calls/{id}/participants/{user}/remove", admin::remove),
        Route::post("/calls/{id}/participants/{user}/mute", admin::mute),
        Route::get("/calls/{id}/admin-actions", admin::actions),
        Route::get("/openapi.json", openapi::document),
    ];
    // The dev token route exists only in --dev: without it, there is nothing to probe.
    if state.settings.dev {
        routes.push(Route::post("/dev/token", dev::token));
    }
    routes
}
