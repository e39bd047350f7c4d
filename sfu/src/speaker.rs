//! Audio levels -> active speakers, and the loudest-N selection.
//!
//! Every audio packet of a publisher carries the sender's own measure of its loudness (RFC 6464
//! `ssrc-audio-level`, in -dBov). The worker adds each packet's level to its track's
//! [`LevelWindow`] (two integer additions, no allocation) and, every [`DETECTION_INTERVAL`],
//! hands the windows to the room's [`Speakers`]. Deciding on a timer rather than per packet keeps
//! the forwarding path cheap and makes the decision independent of packet rates (DTX, 10 or
//! 20 ms frames).
//!
//! The detector smooths each participant's level, calls them speaking or not with two thresholds
//! (so a level hovering near one does not flap), and keeps an order of the speakers, loudest
//! first, that a challenger changes only by beating the one ranked above it by [`MARGIN`] for
//! [`HOLD_TICKS`] intervals in a row: a cough or a laugh does not reorder the call.
//!
//! Loudest-N forwarding uses the same order: the first N participants of it are forwarded, and
//! an [`AudioGate`] per track also lets through anyone who has just started speaking, before the
//! detector has caught up with them, so the first syllable is not cut.

use std::time::{Duration, Instant};

use rtc::rtp;

/// How often levels are turned into speaker decisions.
pub(crate) const DETECTION_INTERVAL: Duration = Duration::from_millis(200);
/// Quieter than -60 dBov is silence (background noise of a quiet room).
const FLOOR_DBOV: u8 = 60;
/// Smoothing factors of the exponential average, per interval: a voice is picked up faster than
/// it fades, so a speaker's short pauses between words do not drop them.
const ATTACK: f32 = 0.6;
const DECAY: f32 = 0.35;
/// Smoothed loudness (dB above the floor) at which a participant starts, and below which it
/// stops, counting as speaking.
const SPEAKING_ON: f32 = 20.0;
const SPEAKING_OFF: f32 = 10.0;
/// How much louder (dB) than the speaker ranked above a challenger must be to take its place...
const MARGIN: f32 = 6.0;
/// ...and for how many consecutive intervals.
const HOLD_TICKS: u8 = 2;
/// A packet at least this loud (-dBov at most this) counts as voice for a gate that is closed.
const PROMOTE_DBOV: u8 = 40;
/// Consecutive voiced packets (60 ms of 20 ms frames) that open a closed gate.
const PROMOTE_PACKETS: u8 = 3;
/// How long a gate opened by a new voice stays open whatever the selection says: long enough
/// for the detector to rank the newcomer, so a louder one stays in without a gap.
const PROMOTION_HOLD: Duration = Duration::from_secs(1);

/// The level of an audio packet, in -dBov (0 loudest, 127 silence), if it carries the extension
/// under the negotiated `id`. Reads the header in place: no copy, no allocation.
#[inline]
pub(crate) fn audio_level(header: &rtp::Header, id: u8) -> Option<u8> {
    if !header.extension {
        return None;
    }
    header
        .extensions
        .iter()
        .find(|e| e.id == id)
        .and_then(|e| e.payload.first())
        .map(|b| b & 0x7f)
}

/// Loudness of one packet on the detector's scale: dB above [`FLOOR_DBOV`], 0 for silence.
fn loudness(dbov: u8) -> u32 {
    u32::from(FLOOR_DBOV.saturating_sub(dbov & 0x7f))
}

/// The levels one audio track sent during the current detection interval.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LevelWindow {
    sum: u32,
    packets: u32,
}

impl LevelWindow {
    /// Adds one packet's level (-dBov).
    #[inline]
    pub(crate) fn observe(&mut self, dbov: u8) {
        self.sum = self.sum.saturating_add(loudness(dbov));
        self.packets = self.packets.saturating_add(1);
    }

