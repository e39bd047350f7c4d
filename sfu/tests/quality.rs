//! Quality reports and RTCP counters from a real two-party call over loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Call, send_all, start_engine_with};
use confab_sfu::{
    EngineConfig, EngineEvent, FORWARDING_LATENCY_BOUNDS_US, MediaKind, QualityDirection,
    QualityReport,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_reports_quality_both_ways() {
    let engine = start_engine_with(EngineConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        quality_interval: Duration::from_secs(1),
        ..EngineConfig::default()
    });
    let mut call = Call::with_engine(engine);
    let a = call.add("alice", true).await;
    let b = call.add("bob", true).await;
    let clients = [a, b];
    // Long enough for sender reports to reach the subscribers (1 s period) and their receiver
    // reports echoing them to come back (another 1 s), with room for a loaded machine.
    send_all(&clients, Duration::from_secs(6)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let mut reports: Vec<QualityReport> = Vec::new();
    while let Ok(event) = call.events.try_recv() {
        if let EngineEvent::Quality(q) = event {
            reports.push(q);
        }
    }
    for q in &reports {
        eprintln!(
            "{} {:?} {:?}: {} bps loss {:.4} jitter {:.3} ms rtt {:?}",
            q.participant, q.direction, q.kind, q.bitrate_bps, q.packet_loss, q.jitter_ms, q.rtt_ms
        );
    }
    for q in &reports {
        assert_eq!(q.room, call.room);
        assert!((0.0..=1.0).contains(&q.packet_loss), "{q:?}");
        assert!(q.jitter_ms.is_finite() && q.jitter_ms >= 0.0, "{q:?}");
        if q.direction == QualityDirection::Inbound {
            assert_eq!(q.rtt_ms, None, "{q:?}");
        }
        if let Some(rtt) = q.rtt_ms {
            // Loopback: anything near a second means the sender reports' clock is not the one
            // the round trip is read against.
            assert!(rtt.is_finite() && (0.0..1000.0).contains(&rtt), "{q:?}");
        }
    }
    for who in ["alice", "bob"] {
        for direction in [QualityDirection::Inbound, QualityDirection::Outbound] {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let of: Vec<&QualityReport> = reports
                    .iter()
                    .filter(|q| q.participant == who && q.direction == direction && q.kind == kind)
                    .collect();
                assert!(
                    of.len() >= 2,
                    "{who} {direction:?} {kind:?}: {} reports",
                    of.len()
                );
                assert!(of.iter().all(|q| q.bitrate_bps > 0), "{of:?}");
                // Loopback loses (almost) nothing; allow a little for a loaded machine.
                let mean_loss = of.iter().map(|q| q.packet_loss).sum::<f64>() / of.len() as f64;
                assert!(mean_loss < 0.05, "{who} {direction:?} {kind:?}: {of:?}");
            }
            if direction == QualityDirection::Outbound {
                // Sender reports went out on the subscriber legs and receiver reports echoing
                // them came back and reached the worker.
                assert!(
                    reports.iter().any(|q| q.participant == who
                        && q.direction == direction
                        && q.rtt_ms.is_some()),
                    "{who}: no outbound RTT"
                );
            }
        }
    }

    let stats = call.engine.stats().await.expect("stats");
    eprintln!("{stats:?}");
    assert!(stats.forwarded_packets_audio > 0 && stats.forwarded_packets_video > 0);
    assert!(stats.forwarded_bytes_audio > 0 && stats.forwarded_bytes_video > 0);
    assert!(stats.forwarded_bytes_video > stats.forwarded_bytes_audio);
    assert_eq!(
        stats.forwarded_packets_audio + stats.forwarded_packets_video,
        stats.forwarded_packets
    );
    assert_eq!(
        stats.forwarded_bytes_audio + stats.forwarded_bytes_video,
        stats.forwarded_bytes
    );
    // Reports flow: the worker's SRs on subscriber legs, rtc's RRs on publisher legs, and the
    // subscribers' RRs reach the worker.
    assert!(stats.sender_reports_sent > 0, "{stats:?}");
    assert!(stats.receiver_reports_sent > 0, "{stats:?}");
    assert!(stats.receiver_reports_received > 0, "{stats:?}");
    // Every forwarded packet was flushed and timed.
    let latency = &stats.forwarding_latency;
    assert_eq!(latency.count(), stats.forwarded_packets, "{latency:?}");
    assert_eq!(latency.counts.len(), FORWARDING_LATENCY_BOUNDS_US.len() + 1);
    assert!(latency.sum_us > 0);

    for c in &clients {
        call.leave(c).await;
    }
    call.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_keyframe_requests_are_counted() {
    let call = Call::new(1);
    let a = call.add("alice", true).await;
    let c = call.add("carol", true).await;
    let sender = a.publisher.clone().expect("alice publishes");
    let sending = tokio::spawn(async move { sender.send_media(Duration::from_secs(3)).await });
    c.subscriber
        .wait_connected(common::CONNECT_TIMEOUT)
        .await
        .expect("carol's subscriber connects");
    let got_video = common::eventually(Duration::from_secs(10), || {
        common::received_from(&c, "alice", MediaKind::Video) > 0
    })
    .await;
    assert!(got_video);
    let before = call.engine.stats().await.expect("stats");
    let sent = c
        .subscriber
        .request_keyframes()
        .await
        .expect("carol sends PLI");
    assert_eq!(sent, 1);
    let mut counted = false;
    for _ in 0..50 {
        let s = call.engine.stats().await.expect("stats");
        if s.plis_received > before.plis_received {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted, "carol's PLI was counted");
    sending.await.expect("send task").expect("alice sends");
    let stats = call.engine.stats().await.expect("stats");
    eprintln!(
        "plis received {} relayed {}, nacks received {}",
        stats.plis_received, stats.plis_relayed, stats.nacks_received
    );
    for client in [&a, &c] {
        call.leave(client).await;
    }
    call.engine.shutdown().await;
}
