//! Retransmission through the engine: a subscriber that loses video asks for it again with NACKs,
//! and the server answers them from the publisher's recent packets, rebuilt in the leg's
//! numbering.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Call, eventually, received_from, send_all, start_engine_with};
use confab_bot::media::{BotConfig, Publisher};
use confab_sfu::{EngineConfig, EngineEvent, MediaKind, QualityDirection, QualityReport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_nacks_are_answered_with_retransmissions() {
    let engine = start_engine_with(EngineConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        quality_interval: Duration::from_secs(1),
        ..EngineConfig::default()
    });
    let mut call = Call::with_engine(engine);
    // Bob only watches, and his subscriber drops every 10th original video packet on arrival.
    let lossy = BotConfig {
        drop_every_nth_video: Some(10),
        ..BotConfig::default()
    };
    let bob = call.add_with("bob", false, &lossy).await;
    let alice = call.add("alice", true).await;
    let clients = [alice, bob];
    send_all(&clients, Duration::from_secs(3)).await;
    let bob = &clients[1];
    // The last drops are asked for on the generator's next 100 ms tick; give the repairs (and a
    // receiver report or two) time to land on a loaded machine. A drop among the very last
    // packets is never asked for: no later packet shows the gap.
    eventually(Duration::from_secs(3), || {
        bob.subscriber
            .simulated_loss()
            .is_some_and(|l| l.dropped > 0 && l.recovered + 1 >= l.dropped)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let mut offer_sdp = None;
    let mut outbound: Vec<QualityReport> = Vec::new();
    while let Ok(event) = call.events.try_recv() {
        match event {
            EngineEvent::SubscriberOffer {
                participant, sdp, ..
            } if participant == "bob" => offer_sdp = Some(sdp),
            EngineEvent::Quality(q)
                if q.participant == "bob"
                    && q.direction == QualityDirection::Outbound
                    && q.kind == MediaKind::Video =>
            {
                outbound.push(q)
            }
            _ => {}
        }
    }
    let offer_sdp = offer_sdp.expect("bob got an offer");
    let rtx_offered = offer_sdp.contains("a=ssrc-group:FID");
    let loss = bob.subscriber.simulated_loss().expect("loss is simulated");
    let stats = call.engine.stats().await.expect("stats");
    let video = received_from(bob, "alice", MediaKind::Video);
    eprintln!(
        "bob video packets {video}; {loss:?}; engine nacks_received {} retransmissions {} \
         unavailable {}; RTX offered {rtx_offered}",
        stats.nacks_received, stats.retransmissions, stats.retransmissions_unavailable
    );
    for q in &outbound {
        eprintln!(
            "bob outbound video: {} bps loss {:.4} jitter {:.3} ms rtt {:?}",
            q.bitrate_bps, q.packet_loss, q.jitter_ms, q.rtt_ms
        );
    }

    // ~75 video packets/s for 3 s, every 10th dropped.
    assert!(loss.dropped >= 10, "{loss:?}");
    assert!(stats.nacks_received > 0, "{stats:?}");
    assert!(
        stats.retransmissions >= loss.recovered,
        "{stats:?} {loss:?}"
    );
    // The leg negotiated RTX, so the repairs came on the repair stream, not as repeats.
    assert!(rtx_offered, "{offer_sdp}");
    common::assert_repaired(&loss);
    // The subscriber's receiver reports count the primary stream as the path delivered it: rtc
    // unwraps RTX after its interceptor chain, so repairs never fill the reported gaps and the
    // outbound quality shows the loss before repair (~0.09-0.11 per interval when observed).
    assert!(!outbound.is_empty(), "no outbound video quality for bob");
    for q in &outbound {
        assert!((0.0..=1.0).contains(&q.packet_loss), "{q:?}");
    }
    let worst = outbound.iter().map(|q| q.packet_loss).fold(0.0, f64::max);
    assert!(
        worst >= 0.03,
        "loss before repair not reported: {outbound:?}"
    );

    for c in &clients {
        call.leave(c).await;
    }
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_asks_a_publisher_for_a_lost_packet_at_most_three_times() {
    let call = Call::new(1);
    // Every 10th video sequence number never leaves the publisher: nothing can repair it, so
    // whatever the server asks for it shows how often it asks.
    let lossy = BotConfig {
        skip_every_nth_video: Some(10),
        ..BotConfig::default()
    };
    let publisher = call
        .publish(
            "alice",
            Publisher::with_config(&lossy)
                .await
                .expect("publisher bot builds"),
        )
        .await;
    let (_, video_sent) = publisher
        .send_media(Duration::from_secs(3))
        .await
        .expect("bot sends media");
    // The generator asks every 100 ms; give the last gaps their three requests.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let nacks = publisher.nacks_received();
    let skipped = video_sent / 9; // one in ten numbers is skipped: ~1 per 9 sent
    eprintln!(
        "{} sequence numbers asked for, at most {} times each; {video_sent} video packets sent",
        nacks.len(),
        nacks.values().max().copied().unwrap_or(0)
    );
    assert!(
        nacks.len() as u64 * 2 >= skipped,
        "most skipped numbers are asked for: {} of about {skipped}",
        nacks.len()
    );
    let worst = nacks.values().max().copied().unwrap_or(0);
    assert!(
        (1..=3).contains(&worst),
        "each lost packet is asked for at most three times: {nacks:?}"
    );
    call.engine.shutdown().await;
}
