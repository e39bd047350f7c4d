//! The floor: the least a forwarder must do to move the same packets, measured on this machine.
//!
//! A child process (`confab-loadgen floor-serve`) receives SRTP packets on one UDP socket with
//! `recvmmsg`, decrypts each with its publisher's context, re-encrypts it once per subscriber with
//! that subscriber's context and sends the copies with `sendmmsg`; nothing else (no ICE, DTLS,
//! RTCP, rewriting or bookkeeping). The parent feeds it the scenario's publisher streams at the
//! scenario's rates, drains the subscriber sockets, and reads the child's CPU time from `/proc`
//! exactly as it reads the server's.
//!
//! The publishers also send streams no subscriber gets (simulcast layers no one views, talkers
//! loudest-N holds back), and the server has to read those. The feeder sends them too; the floor
//! reads each and drops it by its SSRC without decrypting it, the least a forwarder can do.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::procfs;

/// The profile Confab negotiates with these clients: rtc offers AEAD_AES_128_GCM first and both
/// ends are rtc.
pub const PROFILE: ProtectionProfile = ProtectionProfile::AeadAes128Gcm;
const SSRC_BASE: u32 = 0x5000_0000;
const BATCH: usize = 64;
/// Receivers' keys are numbered after the publishers'.
const SINK_KEYS: u32 = 1000;
const DATAGRAM_MAX: usize = 1500;

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("srtp: {0}")]
    Srtp(String),
    #[error("{0}")]
    Child(String),
}

fn srtp_err(e: impl std::fmt::Display) -> FloorError {
    FloorError::Srtp(e.to_string())
}

/// Deterministic per-endpoint keys: the floor and its feeder must agree without a handshake.
fn context(endpoint: u32) -> Result<Context, FloorError> {
    let provider = rtc::crypto::default_provider().map_err(srtp_err)?;
    let key: Vec<u8> = (0..PROFILE.key_len())
        .map(|b| (b as u32 ^ endpoint) as u8)
        .collect();
    let salt: Vec<u8> = (0..PROFILE.salt_len())
        .map(|b| (b as u32 + endpoint) as u8)
        .collect();
    Context::new(&key, &salt, PROFILE, None, None, provider.crypto()).map_err(srtp_err)
}

/// What the floor is asked to move.
#[derive(Debug, Clone, Copy)]
pub struct FloorLoad {
    pub streams: u32,
    /// Packets per second per stream.
    pub pps: f64,
    /// Receivers per stream.
    pub fanout: u32,
    /// Subscriber sockets; stream k goes to the `fanout` sinks after sink k.
    pub sinks: u32,
    pub payload: usize,
    /// Streams received and dropped, numbered after the forwarded ones, and their packets per
    /// second each.
    pub unforwarded_streams: u32,
    pub unforwarded_pps: f64,
}

impl FloorLoad {
    /// Packets per second the publishers of stream `stream` send.
    fn rate(&self, stream: u32) -> f64 {
        if stream < self.streams {
            self.pps
        } else {
            self.unforwarded_pps
        }
    }
}

/// The floor's measured cost.
#[derive(Debug, Clone, Copy)]
pub struct FloorResult {
    /// Datagrams the floor was sent, forwarded streams and dropped ones.
    pub received_pps: f64,
    pub forwarded_pps: f64,
    pub cpu_us_per_pkt: f64,
    pub cpu_percent: f64,
}

/// Runs the floor child at `load` for `duration` after a short warm-up and measures it.
pub fn measure(load: FloorLoad, duration: Duration) -> Result<FloorResult, FloorError> {
    let sinks: Vec<UdpSocket> = (0..load.sinks)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<_, std::io::Error>>()?;
    let ports: Vec<String> = sinks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<_, _>>()?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("floor-serve")
        .args(["--streams", &load.streams.to_string()])
        .args(["--fanout", &load.fanout.to_string()])
        .args(["--sinks", &ports.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| FloorError::Child("no stdout".into()))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| FloorError::Child(format!("unexpected first line {line:?}")))?;
    let target = SocketAddr::from(([127, 0, 0, 1], port));

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let fed = Arc::new(AtomicU64::new(0));
    let drain = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::spawn(move || drain_sinks(sinks, &stop, &received))
    };
    let feed = {
        let stop = stop.clone();
        let fed = fed.clone();
        std::thread::spawn(move || feed(load, target, &stop, &fed))
    };

    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    let cpu0 = procfs::cpu_us(pid).unwrap_or(0);
    let got0 = received.load(Ordering::Relaxed);
    let fed0 = fed.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(duration);
    let cpu1 = procfs::cpu_us(pid).unwrap_or(0);
    let got1 = received.load(Ordering::Relaxed);
    let fed1 = fed.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = feed.join();
    let _ = drain.join();
    let _ = child.kill();
    let _ = child.wait();
    let packets = got1.saturating_sub(got0) as f64;
    let cpu = cpu1.saturating_sub(cpu0) as f64;
    Ok(FloorResult {
        received_pps: fed1.saturating_sub(fed0) as f64 / elapsed,
        forwarded_pps: packets / elapsed,
        cpu_us_per_pkt: if packets > 0.0 { cpu / packets } else { 0.0 },
        cpu_percent: cpu / elapsed / 10_000.0,
    })
}

