//! What the server should forward to whom, so that loss is measured against what each subscriber
//! asked for and what the server was told to do, not against everything that was sent.
//!
//! - **Video without simulcast**: every camera to every other participant.
//! - **Video with simulcast**: each subscriber views `high_tiles` cameras at the high layer
//!   (the first publishers, who are also the loud talkers: a speaker view), `low_tiles` more at
//!   the low layer (the next publishers after itself, in a circle, so every camera has about the
//!   same number of viewers) and turns the rest off with `rtc:subscribe`. What it should get of
//!   a camera is what the publisher sent of the chosen layer; a camera turned off should send it
//!   nothing. Layers change only at keyframes, so packets are counted per subscriber and
//!   publisher, whatever layer they came from.
//! - **Audio**: everyone else's microphone; with loudest-N on (and at least its minimum of audio
//!   publishers), only the loud talkers' microphones. The bots make that set unambiguous: the
//!   first `n` publishers send voice levels (−12 … −30 dBov) and everyone else sends levels the
//!   server treats as not speaking (−45 … −58 dBov, under its −40 dBov threshold), so the
//!   server's loudest `n` are exactly those, once each has spoken for a moment.
//!
//! Whatever arrives that was not expected (a camera turned off, a quiet microphone) is counted as
//! *unexpected*: if it is large, the server does something other than assumed (another loudest-N
//! setting, say) and the loss figure should not be trusted.

use std::collections::{HashMap, HashSet};

use crate::recorder::Record;
use crate::scenario::{Loudest, Plan};
use crate::stamp::{STREAM_AUDIO, STREAM_VIDEO};

/// How many publishers talk loudly when loudest-N does not apply: enough for an active-speaker
/// list, as the server's default N.
const SPEAKERS_WITHOUT_LOUDEST_N: u32 = 3;

/// A camera as one subscriber views it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Off,
    Low,
    High,
}

impl View {
    /// The `rtc:subscribe` quality.
    pub fn quality(self) -> &'static str {
        match self {
            View::Off => "off",
            View::Low => "low",
            View::High => "high",
        }
    }
}

/// Who should receive what.
#[derive(Debug, Clone)]
pub struct Expectation {
    participants: u32,
    publishers: u32,
    audio: bool,
    video: bool,
    simulcast: bool,
    low_tiles: u32,
    high_tiles: u32,
    loudest: Loudest,
}

impl Expectation {
    pub fn new(plan: &Plan) -> Self {
        Self {
            participants: plan.participants,
            publishers: plan.publishers,
            audio: plan.media.audio,
            video: plan.media.video_kbps > 0,
            simulcast: plan.simulcast,
            low_tiles: plan.low_tiles,
            high_tiles: plan.high_tiles,
            loudest: plan.loudest,
        }
    }

    /// Whether the server forwards only the loudest audio in this call.
    pub fn loudest_n_applies(&self) -> bool {
        self.audio && self.loudest.n > 0 && self.publishers >= self.loudest.min_publishers.max(1)
    }

    /// Whether publisher `p` talks loudly (the others send quiet levels).
    pub fn loud(&self, p: u32) -> bool {
        let speakers = if self.loudest_n_applies() {
            self.loudest.n
        } else {
            SPEAKERS_WITHOUT_LOUDEST_N
        };
        p < speakers.min(self.publishers)
    }

    /// Whether subscriber `r` should receive publisher `p`'s microphone.
    pub fn audio(&self, r: u32, p: u32) -> bool {
        self.audio
            && r != p
            && p < self.publishers
            && (!self.loudest_n_applies() || p < self.loudest.n)
    }

    /// How subscriber `r` views publisher `p`'s camera.
    pub fn view(&self, r: u32, p: u32) -> View {
        if !self.video || r == p || p >= self.publishers {
            return View::Off;
        }
        if !self.simulcast {
            return View::High;
        }
        let others = || (0..self.publishers).filter(move |&q| q != r);
        if others().take(self.high_tiles as usize).any(|q| q == p) {
            return View::High;
        }
        // The next publishers after `r`, in a circle, that are not viewed high.
        let high: Vec<u32> = others().take(self.high_tiles as usize).collect();
        let low = (1..self.publishers.max(self.participants))
            .map(|k| (r + k) % self.participants.max(1))
            .filter(|q| *q < self.publishers && *q != r && !high.contains(q))
            .take(self.low_tiles as usize)
            .any(|q| q == p);
        if low { View::Low } else { View::Off }
    }

    /// The choices subscriber `r` sends with `rtc:subscribe`: every other publisher's camera.
    pub fn choices(&self, r: u32) -> Vec<(u32, View)> {
        (0..self.publishers)
            .filter(|&p| p != r)
            .map(|p| (p, self.view(r, p)))
            .collect()
    }

