//! Probing upward with media: one subscriber connection at a time tries one of its videos one
//! layer higher than the bandwidth allocation gave it, to learn whether the path carries more
//! than the estimate says.
//!
//! The estimate cannot learn that on its own. GCC backs off from the rate that arrives, and a
//! paused video lowers that rate, so after a pause it sits near what still flows and climbs by a
//! few kbit/s a second; a busy receiver's jitter can knock it down again before it gets
//! anywhere. Padding would test the path without showing anything, but it needs sequence
//! numbers in a stream the subscriber decodes; real media needs none and shows whether it fits.
//!
//! A probe lasts [`PROBE_INTERVALS`] bandwidth intervals (enough for the layer's keyframe to
//! arrive and about two seconds of it to flow). It fails at the first congested interval (see
//! `Estimator::congested`); then the next probe waits twice as long as the last, up to
//! [`MAX_WAIT`] intervals. It succeeds if it ran its course, and the caller confirms the rate it
//! carried as a floor under the estimate, so the allocation keeps the layer; the wait goes back
//! to [`FIRST_WAIT`]. The prober works in whole intervals, so it has no clock of its own.

/// Intervals a probe runs before it counts as carried.
pub(crate) const PROBE_INTERVALS: u32 = 3;
/// Intervals between a limit appearing and the first probe, and after a probe that succeeded.
pub(crate) const FIRST_WAIT: u32 = 2;
/// The longest wait between probes: a congested path is tried at most this often.
pub(crate) const MAX_WAIT: u32 = 32;

/// One subscriber connection's probing state.
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    running: Option<Probe>,
    /// Intervals left before the next probe may start.
    wait: u32,
    /// The wait after the next failure.
    backoff: u32,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            running: None,
            wait: FIRST_WAIT,
            backoff: FIRST_WAIT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    /// The caller's key for the leg (stable while the leg lives).
    leg: usize,
    layer: usize,
    intervals: u32,
}

/// What an interval's probing step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeStep {
    /// Nothing is being probed.
    Idle,
    /// A probe runs (started now or earlier); its layer is in the choice.
    Running,
    /// A probe ran its course without congestion: confirm what the connection now carries.
    Carried,
    /// A probe met congestion and was dropped.
    Failed,
}

/// One leg as the prober sees it: the caller's key, the highest layer it should get if
/// bandwidth allowed (`None`: nothing), and which layers are being sent (bit `i`: layer `i`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeLeg {
    pub(crate) key: usize,
    pub(crate) ceiling: Option<usize>,
    pub(crate) sent: u8,
}

impl ProbeLeg {
    /// The layer a probe of this leg tries, if the allocation left it below its ceiling: the
    /// next one up that is being sent.
    fn next_layer(&self, chosen: Option<usize>) -> Option<usize> {
        let ceiling = self.ceiling?;
        let start = chosen.map_or(0, |c| c + 1);
        (start..=ceiling).find(|&i| i < 8 && self.sent & (1 << i) != 0)
    }
}

