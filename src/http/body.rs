//! Every request body is read, up to the REST limit, before the request reaches its route.
//!
//! hyper keeps a connection alive only when the request's body was read to its end. A request
//! refused before its handler read the body (no token, no right, no such route) would close the
//! connection while the client is still sending it, and the client would see a broken pipe
//! instead of the answer, on that request and on the next one it had queued on the connection.
//! REST bodies are small, so the whole body is read here and handed on in memory. A body over the
//! limit is answered `PAYLOAD_TOO_LARGE` at once with `Connection: close`; the lingering close of
//! [`super::linger`] then lets the client finish sending and read that answer.

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

/// Middleware: reads the body (at most [`REST_BODY_LIMIT`] bytes), then runs the route on it.
pub async fn read_body_first(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if declared_length(&parts).is_some_and(|n| n > REST_BODY_LIMIT as u64) {
        return closing(too_large());
    }
    let mut data = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return closing(ApiError::invalid_argument(format!(
                    "cannot read request body: {e}"
                )));
            }
        };
        if bytes.len() + chunk.len() > REST_BODY_LIMIT {
            return closing(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
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
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
