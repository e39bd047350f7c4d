//! Downstream congestion control for one subscriber connection: a bandwidth estimate from the
//! subscriber's feedback, and the video layers that fit in it.
//!
//! Two estimates are kept and the lower one is used. rtc's GCC runs on the subscriber's
//! transport-cc feedback about the server's transport-wide sequence numbers (delay and loss, see
//! `peer::build_pc`); it counts only in an interval in which feedback arrived, so a client that
//! sends none, or a connection with nothing sent to it, is judged by its receiver reports
//! alone. Otherwise a connection whose video GCC had paused would get no feedback and stay
//! paused on a stale estimate.
//!
//! The report-based estimate follows the loss-based half of Google Congestion Control
//! (draft-ietf-rmcat-gcc, section 6): above 10 % loss it drops in proportion to the loss, below
//! 2 % it grows by 5 % per interval, in between it holds. A subscriber that stops reporting
//! while video flows to it is treated as congested too, since nothing says its path still
//! carries what is sent. Growth is how the server probes upward: the estimate climbs while the
//! path is clean, and a higher layer is taken as soon as it fits, so a path that cannot carry it
//! shows loss and the estimate falls back. An interval in which nothing was sent counts as
//! clean, so a connection whose video was all paused tries again. Growth stops at one and a
//! half times what the subscriber's legs would take unconstrained, so an idle estimate cannot
//! run away.
//!
//! Growth alone does not bring back a video paused while others still flow: GCC backs off from
//! the rate that arrives, which a pause lowers, and then climbs by a few kbit/s a second. So a
//! paused or lowered video is also tried for real (`probe`): when a trial carries more than the
//! estimate without loss or a fall in GCC's estimate, what it carried becomes a floor under the
//! estimate (`confirm`), until the next sign of congestion removes it.
//!
//! The allocation serves audio first (it is never paused for bandwidth), and video without
//! simulcast with it: such a track has nothing lower to fall back to, and pausing it on an
//! estimate that has not yet grown to its bitrate would blank it for every new subscriber. Then
//! every simulcast leg gets its lowest layer, the legs whose lowest layer does not fit are
//! paused, and legs are raised one layer at a time, in turn, while the next layer fits and the
//! subscriber asked for it.

/// Where a new connection's estimate starts: enough for a middle layer of a typical camera.
pub(crate) const INITIAL_BPS: u64 = 1_500_000;
pub(crate) const MIN_BPS: u64 = 50_000;
pub(crate) const MAX_BPS: u64 = 50_000_000;
/// Intervals without any receiver report, while video flows, before the estimate decays.
const SILENT_INTERVALS: u32 = 3;
/// GCC's estimate falling by more than 1/10 in an interval counts as congestion.
const GCC_FALL_DIVISOR: u64 = 10;

/// One subscriber connection's bandwidth estimate.
#[derive(Debug, Clone)]
pub(crate) struct Estimator {
    /// The receiver-report estimate.
    from_reports: u64,
    /// The estimate in use: the lower of the receiver-report one and GCC's, when GCC has one.
    combined: u64,
    /// Worst fraction lost (0..=1) reported since the last interval.
    worst_loss: Option<f64>,
    silent: u32,
    /// A rate a probe carried without congestion: the estimate is not below it.
    confirmed: u64,
    /// GCC's estimate at the last interval that had one.
    last_gcc: Option<u64>,
    /// The interval just ended showed congestion (see [`Estimator::congested`]).
    congested: bool,
}

impl Default for Estimator {
    fn default() -> Self {
        Self {
            from_reports: INITIAL_BPS,
            combined: INITIAL_BPS,
            worst_loss: None,
            silent: 0,
            confirmed: 0,
            last_gcc: None,
            congested: false,
        }
    }
}

impl Estimator {
    /// The estimate in use, in bits per second.
    pub(crate) fn bps(&self) -> u64 {
        self.combined
    }

    /// Notes a report block's fraction lost (RFC 3550: lost / expected, in 256ths).
    pub(crate) fn on_report(&mut self, fraction_lost: u8) {
        let loss = f64::from(fraction_lost) / 256.0;
        self.worst_loss = Some(self.worst_loss.map_or(loss, |w| w.max(loss)));
    }

