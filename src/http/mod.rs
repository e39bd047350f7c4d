//! HTTP wiring: the REST API under `/api/v1`, the signaling WebSocket at `/ws`, health,
//! metrics, and the layers every request passes through (reading the body up to its limit,
//! CORS, request metrics), outermost last.

pub mod access;
pub mod api;
mod body;
pub mod error;
pub mod extract;
pub(crate) mod health;
pub mod linger;
pub(crate) mod metrics;
pub mod route;
mod web;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use confab_signaling::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::config::AllowedOrigins;
use error::ApiError;
use route::Route;

/// REST bodies larger than this are refused with `PAYLOAD_TOO_LARGE` (contract section 3).
pub const REST_BODY_LIMIT: usize = 64 * 1024;

/// Every route of the API with its handlers: the REST API under `/api/v1`, health, metrics and
/// the WebSocket. The demo page's files (in `--dev`) are not among them: they are static files,
/// not API, and are added by [`router`] alone.
fn routes(state: &AppState) -> Vec<Route> {
    let mut routes: Vec<Route> = api::routes(state)
        .into_iter()
        .map(|route| route.nested("/api/v1"))
        .collect();
    routes.push(Route::get("/healthz", health::healthz));
    routes.push(Route::get("/readyz", health::readyz));
    routes.push(Route::get("/metrics", metrics::metrics));
    routes.push(Route::get("/ws", crate::ws::upgrade));
    routes
}

/// The method and template of every API route this server serves, from the same list the
/// router is built from; `GET /api/v1/openapi.json` must describe each of them.
pub fn route_table(state: &AppState) -> Vec<(Method, String)> {
    routes(state)
        .into_iter()
        .map(|route| (route.method, route.path))
        .collect()
}

pub fn router(state: AppState) -> Router {
    let routes = routes(&state);
    let table: Vec<(Method, String)> = routes
        .iter()
        .map(|route| (route.method.clone(), route.path.clone()))
        .collect();
    let document = api::openapi::Document::build(&table);
    let mut router = Router::new();
    let mut paths: Vec<String> = Vec::new();
    for route in routes.into_iter().chain(web::routes(&state)) {
        if !paths.contains(&route.path) {
            paths.push(route.path.clone());
        }
        // Routes on one path with different methods merge into one method router.
        router = router.route(&route.path, route.handler);
    }
    state
        .metrics
        .register_routes(paths.iter().map(String::as_str));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(REST_BODY_LIMIT))
        .layer(middleware::from_fn(body::refuse_too_large))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(cors(&state.settings.allowed_origins))
        .layer(middleware::from_fn(body::read_body_first))
        .with_state(state)
}

fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let allow_origin = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    // Tokens travel in the Authorization header, never in cookies, so credentials mode stays off.
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
}

/// Counts every request by its route template (never the raw path, which would let clients
/// mint label values) and status, times it, and writes its access log line.
async fn record_request(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let user = access::AccessUser::default();
    req.extensions_mut().insert(user.clone());
    let started = Instant::now();
    let response = next.run(req).await;
    access::log(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
        &user,
    );
    let metrics = &state.metrics;
    metrics
        .http_request_duration_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests_total
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "method not allowed on this route")
}
