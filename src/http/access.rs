//! The access log: one line per HTTP request, under its own target so that it can be turned
//! down without touching the rest (`CONFAB_LOG=info,confab::access=warn`).
//!
//! A line carries the method, the route template (never the raw path), the status, the time
//! taken and the user whose token verified. Tokens themselves are never logged.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::Method;

/// Filled in by whatever verified the request's token, read when the line is written.
#[derive(Clone, Default)]
pub struct AccessUser(Arc<OnceLock<String>>);

impl AccessUser {
    pub fn set(&self, user: &str) {
        let _ = self.0.set(user.to_owned());
    }

    fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Probes and scrapes come every few seconds and say nothing about users: `debug` only.
fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

pub fn log(method: &Method, route: &str, status: u16, took: Duration, user: &AccessUser) {
    let method = method.as_str();
    let duration_ms = (took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let user = user.get();
    if is_probe(route) {
        tracing::debug!(target: "confab::access", method, route, status, duration_ms, user, "request");
    } else {
        tracing::info!(target: "confab::access", method, route, status, duration_ms, user, "request");
    }
}
