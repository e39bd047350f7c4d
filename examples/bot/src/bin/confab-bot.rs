//! `confab-bot`: one webrtc-rs participant as a process, for calls that mix it with other
//! clients (a browser, aiortc).
//!
//! It joins an existing call with `call:join`, publishes generated Opus and VP8, answers the
//! server's subscriber offers, and counts what arrives from each remote publisher. Output is JSON
//! lines on stdout, the same shape as `examples/aiortc/peer.py`: `{"event":"joined",…}` once in
//! the call, `{"event":"progress",…}` every second, a final `{"event":"result",…}`, or
//! `{"event":"error","message":…}` with exit code 1.
//!
//! ```sh
//! confab-bot --url http://127.0.0.1:8080 --token "$JWT" --user rsbot --join "$CALL_ID" --duration 20
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use confab_bot::media::{BotResult, RtpCodecKind};
use confab_bot::participant::BotParticipant;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "A webrtc-rs participant that joins a Confab call and reports what it receives")]
struct Args {
    /// Server base URL, http://HOST:PORT.
    #[arg(long)]
    url: String,
    /// JWT of this participant.
    #[arg(long)]
    token: String,
    /// The token's user id (for the report).
    #[arg(long)]
    user: String,
    /// Id of the call to join (the bot must be allowed to join it).
    #[arg(long)]
    join: String,
    /// Seconds to publish after joining.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Seconds the publisher connection may take to connect.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
}

fn emit(event: &str, fields: Value) {
    let mut line = json!({ "event": event });
    if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    println!("{line}");
}

/// What arrived so far, one entry per remote track, named by the `rtc:tracks` lists.
fn received(bot: &BotParticipant) -> Vec<Value> {
    bot.subscriber
        .tracks()
        .into_iter()
        .map(|t| {
            let info = bot.track_info(&t.track_id);
            json!({
                "track_id": t.track_id,
                "user_id": info["user_id"].as_str().unwrap_or(&t.stream_id),
                "source": info["source"],
                "kind": if t.kind == RtpCodecKind::Audio { "audio" } else { "video" },
                "rtp_packets": t.packets,
                "keyframes": t.keyframes,
                "ended": t.ended,
            })
        })
        .collect()
}

async fn run(args: &Args) -> BotResult<()> {
    let bot = BotParticipant::connect(&args.url, &args.token, &args.user).await?;
    bot.request("call:join", json!({ "call_id": args.join }))
        .await?;
    emit("joined", json!({ "call_id": args.join, "user": args.user }));
    let publisher = bot.publish(&args.join).await?;
    publisher
        .wait_connected(Duration::from_secs_f64(args.connect_timeout))
        .await?;
    let sending = {
        let publisher = publisher.clone();
        let duration = Duration::from_secs_f64(args.duration);
        tokio::spawn(async move { publisher.send_media(duration).await })
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !sending.is_finished() {
        tick.tick().await;
        emit("progress", json!({ "tracks": received(&bot) }));
    }
    let (audio_sent, video_sent) = sending.await??;
    emit(
        "result",
        json!({
            "call_id": args.join,
            "user": args.user,
            "audio_sent": audio_sent,
            "video_sent": video_sent,
            "offers_answered": bot.offers_answered(),
            "tracks": received(&bot),
        }),
    );
    // Leave before closing, so the others see a leave rather than a disconnect.
    let _ = bot
        .request("call:leave", json!({ "call_id": args.join }))
        .await;
    bot.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let overall = Duration::from_secs_f64(args.duration + args.connect_timeout + 30.0);
    match tokio::time::timeout(overall, run(&args)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            emit("error", json!({ "message": e.to_string() }));
            ExitCode::FAILURE
        }
        Err(_) => {
            emit("error", json!({ "message": "timed out" }));
            ExitCode::FAILURE
        }
    }
}