    /// Ends an interval. `sending`: video was sent on the connection during it; `demand_bps`:
    /// what its legs would take at the layers the subscriber asked for; `gcc_bps`: GCC's
    /// estimate from transport-cc feedback, if there has been any. Returns the estimate to use.
    pub(crate) fn update(&mut self, sending: bool, demand_bps: u64, gcc_bps: Option<u64>) -> u64 {
        let (reports, lossy) = self.update_from_reports(sending, demand_bps);
        let gcc_fell = match (self.last_gcc, gcc_bps) {
            (Some(last), Some(now)) => now < last - last / GCC_FALL_DIVISOR,
            _ => false,
        };
        if gcc_bps.is_some() {
            self.last_gcc = gcc_bps;
        }
        self.congested = lossy || gcc_fell;
        if self.congested {
            self.confirmed = 0;
        }
        let measured = gcc_bps.map_or(reports, |gcc| gcc.min(reports));
        self.combined = measured.max(self.confirmed);
        self.combined
    }

    /// Whether the interval just ended showed congestion: loss above 2 % in the receiver
    /// reports, reports missing while video flows, or GCC's estimate down by a tenth or more.
    pub(crate) fn congested(&self) -> bool {
        self.congested
    }

    /// A probe carried `bps` without congestion: keep the estimate at least there until the
    /// next congestion.
    pub(crate) fn confirm(&mut self, bps: u64) {
        self.confirmed = bps.clamp(MIN_BPS, MAX_BPS);
        self.combined = self.combined.max(self.confirmed);
    }

    /// The report estimate, and whether its interval was lossy (or silent while sending).
    fn update_from_reports(&mut self, sending: bool, demand_bps: u64) -> (u64, bool) {
        let ceiling = (demand_bps.saturating_mul(3) / 2).max(INITIAL_BPS);
        let bps = self.from_reports as f64;
        let mut lossy = false;
        let next = match self.worst_loss.take() {
            Some(loss) => {
                self.silent = 0;
                lossy = loss >= 0.02;
                if loss > 0.10 {
                    bps * (1.0 - 0.5 * loss)
                } else if loss < 0.02 {
                    grow(bps, ceiling)
                } else {
                    bps
                }
            }
            None if sending => {
                self.silent += 1;
                if self.silent >= SILENT_INTERVALS {
                    lossy = true;
                    bps * 0.85
                } else {
                    bps
                }
            }
            // Nothing was sent, so nothing can be learned: grow as on a clean path, so a
            // connection whose video was all paused for bandwidth tries again.
            None => {
                self.silent = 0;
                grow(bps, ceiling)
            }
        };
        self.from_reports = (next as u64).clamp(MIN_BPS, MAX_BPS);
        (self.from_reports, lossy)
    }
}

/// 5 % more, up to `ceiling`; an estimate already above the ceiling is not lowered by it.
fn grow(bps: f64, ceiling: u64) -> f64 {
    (bps * 1.05).min((ceiling as f64).max(bps))
}

/// What one video leg could take: its layers' current bitrates (lowest first) and the highest
/// layer the subscriber asked for (`None`: it asked for none).
///
/// A layer that carried nothing in the last interval is not being sent: publishers drop their
/// upper layers when their own uplink or CPU runs short, and a screen share often takes the
/// camera's top layer. Such a layer is never chosen; a leg that asked for it gets the highest
/// layer that is sent below it (or the lowest one above, if none is below), and goes back up
/// once the layer returns. With no layer sent at all the request stands as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VideoDemand {
    pub(crate) rates_bps: [u64; crate::layers::MAX_LAYERS],
    pub(crate) layers: usize,
    pub(crate) requested: Option<usize>,
}

impl VideoDemand {
    /// Whether layer `i` carried anything in the last interval.
    pub(crate) fn sent(&self, i: usize) -> bool {
        i < self.layers.min(self.rates_bps.len()) && self.rates_bps[i] > 0
    }

