//! The `confab` binary itself: subcommands, settings precedence and the listening line.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::{Serving, confab};

/// Starts the server and reads the `listening on http://ADDR` line it prints.
fn serve(cmd: &mut Command) -> Serving {
    Serving::start(cmd.stderr(Stdio::null()))
}

fn get(url: &str) -> (u16, String) {
    get_with(url, None)
}

/// A blocking GET, optionally with a bearer token.
fn get_with(url: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    })
}

#[test]
fn token_prints_a_jwt_that_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = confab()
        .args([
            "token", "--user", "alice", "--name", "Alice", "--ttl", "10m",
        ])
        .env("CONFAB_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let server = serve(
        confab()
            .args(["serve", "--http-addr", ":0", "--rtc-udp-port", "0"])
            .args(["--database-url", &db, "--jwt-secret", "cli-secret"]),
    );
    let (status, body) = get(&format!("{}/api/v1/calls", server.base));
    assert_eq!(status, 401, "{body}");
    let (status, body) = get_with(&format!("{}/api/v1/calls", server.base), Some(&token));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn token_without_a_secret_fails_clearly() {
    let out = confab()
        .args(["token", "--user", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CONFAB_JWT_SECRET"), "{stderr}");
    let out = confab()
        .args(["token", "--user", "not valid", "--jwt-secret", "s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn serve_refuses_to_start_without_a_key_unless_dev() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let out = confab()
        .args(["serve", "--http-addr", ":0", "--database-url", &db])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT"));

    // --dev generates a secret and opens the dev token route.
    let server = serve(
        confab()
            .args(["serve", "--dev", "--http-addr", ":0", "--rtc-udp-port", "0"])
            .args(["--database-url", &db]),
    );
    let (status, _) = get(&format!("{}/healthz", server.base));
    assert_eq!(status, 200);
}

#[test]
fn webhook_urls_without_a_secret_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("w.db").display());
    let out = confab()
        .args(["serve", "--http-addr", ":0", "--database-url", &db])
        .args(["--jwt-secret", "s"])
        .env("CONFAB_WEBHOOK_URLS", "http://127.0.0.1:9/hook")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("webhook_secret"), "{stderr}");
}

#[test]
fn flags_beat_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_db = dir.path().join("from-file.db");
    let env_db = dir.path().join("from-env.db");
    let config = dir.path().join("confab.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:1\"\ndatabase_url = \"sqlite://{}\"\njwt_secret = \"file-secret\"\nrtc_udp_port = 0\n",
            file_db.display()
        ),
    )
    .unwrap();
    // The file's port 1 is overridden by the flag; its database by the environment.
    let server = serve(
        confab()
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--http-addr", "127.0.0.1:0"])
            .env(
                "CONFAB_DATABASE_URL",
                format!("sqlite://{}", env_db.display()),
            ),
    );
    let (status, _) = get(&format!("{}/readyz", server.base));
    assert_eq!(status, 200);
    assert!(env_db.exists(), "the environment's database was used");
    assert!(!file_db.exists(), "the file's database was not");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_setting = 1\n").unwrap();
    let out = confab()
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_setting"));
}

#[test]
fn migrate_applies_the_schema_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let db = format!("sqlite://{}", path.display());
    for _ in 0..2 {
        let out = confab()
            .args(["migrate", "--database-url", &db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(path.exists());
}

/// Runs `confab health` with the given arguments.
fn health(args: &[&str]) -> std::process::Output {
    confab()
        .arg("health")
        .args(args)
        .output()
        .expect("confab health runs")
}

#[test]
fn health_exits_0_on_a_ready_server_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let server = serve(
        confab()
            .args(["serve", "--http-addr", ":0", "--rtc-udp-port", "0"])
            .args(["--database-url", &db, "--jwt-secret", "s"]),
    );
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();

    // The configured http_addr, as the image's HEALTHCHECK uses it (env, not flags).
    let out = confab()
        .arg("health")
        .env("CONFAB_HTTP_ADDR", &addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/readyz: 200"), "{stdout}");

    // A wildcard listen address is probed on loopback.
    let port = addr.rsplit(':').next().unwrap();
    let out = health(&["--http-addr", &format!("0.0.0.0:{port}")]);
    assert!(out.status.success());

    // Anything but 200 is unhealthy.
    let out = health(&["--url", &format!("{}/no-such-route", server.base)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");

    // So is a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let out = health(&["--http-addr", &closed_addr.to_string(), "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&closed_addr.to_string()), "{stderr}");
}

#[test]
fn the_example_config_starts_as_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/confab.example.toml");
    // Only what would collide with other tests or needs a host's paths is overridden: the
    // listen port, the database file and the media port. The media sockets are kept on
    // loopback as every test's are; the example's wildcard bind is announced through the
    // default route (src/announce.rs tests that lookup).
    let server = serve(
        confab()
            .args(["serve", "--config", example])
            .args(["--http-addr", "127.0.0.1:0", "--database-url", &db])
            .args(["--rtc-udp-port", "0", "--rtc-bind-ip", "127.0.0.1"]),
    );
    let (status, body) = get(&format!("{}/readyz", server.base));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_kubernetes_config_map_starts() {
    // The settings file deploy/k8s/configmap.yaml mounts: its block under `confab.toml: |`.
    let manifest = include_str!("../deploy/k8s/configmap.yaml");
    let toml: String = manifest
        .lines()
        .skip_while(|l| l.trim() != "confab.toml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(toml.contains("http_addr"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("confab.toml");
    std::fs::write(&config, toml).unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    // As the Deployment runs it, with the Secret's settings from the environment; the ports
    // and the media bind stay on loopback here.
    let server = serve(
        confab()
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--http-addr", "127.0.0.1:0", "--rtc-udp-port", "0"])
            .args(["--rtc-bind-ip", "127.0.0.1"])
            .env("CONFAB_JWT_SECRET", "k8s-secret")
            .env("CONFAB_DATABASE_URL", &db),
    );
    let (status, body) = get(&format!("{}/readyz", server.base));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn redis_with_sqlite_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let out = confab()
        .args(["serve", "--http-addr", ":0", "--jwt-secret", "s"])
        .args(["--database-url", &db])
        .env("CONFAB_REDIS_URL", "redis://127.0.0.1:6379")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redis_url") && stderr.contains("postgres://"),
        "{stderr}"
    );
    assert!(!dir.path().join("r.db").exists(), "nothing was started");

    let out = confab()
        .args(["token", "--user", "alice", "--jwt-secret", "s"])
        .args(["--node-id", "not an id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id"));
}