    /// The interval's mean loudness, and a fresh window. An interval without packets (a muted
    /// or DTX sender) is silence.
    pub(crate) fn take(&mut self) -> f32 {
        let mean = if self.packets == 0 {
            0.0
        } else {
            self.sum as f32 / self.packets as f32
        };
        *self = Self::default();
        mean
    }
}

/// When loudest-N forwarding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoudestN {
    /// How many audio streams are forwarded; 0 turns the feature off.
    pub(crate) n: usize,
    /// From this many audio publishers in a room on.
    pub(crate) min_publishers: usize,
}

impl LoudestN {
    /// Whether a room with `publishers` audio publishers forwards only its loudest.
    pub(crate) fn applies(&self, publishers: usize) -> bool {
        self.n > 0 && publishers >= self.min_publishers.max(1)
    }
}

/// One participant as the detector sees it.
#[derive(Debug)]
struct Entry {
    name: String,
    /// Smoothed loudness, dB above the floor.
    level: f32,
    speaking: bool,
    /// Consecutive intervals this entry has beaten the speaker ranked above it by the margin.
    ahead: u8,
    /// Updated in the current interval; entries not updated are gone.
    seen: bool,
}

/// A room's speakers: smoothed levels, who is speaking, and their order.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    /// Speakers first, in their current order; then the others, loudest first.
    entries: Vec<Entry>,
    /// The speaker order last reported.
    order: Vec<String>,
}

impl Speakers {
    /// Hands in a participant's loudness over the interval that just ended (see
    /// [`LevelWindow::take`]). Participants not updated before [`Speakers::tick`] are dropped.
    pub(crate) fn update(&mut self, participant: &str, loudness: f32) {
        let entry = match self.entries.iter_mut().position(|e| e.name == participant) {
            Some(i) => &mut self.entries[i],
            None => {
                self.entries.push(Entry {
                    name: participant.to_owned(),
                    level: 0.0,
                    speaking: false,
                    ahead: 0,
                    seen: false,
                });
                let last = self.entries.len() - 1;
                &mut self.entries[last]
            }
        };
        let alpha = if loudness > entry.level {
            ATTACK
        } else {
            DECAY
        };
        entry.level += alpha * (loudness - entry.level);
        entry.seen = true;
    }

    /// Ends an interval: drops participants that were not updated, decides who speaks and in
    /// which order. Returns whether the order changed (and so is to be announced).
    pub(crate) fn tick(&mut self) -> bool {
        self.entries.retain(|e| e.seen);
        // Incumbents (speaking before) keep their places; newcomers follow, loudest first; the
        // rest come last, loudest first, so the selection can fill up from them.
        let class = |e: &mut Entry| {
            let was = e.speaking;
            e.speaking = if was {
                e.level >= SPEAKING_OFF
            } else {
                e.level >= SPEAKING_ON
            };
            e.seen = false;
            match (was, e.speaking) {
                (true, true) => 0u8,
                (false, true) => 1,
                _ => 2,
            }
        };
        let mut keyed: Vec<(u8, usize)> = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter_mut().enumerate() {
            keyed.push((class(e), i));
        }
        let entries = &self.entries;
        keyed.sort_by(|(ca, ia), (cb, ib)| {
            ca.cmp(cb).then_with(|| {
                if *ca == 0 {
                    ia.cmp(ib)
                } else {
                    entries[*ib].level.total_cmp(&entries[*ia].level)
                }
            })
        });
        let mut slots: Vec<Option<Entry>> = self.entries.drain(..).map(Some).collect();
        self.entries
            .extend(keyed.iter().filter_map(|(_, i)| slots[*i].take()));

        let speaking = self.entries.iter().take_while(|e| e.speaking).count();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if i == 0 || i >= speaking {
                e.ahead = 0;
            }
        }
        for i in 1..speaking {
            if self.entries[i].level > self.entries[i - 1].level + MARGIN {
                self.entries[i].ahead = self.entries[i].ahead.saturating_add(1);
            } else {
                self.entries[i].ahead = 0;
            }
        }
        // A challenger that has led for long enough moves up past everyone it beats by the
        // margin now, so a new loud voice does not climb one place per hold.
        for i in 1..speaking {
            let mut j = i;
            while j > 0
                && self.entries[j].ahead >= HOLD_TICKS
                && self.entries[j].level > self.entries[j - 1].level + MARGIN
            {
                self.entries.swap(j - 1, j);
                self.entries[j].ahead = 0;
                j -= 1;
            }
        }