impl Prober {
    /// Ends one bandwidth interval: judges a running probe by `congested`, or starts one when
    /// the wait is over and a leg was left below its request. Writes the probed layer into
    /// `chosen` (the allocation, one entry per leg in `legs`).
    pub(crate) fn step(
        &mut self,
        congested: bool,
        legs: &[ProbeLeg],
        chosen: &mut [Option<usize>],
    ) -> ProbeStep {
        if let Some(probe) = self.running.take() {
            let at = legs.iter().position(|l| l.key == probe.leg);
            let still_wanted = at.is_some_and(|i| {
                legs[i]
                    .next_layer(chosen[i])
                    .is_some_and(|next| next <= probe.layer)
            });
            if congested {
                self.wait = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_WAIT);
                return ProbeStep::Failed;
            }
            // The leg went away, its request dropped, or the estimate now fits the layer.
            let (Some(i), true) = (at, still_wanted) else {
                self.reset_wait();
                return ProbeStep::Idle;
            };
            chosen[i] = Some(probe.layer);
            let intervals = probe.intervals + 1;
            if intervals >= PROBE_INTERVALS {
                self.reset_wait();
                return ProbeStep::Carried;
            }
            self.running = Some(Probe { intervals, ..probe });
            return ProbeStep::Running;
        }
        let wanted = legs
            .iter()
            .zip(chosen.iter())
            .enumerate()
            .find_map(|(i, (leg, choice))| leg.next_layer(*choice).map(|layer| (i, layer)));
        let Some((i, layer)) = wanted else {
            // Everything asked for fits: the next limit waits the first wait again.
            self.reset_wait();
            return ProbeStep::Idle;
        };
        if congested || self.wait > 0 {
            self.wait = self.wait.saturating_sub(1);
            return ProbeStep::Idle;
        }
        chosen[i] = Some(layer);
        self.running = Some(Probe {
            leg: legs[i].key,
            layer,
            intervals: 0,
        });
        ProbeStep::Running
    }

    fn reset_wait(&mut self) {
        self.wait = FIRST_WAIT;
        self.backoff = FIRST_WAIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEG: ProbeLeg = ProbeLeg {
        key: 7,
        ceiling: Some(2),
        sent: 0b111,
    };

    /// Steps with the allocation pausing the leg every interval; returns each step's outcome.
    fn run(prober: &mut Prober, congested: &[bool]) -> Vec<(ProbeStep, Option<usize>)> {
        congested
            .iter()
            .map(|&c| {
                let mut chosen = [None];
                let step = prober.step(c, &[LEG], &mut chosen);
                (step, chosen[0])
            })
            .collect()
    }

    #[test]
    fn a_paused_leg_is_tried_at_its_lowest_layer_after_the_wait_and_kept_if_carried() {
        let mut p = Prober::default();
        let steps = run(&mut p, &[false; 6]);
        use ProbeStep::*;
        assert_eq!(
            steps,
            [
                (Idle, None),
                (Idle, None),
                (Running, Some(0)),
                (Running, Some(0)),
                (Running, Some(0)),
                (Carried, Some(0)),
            ]
        );
    }

    #[test]
    fn congestion_ends_a_probe_and_doubles_the_wait() {
        let mut p = Prober::default();
        let mut outcomes = run(&mut p, &[false, false, false, true]);
        assert_eq!(outcomes.pop(), Some((ProbeStep::Failed, None)));
        // Waits 2 intervals, then probes again; fails again and waits 4.
        let again = run(
            &mut p,
            &[false, false, false, true, false, false, false, false, false],
        );
        let started: Vec<usize> = again
            .iter()
            .enumerate()
            .filter(|(i, (s, _))| {
                *s == ProbeStep::Running && (*i == 0 || again[i - 1].0 != ProbeStep::Running)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(started, [2, 8]);
    }

    #[test]
    fn a_leg_at_its_ceiling_turned_off_or_without_a_higher_layer_is_not_probed() {
        let mut p = Prober::default();
        let at_request = ProbeLeg {
            ceiling: Some(0),
            ..LEG
        };
        let off = ProbeLeg {
            ceiling: None,
            ..LEG
        };
        let not_sent = ProbeLeg { sent: 0b001, ..LEG };
        for _ in 0..10 {
            let mut chosen = [Some(0), None, Some(0)];
            assert_eq!(
                p.step(false, &[at_request, off, not_sent], &mut chosen),
                ProbeStep::Idle
            );
            assert_eq!(chosen, [Some(0), None, Some(0)]);
        }
    }

    #[test]
    fn a_lowered_leg_is_tried_one_layer_up_and_the_probe_stops_when_it_fits() {
        let mut p = Prober::default();
        let mut chosen = [Some(0)];
        for _ in 0..FIRST_WAIT {
            assert_eq!(p.step(false, &[LEG], &mut chosen), ProbeStep::Idle);
        }
        assert_eq!(p.step(false, &[LEG], &mut chosen), ProbeStep::Running);
        assert_eq!(chosen, [Some(1)]);
        // The estimate grew on its own: the allocation gives layer 1 now.
        let mut chosen = [Some(1)];
        assert_eq!(p.step(false, &[LEG], &mut chosen), ProbeStep::Idle);
        assert_eq!(chosen, [Some(1)]);
    }
}
