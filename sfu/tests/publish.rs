//! A real webrtc client publishes to the engine over loopback.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use confab_bot::media::{AUDIO_SSRC, Publisher as PublisherBot, VIDEO_SSRC};
use confab_sfu::{
    EngineConfig, EngineError, EngineEvent, EngineEvents, MediaEngine, MediaKind, PeerRole, RoomId,
};
use uuid::Uuid;

fn start_engine(workers: usize) -> MediaEngine {
    MediaEngine::start(EngineConfig {
        workers,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EngineConfig::default()
    })
    .expect("engine starts on loopback")
}

/// Waits for the first event matching `pred`, skipping others.
async fn expect_event(
    events: &mut EngineEvents,
    timeout: Duration,
    mut pred: impl FnMut(&EngineEvent) -> bool,
) -> EngineEvent {
    tokio::time::timeout(timeout, async {
        loop {
            let ev = events.recv().await.expect("event channel open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event arrives in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_connects_and_engine_receives_rtp_on_both_tracks() {
    let engine = start_engine(2);
    let mut events = engine.take_events().expect("first taker gets the events");
    let room = RoomId(Uuid::new_v4());
    let who = "alice".to_owned();

    let bot = PublisherBot::new().await.expect("bot builds");
    let offer = bot.offer().await.expect("bot offers");
    let answer = engine
        .publish(room, who.clone(), offer)
        .await
        .expect("engine answers a valid offer");
    assert!(
        answer.contains("a=ice-lite"),
        "answer is ICE-lite:\n{answer}"
    );
    assert!(
        answer.contains("a=candidate:"),
        "answer carries the host candidate:\n{answer}"
    );
    bot.accept_answer(answer).await.expect("bot accepts answer");

    let t0 = std::time::Instant::now();
    bot.wait_connected(Duration::from_secs(10))
        .await
        .expect("bot reaches Connected");
    expect_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, EngineEvent::PeerConnected { room: r, participant, .. } if *r == room && *participant == who)
    })
    .await;
    eprintln!("answer applied to both sides Connected: {:?}", t0.elapsed());

    let (a_sent, v_sent) = bot
        .send_media(Duration::from_secs(1))
        .await
        .expect("bot sends media");
    assert!(a_sent > 0 && v_sent > 0);

    let mut published = Vec::new();
    for _ in 0..2 {
        if let EngineEvent::TrackPublished {
            kind, mid, ssrc, ..
        } = expect_event(&mut events, Duration::from_secs(5), |e| {
            matches!(e, EngineEvent::TrackPublished { .. })
        })
        .await
        {
            published.push((kind, mid, ssrc));
        }
    }
    published.sort_by_key(|(_, _, ssrc)| *ssrc);
    assert_eq!(published[0].0, MediaKind::Audio);
    assert_eq!(published[0].2, AUDIO_SSRC);
    assert_eq!(published[1].0, MediaKind::Video);
    assert_eq!(published[1].2, VIDEO_SSRC);
    assert_ne!(published[0].1, published[1].1, "distinct mids");

    // Let the last packets land, then read the engine's own counters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = engine.stats().await.expect("stats");
    let count = |ssrc: u32| {
        stats
            .tracks
            .iter()
            .find(|t| t.ssrc == ssrc)
            .map(|t| (t.kind, t.packets))
            .unwrap_or((None, 0))
    };
    let (a_kind, a_recv) = count(AUDIO_SSRC);
    let (v_kind, v_recv) = count(VIDEO_SSRC);
    eprintln!("sent audio {a_sent} video {v_sent}; engine received audio {a_recv} video {v_recv}");
    assert_eq!(a_kind, Some(MediaKind::Audio));
    assert_eq!(v_kind, Some(MediaKind::Video));
    // Loopback rarely loses anything, but the machine is shared and this is UDP: allow 10%.
    assert!(a_recv * 10 >= a_sent * 9, "audio: {a_recv} of {a_sent}");
    assert!(v_recv * 10 >= v_sent * 9, "video: {v_recv} of {v_sent}");
    assert_eq!(stats.peers, 1);
    assert_eq!(stats.rtp_packets_received, a_recv + v_recv);

    // A re-offer on the live connection (as when a screen share is added) renegotiates in place.
    let reoffer = bot.offer().await.expect("re-offer");
    let reanswer = engine
        .publish(room, who.clone(), reoffer)
        .await
        .expect("engine answers a re-offer");
    bot.accept_answer(reanswer)
        .await
        .expect("bot accepts re-answer");
    let stats = engine.stats().await.expect("stats");
    assert_eq!((stats.peers, stats.demux_ufrags), (1, 1));

    engine
        .remove_participant(room, who.clone())
        .await
        .expect("remove");
    let stats = engine.stats().await.expect("stats");
    assert_eq!(
        (
            stats.peers,
            stats.demux_ufrags,
            stats.demux_addrs,
            stats.timers
        ),
        (0, 0, 0, 0)
    );
    let _ = bot.close().await;
    engine.shutdown().await;
}

#[tokio::test]
async fn garbage_sdp_is_rejected_and_leaves_nothing() {
    let engine = start_engine(1);
    let room = RoomId(Uuid::new_v4());
    for sdp in [
        "this is not sdp",
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio",
    ] {
        let err = engine
            .publish(room, "mallory".to_owned(), sdp.to_owned())
            .await
            .expect_err("garbage is refused");
        assert!(matches!(err, EngineError::InvalidSdp(_)), "got {err:?}");
    }
    // A stray datagram from an unknown address is dropped and counted, not fed to anyone.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind stray socket");
    stray
        .send_to(b"\x80\x60hello", engine.local_addrs()[0])
        .expect("send stray datagram");
    let mut stats = engine.stats().await.expect("stats");
    for _ in 0..50 {
        if stats.dropped_unknown > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = engine.stats().await.expect("stats");
    }
    assert_eq!(stats.dropped_unknown, 1);
    assert_eq!((stats.peers, stats.demux_ufrags, stats.timers), (0, 0, 0));
    let err = engine
        .remove_participant(room, "mallory".to_owned())
        .await
        .expect_err("nothing to remove");
    assert!(matches!(err, EngineError::UnknownParticipant { .. }));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_remove_cycles_leave_nothing_behind() {
    let engine = start_engine(2);
    let mut events = engine.take_events().expect("events");
    let room = RoomId(Uuid::new_v4());
    for i in 0..10 {
        let who = format!("user-{i}");
        let bot = PublisherBot::new().await.expect("bot builds");
        let answer = engine
            .publish(room, who.clone(), bot.offer().await.expect("offer"))
            .await
            .expect("answer");
        bot.accept_answer(answer).await.expect("accept");
        engine
            .add_remote_candidate(
                room,
                who.clone(),
                PeerRole::Publisher,
                "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".to_owned(),
            )
            .await
            .expect("a candidate is accepted (or ignored) without error");
        bot.wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        expect_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, EngineEvent::PeerConnected { participant, .. } if *participant == who),
        )
        .await;
        let live = engine.stats().await.expect("stats");
        assert_eq!((live.peers, live.demux_ufrags), (1, 1));
        assert!(live.demux_addrs >= 1);
        engine
            .remove_participant(room, who.clone())
            .await
            .expect("remove");
        expect_event(
            &mut events,
            Duration::from_secs(5),
            |e| matches!(e, EngineEvent::PeerClosed { participant, .. } if *participant == who),
        )
        .await;
        let _ = bot.close().await;
    }
    let stats = engine.stats().await.expect("stats");
    assert_eq!(
        (
            stats.peers,
            stats.rooms,
            stats.demux_ufrags,
            stats.demux_addrs,
            stats.timers
        ),
        (0, 0, 0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.tracks.is_empty());
    engine.shutdown().await;
}

/// A STUN binding request with the given USERNAME and a MESSAGE-INTEGRITY that cannot be right.
fn forged_binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0xAB; 20]);
    let mut msg = Vec::new();
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_check_with_a_known_ufrag_cannot_take_over_the_route() {
    let engine = start_engine(1);
    let room = RoomId(Uuid::new_v4());
    let bot = PublisherBot::new().await.expect("bot builds");
    let answer = engine
        .publish(room, "alice".into(), bot.offer().await.expect("offer"))
        .await
        .expect("answer");
    let server_ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("answer has a ufrag")
        .trim()
        .to_owned();
    let server_addr = engine.announced_addrs()[0];
    bot.accept_answer(answer).await.expect("bot accepts");
    bot.wait_connected(Duration::from_secs(10))
        .await
        .expect("bot connects");
    let before = engine.stats().await.expect("stats");
    assert_eq!(before.demux_addrs, 1, "the real client's address is bound");

    // A stranger who learned the ufrag sends a check with a wrong password, then media.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    stranger
        .send_to(
            &forged_binding_request(&format!("{server_ufrag}:evil")),
            server_addr,
        )
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stranger
        .send_to(
            &[0x80, 0x60, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1],
            server_addr,
        )
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = engine.stats().await.expect("stats");
    assert_eq!(
        after.demux_addrs, 1,
        "no route was learned for the stranger"
    );
    assert_eq!(
        after.dropped_unknown,
        before.dropped_unknown + 1,
        "the stranger's media was dropped"
    );
    // The real client still gets through.
    let (audio, video) = bot
        .send_media(Duration::from_millis(600))
        .await
        .expect("media");
    assert!(audio > 0 && video > 0);
    let later = engine.stats().await.expect("stats");
    assert!(later.rtp_packets_received > after.rtp_packets_received);
    engine.shutdown().await;
}
