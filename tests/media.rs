//! Media through the whole server: webrtc-rs bots signal over the WebSocket, publish
//! generated Opus and VP8 to the SFU, and count what they receive from each other.

mod support;

use std::time::Duration;

use confab_bot::participant::BotParticipant;
use serde_json::{Value, json};
use support::db::TestDb;
use support::server::{TestServer, token};
use support::ws::WsClient;

const WAIT: Duration = Duration::from_secs(20);

async fn bot(server: &TestServer, user: &str) -> BotParticipant {
    BotParticipant::connect(&server.base, &token(user), user)
        .await
        .expect("bot connects")
}

/// Packets `me` received from `publisher`'s tracks, by kind.
fn received_from(me: &BotParticipant, publisher: &str) -> (u64, u64) {
    let mut audio = 0;
    let mut video = 0;
    for track in me.subscriber.tracks() {
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

/// Waits until `check` holds, polling every 100 ms, for at most [`WAIT`].
async fn until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// `caller` calls `callee` directly and `callee` accepts; returns the call id.
async fn direct_call(caller: &BotParticipant, callee: &BotParticipant, media: &str) -> String {
    let created = caller
        .request(
            "call:initiate",
            json!({"invitees": [callee.user], "media": media}),
        )
        .await
        .expect("call:initiate");
    let call_id = created["call"]["id"].as_str().expect("call id").to_owned();
    callee
        .request("call:accept", json!({"call_id": call_id}))
        .await
        .expect("call:accept");
    call_id
}

fn track_list(bot: &BotParticipant) -> Vec<Value> {
    bot.tracks()["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_carries_audio_and_video_both_ways() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start_with(&db, |s| s.quality_interval = Duration::from_millis(700)).await;
    let alice = bot(&server, "alice").await;
    let bob = bot(&server, "bob").await;

    let call_id = direct_call(&alice, &bob, "video").await;
    bob.event("call:incoming", WAIT)
        .await
        .expect("bob was rung");

    let alice_pub = alice.publish(&call_id).await.expect("alice publishes");
    let bob_pub = bob.publish(&call_id).await.expect("bob publishes");
    let sending = [
        tokio::spawn(async move { alice_pub.send_media(Duration::from_secs(8)).await.ok() }),
        tokio::spawn(async move { bob_pub.send_media(Duration::from_secs(8)).await.ok() }),
    ];

    assert!(
        until(|| {
            let (a, v) = received_from(&alice, "bob");
            let (b, w) = received_from(&bob, "alice");
            a > 20 && v > 20 && b > 20 && w > 20
        })
        .await,
        "media flows both ways: alice got {:?} from bob, bob got {:?} from alice",
        received_from(&alice, "bob"),
        received_from(&bob, "alice")
    );

    // rtc:tracks names each forwarded track, and its ids match the subscriber SDP's msid.
    let tracks = track_list(&alice);
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    for t in &tracks {
        assert_eq!(t["user_id"], "bob");
        assert_eq!(t["stream_id"], "bob");
        assert_eq!(t["muted"], false);
    }
    let mut sources: Vec<&str> = tracks.iter().filter_map(|t| t["source"].as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["camera", "microphone"]);
    let remote_ids: Vec<String> = alice
        .subscriber
        .tracks()
        .into_iter()
        .map(|t| t.track_id)
        .collect();
    for t in &tracks {
        assert!(
            remote_ids.iter().any(|id| t["track_id"] == id.as_str()),
            "{t} in {remote_ids:?}"
        );
    }

    // Muting shows in rtc:tracks for the other side.
    bob.request(
        "call:media",
        json!({"call_id": call_id, "audio_muted": true}),
    )
    .await
    .unwrap();
    assert!(
        until(|| track_list(&alice)
            .iter()
            .any(|t| t["source"] == "microphone" && t["muted"] == true))
        .await,
        "alice sees bob's microphone muted: {:?}",
        track_list(&alice)
    );

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("confab_peer_connections{role=\"publisher\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("confab_peer_connections{role=\"subscriber\"} 2"),
        "{metrics}"
    );

    // Quality from RTCP: announced to the call, stored, and in the histograms.
    let quality = alice
        .event("call:quality", WAIT)
        .await
        .expect("call:quality arrives");
    assert!(
        (1..=5).contains(&quality["score"].as_u64().unwrap()),
        "{quality}"
    );
    assert!(quality["packet_loss"].as_f64().unwrap() <= 1.0);
    assert!(quality["jitter_ms"].as_f64().unwrap() >= 0.0);
    assert!(quality["rtt_ms"].as_f64().unwrap() >= 0.0);
    let samples_path = format!("/api/v1/calls/{call_id}/quality");
    let mut directions = Vec::new();
    for _ in 0..100 {
        let (_, body) = server.get(&samples_path, &token("bob")).await;
        directions = body["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["user_id"] == "bob" && s["bitrate_bps"].as_i64().unwrap_or(0) > 0)
            .map(|s| {
                format!(
                    "{}/{}",
                    s["direction"].as_str().unwrap(),
                    s["kind"].as_str().unwrap()
                )
            })
            .collect();
        directions.sort();
        directions.dedup();
        if directions.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        directions,
        [
            "inbound/audio",
            "inbound/video",
            "outbound/audio",
            "outbound/video"
        ],
        "stored samples for bob"
    );
    // RTT needs a receiver report that echoes a sender report: a few intervals in.
    let families = [
        "confab_packet_loss_ratio_count{direction=\"inbound\"}",
        "confab_jitter_seconds_count{direction=\"outbound\"}",
        "confab_rtt_seconds_count{direction=\"outbound\"}",
        "confab_rtp_packets_forwarded_total{kind=\"video\"}",
        "confab_forwarding_latency_seconds_bucket",
        "confab_rtp_retransmissions_total{result=\"sent\"}",
        "confab_rtp_retransmissions_total{result=\"unavailable\"}",
    ];
    // Every series exists from the start at 0: observed means present and no longer 0.
    let observed = |metrics: &str, series: &str| {
        metrics.contains(series) && !metrics.contains(&format!("{series} 0\n"))
    };
    let observed_series = &families[..3];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.metrics().await;
        if families.iter().all(|f| metrics.contains(f))
            && observed_series.iter().all(|f| observed(&metrics, f))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for family in families {
        assert!(metrics.contains(family), "{family} in\n{metrics}");
    }
    for series in observed_series {
        assert!(
            observed(&metrics, series),
            "{series} observed in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("confab_rtp_packets_forwarded_total{kind=\"video\"} 0\n"),
        "{metrics}"
    );

    for s in sending {
        let _ = s.await;
    }
    alice
        .request("call:end", json!({"call_id": call_id}))
        .await
        .unwrap();
    let engine = server.state.media.engine().clone();
    assert!(
        until_async(|| {
            let engine = engine.clone();
            async move { engine.stats().await.map(|s| s.peers == 0).unwrap_or(false) }
        })
        .await,
        "ending the call frees every peer connection"
    );
    alice.close().await;
    bob.close().await;
}

async fn until_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_group_call_renegotiates_the_others() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    server
        .conversation("team", &["alice", "bob", "carol"])
        .await;
    let alice = bot(&server, "alice").await;
    let bob = bot(&server, "bob").await;
    let carol = bot(&server, "carol").await;
    let created = alice
        .request(
            "call:initiate",
            json!({"conversation_id": "team", "invitees": ["bob", "carol"], "media": "video"}),
        )
        .await
        .unwrap();
    let call_id = created["call"]["id"].as_str().unwrap().to_owned();
    for who in [&bob, &carol] {
        who.request("call:accept", json!({"call_id": call_id}))
            .await
            .unwrap();
    }
    let mut senders = Vec::new();
    for who in [&alice, &bob, &carol] {
        let publisher = who.publish(&call_id).await.expect("publishes");
        senders.push(tokio::spawn(async move {
            publisher.send_media(Duration::from_secs(6)).await.ok()
        }));
    }
    assert!(
        until(|| {
            let (a, _) = received_from(&alice, "carol");
            let (b, _) = received_from(&bob, "carol");
            a > 10 && b > 10 && track_list(&alice).len() == 4 && track_list(&bob).len() == 4
        })
        .await,
        "everyone receives everyone: alice's tracks {:?}",
        track_list(&alice)
    );

    carol
        .request("call:leave", json!({"call_id": call_id}))
        .await
        .unwrap();
    let left = alice
        .event("call:participant-left", WAIT)
        .await
        .expect("alice hears carol left");
    assert_eq!(left["user_id"], "carol");
    assert!(
        until(|| track_list(&alice).len() == 2 && track_list(&bob).len() == 2).await,
        "carol's tracks are gone from the others: {:?}",
        track_list(&alice)
    );
    assert!(track_list(&alice).iter().all(|t| t["user_id"] == "bob"));
    for s in senders {
        let _ = s.await;
    }
    for who in [&alice, &bob, &carol] {
        who.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_requests_are_checked_before_the_engine_sees_them() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut carol = WsClient::connect(&server, &token("carol")).await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "video"}))
        .await;

    // Not a participant: FORBIDDEN, whatever the SDP.
    let frame = carol
        .request(
            "rtc:offer",
            json!({"call_id": call_id, "target": "publisher", "sdp": "v=0"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "FORBIDDEN");

    // Joined, but SDP that cannot be parsed: INVALID_ARGUMENT, and no peer is created.
    let frame = alice
        .request(
            "rtc:offer",
            json!({"call_id": call_id, "target": "publisher", "sdp": "this is not sdp"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT", "{frame}");
    // Offers are for the publisher only; answers for the subscriber only.
    let frame = alice
        .request(
            "rtc:offer",
            json!({"call_id": call_id, "target": "subscriber", "sdp": "v=0"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT");
    let frame = alice
        .request(
            "rtc:answer",
            json!({"call_id": call_id, "target": "publisher", "sdp": "v=0"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT");
    // Nothing offered to alice yet: there is nothing to answer.
    let frame = alice
        .request(
            "rtc:answer",
            json!({"call_id": call_id, "target": "subscriber", "sdp": "v=0"}),
        )
        .await;
    assert!(
        ["INVALID_STATE", "INVALID_ARGUMENT"]
            .contains(&frame["data"]["code"].as_str().unwrap_or("")),
        "{frame}"
    );
    let frame = alice
        .request(
            "rtc:candidate",
            json!({"call_id": call_id, "target": "publisher", "candidate": null}),
        )
        .await;
    assert_eq!(frame["type"], "ack");
    let frame = alice
        .request(
            "rtc:subscribe",
            json!({"call_id": call_id, "user_id": "mallory", "source": "camera", "quality": "low"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT");

    let stats = server.state.media.engine().stats().await.unwrap();
    assert_eq!(stats.peers, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_peer_keeps_the_seat_when_the_socket_drops() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start_with(&db, |s| s.disconnect_grace = Duration::from_millis(800)).await;
    let alice = bot(&server, "alice").await;
    let bob = bot(&server, "bob").await;
    let call_id = direct_call(&alice, &bob, "audio").await;
    let publisher = bob.publish(&call_id).await.unwrap();
    publisher
        .wait_connected(WAIT)
        .await
        .expect("bob's publisher connects");
    let sending =
        tokio::spawn(async move { publisher.send_media(Duration::from_secs(3)).await.ok() });

    // Bob's socket goes away; his peer connection stays up, so he stays joined.
    bob.signaling.close().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, call) = server
        .get(&format!("/api/v1/calls/{call_id}"), &token("alice"))
        .await;
    assert_eq!(call["status"], "ongoing", "{call}");
    let _ = sending.await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_in_a_row_leave_nothing_behind() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    for round in 0..20 {
        let alice = bot(&server, "alice").await;
        let bob = bot(&server, "bob").await;
        let call_id = direct_call(&alice, &bob, "video").await;
        let a = alice.publish(&call_id).await.expect("alice publishes");
        let b = bob.publish(&call_id).await.expect("bob publishes");
        a.wait_connected(WAIT)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.wait_connected(WAIT)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let who = if round % 2 == 0 { &alice } else { &bob };
        let op = if round % 3 == 0 {
            "call:leave"
        } else {
            "call:end"
        };
        who.request(op, json!({"call_id": call_id})).await.unwrap();
        alice.close().await;
        bob.close().await;
    }
    let engine = server.state.media.engine().clone();
    let clean = until_async(|| {
        let engine = engine.clone();
        async move {
            engine.stats().await.is_ok_and(|s| {
                s.peers == 0
                    && s.rooms == 0
                    && s.demux_ufrags == 0
                    && s.demux_addrs == 0
                    && s.timers == 0
            })
        }
    })
    .await;
    assert!(clean, "engine after 20 calls: {:?}", engine.stats().await);
    assert_eq!(server.state.media.session_count(), 0);
    let metrics = server.metrics().await;
    for gauge in [
        "confab_peer_connections{role=\"publisher\"} 0",
        "confab_peer_connections{role=\"subscriber\"} 0",
        "confab_calls_active 0",
        "confab_participants_joined 0",
    ] {
        assert!(metrics.contains(gauge), "{gauge} in\n{metrics}");
    }
    assert!(
        metrics.contains("confab_calls_total{status=\"completed\"} 20"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_is_sent_again_to_the_socket_that_rejoins() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let bob = bot(&server, "bob").await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "video"}))
        .await;
    bob.request("call:accept", json!({"call_id": call_id}))
        .await
        .unwrap();
    let publisher = bob.publish(&call_id).await.expect("bob publishes");
    let sending =
        tokio::spawn(async move { publisher.send_media(Duration::from_secs(4)).await.ok() });

    // Alice is offered bob's tracks but her socket drops before she answers.
    let first = alice.event_for("rtc:offer", &call_id).await;
    assert_eq!(first["target"], "subscriber");
    alice.close().await;

    // She comes back within the grace and re-joins: the offer comes again, tracks first.
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    alice.ok("call:join", json!({"call_id": call_id})).await;
    let tracks = alice.event_for("rtc:tracks", &call_id).await;
    assert!(
        tracks["tracks"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["user_id"] == "bob")),
        "{tracks}"
    );
    let again = alice.event_for("rtc:offer", &call_id).await;
    assert_eq!(again["sdp"], first["sdp"]);
    let _ = sending.await;
    bob.close().await;
}

/// The next `call:active-speakers` whose `user_ids` satisfy `pred`, skipping others.
async fn speakers_until(me: &BotParticipant, call_id: &str, pred: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = me
            .event("call:active-speakers", left)
            .await
            .unwrap_or_else(|| panic!("{} gets call:active-speakers in time", me.user));
        assert_eq!(event["call_id"], call_id, "{event}");
        let ids = event["user_ids"].as_array().expect("user_ids is a list");
        if pred(ids) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speakers_reach_the_call_and_loudest_n_holds_back_the_silent() {
    let db = TestDb::sqlite();
    // Loudest-1 from two participants, so a two-party call shows it.
    let server = TestServer::start_with(&db, |s| {
        s.loudest_n = 1;
        s.loudest_n_min_participants = 2;
    })
    .await;
    let alice = bot(&server, "alice").await;
    let bob = bot(&server, "bob").await;
    let call_id = direct_call(&alice, &bob, "audio").await;
    let alice_pub = alice.publish(&call_id).await.expect("alice publishes");
    let bob_pub = bob.publish(&call_id).await.expect("bob publishes");
    assert!(alice_pub.sends_audio_level() && bob_pub.sends_audio_level());
    alice_pub.set_audio_level(15);
    let sending = [alice_pub.clone(), bob_pub.clone()]
        .map(|p| tokio::spawn(async move { p.send_media(Duration::from_secs(30)).await.ok() }));

    for who in [&alice, &bob] {
        speakers_until(who, &call_id, |ids| ids == ["alice"]).await;
    }
    // Bob is silent and only the loudest is forwarded: Alice hears nothing of him, and the
    // held-back packets show in the metrics.
    assert!(
        until(|| received_from(&bob, "alice").0 > 20).await,
        "bob hears alice: {:?}",
        received_from(&bob, "alice")
    );
    let heard_of_bob = received_from(&alice, "bob").0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received_from(&alice, "bob").0, heard_of_bob);
    assert!(
        until_async(|| {
            let server = &server;
            async move {
                let metrics = server.metrics().await;
                metrics.contains("confab_rtp_audio_suppressed_total ")
                    && !metrics.contains("confab_rtp_audio_suppressed_total 0\n")
            }
        })
        .await,
        "{}",
        server.metrics().await
    );

    // The loud voice moves to Bob: the list follows, and Alice now hears him.
    bob_pub.set_audio_level(10);
    alice_pub.set_audio_level(127);
    for who in [&alice, &bob] {
        speakers_until(who, &call_id, |ids| {
            ids.first().and_then(Value::as_str) == Some("bob")
        })
        .await;
    }
    assert!(
        until(|| received_from(&alice, "bob").0 > heard_of_bob + 20).await,
        "alice hears bob once he speaks"
    );

    for s in sending {
        s.abort();
    }
    alice
        .request("call:end", json!({"call_id": call_id}))
        .await
        .unwrap();
    alice.close().await;
    bob.close().await;
}

/// The m-sections of `sdp` that are not rejected, each as its lines.
fn live_sections(sdp: &str) -> Vec<Vec<&str>> {
    sdp.split("\nm=")
        .skip(1)
        .filter(|s| s.split_whitespace().nth(1) != Some("0"))
        .map(|s| s.lines().map(str::trim).collect())
        .collect()
}

/// Checks that every live m-section of `sdp` carries `candidate` and `a=end-of-candidates`, and
/// returns how many there are.
fn every_section_has(sdp: &str, candidate: &str) -> usize {
    let line = format!("a={candidate}");
    let sections = live_sections(sdp);
    let count = sections.len();
    for section in sections {
        assert!(
            section.contains(&line.as_str()) && section.contains(&"a=end-of-candidates"),
            "an m-section without {line} and end-of-candidates: {section:?}"
        );
    }
    count
}

/// The frame that comes first of `sdp_frame` and a `target` rtc:candidate must be the SDP; then
/// the candidate (component 1, named by the first m-section) and a `null` follow. Returns the
/// SDP frame and the candidate line.
async fn sdp_then_candidates(
    ws: &mut WsClient,
    target: &str,
    sdp_frame: impl Fn(&Value) -> bool,
) -> (Value, String) {
    let is_candidate = |f: &Value| f["type"] == "rtc:candidate" && f["data"]["target"] == target;
    let first = ws
        .wait_for(|f| sdp_frame(f) || is_candidate(f))
        .await
        .unwrap_or_else(|| panic!("no {target} SDP"));
    assert!(
        sdp_frame(&first),
        "a {target} candidate before the SDP: {first}"
    );
    let trickled = ws.event("rtc:candidate").await;
    assert_eq!(trickled["target"], target, "{trickled}");
    let candidate = trickled["candidate"]["candidate"]
        .as_str()
        .unwrap_or_else(|| panic!("a candidate line: {trickled}"))
        .to_owned();
    assert!(
        candidate.starts_with("candidate:") && candidate.split_whitespace().nth(1) == Some("1"),
        "{candidate}"
    );
    assert_eq!(trickled["candidate"]["sdp_mline_index"], 0, "{trickled}");
    assert_eq!(trickled["candidate"]["sdp_mid"], "0", "{trickled}");
    let end = ws.event("rtc:candidate").await;
    assert_eq!(end["target"], target, "{end}");
    assert!(
        end["candidate"].is_null(),
        "null ends the candidates: {end}"
    );
    (first, candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_candidate_is_in_every_m_section_and_trickled_after_each_sdp() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let bob = bot(&server, "bob").await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "video"}))
        .await;
    bob.request("call:accept", json!({"call_id": call_id}))
        .await
        .unwrap();

    // Alice publishes audio and video: the answer comes in the ack, and its candidate after it.
    let publisher = confab_bot::media::Publisher::new()
        .await
        .expect("a webrtc-rs publisher");
    let offer = publisher.offer().await.expect("an offer");
    alice
        .send(json!({"id": "pub", "type": "rtc:offer",
            "data": {"call_id": call_id, "target": "publisher", "sdp": offer}}))
        .await;
    let (ack, candidate) = sdp_then_candidates(&mut alice, "publisher", |f| f["id"] == "pub").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let answer = ack["data"]["sdp"].as_str().expect("answer sdp");
    assert_eq!(every_section_has(answer, &candidate), 2, "{answer}");

    // Bob's audio and video are offered to alice, each track once its first packet is in: the
    // candidate follows every offer, first and renegotiated, until one carries both.
    let bob_publisher = bob.publish(&call_id).await.expect("bob publishes");
    let sending =
        tokio::spawn(async move { bob_publisher.send_media(Duration::from_secs(4)).await.ok() });
    let subscriber = confab_bot::media::Subscriber::new()
        .await
        .expect("a webrtc-rs subscriber");
    let mut offers = 0;
    loop {
        let (offer, candidate) = sdp_then_candidates(&mut alice, "subscriber", |f| {
            f["type"] == "rtc:offer" && f["data"]["target"] == "subscriber"
        })
        .await;
        offers += 1;
        let sdp = offer["data"]["sdp"].as_str().expect("offer sdp").to_owned();
        let sections = every_section_has(&sdp, &candidate);
        if sections >= 2 {
            break;
        }
        assert!(offers < 3, "no offer with bob's audio and video: {sdp}");
        let answer = subscriber.answer(sdp).await.expect("alice answers");
        alice
            .ok(
                "rtc:answer",
                json!({"call_id": call_id, "target": "subscriber", "sdp": answer}),
            )
            .await;
    }
    let _ = sending.await;
    bob.close().await;
}
