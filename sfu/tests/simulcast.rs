//! Simulcast through the engine: a publisher bot sends three RID layers of VP8, subscriber bots
//! choose layers (or pause) with `set_video_quality`, which is what `rtc:subscribe` drives.
//!
//! What the subscriber must never see: a layer starting anywhere but at a keyframe, or a jump in
//! sequence number, VP8 picture id or TL0PICIDX where the layer changed. Every bot layer numbers
//! its packets and pictures from far apart starting points, so an engine that did not rewrite
//! them would show jumps of thousands.

mod common;

use std::time::{Duration, Instant};

use common::{Call, Client, EVENT_TIMEOUT, eventually};
use confab_bot::media::{BotConfig, RemoteTrackStats, RtpCodecKind};
use confab_bot::simulcast::SIMULCAST_SSRCS;
use confab_sfu::{
    EngineConfig, EngineEvent, MediaKind, QualityDirection, TrackSource, VideoQuality,
};

/// The live camera track `client` receives from `publisher`.
fn camera(client: &Client, publisher: &str) -> Option<RemoteTrackStats> {
    client
        .subscriber
        .tracks()
        .into_iter()
        .find(|t| t.stream_id == publisher && t.kind == RtpCodecKind::Video && !t.ended)
}

fn layer(client: &Client, publisher: &str) -> Option<u8> {
    camera(client, publisher).and_then(|t| t.layers.layer)
}

fn video_packets(client: &Client, publisher: &str) -> u64 {
    camera(client, publisher).map_or(0, |t| t.packets)
}

async fn choose(call: &Call, subscriber: &str, publisher: &str, quality: VideoQuality) {
    call.engine
        .set_video_quality(
            call.room,
            subscriber.to_owned(),
            publisher.to_owned(),
            TrackSource::Camera,
            quality,
        )
        .await
        .expect("the subscriber is in the room");
}

