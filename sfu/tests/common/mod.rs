//! A call harness for engine-level tests: bots stand in for clients, and a pump task plays the
//! part of signaling (it answers every subscriber offer with the right bot).

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_bot::media::{BotConfig, Publisher, RtpCodecKind, SimulatedLossStats, Subscriber};
use confab_sfu::{EngineConfig, EngineEvent, MediaEngine, MediaKind, RoomId};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Generous: the suite runs next to other builds on two shared cores.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn start_engine(workers: usize) -> MediaEngine {
    start_engine_with(EngineConfig {
        workers,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EngineConfig::default()
    })
}

pub fn start_engine_with(config: EngineConfig) -> MediaEngine {
    MediaEngine::start(config).expect("engine starts on loopback")
}

/// A participant's bots.
pub struct Client {
    pub name: String,
    pub publisher: Option<Arc<Publisher>>,
    pub subscriber: Arc<Subscriber>,
}

pub struct Call {
    pub engine: MediaEngine,
    pub room: RoomId,
    subscribers: Arc<Mutex<HashMap<String, Arc<Subscriber>>>>,
    pub events: mpsc::UnboundedReceiver<EngineEvent>,
}

impl Call {
    pub fn new(workers: usize) -> Self {
        Self::with_engine(start_engine(workers))
    }

    /// A call on an engine the test configured itself (a short quality interval, say).
    pub fn with_engine(engine: MediaEngine) -> Self {
        let mut engine_events = engine.take_events().expect("first taker gets the events");
        let subscribers: Arc<Mutex<HashMap<String, Arc<Subscriber>>>> = Arc::default();
        let (tx, events) = mpsc::unbounded_channel();
        let pump_engine = engine.clone();
        let pump_subs = subscribers.clone();
        tokio::spawn(async move {
            while let Some(event) = engine_events.recv().await {
                if let EngineEvent::SubscriberOffer {
                    room,
                    participant,
                    sdp,
                    ..
                } = &event
                {
                    let bot = pump_subs
                        .lock()
                        .expect("harness lock")
                        .get(participant)
                        .cloned();
                    // During teardown an offer can race a participant's leave, so failures are
                    // reported rather than fatal; a test that needed the answer fails on its media.
                    if let Some(bot) = bot {
                        match bot.answer(sdp.clone()).await {
                            Ok(answer) => {
                                if let Err(e) = pump_engine
                                    .subscriber_answer(*room, participant.clone(), answer)
                                    .await
                                {
                                    eprintln!("engine refused {participant}'s answer: {e}");
                                }
                            }
                            Err(e) => eprintln!("{participant}'s bot could not answer: {e}"),
                        }
                    }
                }
                // The test may have stopped listening; offers are still answered.
                let _ = tx.send(event);
            }
        });
        Self {
            engine,
            room: RoomId(Uuid::new_v4()),
            subscribers,
            events,
        }
    }

    /// Adds a participant: a publisher (offer, answer, connected) or a viewer (join only).
    pub async fn add(&self, name: &str, publish: bool) -> Client {
        self.add_with(name, publish, &BotConfig::default()).await
    }

    /// Like [`Call::add`], with the subscriber bot built from `config` (simulated loss, say).
    pub async fn add_with(&self, name: &str, publish: bool, config: &BotConfig) -> Client {
        let subscriber = Arc::new(
            Subscriber::with_config(config)
                .await
                .expect("subscriber bot builds"),
        );
        self.subscribers
            .lock()
            .expect("harness lock")
            .insert(name.to_owned(), subscriber.clone());
        let publisher = if publish {
            let bot = Publisher::new().await.expect("publisher bot builds");
            Some(self.publish(name, bot).await)
        } else {
            self.engine
                .join(self.room, name.to_owned())
                .await
                .expect("join");
            None
        };
        Client {
            name: name.to_owned(),
            publisher,
            subscriber,
        }
    }

    /// Adds a participant that publishes its camera as `layers` simulcast layers.
    pub async fn add_simulcast(&self, name: &str, layers: usize) -> Client {
        let subscriber = Arc::new(Subscriber::new().await.expect("subscriber bot builds"));
        self.subscribers
            .lock()
            .expect("harness lock")
            .insert(name.to_owned(), subscriber.clone());
        let bot = Publisher::with_simulcast(&BotConfig::default(), layers)
            .await
            .expect("simulcast publisher bot builds");
        let publisher = Some(self.publish(name, bot).await);
        Client {
            name: name.to_owned(),
            publisher,
            subscriber,
        }
    }

    /// Offers, answers and connects a publisher bot.
    pub async fn publish(&self, name: &str, bot: Publisher) -> Arc<Publisher> {
        let offer = bot.offer().await.expect("bot offers");
        let answer = self
            .engine
            .publish(self.room, name.to_owned(), offer)
            .await
            .expect("engine answers");
        bot.accept_answer(answer).await.expect("bot accepts answer");
        bot.wait_connected(CONNECT_TIMEOUT)
            .await
            .expect("publisher connects");
        Arc::new(bot)
    }

    /// Waits for the first event matching `pred`, skipping others.
    pub async fn expect_event(
        &mut self,
        mut pred: impl FnMut(&EngineEvent) -> bool,
    ) -> EngineEvent {
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                let ev = self.events.recv().await.expect("event channel open");
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("event arrives in time")
    }

    /// Removes a participant and closes its bots.
    pub async fn leave(&self, client: &Client) {
        self.engine
            .remove_participant(self.room, client.name.clone())
            .await
            .expect("remove participant");
        self.subscribers
            .lock()
            .expect("harness lock")
            .remove(&client.name);
        if let Some(p) = &client.publisher {
            let _ = p.close().await;
        }
        let _ = client.subscriber.close().await;
    }
}

/// Sends media from every publisher at once for `duration`.
pub async fn send_all(clients: &[Client], duration: Duration) {
    let tasks: Vec<_> = clients
        .iter()
        .filter_map(|c| c.publisher.clone())
        .map(|p| tokio::spawn(async move { p.send_media(duration).await.map(|_| ()) }))
        .collect();
    for task in tasks {
        task.await.expect("send task").expect("bot sends media");
    }
}

/// Packets `client` received from `publisher` of the given kind, over all its remote tracks.
pub fn received_from(client: &Client, publisher: &str, kind: MediaKind) -> u64 {
    let want = match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    };
    client
        .subscriber
        .tracks()
        .iter()
        .filter(|t| t.stream_id == publisher && t.kind == want)
        .map(|t| t.packets)
        .sum()
}

/// A lossy subscriber got its drops back: at least 80 % of them (the last few may still be in
/// flight), on the RTX stream, each one the very packet it replaced.
pub fn assert_repaired(loss: &SimulatedLossStats) {
    assert!(
        loss.recovered * 10 >= loss.dropped * 8,
        "only {} of {} dropped packets recovered: {loss:?}",
        loss.recovered,
        loss.dropped
    );
    assert_eq!(
        loss.mismatched_recoveries, 0,
        "a repair differed from the packet it replaced: {loss:?}"
    );
    assert!(loss.rtx_packets > 0, "{loss:?}");
    assert_eq!(loss.plain_retransmissions, 0, "{loss:?}");
}

/// Polls `check` until it holds or the timeout passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
