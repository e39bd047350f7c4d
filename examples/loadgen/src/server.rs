//! The server under test: a running process given by pid, or a `confab serve` started here with a
//! temporary SQLite database.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("the server did not print its address: {0}")]
    NoAddress(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A server this process started; killed on drop.
pub struct SpawnedServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl SpawnedServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `confab serve` on an ephemeral port and waits for its `listening on` line.
    pub fn start(
        binary: &Path,
        secret: &str,
        max_participants: usize,
        extra: &[String],
    ) -> Result<Self, ServerError> {
        let dir = tempfile::tempdir()?;
        let db = format!("sqlite://{}/confab.db", dir.path().display());
        let mut child = Command::new(binary)
            .arg("serve")
            .args(["--jwt-secret", secret])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--rtc-udp-port", "0"])
            .args(["--database-url", &db])
            .args(["--max-participants", &max_participants.to_string()])
            .args(extra)
            // Quiet unless the caller asks for the server's log (say `error,rtc_dtls=debug`).
            .env(
                "CONFAB_LOG",
                std::env::var("CONFAB_LOG").unwrap_or_else(|_| "error".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| ServerError::Spawn(binary.to_owned(), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ServerError::NoAddress("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find("listening on ") {
                    let url = line[at + "listening on ".len()..].trim().to_owned();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| {
                let _ = child.kill();
                ServerError::NoAddress("no `listening on` line within 30 s".into())
            })?;
        Ok(Self {
            child,
            url,
            _dir: dir,
        })
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `confab` binary next to this executable, where `cargo build` puts both.
pub fn sibling_binary() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let path = me.parent()?.join("confab");
    path.exists().then_some(path)
}
