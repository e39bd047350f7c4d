//! Connection quality as people see it: the engine's RTCP-derived reports for one participant,
//! folded into the 1..5 score of `call:quality`.
//!
//! The engine reports per direction and kind; a person's connection is as good as its worst
//! direction, so the summary takes the worst loss and jitter, the latest round-trip time, and
//! the bitrate the participant sends (what everyone else receives from them).

use confab_sfu::{MediaKind, QualityDirection, QualityReport, VideoLayerCounts};

/// One participant's quality over the last interval, built up from the engine's reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualitySummary {
    pub packet_loss: f64,
    pub jitter_ms: f64,
    pub rtt_ms: f64,
    pub bitrate_bps: u64,
    /// The server's bandwidth estimate towards the participant (its subscriber connection),
    /// from the latest outbound report.
    pub available_bitrate_bps: Option<u64>,
    /// Which layers the participant's video legs forward, from the latest outbound video
    /// report.
    pub video_layers: Option<VideoLayerCounts>,
    /// Whether any report arrived since the last summary was sent.
    pub fresh: bool,
}

impl QualitySummary {
    pub fn add(&mut self, report: &QualityReport, rtt_ms: f64) {
        if !self.fresh {
            *self = QualitySummary::default();
            self.fresh = true;
        }
        self.packet_loss = self.packet_loss.max(report.packet_loss.clamp(0.0, 1.0));
        self.jitter_ms = self.jitter_ms.max(report.jitter_ms.max(0.0));
        self.rtt_ms = rtt_ms;
        if report.direction == QualityDirection::Inbound {
            self.bitrate_bps += report.bitrate_bps;
        }
        if let Some(bps) = report.available_bitrate_bps {
            self.available_bitrate_bps = Some(bps);
        }
        if let Some(layers) = report.video_layers {
            self.video_layers = Some(layers);
        }
    }

    /// A mean-opinion-style score: 5 is excellent, 1 is unusable. Thresholds follow common
    /// VoIP planning figures (ITU-T G.114 for delay; a few percent of loss is audible).
    pub fn score(&self) -> u8 {
        let loss = self.packet_loss;
        // Mouth-to-ear delay grows with half the round trip plus the jitter buffer.
        let delay_ms = self.rtt_ms / 2.0 + 2.0 * self.jitter_ms;
        if loss < 0.01 && delay_ms < 150.0 {
            5
        } else if loss < 0.03 && delay_ms < 250.0 {
            4
        } else if loss < 0.08 && delay_ms < 400.0 {
            3
        } else if loss < 0.15 && delay_ms < 600.0 {
            2
        } else {
            1
        }
    }
}

pub fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub fn direction_name(direction: QualityDirection) -> &'static str {
    match direction {
        QualityDirection::Inbound => "inbound",
        QualityDirection::Outbound => "outbound",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_sfu::RoomId;

    fn report(direction: QualityDirection, loss: f64, jitter: f64, bitrate: u64) -> QualityReport {
        QualityReport {
            room: RoomId(uuid::Uuid::nil()),
            participant: "a".into(),
            direction,
            kind: MediaKind::Video,
            bitrate_bps: bitrate,
            packet_loss: loss,
            jitter_ms: jitter,
            rtt_ms: None,
            available_bitrate_bps: None,
            video_layers: None,
        }
    }

    #[test]
    fn summary_takes_the_worst_direction_and_the_sent_bitrate() {
        let mut s = QualitySummary::default();
        s.add(&report(QualityDirection::Inbound, 0.01, 3.0, 500_000), 40.0);
        s.add(
            &report(QualityDirection::Outbound, 0.04, 9.0, 2_000_000),
            42.0,
        );
        assert_eq!(s.packet_loss, 0.04);
        assert_eq!(s.jitter_ms, 9.0);
        assert_eq!(s.rtt_ms, 42.0);
        assert_eq!(s.bitrate_bps, 500_000);
        // The next interval starts afresh once this one was sent.
        s.fresh = false;
        s.add(&report(QualityDirection::Inbound, 0.0, 1.0, 100), 10.0);
        assert_eq!(s.packet_loss, 0.0);
        assert_eq!(s.bitrate_bps, 100);
    }

    #[test]
    fn summary_keeps_the_latest_estimate_and_layers() {
        let mut s = QualitySummary::default();
        let mut outbound = report(QualityDirection::Outbound, 0.0, 1.0, 100);
        outbound.available_bitrate_bps = Some(800_000);
        outbound.video_layers = Some(VideoLayerCounts {
            low: 1,
            ..VideoLayerCounts::default()
        });
        s.add(&outbound, 10.0);
        s.add(&report(QualityDirection::Inbound, 0.0, 1.0, 100), 10.0);
        assert_eq!(s.available_bitrate_bps, Some(800_000));
        assert_eq!(s.video_layers.map(|l| l.low), Some(1));
    }

    #[test]
    fn scores_fall_with_loss_and_delay() {
        let at = |loss, rtt_ms, jitter_ms| {
            QualitySummary {
                packet_loss: loss,
                rtt_ms,
                jitter_ms,
                bitrate_bps: 0,
                fresh: true,
                ..QualitySummary::default()
            }
            .score()
        };
        assert_eq!(at(0.0, 20.0, 2.0), 5);
        assert_eq!(at(0.02, 20.0, 2.0), 4);
        assert_eq!(at(0.0, 400.0, 10.0), 4);
        assert_eq!(at(0.05, 100.0, 5.0), 3);
        assert_eq!(at(0.10, 100.0, 5.0), 2);
        assert_eq!(at(0.30, 100.0, 5.0), 1);
        assert_eq!(at(0.0, 1500.0, 5.0), 1);
    }
}
