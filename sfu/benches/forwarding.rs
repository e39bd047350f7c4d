//! The per-packet forwarding path: one publisher packet fanned out to 49 subscriber legs.
//!
//! Each case does, per packet, what the worker does per leg (see `forward` in `src/worker.rs`):
//! the cached payload-type lookup, the `Forwarder` rewrite of sequence number and timestamp, and
//! the leg's RTP header with its own SSRC. Then:
//!
//! - `rewrite`: the header is marshalled into a reused buffer (no SRTP);
//! - `srtp_aes_cm_80` / `srtp_aead_gcm`: header and payload are marshalled into a reused buffer
//!   and protected with rtc's SRTP, one context per leg, as rtc's own SRTP handler does it
//!   (`Context::encrypt_rtp`, which re-parses the header and returns a new buffer).
//!
//! What is left out on purpose: rtc's egress chain (interceptors, handler queues) and the socket
//! send, which the engine notes measure separately and which dominate a real forwarded packet.
//!
//! Two payload sizes: an Opus-sized audio packet and an MTU-sized VP8 packet.
//!
//! A second group, `vp8_49`, isolates what simulcast adds per leg for an MTU-sized VP8 packet
//! with a picture id and TL0PICIDX: `plain` is the header rewrite plus a shared payload;
//! `vp8_untouched` also parses the payload descriptor of a leg that never switched layers (its
//! payload stays shared); `vp8_rewritten` is a leg that switched, whose payload is copied into
//! a new buffer and gets new ids. Forwarded packets are kept for a while (the last 1024, as the
//! per-leg NACK buffers the engine used before `repair` kept them), so the allocator sees a
//! long lifetime; in the engine today a rewritten copy lives only until it is sent.
//!
//! Run with `cargo bench -p confab-sfu --bench forwarding`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::collections::VecDeque;

use confab_sfu::bench_support::{Forwarder, Vp8Rewriter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// Subscribers per published track: a 50-person call.
const LEGS: usize = 49;
/// The publisher's SSRC and payload type; each leg has its own SSRC and payload type.
const SOURCE_SSRC: u32 = 0x5eed_0001;
const SOURCE_PT: u8 = 96;
const LEG_PT: u8 = 102;

/// One publisher packet as the worker receives it from the core: header extensions present
/// (the forwarder drops them), payload shared.
fn source_packet(payload_len: usize) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker: true,
            payload_type: SOURCE_PT,
            sequence_number: 1000,
            timestamp: 90_000,
            ssrc: SOURCE_SSRC,
            ..Default::default()
        },
        payload: Bytes::from(vec![0xab; payload_len]),
    }
}

/// One subscriber leg: its forwarder, and its SRTP context when the case protects.
struct Leg {
    forwarder: Forwarder,
    srtp: Option<Context>,
}

fn legs(profile: Option<ProtectionProfile>) -> Vec<Leg> {
    let provider = rtc::crypto::default_provider().expect("a built-in crypto provider");
    (0..LEGS)
        .map(|i| {
            let i = u32::try_from(i).expect("few legs");
            let mut forwarder = Forwarder::new(0x1000_0000 + i, 90_000);
            forwarder.set_payload_type(SOURCE_PT, LEG_PT);
            let srtp = profile.map(|profile| {
                // Distinct keys per leg, as each subscriber's DTLS handshake gives.
                let key: Vec<u8> = (0..profile.key_len()).map(|b| b as u8 ^ i as u8).collect();
                let salt: Vec<u8> = (0..profile.salt_len()).map(|b| b as u8 + 1).collect();
                Context::new(&key, &salt, profile, None, None, provider.crypto())
                    .expect("an SRTP context")
            });
            Leg { forwarder, srtp }
        })
        .collect()
}

/// The per-leg work shared by every case: payload type, rewrite and the leg's header.
#[inline]
fn rewrite_header(leg: &mut Leg, packet: &rtp::Packet, now: Instant) -> rtp::Header {
    let pt = leg
        .forwarder
        .payload_type(packet.header.payload_type)
        .expect("payload type resolved at setup");
    leg.forwarder.leg_header(&packet.header, pt, now)
}

