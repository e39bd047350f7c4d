//! Sender reports for forwarded legs, written by the worker.
//!
//! A subscriber needs a sender report (RFC 3550 6.4.1) on each leg: its NTP/RTP pair lines up a
//! publisher's audio and video for lip sync, and the receiver reports that echo it back give the
//! server the round trip. rtc makes them in an interceptor, which every forwarded packet has to
//! be moved through (a queue push and pop, and a hash lookup by SSRC) only to be counted; the
//! worker already holds each leg when it forwards, so it counts there and writes the reports on
//! a timer instead.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::sender_report::SenderReport;

use crate::quality::ntp_time;

/// How often each leg's report goes out: rtc's interval, and what browsers send.
pub(crate) const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Reports per RTCP compound: 28 bytes each, so a compound stays well inside one datagram.
const REPORTS_PER_COMPOUND: usize = 16;

/// What one leg has sent, as a sender report states it.
#[derive(Debug, Default, Clone)]
pub(crate) struct SentCounts {
    packets: u32,
    octets: u32,
    /// The latest RTP timestamp sent and when it was first sent, from which the report's RTP time
    /// is extrapolated to the report's NTP time.
    latest: Option<(u32, Instant)>,
}

impl SentCounts {
    /// Counts one forwarded packet: its RTP timestamp and payload length.
    pub(crate) fn on_sent(&mut self, timestamp: u32, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        if self.latest.is_none_or(|(ts, _)| ts != timestamp) {
            self.latest = Some((timestamp, now));
        }
    }

    /// Payload octets sent so far, wrapping at 32 bits as the report's field does.
    pub(crate) fn octets(&self) -> u32 {
        self.octets
    }

    /// The leg's report at `now` (wall clock `wall`), once it has sent anything.
    pub(crate) fn report(
        &self,
        ssrc: u32,
        clock_rate: u32,
        now: Instant,
        wall: SystemTime,
    ) -> Option<SenderReport> {
        let (timestamp, at) = self.latest?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        Some(SenderReport {
            ssrc,
            ntp_time: ntp_time(wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
            rtp_time: timestamp.wrapping_add((elapsed * f64::from(clock_rate)) as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// Takes the next RTCP compound's worth of reports off `reports`; empty once none are left.
pub(crate) fn next_compound(
    reports: &mut impl Iterator<Item = SenderReport>,
) -> Vec<Box<dyn rtc::rtcp::Packet>> {
    reports
        .take(REPORTS_PER_COMPOUND)
        .map(|sr| Box::new(sr) as Box<dyn rtc::rtcp::Packet>)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::ntp_middle;

    #[test]
    fn nothing_to_report_before_the_first_packet() {
        let now = Instant::now();
        assert!(
            SentCounts::default()
                .report(1, 48_000, now, SystemTime::now())
                .is_none()
        );
    }

    #[test]
    fn reports_go_out_a_compound_at_a_time() {
        let mut reports = (0..40u32).map(|ssrc| SenderReport {
            ssrc,
            ..Default::default()
        });
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let compound = next_compound(&mut reports);
            (!compound.is_empty()).then_some(compound.len())
        })
        .collect();
        assert_eq!(sizes, [16, 16, 8]);
    }

    #[test]
    fn counts_and_extrapolates_the_rtp_time() {
        let start = Instant::now();
        let mut counts = SentCounts::default();
        counts.on_sent(1000, 100, start);
        // A second packet of the same frame keeps the frame's first send time.
        counts.on_sent(1000, 50, start + Duration::from_millis(5));
        counts.on_sent(1960, 80, start + Duration::from_millis(20));
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(500);
        let sr = counts
            .report(7, 48_000, start + Duration::from_millis(30), wall)
            .expect("a report");
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (7, 3, 230));
        // 10 ms after the latest timestamp was sent, at 48 kHz.
        assert_eq!(sr.rtp_time, 1960 + 480);
        assert_eq!(sr.ntp_time >> 32, 1_700_000_000 + 2_208_988_800);
        assert_eq!(sr.ntp_time & 0xFFFF_FFFF, 1 << 31, "half a second");
        // What a receiver report echoes as LSR is what the RTT is read against.
        assert_eq!(
            (sr.ntp_time >> 16) as u32,
            ntp_middle(Duration::from_millis(1_700_000_000_500))
        );
        assert!(sr.reports.is_empty());
    }
}
