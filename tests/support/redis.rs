//! A throwaway Redis server for tests: `redis-server` on 127.0.0.1 and a free port, without
//! persistence, in a temporary directory; killed on drop.
//!
//! A missing `redis-server` fails the test with a message saying how to get one (`.ci/run`
//! installs it), rather than skipping it.

// Test crates include this file and each may use only part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Overrides the `redis-server` found on `PATH`.
pub const REDIS_SERVER_VAR: &str = "CONFAB_REDIS_SERVER";

/// How long a starting server may take before the test gives up on it: a bound for failing,
/// not a performance claim.
const START_LIMIT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        // A port found free may be taken by the time the server binds it: try a few.
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("a temporary directory"),
            };
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports; see its log above");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (there is no persistence).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn_and_wait(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns the server; true once it answers, false if it exited (e.g. its port was taken).
    fn spawn_and_wait(&mut self) -> bool {
        let program = std::env::var(REDIS_SERVER_VAR).unwrap_or_else(|_| "redis-server".into());
        let log = self.dir.path().join("redis.log");
        let port = self.port.to_string();
        let spawned = Command::new(&program)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "{program:?} not found: these tests need a Redis server. Install it \
                 (`apt-get install redis-server`; .ci/run does) or set {REDIS_SERVER_VAR}"
            ),
            Err(e) => panic!("cannot start {program:?}: {e}"),
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!("redis-server on port {port} exited ({status}):\n{text}");
                return false;
            }
            if answers_ping(self.port) {
                self.child = Some(child);
                return true;
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {port} did not answer PING");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One `PING` over a plain socket, so that readiness does not depend on the client under test.
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
