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

/// One datagram read: its length, its sender and, when the kernel stamped it, when it arrived
/// (on the realtime clock, which is the one socket stamps use).
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub arrived: Option<SystemTime>,
}

/// Reads one datagram into `buf` without blocking (`WouldBlock` when the socket is empty).
pub fn recv(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = SockAddrStorage::zeroed();
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut header: libc::msghdr = unsafe { zeroed() };
    // SAFETY: socket2's storage is a `sockaddr_storage`.
    header.msg_name =
        (unsafe { addr.view_as::<libc::sockaddr_storage>() } as *mut libc::sockaddr_storage).cast();
    header.msg_namelen = addr.size_of();
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = control.0.len() as _;
    // SAFETY: the header points at `addr`, `iov` (into `buf`) and `control`, all of which
    // outlive the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address into `addr`.
    let from = unsafe { SockAddr::new(addr, header.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP sender"))?;
    let mut arrived = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control`; the CMSG macros walk
    // within them, and a SCM_TIMESTAMPNS message carries one `timespec`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                arrived = realtime(ts);
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        from,
        arrived,
    })
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
        let mut buf = [0u8; 64];
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
            let got = recv(&rx, &mut buf).expect("a datagram");
            assert_eq!(&buf[..got.len], b"stamped");
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

        let err = recv(&rx, &mut buf).err().expect("nothing more");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
