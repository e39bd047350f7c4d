//! Simulcast through the whole server: a bot publishes three layers over the WebSocket
//! signaling, and another bot's `rtc:subscribe` changes the layer it receives.

mod support;

use std::time::Duration;

use confab_bot::media::{RemoteTrackStats, RtpCodecKind};
use confab_bot::participant::BotParticipant;
use serde_json::json;
use support::db::TestDb;
use support::server::{TestServer, token};

const WAIT: Duration = Duration::from_secs(20);

async fn bot(server: &TestServer, user: &str) -> BotParticipant {
    BotParticipant::connect(&server.base, &token(user), user)
        .await
        .expect("bot connects")
}

fn camera(me: &BotParticipant, publisher: &str) -> Option<RemoteTrackStats> {
    me.subscriber
        .tracks()
        .into_iter()
        .find(|t| t.stream_id == publisher && t.kind == RtpCodecKind::Video && !t.ended)
}

/// Waits until `check` holds, polling every 20 ms, for at most [`WAIT`].
async fn until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtc_subscribe_changes_the_layer_a_subscriber_receives() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start_with(&db, |s| s.quality_interval = Duration::from_millis(700)).await;
    let alice = bot(&server, "alice").await;
    let bob = bot(&server, "bob").await;
    let created = alice
        .request(
            "call:initiate",
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await
        .expect("call:initiate");
    let call_id = created["call"]["id"].as_str().expect("call id").to_owned();
    bob.request("call:accept", json!({"call_id": call_id}))
        .await
        .expect("call:accept");

    let publisher = alice
        .publish_simulcast(&call_id, 3)
        .await
        .expect("alice publishes three layers");
    publisher.wait_connected(WAIT).await.expect("connects");
    let sending =
        tokio::spawn(async move { publisher.send_media(Duration::from_secs(60)).await.ok() });

    let layer = |me: &BotParticipant| camera(me, "alice").and_then(|t| t.layers.layer);
    assert!(
        until(|| layer(&bob) == Some(2)).await,
        "bob starts on the top layer: {:?}",
        camera(&bob, "alice")
    );
    // call:quality about bob carries his subscriber connection's estimate and layers.
    let mut reported = None;
    for _ in 0..20 {
        let Some(event) = bob.event("call:quality", WAIT).await else {
            break;
        };
        if event["user_id"] == "bob" && event["video_layers"]["high"] == 1 {
            reported = Some(event);
            break;
        }
    }
    let reported = reported.expect("a call:quality about bob with his layers");
    assert!(
        reported["available_bitrate_bps"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{reported}"
    );

    for (quality, want) in [("low", 0), ("medium", 1), ("high", 2)] {
        let ack = bob
            .request(
                "rtc:subscribe",
                json!({"call_id": call_id, "user_id": "alice", "source": "camera", "quality": quality}),
            )
            .await
            .expect("rtc:subscribe is acknowledged");
        assert_eq!(ack, json!({}));
        assert!(
            until(|| layer(&bob) == Some(want)).await,
            "{quality}: bob receives layer {want}: {:?}",
            camera(&bob, "alice")
        );
        // Past the per-layer keyframe-request limit, so the next switch is not held back.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // Off pauses the camera.
    bob.request(
        "rtc:subscribe",
        json!({"call_id": call_id, "user_id": "alice", "source": "camera", "quality": "off"}),
    )
    .await
    .expect("rtc:subscribe off");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = camera(&bob, "alice").map_or(0, |t| t.packets);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(camera(&bob, "alice").map_or(0, |t| t.packets), paused);

    // Subscribing to oneself is refused.
    let refused = bob
        .request(
            "rtc:subscribe",
            json!({"call_id": call_id, "user_id": "bob", "source": "camera", "quality": "low"}),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");

    let track = camera(&bob, "alice").expect("bob's camera track");
    for s in &track.layers.switches {
        assert!(s.keyframe, "{s:?}");
    }
    for s in &track.layers.switches[1..] {
        assert_eq!(s.seq_step, Some(1), "{s:?}");
        assert_eq!(s.picture_id_step, Some(1), "{s:?}");
    }
    // The switches are counted in the metrics (copied from the engine once a second).
    let mut switches = 0.0;
    for _ in 0..50 {
        let metrics = server.metrics().await;
        switches = metrics
            .lines()
            .find_map(|l| l.strip_prefix("confab_video_layer_switches_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if switches >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switches >= 4.0, "start plus three switches: {switches}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("confab_video_legs{layer=\"off\"}")
            && metrics.contains("confab_subscriber_bandwidth_estimates"),
        "{metrics}"
    );
    sending.abort();
    alice.close().await;
    bob.close().await;
}