        let changed = self.order.len() != speaking
            || self
                .order
                .iter()
                .zip(&self.entries)
                .any(|(name, e)| *name != e.name);
        if changed {
            self.order.clear();
            self.order
                .extend(self.entries.iter().take(speaking).map(|e| e.name.clone()));
        }
        changed
    }

    /// The speakers, loudest first, as of the last [`Speakers::tick`].
    pub(crate) fn order(&self) -> &[String] {
        &self.order
    }

    /// Whether `participant` is among the `n` forwarded by loudest-N: the first `n` speakers,
    /// filled up with the loudest of the others when fewer speak.
    pub(crate) fn is_selected(&self, participant: &str, n: usize) -> bool {
        self.entries.iter().take(n).any(|e| e.name == participant)
    }

    /// Whether `participant` counts as speaking now.
    pub(crate) fn is_speaking(&self, participant: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == participant && e.speaking)
    }
}

/// Whether one audio track is forwarded under loudest-N.
///
/// The per-packet check is one branch while the gate is open. A closed gate opens on its own
/// when a participant the detector considers silent starts to speak, and then stays open for
/// [`PROMOTION_HOLD`] whatever the selection says; someone who keeps talking without making the
/// selection is not let through again until they fall silent.
#[derive(Debug, Clone)]
pub(crate) struct AudioGate {
    open: bool,
    /// The participant was silent at the last decision, so a new voice may open the gate.
    armed: bool,
    voiced_run: u8,
    promoted_until: Option<Instant>,
}

impl Default for AudioGate {
    /// Open: below the loudest-N threshold everything is forwarded.
    fn default() -> Self {
        Self {
            open: true,
            armed: true,
            voiced_run: 0,
            promoted_until: None,
        }
    }
}

impl AudioGate {
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// A packet arrived while the gate is closed, with its level if it carries one. Returns
    /// whether it opened the gate (the packet is then forwarded).
    pub(crate) fn on_packet_while_closed(&mut self, level: Option<u8>, now: Instant) -> bool {
        match level {
            Some(dbov) if dbov <= PROMOTE_DBOV => {
                self.voiced_run = self.voiced_run.saturating_add(1)
            }
            _ => self.voiced_run = 0,
        }
        if self.armed && self.voiced_run >= PROMOTE_PACKETS {
            self.open = true;
            self.armed = false;
            self.promoted_until = Some(now + PROMOTION_HOLD);
            return true;
        }
        false
    }

    /// The periodic decision: whether the track is `selected`, and whether its participant is
    /// `speaking`. Returns whether the gate opened.
    pub(crate) fn decide(&mut self, selected: bool, speaking: bool, now: Instant) -> bool {
        self.armed = !speaking;
        if self.promoted_until.is_some_and(|until| now >= until) {
            self.promoted_until = None;
        }
        let opened = selected && !self.open;
        if selected {
            self.open = true;
        } else if self.promoted_until.is_none() {
            self.open = false;
            self.voiced_run = 0;
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one interval of constant levels (None = no packets) and ticks.
    fn interval(s: &mut Speakers, levels: &[(&str, Option<u8>)]) -> bool {
        for (name, level) in levels {
            let mut w = LevelWindow::default();
            if let Some(dbov) = level {
                for _ in 0..10 {
                    w.observe(*dbov);
                }
            }
            s.update(name, w.take());
        }
        s.tick()
    }

    fn order(s: &Speakers) -> Vec<&str> {
        s.order().iter().map(String::as_str).collect()
    }

    #[test]
    fn the_level_is_read_from_the_negotiated_extension() {
        let mut h = rtp::Header {
            extension: true,
            extension_profile: 0xBEDE,
            extensions: vec![
                rtp::header::Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[7, 7]),
                },
                rtp::header::Extension {
                    id: 1,
                    payload: bytes::Bytes::from_static(&[0x80 | 25]),
                },
            ],
            ..Default::default()
        };
        assert_eq!(audio_level(&h, 1), Some(25), "the voice bit is masked off");
        assert_eq!(audio_level(&h, 5), None);
        h.extension = false;
        assert_eq!(audio_level(&h, 1), None);
    }

