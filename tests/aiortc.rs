//! Interop with a second WebRTC stack: an aiortc (Python) peer and a webrtc-rs bot share a direct
//! call through an in-process Confab, each publishing audio and video and receiving the other's.
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
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the aiortc venv: set CONFAB_AIORTC_PYTHON (see .ci/run)"]
async fn aiortc_and_webrtc_rs_exchange_audio_and_video() {
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aiortc/peer.py");

    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let bot = BotParticipant::connect(&server.base, &token(BOT_USER), BOT_USER)
        .await
        .expect("the bot connects");

    let mut child = Command::new(&python)
        .arg(&script)
        .args([
            "--url",
            &server.base,
            "--user",
            PY_USER,
            "--invite",
            BOT_USER,
        ])
        .args(["--token", &token(PY_USER)])
        .args([
            "--duration",
            &PY_DURATION_S.to_string(),
            "--timeout",
            "30",
            "--log-sdp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
    let stderr = Arc::new(Mutex::new(String::new()));
    capture(child.stderr.take().expect("stderr piped"), stderr.clone());
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let logs = || stderr.lock().map(|s| s.clone()).unwrap_or_default();

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

    // aiortc's report: the `result` line, or an `error` line, within its own timeouts.
    let mut result = Value::Null;
    let mut last_progress = Value::Null;
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
                Some("error") => panic!("aiortc failed: {event}\nits stderr:\n{}", logs()),
                Some("progress") => last_progress = event,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "aiortc gave no result within {OVERALL:?}; last progress: {last_progress}\nits stderr:\n{}",
        logs()
    );
    assert!(
        !result.is_null(),
        "aiortc exited without a result; last progress: {last_progress}\nits stderr:\n{}",
        logs()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("aiortc exits after its result")
        .expect("aiortc's exit status");
    assert!(status.success(), "aiortc exited with {status}\n{}", logs());

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
    eprintln!(
        "bot got {audio_from_py} audio / {video_from_py} video packets from aiortc; aiortc got \
         audio {audio:?} and video {video:?} from the bot"
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