    /// Bit `i` set: layer `i` is being sent.
    pub(crate) fn sent_mask(&self) -> u8 {
        (0..self.layers)
            .filter(|&i| self.sent(i))
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The highest layer the leg should get if bandwidth allows: the request, moved to a layer
    /// that is being sent.
    pub(crate) fn ceiling(&self) -> Option<usize> {
        let requested = self.requested?.min(self.layers.checked_sub(1)?);
        (0..=requested)
            .rev()
            .find(|&i| self.sent(i))
            .or_else(|| (requested..self.layers).find(|&i| self.sent(i)))
            .or(Some(requested))
    }

    /// The bitrate at the ceiling.
    pub(crate) fn requested_bps(&self) -> u64 {
        self.ceiling().map_or(0, |i| self.rates_bps[i])
    }

    /// The next layer above `from` (or the lowest, from `None`) that is being sent.
    fn next_sent(&self, from: Option<usize>) -> Option<usize> {
        let start = from.map_or(0, |i| i + 1);
        (start..self.layers).find(|&i| self.sent(i))
    }
}

/// Chooses a layer index (or `None`: paused) for each video leg so their sum fits `budget_bps`.
pub(crate) fn allocate(budget_bps: u64, legs: &[VideoDemand]) -> Vec<Option<usize>> {
    let mut chosen: Vec<Option<usize>> = vec![None; legs.len()];
    let mut left = budget_bps;
    for (leg, choice) in legs.iter().zip(chosen.iter_mut()) {
        let Some(ceiling) = leg.ceiling() else {
            continue;
        };
        match leg.next_sent(None) {
            // Nothing is being sent: nothing to weigh, the request stands.
            None => *choice = Some(ceiling),
            Some(lowest) => {
                let lowest = lowest.min(ceiling);
                if leg.rates_bps[lowest] <= left {
                    left -= leg.rates_bps[lowest];
                    *choice = Some(lowest);
                }
            }
        }
    }
    loop {
        let mut raised = false;
        for (leg, choice) in legs.iter().zip(chosen.iter_mut()) {
            let (Some(current), Some(ceiling)) = (*choice, leg.ceiling()) else {
                continue;
            };
            let Some(next) = leg.next_sent(Some(current)).filter(|&n| n <= ceiling) else {
                continue;
            };
            let extra = leg.rates_bps[next].saturating_sub(leg.rates_bps[current]);
            if extra <= left {
                left -= extra;
                *choice = Some(next);
                raised = true;
            }
        }
        if !raised {
            return chosen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(rates: [u64; 3], layers: usize, requested: Option<usize>) -> VideoDemand {
        VideoDemand {
            rates_bps: rates,
            layers,
            requested,
        }
    }

    #[test]
    fn loss_lowers_and_a_clean_path_raises_the_estimate() {
        let mut e = Estimator::default();
        e.on_report(64); // 25 %
        e.on_report(10);
        assert_eq!(
            e.update(true, 3_000_000, None),
            (INITIAL_BPS as f64 * 0.875) as u64
        );
        let low = e.bps();
        e.on_report(12); // ~5 %: hold
        assert_eq!(e.update(true, 3_000_000, None), low);
        e.on_report(0);
        assert_eq!(e.update(true, 3_000_000, None), (low as f64 * 1.05) as u64);
    }

    #[test]
    fn growth_stops_above_the_demand() {
        let mut e = Estimator::default();
        for _ in 0..100 {
            e.on_report(0);
            e.update(true, 2_000_000, None);
        }
        assert_eq!(e.bps(), 3_000_000);
    }

    #[test]
    fn the_lower_of_gcc_and_the_reports_is_used() {
        let mut e = Estimator::default();
        assert_eq!(e.update(true, 1_000_000, Some(400_000)), 400_000);
        assert_eq!(e.bps(), 400_000);
        e.on_report(128); // 50 % loss: the reports say less than GCC
        let reports = (INITIAL_BPS as f64 * 0.75) as u64;
        assert_eq!(e.update(true, 1_000_000, Some(5_000_000)), reports);
        assert_eq!(
            e.update(false, 1_000_000, None),
            (reports as f64 * 1.05) as u64
        );
    }

    #[test]
    fn silence_while_sending_decays_the_estimate() {
        let mut e = Estimator::default();
        assert_eq!(
            e.update(false, 0, None),
            INITIAL_BPS,
            "nothing sent: grows, but not past the ceiling"
        );
        e.update(true, 0, None);
        e.update(true, 0, None);
        assert_eq!(e.bps(), INITIAL_BPS);
        e.update(true, 0, None);
        assert!(e.bps() < INITIAL_BPS);
        for _ in 0..200 {
            e.update(true, 0, None);
        }
        assert_eq!(e.bps(), MIN_BPS);
        // All video paused: the estimate climbs back to try again.
        e.update(false, 0, None);
        assert_eq!(e.bps(), (MIN_BPS as f64 * 1.05) as u64);
    }

    #[test]
    fn a_confirmed_rate_holds_the_estimate_until_congestion() {
        let mut e = Estimator::default();
        assert_eq!(e.update(true, 3_000_000, Some(600_000)), 600_000);
        e.confirm(900_000);
        assert_eq!(e.bps(), 900_000);
        e.on_report(0);
        assert_eq!(
            e.update(true, 3_000_000, Some(580_000)),
            900_000,
            "a small move of GCC's is no congestion"
        );
        assert!(!e.congested());
        assert_eq!(e.update(true, 3_000_000, Some(500_000)), 500_000);
        assert!(e.congested(), "GCC fell by more than a tenth");
        e.confirm(900_000);
        e.on_report(13); // 5 %
        assert!(e.update(true, 3_000_000, Some(500_000)) < 900_000);
        assert!(e.congested(), "loss above 2 %");
    }

    #[test]
    fn layers_are_shared_out_lowest_first() {
        let rates = [100_000, 400_000, 1_200_000];
        let two = [demand(rates, 3, Some(2)), demand(rates, 3, Some(2))];
        assert_eq!(allocate(3_000_000, &two), [Some(2), Some(2)]);
        assert_eq!(allocate(1_600_000, &two), [Some(2), Some(1)]);
        assert_eq!(allocate(900_000, &two), [Some(1), Some(1)]);
        assert_eq!(allocate(250_000, &two), [Some(0), Some(0)]);
        assert_eq!(
            allocate(150_000, &two),
            [Some(0), None],
            "pause rather than overshoot"
        );
        // A request caps the layer; a paused request takes nothing.
        let capped = [demand(rates, 3, Some(0)), demand(rates, 3, None)];
        assert_eq!(allocate(10_000_000, &capped), [Some(0), None]);
        // A single-layer track is all or nothing.
        assert_eq!(
            allocate(50_000, &[demand([80_000, 0, 0], 1, Some(2))]),
            [None]
        );
        assert_eq!(two[0].requested_bps(), 1_200_000);
    }

    #[test]
    fn a_layer_that_is_not_sent_is_never_chosen() {
        // The top layer stopped: a request for it gets the middle one, at any budget.
        let no_top = demand([100_000, 400_000, 0], 3, Some(2));
        assert_eq!(no_top.ceiling(), Some(1));
        assert_eq!(no_top.requested_bps(), 400_000);
        assert_eq!(allocate(10_000_000, &[no_top]), [Some(1)]);
        // The lowest stopped: a request for it gets the next one up, if it fits.
        let no_low = demand([0, 400_000, 1_200_000], 3, Some(0));
        assert_eq!(no_low.ceiling(), Some(1));
        assert_eq!(allocate(500_000, &[no_low]), [Some(1)]);
        assert_eq!(allocate(300_000, &[no_low]), [None]);
        // A gap in the middle is stepped over.
        let gap = demand([100_000, 0, 1_200_000], 3, Some(2));
        assert_eq!(allocate(2_000_000, &[gap]), [Some(2)]);
        assert_eq!(allocate(500_000, &[gap]), [Some(0)]);
        assert_eq!(gap.sent_mask(), 0b101);
        // Nothing sent yet: the request stands.
        let silent = demand([0, 0, 0], 3, Some(2));
        assert_eq!(allocate(0, &[silent]), [Some(2)]);
    }
}
