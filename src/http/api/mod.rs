//! The REST API of contract section 5, one module per resource.

mod admin;
pub mod calls;
mod conversations;
mod dev;
mod drain;
mod history;
mod ice;

use axum::routing::{MethodRouter, get, patch, post, put};

use crate::app::AppState;

/// Every REST route: its template under `/api/v1` and its handlers. The router and the
/// request metrics' `route` labels are both built from this one list.
pub fn routes(state: &AppState) -> Vec<(&'static str, MethodRouter<AppState>)> {
    let mut routes = vec![
        (
            "/conversations/{id}",
            put(conversations::put)
                .get(conversations::get)
                .delete(conversations::delete),
        ),
        (
            "/conversations/{id}/active-call",
            get(conversations::active_call),
        ),
        ("/calls", post(calls::initiate).get(history::list)),
        ("/calls/stats", get(history::stats)),
        ("/calls/{id}", get(calls::get)),
        ("/calls/{id}/accept", post(calls::accept)),
        ("/calls/{id}/reject", post(calls::reject)),
        ("/calls/{id}/join", post(calls::join)),
        ("/calls/{id}/leave", post(calls::leave)),
        ("/calls/{id}/end", post(calls::end)),
        ("/calls/{id}/media", patch(calls::media)),
        ("/calls/{id}/quality", get(history::quality)),
        ("/ice-servers", get(ice::ice_servers)),
        ("/admin/drain", post(drain::drain)),
        ("/admin/calls", get(admin::calls)),
        ("/admin/nodes", get(admin::nodes)),
        (
            "/calls/{id}/participants/{user}/remove",
            post(admin::remove),
        ),
        ("/calls/{id}/participants/{user}/mute", post(admin::mute)),
        ("/calls/{id}/admin-actions", get(admin::actions)),
    ];
    // The dev token route exists only in --dev: without it, there is nothing to probe.
    if state.settings.dev {
        routes.push(("/dev/token", post(dev::token)));
    }
    routes
}
