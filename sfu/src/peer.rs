//! One publisher peer connection: how it is configured and what the engine tracks about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rtc::dtls::cipher_suite::CipherSuiteId;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine as RtcMediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use uuid::Uuid;

use crate::demux::PeerKey;
use crate::error::EngineError;
use crate::{MediaKind, RoomId};

/// A peer connection and the engine's bookkeeping for it.
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) room: RoomId,
    pub(crate) participant: String,
    pub(crate) pc: RTCPeerConnection,
    /// The deadline this peer currently has in the worker's timer heap, already rounded; heap
    /// entries that do not match it are stale and skipped.
    pub(crate) armed: Option<Instant>,
    /// Whether the peer is already queued for servicing in this loop pass.
    pub(crate) dirty: bool,
    pub(crate) connected: bool,
    /// Per-SSRC reception counters; keyed by SSRC because RTP can arrive before the track event
    /// that names its kind and mid.
    pub(crate) tracks: HashMap<u32, TrackCounters>,
}

/// What the engine has seen of one inbound RTP stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackCounters {
    pub(crate) kind: Option<MediaKind>,
    pub(crate) mid: Option<String>,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// ICE credentials the engine chooses itself, so the demultiplexer knows the ufrag up front.
pub(crate) struct IceCredentials {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials: 16 hex chars of ufrag (ICE needs at least 4) and 32 of password
    /// (at least 22), drawn from v4 UUIDs so no extra RNG dependency is needed.
    pub(crate) fn random() -> Self {
        let ufrag = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let pwd = Uuid::new_v4().simple().to_string();
        Self { ufrag, pwd }
    }
}

/// Builds a publisher peer connection that answers the client's `offer_sdp`, and returns it with
/// the answer SDP (which carries the worker's host candidate).
///
/// Any failure before the answer exists is reported as [`EngineError::InvalidSdp`] when the offer
/// is to blame; the half-built connection is simply dropped, so a bad offer leaves nothing behind.
pub(crate) fn answer_publisher(
    now: Instant,
    announced: SocketAddr,
    creds: &IceCredentials,
    offer_sdp: String,
) -> Result<(RTCPeerConnection, String), EngineError> {
    let offer = RTCSessionDescription::offer(offer_sdp)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let mut pc = build_pc(now, creds)?;
    pc.set_remote_description(now, offer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    add_host_candidate(&mut pc, announced)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EngineError::Rtc("no local description after answering".into()))?;
    Ok((pc, sdp))
}

/// Renegotiates an existing publisher with a new client offer (a track added or removed).
pub(crate) fn reanswer_publisher(
    now: Instant,
    pc: &mut RTCPeerConnection,
    offer_sdp: String,
) -> Result<String, EngineError> {
    let offer = RTCSessionDescription::offer(offer_sdp)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EngineError::Rtc("no local description after answering".into()))
}

fn build_pc(now: Instant, creds: &IceCredentials) -> Result<RTCPeerConnection, EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    let mut media = RtcMediaEngine::default();
    media.register_default_codecs().map_err(rtc_err)?;
    let registry = register_default_interceptors(Registry::new(), &mut media).map_err(rtc_err)?;
    let settings = SettingEngineBuilder::new()
        // Lite: the server has a reachable address and learns the client's from its checks, so it
        // never needs to send checks or gather; that is what makes one shared socket workable.
        .with_lite(true)
        .with_ice_credentials(creds.ufrag.clone(), creds.pwd.clone())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Only suites that match our ECDSA certificate: a peer that picks an RSA suite would stall
        // the handshake in Connecting (webrtc-rs #808).
        .with_dtls_cipher_suites(vec![
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_256_Cbc_Sha,
        ])
        .build();
    // No ICE servers: a lite agent rejects STUN/TURN URLs.
    let config = RTCConfigurationBuilder::new().build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(rtc_err)
}

/// Advertises the worker's single host candidate, then end-of-candidates so the connection does
/// not report gathering forever.
fn add_host_candidate(
    pc: &mut RTCPeerConnection,
    announced: SocketAddr,
) -> Result<(), EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: announced.ip().to_string(),
            port: announced.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(rtc_err)?;
    let init = RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(rtc_err)?;
    pc.add_local_candidate(init).map_err(rtc_err)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(rtc_err)
}
