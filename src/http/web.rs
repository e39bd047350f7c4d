//! Static files embedded in the binary: the browser client of `examples/sdk/` at `/sdk/*`
//! on every server (a host application loads or bundles it from there), and the demo meeting
//! page of `examples/web/` at `/` (and its files) only under `serve --dev`. Any other path
//! still falls through to the JSON 404.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::app::AppState;
use crate::http::route::Route;

/// The page's files. `debug-embed` embeds them in debug builds too, so the binary serves the
/// page from any working directory; the end-to-end tests and their `node_modules` stay out.
#[derive(RustEmbed)]
#[folder = "examples/web/"]
#[exclude = "tests/*"]
#[exclude = "tests/**/*"]
#[exclude = "*.md"]
struct Assets;

/// The browser client package: its module and its type declarations, nothing else of the
/// folder (package.json, the README and the type check stay out).
#[derive(RustEmbed)]
#[folder = "examples/sdk/"]
#[include = "confab.js"]
#[include = "confab.d.ts"]
struct Sdk;

/// How long a browser or proxy may reuse the client without asking again; the `ETag` makes
/// the question after that cheap.
const SDK_CACHE: &str = "public, max-age=300";

/// Routes for the client package under `/sdk/` (always) and, with `--dev`, every file of the
/// demo page, `/` being `index.html`.
pub fn routes(state: &AppState) -> Vec<Route> {
    let mut routes: Vec<Route> = Sdk::iter()
        .map(|path| {
            let path = path.into_owned();
            let route = format!("/sdk/{path}");
            Route::get(route, move |headers: HeaderMap| {
                serve_sdk(path.clone(), headers)
            })
        })
        .collect();
    if !state.settings.dev {
        return routes;
    }
    routes.extend(Assets::iter().map(|path| {
        let path = path.into_owned();
        let route = if path == "index.html" {
            "/".to_owned()
        } else {
            format!("/{path}")
        };
        Route::get(route, move || serve(path.clone()))
    }));
    routes
}

/// One file of the client package, cacheable, with a strong `ETag` from its content hash;
/// a matching `If-None-Match` gets `304 Not Modified`.
async fn serve_sdk(path: String, headers: HeaderMap) -> Response {
    let Some(file) = Sdk::get(&path) else {
        // The route table is built from the same embedded set, so this cannot happen.
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = etag(&file.metadata.sha256_hash());
    let Ok(etag_value) = HeaderValue::from_str(&etag) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let cache = [
        (CACHE_CONTROL, HeaderValue::from_static(SDK_CACHE)),
        (ETAG, etag_value),
    ];
    let unchanged = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        [(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)))],
        cache,
        file.data.into_owned(),
    )
        .into_response()
}

/// A quoted strong entity tag from the first 16 bytes of a SHA-256 hash.
fn etag(hash: &[u8; 32]) -> String {
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

async fn serve(path: String) -> Response {
    match Assets::get(&path) {
        Some(file) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
                (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            file.data.into_owned(),
        )
            .into_response(),
        // The route table is built from the same embedded set, so this cannot happen.
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("ts") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_the_page_without_its_tests() {
        let files: Vec<String> = Assets::iter().map(|p| p.into_owned()).collect();
        for needed in ["index.html", "app.js", "style.css"] {
            assert!(
                files.iter().any(|f| f == needed),
                "{needed} missing: {files:?}"
            );
        }
        assert!(files.iter().all(|f| !f.starts_with("tests/")), "{files:?}");
    }

    #[test]
    fn embeds_only_the_client_and_its_types() {
        let mut files: Vec<String> = Sdk::iter().map(|p| p.into_owned()).collect();
        files.sort();
        assert_eq!(files, ["confab.d.ts", "confab.js"]);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("confab.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }
}
