//! Which peer connection a datagram on the shared socket belongs to.
//!
//! Every peer connection of a worker shares one UDP socket, so the worker has to route each
//! datagram itself. A client's first packets are STUN binding requests whose USERNAME starts with
//! the ufrag the server chose for that peer connection; they are handed to that peer. Only when
//! the peer's ICE agent answers one (it answers only checks that carry the right password) is
//! the client's address tied to the peer, so a stranger who merely knows a ufrag cannot redirect
//! a call. Everything after (DTLS, SRTP, SRTCP, consent checks) is routed by source address
//! alone, so the fast path is one hash lookup and never parses the packet.

use std::collections::HashMap;
use std::net::SocketAddr;

/// A worker-local peer connection id. Ids are never reused, so a stale id held by a timer or a
/// route can only miss, never hit a newer peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerKey(pub(crate) u64);

/// Routes datagrams to peers by ICE ufrag on first contact, then by source address.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    dropped_unknown: u64,
}

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
const STUN_ATTR_USERNAME: u16 = 0x0006;

impl Demux {
    /// Registers the local ufrag of a new peer connection. Returns false if it is taken, so the
    /// caller can draw another instead of silently stealing another peer's traffic.
    pub(crate) fn add_ufrag(&mut self, ufrag: &str, key: PeerKey) -> bool {
        if self.by_ufrag.contains_key(ufrag) {
            return false;
        }
        self.by_ufrag.insert(ufrag.to_owned(), key);
        true
    }

    /// Forgets every route to `key`. Removal is rare next to routing, so a scan of the address map
    /// is cheaper overall than keeping a reverse index up to date on every learned address.
    pub(crate) fn remove_peer(&mut self, key: PeerKey) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
    }

    /// Finds the peer a datagram from `from` belongs to; counts and drops it if there is none.
    ///
    /// A STUN request naming a known ufrag goes to that peer whatever the address map says: a
    /// client whose port was reused by a new peer connection (or that moved after an ICE
    /// restart) must reach the right agent, which then decides whether to answer.
    pub(crate) fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<PeerKey> {
        if let Some(ufrag) = stun_local_ufrag(datagram)
            && let Some(&key) = self.by_ufrag.get(ufrag)
        {
            return Some(key);
        }
        match self.by_addr.get(&from) {
            Some(&key) => Some(key),
            None => {
                self.dropped_unknown += 1;
                None
            }
        }
    }

    /// Ties `addr` to `key` once that peer's ICE agent has answered a check from it.
    pub(crate) fn learn(&mut self, addr: SocketAddr, key: PeerKey) {
        if self.by_addr.get(&addr) != Some(&key) {
            self.by_addr.insert(addr, key);
        }
    }

    pub(crate) fn has_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    pub(crate) fn ufrag_count(&self) -> usize {
        self.by_ufrag.len()
    }

    pub(crate) fn addr_count(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn dropped_unknown(&self) -> u64 {
        self.dropped_unknown
    }
}

/// True for a STUN message: the first two bits zero and the magic cookie in place (RFC 5389).
/// DTLS, RTP and RTCP never match, so this is cheap enough for every sent datagram.
pub(crate) fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 2 && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// The local ufrag (before `:`) of a STUN message's USERNAME, if the datagram is STUN and has one.
///
/// Parsed by hand because only this one attribute is needed and this runs on untrusted input
/// before any peer is known: every length is checked against the buffer, nothing is allocated.
fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    // RFC 7983: STUN starts with 0..=3; RFC 5389: magic cookie at bytes 4..8.
    if datagram.len() < STUN_HEADER_LEN || datagram[0] > 3 || datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let end = STUN_HEADER_LEN.checked_add(body_len)?.min(datagram.len());
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]) as usize;
        let value_start = at + 4;
        let value_end = value_start.checked_add(len)?;
        if value_end > end {
            return None;
        }
        if kind == STUN_ATTR_USERNAME {
            let username = std::str::from_utf8(&datagram[value_start..value_end]).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to a multiple of 4 bytes.
        at = value_start + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn routes_by_ufrag_then_by_address() {
        let mut demux = Demux::default();
        assert!(demux.add_ufrag("abcd", PeerKey(1)));
        assert!(!demux.add_ufrag("abcd", PeerKey(2)));
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("literal address");
        assert_eq!(
            demux.route(from, &binding_request("abcd:wxyz")),
            Some(PeerKey(1))
        );
        // A check alone binds nothing: only the agent's answer does.
        assert_eq!(demux.route(from, &[0x80, 0x60, 0, 1]), None);
        demux.learn(from, PeerKey(1));
        assert_eq!(demux.route(from, &[0x80, 0x60, 0, 1]), Some(PeerKey(1)));
        demux.remove_peer(PeerKey(1));
        assert_eq!(demux.route(from, &[0x80, 0x60, 0, 1]), None);
        assert_eq!((demux.ufrag_count(), demux.addr_count()), (0, 0));
        assert_eq!(demux.dropped_unknown(), 2);
    }

    #[test]
    fn unknown_or_malformed_stun_is_dropped() {
        let mut demux = Demux::default();
        let from: SocketAddr = "127.0.0.1:5001".parse().expect("literal address");
        assert_eq!(demux.route(from, &binding_request("nope:x")), None);
        let mut truncated = binding_request("abcd:x");
        truncated[2] = 0xff;
        truncated.truncate(26);
        assert_eq!(demux.route(from, &truncated), None);
        assert_eq!(demux.route(from, &[]), None);
        assert_eq!(demux.dropped_unknown(), 3);
    }
}
