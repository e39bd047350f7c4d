//! Cluster mode's Redis state against a real `redis-server` (started per test by
//! `support/redis.rs`): the node registry and the cluster-wide seats, with two "nodes" as two
//! separate connection managers.
//!
//! Ignored by default (`cargo test --workspace` needs no services); `.ci/run` installs
//! `redis-server` and runs them with `--ignored`.

#[path = "support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use confab::cluster::registry::least_loaded;
use confab::cluster::{
    Beat, Claim, Clock, ClusterError, Keys, ManualClock, NodeRecord, Registry, Seats, connect,
};
use confab_signaling::{ErrorCode, OpaqueId};
use redis::AsyncCommands;
use redis_server::RedisServer;
use time::OffsetDateTime;
use tokio::sync::Barrier;
use uuid::Uuid;

/// Rounds of each race: every one must have exactly one winner. In each round the two claims
/// are tasks released together by a barrier, on a runtime with two worker threads.
const RACE_ROUNDS: usize = 200;

/// A key prefix no other test uses.
fn keys() -> Keys {
    Keys::new(format!("test:{}:", Uuid::new_v4()))
}

fn id(text: &str) -> OpaqueId {
    OpaqueId::parse(text).expect("valid id")
}

fn record(node: &str, participants: u32, cpu_ratio: f64) -> NodeRecord {
    NodeRecord {
        id: node.to_owned(),
        started_at: OffsetDateTime::now_utc(),
        http_url: format!("http://{node}.internal:8080"),
        rtc_addrs: vec!["10.0.0.1:50000".parse().unwrap()],
        calls: participants.div_ceil(2),
        participants,
        cpu_ratio,
        draining: false,
    }
}

/// Runs two claims as tasks on the runtime's two worker threads, released together by a
/// barrier; odd rounds spawn `b` first, so that neither side is favoured by its place.
async fn race<A, B>(round: usize, a: A, b: B) -> (Claim, Claim)
where
    A: Future<Output = Result<Claim, ClusterError>> + Send + 'static,
    B: Future<Output = Result<Claim, ClusterError>> + Send + 'static,
{
    let start = Arc::new(Barrier::new(2));
    let (start_a, start_b) = (start.clone(), start);
    let a = async move {
        start_a.wait().await;
        a.await
    };
    let b = async move {
        start_b.wait().await;
        b.await
    };
    let (a, b) = if round.is_multiple_of(2) {
        let a = tokio::spawn(a);
        (a, tokio::spawn(b))
    } else {
        let b = tokio::spawn(b);
        (tokio::spawn(a), b)
    };
    let (a, b) = tokio::join!(a, b);
    (
        a.expect("task").expect("claim a"),
        b.expect("task").expect("claim b"),
    )
}

