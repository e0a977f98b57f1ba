use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::wire::build::{udp_payload_offset, write_udp_frame, Route};
use crate::wire::offload::{finish_partial_checksum, L4Checksum};
use crate::wire::MacAddr;

fn route(src: &str, dst: &str) -> Route {
    Route {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}

/// A datagram frame as the engine builds it, checksum complete.
fn frame(r: &Route, src_port: u16, payload: &[u8]) -> Vec<u8> {
    let at = udp_payload_offset(r);
    let mut f = vec![0u8; at + payload.len()];
    f[at..].copy_from_slice(payload);
    let n = write_udp_frame(&mut f, r, src_port, 40000, payload.len(), L4Checksum::Full);
    f.truncate(n);
    f
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

/// What the kernel makes of a segmented frame (`__udp_gso_segment` and the IP layer's):
/// datagrams of `segment_size` bytes, each with the headers' lengths set, the IPv4 header
/// checksum redone and the UDP checksum finished (as a receiver sees it).
fn segment_as_the_kernel_does(headers: &[u8], run: &UdpRun, payload: &[u8]) -> Vec<Vec<u8>> {
    let hl = run.header_len;
    let udp = hl - UDP_HEADER_LEN;
    let v4 = udp - ETH_HEADER_LEN == IPV4_HEADER_LEN;
    payload
        .chunks(usize::from(run.segment_size))
        .map(|chunk| {
            let mut f = headers[..hl].to_vec();
            f.extend_from_slice(chunk);
            let udp_len = (UDP_HEADER_LEN + chunk.len()) as u16;
            let ip = ETH_HEADER_LEN;
            let (src, dst): (IpAddr, IpAddr) = if v4 {
                f[ip + 2..ip + 4].copy_from_slice(&(udp_len + 20).to_be_bytes());
                f[ip + 10..ip + 12].fill(0);
                let sum = checksum::of(&f[ip..ip + 20]);
                f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
                let a = |o: usize| <[u8; 4]>::try_from(&f[ip + o..ip + o + 4]).unwrap();
                (a(12).into(), a(16).into())
            } else {
                f[ip + 4..ip + 6].copy_from_slice(&udp_len.to_be_bytes());
                let a = |o: usize| <[u8; 16]>::try_from(&f[ip + o..ip + o + 16]).unwrap();
                (a(8).into(), a(24).into())
            };
            f[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
            let sum = partial_sum(src, dst, ip_proto::UDP, usize::from(udp_len));
            f[udp + 6..udp + 8].copy_from_slice(&sum.to_be_bytes());
            finish_partial_checksum(&mut f);
            f
        })
        .collect()
}

/// Sends `frames` as a tap writer would (runs where [`udp_run`] finds them, the rest one by
/// one) and returns what the device delivers, and the runs.
fn through_the_device(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<UdpRun>) {
    let (mut out, mut runs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < frames.len() {
        match udp_run(frames[i..].iter().map(Vec::as_slice)) {
            Some(run) => {
                let mut headers = [0u8; MAX_HEADER_LEN];
                let at = run_headers(&frames[i], &run, &mut headers).unwrap();
                assert_eq!(usize::from(at.start), run.header_len - UDP_HEADER_LEN);
                assert_eq!(at.offset, 6);
                let payload: Vec<u8> = frames[i..i + run.frames]
                    .iter()
                    .flat_map(|f| f[run.header_len..].iter().copied())
                    .collect();
                assert_eq!(payload.len(), run.payload_len);
                out.extend(segment_as_the_kernel_does(&headers, &run, &payload));
                runs.push(run);
                i += run.frames;
            }
            None => {
                out.push(frames[i].clone());
                i += 1;
            }
        }
    }
    (out, runs)
}

#[test]
fn equal_datagrams_of_one_flow_are_one_run_and_come_out_as_they_went_in() {
    for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
        let r = route(src, dst);
        let frames: Vec<Vec<u8>> = (0..10)
            .map(|i| frame(&r, 53, &payload(if i == 9 { 77 } else { 1400 }, i)))
            .collect();
        let (out, runs) = through_the_device(&frames);
        assert_eq!(runs.len(), 1, "{src}");
        assert_eq!(runs[0].frames, 10);
        assert_eq!(runs[0].segment_size, 1400);
        assert_eq!(runs[0].payload_len, 9 * 1400 + 77);
        assert_eq!(out, frames, "{src}");
    }
}

#[test]
fn what_ends_a_run() {
    let r4 = route("192.0.2.1", "192.0.2.2");
    let big = |seed| frame(&r4, 53, &payload(1000, seed));
    // A shorter datagram ends it (the device cuts equal pieces but for the last).
    let frames = [big(0), frame(&r4, 53, &payload(10, 1)), big(2), big(3)];
    let run = udp_run(frames.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(run.frames, 2);
    // A longer one.
    let frames = [frame(&r4, 53, &payload(10, 1)), big(2)];
    assert_eq!(udp_run(frames.iter().map(Vec::as_slice)), None);
    // Another port, another address, another family.
    for other in [
        frame(&r4, 54, &payload(1000, 1)),
        frame(&route("192.0.2.3", "192.0.2.2"), 53, &payload(1000, 1)),
        frame(&route("2001:db8::1", "2001:db8::2"), 53, &payload(1000, 1)),
    ] {
        let frames = [big(0), other];
        assert_eq!(udp_run(frames.iter().map(Vec::as_slice)), None);
    }
    // A TCP frame, a fragment, IPv4 options, an empty datagram: not runs.
    let mut tcp = big(1);
    tcp[ETH_HEADER_LEN + 9] = ip_proto::TCP;
    let mut fragment = big(1);
    fragment[ETH_HEADER_LEN + 6] |= 0x20;
    let mut options = big(1);
    options[ETH_HEADER_LEN] = 0x46;
    for odd in [tcp, fragment, options] {
        assert_eq!(
            udp_run([big(0), odd.clone()].iter().map(Vec::as_slice)),
            None
        );
        assert_eq!(udp_run([odd, big(0)].iter().map(Vec::as_slice)), None);
    }
    let empty = frame(&r4, 53, &[]);
    assert_eq!(
        udp_run([empty.clone(), empty].iter().map(Vec::as_slice)),
        None
    );
    // Lengths that don't say what the frame holds (Ethernet padding, a lie).
    let mut padded = frame(&r4, 53, &payload(4, 1));
    padded.resize(60, 0);
    assert_eq!(
        udp_run([padded.clone(), padded].iter().map(Vec::as_slice)),
        None
    );
}

#[test]
fn a_run_stays_within_the_segments_and_the_bytes_a_frame_may_carry() {
    let r6 = route("2001:db8::1", "2001:db8::2");
    let small: Vec<Vec<u8>> = (0..200).map(|i| frame(&r6, 53, &payload(100, i))).collect();
    let (out, runs) = through_the_device(&small);
    assert_eq!(out, small);
    assert!(runs.iter().all(|r| r.frames <= MAX_SEGMENTS));
    assert_eq!(runs[0].frames, MAX_SEGMENTS);
    let big: Vec<Vec<u8>> = (0..50).map(|i| frame(&r6, 53, &payload(8000, i))).collect();
    let (out, runs) = through_the_device(&big);
    assert_eq!(out, big);
    assert!(runs
        .iter()
        .all(|r| r.payload_len <= MAX_PAYLOAD && r.frames <= 8));
    assert_eq!(
        runs[0].frames, 8,
        "eight of 8000 bytes fit in 64 KiB, nine don't"
    );
}

fn arb_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let routes = [
        route("192.0.2.1", "192.0.2.2"),
        route("192.0.2.9", "192.0.2.2"),
        route("2001:db8::1", "2001:db8::2"),
    ];
    // A few flows and a few sizes, so that runs form, break and restart.
    proptest::collection::vec(
        (
            0..3usize,
            53..55u16,
            prop_oneof![Just(0usize), Just(1), Just(700), Just(1400), 0..3000usize],
        ),
        0..120,
    )
    .prop_map(move |specs| {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(r, port, len))| frame(&routes[r], port, &payload(len, i)))
            .collect()
    })
}

proptest! {
    /// Whatever the datagrams, sent in runs where they form them they arrive as they were,
    /// in order, each its own size and bytes.
    #[test]
    fn runs_deliver_the_same_datagrams(frames in arb_frames()) {
        let (out, runs) = through_the_device(&frames);
        prop_assert_eq!(out, frames);
        for run in runs {
            prop_assert!(run.frames >= 2 && run.frames <= MAX_SEGMENTS);
            prop_assert!(run.payload_len <= MAX_PAYLOAD);
        }
    }
}
