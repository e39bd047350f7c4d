//! A publishing client bot on the async `webrtc` crate, for tests over loopback.
//!
//! It binds 127.0.0.1 only (a wildcard bind skips loopback), disables mDNS and uses no ICE
//! servers, so tests stay on the machine and can run in parallel on ephemeral ports.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

pub type BotResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Payload types of Opus and VP8 in the default codec set, which both sides register.
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
pub const AUDIO_SSRC: u32 = 0x1111_0001;
pub const VIDEO_SSRC: u32 = 0x2222_0002;

struct StateHandler {
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for StateHandler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

/// A client with one sendonly Opus and one sendonly VP8 transceiver.
pub struct PublisherBot {
    pc: Arc<dyn PeerConnection>,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

fn track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
    let id = format!("{kind}-{ssrc:x}");
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "bot-stream".to_owned(),
        id.clone(),
        id,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )))
}

impl PublisherBot {
    pub async fn new() -> BotResult<Self> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(StateHandler { state: state_tx }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let audio = track(
            RtpCodecKind::Audio,
            AUDIO_SSRC,
            RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
        );
        let video = track(
            RtpCodecKind::Video,
            VIDEO_SSRC,
            RTCRtpCodec {
                mime_type: "video/VP8".to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
        );
        for t in [&audio, &video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_track(t.clone(), Some(init)).await?;
        }
        Ok(Self {
            pc,
            audio,
            video,
            state,
        })
    }

    /// Creates and applies the offer; the server is ICE-lite and learns our address from our
    /// checks, so the offer need not wait for gathering.
    pub async fn offer(&self) -> BotResult<String> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        Ok(offer.sdp)
    }

    pub async fn accept_answer(&self, sdp: String) -> BotResult<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    pub async fn wait_connected(&self, timeout: Duration) -> BotResult<()> {
        let mut state = self.state.clone();
        tokio::time::timeout(
            timeout,
            state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await??;
        Ok(())
    }

    /// Sends generated RTP for `duration`: one Opus packet per 20 ms and a 3-packet VP8 frame per
    /// 40 ms. Returns (audio, video) packets written.
    pub async fn send_media(&self, duration: Duration) -> BotResult<(u64, u64)> {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut a_seq, mut v_seq) = (0u16, 0u16);
        let (mut a_sent, mut v_sent) = (0u64, 0u64);
        let mut n = 0u32;
        while start.elapsed() < duration {
            tick.tick().await;
            let audio = rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    payload_type: OPUS_PT,
                    sequence_number: a_seq,
                    timestamp: n.wrapping_mul(960),
                    ssrc: AUDIO_SSRC,
                    ..Default::default()
                },
                payload: Bytes::from(vec![0xF8u8; 60]),
            };
            self.audio.write_rtp(audio).await?;
            a_seq = a_seq.wrapping_add(1);
            a_sent += 1;
            if n.is_multiple_of(2) {
                for part in 0..3u8 {
                    // VP8 payload descriptor: S bit on the first partition of the frame.
                    let mut payload = vec![if part == 0 { 0x10 } else { 0x00 }];
                    payload.extend(std::iter::repeat_n(0x42u8, 800));
                    let video = rtp::Packet {
                        header: rtp::Header {
                            version: 2,
                            payload_type: VP8_PT,
                            sequence_number: v_seq,
                            timestamp: (n / 2).wrapping_mul(3600),
                            ssrc: VIDEO_SSRC,
                            marker: part == 2,
                            ..Default::default()
                        },
                        payload: Bytes::from(payload),
                    };
                    self.video.write_rtp(video).await?;
                    v_seq = v_seq.wrapping_add(1);
                    v_sent += 1;
                }
            }
            n += 1;
        }
        Ok((a_sent, v_sent))
    }

    pub async fn close(&self) -> BotResult<()> {
        self.pc.close().await?;
        Ok(())
    }
}
