//! One client peer connection: webrtc-rs's sans-I/O `RTCPeerConnection` and the UDP socket it
//! owns, configured the way a browser would be against Confab (full ICE, controlling, against the
//! server's ICE-lite; DTLS; SRTP), on loopback with mDNS off.
//!
//! A publisher has sendonly Opus and VP8 tracks (the camera optionally as three RID simulcast
//! layers) and keeps rtc's default interceptors (it sends little, and the server's reports and
//! NACKs find a normal peer); its audio carries the RFC 6464 level. A subscriber has no
//! interceptors: it receives everything the server forwards, so its per-packet cost is what
//! decides whether the load generator keeps up, and with no NACK generator any loss stays
//! visible instead of being repaired. In a simulcast run it sends receiver reports (rtc's
//! interceptor), as browsers do: the server's congestion control reads them, and without any it
//! takes the path for congested and pauses video.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::net::UdpSocket;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    Attribute, Interceptor, Packet, ReceiverReportBuilder, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::rx_time;

/// Which of a participant's two connections (contract section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Subscriber,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("rtc: {0}")]
    Rtc(String),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    State(&'static str),
}

fn rtc_err(e: rtc::shared::error::Error) -> ClientError {
    ClientError::Rtc(e.to_string())
}

/// Receive buffer asked for each client socket: enough for a burst of a whole room's packets
/// while the media thread is busy elsewhere.
const SOCKET_RCVBUF: usize = 4 << 20;
const DATAGRAM_MAX: usize = 1500;
const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// How often a subscriber that reports sends receiver reports (the server's estimate is updated
/// once a second and decays after three without one).
const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// One sending stream of a publisher: a track, or one simulcast layer of it (layers share the
/// track's sender and differ in SSRC and RID).
pub struct Sender {
    pub id: RTCRtpSenderId,
    pub ssrc: u32,
    pub kind: RtpCodecKind,
    pub rid: Option<&'static str>,
    /// The payload type the answer negotiated, looked up on the first send.
    pub payload_type: Option<u8>,
    pub seq: u16,
    pub timestamp: u32,
}

/// What one pass over a client's output produced, for the media thread to act on.
#[derive(Default)]
pub struct Output {
    pub connected_now: bool,
    pub failed_now: bool,
    /// Media SSRCs that PLI or FIR packets asked keyframes of.
    pub keyframe_ssrcs: Vec<u32>,
}

/// Header extension ids (and the video mid) the publisher's answer negotiated; 0 = none.
#[derive(Debug, Clone, Default)]
struct Extensions {
    audio_level: u8,
    mid: u8,
    rid: u8,
    video_mid: Bytes,
}

pub struct Client {
    pub pc: RTCPeerConnection,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub connected: bool,
    /// Latest ICE and connection states, for telling where a connection that never came up
    /// got stuck.
    pub ice_state: String,
    pub pc_state: String,
    pub senders: Vec<Sender>,
    candidate_added: bool,
    /// RTP payloads read this pass with when they arrived, handed to the recorder by the media
    /// thread.
    pub received: VecDeque<(Bytes, Instant)>,
    pub send_errors: u64,
    extensions: Extensions,
    /// Keyframe requests read and not yet handed out by [`Client::service`].
    keyframe_ssrcs: Vec<u32>,
}

