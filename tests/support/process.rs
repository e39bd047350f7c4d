//! The real `confab` binary as a child process: for what only a process shows (its exit
//! status, signals, the `listening on` line, its stderr).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_confab");

/// `confab` with no `CONFAB_*` variable of the test's environment: settings come only from
/// what each test passes.
pub fn confab() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running `confab serve`, killed on drop.
pub struct Serving {
    pub child: Child,
    /// `http://ADDR` from its `listening on` line.
    pub base: String,
}

impl Serving {
    /// Starts `cmd` (a `confab serve …`) with stdout piped, and reads the `listening on
    /// http://ADDR` line it prints first.
    pub fn start(cmd: &mut Command) -> Serving {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("confab starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Serving { child, base }
    }

    /// Sends the signal `name` (e.g. `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit (polling, so the test's runtime keeps running).
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "confab did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