/// Every layer change (and resume) after the first packet started at a keyframe and continued
/// the numbering by exactly one. `picture_ids`: the publisher sends VP8 picture ids and
/// TL0PICIDX (the simulcast bot does; the single-layer one sends the short descriptor).
fn assert_clean_switches(track: &RemoteTrackStats, picture_ids: bool) {
    let switches = &track.layers.switches;
    assert!(!switches.is_empty());
    for s in switches {
        assert!(s.keyframe, "a layer started off a keyframe: {s:?}");
    }
    for s in &switches[1..] {
        assert_eq!(s.seq_step, Some(1), "sequence jump at {s:?}");
        if picture_ids {
            assert_eq!(s.picture_id_step, Some(1), "picture id jump at {s:?}");
            assert_eq!(s.tl0_step, Some(1), "TL0PICIDX jump at {s:?}");
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_layer_starts_at_a_keyframe_and_continues_the_numbering() {
    let mut call = Call::new(1);
    let bob = call.add("bob", false).await;
    let carol = call.add("carol", false).await;
    let alice = call.add_simulcast("alice", 3).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(60)).await });

    // One camera track for the three layers.
    call.expect_event(|e| {
        matches!(e, EngineEvent::TrackPublished { kind: MediaKind::Video, ssrc, .. } if *ssrc == SIMULCAST_SSRCS[0] || *ssrc == SIMULCAST_SSRCS[1] || *ssrc == SIMULCAST_SSRCS[2])
    })
    .await;

    // A new leg gets the highest layer.
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)
            && layer(&carol, "alice") == Some(2))
        .await,
        "both start on the top layer: bob {:?}, carol {:?}",
        camera(&bob, "alice"),
        camera(&carol, "alice")
    );

    // Keyframe requests are limited to one per layer per 500 ms; waiting that long between
    // choices makes each switch wait only for its own keyframe, which is what is measured.
    let mut latencies = Vec::new();
    for (quality, want) in [
        (VideoQuality::Low, 0),
        (VideoQuality::Medium, 1),
        (VideoQuality::High, 2),
        (VideoQuality::Low, 0),
        (VideoQuality::High, 2),
        (VideoQuality::Medium, 1),
    ] {
        let asked = Instant::now();
        choose(&call, "bob", "alice", quality).await;
        assert!(
            eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(want)).await,
            "bob moves to layer {want}: {:?}",
            camera(&bob, "alice")
        );
        let track = camera(&bob, "alice").expect("bob's camera track");
        let switch = *track.layers.switches.last().expect("a switch was logged");
        assert_eq!(switch.to, want);
        latencies.push(switch.at.saturating_duration_since(asked));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // Paused: nothing arrives once what was in flight has landed.
    choose(&call, "bob", "alice", VideoQuality::Off).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = video_packets(&bob, "alice");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        video_packets(&bob, "alice"),
        paused_at,
        "a paused leg stays silent"
    );

    // Resumed on the layer it had: the log counts the return after silence as a switch.
    let switches_before = camera(&bob, "alice").expect("track").layers.switches.len();
    choose(&call, "bob", "alice", VideoQuality::Medium).await;
    assert!(
        eventually(EVENT_TIMEOUT, || camera(&bob, "alice").is_some_and(|t| t
            .layers
            .switches
            .len()
            > switches_before))
        .await,
        "video resumes"
    );
    // And paused then resumed on another layer.
    choose(&call, "bob", "alice", VideoQuality::Off).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    choose(&call, "bob", "alice", VideoQuality::Low).await;
    assert!(eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(0)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let bob_track = camera(&bob, "alice").expect("bob's camera track");
    assert_clean_switches(&bob_track, true);
    assert!(
        bob_track.layers.switches.len() >= 9,
        "{:?}",
        bob_track.layers.switches
    );
    // Carol asked for nothing and kept the top layer throughout.
    let carol_track = camera(&carol, "alice").expect("carol's camera track");
    assert_eq!(carol_track.layers.packets_by_layer[..2], [0, 0]);
    assert_eq!(carol_track.layers.switches.len(), 1);
    assert_clean_switches(&carol_track, true);

    let stats = call.engine.stats().await.expect("stats");
    assert!(stats.layer_switches >= 10, "{}", stats.layer_switches);
    // Both subscribers' transport-cc feedback reached rtc's GCC.
    assert_eq!(stats.bandwidth_estimated, 2);
    assert_eq!(stats.bandwidth_from_twcc, 2, "{stats:?}");
    eprintln!(
        "rtc:subscribe to first packet of the new layer: median {:?} over {:?}",
        median(latencies.clone()),
        latencies
    );
    sending.abort();
    for c in [&alice, &bob, &carol] {
        call.leave(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_whose_layer_stops_falls_back_to_the_next_one_sent_and_returns_with_it() {
    let call = Call::new(1);
    let bob = call.add("bob", false).await;
    let alice = call.add_simulcast("alice", 3).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sender = publisher.clone();
    let sending = tokio::spawn(async move { sender.send_media(Duration::from_secs(60)).await });
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)).await,
        "{:?}",
        camera(&bob, "alice")
    );

    // The publisher stops its top layer (a browser does when its uplink or CPU runs short).
    publisher.set_layer_sending(2, false);
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(1)).await,
        "bob falls back to the middle layer: {:?}",
        camera(&bob, "alice")
    );
    let before = video_packets(&bob, "alice");
    assert!(
        eventually(EVENT_TIMEOUT, || video_packets(&bob, "alice") > before + 20).await,
        "and keeps receiving it"
    );

    // The top layer comes back: so does bob, at its keyframe, with continuous numbering.
    publisher.set_layer_sending(2, true);
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)).await,
        "bob returns to the top layer: {:?}",
        camera(&bob, "alice")
    );
    assert_clean_switches(&camera(&bob, "alice").expect("bob's camera"), true);
    sending.abort();
    call.leave(&bob).await;
    call.leave(&alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_made_before_the_track_exists_applies_to_its_leg() {
    let call = Call::new(1);
    let bob = call.add("bob", false).await;
    choose(&call, "bob", "alice", VideoQuality::Low).await;
    let alice = call.add_simulcast("alice", 2).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(30)).await });

    assert!(
        eventually(EVENT_TIMEOUT, || camera(&bob, "alice")
            .is_some_and(|t| t.layers.packets_by_layer[0] > 20))
        .await,
        "bob receives the low layer: {:?}",
        camera(&bob, "alice")
    );
    let track = camera(&bob, "alice").expect("bob's camera track");
    assert_eq!(track.layers.packets_by_layer[1], 0, "never the high one");
    assert_clean_switches(&track, true);
    sending.abort();
    call.leave(&alice).await;
    call.leave(&bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_layer_camera_pauses_and_resumes_at_a_keyframe() {
    let call = Call::new(1);
    let alice = call.add("alice", true).await;
    let bob = call.add("bob", false).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(30)).await });

    assert!(eventually(EVENT_TIMEOUT, || video_packets(&bob, "alice") > 20).await);
    choose(&call, "bob", "alice", VideoQuality::Off).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = video_packets(&bob, "alice");
    let audio_at = common::received_from(&bob, "alice", MediaKind::Audio);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(video_packets(&bob, "alice"), paused_at, "video paused");
    assert!(
        common::received_from(&bob, "alice", MediaKind::Audio) > audio_at,
        "audio is not paused with it"
    );

    // Any quality resumes a single-layer track.
    choose(&call, "bob", "alice", VideoQuality::Low).await;
    assert!(
        eventually(EVENT_TIMEOUT, || video_packets(&bob, "alice")
            > paused_at + 20)
        .await
    );
    let track = camera(&bob, "alice").expect("bob's camera track");
    assert_eq!(
        track.layers.switches.len(),
        2,
        "{:?}",
        track.layers.switches
    );
    assert_clean_switches(&track, false);
    sending.abort();
    call.leave(&alice).await;
    call.leave(&bob).await;
}