impl Client {
    /// A client with its own socket on `bind_ip`, port chosen by the kernel. `reports`: a
    /// subscriber sends receiver reports.
    pub fn new(
        role: Role,
        bind_ip: std::net::IpAddr,
        now: Instant,
        reports: bool,
    ) -> Result<Self, ClientError> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
        std_socket.set_nonblocking(true)?;
        raise_rcvbuf(&std_socket, SOCKET_RCVBUF);
        // Without stamps, arrivals fall back to when the socket was read.
        let _ = rx_time::enable(&std_socket);
        let local = std_socket.local_addr()?;
        let socket = UdpSocket::from_std(std_socket);
        let pc = build_pc(role, now, reports)?;
        Ok(Self {
            pc,
            socket,
            local,
            connected: false,
            ice_state: "new".to_owned(),
            pc_state: "new".to_owned(),
            senders: Vec::new(),
            candidate_added: false,
            received: VecDeque::new(),
            send_errors: 0,
            extensions: Extensions::default(),
            keyframe_ssrcs: Vec::new(),
        })
    }

    /// Adds a sendonly track with fixed SSRCs; publishers only. One encoding is a plain track;
    /// several, each with a RID, are simulcast layers (lowest first), which rtc offers as
    /// `a=rid:… send` lines and `a=simulcast:send`.
    pub fn add_track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        kind: RtpCodecKind,
        encodings: &[(u32, Option<&'static str>)],
    ) -> Result<(), ClientError> {
        let codec = match kind {
            RtpCodecKind::Audio => RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            _ => RTCRtpCodec {
                mime_type: "video/VP8".to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
        };
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            kind,
            encodings
                .iter()
                .map(|&(ssrc, rid)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.unwrap_or_default().to_owned(),
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    active: true,
                    codec: codec.clone(),
                    ..Default::default()
                })
                .collect(),
        );
        let id = self.pc.add_track(track).map_err(rtc_err)?;
        for &(ssrc, rid) in encodings {
            self.senders.push(Sender {
                id,
                ssrc,
                kind,
                rid,
                payload_type: None,
                seq: (ssrc & 0x7fff) as u16,
                timestamp: ssrc.rotate_left(7),
            });
        }
        Ok(())
    }

    /// Creates and applies the publisher's offer; returns its SDP.
    pub fn offer(&mut self, now: Instant) -> Result<String, ClientError> {
        let offer = self.pc.create_offer(None).map_err(rtc_err)?;
        self.pc.set_local_description(now, offer).map_err(rtc_err)?;
        self.add_host_candidate()?;
        self.local_sdp()
    }

    /// Applies the server's answer to our offer, and learns the header extension ids it
    /// negotiated: rtc's sender adds none of them itself.
    pub fn accept_answer(&mut self, now: Instant, sdp: String) -> Result<(), ClientError> {
        self.extensions = negotiated_extensions(&sdp);
        let answer = RTCSessionDescription::answer(sdp).map_err(rtc_err)?;
        self.pc.set_remote_description(now, answer).map_err(rtc_err)
    }

    /// Answers a server offer (subscriber); returns the answer SDP.
    pub fn answer(&mut self, now: Instant, sdp: String) -> Result<String, ClientError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(rtc_err)?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(rtc_err)?;
        let answer = self.pc.create_answer(None).map_err(rtc_err)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        self.add_host_candidate()?;
        self.local_sdp()
    }

    /// Adds a candidate the server trickled; duplicates of the SDP's are harmless.
    pub fn add_remote_candidate(&mut self, init: RTCIceCandidateInit) {
        let _ = self.pc.add_remote_candidate(init);
    }

    fn local_sdp(&self) -> Result<String, ClientError> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(ClientError::State("no local description"))
    }

    fn add_host_candidate(&mut self) -> Result<(), ClientError> {
        if self.candidate_added {
            return Ok(());
        }
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
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
        self.pc.add_local_candidate(init).map_err(rtc_err)?;
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())
            .map_err(rtc_err)?;
        self.candidate_added = true;
        Ok(())
    }

    /// Reads everything the socket holds into the connection. Returns the datagrams read.
    ///
    /// Each datagram enters rtc at the instant the kernel queued it on the socket, which rtc
    /// hands back with the decrypted packet: the arrival the recorder measures latency to.
    /// A read that returns less than a full batch emptied the socket, and the next datagram
    /// queued wakes the poll again (Linux signals every arrival on an edge-triggered UDP
    /// socket), so the drain stops there rather than spend a system call to hear `WouldBlock`.
    pub fn read_socket(&mut self, batch: &mut rx_time::RecvBatch) -> usize {
        let mut n = 0;
        let clocks = rx_time::Clocks::now();
        loop {
            let read = match batch.recv(&self.socket) {
                Ok(read) => read,
                Err(_) => return n,
            };
            for i in 0..read {
                let Some((data, arrival)) = batch.get(i) else {
                    continue;
                };
                n += 1;
                let msg = TaggedBytesMut {
                    now: arrival
                        .arrived
                        .map_or_else(Instant::now, |at| clocks.instant_of(at)),
                    transport: TransportContext {
                        local_addr: self.local,
                        peer_addr: arrival.from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(data),
                };
                let _ = self.pc.handle_read(msg);
            }
            // Drain as we go so rtc's internal queues stay short under a burst.
            self.drain_reads();
            if read < rx_time::BATCH {
                return n;
            }
        }
    }

    fn drain_reads(&mut self) {
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, packet) => {
                    self.received.push_back((packet.payload, msg.now));
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in &packets {
                        keyframe_request_ssrcs(p.as_ref(), &mut self.keyframe_ssrcs);
                    }
                }
                _ => {}
            }
        }
    }

    /// Drains events, inbound media and outbound datagrams.
    pub fn service(&mut self) -> Output {
        self.drain_reads();
        let mut out = Output::default();
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) = &event {
                self.ice_state = state.to_string();
            }
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.pc_state = state.to_string();
                match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        out.connected_now = true;
                    }
                    RTCPeerConnectionState::Failed => out.failed_now = true,
                    _ => {}
                }
            }
        }
        self.drain_reads();
        out.keyframe_ssrcs = std::mem::take(&mut self.keyframe_ssrcs);
        while let Some(msg) = self.pc.poll_write() {
            if self
                .socket
                .send_to(&msg.message, msg.transport.peer_addr)
                .is_err()
            {
                self.send_errors += 1;
            }
        }
        out
    }

    /// Hands one generated packet to a sender; the datagram leaves at the next [`Client::service`].
    /// An audio packet carries `audio_level` (the RFC 6464 byte: voice flag and −dBov) once the
    /// answer negotiated the extension; a simulcast layer's packet carries the mid and its RID.
    pub fn send(
        &mut self,
        sender: usize,
        now: Instant,
        payload: Bytes,
        marker: bool,
        timestamp_step: u32,
        audio_level: Option<u8>,
    ) -> Result<(), ClientError> {
        let Some(s) = self.senders.get_mut(sender) else {
            return Err(ClientError::State("no such sender"));
        };
        let id = s.id;
        let pt = match s.payload_type {
            Some(pt) => pt,
            None => {
                let pt = self
                    .pc
                    .rtp_sender(id)
                    .and_then(|mut r| {
                        r.get_parameters()
                            .rtp_parameters
                            .codecs
                            .first()
                            .map(|c| c.payload_type)
                    })
                    .ok_or(ClientError::State("no negotiated codec"))?;
                let s = &mut self.senders[sender];
                s.payload_type = Some(pt);
                pt
            }
        };
        let s = &mut self.senders[sender];
        let mut header = rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: s.seq,
            timestamp: s.timestamp,
            ssrc: s.ssrc,
            ..Default::default()
        };
        let ext = &self.extensions;
        if let (RtpCodecKind::Audio, Some(level)) = (s.kind, audio_level)
            && ext.audio_level != 0
        {
            let at = usize::from(level);
            header.extension = true;
            header.extension_profile = extension_profile(ext.audio_level);
            let _ = header.set_extension(ext.audio_level, Bytes::from_static(&BYTES[at..=at]));
        }
        if let Some(rid) = s.rid
            && ext.mid != 0
            && ext.rid != 0
        {
            header.extension = true;
            header.extension_profile = extension_profile(ext.mid.max(ext.rid));
            let _ = header.set_extension(ext.mid, ext.video_mid.clone());
            let _ = header.set_extension(ext.rid, Bytes::from_static(rid.as_bytes()));
        }
        let packet = rtp::Packet { header, payload };
        s.seq = s.seq.wrapping_add(1);
        if marker {
            s.timestamp = s.timestamp.wrapping_add(timestamp_step);
        }
        let mut rtp_sender = self
            .pc
            .rtp_sender(id)
            .ok_or(ClientError::State("sender gone"))?;
        rtp_sender.write_rtp(now, packet).map_err(rtc_err)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    pub fn close(&mut self) {
        let _ = self.pc.close();
        // Flush the close alerts so the server sees the connection go.
        let _ = self.service();
    }
}

