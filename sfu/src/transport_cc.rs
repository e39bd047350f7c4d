//! Transport-wide congestion control on a subscriber connection, for the streams that negotiated
//! it and nothing else.
//!
//! rtc's two send-side interceptors both sit on every forwarded packet: the TWCC sender numbers
//! only streams whose `StreamInfo` carries the transport-cc extension, but the congestion
//! controller records *every* bound local stream in its send history, extension or not (it also
//! serves RFC 8888 feedback, which needs none). A subscriber connection negotiates transport-cc
//! for video only (see `peer::build_pc`): audio is never limited by the estimate, so numbering
//! and recording it would only cost time and memory on the busiest path the server has (in a
//! 50-talker call, about 1.8 µs and a third of the CPU per forwarded packet, 1.7 MB per
//! participant, twice the p99 latency).
//!
//! [`VideoTransportCc`] owns both interceptors and binds only the local streams that negotiated
//! the extension. A packet of any other stream passes through one queue and a set lookup; a
//! packet of a bound stream is numbered by the TWCC sender and then recorded by the congestion
//! controller, in the order their own slots would give them. One slot instead of two also saves
//! every packet one step of the chain.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use rtc::interceptor::{
    CongestionControlInterceptor, Gcc, Interceptor, Packet, StreamInfo, TaggedPacket,
    TwccSenderInterceptor,
};
use rtc::sansio::Protocol;

/// The negotiated transport-cc header extension's URI.
const TRANSPORT_CC_URI: &str = rtc::sdp::extmap::TRANSPORT_CC_URI;

/// Whether a local stream negotiated transport-wide sequence numbers.
fn negotiated_transport_cc(info: &StreamInfo) -> bool {
    info.rtp_header_extensions
        .iter()
        .any(|e| e.uri == TRANSPORT_CC_URI && e.id != 0)
}

/// rtc's TWCC sender and GCC-driven congestion controller, applied only to the local streams that
/// negotiated transport-cc. Belongs in `Slot::CongestionControl`: wire-most, as the controller
/// must be (its send history records the instant a packet leaves), with the numbering just
/// before it as `Slot::TwccSender` would place it.
pub(crate) struct VideoTransportCc {
    sender: TwccSenderInterceptor,
    controller: CongestionControlInterceptor<Gcc>,
    /// SSRCs of the bound streams that carry the extension.
    streams: HashSet<u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl VideoTransportCc {
    pub(crate) fn new(
        sender: TwccSenderInterceptor,
        controller: CongestionControlInterceptor<Gcc>,
    ) -> Self {
        Self {
            sender,
            controller,
            streams: HashSet::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn tracked(&self, msg: &TaggedPacket) -> bool {
        // Outbound RTCP is neither numbered nor recorded by either interceptor.
        matches!(&msg.message.packet, Packet::Rtp(p) if self.streams.contains(&p.header.ssrc))
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for VideoTransportCc {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    /// Inbound: the controller ingests transport-cc feedback (and marks the packet with a new
    /// target bitrate); the TWCC sender passes everything through.
    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if !matches!(msg.message.packet, Packet::Rtcp(_)) {
            self.read_queue.push_back(msg);
            return Ok(());
        }
        self.controller.handle_read(msg)?;
        while let Some(msg) = self.controller.poll_read() {
            self.read_queue.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    /// Outbound: a bound stream's packet is numbered, then recorded; any other goes straight on.
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if !self.tracked(&msg) {
            self.write_queue.push_back(msg);
            return Ok(());
        }
        self.sender.handle_write(msg)?;
        while let Some(numbered) = self.sender.poll_write() {
            self.controller.handle_write(numbered)?;
        }
        while let Some(msg) = self.controller.poll_write() {
            self.write_queue.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.sender.handle_timeout(now)?;
        self.controller.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.sender.poll_timeout(), self.controller.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.sender.close()?;
        self.controller.close()
    }
}

impl Interceptor for VideoTransportCc {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if negotiated_transport_cc(info) {
            self.streams.insert(info.ssrc);
            self.sender.bind_local_stream(info);
            self.controller.bind_local_stream(info);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if self.streams.remove(&info.ssrc) {
            self.sender.unbind_local_stream(info);
            self.controller.unbind_local_stream(info);
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{
        AttributedPacket, CongestionControlBuilder, RTPHeaderExtension, TwccSenderBuilder,
    };
    use rtc::rtp;
    use rtc::shared::TransportContext;

    const VIDEO: u32 = 0x1111;
    const AUDIO: u32 = 0x2222;
    const EXT_ID: u16 = 5;

    fn adapter() -> VideoTransportCc {
        VideoTransportCc::new(
            TwccSenderBuilder::new().build(),
            CongestionControlBuilder::new(Gcc::new(1_000_000.0, 50_000.0, 10_000_000.0)).build(),
        )
    }

    fn info(ssrc: u32, twcc: bool) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtp_header_extensions: if twcc {
                vec![RTPHeaderExtension {
                    uri: TRANSPORT_CC_URI.to_owned(),
                    id: EXT_ID,
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn packet(ssrc: u32, seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    sequence_number: seq,
                    ssrc,
                    ..Default::default()
                },
                payload: vec![0u8; 40].into(),
            })),
        }
    }

    fn send(cc: &mut VideoTransportCc, ssrc: u32, seq: u16) -> rtp::Packet {
        cc.handle_write(packet(ssrc, seq)).expect("write");
        match cc.poll_write().map(|m| m.message.packet) {
            Some(Packet::Rtp(p)) => p,
            _ => panic!("the packet did not come out"),
        }
    }

    #[test]
    fn only_streams_that_negotiated_the_extension_are_numbered_and_recorded() {
        let mut cc = adapter();
        cc.bind_local_stream(&info(VIDEO, true));
        cc.bind_local_stream(&info(AUDIO, false));

        let audio = send(&mut cc, AUDIO, 1);
        assert!(audio.header.get_extension(EXT_ID as u8).is_none());
        assert_eq!(cc.controller.outstanding(), 0, "audio kept no send record");

        let first = send(&mut cc, VIDEO, 7);
        let second = send(&mut cc, VIDEO, 8);
        let number = |p: &rtp::Packet| {
            p.header
                .get_extension(EXT_ID as u8)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        assert_eq!(number(&first), Some(0));
        assert_eq!(number(&second), Some(1));
        assert_eq!(cc.controller.outstanding(), 2);

        cc.unbind_local_stream(&info(VIDEO, true));
        let after = send(&mut cc, VIDEO, 9);
        assert!(after.header.get_extension(EXT_ID as u8).is_none());
        assert_eq!(cc.controller.outstanding(), 2);
    }
}
