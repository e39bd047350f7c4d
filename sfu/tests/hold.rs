//! A held source: the engine stops forwarding it at once while the publisher keeps sending,
//! and resumes on release. Real webrtc-rs bots over loopback.

mod common;

use std::time::Duration;

use common::{Call, EVENT_TIMEOUT, eventually, received_from};
use confab_sfu::{MediaKind, TrackSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_source_reaches_no_subscriber_until_released() {
    let call = Call::new(1);
    let alice = call.add("alice", true).await;
    let bob = call.add("bob", false).await;
    let publisher = alice.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move {
        let _ = publisher.send_media(Duration::from_secs(60)).await;
    });
    let audio = || received_from(&bob, "alice", MediaKind::Audio);
    let video = || received_from(&bob, "alice", MediaKind::Video);
    assert!(
        eventually(EVENT_TIMEOUT, || audio() > 20 && video() > 20).await,
        "media flows"
    );

    call.engine
        .hold_source(call.room, "alice".into(), TrackSource::Microphone, true)
        .await
        .expect("hold");
    // What was already on its way may land; then the count stands still while video flows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (held_audio, held_video) = (audio(), video());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(audio(), held_audio, "held audio still arrives");
    assert!(video() > held_video, "the other source kept flowing");
    let stats = call.engine.stats().await.expect("stats");
    assert!(stats.held_packets > 0, "{stats:?}");

    call.engine
        .hold_source(call.room, "alice".into(), TrackSource::Microphone, false)
        .await
        .expect("release");
    assert!(
        eventually(EVENT_TIMEOUT, || audio() > held_audio + 10).await,
        "audio resumes"
    );
    // Holding someone not in the room is refused.
    assert!(
        call.engine
            .hold_source(call.room, "nobody".into(), TrackSource::Camera, true)
            .await
            .is_err()
    );
    sending.abort();
}