/// Forwards one packet to every leg; returns the bytes produced, so nothing is optimised away.
fn fan_out(legs: &mut [Leg], packet: &rtp::Packet, buf: &mut [u8]) -> usize {
    let now = Instant::now();
    let mut total = 0;
    for leg in legs.iter_mut() {
        let header = rewrite_header(leg, packet, now);
        let header_len = header.marshal_to(buf).expect("buffer fits a header");
        match leg.srtp.as_mut() {
            None => total += header_len,
            Some(ctx) => {
                let len = header_len + packet.payload.len();
                buf[header_len..len].copy_from_slice(&packet.payload);
                let protected = ctx.encrypt_rtp(&buf[..len]).expect("SRTP protect");
                total += protected.len();
            }
        }
    }
    total
}

fn forwarding(c: &mut Criterion) {
    let cases: [(&str, Option<ProtectionProfile>); 3] = [
        ("rewrite", None),
        (
            "srtp_aes_cm_80",
            Some(ProtectionProfile::Aes128CmHmacSha1_80),
        ),
        ("srtp_aead_gcm", Some(ProtectionProfile::AeadAes128Gcm)),
    ];
    let sizes = [("audio_120B", 120), ("video_1100B", 1100)];

    let mut group = c.benchmark_group("fanout49");
    // One element per leg, so criterion's throughput is forwarded packets (legs) per second.
    group.throughput(Throughput::Elements(LEGS as u64));
    for (size_name, payload_len) in sizes {
        for (case, profile) in cases {
            let mut legs = legs(profile);
            let mut packet = source_packet(payload_len);
            let mut buf = vec![0u8; 1500];
            // Sanity: the header is the plain 12 bytes once extensions are dropped.
            let header = rewrite_header(&mut legs[0], &packet, Instant::now());
            assert_eq!(header.marshal_size(), 12);
            group.bench_function(BenchmarkId::new(case, size_name), |b| {
                b.iter(|| {
                    // The publisher's stream advances, as it does live: the forwarder stays on
                    // its steady path and each SRTP context sees a new index.
                    packet.header.sequence_number = packet.header.sequence_number.wrapping_add(1);
                    packet.header.timestamp = packet.header.timestamp.wrapping_add(3000);
                    black_box(fan_out(&mut legs, black_box(&packet), &mut buf))
                });
            });
        }
    }
    group.finish();
}

/// A frame-start VP8 payload with a 15-bit picture id and TL0PICIDX.
fn vp8_payload(picture_id: u16, tl0: u8, len: usize) -> Bytes {
    let [hi, lo] = picture_id.to_be_bytes();
    let mut p = vec![0x90, 0xe0, 0x80 | hi, lo, tl0, 0x20, 0x01, 0x00, 0x00];
    p.resize(len, 0xab);
    Bytes::from(p)
}

fn vp8(c: &mut Criterion) {
    let mut group = c.benchmark_group("vp8_49");
    group.throughput(Throughput::Elements(LEGS as u64));
    for case in ["plain", "vp8_untouched", "vp8_rewritten"] {
        let mut legs = legs(None);
        let mut rewriters: Vec<Vp8Rewriter> = (0..LEGS).map(|_| Vp8Rewriter::default()).collect();
        if case == "vp8_rewritten" {
            // Each leg forwarded another layer before, so its offsets are not zero.
            let before = vp8_payload(9_000, 200, 1100);
            for r in &mut rewriters {
                r.rewrite(SOURCE_SSRC ^ 1, &before);
            }
        }
        let mut packet = source_packet(0);
        packet.payload = vp8_payload(40, 3, 1100);
        let mut kept: VecDeque<rtp::Packet> = VecDeque::with_capacity(1024);
        group.bench_function(BenchmarkId::new(case, "video_1100B"), |b| {
            b.iter(|| {
                packet.header.sequence_number = packet.header.sequence_number.wrapping_add(1);
                packet.header.timestamp = packet.header.timestamp.wrapping_add(3000);
                let now = Instant::now();
                let mut total = 0;
                for (leg, r) in legs.iter_mut().zip(rewriters.iter_mut()) {
                    let header = rewrite_header(leg, &packet, now);
                    let payload = if case == "plain" {
                        packet.payload.clone()
                    } else {
                        r.rewrite(SOURCE_SSRC, &packet.payload)
                    };
                    total += payload.len();
                    if kept.len() == kept.capacity() {
                        kept.pop_front();
                    }
                    kept.push_back(rtp::Packet { header, payload });
                }
                black_box(total)
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = forwarding, vp8
}
criterion_main!(benches);
