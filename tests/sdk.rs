//! The browser client package at `/sdk/`: served by every server, not only under `--dev`,
//! byte for byte the file in `examples/sdk/`, cacheable, and with the CORS of the rest.

mod support;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use support::db::TestDb;
use support::server::TestServer;

const CLIENT: &[u8] = include_bytes!("../examples/sdk/confab.js");
const TYPES: &[u8] = include_bytes!("../examples/sdk/confab.d.ts");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_serves_the_client_and_its_types() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.dev = false).await;

    let resp = server
        .http
        .get(server.url("/sdk/confab.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "public, max-age=300");
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
        "{etag}"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), CLIENT);

    // A cached copy is revalidated without a body; a stale one gets the file again.
    let resp = server
        .http
        .get(server.url("/sdk/confab.js"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()[ETAG].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = server
        .http
        .get(server.url("/sdk/confab.js"))
        .header(IF_NONE_MATCH, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), CLIENT);

    let resp = server
        .http
        .get(server.url("/sdk/confab.d.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), TYPES);

    // A host application on another origin may load it (CORS as the REST API).
    let resp = server
        .http
        .get(server.url("/sdk/confab.js"))
        .header("Origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");

    // Nothing else of the package folder, and still no demo page without --dev.
    for path in [
        "/",
        "/app.js",
        "/confab.js",
        "/sdk/package.json",
        "/sdk/README.md",
        "/sdk/types-check/usage.ts",
        "/sdk/",
    ] {
        let resp = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Requests are counted under the file's own route.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("confab_http_requests_total{route=\"/sdk/confab.js\",status=\"200\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_page_loads_the_same_client() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.dev = true).await;
    let app = server
        .http
        .get(server.url("/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        app.contains("from '../sdk/confab.js'"),
        "app.js imports the package"
    );
    let resp = server
        .http
        .get(server.url("/sdk/confab.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), CLIENT);
}
