//! The server's API as a participant and as the host application use it: tokens, the
//! conversation, and each participant's signaling socket (contract sections 2, 5, 6).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_bot::signaling::{Event, SignalingClient, SignalingError};
use jsonwebtoken::{EncodingKey, Header};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::client::{ClientError, Role};
use crate::media::{Command, MediaHandle, MediaSpec};
use crate::stamp::now_us;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Status(String),
    #[error("signaling: {0}")]
    Signaling(#[from] SignalingError),
    #[error("client: {0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Protocol(&'static str),
}

/// `rtc:subscribe` pacing: 10 a second leaves half of the server's per-socket rate to the
/// answers a participant sends while others join.
const SUBSCRIBE_INTERVAL: Duration = Duration::from_millis(100);
const SUBSCRIBE_RETRIES: u32 = 10;
/// A rate-limited answer is sent again after this long (the server refills 20 messages a
/// second), up to this many times.
const RATE_LIMITED_WAIT: Duration = Duration::from_millis(100);
const ANSWER_RETRIES: u32 = 50;

/// An HS256 token as the host application would mint it.
pub fn token(secret: &str, user: &str, admin: bool) -> Result<String, ApiError> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 4 * 3600;
    let mut claims = json!({ "sub": user, "exp": exp, "name": user });
    if admin {
        claims["admin"] = json!(true);
    }
    Ok(jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Creates (or replaces) the conversation every participant is a member of.
pub async fn create_conversation(
    server: &str,
    admin_token: &str,
    id: &str,
    members: &[String],
) -> Result<(), ApiError> {
    let response = reqwest::Client::new()
        .put(format!("{server}/api/v1/conversations/{id}"))
        .bearer_auth(admin_token)
        .json(&json!({ "name": "loadgen", "members": members }))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(ApiError::Status(format!(
            "PUT conversation: {status} {body}"
        )));
    }
    Ok(())
}

/// A participant's signaling side; its media lives on a media thread.
pub struct Participant {
    pub index: u32,
    pub user: String,
    signaling: Arc<SignalingClient>,
    media: MediaHandle,
    pub call_id: Option<String>,
    /// Set once this participant starts leaving: an offer the server sent just before (the
    /// others leaving renegotiate everyone) may then be answered too late, which is expected
    /// at the end of a run and not worth a line on the console.
    leaving: Arc<AtomicBool>,
}

impl Participant {
    /// Connects the signaling socket and starts answering the server's subscriber offers.
    pub async fn connect(
        server: &str,
        secret: &str,
        index: u32,
        user: String,
        media: MediaHandle,
    ) -> Result<Participant, ApiError> {
        let token = token(secret, &user, false)?;
        let (signaling, events) = SignalingClient::connect(server, &token).await?;
        let leaving = Arc::new(AtomicBool::new(false));
        tokio::spawn(handle_events(
            index,
            signaling.clone(),
            events,
            media.clone(),
            leaving.clone(),
        ));
        Ok(Participant {
            index,
            user,
            signaling,
            media,
            call_id: None,
            leaving,
        })
    }

    /// Starts the group call as its initiator.
    pub async fn initiate(
        &mut self,
        conversation: &str,
        invitees: &[String],
        video: bool,
    ) -> Result<String, ApiError> {
        // No join time for the initiator: its first packet waits for someone else to join.
        let ack = self
            .signaling
            .request(
                "call:initiate",
                json!({
                    "conversation_id": conversation,
                    "invitees": invitees,
                    "media": if video { "video" } else { "audio" },
                    "kind": "group",
                }),
            )
            .await?;
        let id = ack["call"]["id"]
            .as_str()
            .ok_or(ApiError::Protocol("call:initiate ack without call.id"))?
            .to_owned();
        self.call_id = Some(id.clone());
        Ok(id)
    }

    pub async fn join(&mut self, call_id: &str) -> Result<(), ApiError> {
        self.media.send(Command::JoinStarted {
            participant: self.index,
            at_us: now_us(),
        });
        self.signaling
            .request("call:join", json!({ "call_id": call_id }))
            .await?;
        self.call_id = Some(call_id.to_owned());
        Ok(())
    }

    /// Offers the publisher connection and applies the answer.
    pub async fn publish(&self, spec: MediaSpec) -> Result<(), ApiError> {
        let call_id = self
            .call_id
            .clone()
            .ok_or(ApiError::Protocol("publish before joining"))?;
        let (reply, offer) = oneshot::channel();
        self.media.send(Command::Publish {
            participant: self.index,
            user: self.user.clone(),
            spec,
            reply,
        });
        let offer = offer
            .await
            .map_err(|_| ApiError::Protocol("media thread gone"))??;
        let ack = self
            .signaling
            .request(
                "rtc:offer",
                json!({ "call_id": call_id, "target": "publisher", "sdp": offer }),
            )
            .await?;
        let sdp = ack["sdp"]
            .as_str()
            .ok_or(ApiError::Protocol("rtc:offer ack without sdp"))?
            .to_owned();
        let (reply, done) = oneshot::channel();
        self.media.send(Command::PublisherAnswer {
            participant: self.index,
            sdp,
            reply,
        });
        done.await
            .map_err(|_| ApiError::Protocol("media thread gone"))??;
        Ok(())
    }

