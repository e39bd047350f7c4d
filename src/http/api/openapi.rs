//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every route this server serves,
//! generated from the handlers' `#[utoipa::path]` annotations and the types' schema derives.
//!
//! The document is built once, when the router is: from the annotations of every route that
//! exists in any mode, it keeps exactly the operations of this router's route list, so
//! `/dev/token` appears only under `serve --dev`. It needs no token: it says what the API is,
//! nothing about who uses it, and a client generator must be able to read it before signing in.
//! The WebSocket's messages are not OpenAPI operations; `/ws` points to `docs/api.md` section 8.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Extension;
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use confab_signaling::ErrorCode;
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{admin, calls, conversations, dev, drain, history, ice};

/// The served document, serialized once.
#[derive(Clone)]
pub struct Document(Arc<Vec<u8>>);

impl Document {
    /// The document of the routes in `table`; an annotated operation that is not in the table
    /// is left out, and one in the table without an annotation is simply missing (which
    /// `tests/openapi.rs` refuses).
    pub fn build(table: &[(Method, String)]) -> Document {
        let full = serde_json::to_value(ServerApi::openapi()).unwrap_or_default();
        let bytes = serde_json::to_vec(&keep_only(full, table)).unwrap_or_default();
        Document(Arc::new(bytes))
    }
}

fn keep_only(mut document: Value, table: &[(Method, String)]) -> Value {
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if let Some(item) = item.as_object_mut() {
                item.retain(|method, _| {
                    table
                        .iter()
                        .any(|(m, p)| p == path && m.as_str().eq_ignore_ascii_case(method))
                });
            }
        }
        paths.retain(|_, item| item.as_object().is_some_and(|o| !o.is_empty()));
    }
    document
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    summary = "This document",
    description = "The OpenAPI 3.1 document of every route this server serves, built at startup. \
        Needs no token.",
    security(()),
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
)]
pub async fn document(Extension(document): Extension<Document>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        document.0.as_ref().clone(),
    )
        .into_response()
}

/// The error code of contract section 3: exactly the names of [`ErrorCode::ALL`].
pub struct ErrorCodeName;

impl PartialSchema for ErrorCodeName {
    fn schema() -> RefOr<Schema> {
        let statuses: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("`{}` {}", c.as_str(), c.http_status()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "The contract's error code; each has one HTTP status: {}.",
                statuses.join(", ")
            )))
            .into()
    }
}

impl ToSchema for ErrorCodeName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

/// The body of every refusal, REST or WebSocket: `{"error": {"code", "message", "details"?}}`,
/// as [`crate::http::error::ApiError`] writes it.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorObject,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorObject {
    code: ErrorCodeName,
    /// A sentence for people; not meant to be parsed.
    message: String,
    /// Machine-readable details where the contract asks for them, e.g. `{"call_id"}` with
    /// `ACTIVE_CALL_EXISTS` and `USER_BUSY`.
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// The REST API, under `/api/v1`.
#[derive(OpenApi)]
#[openapi(
    paths(
        conversations::put,
        conversations::get,
        conversations::delete,
        conversations::active_call,
        calls::initiate,
        history::list,
        history::stats,
        calls::get,
        calls::accept,
        calls::reject,
        calls::join,
        calls::leave,
        calls::end,
        calls::media,
        history::quality,
        ice::ice_servers,
        drain::drain,
        admin::calls,
        admin::nodes,
        admin::remove,
        admin::mute,
        admin::actions,
        dev::token,
        document,
    ),
    components(schemas(ErrorBody, ErrorCodeName))
)]
struct RestApi;

/// The whole server: health, metrics and the WebSocket beside the REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Confab",
        description = "Self-hosted SFU media server with integrated call signaling. The wire \
            contract is described in docs/api.md; errors are `Error` objects whose `code` \
            fixes the HTTP status. Routes marked admin-only need a token with the admin claim.",
    ),
    paths(
        crate::http::health::healthz,
        crate::http::health::readyz,
        crate::http::metrics::metrics,
        crate::ws::upgrade,
    ),
    nest((path = "/api/v1", api = RestApi)),
    security(("bearer" = [])),
    modifiers(&SecuritySchemes),
)]
struct ServerApi;

/// `bearer`: the JWT of `Authorization: Bearer` (docs/api.md section 3); `query_token`: the
/// same JWT as `?token=`, for the WebSocket, which browsers open without headers.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}
