//! One run: start or attach to the server, join the bots, measure a steady window, optionally
//! cycle joins and leaves, then measure the floor and report.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::Args;
use crate::api::{self, ApiError, Participant};
use crate::client::Role;
use crate::expect::{Expectation, Tally};
use crate::floor::{self, FloorLoad};
use crate::media::{self, Command, MediaHandle, MediaSpec};
use crate::procfs;
use crate::recorder::{JoinTimes, Live, Record, Window};
use crate::report::{Report, Sample};
use crate::scenario::{Loudest, Plan, SERVER_LOUDEST_N, SERVER_LOUDEST_N_MIN};
use crate::server::{self, SpawnedServer};
use crate::server_metrics::LatencyBuckets;
use crate::stamp::now_us;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Scenario(#[from] crate::scenario::UnknownScenario),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("media thread: {0}")]
    Media(#[from] std::io::Error),
    #[error(transparent)]
    Floor(#[from] floor::FloorError),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const CHURN_JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The plan the flags ask for. `spawn_here`: the server is started by this run, so the
/// scenario's loudest-N setting is given to it; a running server is assumed to do what the flags
/// say, or its defaults.
fn plan_from(args: &Args, spawn_here: bool) -> Result<Plan, RunError> {
    let mut plan = Plan::named(&args.scenario)?;
    if let Some(n) = args.participants {
        plan.participants = n;
        plan.publishers = plan.publishers.min(n);
    }
    if let Some(p) = args.publishers {
        plan.publishers = p.min(plan.participants);
    }
    if args.no_audio {
        plan.media.audio = false;
    }
    if let Some(k) = args.video_kbps {
        plan.media.video_kbps = k;
    }
    if let Some(f) = args.video_fps {
        plan.media.video_fps = f.max(1);
    }
    if let Some(c) = args.cycles {
        plan.cycles = c;
    }
    if plan.participants < 2 {
        return Err(RunError::Usage(
            "a call needs at least 2 participants".into(),
        ));
    }
    if args.simulcast {
        plan.simulcast = true;
    }
    if args.no_simulcast {
        plan.simulcast = false;
    }
    if plan.simulcast && plan.media.video_kbps == 0 {
        return Err(RunError::Usage(
            "--simulcast needs video: give --video-kbps".into(),
        ));
    }
    plan.media.simulcast = plan.simulcast;
    if let Some(n) = args.low_tiles {
        plan.low_tiles = n;
    }
    if let Some(n) = args.high_tiles {
        plan.high_tiles = n;
    }
    if !spawn_here {
        plan.server_loudest_n = None;
    }
    plan.server_loudest_n = args.loudest_n.or(plan.server_loudest_n);
    plan.loudest = Loudest {
        n: plan.server_loudest_n.unwrap_or(SERVER_LOUDEST_N),
        min_publishers: args.loudest_n_min.unwrap_or(SERVER_LOUDEST_N_MIN),
    };
    Ok(plan)
}

pub async fn run(args: Args) -> Result<(), RunError> {
    let plan = plan_from(&args, args.server.is_none())?;
    let expectation = Expectation::new(&plan);
    let (spawned, url, pid) = match (&args.server, args.server_pid) {
        (Some(url), Some(pid)) => (None, url.trim_end_matches('/').to_owned(), pid),
        (Some(url), None) => {
            let port = url
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| RunError::Usage(format!("no port in --server {url}")))?;
            let pid = procfs::tcp_listener_pid(port).ok_or_else(|| {
                RunError::Usage(format!(
                    "no local process listens on port {port}: give --server-pid, or run on the \
                     server's machine (its CPU and memory are read from /proc)"
                ))
            })?;
            (None, url.trim_end_matches('/').to_owned(), pid)
        }
        (None, None) => {
            let binary = args
                .confab_bin
                .clone()
                .or_else(server::sibling_binary)
                .ok_or_else(|| {
                    RunError::Usage("no confab binary next to this one; pass --confab-bin".into())
                })?;
            let mut extra = Vec::new();
            if let Some(w) = args.media_workers {
                extra.extend(["--media-workers".to_owned(), w.to_string()]);
            }
            // Always explicit, so an environment variable cannot make the server do other than
            // the expectations assume.
            extra.extend([
                "--loudest-n".to_owned(),
                plan.loudest.n.to_string(),
                "--loudest-n-min-participants".to_owned(),
                plan.loudest.min_publishers.to_string(),
            ]);
            let capacity = (plan.participants + 2).max(50) as usize;
            let s = SpawnedServer::start(&binary, &args.secret, capacity, &extra)?;
            let (url, pid) = (s.url.clone(), s.pid());
            (Some(s), url, pid)
        }
        (None, Some(_)) => {
            return Err(RunError::Usage(
                "--server-pid needs --server (the running server's URL)".into(),
            ));
        }
    };
    eprintln!(
        "scenario {}: {} participants, {} publishing {} streams each (audio {}, video {} kbit/s{}), \
         server {url} pid {pid}\n  expecting {}{}",
        plan.name,
        plan.participants,
        plan.publishers,
        plan.streams_per_publisher(),
        plan.media.audio,
        plan.media.video_kbps,
        if plan.simulcast {
            " in three layers"
        } else {
            ""
        },
        expectation.describe(),
        if args.server.is_none() {
            ""
        } else {
            " (a running server's loudest-N cannot be read: --loudest-n says what it is)"
        },
    );

    let window = Arc::new(Window::default());
    let live = Arc::new(Live::default());
    let mut threads = Vec::new();
    for i in 0..args.threads.max(1) {
        threads.push(media::spawn(
            i,
            LOCALHOST,
            plan.simulcast,
            window.clone(),
            live.clone(),
        )?);
    }
    let handles: Vec<MediaHandle> = threads.iter().map(|(h, _)| h.clone()).collect();
    let handle_for = |i: u32| handles[i as usize % handles.len()].clone();

    let rss_base = procfs::rss_bytes(pid).unwrap_or(0);
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let churners = if plan.cycles > 0 { 2 } else { 0 };
    let users: Vec<String> = (0..plan.participants + churners)
        .map(|i| format!("lg-{run_id}-{i}"))
        .collect();
    let conversation = format!("loadgen-{run_id}");
    let admin = api::token(&args.secret, "loadgen-admin", true)?;
    api::create_conversation(&url, &admin, &conversation, &users).await?;

    // Join one at a time, publishers first, as people trickle into a meeting.
    let mut participants: Vec<Participant> = Vec::new();
    let mut call_id = String::new();
    let mut subscribing = Vec::new();
    let join_started = Instant::now();
    for i in 0..plan.participants {
        let mut p = Participant::connect(
            &url,
            &args.secret,
            i,
            users[i as usize].clone(),
            handle_for(i),
        )
        .await?;
        if i == 0 {
            let invitees: Vec<String> = users[1..].to_vec();
            call_id = p
                .initiate(&conversation, &invitees, plan.media.video_kbps > 0)
                .await?;
        } else {
            p.join(&call_id).await?;
        }
        if plan.simulcast {
            let choices = expectation
                .choices(i)
                .into_iter()
                .map(|(other, view)| (users[other as usize].clone(), view.quality()))
                .collect();
            subscribing.push((i, p.subscribe_all(choices)));
        }
        if i < plan.publishers {
            p.publish(MediaSpec {
                loud: expectation.loud(i),
                ..plan.media
            })
            .await?;
        }
        participants.push(p);
        if (i + 1) % 10 == 0 || i + 1 == plan.participants {
            eprintln!(
                "  joined {}/{} in {:.1} s, {} connections up",
                i + 1,
                plan.participants,
                join_started.elapsed().as_secs_f64(),
                live.connected.load(Ordering::Relaxed)
            );
        }
    }
    // Publisher connections, and a subscriber connection for everyone who has someone else to
    // receive: with a single publisher, that publisher receives nothing.
    let subscribers = if plan.publishers >= 2 {
        plan.participants
    } else {
        plan.participants - plan.publishers
    };
    let expected_connections = u64::from(subscribers + plan.publishers);
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while live.connected.load(Ordering::Relaxed) < expected_connections && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = live.connected.load(Ordering::Relaxed);
    if connected < expected_connections {
        eprintln!("  warning: {connected}/{expected_connections} connections up");
        for (p, role, ice, pc) in stragglers(&handles).await {
            eprintln!("    participant {p} {role:?}: ICE {ice}, connection {pc}");
        }
    }

    for (i, task) in subscribing {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  warning: participant {i}: rtc:subscribe failed: {e}"),
            Err(e) => eprintln!("  warning: participant {i}: rtc:subscribe task: {e}"),
        }
    }
    if plan.simulcast {
        settle(
            &expectation,
            &handles,
            Duration::from_secs(args.settle_timeout),
        )
        .await;
    }

    eprintln!("warm-up {} s", args.warmup);
    progress(&live, pid, Duration::from_secs(args.warmup)).await;
    // Subscribers whose connection is not up as the window opens: what they miss is still
    // counted as loss (the server did not bring them up), and also said apart.
    let unconnected: HashSet<u32> = stragglers(&handles)
        .await
        .into_iter()
        .filter(|(_, role, _, _)| *role == Role::Subscriber)
        .map(|(p, ..)| p)
        .collect();

    let self_pid = std::process::id();
    let connections_at_window = live.connected.load(Ordering::Relaxed);
    let latency_start = LatencyBuckets::scrape(&url).await;
    let start = Sample::take(pid, self_pid);
    window.open(now_us());
    eprintln!("measuring {} s", args.duration);
    progress(&live, pid, Duration::from_secs(args.duration)).await;
    window.close(now_us());
    let end = Sample::take(pid, self_pid);
    let latency_end = LatencyBuckets::scrape(&url).await;
    let rss_end = procfs::rss_bytes(pid).unwrap_or(0);
    // Packets stamped inside the window may still be in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = snapshot(&handles).await;

    let churn = if plan.cycles > 0 {
        Some(
            churn(
                &plan,
                &url,
                &args.secret,
                &users,
                &call_id,
                &handles,
                &live,
                pid,
            )
            .await?,
        )
    } else {
        None
    };

    for p in participants.iter_mut() {
        p.leave().await;
        p.close().await;
    }
    for h in &handles {
        h.send(Command::Shutdown);
    }
    for (_, t) in threads {
        let _ = t.join();
    }
    drop(spawned);

    let tally = Tally::new(&expectation, &record, &unconnected);
    let mut report = Report::new(
        &plan,
        &expectation,
        &tally,
        &record,
        (&start, &end),
        (rss_base, rss_end),
        churn,
    );
    report.set_connections(connections_at_window, expected_connections);
    if let (Some(start), Some(end)) = (&latency_start, &latency_end) {
        report.set_server_latency(
            end.quantile_ms_since(start, 0.5),
            end.quantile_ms_since(start, 0.99),
        );
    }
    if args.floor_duration > 0 && report.forwarded_pps > 0.0 {
        let load = floor_load(&plan, &tally, &record, report.window_s);
        eprintln!(
            "floor: {} streams x {:.1} pps x {} receivers, and {} streams x {:.1} pps dropped, \
             {} B payload, {} s",
            load.streams,
            load.pps,
            load.fanout,
            load.unforwarded_streams,
            load.unforwarded_pps,
            load.payload,
            args.floor_duration
        );
        let result = tokio::task::spawn_blocking(move || {
            floor::measure(load, Duration::from_secs(args.floor_duration))
        })
        .await
        .map_err(|e| RunError::Usage(format!("floor task: {e}")))??;
        report.set_floor(result);
    }
    report.print();
    Ok(())
}

/// The floor moves the same packets: the streams some subscriber should get, at their rates, to
/// as many receivers as they have on average (with simulcast and loudest-N, streams differ in
/// fan-out; the floor gives each the mean, which moves the same number of packets), and it is
/// sent the streams no one gets, as the server is.
fn floor_load(plan: &Plan, tally: &Tally, record: &Record, window_s: f64) -> FloorLoad {
    let streams = tally.streams.max(1);
    let window_s = window_s.max(0.001);
    let payload = record
        .payload_bytes_received
        .checked_div(record.received_total)
        .map_or(100, |b| b as usize);
    FloorLoad {
        streams,
        pps: tally.sent as f64 / f64::from(streams) / window_s,
        fanout: (tally.fanout.round() as u32).clamp(1, plan.participants.saturating_sub(1).max(1)),
        sinks: plan.participants,
        payload,
        unforwarded_streams: tally.unforwarded_streams,
        unforwarded_pps: tally.unforwarded_sent as f64
            / f64::from(tally.unforwarded_streams.max(1))
            / window_s,
    }
}

/// Waits until every subscriber receives each camera it views at the layer it chose, or
/// `timeout`. Until then the server's congestion control may hold layers lower: a new
/// subscriber's estimate starts at 1.5 Mbit/s and grows 5 % a second on a clean path. Cameras of
/// publishers, and subscribers, whose connection is not up are left out.
async fn settle(expectation: &Expectation, handles: &[MediaHandle], timeout: Duration) {
    let started = Instant::now();
    let mut last_print = started;
    loop {
        let record = snapshot(handles).await;
        let down: HashSet<(u32, Role)> = stragglers(handles)
            .await
            .into_iter()
            .map(|(p, role, ..)| (p, role))
            .collect();
        let (mut on_choice, mut viewed) = (0usize, 0usize);
        for r in expectation.receivers() {
            if down.contains(&(r, Role::Subscriber)) {
                continue;
            }
            for (p, _) in expectation.choices(r) {
                if down.contains(&(p, Role::Publisher)) {
                    continue;
                }
                if let Some(stream) = expectation.video_stream(r, p) {
                    viewed += 1;
                    on_choice += usize::from(record.latest_video.get(&(r, p)) == Some(&stream));
                }
            }
        }
        let done = on_choice == viewed;
        if done || started.elapsed() >= timeout || last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  layers: {on_choice} of {viewed} viewed cameras arrive at the chosen layer \
                 ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if done {
            return;
        }
        if started.elapsed() >= timeout {
            eprintln!("  warning: layers did not settle; measuring anyway");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Connections that are not up: (participant, role, ICE state, connection state).
async fn stragglers(handles: &[MediaHandle]) -> Vec<(u32, Role, String, String)> {
    let mut all = Vec::new();
    for h in handles {
        let (reply, rx) = oneshot::channel();
        h.send(Command::Stragglers { reply });
        all.extend(rx.await.unwrap_or_default());
    }
    all
}

async fn snapshot(handles: &[MediaHandle]) -> Record {
    let mut merged = Record::default();
    for h in handles {
        let (reply, rx) = oneshot::channel();
        h.send(Command::Snapshot { reply });
        if let Ok(r) = rx.await {
            merged.merge(&r);
        }
    }
    merged
}

/// Prints a line a second: received and sent packet rates, server and own CPU.
async fn progress(live: &Live, pid: u32, total: Duration) {
    let end = Instant::now() + total;
    let mut last = Sample::take(pid, std::process::id());
    let mut last_rx = live.received.load(Ordering::Relaxed);
    let mut last_tx = live.sent.load(Ordering::Relaxed);
    while Instant::now() < end {
        let step = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
        let now = Sample::take(pid, std::process::id());
        let rx = live.received.load(Ordering::Relaxed);
        let tx = live.sent.load(Ordering::Relaxed);
        let secs = now.at.duration_since(last.at).as_secs_f64().max(0.001);
        eprintln!(
            "  received {:>7.0} pps  sent {:>6.0} pps  server cpu {:>5.1}%  loadgen cpu {:>5.1}%  connections {}",
            (rx - last_rx) as f64 / secs,
            (tx - last_tx) as f64 / secs,
            now.server_cpu_us.saturating_sub(last.server_cpu_us) as f64 / secs / 10_000.0,
            now.self_cpu_us.saturating_sub(last.self_cpu_us) as f64 / secs / 10_000.0,
            live.connected.load(Ordering::Relaxed),
        );
        last = now;
        last_rx = rx;
        last_tx = tx;
    }
}

/// Churn result: server memory across join/leave cycles and their join times.
#[derive(Debug, Clone)]
pub struct ChurnResult {
    pub cycles: u32,
    pub completed: u32,
    pub rss_after_warm_mb: f64,
    pub rss_end_mb: f64,
    pub joins: Vec<JoinTimes>,
}

/// Extra participants join, publish, wait for their first media packet and leave, `cycles`
/// times; the server's RSS is compared between the first tenth of the cycles and the end.
#[allow(clippy::too_many_arguments)]
async fn churn(
    plan: &Plan,
    url: &str,
    secret: &str,
    users: &[String],
    call_id: &str,
    handles: &[MediaHandle],
    live: &Live,
    pid: u32,
) -> Result<ChurnResult, RunError> {
    eprintln!("churn: {} join/leave cycles", plan.cycles);
    let mut rss_after_warm = 0;
    let mut completed = 0;
    let warm = (plan.cycles / 10).max(1);
    let started = Instant::now();
    let mut last_hundred = started;
    let join_base = snapshot(handles).await.joins.len();
    for cycle in 0..plan.cycles {
        let index = plan.participants + (cycle % 2);
        let handle = handles[index as usize % handles.len()].clone();
        let mut p =
            Participant::connect(url, secret, index, users[index as usize].clone(), handle).await?;
        let joins_before = live.joins.load(Ordering::Relaxed);
        let joined = p.join(call_id).await;
        if joined.is_ok() {
            let _ = p
                .publish(MediaSpec {
                    audio: true,
                    video_kbps: 0,
                    video_fps: 1,
                    simulcast: false,
                    loud: false,
                })
                .await;
            // The stable room keeps sending, so the counter moves anyway; wait until this
            // participant's first packet ended its join on the media thread.
            let deadline = Instant::now() + CHURN_JOIN_TIMEOUT;
            while live.joins.load(Ordering::Relaxed) == joins_before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if live.joins.load(Ordering::Relaxed) > joins_before {
                completed += 1;
            }
        }
        p.leave().await;
        p.close().await;
        if cycle + 1 == warm {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_after_warm = procfs::rss_bytes(pid).unwrap_or(0);
        }
        if (cycle + 1) % 100 == 0 {
            // Medians of the last hundred joins, split, show which step slows down if cycles
            // get slower.
            let r = snapshot(handles).await;
            let recent = &r.joins[r.joins.len().saturating_sub(100)..];
            let last = |step| JoinTimes::p50_p99(recent, step).0.unwrap_or(0.0);
            eprintln!(
                "  cycle {}/{} ({:.0} s, {:.0} ms per cycle), server rss {:.1} MB, cpu {:.1} s; \
                 last 100 joins p50: offer {:.0} ms, connected {:.0} ms, first packet {:.0} ms",
                cycle + 1,
                plan.cycles,
                started.elapsed().as_secs_f64(),
                last_hundred.elapsed().as_secs_f64() * 10.0,
                procfs::rss_bytes(pid).unwrap_or(0) as f64 / 1e6,
                procfs::cpu_us(pid).unwrap_or(0) as f64 / 1e6,
                last(|j| j.offer),
                last(|j| j.connected),
                last(|j| j.first_packet),
            );
            last_hundred = Instant::now();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = procfs::rss_bytes(pid).unwrap_or(0);
    let record = snapshot(handles).await;
    Ok(ChurnResult {
        cycles: plan.cycles,
        completed,
        rss_after_warm_mb: rss_after_warm as f64 / 1e6,
        rss_end_mb: rss_end as f64 / 1e6,
        joins: record.joins[join_base.min(record.joins.len())..].to_vec(),
    })
}
