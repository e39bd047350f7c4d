//! The demo meeting page of `examples/web/`, embedded in the binary and served at `/` (and
//! its files) only under `serve --dev`. Any other path still falls through to the JSON 404.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
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

/// Routes for every embedded file, `/` being `index.html`; none without `--dev`.
pub fn routes(state: &AppState) -> Vec<Route> {
    if !state.settings.dev {
        return Vec::new();
    }
    Assets::iter()
        .map(|path| {
            let path = path.into_owned();
            let route = if path == "index.html" {
                "/".to_owned()
            } else {
                format!("/{path}")
            };
            Route::get(route, move || serve(path.clone()))
        })
        .collect()
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
        for needed in ["index.html", "app.js", "confab.js", "style.css"] {
            assert!(
                files.iter().any(|f| f == needed),
                "{needed} missing: {files:?}"
            );
        }
        assert!(files.iter().all(|f| !f.starts_with("tests/")), "{files:?}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("confab.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }
}
