//! `GET /api/v1/openapi.json` of a real server: an OpenAPI 3.1 document that `oas3` parses,
//! that describes every route of the router's own list (and no other), whose references all
//! resolve, and whose error schema lists every contract code.

mod support;

use std::collections::BTreeSet;

use confab::http::route_table;
use confab_signaling::ErrorCode;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::db::TestDb;
use support::server::TestServer;

/// Fetches the document without a token: it needs none.
async fn fetch(server: &TestServer) -> (String, Value) {
    let resp = server
        .http
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    let json: Value = serde_json::from_str(&text).expect("the document is JSON");
    (text, json)
}

/// Every operation of the document, as (METHOD, path).
fn documented(json: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in json["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            operations.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    operations
}

/// Every route of the router is documented and the document has no route the router lacks;
/// the message names each route that is missing, so a new route says what it needs.
fn assert_matches_router(server: &TestServer, json: &Value) {
    let routes: BTreeSet<(String, String)> = route_table(&server.state)
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path))
        .collect();
    let documented = documented(json);
    let undocumented: Vec<String> = routes
        .difference(&documented)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes without an OpenAPI operation (add #[utoipa::path] to the handler and list it \
         in src/http/api/openapi.rs): {undocumented:?}"
    );
    let extra: Vec<String> = documented
        .difference(&routes)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        extra.is_empty(),
        "documented operations this server does not serve: {extra:?}"
    );
}

/// Every `$ref` anywhere in the document points at a component that exists.
fn assert_refs_resolve(json: &Value, at: &Value) {
    match at {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {reference}"));
                assert!(json.pointer(pointer).is_some(), "dangling $ref {reference}");
            }
            map.values().for_each(|v| assert_refs_resolve(json, v));
        }
        Value::Array(items) => items.iter().for_each(|v| assert_refs_resolve(json, v)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_describes_every_route_and_parses_as_openapi_3_1() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let (text, json) = fetch(&server).await;

    let version = json["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    assert_matches_router(&server, &json);
    assert!(
        !documented(&json).contains(&("POST".to_owned(), "/api/v1/dev/token".to_owned())),
        "the dev token route is documented only where it exists"
    );
    assert_refs_resolve(&json, &json);
    let mut ids = BTreeSet::new();
    for item in json["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("path item").values() {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} is not unique");
        }
    }

    // An OpenAPI 3.1 library reads it, finds each route's operation and resolves each
    // response's and request body's schema.
    let spec = oas3::from_json(&text).expect("oas3 parses the document");
    spec.validate_version()
        .expect("a 3.1 version oas3 supports");
    for (method, path) in route_table(&server.state) {
        let operation = spec
            .operation(&method, &path)
            .unwrap_or_else(|| panic!("oas3 finds no operation {method} {path}"));
        let responses = operation.responses.as_ref().expect("responses");
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, response) in responses {
            let response = response
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
            for media in response.content.values() {
                if let Some(schema) = &media.schema {
                    schema
                        .resolve(&spec)
                        .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
                }
            }
        }
        if let Some(body) = &operation.request_body {
            let body = body.resolve(&spec).expect("request body resolves");
            for media in body.content.values() {
                if let Some(schema) = &media.schema {
                    schema.resolve(&spec).expect("request schema resolves");
                }
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn errors_are_one_schema_listing_every_contract_code() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let (_, json) = fetch(&server).await;
    let schemas = &json["components"]["schemas"];
    let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, expected);
    let error = &schemas["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));

    // Every 4xx/5xx answer of every operation is that schema.
    for (path, item) in json["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if status.starts_with('4') || status.starts_with('5') {
                    if path == "/readyz" && status == "503" {
                        continue; // readiness answers its own body when not ready
                    }
                    let reference = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        reference, "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // Admin-only routes say so, and routes that need a token declare the bearer scheme.
    assert!(
        json["paths"]["/api/v1/admin/drain"]["post"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Admin only"))
    );
    assert_eq!(
        json["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );
    assert_eq!(json["security"], serde_json::json!([{ "bearer": [] }]));
    server.stop().await;
}

#[tokio::test]
async fn in_dev_mode_the_document_has_the_dev_token_route() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.dev = true).await;
    let (_, json) = fetch(&server).await;
    assert_matches_router(&server, &json);
    let operation = &json["paths"]["/api/v1/dev/token"]["post"];
    assert!(operation.is_object(), "{operation}");
    assert_eq!(operation["security"], serde_json::json!([{}]));
    // The demo page's files are served but are not API.
    let (status, _) = server.request(Method::GET, "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["paths"].get("/").is_none());
    server.stop().await;
}
