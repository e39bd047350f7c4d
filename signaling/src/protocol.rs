//! WebSocket messages of the contract (section 6): the envelope, every client request, and
//! the frames the server writes.
//!
//! Parsing is total: any text yields either a typed request or a `SignalingError` with
//! `INVALID_ARGUMENT`, together with whatever `id` could be recovered, so the socket can answer
//! with an `error` that the client can correlate and stay open.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::SignalingError;
use crate::model::{CallKind, ConversationId, MediaKind, MediaPatch, UserId};

/// The request id a client attached; echoed verbatim (a string, or a number if it sent one).
pub type RequestId = Value;

/// Which of a participant's two peer connections a media message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Publisher => "publisher",
            PeerRole::Subscriber => "subscriber",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoSource {
    Camera,
    Screen,
}

/// A subscriber's wish for one video: a simulcast layer, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoQuality {
    Off,
    Low,
    Medium,
    High,
}

/// A trickled ICE candidate exactly as the browser produced it. On the wire it is always an
/// object (see [`CandidateData::candidate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_mline_index: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InitiateData {
    pub conversation_id: Option<ConversationId>,
    pub invitees: Vec<UserId>,
    pub media: MediaKind,
    pub kind: Option<CallKind>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallRef {
    pub call_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallWithReason {
    pub call_id: Uuid,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MediaData {
    pub call_id: Uuid,
    #[serde(flatten)]
    pub patch: MediaPatch,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SdpData {
    pub call_id: Uuid,
    pub target: PeerRole,
    pub sdp: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CandidateData {
    pub call_id: Uuid,
    pub target: PeerRole,
    /// `null` (or no field) marks the end of candidates.
    #[serde(default, deserialize_with = "candidate_object")]
    pub candidate: Option<IceCandidate>,
}

/// A candidate is an object or `null`: serde alone would also read a struct from an array
/// (`["candidate:…"]`), which no client means.
fn candidate_object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<IceCandidate>, D::Error> {
    let Some(object) = Option::<serde_json::Map<String, Value>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    serde_json::from_value(Value::Object(object))
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("candidate: {e}")))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SubscribeData {
    pub call_id: Uuid,
    pub user_id: UserId,
    pub source: VideoSource,
    pub quality: VideoQuality,
}

/// `call:data`: app data (chat, reactions, a raised hand) for the other joined participants.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DataMessage {
    pub call_id: Uuid,
    /// Any JSON value, relayed untouched; at most [`crate::book::relay::MAX_PAYLOAD_BYTES`] serialized.
    pub payload: Value,
    /// Only these participants; absent = every other joined participant.
    #[serde(default)]
    pub to: Option<Vec<UserId>>,
}

/// Every request a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Initiate(InitiateData),
    Accept(CallRef),
    Reject(CallWithReason),
    Join(CallRef),
    Leave(CallRef),
    End(CallWithReason),
    Media(MediaData),
    Offer(SdpData),
    Answer(SdpData),
    Candidate(CandidateData),
    Subscribe(SubscribeData),
    Data(DataMessage),
}

impl ClientRequest {
    /// Every message type a client may send, in the contract's order (metric labels, and the
    /// names [`parse`] knows).
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "call:initiate",
        "call:accept",
        "call:reject",
        "call:join",
        "call:leave",
        "call:end",
        "call:media",
        "rtc:offer",
        "rtc:answer",
        "rtc:candidate",
        "rtc:subscribe",
        "call:data",
    ];

    /// The static name of a known message type.
    pub fn known_type(name: &str) -> Option<&'static str> {
        Self::TYPE_NAMES.iter().copied().find(|t| *t == name)
    }

    /// The message type, as counted in metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientRequest::Initiate(_) => "call:initiate",
            ClientRequest::Accept(_) => "call:accept",
            ClientRequest::Reject(_) => "call:reject",
            ClientRequest::Join(_) => "call:join",
            ClientRequest::Leave(_) => "call:leave",
            ClientRequest::End(_) => "call:end",
            ClientRequest::Media(_) => "call:media",
            ClientRequest::Offer(_) => "rtc:offer",
            ClientRequest::Answer(_) => "rtc:answer",
            ClientRequest::Candidate(_) => "rtc:candidate",
            ClientRequest::Subscribe(_) => "rtc:subscribe",
            ClientRequest::Data(_) => "call:data",
        }
    }
}

/// A parsed client frame: the id to echo and the request, or why it could not be understood.
#[derive(Debug)]
pub struct Incoming {
    pub id: Option<RequestId>,
    /// The `type` the client sent, if it sent a string there (for metrics and logs).
    pub type_name: Option<String>,
    pub request: Result<ClientRequest, SignalingError>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: Value,
    #[serde(default)]
    data: Option<Value>,
}

