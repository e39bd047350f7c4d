//! Every request body is read, up to the REST limit, before the request reaches its route.
//!
//! hyper keeps a connection alive only when the request's body was read to its end. A request
//! refused before its handler read the body (no token, no right, no such route) would close the
//! connection while the client is still sending it, and the client would see a broken pipe
//! instead of the answer, on that request and on the next one it had queued on the connection.
//! REST bodies are small, so the whole body is read here, before even CORS answers a preflight,
//! and handed on in memory. A body over the limit is answered `PAYLOAD_TOO_LARGE` as soon as the
//! limit is passed, with `Connection: close`; the lingering close of [`super::linger`] then lets
//! the client finish sending and read that answer.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use confab_signaling::ErrorCode;
use futures_util::StreamExt;

use super::REST_BODY_LIMIT;
use super::error::ApiError;

/// Marks a request whose body was over the limit: it goes on with an empty body, and
/// [`refuse_too_large`] answers it once routed.
#[derive(Clone, Copy)]
struct BodyTooLarge;

/// Outermost middleware: reads the body (at most [`REST_BODY_LIMIT`] bytes) before anything
/// answers, CORS preflights included, then runs the rest on it. The answer to a body over the
/// limit closes the connection, since the rest of that body is never read.
pub async fn read_body_first(req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let bytes = if declared_length(&parts).is_some_and(|n| n > REST_BODY_LIMIT as u64) {
        None
    } else {
        match read_up_to_limit(body).await {
            Ok(bytes) => bytes,
            Err(e) => return closing(e.into_response()),
        }
    };
    let Some(bytes) = bytes else {
        parts.extensions.insert(BodyTooLarge);
        let response = next.run(Request::from_parts(parts, Body::empty())).await;
        return closing(response);
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Inner middleware, inside CORS and the request metrics: the answer to a marked request.
pub async fn refuse_too_large(req: Request, next: Next) -> Response {
    if req.extensions().get::<BodyTooLarge>().is_some() {
        return too_large().into_response();
    }
    next.run(req).await
}

/// The whole body, or `None` once it passes the limit.
async fn read_up_to_limit(body: Body) -> Result<Option<Vec<u8>>, ApiError> {
    let mut data = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid_argument(format!("cannot read request body: {e}")))?;
        if bytes.len() + chunk.len() > REST_BODY_LIMIT {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {} KiB", REST_BODY_LIMIT / 1024),
    )
}

/// The rest of the body is not read, so the connection cannot carry another request.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