    /// Sends `rtc:subscribe` for each (user, quality) in turn, on a task of its own so a join
    /// is not held up by it; the server keeps a choice made before the camera exists. Paced
    /// under the server's per-socket message rate (20/s, bursts of 40), which the answers to its
    /// renegotiations share, and retried when the server says the rate was exceeded anyway.
    pub fn subscribe_all(
        &self,
        choices: Vec<(String, &'static str)>,
    ) -> tokio::task::JoinHandle<Result<(), ApiError>> {
        let signaling = self.signaling.clone();
        let call_id = self.call_id.clone();
        tokio::spawn(async move {
            let call_id = call_id.ok_or(ApiError::Protocol("subscribe before joining"))?;
            let mut pace = tokio::time::interval(SUBSCRIBE_INTERVAL);
            for (user, quality) in choices {
                let data = json!({
                    "call_id": call_id,
                    "user_id": user,
                    "source": "camera",
                    "quality": quality,
                });
                let mut attempt = 0;
                loop {
                    pace.tick().await;
                    match signaling.request("rtc:subscribe", data.clone()).await {
                        Ok(_) => break,
                        Err(SignalingError::Server(e))
                            if e.code == "RATE_LIMITED" && attempt < SUBSCRIBE_RETRIES =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(())
        })
    }

    /// Leaves the call and drops the media connections.
    pub async fn leave(&mut self) {
        self.leaving.store(true, Ordering::Relaxed);
        if let Some(call_id) = self.call_id.take() {
            let _ = self
                .signaling
                .request("call:leave", json!({ "call_id": call_id }))
                .await;
        }
        self.media.send(Command::Leave {
            participant: self.index,
        });
    }

    pub async fn close(&self) {
        self.signaling.close().await;
    }
}

/// Answers subscriber offers and hands trickled candidates to the media thread.
async fn handle_events(
    index: u32,
    signaling: Arc<SignalingClient>,
    mut events: mpsc::UnboundedReceiver<Event>,
    media: MediaHandle,
    leaving: Arc<AtomicBool>,
) {
    while let Some(event) = events.recv().await {
        match event.kind.as_str() {
            "rtc:offer" if event.data["target"] == "subscriber" => {
                let call_id = event.data["call_id"].clone();
                let sdp = event.data["sdp"].as_str().unwrap_or_default().to_owned();
                let (reply, answer) = oneshot::channel();
                media.send(Command::SubscriberOffer {
                    participant: index,
                    sdp,
                    arrived_us: now_us(),
                    reply,
                });
                let answer = match answer.await {
                    Ok(Ok(answer)) => answer,
                    // The server waits for this answer before it offers again, so a failure
                    // here stalls this participant's subscriber: say so.
                    Ok(Err(e)) => {
                        eprintln!("  participant {index}: cannot answer a subscriber offer: {e}");
                        continue;
                    }
                    Err(_) => continue,
                };
                // Answered in order: the server runs one negotiation at a time, so a refused
                // answer would stall this subscriber. Fast churn renegotiates the others faster
                // than the per-socket message rate allows: wait for the bucket and send it again.
                let data = json!({ "call_id": call_id, "target": "subscriber", "sdp": answer });
                let mut attempt = 0;
                loop {
                    match signaling.request("rtc:answer", data.clone()).await {
                        Ok(_) => break,
                        Err(SignalingError::Server(e))
                            if e.code == "RATE_LIMITED" && attempt < ANSWER_RETRIES =>
                        {
                            attempt += 1;
                            tokio::time::sleep(RATE_LIMITED_WAIT).await;
                        }
                        Err(e) => {
                            if !leaving.load(Ordering::Relaxed) {
                                eprintln!("  participant {index}: rtc:answer refused: {e}");
                            }
                            break;
                        }
                    }
                }
            }
            "rtc:candidate" => {
                let role = match event.data["target"].as_str() {
                    Some("publisher") => Role::Publisher,
                    Some("subscriber") => Role::Subscriber,
                    _ => continue,
                };
                let Some(init) = candidate_init(&event.data["candidate"]) else {
                    continue;
                };
                media.send(Command::Candidate {
                    participant: index,
                    role,
                    init,
                });
            }
            _ => {}
        }
    }
}

fn candidate_init(candidate: &Value) -> Option<RTCIceCandidateInit> {
    Some(RTCIceCandidateInit {
        candidate: candidate["candidate"].as_str()?.to_owned(),
        sdp_mid: candidate["sdp_mid"].as_str().map(str::to_owned),
        sdp_mline_index: candidate["sdp_mline_index"]
            .as_u64()
            .and_then(|i| u16::try_from(i).ok()),
        ..Default::default()
    })
}