/// Reads a request's `data`: an object, or nothing (`null` or absent) for `{}`. Serde would
/// also read a struct from an array of its fields in order, which is no part of the contract.
fn data<T: DeserializeOwned>(kind: &str, data: Option<Value>) -> Result<T, SignalingError> {
    let object = match data {
        None | Some(Value::Null) => json!({}),
        Some(object @ Value::Object(_)) => object,
        Some(other) => {
            return Err(SignalingError::invalid_argument(format!(
                "invalid data for {kind}: expected an object, got {}",
                json_kind(&other)
            )));
        }
    };
    serde_json::from_value(object)
        .map_err(|e| SignalingError::invalid_argument(format!("invalid data for {kind}: {e}")))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Incoming {
    let invalid = |id: Option<Value>, message: String| Incoming {
        id,
        type_name: None,
        request: Err(SignalingError::invalid_argument(message)),
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return invalid(None, "a message must be a JSON object".to_owned()),
        Err(e) => return invalid(None, format!("invalid JSON: {e}")),
    };
    // Still echo the id when the object carries a usable one but is otherwise malformed.
    let recoverable_id = value.get("id").cloned().filter(valid_id);
    let envelope: Envelope = match serde_json::from_value(value) {
        Ok(envelope) => envelope,
        Err(e) => return invalid(recoverable_id, format!("invalid message: {e}")),
    };
    let id = envelope.id.filter(|v| !v.is_null());
    if let Some(bad) = id.as_ref().filter(|v| !valid_id(v)) {
        return Incoming {
            id: None,
            type_name: None,
            request: Err(SignalingError::invalid_argument(format!(
                "id must be a string or a number, got {bad}"
            ))),
        };
    }
    let Value::String(kind) = envelope.kind else {
        return Incoming {
            id,
            type_name: None,
            request: Err(SignalingError::invalid_argument("type must be a string")),
        };
    };
    let d = envelope.data;
    let request = match kind.as_str() {
        "call:initiate" => data(&kind, d).map(ClientRequest::Initiate),
        "call:accept" => data(&kind, d).map(ClientRequest::Accept),
        "call:reject" => data(&kind, d).map(ClientRequest::Reject),
        "call:join" => data(&kind, d).map(ClientRequest::Join),
        "call:leave" => data(&kind, d).map(ClientRequest::Leave),
        "call:end" => data(&kind, d).map(ClientRequest::End),
        "call:media" => data(&kind, d).map(ClientRequest::Media),
        "rtc:offer" => data(&kind, d).map(ClientRequest::Offer),
        "rtc:answer" => data(&kind, d).map(ClientRequest::Answer),
        "rtc:candidate" => data(&kind, d).map(ClientRequest::Candidate),
        "rtc:subscribe" => data(&kind, d).map(ClientRequest::Subscribe),
        "call:data" => data(&kind, d).map(ClientRequest::Data),
        other => Err(SignalingError::invalid_argument(format!(
            "unknown message type {other:?}"
        ))),
    };
    Incoming {
        id,
        type_name: Some(kind),
        request,
    }
}

fn valid_id(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.len() <= 128) || v.is_number()
}

/// `{"id", "type": "ack", "data"}`.
pub fn ack(id: &RequestId, data: Value) -> String {
    json!({ "id": id, "type": "ack", "data": data }).to_string()
}

/// `{"id"?, "type": "error", "data": {"code", "message", "details"?}}`.
pub fn error(id: Option<&RequestId>, err: &SignalingError) -> String {
    let mut data = json!({ "code": err.code.as_str(), "message": err.message });
    if let Some(details) = &err.details {
        data["details"] = details.clone();
    }
    let mut frame = json!({ "type": "error", "data": data });
    if let Some(id) = id {
        frame["id"] = id.clone();
    }
    frame.to_string()
}

