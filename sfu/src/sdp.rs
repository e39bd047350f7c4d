//! The server's ICE candidates in its SDP: written into every m-section, and read back out for
//! trickling.
//!
//! rtc 0.21.1 writes a connection's candidates and `a=end-of-candidates` into the first
//! m-section only, which bundling allows. Clients differ in which section they take them from:
//! aiortc, with max-bundle, keeps those of the last section it reads, and so found none and never
//! started its checks. Every live m-section therefore carries them, bundled or not, so a client
//! that reads candidates from any one section finds them.
//!
//! A rejected m-section (port 0) carries none: no transport is negotiated there, and a client
//! that rejected it (or that the server rejects) has no use for an address in it. rtc puts its
//! candidates into the first section even when that one is rejected; they are moved out of it.

use std::io::Cursor;

use rtc::sdp::SessionDescription;
use rtc::sdp::description::common::Attribute;
use rtc::sdp::description::media::MediaDescription;

use crate::error::EngineError;

const CANDIDATE: &str = "candidate";
const END_OF_CANDIDATES: &str = "end-of-candidates";

/// One of the server's candidates as a client receives it in `rtc:candidate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCandidate {
    /// The candidate line with its `candidate:` prefix, as a browser produces it.
    pub candidate: String,
    /// The m-section it was read from (the first live one).
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: u16,
}

/// Rewrites `sdp` so that every live m-section carries all the candidates found in any section,
/// and `a=end-of-candidates` if any section has it; rejected sections lose theirs. Sections keep
/// their other attributes and their order; the candidates go at the end of each section, where
/// rtc writes them. Fails only for SDP that does not parse, which rtc's own never is.
pub(crate) fn with_candidates_in_every_section(sdp: &str) -> Result<String, EngineError> {
    let mut parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| EngineError::Rtc(format!("the server's own SDP does not parse: {e}")))?;
    let mut candidates: Vec<String> = Vec::new();
    let mut complete = false;
    for media in &parsed.media_descriptions {
        for attribute in &media.attributes {
            match (attribute.key.as_str(), &attribute.value) {
                (CANDIDATE, Some(value)) if !candidates.contains(value) => {
                    candidates.push(value.clone())
                }
                (END_OF_CANDIDATES, _) => complete = true,
                _ => {}
            }
        }
    }
    for media in &mut parsed.media_descriptions {
        // Dropped and re-added, so each section ends with the same lines in the same order.
        media
            .attributes
            .retain(|a| a.key != CANDIDATE && a.key != END_OF_CANDIDATES);
        if is_rejected(media) {
            continue;
        }
        for candidate in &candidates {
            media.attributes.push(Attribute::new(
                CANDIDATE.to_owned(),
                Some(candidate.clone()),
            ));
        }
        if complete {
            media
                .attributes
                .push(Attribute::new(END_OF_CANDIDATES.to_owned(), None));
        }
    }
    Ok(parsed.marshal())
}

/// The candidates to trickle after an SDP of the server: those of its first live m-section, RTP
/// component only (both ends multiplex RTCP). The server has one transport per connection
/// (every section is bundled onto it), so one section's candidates describe it. Empty for SDP
/// that does not parse or carries no candidate.
pub fn server_candidates(sdp: &str) -> Vec<ServerCandidate> {
    let Ok(parsed) = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())) else {
        return Vec::new();
    };
    let Some((index, media)) = parsed
        .media_descriptions
        .iter()
        .enumerate()
        .find(|(_, m)| !is_rejected(m) && m.has_attribute(CANDIDATE))
    else {
        return Vec::new();
    };
    let Ok(sdp_mline_index) = u16::try_from(index) else {
        return Vec::new();
    };
    let sdp_mid = media.attribute("mid").flatten().map(str::to_owned);
    media
        .attributes
        .iter()
        .filter(|a| a.key == CANDIDATE)
        .filter_map(|a| a.value.as_deref())
        .filter(|value| value.split_whitespace().nth(1) == Some("1"))
        .map(|value| ServerCandidate {
            candidate: format!("{CANDIDATE}:{value}"),
            sdp_mid: sdp_mid.clone(),
            sdp_mline_index,
        })
        .collect()
}

/// A section whose port is 0 was rejected (RFC 3264 section 6); rtc never writes bundle-only
/// sections, the other use of port 0.
fn is_rejected(media: &MediaDescription) -> bool {
    media.media_name.port.value == 0
}