    /// The stamp stream subscriber `r` should receive of publisher `p`'s camera, if any: the
    /// single video stream, or the chosen layer's (the low layer is stream 1, the high one 3).
    pub fn video_stream(&self, r: u32, p: u32) -> Option<u8> {
        match (self.view(r, p), self.simulcast) {
            (View::Off, _) => None,
            (_, false) => Some(STREAM_VIDEO),
            (View::Low, true) => Some(STREAM_VIDEO),
            (View::High, true) => Some(STREAM_VIDEO + 2),
        }
    }

    /// Whether `r` should receive stream `stream` of publisher `p`.
    pub fn expects(&self, r: u32, p: u32, stream: u8) -> bool {
        if stream == STREAM_AUDIO {
            self.audio(r, p)
        } else {
            self.video_stream(r, p) == Some(stream)
        }
    }

    /// Subscribers (participant indices).
    pub fn receivers(&self) -> std::ops::Range<u32> {
        0..self.participants
    }

    /// One line saying what was assumed, for the report.
    pub fn describe(&self) -> String {
        let audio = if !self.audio {
            "no audio".to_owned()
        } else if self.loudest_n_applies() {
            format!(
                "audio: the loudest {} of {} talkers (loudest-N from {} publishers)",
                self.loudest.n, self.publishers, self.loudest.min_publishers
            )
        } else if self.loudest.n == 0 {
            "audio: everyone to everyone (loudest-N off)".to_owned()
        } else {
            format!(
                "audio: everyone to everyone (loudest-N starts at {} publishers)",
                self.loudest.min_publishers
            )
        };
        let video = if !self.video {
            "no video".to_owned()
        } else if self.simulcast {
            format!(
                "video: simulcast, each views {} low and {} high, the rest off",
                self.low_tiles, self.high_tiles
            )
        } else {
            "video: one layer, every camera to everyone".to_owned()
        };
        format!("{audio}; {video}")
    }
}

/// What arrived against what should have, over a measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Packets the server should have forwarded: each stream's packets sent in the window, once
    /// per subscriber that should get it.
    pub expected: u64,
    /// Packets that arrived (sent in the window), expected or not.
    pub received: u64,
    /// Expected packets that did not arrive, counted per subscriber, publisher and kind (audio,
    /// video), so a camera arriving on another layer than chosen is not loss.
    pub missing: u64,
    /// Of `missing`, those of subscribers whose connection was not up when the window opened.
    pub missing_unconnected: u64,
    /// Packets of streams a subscriber should not get (a camera it turned off, audio loudest-N
    /// should hold back).
    pub unexpected: u64,
    /// Video packets by layer against the subscriber's choice: on it, below it (the server's
    /// congestion control lowered it, or a switch was under way), above it.
    pub video_on_choice: u64,
    pub video_below: u64,
    pub video_above: u64,
    /// Streams that some subscriber should get, and how many subscribers each has on average.
    pub streams: u32,
    pub fanout: f64,
    /// Packets sent of those streams.
    pub sent: u64,
    /// Streams no subscriber should get (a simulcast layer no one views, a talker loudest-N
    /// holds back) and the packets sent of them: the server receives these too.
    pub unforwarded_streams: u32,
    pub unforwarded_sent: u64,
}

