//! When each datagram reached a bot's socket, from the kernel (`SO_TIMESTAMPNS`).
//!
//! Forwarding latency ends when a packet arrives at the subscriber, not when the load
//! generator's busy media thread gets round to reading its socket: with a hundred sockets and
//! over a hundred thousand packets a second on one thread, a packet can wait in its socket for a
//! whole pass over the others, and that wait is the load generator's, not the server's. The
//! kernel stamps each datagram as it is queued on the socket; the receive path reads the stamp
//! with the datagram and hands rtc that instant, so the packet's arrival travels with it to the
//! recorder. Where the kernel gives no stamp, the read's own time stands in.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{SockAddr, SockAddrStorage};

/// Asks the kernel to stamp every datagram queued on `socket` with its arrival time. The first
/// socket on a machine to ask switches stamping on a moment later (from a kernel work queue);
/// datagrams before that carry the time they are read.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Control-message space for one `timespec`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Datagrams one `recvmmsg` reads at most. A subscriber's socket gets the server's packets in
/// runs (a segmented send per subscriber and chunk), so one call usually takes a whole run.
pub const BATCH: usize = 16;

/// What came with a datagram: its sender and, when the kernel stamped it, when it arrived (on
/// the realtime clock, which is the one socket stamps use).
pub struct Arrival {
    pub from: SocketAddr,
    pub arrived: Option<SystemTime>,
}

/// Buffers, addresses and control space for [`BATCH`] datagrams, and the `recvmmsg` headers
/// pointing at them, built once: the media thread reads a hundred sockets with one of these.
/// Reading a datagram per `recvmsg` call was about 30 % of the load generator's media thread
/// in `audio-50`; batching saved a tenth of that (3 % of the thread), the rest being the
/// kernel's work per datagram.
pub struct RecvBatch {
    buffers: Box<[u8]>,
    buffer_len: usize,
    addrs: Box<[SockAddrStorage]>,
    /// Only the headers read these two; they are held here so that what they point at lives.
    _controls: Box<[Control]>,
    _iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// Datagrams the last read returned.
    read: usize,
}

impl RecvBatch {
    /// Each datagram gets `buffer_len` bytes; a longer one is cut short, as `recv` would.
    pub fn new(buffer_len: usize) -> Self {
        let mut buffers = vec![0u8; BATCH * buffer_len].into_boxed_slice();
        let mut addrs: Box<[SockAddrStorage]> =
            (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect();
        let mut controls: Box<[Control]> = (0..BATCH).map(|_| Control([0; 64])).collect();
        let mut iovecs: Box<[libc::iovec]> = buffers
            .chunks_exact_mut(buffer_len)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let headers = (0..BATCH)
            .map(|i| {
                // SAFETY: all-zero is a valid value for this plain C struct.
                let mut header: libc::mmsghdr = unsafe { zeroed() };
                // SAFETY: socket2's storage is a `sockaddr_storage`.
                header.msg_hdr.msg_name = (unsafe { addrs[i].view_as::<libc::sockaddr_storage>() }
                    as *mut libc::sockaddr_storage)
                    .cast();
                header.msg_hdr.msg_iov = &mut iovecs[i];
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_control = controls[i].0.as_mut_ptr().cast();
                header
            })
            .collect();
        // The headers point into the boxed slices, whose heap storage stays put when the
        // struct moves, and none of them is ever resized.
        Self {
            buffers,
            buffer_len,
            addrs,
            _controls: controls,
            _iovecs: iovecs,
            headers,
            read: 0,
        }
    }

    /// Reads what the socket holds, up to [`BATCH`] datagrams, without blocking
    /// (`WouldBlock` when it is empty). Fewer than [`BATCH`] means the socket was emptied.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.read = 0;
        for (header, addr) in self.headers.iter_mut().zip(self.addrs.iter()) {
            // What the kernel wrote back last time: the lengths it may shrink.
            header.msg_hdr.msg_namelen = addr.size_of();
            header.msg_hdr.msg_controllen = size_of::<Control>() as _;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at its own address slot, iovec (into `buffers`) and
        // control space, all owned by `self` and alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.read = n as usize;
        Ok(self.read)
    }

    /// The `i`th datagram of the last read and what came with it; `None` past the read or for
    /// a sender that is not an IP address.
    pub fn get(&mut self, i: usize) -> Option<(&[u8], Arrival)> {
        if i >= self.read {
            return None;
        }
        let header = self.headers.get(i)?;
        let len = (header.msg_len as usize).min(self.buffer_len);
        let namelen = header.msg_hdr.msg_namelen;
        let mut arrived = None;
        // SAFETY: the kernel filled `msg_controllen` bytes of this header's control space; the
        // CMSG macros walk within them, and a SCM_TIMESTAMPNS message carries one `timespec`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    arrived = realtime(ts);
                }
                cmsg = libc::CMSG_NXTHDR(&header.msg_hdr, cmsg);
            }
        }
        // The slot is left zeroed for the next read; the kernel wrote `namelen` bytes of the
        // sender's address into what is taken out.
        let storage = std::mem::replace(self.addrs.get_mut(i)?, SockAddrStorage::zeroed());
        // SAFETY: as above, `namelen` bytes of a socket address.
        let from = unsafe { SockAddr::new(storage, namelen) }.as_socket()?;
        let start = i * self.buffer_len;
        let data = self.buffers.get(start..start + len)?;
        Some((data, Arrival { from, arrived }))
    }
}

