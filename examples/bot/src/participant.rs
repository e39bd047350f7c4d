//! A whole Confab participant: a signaling connection plus the two peer connections of
//! contract section 7, driven the way a browser client drives them.
//!
//! The subscriber side is automatic: every server `rtc:offer` is answered with `rtc:answer`,
//! and the latest `rtc:tracks` list is kept. Publishing is explicit ([`BotParticipant::publish`]).
//! Every other event is handed to the caller in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use crate::media::{BotConfig, BotResult, Publisher, Subscriber};
use crate::signaling::{Event, SignalingClient};

pub struct BotParticipant {
    pub user: String,
    pub signaling: Arc<SignalingClient>,
    pub subscriber: Arc<Subscriber>,
    publisher: Mutex<Option<Arc<Publisher>>>,
    events: Mutex<(mpsc::UnboundedReceiver<Event>, VecDeque<Event>)>,
    tracks: Arc<std::sync::Mutex<Value>>,
    /// Every `rtc:tracks` entry seen, by track id: a track that has left keeps its name.
    known_tracks: Arc<std::sync::Mutex<HashMap<String, Value>>>,
    offers_answered: Arc<AtomicU64>,
}

impl BotParticipant {
    /// Connects to the server at `base_url` (`http://HOST:PORT`) as the token's user.
    pub async fn connect(base_url: &str, token: &str, user: &str) -> BotResult<BotParticipant> {
        let (signaling, mut raw) = SignalingClient::connect(base_url, token).await?;
        let subscriber = Arc::new(Subscriber::new().await?);
        let tracks = Arc::new(std::sync::Mutex::new(Value::Null));
        let known_tracks = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let offers_answered = Arc::new(AtomicU64::new(0));
        let (events_tx, events) = mpsc::unbounded_channel();
        {
            let signaling = signaling.clone();
            let subscriber = subscriber.clone();
            let tracks = tracks.clone();
            let known_tracks = known_tracks.clone();
            let offers_answered = offers_answered.clone();
            tokio::spawn(async move {
                while let Some(event) = raw.recv().await {
                    match event.kind.as_str() {
                        "rtc:offer" if event.data["target"] == "subscriber" => {
                            let call_id = event.data["call_id"].clone();
                            let sdp = event.data["sdp"].as_str().unwrap_or_default().to_owned();
                            let Ok(answer) = subscriber.answer(sdp).await else {
                                continue;
                            };
                            let answered = signaling
                                .request(
                                    "rtc:answer",
                                    json!({"call_id": call_id, "target": "subscriber", "sdp": answer}),
                                )
                                .await;
                            if answered.is_ok() {
                                offers_answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        "rtc:tracks" => {
                            if let Ok(mut known) = known_tracks.lock() {
                                for t in event.data["tracks"].as_array().into_iter().flatten() {
                                    if let Some(id) = t["track_id"].as_str() {
                                        known.insert(id.to_owned(), t.clone());
                                    }
                                }
                            }
                            if let Ok(mut t) = tracks.lock() {
                                *t = event.data.clone();
                            }
                        }
                        _ => {
                            if events_tx.send(event).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        Ok(BotParticipant {
            user: user.to_owned(),
            signaling,
            subscriber,
            publisher: Mutex::new(None),
            events: Mutex::new((events, VecDeque::new())),
            tracks,
            known_tracks,
            offers_answered,
        })
    }

    /// A request over the signaling socket; resolves with the `ack` data.
    pub async fn request(&self, kind: &str, data: Value) -> BotResult<Value> {
        Ok(self.signaling.request(kind, data).await?)
    }

    /// Offers a publisher connection (Opus + VP8) for the call and applies the server's
    /// answer; the connection then comes up on its own.
    pub async fn publish(&self, call_id: &str) -> BotResult<Arc<Publisher>> {
        self.publish_with(call_id, Publisher::new().await?).await
    }

    /// Like [`BotParticipant::publish`], with the camera sent as `layers` (2 or 3) simulcast
    /// layers.
    pub async fn publish_simulcast(
        &self,
        call_id: &str,
        layers: usize,
    ) -> BotResult<Arc<Publisher>> {
        let publisher = Publisher::with_simulcast(&BotConfig::default(), layers).await?;
        self.publish_with(call_id, publisher).await
    }

    async fn publish_with(&self, call_id: &str, publisher: Publisher) -> BotResult<Arc<Publisher>> {
        let publisher = Arc::new(publisher);
        let offer = publisher.offer().await?;
        let ack = self
            .request(
                "rtc:offer",
                json!({"call_id": call_id, "target": "publisher", "sdp": offer}),
            )
            .await?;
        let answer = ack["sdp"]
            .as_str()
            .ok_or("the rtc:offer ack carries no sdp")?
            .to_owned();
        publisher.accept_answer(answer).await?;
        *self.publisher.lock().await = Some(publisher.clone());
        Ok(publisher)
    }

    /// The next event of type `kind` within `within`; events of other types are kept.
    pub async fn event(&self, kind: &str, within: Duration) -> Option<Value> {
        let mut guard = self.events.lock().await;
        let (rx, pending) = &mut *guard;
        if let Some(pos) = pending.iter().position(|e| e.kind == kind) {
            return pending.remove(pos).map(|e| e.data);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
            if event.kind == kind {
                return Some(event.data);
            }
            pending.push_back(event);
        }
    }

    /// The latest `rtc:tracks` data (`null` before any).
    pub fn tracks(&self) -> Value {
        self.tracks.lock().map(|t| t.clone()).unwrap_or(Value::Null)
    }

    /// The `rtc:tracks` entry of `track_id` from any list received so far (`null` if never seen).
    pub fn track_info(&self, track_id: &str) -> Value {
        self.known_tracks
            .lock()
            .ok()
            .and_then(|k| k.get(track_id).cloned())
            .unwrap_or(Value::Null)
    }

    /// Subscriber offers answered so far.
    pub fn offers_answered(&self) -> u64 {
        self.offers_answered.load(Ordering::Relaxed)
    }

    /// Closes both peer connections and the socket.
    pub async fn close(&self) {
        if let Some(publisher) = self.publisher.lock().await.take() {
            let _ = publisher.close().await;
        }
        let _ = self.subscriber.close().await;
        self.signaling.close().await;
    }
}
