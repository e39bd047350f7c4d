//! RFC 3550 reception arithmetic, kept free of I/O and of webrtc types so it can be tested alone.
//!
//! Two views of a stream's quality meet here: the server's own reception statistics of what a
//! publisher sends ([`ReceptionStats`], RFC 3550 appendices A.1, A.3 and A.8), and what a
//! subscriber says in its receiver reports about what the server forwarded ([`RemoteReports`]).
//! Both are updated in O(1) without allocating, because the first runs once per received packet.
//! Intervals are cut by the worker's quality tick, which also sums streams into
//! [`IntervalSum`]s per participant, direction and kind.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
/// A sequence number this far ahead of the highest seen is taken as a late or duplicate packet
/// from before the wrap rather than a jump forward (RFC 3550 A.1 uses the same half-space test
/// for its `MAX_DROPOUT`-free form).
const SEQ_HALF: u16 = 0x8000;

/// Reception statistics of one inbound RTP stream, as RFC 3550 defines them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReceptionStats {
    started: bool,
    /// First sequence number seen, extended (cycle 0).
    base_seq: u64,
    /// Highest sequence number seen, and how many times the 16-bit space wrapped before it.
    max_seq: u16,
    cycles: u64,
    received: u64,
    bytes: u64,
    /// Interarrival jitter in RTP timestamp units (A.8), as a float so the 1/16 gain does not
    /// round small values away.
    jitter: f64,
    /// Relative transit time of the last packet that started a new timestamp, in RTP units.
    last_transit: Option<u32>,
    last_ts: u32,
    /// The counters at the start of the current interval.
    prior_expected: u64,
    prior_received: u64,
    prior_bytes: u64,
}

/// What one stream did over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Interval {
    /// Packets the sequence numbers say were sent.
    pub(crate) expected: u64,
    /// Of those, packets that never arrived (0 when duplicates outnumber losses).
    pub(crate) lost: u64,
    /// Payload bytes that arrived (or, for a forwarded leg, were sent).
    pub(crate) bytes: u64,
    /// Interarrival jitter at the end of the interval, in milliseconds.
    pub(crate) jitter_ms: f64,
    /// Round-trip time, when the interval measured one.
    pub(crate) rtt_ms: Option<f64>,
}

impl ReceptionStats {
    /// Accounts one arriving packet.
    ///
    /// `arrival` is when the datagram was read and `epoch` any fixed instant before it; with the
    /// codec's `clock_rate` they turn the arrival into RTP units for the jitter estimate. Jitter is
    /// only updated by an in-order packet that starts a new RTP timestamp: a video frame's packets
    /// share one timestamp and leave the sender in a burst, so counting each would report the
    /// packetisation spread as network jitter. A clock rate of 0 (codec not known yet) skips it.
    pub(crate) fn on_packet(
        &mut self,
        seq: u16,
        ts: u32,
        payload_len: usize,
        arrival: Instant,
        epoch: Instant,
        clock_rate: u32,
    ) {
        self.received += 1;
        self.bytes += payload_len as u64;
        if !self.started {
            self.started = true;
            self.base_seq = u64::from(seq);
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta == 0 || delta >= SEQ_HALF {
                // A duplicate or a late packet: it counts as received, nothing else moves.
                return;
            }
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = seq;
        }
        if clock_rate == 0 || (self.last_transit.is_some() && ts == self.last_ts) {
            return;
        }
        let since = arrival.saturating_duration_since(epoch);
        let arrival_rtp = (since.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_rtp.wrapping_sub(ts);
        if let Some(last) = self.last_transit {
            let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        self.last_ts = ts;
    }

    /// Packets expected since the first one, from the extended highest sequence number (A.3).
    fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.cycles << 16) + u64::from(self.max_seq) + 1 - self.base_seq
    }

    /// Ends the current interval and starts the next; `clock_rate` converts jitter to ms.
    pub(crate) fn take_interval(&mut self, clock_rate: u32) -> Interval {
        let expected_total = self.expected();
        let expected = expected_total - self.prior_expected;
        let received = self.received - self.prior_received;
        let bytes = self.bytes - self.prior_bytes;
        self.prior_expected = expected_total;
        self.prior_received = self.received;
        self.prior_bytes = self.bytes;
        Interval {
            expected,
            lost: expected.saturating_sub(received),
            bytes,
            jitter_ms: rtp_units_to_ms(self.jitter, clock_rate),
            rtt_ms: None,
        }
    }

    /// Packets received so far, duplicates included.
    #[cfg(test)]
    fn received(&self) -> u64 {
        self.received
    }
}

