//! Calls through the engine with real webrtc clients: subscribers, forwarding, renegotiation,
//! keyframe requests and limits.

mod common;

use std::time::Duration;

use common::{Call, Client, eventually, received_from, send_all};
use confab_bot::media::RtpCodecKind;
use confab_sfu::{EngineError, EngineEvent, MediaKind, PeerRole, RENEGOTIATION_GAP, TrackSource};

/// Every client received audio and video from every other publisher.
fn assert_full_mesh(clients: &[Client]) {
    for rx in clients {
        for tx in clients
            .iter()
            .filter(|c| c.name != rx.name && c.publisher.is_some())
        {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let n = received_from(rx, &tx.name, kind);
                assert!(n > 0, "{} got no {kind:?} from {}", rx.name, tx.name);
            }
        }
    }
}

async fn assert_all_freed(call: &Call) {
    let stats = call.engine.stats().await.expect("stats");
    assert_eq!(
        (
            stats.peers,
            stats.subscriber_peers,
            stats.participants,
            stats.rooms,
            stats.demux_ufrags,
            stats.demux_addrs,
            stats.timers
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "{stats:?}"
    );
}

async fn leave_all(call: &Call, clients: &[Client]) {
    for c in clients {
        call.leave(c).await;
    }
    assert_all_freed(call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_each_receives_the_other() {
    let mut call = Call::new(1);
    let a = call.add("alice", true).await;
    let b = call.add("bob", true).await;
    let clients = [a, b];
    send_all(&clients, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for c in &clients {
        for t in c.subscriber.tracks() {
            eprintln!(
                "{} <- {} {:?} track {} packets {} keyframes {}",
                c.name, t.stream_id, t.kind, t.track_id, t.packets, t.keyframes
            );
        }
    }
    assert_full_mesh(&clients);
    // The offers named both tracks, with ids matching the SDP's msid lines. A track is offered
    // once its first packet arrived, so audio and video may come in one offer or two: take the
    // first offer to bob that carries the video.
    let offer = call
        .expect_event(|e| {
            matches!(e, EngineEvent::SubscriberOffer { participant, tracks, .. }
            if participant == "bob" && tracks.iter().any(|t| t.kind == MediaKind::Video))
        })
        .await;
    let mut offer_sdp = String::new();
    if let EngineEvent::SubscriberOffer { sdp, tracks, .. } = offer {
        offer_sdp = sdp.clone();
        assert!(!tracks.is_empty());
        for t in &tracks {
            assert_eq!(
                (t.stream_id.as_str(), t.publisher.as_str()),
                ("alice", "alice")
            );
            assert!(
                sdp.contains(&format!("a=msid:{} {}", t.stream_id, t.track_id)),
                "msid of {t:?} in\n{sdp}"
            );
            let expected = match t.kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            };
            assert_eq!(t.source, expected);
        }
    }
    let stats = call.engine.stats().await.expect("stats");
    eprintln!("{stats:?}");
    // Video legs are repaired: the offer carries nack/pli feedback and an RTX stream.
    assert!(offer_sdp.contains("nack pli") && offer_sdp.contains("a=ssrc-group:FID"));
    // Transport-wide congestion control covers video only: audio is never limited by the
    // estimate, so it carries no transport-wide sequence numbers.
    let sections: Vec<&str> = offer_sdp.split("\nm=").skip(1).collect();
    for section in &sections {
        // Each leg offers the publisher's codec and nothing else (and, for video, its RTX).
        let mut formats: Vec<&str> = section
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        formats.sort_unstable();
        let expected: &[&str] = if section.starts_with("audio") {
            &["opus/48000/2"]
        } else {
            &["VP8/90000", "rtx/90000"]
        };
        assert_eq!(formats, expected, "formats offered in\n{section}");
        let (extension, feedback) = (
            section.contains("transport-wide-cc"),
            section.contains(" transport-cc"),
        );
        if section.starts_with("audio") {
            assert!(
                !extension && !feedback,
                "transport-cc for audio:\n{section}"
            );
        } else {
            assert!(
                extension && feedback,
                "no transport-cc for video:\n{section}"
            );
        }
    }
    assert!(sections.iter().any(|s| s.starts_with("video")));
    assert_eq!(stats.subscriber_peers, 2);
    assert!(stats.forwarded_packets > 0 && stats.forwarded_bytes > 0);
    leave_all(&call, &clients).await;
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_party_call_everyone_receives_everyone() {
    let call = Call::new(1);
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(call.add(&format!("p{i}"), true).await);
    }
    send_all(&clients, Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pairs = 0;
    for rx in &clients {
        for tx in clients.iter().filter(|c| c.name != rx.name) {
            let (a, v) = (
                received_from(rx, &tx.name, MediaKind::Audio),
                received_from(rx, &tx.name, MediaKind::Video),
            );
            assert!(
                a > 0 && v > 0,
                "{} <- {}: audio {a} video {v}",
                rx.name,
                tx.name
            );
            pairs += 1;
        }
    }
    assert_eq!(pairs, 30);
    let stats = call.engine.stats().await.expect("stats");
    eprintln!("six-party: {stats:?}");
    assert_eq!((stats.peers, stats.subscriber_peers), (12, 6));
    leave_all(&call, &clients).await;
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_a_keyframe_within_one_second() {
    let call = Call::new(1);
    let a = call.add("alice", true).await;
    let sender = a.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { sender.send_media(Duration::from_secs(6)).await });
    // Alice's first keyframe is long gone by the time Carol arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = call.add("carol", true).await;
    c.subscriber
        .wait_connected(common::CONNECT_TIMEOUT)
        .await
        .expect("carol's subscriber connects");
    let got_key = eventually(Duration::from_secs(5), || {
        c.subscriber
            .tracks()
            .iter()
            .any(|t| t.stream_id == "alice" && t.first_keyframe_at.is_some())
    })
    .await;
    assert!(got_key, "carol got a keyframe from alice");
    let connected = c.subscriber.connected_at().expect("connected time");
    let video = c
        .subscriber
        .tracks()
        .into_iter()
        .find(|t| t.stream_id == "alice" && t.first_keyframe_at.is_some())
        .expect("alice's video");
    let delay = video
        .first_keyframe_at
        .expect("keyframe time")
        .saturating_duration_since(connected);
    eprintln!("keyframe {delay:?} after carol's subscriber connected");
    assert!(delay <= Duration::from_secs(1), "keyframe after {delay:?}");
    // Carol's own PLIs reach Alice through the engine, limited to one per 500 ms: of three sent
    // at once, one is relayed at the end of the window and the others are absorbed.
    let publisher = a.publisher.clone().expect("alice publishes");
    let before = call.engine.stats().await.expect("stats");
    let asked_before = publisher.keyframe_requests();
    for _ in 0..3 {
        let sent = c
            .subscriber
            .request_keyframes()
            .await
            .expect("carol sends PLI");
        assert_eq!(sent, 1);
    }
    let relayed = eventually(Duration::from_secs(5), || {
        publisher.keyframe_requests() > asked_before
    })
    .await;
    assert!(relayed, "carol's PLI reached alice");
    sending.await.expect("send task").expect("alice sends");
    let stats = call.engine.stats().await.expect("stats");
    eprintln!(
        "PLIs relayed {} suppressed {}, alice sent {} keyframes for {} requests",
        stats.plis_relayed,
        stats.plis_suppressed,
        publisher.keyframes_sent(),
        publisher.keyframe_requests()
    );
    assert!(stats.plis_relayed > before.plis_relayed, "{stats:?}");
    assert!(stats.plis_suppressed > before.plis_suppressed, "{stats:?}");
    assert!(publisher.keyframes_sent() >= 2);
    leave_all(&call, &[a, c]).await;
    call.engine.shutdown().await;
}

/// Waits until every client's subscriber receives media on exactly `tracks` tracks.
async fn all_receive(clients: &[Client], tracks: usize) -> bool {
    eventually(Duration::from_secs(10), || {
        clients.iter().all(|c| {
            c.subscriber
                .tracks()
                .iter()
                .filter(|t| t.packets > 0)
                .count()
                == tracks
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_renegotiates_the_others() {
    let mut call = Call::new(1);
    let clients = vec![
        call.add("a", true).await,
        call.add("b", true).await,
        call.add("c", true).await,
    ];
    send_all(&clients, Duration::from_secs(2)).await;
    // Everyone's latest offer carries the other two publishers' four tracks.
    let settled = all_receive(&clients, 4).await;
    assert!(settled, "every subscriber receives four tracks");
    while call.events.try_recv().is_ok() {}

    call.leave(&clients[2]).await;
    let mut shrunk = std::collections::HashSet::new();
    while shrunk.len() < 2 {
        let ev = call
            .expect_event(|e| matches!(e, EngineEvent::SubscriberOffer { .. }))
            .await;
        if let EngineEvent::SubscriberOffer {
            participant,
            tracks,
            ..
        } = ev
        {
            assert!(tracks.iter().all(|t| t.publisher != "c"), "{tracks:?}");
            assert_eq!(tracks.len(), 2, "{participant}: {tracks:?}");
            shrunk.insert(participant);
        }
    }
    let stats = call.engine.stats().await.expect("stats");
    assert_eq!((stats.peers, stats.subscriber_peers), (4, 2), "{stats:?}");
    // The remaining two still hear each other after the renegotiation.
    let before = received_from(&clients[0], "b", MediaKind::Audio);
    send_all(&clients[..2], Duration::from_secs(1)).await;
    let flowing = eventually(Duration::from_secs(5), || {
        received_from(&clients[0], "b", MediaKind::Audio) > before
    })
    .await;
    assert!(flowing, "media still flows after renegotiation");
    leave_all(&call, &clients[..2]).await;
    call.engine.shutdown().await;
}

/// The next offer to `participant` that carries no track of `gone`.
async fn offer_without(call: &mut Call, participant: &str, gone: &str) -> Vec<String> {
    loop {
        let ev = call
            .expect_event(|e| {
                matches!(e, EngineEvent::SubscriberOffer { participant: p, .. } if p == participant)
            })
            .await;
        if let EngineEvent::SubscriberOffer { tracks, .. } = ev
            && tracks.iter().all(|t| t.publisher != gone)
        {
            return tracks.into_iter().map(|t| t.publisher).collect();
        }
    }
}

/// A change that comes right after a subscriber answered waits for the renegotiation gap, so a
/// burst of joins or leaves reaches each member as a few offers, not one per change; the
/// subscriber gets it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_right_after_an_answer_waits_for_the_renegotiation_gap() {
    let mut call = Call::new(1);
    let clients = vec![
        call.add("a", true).await,
        call.add("b", true).await,
        call.add("c", true).await,
        call.add("d", true).await,
    ];
    send_all(&clients, Duration::from_secs(1)).await;
    let settled = all_receive(&clients, 6).await;
    assert!(settled, "every subscriber receives six tracks");
    while call.events.try_recv().is_ok() {}

    call.leave(&clients[2]).await;
    offer_without(&mut call, "a", "c").await;
    // Offered no sooner than this, so answered no sooner either.
    let offered = std::time::Instant::now();
    call.leave(&clients[3]).await;
    let publishers = offer_without(&mut call, "a", "d").await;
    assert!(
        offered.elapsed() >= RENEGOTIATION_GAP,
        "the second offer came {:?} after the first",
        offered.elapsed()
    );
    assert!(publishers.iter().all(|p| p == "b"), "{publishers:?}");
    let before = received_from(&clients[0], "b", MediaKind::Audio);
    send_all(&clients[..2], Duration::from_secs(1)).await;
    let flowing = eventually(Duration::from_secs(5), || {
        received_from(&clients[0], "b", MediaKind::Audio) > before
    })
    .await;
    assert!(flowing, "media still flows after both renegotiations");
    leave_all(&call, &clients[..2]).await;
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_gets_an_offer_and_media() {
    let mut call = Call::new(1);
    let viewer = call.add("viewer", false).await;
    let a = call.add("alice", true).await;
    let clients = [a, viewer];
    send_all(&clients, Duration::from_secs(3)).await;
    call.expect_event(|e| {
        matches!(e, EngineEvent::SubscriberOffer { participant, .. } if participant == "viewer")
    })
    .await;
    call.expect_event(|e| {
        matches!(e, EngineEvent::PeerConnected { participant, role: PeerRole::Subscriber, .. } if participant == "viewer")
    })
    .await;
    let v = &clients[1];
    assert!(received_from(v, "alice", MediaKind::Audio) > 0);
    assert!(received_from(v, "alice", MediaKind::Video) > 0);
    // Alice has nobody to watch, so she has no subscriber connection.
    let stats = call.engine.stats().await.expect("stats");
    assert_eq!((stats.peers, stats.subscriber_peers), (2, 1), "{stats:?}");
    leave_all(&call, &clients).await;
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_offers_and_stray_answers_leave_nothing() {
    let call = Call::new(1);
    let bot = confab_bot::media::Publisher::new().await.expect("bot");
    let offer = bot.offer().await.expect("offer");
    // A second audio m-line: the same section again, with its own mid.
    let audio_start = offer.find("m=audio").expect("audio section");
    let audio_end = offer[audio_start..]
        .find("\nm=")
        .map(|i| audio_start + i + 1)
        .expect("a section follows audio");
    let doubled = format!(
        "{}{}",
        offer,
        offer[audio_start..audio_end].replace("a=mid:0", "a=mid:9")
    );
    let err = call
        .engine
        .publish(call.room, "greedy".to_owned(), doubled)
        .await
        .expect_err("two audio tracks are refused");
    assert!(matches!(err, EngineError::TooManyTracks { .. }), "{err:?}");
    assert!(err.to_string().contains("1 audio"), "{err}");

    call.engine
        .join(call.room, "idle".to_owned())
        .await
        .expect("join");
    let err = call
        .engine
        .subscriber_answer(call.room, "idle".to_owned(), "v=0".to_owned())
        .await
        .expect_err("no offer is out");
    assert!(matches!(err, EngineError::NoOfferPending), "{err:?}");
    let stats = call.engine.stats().await.expect("stats");
    assert_eq!((stats.peers, stats.participants), (0, 1), "{stats:?}");
    call.engine
        .remove_participant(call.room, "idle".to_owned())
        .await
        .expect("remove");
    assert_all_freed(&call).await;
    let _ = bot.close().await;
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_reuses_the_m_lines_of_someone_who_left() {
    let mut call = Call::new(1);
    let watcher = call.add("watcher", false).await;
    let mut video_ssrcs = Vec::new();
    for (round, name) in ["first", "second", "third"].into_iter().enumerate() {
        let guest = call.add(name, true).await;
        send_all(std::slice::from_ref(&guest), Duration::from_millis(1_500)).await;
        let heard = eventually(Duration::from_secs(10), || {
            received_from(&watcher, name, MediaKind::Audio) > 0
                && received_from(&watcher, name, MediaKind::Video) > 0
        })
        .await;
        assert!(
            heard,
            "round {round}: the watcher receives {name}'s audio and video: {:?}",
            watcher.subscriber.tracks()
        );
        video_ssrcs.extend(
            watcher
                .subscriber
                .tracks()
                .iter()
                .filter(|t| t.stream_id == name && t.kind == RtpCodecKind::Video)
                .map(|t| t.ssrc),
        );
        while call.events.try_recv().is_ok() {}
        call.leave(&guest).await;
        // The watcher's offer after the leave still has exactly one audio and one video
        // m-line: the guest's, now inactive, which the next guest's tracks take over.
        let sdp = loop {
            match call
                .expect_event(|e| matches!(e, EngineEvent::SubscriberOffer { .. }))
                .await
            {
                EngineEvent::SubscriberOffer {
                    participant, sdp, ..
                } if participant == "watcher" => break sdp,
                _ => continue,
            }
        };
        let m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
        assert_eq!(m_lines, 2, "round {round}: {sdp}");
    }
    // Each newcomer's video came on the same SSRC, the m-line's own, so a client that maps
    // packets to receivers by SSRC keeps working.
    assert_eq!(video_ssrcs.len(), 3, "{video_ssrcs:?}");
    assert!(
        video_ssrcs.iter().all(|s| *s == video_ssrcs[0]),
        "{video_ssrcs:?}"
    );
    leave_all(&call, std::slice::from_ref(&watcher)).await;
    call.engine.shutdown().await;
}
