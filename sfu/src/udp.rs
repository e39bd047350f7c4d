//! Batched datagram I/O for a media worker: `recvmmsg` in, `sendmmsg` out.
//!
//! One publisher packet becomes up to 49 subscriber datagrams, each to its own address. Sent one
//! `sendto` at a time, the system call costs more than the forwarding itself, so a worker queues
//! the datagrams its peers produce during a loop pass and hands them to the kernel in batches of
//! [`BATCH`]. Within a batch, consecutive datagrams to one subscriber go out as one segmented
//! send (UDP GSO), so the kernel routes and queues a run of them once. Reads are batched the same
//! way. Buffers, addresses and headers are allocated once per worker; a batch call allocates
//! nothing.
//!
//! On other systems than Linux the same types fall back to one call per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use bytes::BytesMut;

/// Datagrams per system call, in and out.
pub(crate) const BATCH: usize = 64;

/// Largest datagram read; WebRTC keeps RTP under the 1200-byte path MTU it assumes, so anything
/// larger is not media and is dropped as truncated.
pub(crate) const RECV_BUF_LEN: usize = 2048;

/// Socket buffers asked for at bind time. A loop pass can queue a few thousand datagrams (64
/// packets fanned out to 49 legs) and the kernel's default of about 200 KiB would turn a burst
/// into drops; the kernel caps the request at `net.core.{r,w}mem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Asks for larger kernel buffers on a worker socket. Best effort: a smaller cap set by the
/// operator is not an error.
pub(crate) fn enlarge_buffers(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let size = SOCKET_BUFFER_BYTES as libc::c_int;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: a valid socket, a pointer to a c_int and its exact size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, SOCKET_BUFFER_BYTES);
}

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Datagrams the kernel took.
    pub(crate) sent: u64,
    /// Datagrams dropped: the socket buffer was full, or the destination was refused.
    pub(crate) dropped: u64,
    /// Forwarded media packets in the batch and when the oldest of them was read from the
    /// socket, for the forwarding-latency histogram.
    pub(crate) media: u64,
    pub(crate) oldest_media: Option<Instant>,
}

/// Outgoing datagrams waiting for the next `sendmmsg`.
pub(crate) struct SendBatch {
    datagrams: Vec<(BytesMut, SocketAddr)>,
    media: u64,
    oldest_media: Option<Instant>,
    #[cfg(target_os = "linux")]
    sys: linux::Headers,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        Self {
            datagrams: Vec::with_capacity(BATCH),
            media: 0,
            oldest_media: None,
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(),
        }
    }

    /// Turns coalescing off, as a kernel that refuses it would: the fallback path, for tests.
    #[cfg(test)]
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    fn without_segmentation(mut self) -> Self {
        #[cfg(target_os = "linux")]
        {
            self.sys.gso = false;
        }
        self
    }

    /// Whether sends still coalesce runs with `UDP_SEGMENT` (always false off Linux).
    #[cfg(test)]
    fn segments(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sys.gso;
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Whether the batch is full and must be flushed before the next push.
    pub(crate) fn is_full(&self) -> bool {
        self.datagrams.len() >= BATCH
    }

    /// Queues a datagram. The caller flushes a full batch first; a push into a full batch
    /// still works but grows the queue.
    pub(crate) fn push(&mut self, datagram: BytesMut, to: SocketAddr) {
        self.datagrams.push((datagram, to));
    }

    /// Notes that `packets` forwarded media packets, the oldest read at `oldest`, are in the
    /// queued datagrams.
    pub(crate) fn note_media(&mut self, packets: u64, oldest: Instant) {
        self.media += packets;
        self.oldest_media = Some(self.oldest_media.map_or(oldest, |o| o.min(oldest)));
    }

    /// Sends everything queued. A datagram the kernel refuses is dropped and counted, never
    /// retried: a slow or vanished subscriber must not hold up the others.
    pub(crate) fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut outcome = Flushed {
            media: std::mem::take(&mut self.media),
            oldest_media: self.oldest_media.take(),
            ..Default::default()
        };
        if self.datagrams.is_empty() {
            return outcome;
        }
        #[cfg(target_os = "linux")]
        {
            let (sent, dropped) = self.sys.send_all(socket, &self.datagrams);
            outcome.sent = sent;
            outcome.dropped = dropped;
        }
        #[cfg(not(target_os = "linux"))]
        for (datagram, to) in &self.datagrams {
            match socket.send_to(datagram, to) {
                Ok(_) => outcome.sent += 1,
                Err(_) => outcome.dropped += 1,
            }
        }
        self.datagrams.clear();
        outcome
    }
}