#[cfg(test)]
mod tests {
    use super::{ServerCandidate, server_candidates, with_candidates_in_every_section};

    const HOST: &str = "1 1 udp 2130706431 127.0.0.1 40000 typ host";
    const RTCP: &str = "1 2 udp 2130706431 127.0.0.1 40000 typ host";

    /// The shape rtc writes: candidates and end-of-candidates in the first section only; a
    /// rejected section (port 0) in the middle.
    fn rtc_sdp() -> String {
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 2",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=sendonly",
            &format!("a=candidate:{HOST}"),
            &format!("a=candidate:{RTCP}"),
            "a=end-of-candidates",
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:1",
            "a=inactive",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:2",
            "a=sendonly",
            "a=rtcp-fb:96 nack",
            "",
        ]
        .join("\r\n")
    }

    /// The lines of each m-section (the `m=` line's own text first).
    fn sections(sdp: &str) -> Vec<Vec<String>> {
        sdp.split("\r\nm=")
            .skip(1)
            .map(|s| s.lines().map(str::to_owned).collect())
            .collect()
    }

    fn tail(section: &[String]) -> Vec<&str> {
        section
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("a=candidate:") || *l == "a=end-of-candidates")
            .collect()
    }

    #[test]
    fn every_live_section_ends_with_the_candidates_and_end_of_candidates() {
        let fixed = with_candidates_in_every_section(&rtc_sdp()).expect("parses");
        let sections = sections(&fixed);
        assert_eq!(sections.len(), 3, "{fixed}");
        let expected = [
            format!("a=candidate:{HOST}"),
            format!("a=candidate:{RTCP}"),
            "a=end-of-candidates".to_owned(),
        ];
        for index in [0, 2] {
            assert_eq!(tail(&sections[index]), expected, "section {index}: {fixed}");
            let last = sections[index].last().map(String::as_str);
            assert_eq!(last, Some("a=end-of-candidates"), "{fixed}");
        }
        // Other attributes are untouched and keep their places.
        assert!(
            sections[2].contains(&"a=rtcp-fb:96 nack".to_owned()),
            "{fixed}"
        );
        assert!(sections[0].contains(&"a=sendonly".to_owned()), "{fixed}");
        // The rejected section gets none.
        assert!(tail(&sections[1]).is_empty(), "{fixed}");
        assert!(fixed.contains("a=group:BUNDLE 0 2\r\n"), "{fixed}");
        // Applying it again changes nothing.
        assert_eq!(
            with_candidates_in_every_section(&fixed).expect("parses"),
            fixed
        );
    }

    #[test]
    fn a_rejected_first_section_hands_its_candidates_on() {
        let sdp = rtc_sdp()
            .replace("m=audio 9 ", "m=audio 0 ")
            .replace("a=group:BUNDLE 0 2", "a=group:BUNDLE 2");
        let fixed = with_candidates_in_every_section(&sdp).expect("parses");
        let sections = sections(&fixed);
        assert!(tail(&sections[0]).is_empty(), "{fixed}");
        assert!(tail(&sections[1]).is_empty(), "{fixed}");
        assert_eq!(tail(&sections[2]).len(), 3, "{fixed}");
        assert_eq!(
            server_candidates(&fixed),
            vec![ServerCandidate {
                candidate: format!("candidate:{HOST}"),
                sdp_mid: Some("2".to_owned()),
                sdp_mline_index: 2,
            }]
        );
    }

    #[test]
    fn trickles_the_rtp_candidate_of_the_first_live_section() {
        assert_eq!(
            server_candidates(&rtc_sdp()),
            vec![ServerCandidate {
                candidate: format!("candidate:{HOST}"),
                sdp_mid: Some("0".to_owned()),
                sdp_mline_index: 0,
            }]
        );
        assert!(server_candidates("not sdp").is_empty());
    }

    #[test]
    fn sdp_without_candidates_stays_without() {
        let sdp = rtc_sdp()
            .lines()
            .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let fixed = with_candidates_in_every_section(&sdp).expect("parses");
        assert!(!fixed.contains("a=candidate"), "{fixed}");
        assert!(!fixed.contains("a=end-of-candidates"), "{fixed}");
        assert!(with_candidates_in_every_section("garbage").is_err());
    }
}
