//! An in-process Confab server on 127.0.0.1:0 and a small JSON client for it.

#![allow(dead_code)]

use std::time::Duration;

use confab::app::{AppState, Server};
use confab::config::Settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::db::TestDb;

pub const SECRET: &str = "test-secret-for-confab";

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    /// Starts a server on `db` after `tweak` adjusts the default test settings.
    pub async fn start_with(db: &TestDb, tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let mut settings = Settings::for_tests(&db.url, SECRET);
        tweak(&mut settings);
        let state = AppState::start(settings).await.expect("server starts");
        let server = Server::bind(state.clone()).await.expect("server binds");
        let base = format!("http://{}", server.local_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            base,
            state,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and closes the store, as a process exit would.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("response body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Sends raw bytes, for malformed and oversized bodies.
    pub async fn post_raw(&self, path: &str, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// The Prometheus text of `/metrics` (no token configured).
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }

    /// Starts a call and returns its id, asserting it was created.
    pub async fn call(&self, caller: &str, body: Value) -> String {
        let (status, body) = self.post("/api/v1/calls", caller, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["call"]["id"].as_str().expect("call id").to_owned()
    }

    /// Creates or replaces a conversation with an admin token.
    pub async fn conversation(&self, id: &str, members: &[&str]) {
        let (status, body) = self
            .put(
                &format!("/api/v1/conversations/{id}"),
                &admin(),
                json!({ "name": id, "members": members }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    admin: bool,
}

fn sign(secret: &str, sub: &str, exp_offset_s: i64, admin: bool) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub,
        exp: now + exp_offset_s,
        name: Some(sub),
        admin,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signs")
}

/// A valid token for `user` (display name = user id).
pub fn token(user: &str) -> String {
    sign(SECRET, user, 3600, false)
}

pub fn admin() -> String {
    sign(SECRET, "host-app", 3600, true)
}

pub fn expired(user: &str) -> String {
    sign(SECRET, user, -3600, false)
}

pub fn wrongly_signed(user: &str) -> String {
    sign("some-other-secret", user, 3600, false)
}

/// The error code of a contract error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
