//! Named scenarios and the free-form flags that override them.

use crate::media::MediaSpec;

/// The server's own defaults for loudest-N (`loudest_n`, `loudest_n_min_participants`).
pub const SERVER_LOUDEST_N: u32 = 3;
pub const SERVER_LOUDEST_N_MIN: u32 = 10;
/// Tiles each subscriber views at the low and the high layer in a simulcast run.
pub const LOW_TILES: u32 = 25;
pub const HIGH_TILES: u32 = 1;

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
    /// Cameras are sent as three RID layers and every subscriber chooses what it views.
    pub simulcast: bool,
    /// Per subscriber, in a simulcast run: cameras viewed at the low and at the high layer; the
    /// others are turned off.
    pub low_tiles: u32,
    pub high_tiles: u32,
    /// `loudest_n` a server started here is given (`None`: the server's default).
    pub server_loudest_n: Option<u32>,
    /// What the server does with audio, as the expectations assume it.
    pub loudest: Loudest,
}

/// The server's loudest-N setting: `n` audio streams are forwarded (0 = all) in calls with at
/// least `min_publishers` audio publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loudest {
    pub n: u32,
    pub min_publishers: u32,
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
            simulcast: false,
            loud: false,
        };
        let plan = |participants, publishers, media, cycles| Plan {
            name: name.to_owned(),
            participants,
            publishers,
            media,
            cycles,
            simulcast: false,
            low_tiles: LOW_TILES,
            high_tiles: HIGH_TILES,
            server_loudest_n: None,
            loudest: Loudest {
                n: SERVER_LOUDEST_N,
                min_publishers: SERVER_LOUDEST_N_MIN,
            },
        };
        Ok(match name {
            // 50 talkers, everyone hears everyone: 50 x 49 x 50 pps = 122,500 forwarded pps. A
            // server started here runs with loudest-N off for it; `--loudest-n` measures that.
            "audio-50" => Plan {
                server_loudest_n: Some(0),
                ..plan(50, 50, audio, 0)
            },
            // Cameras as three layers (93, 375 and 1500 kbit/s at 30 fps); each subscriber
            // views 25 cameras at the low layer and one at the high layer, and hears what the
            // server's loudest-N lets through (its default: the 3 loudest).
            "meeting-50" => Plan {
                simulcast: true,
                ..plan(
                    50,
                    50,
                    MediaSpec {
                        video_kbps: 1500,
                        video_fps: 30,
                        ..audio
                    },
                    0,
                )
            },
            "webinar" => plan(
                50,
                1,
                MediaSpec {
                    video_kbps: 1500,
                    video_fps: 30,
                    ..audio
                },
                0,
            ),
            // A small stable room, and join/leave cycles of one more talker.
            "churn" => plan(4, 4, audio, 1000),
            "custom" => plan(10, 10, audio, 0),
            other => return Err(UnknownScenario(other.to_owned())),
        })
    }

    /// Streams each publisher sends.
    pub fn streams_per_publisher(&self) -> u32 {
        let video = if self.media.video_kbps == 0 {
            0
        } else if self.simulcast {
            3
        } else {
            1
        };
        u32::from(self.media.audio) + video
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_50_is_everyone_to_everyone_on_a_server_started_here() {
        let plan = Plan::named("audio-50").expect("known");
        let pps = plan.publishers * plan.streams_per_publisher() * (plan.participants - 1) * 50;
        assert_eq!(pps, 122_500);
        assert_eq!(plan.server_loudest_n, Some(0));
        assert!(Plan::named("nope").is_err());
    }

    #[test]
    fn meeting_50_sends_simulcast() {
        let plan = Plan::named("meeting-50").expect("known");
        assert!(plan.simulcast);
        assert_eq!(plan.streams_per_publisher(), 4);
        assert_eq!((plan.low_tiles, plan.high_tiles), (25, 1));
    }
}