/// `{"type", "data"}` for a server event.
pub fn event(type_name: &str, data: Value) -> String {
    json!({ "type": type_name, "data": data }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parses_call_requests_and_keeps_the_id() {
        let call_id = Uuid::new_v4();
        let msg = parse(&format!(
            r#"{{"id":"c1","type":"call:end","data":{{"call_id":"{call_id}","reason":"bye"}}}}"#
        ));
        assert_eq!(msg.id, Some(json!("c1")));
        assert_eq!(
            msg.request.unwrap(),
            ClientRequest::End(CallWithReason {
                call_id,
                reason: Some("bye".into())
            })
        );
        let msg = parse(&format!(
            r#"{{"id":7,"type":"call:media","data":{{"call_id":"{call_id}","audio_muted":true}}}}"#
        ));
        assert_eq!(msg.id, Some(json!(7)));
        match msg.request.unwrap() {
            ClientRequest::Media(m) => assert_eq!(m.patch.audio_muted, Some(true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_media_requests() {
        let call_id = Uuid::new_v4();
        let msg = parse(&format!(
            r#"{{"type":"rtc:candidate","data":{{"call_id":"{call_id}","target":"publisher","candidate":null}}}}"#
        ));
        assert!(msg.id.is_none());
        assert!(matches!(
            msg.request.unwrap(),
            ClientRequest::Candidate(CandidateData {
                candidate: None,
                target: PeerRole::Publisher,
                ..
            })
        ));
        let msg = parse(&format!(
            r#"{{"type":"rtc:subscribe","data":{{"call_id":"{call_id}","user_id":"bob","source":"screen","quality":"low"}}}}"#
        ));
        assert!(matches!(msg.request.unwrap(), ClientRequest::Subscribe(_)));
    }

    #[test]
    fn every_type_name_is_parsed_as_that_type() {
        let call_id = Uuid::new_v4();
        for name in ClientRequest::TYPE_NAMES {
            let msg = parse(&format!(
                r#"{{"type":"{name}","data":{{"call_id":"{call_id}"}}}}"#
            ));
            assert_eq!(msg.type_name.as_deref(), Some(*name));
            match msg.request {
                Ok(request) => assert_eq!(request.type_name(), *name),
                // Missing fields, but known: the message names the type.
                Err(e) => assert!(
                    e.message.starts_with(&format!("invalid data for {name}")),
                    "{name}: {}",
                    e.message
                ),
            }
        }
    }

    #[test]
    fn parses_data_with_any_payload() {
        let call_id = Uuid::new_v4();
        for payload in [
            json!("hi"),
            json!({"kind": "chat"}),
            json!([1, 2]),
            json!(null),
        ] {
            let msg = parse(
                &json!({"type": "call:data", "data": {"call_id": call_id, "payload": payload}})
                    .to_string(),
            );
            match msg.request.unwrap() {
                ClientRequest::Data(d) => {
                    assert_eq!(d.payload, payload);
                    assert_eq!(d.to, None);
                }
                other => panic!("{other:?}"),
            }
        }
        let msg = parse(
            &json!({"type": "call:data", "data": {"call_id": call_id, "payload": 1, "to": ["bob"]}})
                .to_string(),
        );
        assert!(
            matches!(msg.request.unwrap(), ClientRequest::Data(DataMessage { to: Some(to), .. }) if to.len() == 1)
        );
        let missing =
            parse(&json!({"type": "call:data", "data": {"call_id": call_id}}).to_string());
        assert_eq!(
            missing.request.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let bad_to = parse(
            &json!({"type": "call:data", "data": {"call_id": call_id, "payload": 1, "to": ["no spaces"]}})
                .to_string(),
        );
        assert_eq!(bad_to.request.unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn bad_frames_are_invalid_argument_with_the_id_when_recoverable() {
        let cases = [
            ("{not json", None),
            (r#"{"id":"x1"}"#, Some(json!("x1"))),
            (
                r#"{"id":"x2","type":"call:dance","data":{}}"#,
                Some(json!("x2")),
            ),
            (
                r#"{"id":"x3","type":"call:accept","data":{}}"#,
                Some(json!("x3")),
            ),
            (
                r#"{"id":"x4","type":"call:accept","data":{"call_id":"nope"}}"#,
                Some(json!("x4")),
            ),
            (r#"{"id":"x5","type":42}"#, Some(json!("x5"))),
            (r#"{"id":{"a":1},"type":"call:accept"}"#, None),
            (r#"[1,2]"#, None),
            (
                r#"{"id":"x6","type":"call:initiate","data":{"invitees":["b"],"media":"smell"}}"#,
                Some(json!("x6")),
            ),
        ];
        for (text, id) in cases {
            let msg = parse(text);
            assert_eq!(msg.id, id, "{text}");
            let err = msg.request.expect_err(text);
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{text}");
        }
    }

    #[test]
    fn every_client_type_is_parsed_by_its_name() {
        for kind in ClientRequest::TYPE_NAMES {
            let msg = parse(&json!({"id": "t", "type": kind, "data": {}}).to_string());
            assert_eq!(msg.type_name.as_deref(), Some(*kind));
            if let Err(e) = &msg.request {
                assert!(!e.message.contains("unknown message type"), "{kind}: {e}");
            }
        }
        let msg = parse(r#"{"type":"call:dance"}"#);
        assert!(
            msg.request
                .unwrap_err()
                .message
                .contains("unknown message type")
        );
    }

    #[test]
    fn a_candidate_is_an_object_or_null() {
        let call_id = Uuid::new_v4();
        let frame = |candidate: Value| {
            parse(
                &json!({"type": "rtc:candidate", "data":
                    {"call_id": call_id, "target": "publisher", "candidate": candidate}})
                .to_string(),
            )
            .request
        };
        for bad in [
            json!(["candidate:1 1 udp 1 127.0.0.1 9 typ host"]),
            json!(5),
            json!("candidate:1 1 udp 1 127.0.0.1 9 typ host"),
            json!(true),
            json!({"candidate": 3}),
            json!({}),
            json!({"candidate": "candidate:1", "sdp_mline_index": -1}),
            json!({"candidate": "candidate:1", "sdp_mline_index": 70000}),
            json!({"candidate": "candidate:1", "sdp_mid": 0}),
        ] {
            let err = frame(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(err.message.contains("candidate"), "{bad}: {}", err.message);
        }
        let good = frame(
            json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
            "sdp_mid": "0", "sdp_mline_index": 0}),
        );
        match good.unwrap() {
            ClientRequest::Candidate(c) => {
                let c = c.candidate.unwrap();
                assert_eq!(c.sdp_mid.as_deref(), Some("0"));
                assert_eq!(c.sdp_mline_index, Some(0));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            frame(Value::Null).unwrap(),
            ClientRequest::Candidate(CandidateData {
                candidate: None,
                ..
            })
        ));
        let without = parse(
            &json!({"type": "rtc:candidate", "data": {"call_id": call_id, "target": "subscriber"}})
                .to_string(),
        );
        assert!(matches!(
            without.request.unwrap(),
            ClientRequest::Candidate(CandidateData {
                candidate: None,
                ..
            })
        ));
    }

    #[test]
    fn data_is_an_object_never_an_array_of_fields() {
        let call_id = Uuid::new_v4();
        for kind in ClientRequest::TYPE_NAMES {
            for data in [
                json!([call_id, "publisher", "v=0"]),
                json!(7),
                json!("x"),
                json!(false),
            ] {
                let msg = parse(&json!({"type": kind, "data": data}).to_string());
                let err = msg.request.expect_err(kind);
                assert_eq!(err.code, ErrorCode::InvalidArgument);
                assert!(err.message.contains("expected an object"), "{kind}: {err}");
            }
        }
        let msg = parse(&json!({"type": "call:accept", "data": {"call_id": call_id}}).to_string());
        assert!(msg.request.is_ok());
    }

    #[test]
    fn a_call_id_may_be_spelled_as_any_uuid_form() {
        let call_id = Uuid::new_v4();
        let spellings = [
            call_id.hyphenated().to_string(),
            call_id.simple().to_string(),
            call_id.hyphenated().to_string().to_uppercase(),
            call_id.braced().to_string(),
            call_id.urn().to_string(),
        ];
        for spelling in spellings {
            let msg = parse(
                &json!({"type": "rtc:offer", "data": {"call_id": spelling, "target": "publisher", "sdp": "v=0"}})
                    .to_string(),
            );
            match msg.request.unwrap() {
                ClientRequest::Offer(d) => assert_eq!(d.call_id, call_id),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_numeric_id_is_echoed_as_sent() {
        for id in [
            "-1.1489792441636126e+144",
            "0.1",
            "7",
            "18446744073709551615",
            "-3.5e-300",
        ] {
            let text = format!(r#"{{"id":{id},"type":"call:accept","data":{{}}}}"#);
            let msg = parse(&text);
            let sent: Value = serde_json::from_str(id).unwrap();
            let echoed: Value =
                serde_json::from_str(&error(msg.id.as_ref(), &msg.request.unwrap_err())).unwrap();
            assert_eq!(echoed["id"], sent, "{id}");
            assert_eq!(
                echoed["id"].to_string().parse::<f64>().ok(),
                id.parse::<f64>().ok()
            );
        }
    }

    #[test]
    fn frames_have_the_contract_shape() {
        let err = SignalingError::new(ErrorCode::UserBusy, "busy").with_call_id(Uuid::nil());
        let v: Value = serde_json::from_str(&error(Some(&json!("c9")), &err)).unwrap();
        assert_eq!(v["id"], "c9");
        assert_eq!(v["type"], "error");
        assert_eq!(v["data"]["code"], "USER_BUSY");
        assert_eq!(v["data"]["details"]["call_id"], Uuid::nil().to_string());
        let v: Value = serde_json::from_str(&error(None, &err)).unwrap();
        assert!(v.get("id").is_none());
        let v: Value = serde_json::from_str(&ack(&json!("c1"), json!({}))).unwrap();
        assert_eq!(v, json!({"id": "c1", "type": "ack", "data": {}}));
    }
}