fn build_pc(role: Role, now: Instant, reports: bool) -> Result<RTCPeerConnection, ClientError> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(rtc_err)?;
    let registry = match role {
        Role::Publisher => {
            // Audio levels, for the server's active speakers and loudest-N.
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )
                .map_err(rtc_err)?;
            register_default_interceptors(Registry::new(), &mut media)
                .map_err(rtc_err)?
                .with(Slot::from(14_000), KeyframeRequests::default())
        }
        Role::Subscriber if reports => Registry::new().with(
            Slot::ReceiverReport,
            ReceiverReportBuilder::new()
                .with_interval(REPORT_INTERVAL)
                .build(),
        ),
        Role::Subscriber => Registry::new(),
    };
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // rtc paces connectivity checks at 200 ms; browsers pace at RFC 8445's Ta (about
        // 50 ms), and a join time should measure the server, not a slow client. The attempt
        // count keeps rtc's 1.4 s before a candidate pair fails.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28))
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(rtc_err)
}

/// Asks the kernel for a larger receive buffer; as root `SO_RCVBUFFORCE` passes `rmem_max`.
fn raise_rcvbuf(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Adds the media SSRCs a PLI or FIR asks keyframes of to `out`.
fn keyframe_request_ssrcs(packet: &dyn rtc::rtcp::Packet, out: &mut Vec<u32>) {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        out.push(pli.media_ssrc);
    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        out.extend(fir.fir.iter().map(|e| e.ssrc));
    }
}