/// What a subscriber's receiver reports said about one forwarded leg. What the server sent on it
/// is counted once, for the leg's sender reports ([`crate::sender_report::SentCounts`]); an
/// interval's bytes are the change in that count.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteReports {
    /// The leg's octet count (32 bits, wrapping as a sender report's does) when the interval began.
    octets_at_start: u32,
    /// The latest report block: extended highest sequence number, cumulative loss (signed, as
    /// duplicates can make it negative), jitter (RTP units) and the fraction lost since the
    /// subscriber's previous report.
    latest: Option<(u32, i32, u32, u8)>,
    /// Extended highest sequence number and cumulative loss at the start of the interval.
    prior: Option<(u32, i32)>,
    rtt_ms: Option<f64>,
}

impl RemoteReports {
    /// Takes in one report block about the leg; `rtt_ms` is its round trip when it carried one.
    /// `total_lost` is the block's 24-bit field as rtc parses it (unsigned); RFC 3550 makes it
    /// signed, so it is sign-extended here.
    pub(crate) fn on_report(
        &mut self,
        ext_highest: u32,
        total_lost: u32,
        jitter: u32,
        fraction_lost: u8,
        rtt_ms: Option<f64>,
    ) {
        let total_lost = ((total_lost << 8) as i32) >> 8;
        self.latest = Some((ext_highest, total_lost, jitter, fraction_lost));
        if rtt_ms.is_some() {
            self.rtt_ms = rtt_ms;
        }
    }

    /// Ends the interval. Loss over the interval comes from the change in the reports' cumulative
    /// counters since the interval began; before there is a baseline, from the latest report's own
    /// fraction (which covers the subscriber's report period). Without any report, loss is unknown
    /// and reported as none over the packets sent. `octets_sent` is the leg's payload octet count
    /// now; an interval carries far less than 4 GiB, so its wrapping difference is exact.
    pub(crate) fn take_interval(&mut self, clock_rate: u32, octets_sent: u32) -> Interval {
        let bytes = u64::from(octets_sent.wrapping_sub(self.octets_at_start));
        self.octets_at_start = octets_sent;
        let Some((ext, lost, jitter, fraction)) = self.latest else {
            return Interval {
                bytes,
                ..Interval::default()
            };
        };
        let (expected, lost_now) = match self.prior {
            Some((prior_ext, prior_lost)) if ext.wrapping_sub(prior_ext) < 0x8000_0000 => {
                let expected = u64::from(ext.wrapping_sub(prior_ext));
                let lost = (i64::from(lost) - i64::from(prior_lost)).max(0) as u64;
                (expected, lost.min(expected))
            }
            // No baseline yet: scale the report's own fraction to a notional 256 packets.
            _ => (256, u64::from(fraction)),
        };
        self.prior = Some((ext, lost));
        Interval {
            expected,
            lost: lost_now,
            bytes,
            jitter_ms: rtp_units_to_ms(f64::from(jitter), clock_rate),
            rtt_ms: self.rtt_ms,
        }
    }
}

/// Streams of one participant, direction and kind summed over an interval.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IntervalSum {
    pub(crate) bytes: u64,
    expected: u64,
    lost: u64,
    jitter_ms: f64,
    rtt_sum_ms: f64,
    rtt_count: u32,
}

impl IntervalSum {
    /// Adds one stream's interval. Jitter keeps the worst stream's, since one jittery stream is
    /// what a listener or viewer notices; RTT is averaged, as every stream of one connection
    /// crosses the same path.
    pub(crate) fn add(&mut self, i: &Interval) {
        self.bytes += i.bytes;
        self.expected += i.expected;
        self.lost += i.lost;
        self.jitter_ms = self.jitter_ms.max(i.jitter_ms);
        if let Some(rtt) = i.rtt_ms {
            self.rtt_sum_ms += rtt;
            self.rtt_count += 1;
        }
    }

    /// Bits per second over `elapsed`.
    pub(crate) fn bitrate_bps(&self, elapsed: Duration) -> u64 {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        (self.bytes as f64 * 8.0 / secs).round() as u64
    }

    /// Fraction of expected packets lost, in `0..=1`; 0 when nothing was expected.
    pub(crate) fn packet_loss(&self) -> f64 {
        loss_fraction(self.expected, self.lost)
    }

    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        (self.rtt_count > 0).then(|| self.rtt_sum_ms / f64::from(self.rtt_count))
    }
}

/// Lost over expected, clamped to `0..=1`.
pub(crate) fn loss_fraction(expected: u64, lost: u64) -> f64 {
    if expected == 0 {
        return 0.0;
    }
    (lost as f64 / expected as f64).clamp(0.0, 1.0)
}

/// RTP timestamp units to milliseconds for a codec clock rate (0 when the rate is unknown).
pub(crate) fn rtp_units_to_ms(units: f64, clock_rate: u32) -> f64 {
    if clock_rate == 0 {
        return 0.0;
    }
    units * 1000.0 / f64::from(clock_rate)
}