/// A subscriber that loses packets of a layer it switched to gets them back exactly as they
/// were first sent: the engine rebuilds each repair from the publisher's packet, in the leg's
/// sequence numbers and timestamps and with the picture ids it rewrote at the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_after_a_layer_switch_are_the_packets_that_were_lost() {
    let call = Call::new(1);
    let lossy = BotConfig {
        drop_every_nth_video: Some(5),
        ..BotConfig::default()
    };
    let bob = call.add_with("bob", false, &lossy).await;
    let alice = call.add_simulcast("alice", 3).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(60)).await });
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)).await,
        "bob starts on the top layer: {:?}",
        camera(&bob, "alice")
    );
    // Down to the lowest layer, whose picture ids start thousands away from the top one's:
    // every payload bob gets from here on has its picture id and TL0PICIDX rewritten.
    choose(&call, "bob", "alice", VideoQuality::Low).await;
    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(0)).await,
        "bob moves to the low layer: {:?}",
        camera(&bob, "alice")
    );
    let at_switch = bob.subscriber.simulated_loss().expect("loss is simulated");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The last drops are asked for on the NACK generator's next tick.
    eventually(Duration::from_secs(3), || {
        bob.subscriber
            .simulated_loss()
            .is_some_and(|l| l.recovered + 1 >= l.dropped)
    })
    .await;
    let loss = bob.subscriber.simulated_loss().expect("loss is simulated");
    let stats = call.engine.stats().await.expect("stats");
    eprintln!(
        "at the switch {at_switch:?}; at the end {loss:?}; engine retransmissions {} \
         unavailable {}",
        stats.retransmissions, stats.retransmissions_unavailable
    );
    assert!(
        loss.dropped >= at_switch.dropped + 4,
        "low-layer packets were dropped: {at_switch:?} then {loss:?}"
    );
    common::assert_repaired(&loss);
    sending.abort();
    for c in [&alice, &bob] {
        call.leave(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_losing_packets_is_moved_to_a_lower_layer_and_back_up_when_it_heals() {
    let mut call = Call::with_engine(common::start_engine_with(EngineConfig {
        quality_interval: Duration::from_millis(500),
        ..EngineConfig::default()
    }));
    // A third of bob's video never arrives: his receiver reports say so.
    let lossy = BotConfig {
        drop_every_nth_video: Some(3),
        ..BotConfig::default()
    };
    let bob = call.add_with("bob", false, &lossy).await;
    let carol = call.add("carol", false).await;
    let alice = call.add_simulcast("alice", 3).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(150)).await });

    assert!(
        eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)).await,
        "bob starts on the top layer, as the estimate starts high: {:?}",
        camera(&bob, "alice")
    );
    assert!(
        eventually(Duration::from_secs(40), || layer(&bob, "alice")
            .is_some_and(|l| l < 2))
        .await,
        "bob is moved down: {:?}",
        camera(&bob, "alice")
    );
    // Carol's clean path keeps the top layer.
    assert_eq!(layer(&carol, "alice"), Some(2));
    let carol_track = camera(&carol, "alice").expect("carol's camera");
    assert_eq!(
        carol_track.layers.switches.len(),
        1,
        "{:?}",
        carol_track.layers
    );

    // The outbound quality report carries the estimate and the layers it chose.
    let report = call
        .expect_event(|e| {
            matches!(e, EngineEvent::Quality(q) if q.participant == "bob"
                && q.direction == QualityDirection::Outbound
                && q.kind == MediaKind::Video
                && q.video_layers.is_some_and(|l| l.high == 0))
        })
        .await;
    let EngineEvent::Quality(report) = report else {
        unreachable!("matched above")
    };
    let estimate = report.available_bitrate_bps.expect("an estimate");
    eprintln!(
        "bob's estimate {estimate} bps, layers {:?}",
        report.video_layers
    );
    assert!(estimate < 1_500_000, "below where it started: {estimate}");
    // Switches made for bandwidth start at keyframes too; the simulated loss may have taken
    // the keyframe's first packet, in which case the sequence number shows the gap.
    let track = camera(&bob, "alice").expect("bob's camera");
    for s in &track.layers.switches {
        assert!(
            s.keyframe || s.seq_step.is_some_and(|step| step > 1),
            "{s:?}"
        );
    }

    // The path heals: the estimate climbs back and bob returns to the top layer.
    assert!(bob.subscriber.stop_simulated_loss());
    let healed = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || layer(&bob, "alice") == Some(2)).await,
        "bob recovers the top layer: {:?}",
        camera(&bob, "alice")
    );
    eprintln!(
        "back on the top layer {:?} after the loss stopped",
        healed.elapsed()
    );
    let track = camera(&bob, "alice").expect("bob's camera");
    let last = track.layers.switches.last().expect("a switch");
    assert!(last.keyframe && last.seq_step == Some(1), "{last:?}");
    sending.abort();
    for c in [&alice, &bob, &carol] {
        call.leave(c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_feedback_is_lost_is_moved_to_a_lower_layer() {
    let call = Call::new(1);
    let silent = BotConfig {
        drop_receiver_reports: true,
        ..BotConfig::default()
    };
    let bob = call.add_with("bob", false, &silent).await;
    let carol = call.add("carol", false).await;
    let alice = call.add_simulcast("alice", 3).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { publisher.send_media(Duration::from_secs(90)).await });

    assert!(eventually(EVENT_TIMEOUT, || layer(&bob, "alice") == Some(2)).await);
    assert!(
        eventually(Duration::from_secs(40), || layer(&bob, "alice")
            .is_some_and(|l| l < 2))
        .await,
        "without reports bob is moved down: {:?}",
        camera(&bob, "alice")
    );
    assert_eq!(
        layer(&carol, "alice"),
        Some(2),
        "carol reports and keeps the top"
    );
    let track = camera(&bob, "alice").expect("bob's camera");
    assert_clean_switches(&track, true);
    sending.abort();
    for c in [&alice, &bob, &carol] {
        call.leave(c).await;
    }
}