/// The RFC 8285 header form that can carry extension `id`: one-byte ids are 1..=14.
fn extension_profile(id: u8) -> u16 {
    if id <= 14 { 0xBEDE } else { 0x1000 }
}

/// Every byte value, so a one-byte extension payload is a static slice, not an allocation.
static BYTES: [u8; 256] = {
    let mut bytes = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// The extension ids an answer gave the audio level (audio section) and the mid and RID (video
/// section), and the video section's mid. Unknown or absent ones are 0: not sent.
fn negotiated_extensions(sdp: &str) -> Extensions {
    let mut ext = Extensions::default();
    for section in sdp.split("\nm=").skip(1) {
        let audio = section.starts_with("audio");
        let video = section.starts_with("video");
        for line in section.lines().map(str::trim) {
            if video && let Some(mid) = line.strip_prefix("a=mid:") {
                ext.video_mid = Bytes::from(mid.to_owned());
            }
            let Some(rest) = line.strip_prefix("a=extmap:") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let Some(id) = words
                .next()
                .and_then(|w| w.split('/').next())
                .and_then(|w| w.parse::<u8>().ok())
            else {
                continue;
            };
            match words.next() {
                Some(rtc::sdp::extmap::AUDIO_LEVEL_URI) if audio => ext.audio_level = id,
                Some(MID_URI) if video => ext.mid = id,
                Some(RID_URI) if video => ext.rid = id,
                _ => {}
            }
        }
    }
    if ext.video_mid.is_empty() {
        ext.mid = 0;
    }
    ext
}

/// Inbound RTCP stops inside rtc's chain unless marked for the application; a publisher needs
/// to see PLI/FIR to answer with a keyframe.
#[derive(Default)]
struct KeyframeRequests {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

pub const RECV_BUF_LEN: usize = DATAGRAM_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_extension_ids_to_send() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
            a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            a=extmap:4/recvonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n";
        let ext = negotiated_extensions(sdp);
        assert_eq!((ext.audio_level, ext.mid, ext.rid), (1, 3, 4));
        assert_eq!(&ext.video_mid[..], b"1");
        let none = negotiated_extensions("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n");
        assert_eq!((none.audio_level, none.mid, none.rid), (0, 0, 0));
        assert_eq!(extension_profile(14), 0xBEDE);
        assert_eq!(extension_profile(15), 0x1000);
    }
}