    #[test]
    fn windows_average_and_reset() {
        let mut w = LevelWindow::default();
        assert_eq!(w.take(), 0.0, "no packets is silence");
        w.observe(20); // 40 dB above the floor
        w.observe(40); // 20
        w.observe(127); // silence
        assert_eq!(w.take(), 20.0);
        assert_eq!(w.take(), 0.0);
    }

    #[test]
    fn smoothing_needs_more_than_one_loud_interval_to_fade() {
        let mut s = Speakers::default();
        interval(&mut s, &[("a", Some(20))]);
        assert_eq!(order(&s), ["a"], "one loud interval is enough to start");
        // A short pause between words does not drop the speaker...
        interval(&mut s, &[("a", None)]);
        assert_eq!(order(&s), ["a"]);
        // ...a longer silence does.
        for _ in 0..4 {
            interval(&mut s, &[("a", Some(127))]);
        }
        assert!(order(&s).is_empty());
    }

    #[test]
    fn quiet_background_is_not_speech() {
        let mut s = Speakers::default();
        for _ in 0..20 {
            assert!(!interval(&mut s, &[("a", Some(55)), ("b", Some(127))]));
        }
        assert!(order(&s).is_empty());
        assert!(!s.is_speaking("a"));
    }

    #[test]
    fn silence_after_speech_empties_the_order_once() {
        let mut s = Speakers::default();
        for _ in 0..3 {
            interval(&mut s, &[("a", Some(10)), ("b", Some(30))]);
        }
        assert_eq!(order(&s), ["a", "b"]);
        let mut changes = 0;
        for _ in 0..10 {
            changes += usize::from(interval(&mut s, &[("a", Some(127)), ("b", Some(127))]));
        }
        assert!(order(&s).is_empty());
        assert!(changes <= 2, "{changes} changes on the way to silence");
    }

    #[test]
    fn a_challenger_must_lead_by_the_margin_for_a_while() {
        let mut s = Speakers::default();
        for _ in 0..5 {
            interval(&mut s, &[("a", Some(20)), ("b", Some(30))]);
        }
        assert_eq!(order(&s), ["a", "b"]);
        // b gets louder, but not by the margin: no change however long it lasts.
        for _ in 0..10 {
            assert!(!interval(&mut s, &[("a", Some(20)), ("b", Some(17))]));
        }
        // One interval well ahead is a blip, not a new order.
        assert!(!interval(&mut s, &[("a", Some(20)), ("b", Some(0))]));
        interval(&mut s, &[("a", Some(20)), ("b", Some(40))]);
        assert_eq!(order(&s), ["a", "b"]);
        // Sustained, it is.
        let mut ticks = 0;
        while order(&s) != ["b", "a"] {
            interval(&mut s, &[("a", Some(20)), ("b", Some(0))]);
            ticks += 1;
            assert!(ticks <= 5, "b never took over: {:?}", order(&s));
        }
        assert!(ticks >= usize::from(HOLD_TICKS), "took over after {ticks}");
    }

