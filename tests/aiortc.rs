//! Interop with a second WebRTC stack, aiortc (Python), as it ships: no ICE servers, max-bundle,
//! host addresses on 127.0.0.1, nothing else. An aiortc peer and a webrtc-rs bot share a direct
//! call through an in-process Confab, each publishing audio and video and receiving the other's;
//! and three aiortc peers share a group call, each receiving the other two.
//!
//! Needs the venv that `.ci/run` builds from `examples/aiortc/requirements.txt`:
//!
//! ```sh
//! python3 -m venv .venv/aiortc && .venv/aiortc/bin/pip install -r examples/aiortc/requirements.txt
//! CONFAB_AIORTC_PYTHON=$PWD/.venv/aiortc/bin/python cargo test --test aiortc -- --ignored
//! ```

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_bot::participant::BotParticipant;
use serde_json::{Value, json};
use support::db::TestDb;
use support::server::{TestServer, token};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The aiortc participant (it initiates the call).
const PY_USER: &str = "carol";
/// The webrtc-rs bot (it accepts).
const BOT_USER: &str = "bob";
/// How long aiortc publishes and counts after joining.
const PY_DURATION_S: u64 = 10;
/// Upper bound for the whole exchange; the child is killed past it.
const OVERALL: Duration = Duration::from_secs(90);
/// Packets each side must receive of each kind (about 1.5 s of either stream).
const MIN_PACKETS: u64 = 50;

/// Packets `bot` received from `publisher`'s tracks: (audio, video).
fn bot_received_from(bot: &BotParticipant, publisher: &str) -> (u64, u64) {
    let (mut audio, mut video) = (0, 0);
    for track in bot.subscriber.tracks() {
        if track.stream_id != publisher {
            continue;
        }
        match format!("{:?}", track.kind).to_lowercase().as_str() {
            "audio" => audio += track.packets,
            _ => video += track.packets,
        }
    }
    (audio, video)
}

/// What aiortc received from one publisher's tracks of one kind.
#[derive(Debug, Default, Clone, Copy)]
struct Received {
    rtp_packets: u64,
    frames_assembled: u64,
    frames_decoded: u64,
}

/// Sums aiortc's per-track report over the tracks of `publisher`: (audio, video).
fn aiortc_received_from(result: &Value, publisher: &str) -> (Received, Received) {
    let (mut audio, mut video) = (Received::default(), Received::default());
    for track in result["tracks"].as_array().into_iter().flatten() {
        if track["user_id"] != publisher {
            continue;
        }
        let count = |field: &str| track[field].as_u64().unwrap_or(0);
        let slot = if track["kind"] == "audio" {
            &mut audio
        } else {
            &mut video
        };
        slot.rtp_packets += count("rtp_packets");
        slot.frames_assembled += count("frames_assembled");
        slot.frames_decoded += count("frames_decoded");
    }
    (audio, video)
}

/// One line of the interop table: what `receiver` got of `publisher`'s track of `kind`.
struct Row {
    receiver: &'static str,
    publisher: &'static str,
    kind: &'static str,
    received: Received,
    /// Whether the receiver decodes (aiortc) or only counts packets (the bot).
    decodes: bool,
}

impl Row {
    fn aiortc(
        receiver: &'static str,
        publisher: &'static str,
        kind: &'static str,
        received: Received,
    ) -> Self {
        Self {
            receiver,
            publisher,
            kind,
            received,
            decodes: true,
        }
    }
}

/// Prints who received whom (on stderr: shown with `--nocapture` or on failure).
fn print_table(title: &str, rows: &[Row]) {
    eprintln!("{title}");
    eprintln!(
        "{:<10} {:<10} {:<6} {:>12} {:>16} {:>15}",
        "receiver", "publisher", "kind", "rtp packets", "frames assembled", "frames decoded"
    );
    for row in rows {
        let frames = |n: u64| {
            if row.decodes {
                n.to_string()
            } else {
                "-".to_owned()
            }
        };
        eprintln!(
            "{:<10} {:<10} {:<6} {:>12} {:>16} {:>15}",
            row.receiver,
            row.publisher,
            row.kind,
            row.received.rtp_packets,
            frames(row.received.frames_assembled),
            frames(row.received.frames_decoded),
        );
    }
}

/// Collects a child's stream into a shared buffer so failures can show it.
fn capture(stream: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut text) = into.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
}

/// The venv's python, from `CONFAB_AIORTC_PYTHON`.
fn aiortc_python() -> String {
    let python = std::env::var("CONFAB_AIORTC_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CONFAB_AIORTC_PYTHON is not set: point it at the python of a venv with \
             examples/aiortc/requirements.txt installed (.ci/run builds .venv/aiortc)"
        )
    });
    assert!(
        Path::new(&python).exists(),
        "CONFAB_AIORTC_PYTHON={python} does not exist"
    );
    python
}

