//! Named scenarios and the free-form flags that override them.

use crate::media::MediaSpec;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub participants: u32,
    /// The first `publishers` participants publish `media`; the rest only watch.
    pub publishers: u32,
    pub media: MediaSpec,
    /// Join/leave cycles (churn only): extra participants join, publish, get media and leave.
    pub cycles: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown scenario {0:?}: use audio-50, meeting-50, webinar, churn or custom")]
pub struct UnknownScenario(String);

impl Plan {
    pub fn named(name: &str) -> Result<Plan, UnknownScenario> {
        let audio = MediaSpec {
            audio: true,
            video_kbps: 0,
            video_fps: 30,
        };
        let plan = |participants, publishers, media, cycles| Plan {
            name: name.to_owned(),
            participants,
            publishers,
            media,
            cycles,
        };
        Ok(match name {
            // 50 talkers, everyone hears everyone: 50 x 49 x 50 pps = 122,500 forwarded pps.
            "audio-50" => plan(50, 50, audio, 0),
            // The bots send no simulcast, so every camera goes to everyone; the single layer
            // is a low one (150 kbit/s, 15 fps) that a 25-tile grid would use.
            "meeting-50" => plan(
                50,
                50,
                MediaSpec {
                    audio: true,
                    video_kbps: 150,
                    video_fps: 15,
                },
                0,
            ),
            "webinar" => plan(
                50,
                1,
                MediaSpec {
                    audio: true,
                    video_kbps: 1500,
                    video_fps: 30,
                },
                0,
            ),
            // A small stable room, and join/leave cycles of one more talker.
            "churn" => plan(4, 4, audio, 1000),
            "custom" => plan(10, 10, audio, 0),
            other => return Err(UnknownScenario(other.to_owned())),
        })
    }

    /// Receivers of each published stream: everyone else. The bots send no audio levels, which
    /// the server's loudest-N needs to hold a stream back, and no simulcast layers, so the
    /// server forwards every track to every other participant.
    pub fn receivers_per_stream(&self) -> u32 {
        self.participants.saturating_sub(1)
    }

    /// Streams each publisher sends.
    pub fn streams_per_publisher(&self) -> u32 {
        u32::from(self.media.audio) + u32::from(self.media.video_kbps > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_50_is_everyone_to_everyone() {
        let plan = Plan::named("audio-50").expect("known");
        let pps = plan.publishers * plan.streams_per_publisher() * plan.receivers_per_stream() * 50;
        assert_eq!(pps, 122_500);
        assert!(Plan::named("nope").is_err());
    }
}
