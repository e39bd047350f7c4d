//! One client peer connection: webrtc-rs's sans-I/O `RTCPeerConnection` and the UDP socket it
//! owns, configured the way a browser would be against Confab (full ICE, controlling, against the
//! server's ICE-lite; DTLS; SRTP), on loopback with mDNS off.
//!
//! A publisher has sendonly Opus and VP8 tracks and keeps rtc's default interceptors (it sends
//! little, and the server's reports and NACKs find a normal peer). A subscriber has no
//! interceptors at all: it receives everything the server forwards, so its per-packet cost is
//! what decides whether the load generator keeps up, and with no NACK generator any loss stays
//! visible instead of being repaired.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::net::UdpSocket;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
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
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

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

/// A sending track of a publisher.
pub struct Sender {
    pub id: RTCRtpSenderId,
    pub ssrc: u32,
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
    pub keyframe_requested: bool,
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
    /// RTP payloads read this pass, handed to the recorder by the media thread.
    pub received: VecDeque<Bytes>,
    pub send_errors: u64,
}

impl Client {
    /// A client with its own socket on `bind_ip`, port chosen by the kernel.
    pub fn new(role: Role, bind_ip: std::net::IpAddr, now: Instant) -> Result<Self, ClientError> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
        std_socket.set_nonblocking(true)?;
        raise_rcvbuf(&std_socket, SOCKET_RCVBUF);
        let local = std_socket.local_addr()?;
        let socket = UdpSocket::from_std(std_socket);
        let pc = build_pc(role, now)?;
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
        })
    }

    /// Adds a sendonly track with a fixed SSRC; publishers only.
    pub fn add_track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        kind: RtpCodecKind,
        ssrc: u32,
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
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        );
        let id = self.pc.add_track(track).map_err(rtc_err)?;
        self.senders.push(Sender {
            id,
            ssrc,
            payload_type: None,
            seq: (ssrc & 0x7fff) as u16,
            timestamp: ssrc.rotate_left(7),
        });
        Ok(())
    }

    /// Creates and applies the publisher's offer; returns its SDP.
    pub fn offer(&mut self, now: Instant) -> Result<String, ClientError> {
        let offer = self.pc.create_offer(None).map_err(rtc_err)?;
        self.pc.set_local_description(now, offer).map_err(rtc_err)?;
        self.add_host_candidate()?;
        self.local_sdp()
    }

    /// Applies the server's answer to our offer.
    pub fn accept_answer(&mut self, now: Instant, sdp: String) -> Result<(), ClientError> {
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
    pub fn read_socket(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        loop {
            let (len, from) = match self.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                Err(_) => return n,
            };
            n += 1;
            let msg = TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: self.local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&buf[..len]),
            };
            let _ = self.pc.handle_read(msg);
            // Drain as we go so rtc's internal queues stay short under a burst.
            if n % 32 == 0 {
                self.drain_reads();
            }
        }
    }

    fn drain_reads(&mut self) -> bool {
        let mut keyframe = false;
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, packet) => self.received.push_back(packet.payload),
                RTCMessage::RtcpPacket(_, packets) => {
                    keyframe |= packets.iter().any(|p| is_keyframe_request(p.as_ref()));
                }
                _ => {}
            }
        }
        keyframe
    }

    /// Drains events, inbound media and outbound datagrams.
    pub fn service(&mut self) -> Output {
        let mut out = Output {
            keyframe_requested: self.drain_reads(),
            ..Output::default()
        };
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
        out.keyframe_requested |= self.drain_reads();
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
    pub fn send(
        &mut self,
        sender: usize,
        now: Instant,
        payload: Bytes,
        marker: bool,
        timestamp_step: u32,
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
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: s.seq,
                timestamp: s.timestamp,
                ssrc: s.ssrc,
                ..Default::default()
            },
            payload,
        };
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

fn build_pc(role: Role, now: Instant) -> Result<RTCPeerConnection, ClientError> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(rtc_err)?;
    let registry = match role {
        Role::Publisher => register_default_interceptors(Registry::new(), &mut media)
            .map_err(rtc_err)?
            .with(Slot::from(14_000), KeyframeRequests::default()),
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
