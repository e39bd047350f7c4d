//! How many datagrams a receive round feeds in before it forwards and sends them.
//!
//! The worker reads what its socket holds (up to `MAX_RECV_BATCHES` × `BATCH` datagrams), feeds
//! each datagram to its connection, and forwards and sends only once the round is fed, so that
//! each subscriber's packets leave together as one segmented send. The first datagram of a
//! round waits for the whole round, though: after the worker fell behind (a turn the kernel gave
//! to another process, a burst of joins) a round of a 50-person audio call held 256 datagrams,
//! some 12,500 forwarded packets, and the server's own latency histogram put its p99 at 25 to
//! 100 ms. A round is therefore forwarded and sent in chunks of about [`FORWARD_BUDGET`]
//! expected forwards, sized from the fan-out the worker measured over the last interval: a call
//! with a fan-out of 49 takes 8 datagrams at a time, a small call keeps its rounds whole.

/// Forwarded packets a chunk is sized for: 2.5-3 ms of work at the 6-7 µs a forwarded packet
/// costs, so the server's share of a packet's latency stays a few milliseconds when it is
/// behind. Smaller chunks shorten the segmented sends, which costs CPU; at this budget the cost
/// was within the noise of whole rounds (see `benches/README.md`).
pub(crate) const FORWARD_BUDGET: u64 = 400;

/// The chunk size and the count of the current round.
#[derive(Debug)]
pub(crate) struct RoundChunks {
    chunk: usize,
    /// The largest round: a chunk never needs to be longer.
    max: usize,
    fed: usize,
    /// Forwarded packets and received datagrams at the last [`RoundChunks::resize`].
    basis: (u64, u64),
}

impl RoundChunks {
    /// Until the first interval is measured, rounds are whole.
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            chunk: max,
            max,
            fed: 0,
            basis: (0, 0),
        }
    }

    /// Sizes chunks from the worker's cumulative counters: the packets it forwarded and the
    /// datagrams it received since the last call give the mean fan-out. Datagrams that carry
    /// no media (RTCP, STUN) count as received, which makes the fan-out read low and the chunks
    /// a little longer, never shorter, than the budget. An interval without traffic keeps the
    /// size.
    pub(crate) fn resize(&mut self, forwarded: u64, received: u64) {
        let forwarded_since = forwarded.saturating_sub(self.basis.0);
        let received_since = received.saturating_sub(self.basis.1);
        self.basis = (forwarded, received);
        if received_since == 0 {
            return;
        }
        let fanout = forwarded_since.div_ceil(received_since).max(1);
        self.chunk = usize::try_from(FORWARD_BUDGET / fanout)
            .unwrap_or(self.max)
            .clamp(1, self.max);
    }

    #[cfg(test)]
    fn chunk(&self) -> usize {
        self.chunk
    }

    /// A new round begins: nothing fed yet.
    pub(crate) fn start(&mut self) {
        self.fed = 0;
    }

    /// Counts one datagram fed to a connection; true when it completes a chunk, which the
    /// worker then forwards and sends before feeding more.
    pub(crate) fn fed_one(&mut self) -> bool {
        self.fed += 1;
        self.fed.is_multiple_of(self.chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::{FORWARD_BUDGET, RoundChunks};

    #[test]
    fn rounds_stay_whole_until_a_fan_out_is_measured() {
        let chunks = RoundChunks::new(256);
        assert_eq!(chunks.chunk(), 256);
    }

    #[test]
    fn a_large_call_is_forwarded_a_few_datagrams_at_a_time() {
        let mut chunks = RoundChunks::new(256);
        // One second of a 50-person audio call: 2,500 datagrams in, 122,500 packets out.
        chunks.resize(122_500, 2_500);
        assert_eq!(chunks.chunk(), (FORWARD_BUDGET / 49) as usize);
        assert_eq!(chunks.chunk(), 8);
        // The next interval is measured from this one, not from the start.
        chunks.resize(122_500 + 2 * 9_000, 2_500 + 9_000);
        assert_eq!(chunks.chunk(), 200);
    }

    #[test]
    fn small_calls_and_silence_keep_rounds_whole_or_as_they_were() {
        let mut chunks = RoundChunks::new(256);
        chunks.resize(400, 400); // fan-out 1
        assert_eq!(chunks.chunk(), 256);
        chunks.resize(400 + 98_000, 400 + 1_000); // fan-out 98
        assert_eq!(chunks.chunk(), 4);
        chunks.resize(98_400, 1_400); // nothing received: unchanged
        assert_eq!(chunks.chunk(), 4);
        chunks.resize(98_400 + 1_000_000, 1_401); // a fan-out past the budget: one at a time
        assert_eq!(chunks.chunk(), 1);
    }

    #[test]
    fn every_chunkth_datagram_completes_a_chunk_and_a_round_restarts_the_count() {
        let mut chunks = RoundChunks::new(256);
        chunks.resize(122_500, 2_500);
        let completed: Vec<bool> = (0..17).map(|_| chunks.fed_one()).collect();
        let at: Vec<usize> = (0..17).filter(|&i| completed[i]).collect();
        assert_eq!(at, vec![7, 15]);
        chunks.start();
        assert!(!(0..7).any(|_| chunks.fed_one()));
        assert!(chunks.fed_one());
    }
}