/// The two clocks read together, to turn the kernel's realtime stamps into the monotonic
/// instants everything else uses. Read once per drain of a socket rather than per datagram: any
/// pair read together maps every stamp, and a clock adjustment within milliseconds is negligible.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    instant: Instant,
    wall: SystemTime,
}

impl Clocks {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The monotonic instant of a realtime stamp, before or after the reading.
    pub fn instant_of(&self, at: SystemTime) -> Instant {
        match self.wall.duration_since(at) {
            Ok(before) => self.instant.checked_sub(before).unwrap_or(self.instant),
            Err(after) => self.instant + after.duration(),
        }
    }
}

fn realtime(ts: libc::timespec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram that sat in the socket is read with the time it arrived, not the time it was
    /// read: the gap the load generator's own queueing would otherwise add to every latency.
    #[test]
    fn a_datagram_is_read_with_when_it_arrived() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        rx.set_nonblocking(true).expect("nonblocking");
        enable(&rx).expect("SO_TIMESTAMPNS");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        let mut batch = RecvBatch::new(64);
        // The first socket to ask turns receive stamping on from a kernel work queue; until
        // then the kernel stamps at the read (the load generator's sockets ask at creation,
        // long before media flows). So a few tries, each a datagram left unread for 100 ms,
        // of which one must come back stamped while it waited.
        let mut waited = Vec::new();
        let arrived = loop {
            let sent = SystemTime::now();
            tx.send_to(b"stamped", rx.local_addr().expect("addr"))
                .expect("send");
            std::thread::sleep(Duration::from_millis(100));
            let slept = SystemTime::now();
            assert_eq!(batch.recv(&rx).expect("a datagram"), 1);
            let (data, got) = batch.get(0).expect("read");
            assert_eq!(data, b"stamped");
            assert_eq!(got.from, tx.local_addr().expect("tx addr"));
            let arrived = got
                .arrived
                .expect("the kernel stamps it, at arrival or at the read");
            assert!(sent <= arrived, "{sent:?} {arrived:?}");
            if arrived < slept {
                break arrived;
            }
            waited.push(arrived);
            assert!(waited.len() < 20, "never stamped at arrival: {waited:?}");
        };

        let clocks = Clocks::now();
        assert!(clocks.instant_of(arrived) < clocks.instant);
        let ms = Duration::from_millis(30);
        assert_eq!(clocks.instant_of(clocks.wall - ms), clocks.instant - ms);
        assert_eq!(clocks.instant_of(clocks.wall + ms), clocks.instant + ms);

        let err = batch.recv(&rx).expect_err("nothing more");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    /// One call reads what several senders queued, each datagram with its own length and
    /// sender and one longer than its buffer cut short; the same batch then reads afresh.
    #[test]
    fn a_batch_reads_several_datagrams_and_reads_afresh_when_reused() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        rx.set_nonblocking(true).expect("nonblocking");
        let to = rx.local_addr().expect("addr");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind b");
        let mut batch = RecvBatch::new(64);
        a.send_to(b"one", to).expect("send");
        b.send_to(&[7u8; 100], to).expect("send");
        a.send_to(b"three!", to).expect("send");
        std::thread::sleep(Duration::from_millis(50));

        assert_eq!(batch.recv(&rx).expect("three datagrams"), 3);
        let (data, got) = batch.get(0).expect("first");
        assert_eq!((data, got.from), (&b"one"[..], a.local_addr().expect("a")));
        let (data, got) = batch.get(1).expect("second");
        assert_eq!(data.len(), 64);
        assert!(data.iter().all(|&x| x == 7));
        assert_eq!(got.from, b.local_addr().expect("b"));
        let (data, got) = batch.get(2).expect("third");
        assert_eq!(
            (data, got.from),
            (&b"three!"[..], a.local_addr().expect("a"))
        );
        assert!(batch.get(3).is_none());

        b.send_to(b"x", to).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(batch.recv(&rx).expect("one datagram"), 1);
        let (data, got) = batch.get(0).expect("again");
        assert_eq!((data, got.from), (&b"x"[..], b.local_addr().expect("b")));
        assert!(batch.get(1).is_none());
    }
}