/// One `examples/aiortc/peer.py` participant: its JSON lines read from stdout, its stderr kept
/// for failure messages.
struct PyPeer {
    user: &'static str,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl PyPeer {
    /// Starts `user`'s peer against `server`, with `args` saying how it gets into a call.
    fn spawn(python: &str, server: &TestServer, user: &'static str, args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aiortc/peer.py");
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--url", &server.base, "--user", user])
            .args(["--token", &token(user)])
            .args(["--timeout", "30", "--log-sdp"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        capture(child.stderr.take().expect("stderr piped"), stderr.clone());
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        Self {
            user,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the peer's `connected` line: its signaling socket is open, so it is rung.
    async fn connected(&mut self) {
        let user = self.user;
        let stdout = &mut self.stdout;
        let found = tokio::time::timeout(OVERALL, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if serde_json::from_str::<Value>(&line).is_ok_and(|e| e["event"] == "connected") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            found == Ok(true),
            "aiortc {user} never connected; its stderr:\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The peer's `result` line, once it has published and counted for its duration; or what
    /// went wrong, with its stderr: an `error` line, no result within [`OVERALL`], a failed exit.
    async fn result(&mut self) -> Result<Value, String> {
        let user = self.user;
        let mut result = Value::Null;
        let mut last_progress = Value::Null;
        let stdout = &mut self.stdout;
        let read = tokio::time::timeout(OVERALL, async {
            while let Some(line) = stdout.next_line().await.expect("reading aiortc's stdout") {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                match event["event"].as_str() {
                    Some("result") => {
                        result = event;
                        break;
                    }
                    Some("error") => return Err(event),
                    Some("progress") => last_progress = event,
                    _ => {}
                }
            }
            Ok(())
        })
        .await;
        let failure = match read {
            Err(_) => Some(format!(
                "gave no result within {OVERALL:?}; last progress: {last_progress}"
            )),
            Ok(Err(event)) => Some(format!("failed: {event}")),
            Ok(Ok(())) if result.is_null() => Some(format!(
                "exited without a result; last progress: {last_progress}"
            )),
            Ok(Ok(())) => None,
        };
        let failure = match failure {
            Some(failure) => Some(failure),
            None => match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
                Err(_) => Some("did not exit after its result".to_owned()),
                Ok(Err(e)) => Some(format!("has no exit status: {e}")),
                Ok(Ok(status)) if !status.success() => Some(format!("exited with {status}")),
                Ok(Ok(_)) => None,
            },
        };
        match failure {
            None => Ok(result),
            Some(failure) => Err(format!(
                "aiortc {user} {failure}\nits stderr:\n{}",
                self.logs()
            )),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the aiortc venv: set CONFAB_AIORTC_PYTHON (see .ci/run)"]
async fn aiortc_and_webrtc_rs_exchange_audio_and_video() {
    let python = aiortc_python();
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let bot = BotParticipant::connect(&server.base, &token(BOT_USER), BOT_USER)
        .await
        .expect("the bot connects");

    let mut py = PyPeer::spawn(
        &python,
        &server,
        PY_USER,
        &[
            "--invite",
            BOT_USER,
            "--duration",
            &PY_DURATION_S.to_string(),
        ],
    );
    let logs = || py.logs();

    // aiortc calls the bot; the bot accepts and publishes, as a browser client would.
    let incoming = bot
        .event("call:incoming", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the bot was never rung by aiortc; its stderr:\n{}", logs()));
    assert_eq!(incoming["caller"]["user_id"], PY_USER, "{incoming}");
    let call_id = incoming["call_id"].as_str().expect("call_id").to_owned();
    bot.request("call:accept", json!({"call_id": call_id}))
        .await
        .expect("the bot accepts");
    let publisher = bot.publish(&call_id).await.expect("the bot publishes");
    let sending = tokio::spawn(async move {
        publisher
            .send_media(Duration::from_secs(PY_DURATION_S + 2))
            .await
    });

    let result = py.result().await.unwrap_or_else(|e| panic!("{e}"));
    let logs = || py.logs();

    // The bot received aiortc's audio and video.
    let (audio_from_py, video_from_py) = bot_received_from(&bot, PY_USER);
    assert!(
        audio_from_py >= MIN_PACKETS && video_from_py >= MIN_PACKETS,
        "the bot got {audio_from_py} audio and {video_from_py} video packets from aiortc; \
         tracks: {:?}\n\
         aiortc stderr:\n{}",
        bot.subscriber.tracks(),
        logs()
    );
    let sources: Vec<(String, String)> = bot.tracks()["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["user_id"].as_str().unwrap_or_default().to_owned(),
                t["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        sources.contains(&(PY_USER.to_owned(), "microphone".to_owned()))
            && sources.contains(&(PY_USER.to_owned(), "camera".to_owned())),
        "rtc:tracks names aiortc's microphone and camera: {sources:?}"
    );

    // aiortc received the bot's audio and video. The bot's audio is decodable Opus; its VP8 is
    // a valid frame header over filler bytes, so aiortc reassembles whole frames from the RTP but
    // its decoder rejects them: video is checked up to the decoder's input.
    let (audio, video) = aiortc_received_from(&result, BOT_USER);
    assert!(
        audio.rtp_packets >= MIN_PACKETS && video.rtp_packets >= MIN_PACKETS,
        "aiortc got {audio:?} and {video:?} from the bot: {result}\n{}",
        logs()
    );
    assert!(
        audio.frames_decoded >= MIN_PACKETS && video.frames_assembled >= MIN_PACKETS / 3,
        "aiortc's frames from the bot: audio {audio:?}, video {video:?}: {result}\n{}",
        logs()
    );
    let bot_row = |kind, packets| Row {
        receiver: BOT_USER,
        publisher: PY_USER,
        kind,
        received: Received {
            rtp_packets: packets,
            ..Received::default()
        },
        decodes: false,
    };
    print_table(
        "aiortc and the webrtc-rs bot (the bot counts packets only; its VP8 is filler)",
        &[
            bot_row("audio", audio_from_py),
            bot_row("video", video_from_py),
            Row::aiortc(PY_USER, BOT_USER, "audio", audio),
            Row::aiortc(PY_USER, BOT_USER, "video", video),
        ],
    );
    // aiortc takes a remote track's id from `a=msid` only under a session-level
    // `a=msid-semantic:WMS`, which every subscriber offer carries: its ids match rtc:tracks.
    for track in result["tracks"].as_array().into_iter().flatten() {
        assert_eq!(
            track["aiortc_track_id"], track["track_id"],
            "aiortc's id of the {} track of {}",
            track["kind"], track["user_id"]
        );
    }
    assert!(result["offers_answered"].as_u64() >= Some(1), "{result}");

    let _ = sending.await;
    bot.request("call:end", json!({"call_id": call_id}))
        .await
        .expect("the bot ends the call");
    bot.close().await;
    server.stop().await;
}

/// The group call's participants, all aiortc; the first initiates.
const TRIO: [&str; 3] = ["ana", "ben", "cid"];
/// Decoded video frames each must get of each other's camera: about a second of aiortc's 30 fps.
const MIN_VIDEO_FRAMES: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the aiortc venv: set CONFAB_AIORTC_PYTHON (see .ci/run)"]
async fn three_aiortc_peers_each_receive_the_other_two() {
    let python = aiortc_python();
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    server.conversation("trio", &TRIO).await;

    let duration = PY_DURATION_S.to_string();
    let [first, second, third] = TRIO;
    // The first starts a group call in the conversation and so publishes first; the others
    // accept when rung, so they connect first (an invitee offline at the start is not rung).
    let mut invitees = [second, third]
        .map(|user| PyPeer::spawn(&python, &server, user, &["--duration", &duration]));
    for invitee in &mut invitees {
        invitee.connected().await;
    }
    let [b, c] = invitees;
    let mut peers = [
        PyPeer::spawn(
            &python,
            &server,
            first,
            &[
                "--conversation",
                "trio",
                "--invite",
                second,
                "--invite",
                third,
                "--duration",
                &duration,
            ],
        ),
        b,
        c,
    ];
    let [a, b, c] = &mut peers;
    let outcomes = tokio::join!(a.result(), b.result(), c.result());
    let failures: Vec<&String> = [&outcomes.0, &outcomes.1, &outcomes.2]
        .into_iter()
        .filter_map(|o| o.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    let results = [outcomes.0, outcomes.1, outcomes.2].map(Result::unwrap_or_default);

    let mut rows = Vec::new();
    for (receiver, result) in TRIO.iter().zip(&results) {
        for publisher in TRIO.iter().filter(|p| *p != receiver) {
            let (audio, video) = aiortc_received_from(result, publisher);
            rows.push(Row::aiortc(receiver, publisher, "audio", audio));
            rows.push(Row::aiortc(receiver, publisher, "video", video));
        }
    }
    print_table("three aiortc peers in a group call", &rows);

    let logs = || {
        peers
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.user, p.logs()))
            .collect::<String>()
    };
    for row in &rows {
        let got = row.received;
        let enough = got.rtp_packets >= MIN_PACKETS
            && if row.kind == "audio" {
                got.frames_decoded >= MIN_PACKETS
            } else {
                got.frames_decoded >= MIN_VIDEO_FRAMES
            };
        assert!(
            enough,
            "{} got {got:?} of {}'s {}; results: {results:?}\n{}",
            row.receiver,
            row.publisher,
            row.kind,
            logs()
        );
    }
    for (receiver, result) in TRIO.iter().zip(&results) {
        let tracks = result["tracks"].as_array().cloned().unwrap_or_default();
        // One remote track per kind and other participant, each named as rtc:tracks names it.
        assert_eq!(tracks.len(), 4, "{receiver}'s tracks: {result}");
        for track in &tracks {
            assert_eq!(
                track["aiortc_track_id"], track["track_id"],
                "{receiver}'s id of the {} track of {}",
                track["kind"], track["user_id"]
            );
        }
    }
    server.stop().await;
}