/// Sends every stream's packets at its rate, encrypted as a publisher would; counts them in `fed`.
fn feed(
    load: FloorLoad,
    target: SocketAddr,
    stop: &AtomicBool,
    fed: &AtomicU64,
) -> Result<(), FloorError> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let all = load.streams + load.unforwarded_streams;
    let mut contexts: Vec<Context> = (0..all).map(context).collect::<Result<_, _>>()?;
    let mut seqs = vec![0u16; all as usize];
    let start = Instant::now();
    let mut sent = vec![0u64; all as usize];
    let payload = vec![0x42u8; load.payload];
    let mut plain = Vec::with_capacity(DATAGRAM_MAX);
    while !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed().as_secs_f64();
        let before: u64 = sent.iter().sum();
        for stream in 0..all as usize {
            let due = (elapsed * load.rate(stream as u32)) as u64;
            while sent[stream] < due {
                sent[stream] += 1;
                let packet = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        payload_type: 111,
                        sequence_number: seqs[stream],
                        timestamp: (sent[stream] as u32).wrapping_mul(960),
                        ssrc: SSRC_BASE + stream as u32,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::copy_from_slice(&payload),
                };
                seqs[stream] = seqs[stream].wrapping_add(1);
                plain.clear();
                plain.resize(packet.marshal_size(), 0);
                packet.marshal_to(&mut plain).map_err(srtp_err)?;
                let encrypted = contexts[stream].encrypt_rtp(&plain).map_err(srtp_err)?;
                let _ = socket.send_to(&encrypted, target);
            }
        }
        fed.fetch_add(sent.iter().sum::<u64>() - before, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Counts what reaches the subscriber sockets. The sinks sleep in epoll like the load
/// generator's clients do, so the floor pays the same receiver wake-ups the server pays.
fn drain_sinks(sinks: Vec<UdpSocket>, stop: &AtomicBool, received: &AtomicU64) {
    let Ok(mut poll) = mio::Poll::new() else {
        return;
    };
    let mut sinks: Vec<mio::net::UdpSocket> = sinks
        .into_iter()
        .map(mio::net::UdpSocket::from_std)
        .collect();
    for (i, sink) in sinks.iter_mut().enumerate() {
        if poll
            .registry()
            .register(sink, mio::Token(i), mio::Interest::READABLE)
            .is_err()
        {
            return;
        }
    }
    let mut events = mio::Events::with_capacity(256);
    let mut buf = [0u8; DATAGRAM_MAX];
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            continue;
        }
        let mut got = 0;
        for event in events.iter() {
            let Some(sink) = sinks.get(event.token().0) else {
                continue;
            };
            loop {
                match sink.recv(&mut buf) {
                    Ok(_) => got += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        received.fetch_add(got, Ordering::Relaxed);
    }
}

/// The child: forwards until its stdin closes.
pub fn serve(streams: u32, fanout: u32, sinks: &[SocketAddr]) -> Result<(), FloorError> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    println!("port {}", socket.local_addr()?.port());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            stop.store(true, Ordering::Relaxed);
        });
    }
    forward(&socket, streams, fanout, sinks, &stop)
}