/// Buffers for the next `recvmmsg`.
pub(crate) struct RecvBatch {
    buffers: Box<[[u8; RECV_BUF_LEN]]>,
    /// (buffer index, length, sender) of each datagram the last read kept.
    received: Vec<(usize, usize, SocketAddr)>,
    #[cfg(target_os = "linux")]
    sys: linux::Headers,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            buffers: vec![[0u8; RECV_BUF_LEN]; BATCH].into_boxed_slice(),
            received: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(),
        }
    }

    /// Reads up to [`BATCH`] datagrams without blocking; `WouldBlock` when the socket is
    /// empty. Truncated datagrams are skipped, so a read can also keep none.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received.clear();
        #[cfg(target_os = "linux")]
        self.sys
            .recv_batch(socket, &mut self.buffers, &mut self.received)?;
        #[cfg(not(target_os = "linux"))]
        {
            let (n, from) = socket.recv_from(&mut self.buffers[0])?;
            self.received.push((0, n, from));
        }
        Ok(self.received.len())
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`] and its sender.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let &(index, len, from) = self.received.get(i)?;
        Some((&self.buffers[index][..len], from))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! The `mmsghdr` arrays and the two system calls. Every pointer handed to the kernel
    //! points into memory that outlives the call: the batch's own arrays and the caller's
    //! datagrams or buffers.

    use std::io::{self, ErrorKind};
    use std::mem::{size_of, zeroed};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use bytes::BytesMut;
    use tracing::{debug, warn};

    use super::{BATCH, RECV_BUF_LEN};

    /// Most segments one GSO send may carry: the kernel's `UDP_MAX_SEGMENTS` on every version
    /// that has `UDP_SEGMENT`.
    const MAX_SEGMENTS: usize = 64;

    /// Most bytes one GSO send may carry: what fits in one UDP datagram over IPv6, so the same
    /// limit serves both families.
    const MAX_GSO_BYTES: usize = 65_000;

    /// Room for one `UDP_SEGMENT` control message (a `u16`), 8-byte aligned as `cmsghdr` needs.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Control([u8; 32]);

    pub(super) struct Headers {
        headers: Vec<libc::mmsghdr>,
        iovecs: Vec<libc::iovec>,
        addrs: Vec<libc::sockaddr_storage>,
        controls: Vec<Control>,
        /// Datagrams carried by each header of the send being built.
        segments: Vec<usize>,
        /// Whether sends may coalesce datagrams with `UDP_SEGMENT`; cleared for good the first
        /// time the kernel refuses it (a kernel without it, a device that cannot checksum).
        pub(super) gso: bool,
        /// The receive buffers (address, count) the headers were last pointed at. A
        /// `RecvBatch`'s buffers never move, so a read resets only what the kernel wrote back
        /// instead of rebuilding every header: most reads in a busy loop return a datagram or
        /// two, and rebuilding 64 headers each time cost more than the read's bookkeeping.
        recv_prepared_for: Option<(usize, usize)>,
    }

    impl Headers {
        pub(super) fn new() -> Self {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let (header, iovec, addr) = unsafe { (zeroed(), zeroed(), zeroed()) };
            Self {
                headers: vec![header; BATCH],
                iovecs: vec![iovec; BATCH],
                addrs: vec![addr; BATCH],
                controls: vec![Control([0; 32]); BATCH],
                segments: Vec::with_capacity(BATCH),
                gso: true,
                recv_prepared_for: None,
            }
        }

        /// Sends `datagrams` in as many `sendmmsg` calls as it takes; returns (sent, dropped).
        ///
        /// Consecutive datagrams to one address go out as one GSO send (`UDP_SEGMENT`) when all
        /// but the last have the same length and the last is no longer: the kernel then routes
        /// and queues them once and cuts them apart at the device, or on loopback at the
        /// receiving socket. A subscriber's packets leave rtc one connection at a time, so in a
        /// loop pass that forwarded k packets every subscriber is a run of about k datagrams.
        pub(super) fn send_all(
            &mut self,
            socket: &UdpSocket,
            datagrams: &[(BytesMut, SocketAddr)],
        ) -> (u64, u64) {
            let (mut sent, mut dropped) = (0u64, 0u64);
            for chunk in datagrams.chunks(BATCH) {
                let mut from = 0;
                while from < chunk.len() {
                    let gso = self.gso;
                    let count = self.prepare(&chunk[from..]);
                    let mut start = 0;
                    while start < count {
                        let pending = &mut self.headers[start..count];
                        // SAFETY: `pending` holds initialised headers whose name, iovec and
                        // control pointers point into `self.addrs`, `self.iovecs`,
                        // `self.controls` and `chunk`, all alive and unmoved during the call.
                        let n = unsafe {
                            libc::sendmmsg(
                                socket.as_raw_fd(),
                                pending.as_mut_ptr(),
                                pending.len() as libc::c_uint,
                                0,
                            )
                        };
                        if n >= 0 {
                            sent += self.segments[start..start + n as usize]
                                .iter()
                                .sum::<usize>() as u64;
                            start += n as usize;
                            continue;
                        }
                        let error = io::Error::last_os_error();
                        let failed = self.segments[start];
                        match error.kind() {
                            ErrorKind::Interrupted => {}
                            // The socket buffer is full: everything left in this batch is
                            // dropped.
                            ErrorKind::WouldBlock => {
                                dropped += self.segments[start..count].iter().sum::<usize>() as u64;
                                start = count;
                            }
                            // A coalesced send refused as such: this kernel or the route's
                            // device cannot segment UDP. Send the rest one datagram at a time.
                            _ if gso && failed > 1 && gso_unsupported(&error) => {
                                warn!(%error, "UDP segmentation offload refused; sending datagrams one by one");
                                self.gso = false;
                                break;
                            }
                            // The datagram at `start` was refused (an ICMP error from an earlier
                            // send, an unroutable address): drop it and go on with the rest.
                            _ => {
                                debug!(%error, "send failed");
                                dropped += failed as u64;
                                start += 1;
                            }
                        }
                    }
                    // Everything up to `start` was sent or dropped; after a refused GSO send
                    // the rest is prepared again, uncoalesced.
                    from += self.segments[..start].iter().sum::<usize>();
                }
            }
            (sent, dropped)
        }

        /// Fills the headers for `datagrams` (at most [`BATCH`]), one header per run of
        /// datagrams that can share a GSO send; returns the number of headers.
        fn prepare(&mut self, datagrams: &[(BytesMut, SocketAddr)]) -> usize {
            self.segments.clear();
            let mut i = 0;
            while i < datagrams.len() {
                let (first, to) = &datagrams[i];
                let size = first.len();
                let mut run = 1;
                if self.gso {
                    let mut bytes = size;
                    while let Some((next, next_to)) = datagrams.get(i + run) {
                        if run == MAX_SEGMENTS
                            || next_to != to
                            || next.len() > size
                            || bytes + next.len() > MAX_GSO_BYTES
                        {
                            break;
                        }
                        bytes += next.len();
                        run += 1;
                        if next.len() < size {
                            break; // only the last segment may be shorter
                        }
                    }
                }
                for (j, (datagram, _)) in datagrams[i..i + run].iter().enumerate() {
                    self.iovecs[i + j] = libc::iovec {
                        iov_base: datagram.as_ptr() as *mut libc::c_void,
                        iov_len: datagram.len(),
                    };
                }
                let h = self.segments.len();
                let addr_len = write_sockaddr(*to, &mut self.addrs[h]);
                let header = &mut self.headers[h].msg_hdr;
                header.msg_name = (&mut self.addrs[h] as *mut libc::sockaddr_storage).cast();
                header.msg_namelen = addr_len;
                header.msg_iov = &mut self.iovecs[i];
                header.msg_iovlen = run;
                header.msg_flags = 0;
                if run > 1 {
                    let control = &mut self.controls[h];
                    header.msg_control = control.0.as_mut_ptr().cast();
                    header.msg_controllen = control.0.len();
                    // SAFETY: the header's control buffer is `Control`, aligned for `cmsghdr`
                    // and large enough for one cmsg carrying a u16, which CMSG_SPACE confirms.
                    unsafe {
                        let space = libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) as usize;
                        debug_assert!(space <= control.0.len());
                        header.msg_controllen = space;
                        let cmsg = libc::CMSG_FIRSTHDR(header);
                        (*cmsg).cmsg_level = libc::SOL_UDP;
                        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                        (*cmsg).cmsg_len =
                            libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as usize;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
                    }
                } else {
                    header.msg_control = std::ptr::null_mut();
                    header.msg_controllen = 0;
                }
                self.segments.push(run);
                i += run;
            }
            self.segments.len()
        }

        /// One `recvmmsg` into `buffers`; fills `received` with (buffer index, length, sender)
        /// per datagram kept.
        pub(super) fn recv_batch(
            &mut self,
            socket: &UdpSocket,
            buffers: &mut [[u8; RECV_BUF_LEN]],
            received: &mut Vec<(usize, usize, SocketAddr)>,
        ) -> io::Result<()> {
            let count = buffers.len().min(BATCH);
            let prepared = (buffers.as_ptr() as usize, count);
            if self.recv_prepared_for != Some(prepared) {
                for (i, buffer) in buffers.iter_mut().enumerate().take(count) {
                    self.iovecs[i] = libc::iovec {
                        iov_base: buffer.as_mut_ptr().cast(),
                        iov_len: buffer.len(),
                    };
                    let header = &mut self.headers[i].msg_hdr;
                    header.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                    header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    header.msg_iov = &mut self.iovecs[i];
                    header.msg_iovlen = 1;
                    header.msg_control = std::ptr::null_mut();
                    header.msg_controllen = 0;
                    header.msg_flags = 0;
                    self.headers[i].msg_len = 0;
                }
                self.recv_prepared_for = Some(prepared);
            }
            let n = loop {
                // SAFETY: `count` headers prepared for these very buffers (checked above),
                // pointing into `self.addrs`, `self.iovecs` and `buffers`, which outlive the
                // call; no timeout pointer.
                let n = unsafe {
                    libc::recvmmsg(
                        socket.as_raw_fd(),
                        self.headers.as_mut_ptr(),
                        count as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n >= 0 {
                    break n as usize;
                }
                let error = io::Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            };
            for i in 0..n {
                let header = &mut self.headers[i];
                let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                if !truncated && let Some(from) = read_sockaddr(&self.addrs[i]) {
                    received.push((i, header.msg_len as usize, from));
                }
                // The kernel wrote these back; the next read starts from them again.
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                header.msg_hdr.msg_flags = 0;
                header.msg_len = 0;
            }
            Ok(())
        }
    }

    /// Whether a failed send says the kernel cannot segment UDP here: `EIO` when the device
    /// cannot checksum the segments, `EINVAL` or `ENOPROTOOPT` from a kernel without
    /// `UDP_SEGMENT`.
    fn gso_unsupported(error: &io::Error) -> bool {
        matches!(
            error.raw_os_error(),
            Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT)
        )
    }

    fn write_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above.
                unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    fn read_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: &libc::sockaddr_in =
                    unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: &libc::sockaddr_in6 =
                    unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind b");
        a.set_nonblocking(true).expect("nonblocking a");
        b.set_nonblocking(true).expect("nonblocking b");
        (a, b)
    }

    #[test]
    fn a_batch_larger_than_one_call_arrives_whole_and_in_order() {
        let (tx, rx) = pair();
        let to = rx.local_addr().expect("addr");
        let mut batch = SendBatch::new();
        let total = BATCH * 2 + 5;
        for i in 0..total {
            batch.push(BytesMut::from(&(i as u32).to_be_bytes()[..]), to);
        }
        let now = Instant::now();
        batch.note_media(3, now);
        let flushed = batch.flush(&tx);
        assert_eq!(flushed.sent, total as u64);
        assert_eq!(flushed.dropped, 0);
        assert_eq!((flushed.media, flushed.oldest_media), (3, Some(now)));
        assert_eq!(
            batch.flush(&tx),
            Flushed::default(),
            "a flush empties the batch"
        );

        let mut recv = RecvBatch::new();
        let mut seen = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < total && Instant::now() < deadline {
            match recv.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, from) = recv.get(i).expect("datagram i");
                        assert_eq!(from, tx.local_addr().expect("tx addr"));
                        seen.push(u32::from_be_bytes(data.try_into().expect("4 bytes")));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv failed: {e}"),
            }
        }
        assert_eq!(seen, (0..total as u32).collect::<Vec<_>>());
    }

    /// Reads until `count` datagrams arrived on `rx` (or five seconds passed).
    fn receive(rx: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut recv = RecvBatch::new();
        let mut seen = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < count && Instant::now() < deadline {
            match recv.recv(rx) {
                Ok(n) => {
                    for i in 0..n {
                        seen.push(recv.get(i).expect("datagram i").0.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("recv failed: {e}"),
            }
        }
        seen
    }

    /// Runs that can be coalesced (same address, same length, a shorter last one) and runs
    /// that cannot (a longer datagram after a shorter one, another address, more than 64 in a
    /// row) all arrive as the datagrams that were pushed, each whole and in order.
    #[test]
    fn coalesced_runs_arrive_as_the_datagrams_pushed() {
        let batch = send_plan(SendBatch::new());
        // Loopback on any kernel since 4.18 takes UDP_SEGMENT: no fallback happened.
        assert_eq!(batch.segments(), cfg!(target_os = "linux"));
    }

    #[test]
    fn without_segmentation_the_same_datagrams_arrive() {
        send_plan(SendBatch::new().without_segmentation());
    }

    /// Sends a plan of runs through `batch` and checks what arrives; returns the batch.
    fn send_plan(mut batch: SendBatch) -> SendBatch {
        let (tx, a) = pair();
        let (_, b) = pair();
        let (to_a, to_b) = (
            a.local_addr().expect("addr a"),
            b.local_addr().expect("addr b"),
        );
        let datagram = |n: usize, len: usize| {
            let mut d = vec![n as u8; len];
            d[..4].copy_from_slice(&(n as u32).to_be_bytes());
            d
        };
        let mut plan: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut n = 0;
        let mut add = |plan: &mut Vec<(Vec<u8>, SocketAddr)>, len: usize, to: SocketAddr| {
            plan.push((datagram(n, len), to));
            n += 1;
        };
        for len in [100, 100, 100, 60, 100, 120, 120, 7] {
            add(&mut plan, len, to_a);
        }
        for len in [200, 200, 200] {
            add(&mut plan, len, to_b);
        }
        add(&mut plan, 200, to_a);
        for _ in 0..70 {
            add(&mut plan, 1100, to_b);
        }
        let mut sent = 0;
        for (d, to) in &plan {
            if batch.is_full() {
                sent += batch.flush(&tx).sent;
            }
            batch.push(BytesMut::from(&d[..]), *to);
        }
        let flushed = batch.flush(&tx);
        sent += flushed.sent;
        assert_eq!((sent, flushed.dropped), (plan.len() as u64, 0));

        let expect = |to: SocketAddr| -> Vec<Vec<u8>> {
            plan.iter()
                .filter(|(_, t)| *t == to)
                .map(|(d, _)| d.clone())
                .collect()
        };
        let (want_a, want_b) = (expect(to_a), expect(to_b));
        assert_eq!(receive(&a, want_a.len()), want_a);
        assert_eq!(receive(&b, want_b.len()), want_b);
        batch
    }

    /// One receive batch serves the worker's whole life: each read reports its own senders
    /// and lengths, a datagram too large for a buffer is skipped, and the reads after it are
    /// whole again.
    #[test]
    fn a_reused_receive_batch_reports_each_read_afresh() {
        let (one, rx) = pair();
        let (two, _) = pair();
        let to = rx.local_addr().expect("addr");
        let mut recv = RecvBatch::new();
        let read_one = |recv: &mut RecvBatch| -> Option<(Vec<u8>, SocketAddr)> {
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            loop {
                match recv.recv(&rx) {
                    Ok(0) => return None,
                    Ok(n) => {
                        assert_eq!(n, 1, "one datagram was sent");
                        let (data, from) = recv.get(0).expect("datagram");
                        return Some((data.to_vec(), from));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "nothing arrived");
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("recv failed: {e}"),
                }
            }
        };
        let sends: [(&UdpSocket, usize); 5] = [
            (&one, 10),
            (&two, 1200),
            (&one, RECV_BUF_LEN + 100),
            (&two, 3),
            (&one, RECV_BUF_LEN),
        ];
        for (socket, len) in sends {
            socket.send_to(&vec![len as u8; len], to).expect("send");
            let got = read_one(&mut recv);
            if len > RECV_BUF_LEN {
                assert_eq!(got, None, "a truncated datagram is skipped");
            } else {
                let want = (vec![len as u8; len], socket.local_addr().expect("from"));
                assert_eq!(got, Some(want));
            }
        }
    }

    #[test]
    fn an_empty_socket_would_block() {
        let (_tx, rx) = pair();
        let mut recv = RecvBatch::new();
        let err = recv.recv(&rx).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ipv6_destinations_work_too() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let tx = UdpSocket::bind("[::1]:0").expect("bind v6");
        rx.set_nonblocking(true).expect("nonblocking");
        let mut batch = SendBatch::new();
        batch.push(BytesMut::from(&b"v6"[..]), rx.local_addr().expect("addr"));
        assert_eq!(batch.flush(&tx).sent, 1);
        let mut recv = RecvBatch::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match recv.recv(&rx) {
                Ok(n) if n > 0 => break,
                _ if Instant::now() > deadline => panic!("the v6 datagram never arrived"),
                _ => std::thread::yield_now(),
            }
        }
        let (data, from) = recv.get(0).expect("datagram");
        assert_eq!(
            (data, from),
            (&b"v6"[..], tx.local_addr().expect("tx addr"))
        );
    }
}