    #[test]
    fn the_order_follows_a_switch_of_the_loudest() {
        let mut s = Speakers::default();
        for _ in 0..5 {
            interval(&mut s, &[("a", Some(10)), ("b", Some(127))]);
        }
        assert_eq!(order(&s), ["a"]);
        let mut ticks = 0;
        while order(&s).first() != Some(&"b") {
            interval(&mut s, &[("a", Some(127)), ("b", Some(10))]);
            ticks += 1;
            assert!(ticks <= 6, "{:?}", order(&s));
        }
        for _ in 0..5 {
            interval(&mut s, &[("a", Some(127)), ("b", Some(10))]);
        }
        assert_eq!(order(&s), ["b"]);
    }

    #[test]
    fn participants_not_updated_are_dropped() {
        let mut s = Speakers::default();
        interval(&mut s, &[("a", Some(10)), ("b", Some(20))]);
        assert_eq!(order(&s), ["a", "b"]);
        assert!(interval(&mut s, &[("b", Some(20))]), "a left");
        assert_eq!(order(&s), ["b"]);
    }

    #[test]
    fn loudest_n_takes_speakers_first_then_the_loudest_others() {
        let mut s = Speakers::default();
        for _ in 0..5 {
            interval(
                &mut s,
                &[
                    ("quiet", Some(50)),
                    ("loud", Some(5)),
                    ("silent", Some(127)),
                    ("mid", Some(25)),
                ],
            );
        }
        assert_eq!(order(&s), ["loud", "mid"]);
        assert!(s.is_selected("loud", 3) && s.is_selected("mid", 3));
        assert!(
            s.is_selected("quiet", 3),
            "fills up with the loudest non-speaker"
        );
        assert!(!s.is_selected("silent", 3));
        assert!(!s.is_selected("mid", 1));
        assert!(!s.is_selected("nobody", 3));
    }

    #[test]
    fn loudest_n_applies_from_the_threshold_and_not_when_off() {
        let on = LoudestN {
            n: 3,
            min_publishers: 10,
        };
        assert!(!on.applies(9));
        assert!(on.applies(10));
        let off = LoudestN { n: 0, ..on };
        assert!(!off.applies(50));
    }

    #[test]
    fn a_new_voice_opens_a_closed_gate_for_a_while() {
        let t0 = Instant::now();
        let mut g = AudioGate::default();
        assert!(g.is_open());
        assert!(!g.decide(false, false, t0));
        assert!(!g.is_open(), "not selected: closed");
        // Quiet packets and a single click do not open it.
        assert!(!g.on_packet_while_closed(Some(90), t0));
        assert!(!g.on_packet_while_closed(Some(10), t0));
        assert!(!g.on_packet_while_closed(None, t0));
        // Three voiced packets in a row do.
        assert!(!g.on_packet_while_closed(Some(10), t0));
        assert!(!g.on_packet_while_closed(Some(10), t0));
        assert!(g.on_packet_while_closed(Some(10), t0));
        assert!(g.is_open());
        // The detector now hears them speaking but has not selected them: still open...
        let t1 = t0 + Duration::from_millis(400);
        assert!(!g.decide(false, true, t1));
        assert!(g.is_open());
        // ...until the hold ends.
        let t2 = t0 + PROMOTION_HOLD;
        g.decide(false, true, t2);
        assert!(!g.is_open());
        // Still talking: not let through again.
        for _ in 0..10 {
            assert!(!g.on_packet_while_closed(Some(10), t2));
        }
        // Silent for a decision, then speaking again: a new start.
        g.decide(false, false, t2);
        for _ in 0..2 {
            assert!(!g.on_packet_while_closed(Some(10), t2));
        }
        assert!(g.on_packet_while_closed(Some(10), t2));
    }

    #[test]
    fn selection_opens_and_reports_it_once() {
        let t0 = Instant::now();
        let mut g = AudioGate::default();
        g.decide(false, false, t0);
        assert!(g.decide(true, true, t0));
        assert!(!g.decide(true, true, t0), "already open");
        assert!(g.is_open());
    }
}