impl Tally {
    /// `unconnected`: subscribers whose connection was not up as the window opened.
    pub fn new(e: &Expectation, record: &Record, unconnected: &HashSet<u32>) -> Tally {
        let mut t = Tally::default();
        // (receiver, publisher, video) -> (expected, received)
        let mut pairs: HashMap<(u32, u32, bool), (u64, u64)> = HashMap::new();
        for (&(p, stream), &sent) in &record.sent {
            let mut receivers = 0u64;
            for r in e.receivers() {
                if e.expects(r, p, stream) {
                    pairs.entry((r, p, stream != STREAM_AUDIO)).or_default().0 += sent;
                    receivers += 1;
                }
            }
            if receivers > 0 {
                t.streams += 1;
                t.sent += sent;
                t.expected += sent * receivers;
            } else {
                t.unforwarded_streams += 1;
                t.unforwarded_sent += sent;
            }
        }
        for (&(r, p, stream), &n) in &record.received {
            pairs.entry((r, p, stream != STREAM_AUDIO)).or_default().1 += n;
            t.received += n;
            if stream != STREAM_AUDIO {
                match e.video_stream(r, p) {
                    Some(chosen) if chosen == stream => t.video_on_choice += n,
                    Some(chosen) if stream < chosen => t.video_below += n,
                    Some(_) => t.video_above += n,
                    None => {}
                }
            }
        }
        for ((r, _, _), (expected, received)) in pairs {
            if expected > 0 {
                let missing = expected.saturating_sub(received);
                t.missing += missing;
                if unconnected.contains(&r) {
                    t.missing_unconnected += missing;
                }
            } else {
                t.unexpected += received;
            }
        }
        t.fanout = if t.sent > 0 {
            t.expected as f64 / t.sent as f64
        } else {
            0.0
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(loudest_n: u32) -> Expectation {
        let mut plan = Plan::named("meeting-50").expect("known");
        plan.loudest.n = loudest_n;
        Expectation::new(&plan)
    }

    #[test]
    fn each_subscriber_views_25_low_1_high_and_turns_the_rest_off() {
        let e = meeting(3);
        for r in e.receivers() {
            let choices = e.choices(r);
            assert_eq!(choices.len(), 49);
            let count = |v| choices.iter().filter(|(_, c)| *c == v).count();
            assert_eq!(
                (count(View::Low), count(View::High), count(View::Off)),
                (25, 1, 23),
                "subscriber {r}"
            );
            assert!(choices.iter().all(|(p, _)| *p != r));
        }
        assert_eq!(e.view(5, 0), View::High);
        assert_eq!(e.view(0, 1), View::High);
        assert_eq!(e.video_stream(5, 0), Some(STREAM_VIDEO + 2));
        assert_eq!(e.video_stream(5, 6), Some(STREAM_VIDEO));
        // Every camera but the speaker's is viewed low by about half the room.
        let viewers = |p| e.receivers().filter(|&r| e.view(r, p) == View::Low).count();
        assert!((20..=27).contains(&viewers(10)), "{}", viewers(10));
    }

    #[test]
    fn loudest_n_expects_only_the_loud_talkers() {
        let e = meeting(3);
        assert!(e.loudest_n_applies());
        assert!(e.loud(2) && !e.loud(3));
        assert!(e.audio(10, 2) && !e.audio(10, 3) && !e.audio(2, 2));
        let per_subscriber = |r| (0..50).filter(|&p| e.audio(r, p)).count();
        assert_eq!(per_subscriber(10), 3);
        assert_eq!(per_subscriber(1), 2);

        let off = meeting(0);
        assert!(!off.loudest_n_applies());
        assert_eq!((0..50).filter(|&p| off.audio(10, p)).count(), 49);
        assert!(off.loud(0) && !off.loud(3));
    }

    #[test]
    fn without_simulcast_every_camera_goes_to_everyone() {
        let plan = Plan::named("webinar").expect("known");
        let e = Expectation::new(&plan);
        assert_eq!(e.video_stream(7, 0), Some(STREAM_VIDEO));
        assert_eq!(e.video_stream(0, 0), None);
        assert_eq!(e.video_stream(0, 7), None, "viewers publish nothing");
        // One publisher is under loudest-N's minimum.
        assert!(e.audio(7, 0) && !e.loudest_n_applies());
    }

    #[test]
    fn loss_is_counted_against_what_each_subscriber_asked_for() {
        let mut plan = Plan::named("meeting-50").expect("known");
        plan.participants = 3;
        plan.publishers = 3;
        plan.low_tiles = 1;
        plan.high_tiles = 1;
        plan.loudest.n = 0;
        let e = Expectation::new(&plan);
        // Subscriber 2 views 0 high and 1 low; subscriber 0 views 1 high and 2 low.
        assert_eq!((e.view(2, 0), e.view(2, 1)), (View::High, View::Low));
        let mut record = Record::default();
        for p in 0..3 {
            record.sent.insert((p, STREAM_AUDIO), 100);
            for layer in 0..3 {
                record
                    .sent
                    .insert((p, STREAM_VIDEO + layer), 10 * (u64::from(layer) + 1));
            }
        }
        // Everyone gets all audio but one packet; subscriber 2 gets 0's camera half on the
        // low layer (a switch late in the window) and half on the high one, and 1's low layer;
        // it also gets 5 packets of 1's high layer it did not ask for.
        for r in 0..3 {
            for p in (0..3).filter(|&p| p != r) {
                record.received.insert((r, p, STREAM_AUDIO), 100);
            }
        }
        record.received.insert((0, 1, STREAM_AUDIO), 99);
        record.received.insert((2, 0, STREAM_VIDEO), 15);
        record.received.insert((2, 0, STREAM_VIDEO + 2), 15);
        record.received.insert((2, 1, STREAM_VIDEO), 10);
        record.received.insert((2, 1, STREAM_VIDEO + 2), 5);
        let t = Tally::new(&e, &record, &HashSet::from([1]));
        // Audio 6 x 100; video: subscriber 0 and 1 each 30 (high) + 10 (low), subscriber 2 the same.
        assert_eq!(t.expected, 600 + 3 * 40);
        // One audio packet; subscribers 0 and 1 got no video at all.
        assert_eq!(t.missing, 1 + 2 * 40);
        assert_eq!(t.missing_unconnected, 40, "subscriber 1 said apart");
        assert_eq!(t.video_on_choice, 15 + 10);
        assert_eq!((t.video_below, t.video_above), (15, 5));
        assert_eq!(
            t.unexpected, 0,
            "packets of a viewed camera on another layer are not unexpected"
        );
        assert_eq!(t.received, 599 + 45);
        // No one gets the middle layers, 0's low one (everyone else views the speaker high) or
        // 2's high one.
        assert_eq!(
            (t.unforwarded_streams, t.unforwarded_sent),
            (5, 3 * 20 + 10 + 30)
        );
        assert_eq!(t.streams, 3 + 4);
    }
}