/// The floor's loop: decrypt each packet once, encrypt it once per receiver, send in batches. A
/// packet of a stream it does not forward is dropped by its SSRC, not decrypted.
fn forward(
    socket: &UdpSocket,
    streams: u32,
    fanout: u32,
    sinks: &[SocketAddr],
    stop: &AtomicBool,
) -> Result<(), FloorError> {
    if sinks.is_empty() {
        return Err(FloorError::Child("no sinks".into()));
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut inbound: Vec<Context> = (0..streams).map(context).collect::<Result<_, _>>()?;
    let mut outbound: Vec<Context> = (0..sinks.len() as u32)
        .map(|s| context(SINK_KEYS + s))
        .collect::<Result<_, _>>()?;
    let mut rx = MmsgBatch::new(BATCH);
    let mut tx = MmsgBatch::new(BATCH);
    let n_sinks = sinks.len();
    while !stop.load(Ordering::Relaxed) {
        let n = rx.recv(socket);
        for i in 0..n {
            let datagram = rx.datagram(i);
            let Some(ssrc) = datagram.get(8..12) else {
                continue;
            };
            let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
            let Some(stream) = ssrc.checked_sub(SSRC_BASE).map(|s| s as usize) else {
                continue;
            };
            let Some(ctx) = inbound.get_mut(stream) else {
                continue;
            };
            let Ok(plain) = ctx.decrypt_rtp(datagram) else {
                continue;
            };
            for k in 0..fanout as usize {
                let sink = (stream + 1 + k) % n_sinks;
                let Ok(out) = outbound[sink].encrypt_rtp(&plain) else {
                    continue;
                };
                tx.push(&out, sinks[sink]);
                if tx.is_full() {
                    tx.send(socket);
                }
            }
        }
        tx.send(socket);
    }
    Ok(())
}

/// Buffers for `recvmmsg`/`sendmmsg`.
struct MmsgBatch {
    bufs: Vec<[u8; DATAGRAM_MAX]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    used: usize,
}

impl MmsgBatch {
    fn new(n: usize) -> Self {
        // SAFETY: sockaddr_in and mmsghdr are plain C structs for which all-zero is valid.
        let zero_addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            bufs: vec![[0u8; DATAGRAM_MAX]; n],
            lens: vec![0; n],
            addrs: vec![zero_addr; n],
            iovecs: Vec::with_capacity(n),
            headers: vec![zero_hdr; n],
            used: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.used == self.bufs.len()
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Points the headers at the buffers (the vectors never move after `new`).
    fn prepare(&mut self, count: usize, lens: bool) {
        self.iovecs.clear();
        for i in 0..count {
            let len = if lens { self.lens[i] } else { DATAGRAM_MAX };
            self.iovecs.push(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for i in 0..count {
            let hdr = &mut self.headers[i];
            hdr.msg_hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_len = 0;
        }
    }

    /// Blocks (up to the socket's read timeout) for at least one datagram; returns how many.
    fn recv(&mut self, socket: &UdpSocket) -> usize {
        let n = self.bufs.len();
        self.prepare(n, false);
        // SAFETY: headers point at live buffers owned by self, sized as declared.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(got).unwrap_or(0);
        for i in 0..got {
            self.lens[i] = self.headers[i].msg_len as usize;
        }
        got
    }

    fn push(&mut self, datagram: &[u8], to: SocketAddr) {
        let i = self.used;
        let len = datagram.len().min(DATAGRAM_MAX);
        self.bufs[i][..len].copy_from_slice(&datagram[..len]);
        self.lens[i] = len;
        if let SocketAddr::V4(v4) = to {
            self.addrs[i] = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
        }
        self.used += 1;
    }

    fn send(&mut self, socket: &UdpSocket) {
        let count = self.used;
        if count == 0 {
            return;
        }
        self.prepare(count, true);
        let mut done = 0;
        while done < count {
            // SAFETY: as in `recv`; the first `count` headers are filled.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[done..].as_mut_ptr(),
                    (count - done) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(sent) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor forwards real SRTP: every receiver can decrypt what it gets with its own keys,
    /// and gets each of its streams' packets once; a stream it does not forward reaches no one.
    #[test]
    fn each_receiver_decrypts_its_copies() {
        let floor = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let target = floor.local_addr().expect("addr");
        let sinks: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let addrs: Vec<SocketAddr> = sinks
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarding = {
            let stop = stop.clone();
            let addrs = addrs.clone();
            std::thread::spawn(move || forward(&floor, 2, 2, &addrs, &stop))
        };
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Streams 0 and 1 are forwarded, stream 2 is not.
        let mut publishers: Vec<Context> = (0..3).map(|i| context(i).expect("ctx")).collect();
        for seq in 0..5u16 {
            for (stream, ctx) in publishers.iter_mut().enumerate() {
                let packet = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        payload_type: 111,
                        sequence_number: seq,
                        ssrc: SSRC_BASE + stream as u32,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from_static(&[7u8; 40]),
                };
                let mut plain = vec![0u8; packet.marshal_size()];
                packet.marshal_to(&mut plain).expect("marshal");
                let encrypted = ctx.encrypt_rtp(&plain).expect("encrypt");
                sender.send_to(&encrypted, target).expect("send");
            }
        }
        // Stream 0 goes to sinks 1 and 2, stream 1 to sinks 2 and 0.
        let expected = [5, 5, 10];
        let mut buf = [0u8; DATAGRAM_MAX];
        for (i, sink) in sinks.iter().enumerate() {
            sink.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut ctx = context(SINK_KEYS + i as u32).expect("ctx");
            for _ in 0..expected[i] {
                let n = sink.recv(&mut buf).expect("a forwarded packet");
                let plain = ctx
                    .decrypt_rtp(&buf[..n])
                    .expect("decrypts with the sink's keys");
                assert_eq!(&plain[plain.len() - 40..], &[7u8; 40][..]);
            }
        }
        stop.store(true, Ordering::Relaxed);
        forwarding.join().expect("thread").expect("the floor ran");
        for sink in &sinks {
            sink.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            assert!(sink.recv(&mut buf).is_err(), "no extra copies");
        }
    }
}