fn ids(nodes: &[NodeRecord]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn a_silent_node_is_lost_after_the_window_and_claimed_once() {
    let redis = RedisServer::start();
    let (keys, clock) = (keys(), ManualClock::starting_at(1_000_000));
    let registry =
        |conn| Registry::new(conn, keys.clone()).with_clock(Clock::Manual(clock.clone()));
    let on_a = registry(connect(&redis.url()).await.unwrap());
    let on_b = registry(connect(&redis.url()).await.unwrap());
    let (a, b) = (record("a", 0, 0.1), record("b", 0, 0.1));

    assert_eq!(
        on_a.heartbeat(&a).await.unwrap(),
        Beat::Registered { replaced: None }
    );
    assert_eq!(
        on_b.heartbeat(&b).await.unwrap(),
        Beat::Registered { replaced: None }
    );
    assert_eq!(on_a.heartbeat(&a).await.unwrap(), Beat::Renewed);
    assert_eq!(ids(&on_b.live_nodes().await.unwrap()), ["a", "b"]);

    // 10 s of silence is not yet lost ("older than 10 s" is).
    clock.advance(Registry::LOST_AFTER);
    assert_eq!(ids(&on_a.live_nodes().await.unwrap()), ["a", "b"]);
    assert!(on_a.claim_lost_nodes().await.unwrap().is_empty());

    on_a.heartbeat(&a).await.unwrap();
    clock.advance(Duration::from_millis(1));
    assert_eq!(ids(&on_a.live_nodes().await.unwrap()), ["a"]);
    assert!(
        on_a.place_call()
            .await
            .unwrap()
            .is_some_and(|n| n.id == "a")
    );

    // Both survivors ask at once; exactly one of them gets b.
    let (from_a, from_b) = tokio::join!(on_a.claim_lost_nodes(), on_b.claim_lost_nodes());
    let mut claimed = from_a.unwrap();
    claimed.extend(from_b.unwrap());
    assert_eq!(claimed, std::slice::from_ref(&b));
    assert!(on_a.claim_lost_nodes().await.unwrap().is_empty());

    // b comes back: its heartbeat tells it that it was declared lost.
    assert_eq!(
        on_b.heartbeat(&b).await.unwrap(),
        Beat::Registered { replaced: None }
    );
    assert_eq!(ids(&on_a.live_nodes().await.unwrap()), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn heartbeats_are_timed_by_the_redis_clock() {
    let redis = RedisServer::start();
    let keys = keys();
    let conn = connect(&redis.url()).await.unwrap();
    let contract = Registry::new(conn.clone(), keys.clone());
    let short = Registry::new(conn, keys).with_lost_after(Duration::from_millis(50));
    let a = record("a", 0, 0.0);
    contract.heartbeat(&a).await.unwrap();
    assert_eq!(ids(&contract.live_nodes().await.unwrap()), ["a"]);

    // With a 50 ms window, a goes silent by itself: wait for it, however long that takes here.
    let mut polls = 0;
    while !short.live_nodes().await.unwrap().is_empty() {
        polls += 1;
        assert!(polls < 1000, "a never went silent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(short.claim_lost_nodes().await.unwrap(), [a]);
    assert!(contract.live_nodes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn a_restart_on_the_same_id_replaces_its_record() {
    let redis = RedisServer::start();
    let keys = keys();
    let mut conn = connect(&redis.url()).await.unwrap();
    let registry = Registry::new(conn.clone(), keys.clone());

    let first = record("n1", 4, 0.5);
    registry.heartbeat(&first).await.unwrap();
    let second = NodeRecord {
        started_at: first.started_at + time::Duration::seconds(30),
        http_url: "http://n1.internal:9090".into(),
        participants: 0,
        calls: 0,
        ..first.clone()
    };
    assert_eq!(
        registry.heartbeat(&second).await.unwrap(),
        Beat::Registered {
            replaced: Some(first.clone())
        }
    );
    assert_eq!(registry.heartbeat(&second).await.unwrap(), Beat::Renewed);
    assert_eq!(
        registry.live_nodes().await.unwrap(),
        std::slice::from_ref(&second)
    );
    let fields: usize = conn.hlen(keys.nodes()).await.unwrap();
    let beats: usize = conn.zcard(keys.heartbeats()).await.unwrap();
    assert_eq!((fields, beats), (1, 1), "one record, one heartbeat");

    // A record this node cannot read is left out, not fatal to the list; a CPU use beyond
    // 1.0 is written clamped.
    let _: () = conn
        .hset(keys.nodes(), "garbled", "{not json")
        .await
        .unwrap();
    let _: () = conn
        .zadd(keys.heartbeats(), "garbled", i64::MAX)
        .await
        .unwrap();
    let mut hot = record("hot", 0, 7.5);
    registry.heartbeat(&hot).await.unwrap();
    hot.cpu_ratio = 1.0;
    assert_eq!(registry.live_nodes().await.unwrap(), [hot, second]);
    registry.deregister("garbled").await.unwrap();
    registry.deregister("hot").await.unwrap();

    assert!(registry.deregister("n1").await.unwrap());
    assert!(!registry.deregister("n1").await.unwrap());
    assert!(registry.live_nodes().await.unwrap().is_empty());
    assert!(registry.claim_lost_nodes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn placement_takes_the_least_loaded_live_node_that_is_not_draining() {
    let redis = RedisServer::start();
    let clock = ManualClock::starting_at(5_000_000);
    let registry = Registry::new(connect(&redis.url()).await.unwrap(), keys())
        .with_clock(Clock::Manual(clock.clone()));
    assert_eq!(registry.place_call().await.unwrap(), None, "no nodes");

    let busy = record("busy", 12, 0.2);
    let mut draining = record("draining", 0, 0.0);
    draining.draining = true;
    let calm = record("calm", 2, 0.6);
    let calmer = record("calmer", 2, 0.3);
    let silent = record("silent", 0, 0.0);
    registry.heartbeat(&silent).await.unwrap();
    clock.advance(Duration::from_secs(6));
    for node in [&busy, &draining, &calm, &calmer] {
        registry.heartbeat(node).await.unwrap();
    }
    assert_eq!(
        registry.place_call().await.unwrap().map(|n| n.id),
        Some("silent".into()),
        "live and idle"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        registry.place_call().await.unwrap().map(|n| n.id),
        Some("calmer".into()),
        "silent is lost, draining is skipped, calmer ties calm on participants with less CPU"
    );

    let mut calmer_draining = calmer.clone();
    calmer_draining.draining = true;
    registry.heartbeat(&calmer_draining).await.unwrap();
    let live = registry.live_nodes().await.unwrap();
    assert_eq!(ids(&live), ["busy", "calm", "calmer", "draining"]);
    assert_eq!(least_loaded(&live).map(|n| n.id.as_str()), Some("calm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn two_nodes_racing_for_a_user_never_both_seat_them() {
    let redis = RedisServer::start();
    let keys = keys();
    let node_a = Seats::new(connect(&redis.url()).await.unwrap(), keys.clone());
    let node_b = Seats::new(connect(&redis.url()).await.unwrap(), keys);
    let user = id("alice");
    let mut wins = [0usize; 2];
    for round in 0..RACE_ROUNDS {
        let (call_a, call_b) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = race(
            round,
            {
                let (seats, user) = (node_a.clone(), user.clone());
                async move { seats.claim_seat(&user, call_a).await }
            },
            {
                let (seats, user) = (node_b.clone(), user.clone());
                async move { seats.claim_seat(&user, call_b).await }
            },
        )
        .await;
        let winner = match (a, b) {
            (Claim::Granted, Claim::Taken(holder)) if holder == call_a => {
                wins[0] += 1;
                call_a
            }
            (Claim::Taken(holder), Claim::Granted) if holder == call_b => {
                wins[1] += 1;
                call_b
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert_eq!(node_b.seat_of(&user).await.unwrap(), Some(winner));
        // The loser's release does nothing; the winner's frees the seat for the next round.
        let loser = if winner == call_a { call_b } else { call_a };
        assert!(!node_a.release_seat(&user, loser).await.unwrap());
        assert!(node_b.release_seat(&user, winner).await.unwrap());
        assert_eq!(node_a.seat_of(&user).await.unwrap(), None);
    }
    eprintln!(
        "seat race: {RACE_ROUNDS} rounds, wins a={} b={}",
        wins[0], wins[1]
    );
    assert_eq!(wins[0] + wins[1], RACE_ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn two_nodes_racing_for_a_conversation_never_both_start_a_call() {
    let redis = RedisServer::start();
    let keys = keys();
    let node_a = Seats::new(connect(&redis.url()).await.unwrap(), keys.clone());
    let node_b = Seats::new(connect(&redis.url()).await.unwrap(), keys);
    let mut wins = [0usize; 2];
    for round in 0..RACE_ROUNDS {
        // A fresh conversation each round, so no release is needed for the next one.
        let conversation = id(&format!("team-{round}"));
        let (call_a, call_b) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = race(
            round,
            {
                let (seats, c) = (node_a.clone(), conversation.clone());
                async move { seats.claim_active_call(&c, call_a).await }
            },
            {
                let (seats, c) = (node_b.clone(), conversation.clone());
                async move { seats.claim_active_call(&c, call_b).await }
            },
        )
        .await;
        let winner = match (a, b) {
            (Claim::Granted, Claim::Taken(holder)) if holder == call_a => {
                wins[0] += 1;
                call_a
            }
            (Claim::Taken(holder), Claim::Granted) if holder == call_b => {
                wins[1] += 1;
                call_b
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert_eq!(
            node_a.active_call(&conversation).await.unwrap(),
            Some(winner)
        );
    }
    eprintln!(
        "active-call race: {RACE_ROUNDS} rounds, wins a={} b={}",
        wins[0], wins[1]
    );
    assert_eq!(wins[0] + wins[1], RACE_ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn seats_are_released_by_their_call_only() {
    let redis = RedisServer::start();
    let seats = Seats::new(connect(&redis.url()).await.unwrap(), keys());
    let (alice, bob, team) = (id("alice"), id("bob"), id("team"));
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());

    assert_eq!(seats.claim_seat(&alice, x).await.unwrap(), Claim::Granted);
    assert_eq!(
        seats.claim_seat(&alice, x).await.unwrap(),
        Claim::Granted,
        "again"
    );
    assert_eq!(seats.claim_seat(&bob, x).await.unwrap(), Claim::Granted);
    assert_eq!(seats.claim_seat(&alice, y).await.unwrap(), Claim::Taken(x));
    let refusal = seats
        .claim_seat(&alice, y)
        .await
        .unwrap()
        .or_refuse(ErrorCode::UserBusy, |call| format!("alice is in {call}"))
        .unwrap_err();
    assert_eq!(refusal.code, ErrorCode::UserBusy);
    assert_eq!(refusal.details, Some(serde_json::json!({ "call_id": x })));

    assert!(
        !seats.release_seat(&alice, y).await.unwrap(),
        "not y's seat"
    );
    assert_eq!(seats.seat_of(&alice).await.unwrap(), Some(x));
    assert!(seats.release_seat(&alice, x).await.unwrap());
    assert_eq!(seats.claim_seat(&alice, y).await.unwrap(), Claim::Granted);
    // x ends: bob is freed; alice, now in y, keeps her seat.
    assert_eq!(seats.release_call_seats(x).await.unwrap(), 1);
    assert_eq!(seats.seat_of(&bob).await.unwrap(), None);
    assert_eq!(seats.seat_of(&alice).await.unwrap(), Some(y));
    assert_eq!(seats.claim_seat(&bob, y).await.unwrap(), Claim::Granted);
    assert_eq!(seats.release_call_seats(y).await.unwrap(), 2);

    assert_eq!(seats.active_call(&team).await.unwrap(), None);
    assert_eq!(
        seats.claim_active_call(&team, x).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(
        seats.claim_active_call(&team, y).await.unwrap(),
        Claim::Taken(x)
    );
    assert!(!seats.release_active_call(&team, y).await.unwrap());
    assert!(seats.release_active_call(&team, x).await.unwrap());
    assert_eq!(
        seats.claim_active_call(&team, y).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(seats.active_call(&team).await.unwrap(), Some(y));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (see .ci/run)"]
async fn redis_down_is_unavailable_and_its_restart_is_picked_up() {
    let mut redis = RedisServer::start();
    let keys = keys();
    let conn = connect(&redis.url()).await.unwrap();
    let seats = Seats::new(conn.clone(), keys.clone());
    let registry = Registry::new(conn, keys);
    let alice = id("alice");
    assert_eq!(
        seats.claim_seat(&alice, Uuid::new_v4()).await.unwrap(),
        Claim::Granted
    );

    redis.kill();
    let err = seats.claim_seat(&alice, Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Unavailable);
    let refusal = err.to_signaling();
    assert_eq!(
        (refusal.code.as_str(), refusal.code.http_status()),
        ("UNAVAILABLE", 503)
    );
    let err = registry.heartbeat(&record("a", 0, 0.0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
    let err = seats.seat_of(&alice).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");

    // The same Seats and Registry, on the same connection manager, work again once Redis is
    // back (empty: it keeps nothing on disk), scripts included.
    redis.restart();
    let mut attempts = 0;
    let claim = loop {
        attempts += 1;
        match seats.claim_seat(&alice, Uuid::new_v4()).await {
            Ok(claim) => break claim,
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
                assert!(attempts < 100, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(claim, Claim::Granted);
    assert_eq!(
        registry.heartbeat(&record("a", 0, 0.0)).await.unwrap(),
        Beat::Registered { replaced: None }
    );
    assert_eq!(ids(&registry.live_nodes().await.unwrap()), ["a"]);
    eprintln!("reconnected after {attempts} attempt(s)");
}