/// The middle 32 bits of the wall-clock NTP time at a recent `instant` (a datagram's read time),
/// the form LSR and DLSR use.
///
/// The worker stamps its sender reports from the system clock through [`ntp_time`] too, so both
/// ends of the subtraction in [`rtt_ms`] come from the same clock and the same conversion; going
/// back from now to the read instant keeps the time the report waited in the worker out of the
/// RTT.
pub(crate) fn ntp_middle_at(instant: Instant) -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ago = Instant::now().saturating_duration_since(instant);
    ntp_middle(unix.saturating_sub(ago))
}

/// The 64-bit NTP timestamp of a time since the Unix epoch: seconds since 1900 and a 32-bit
/// fraction, as a sender report carries it.
pub(crate) fn ntp_time(since_unix: Duration) -> u64 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET_SECS;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Middle 32 bits of the NTP timestamp for a time since the Unix epoch: 16 bits of seconds and
/// 16 bits of fraction.
pub(crate) fn ntp_middle(since_unix: Duration) -> u32 {
    (ntp_time(since_unix) >> 16) as u32
}

/// Round trip from a report block (RFC 3550 6.4.1): arrival − LSR − DLSR, all in 1/65536 s.
///
/// `None` when the reporter had not received a sender report yet (LSR 0). A slightly negative
/// result, possible when the clock stepped between the report and now, reads as 0.
pub(crate) fn rtt_ms(arrival_ntp_middle: u32, lsr: u32, dlsr: u32) -> Option<f64> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival_ntp_middle.wrapping_sub(lsr).wrapping_sub(dlsr) as i32;
    Some(f64::from(rtt.max(0)) * 1000.0 / 65_536.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stats: &mut ReceptionStats, seqs: &[u16]) {
        let t0 = Instant::now();
        for &s in seqs {
            stats.on_packet(s, 0, 100, t0, t0, 0);
        }
    }

    #[test]
    fn loss_from_sequence_numbers() {
        let mut s = ReceptionStats::default();
        feed(&mut s, &[10, 11, 13, 14]);
        let i = s.take_interval(90_000);
        assert_eq!((i.expected, i.lost, i.bytes), (5, 1, 400));
        assert_eq!(loss_fraction(i.expected, i.lost), 0.2);
        // The next interval starts from where this one ended.
        feed(&mut s, &[15, 18]);
        let i = s.take_interval(90_000);
        assert_eq!((i.expected, i.lost), (4, 2));
    }

    #[test]
    fn sequence_wrap_extends_the_space() {
        let mut s = ReceptionStats::default();
        feed(&mut s, &[65_533, 65_534, 0, 1, 3]);
        let i = s.take_interval(48_000);
        // 65533..=65535 and 0..=3: seven expected, 65535 and 2 missing.
        assert_eq!((i.expected, i.lost), (7, 2));
        assert_eq!(s.expected(), 7);
    }

    #[test]
    fn late_and_duplicate_packets_do_not_move_the_highest() {
        let mut s = ReceptionStats::default();
        feed(&mut s, &[100, 102, 101, 102, 65_000]);
        let i = s.take_interval(48_000);
        // 65000 is far behind (a late packet from before 100), so expected stays 3; five arrived.
        assert_eq!(i.expected, 3);
        assert_eq!(i.lost, 0, "more arrived than expected: no negative loss");
        assert_eq!(s.received(), 5);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let t0 = Instant::now();
        let rate = 8_000;
        let mut s = ReceptionStats::default();
        // Packets 20 ms apart in RTP time (160 units); arrivals alternate early and late by 5 ms
        // (40 units), so every |D| is 40 units and the estimate climbs towards 5 ms.
        let mut expect = 0.0f64;
        let mut last_transit: Option<i64> = None;
        for k in 0..50u32 {
            let ts = 1_000 + k * 160;
            let skew_ms = if k % 2 == 0 { 0 } else { 5 };
            let arrival = t0 + Duration::from_millis(u64::from(k) * 20 + skew_ms);
            s.on_packet(k as u16, ts, 10, arrival, t0, rate);
            let transit = i64::from(k) * 160 + i64::from(skew_ms as u32) * 8 - i64::from(ts);
            if let Some(last) = last_transit {
                expect += ((transit - last).abs() as f64 - expect) / 16.0;
            }
            last_transit = Some(transit);
        }
        let i = s.take_interval(rate);
        let expect_ms = expect * 1000.0 / f64::from(rate);
        assert!(
            (i.jitter_ms - expect_ms).abs() < 1e-6,
            "{} vs {expect_ms}",
            i.jitter_ms
        );
        assert!(i.jitter_ms > 3.0 && i.jitter_ms < 10.0, "{}", i.jitter_ms);
    }

    #[test]
    fn jitter_ignores_packets_of_the_same_frame_and_timestamp_wrap() {
        let t0 = Instant::now();
        let mut s = ReceptionStats::default();
        let mut ts = u32::MAX - 3_000;
        for k in 0..20u16 {
            let at = t0 + Duration::from_millis(u64::from(k) * 33);
            // Three packets per frame, sent in a burst 1 ms apart: not jitter.
            for p in 0..3u16 {
                s.on_packet(
                    k * 3 + p,
                    ts,
                    10,
                    at + Duration::from_millis(p.into()),
                    t0,
                    90_000,
                );
            }
            ts = ts.wrapping_add(2_970); // 33 ms at 90 kHz, crossing u32::MAX
        }
        let i = s.take_interval(90_000);
        assert!(i.jitter_ms < 0.05, "steady frames: {}", i.jitter_ms);
        assert_eq!((i.expected, i.lost), (60, 0));
    }

    #[test]
    fn remote_reports_give_interval_loss() {
        let mut r = RemoteReports::default();
        let i = r.take_interval(48_000, 1_000);
        assert_eq!((i.expected, i.bytes), (0, 1_000), "no report yet");
        // First report: only its own fraction (64/256) is known.
        r.on_report(1_000, 10, 480, 64, None);
        let i = r.take_interval(48_000, 1_000);
        assert_eq!(i.bytes, 0, "nothing sent since");
        assert_eq!(loss_fraction(i.expected, i.lost), 0.25);
        assert_eq!(i.jitter_ms, 10.0);
        assert_eq!(i.rtt_ms, None);
        // Then the change in cumulative counters: 200 more expected, 5 more lost.
        r.on_report(1_200, 15, 96, 0, Some(12.5));
        let i = r.take_interval(48_000, 1_000);
        assert_eq!((i.expected, i.lost), (200, 5));
        assert_eq!(i.rtt_ms, Some(12.5));
        // Extended sequence numbers, and the octet count, that wrap 32 bits still subtract.
        r.on_report(u32::MAX, 15, 0, 0, None);
        r.take_interval(48_000, u32::MAX - 99);
        r.on_report(9, 16, 0, 0, None);
        let i = r.take_interval(48_000, 400);
        assert_eq!((i.expected, i.lost, i.bytes), (10, 1, 500));
        // A cumulative loss that duplicates drove negative (24-bit -1) is no loss, not 2^24.
        r.on_report(20, 0x00FF_FFFF, 0, 0, None);
        let i = r.take_interval(48_000, 400);
        assert_eq!((i.expected, i.lost), (11, 0));
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        // Arrival 2.5 s after the SR's middle timestamp, of which the reporter held it 2 s.
        let sr = ntp_middle(Duration::from_secs(1_700_000_000));
        let arrival = sr.wrapping_add(5 * 65_536 / 2);
        let rtt = rtt_ms(arrival, sr, 2 * 65_536).expect("rtt");
        assert!((rtt - 500.0).abs() < 0.1, "{rtt}");
        assert_eq!(rtt_ms(arrival, 0, 0), None, "no SR received yet");
        assert_eq!(rtt_ms(sr, sr, 10), Some(0.0), "clock step reads as 0");
        // Across the 16-bit seconds wrap of the middle word.
        let rtt = rtt_ms(100, u32::MAX - 6_453, 0).expect("rtt");
        assert!((rtt - 6_554.0 * 1000.0 / 65_536.0).abs() < 1e-9);
    }

    #[test]
    fn ntp_middle_matches_the_wire_form() {
        // Unix 0 is NTP 2208988800 s = 0x83AA7E80: middle word 0x7E80_0000.
        assert_eq!(ntp_middle(Duration::ZERO), 0x7E80_0000);
        assert_eq!(ntp_middle(Duration::from_millis(500)), 0x7E80_8000);
    }

    #[test]
    fn sums_over_streams() {
        let mut sum = IntervalSum::default();
        sum.add(&Interval {
            expected: 100,
            lost: 10,
            bytes: 5_000,
            jitter_ms: 2.0,
            rtt_ms: Some(10.0),
        });
        sum.add(&Interval {
            expected: 300,
            lost: 10,
            bytes: 5_000,
            jitter_ms: 5.0,
            rtt_ms: Some(20.0),
        });
        assert_eq!(sum.packet_loss(), 0.05);
        assert_eq!(sum.jitter_ms(), 5.0);
        assert_eq!(sum.rtt_ms(), Some(15.0));
        assert_eq!(sum.bitrate_bps(Duration::from_secs(2)), 40_000);
        assert_eq!(IntervalSum::default().rtt_ms(), None);
    }
}
