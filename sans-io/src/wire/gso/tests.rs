use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::wire::build::{udp_payload_offset, write_udp_frame, Route};
use crate::wire::offload::{finish_partial_checksum, left_partial, L4Checksum};
use crate::wire::tcp::{self as wtcp, Header};

/// A datagram frame as the engine builds it, checksum complete.
fn udp(r: &Route, src_port: u16, payload: &[u8]) -> Vec<u8> {
    let at = udp_payload_offset(r);
    let mut f = vec![0u8; at + payload.len()];
    f[at..].copy_from_slice(payload);
    let n = write_udp_frame(&mut f, r, src_port, 40000, payload.len(), L4Checksum::Full);
    f.truncate(n);
    f
}

/// A TCP segment as the engine builds it, checksum complete.
fn tcp(r: &Route, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let h = Header {
        src_port: 80,
        dst_port: 40000,
        seq,
        ack: 7777,
        flags,
        window: 512,
        mss: None,
        wscale: None,
    };
    let at = wtcp::payload_offset(r, &h);
    let mut f = vec![0u8; at + payload.len()];
    f[at..].copy_from_slice(payload);
    let n = wtcp::write_frame(&mut f, r, &h, payload.len(), L4Checksum::Full);
    f.truncate(n);
    f
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

/// What the kernel makes of a segmented frame (`__udp_gso_segment`, `tcp_gso_segment` and
/// the IP layer's): pieces of `segment_size` bytes, each with the headers' lengths set, the
/// IPv4 header checksum redone, TCP's sequence number advanced and PSH on the last only, and
/// the transport checksum finished (as a receiver sees it).
fn segment_as_the_kernel_does(headers: &[u8], run: &Run, payload: &[u8]) -> Vec<Vec<u8>> {
    let hl = run.header_len;
    let ip = ETH_HEADER_LEN;
    let l4 = ip + if run.ipv6 { 40 } else { 20 };
    let chunks: Vec<&[u8]> = payload.chunks(usize::from(run.segment_size)).collect();
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = headers[..hl].to_vec();
            f.extend_from_slice(chunk);
            let l4_len = (hl - l4 + chunk.len()) as u16;
            let (src, dst): (IpAddr, IpAddr) = if run.ipv6 {
                f[ip + 4..ip + 6].copy_from_slice(&l4_len.to_be_bytes());
                let a = |o: usize| <[u8; 16]>::try_from(&f[ip + o..ip + o + 16]).unwrap();
                (a(8).into(), a(24).into())
            } else {
                f[ip + 2..ip + 4].copy_from_slice(&(l4_len + 20).to_be_bytes());
                f[ip + 10..ip + 12].fill(0);
                let sum = checksum::of(&f[ip..ip + 20]);
                f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
                let a = |o: usize| <[u8; 4]>::try_from(&f[ip + o..ip + o + 4]).unwrap();
                (a(12).into(), a(16).into())
            };
            let (protocol, field) = match run.transport {
                Transport::Udp => {
                    f[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
                    (ip_proto::UDP, 6)
                }
                Transport::Tcp => {
                    let seq =
                        tcp_seq(&f, l4).wrapping_add((i * usize::from(run.segment_size)) as u32);
                    f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                    if i + 1 < count {
                        f[l4 + 13] &= !flags::PSH;
                    }
                    (ip_proto::TCP, 16)
                }
            };
            let sum = partial_sum(src, dst, protocol, usize::from(l4_len));
            f[l4 + field..l4 + field + 2].copy_from_slice(&sum.to_be_bytes());
            finish_partial_checksum(&mut f);
            f
        })
        .collect()
}

/// `frames` as a receiver should see them after the device: a TCP run's PSH on its last
/// segment only.
fn as_delivered(frames: &[Vec<u8>], runs: &[(usize, Run)]) -> Vec<Vec<u8>> {
    let mut want = frames.to_vec();
    for &(at, r) in runs.iter().filter(|(_, r)| r.transport == Transport::Tcp) {
        let l4 = ETH_HEADER_LEN + if r.ipv6 { 40 } else { 20 };
        for f in &mut want[at..at + r.frames - 1] {
            if f[l4 + 13] & flags::PSH != 0 {
                f[l4 + 13] &= !flags::PSH;
                finish_partial_checksum_of_ours(f, l4);
            }
        }
    }
    want
}

/// Sends `frames` as a tap writer would (runs where [`run`] finds them, the rest one by one)
/// and returns what the device delivers, what it should (see [`as_delivered`]), and the runs.
fn through_the_device(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Run>) {
    let (mut out, mut runs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < frames.len() {
        match run(frames[i..].iter().map(Vec::as_slice)) {
            Some(r) => {
                let mut headers = [0u8; MAX_HEADER_LEN];
                let last = &frames[i + r.frames - 1];
                let at = run_headers(&frames[i], last, &r, &mut headers).unwrap();
                let (l4, field) = match r.transport {
                    Transport::Udp => (r.header_len - UDP_HEADER_LEN, 6),
                    Transport::Tcp => (ETH_HEADER_LEN + if r.ipv6 { 40 } else { 20 }, 16),
                };
                assert_eq!(usize::from(at.start), l4);
                assert_eq!(at.offset, field);
                let payload: Vec<u8> = frames[i..i + r.frames]
                    .iter()
                    .flat_map(|f| f[r.header_len..].iter().copied())
                    .collect();
                assert_eq!(payload.len(), r.payload_len);
                out.extend(segment_as_the_kernel_does(&headers, &r, &payload));
                runs.push((i, r));
                i += r.frames;
            }
            None => {
                out.push(frames[i].clone());
                i += 1;
            }
        }
    }
    let want = as_delivered(frames, &runs);
    (out, want, runs.into_iter().map(|(_, r)| r).collect())
}

#[test]
fn equal_datagrams_of_one_flow_are_one_run_and_come_out_as_they_went_in() {
    for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
        let r = Route::between(src, dst);
        let frames: Vec<Vec<u8>> = (0..10)
            .map(|i| udp(&r, 53, &payload(if i == 9 { 77 } else { 1400 }, i)))
            .collect();
        let (out, want, runs) = through_the_device(&frames);
        assert_eq!(out, want);
        assert_eq!(runs.len(), 1, "{src}");
        assert_eq!(runs[0].transport, Transport::Udp);
        assert_eq!(runs[0].frames, 10);
        assert_eq!(runs[0].segment_size, 1400);
        assert_eq!(runs[0].payload_len, 9 * 1400 + 77);
        assert_eq!(out, frames, "{src}");
    }
}

#[test]
fn segments_in_sequence_are_one_run_and_come_out_as_they_went_in() {
    for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
        let r = Route::between(src, dst);
        let mut seq = 1000u32;
        // As the engine sends them: PSH on every one.
        let frames: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                let len = if i == 19 { 300 } else { 1460 };
                let f = tcp(&r, seq, flags::ACK | flags::PSH, &payload(len, i));
                seq = seq.wrapping_add(len as u32);
                f
            })
            .collect();
        let (out, want, runs) = through_the_device(&frames);
        assert_eq!(out, want, "{src}");
        let psh = |f: &[u8]| f[f.len() - 300 - 20 + 13] & flags::PSH != 0;
        assert!(psh(&out[19]), "PSH on the last");
        let l4 = ETH_HEADER_LEN + if src.contains(':') { 40 } else { 20 };
        assert!(out[..19].iter().all(|f| f[l4 + 13] & flags::PSH == 0));
        assert_eq!(runs.len(), 1, "{src}");
        assert_eq!(runs[0].transport, Transport::Tcp);
        assert_eq!(runs[0].ipv6, src.contains(':'));
        assert_eq!(runs[0].frames, 20);
        assert_eq!(runs[0].segment_size, 1460);
    }
}

#[test]
fn what_ends_a_run() {
    let r4 = Route::between("192.0.2.1", "192.0.2.2");
    let big = |seed| udp(&r4, 53, &payload(1000, seed));
    let runs = |frames: &[Vec<u8>]| run(frames.iter().map(Vec::as_slice));
    // A shorter datagram ends it (the device cuts equal pieces but for the last).
    let r = runs(&[big(0), udp(&r4, 53, &payload(10, 1)), big(2), big(3)]).unwrap();
    assert_eq!(r.frames, 2);
    // A longer one.
    assert_eq!(runs(&[udp(&r4, 53, &payload(10, 1)), big(2)]), None);
    // Another port, another address, another family.
    for other in [
        udp(&r4, 54, &payload(1000, 1)),
        udp(
            &Route::between("192.0.2.3", "192.0.2.2"),
            53,
            &payload(1000, 1),
        ),
        udp(
            &Route::between("2001:db8::1", "2001:db8::2"),
            53,
            &payload(1000, 1),
        ),
    ] {
        assert_eq!(runs(&[big(0), other]), None);
    }
    // A fragment, IPv4 options, an empty datagram: not runs.
    let mut fragment = big(1);
    fragment[ETH_HEADER_LEN + 6] |= 0x20;
    let mut options = big(1);
    options[ETH_HEADER_LEN] = 0x46;
    for odd in [fragment, options] {
        assert_eq!(runs(&[big(0), odd.clone()]), None);
        assert_eq!(runs(&[odd, big(0)]), None);
    }
    let empty = udp(&r4, 53, &[]);
    assert_eq!(runs(&[empty.clone(), empty]), None);
    // Lengths that don't say what the frame holds (Ethernet padding).
    let mut padded = udp(&r4, 53, &payload(4, 1));
    padded.resize(60, 0);
    assert_eq!(runs(&[padded.clone(), padded]), None);

    // TCP: a gap in the sequence, another acknowledgement or window, a flag but ACK and PSH,
    // PSH before the last, a datagram among segments.
    let seg = |seq: u32, flags: u8| tcp(&r4, seq, flags, &payload(1000, seq as usize));
    assert_eq!(
        runs(&[seg(0, flags::ACK), seg(1000, flags::ACK)])
            .unwrap()
            .frames,
        2
    );
    assert_eq!(runs(&[seg(0, flags::ACK), seg(1001, flags::ACK)]), None);
    let mut other_ack = seg(1000, flags::ACK);
    other_ack[ETH_HEADER_LEN + 20 + 8] ^= 1;
    let mut other_window = seg(1000, flags::ACK);
    other_window[ETH_HEADER_LEN + 20 + 14] ^= 1;
    for odd in [
        other_ack,
        other_window,
        seg(1000, flags::ACK | flags::FIN),
        big(1),
    ] {
        assert_eq!(runs(&[seg(0, flags::ACK), odd]), None);
    }
    let r = runs(&[
        seg(0, flags::ACK | flags::PSH),
        seg(1000, flags::ACK | flags::PSH),
        seg(2000, flags::ACK),
    ])
    .unwrap();
    assert_eq!(r.frames, 3, "PSH is the device's to place");
    // Pure ACKs are not data to cut.
    assert_eq!(
        runs(&[tcp(&r4, 0, flags::ACK, &[]), seg(0, flags::ACK)]),
        None
    );
}

#[test]
fn a_run_stays_within_the_segments_and_the_bytes_a_packet_may_carry() {
    let r6 = Route::between("2001:db8::1", "2001:db8::2");
    let small: Vec<Vec<u8>> = (0..200).map(|i| udp(&r6, 53, &payload(100, i))).collect();
    let (out, _, runs) = through_the_device(&small);
    assert_eq!(out, small);
    assert!(runs.iter().all(|r| r.frames <= MAX_SEGMENTS));
    assert_eq!(runs[0].frames, MAX_SEGMENTS);
    let big: Vec<Vec<u8>> = (0..50).map(|i| udp(&r6, 53, &payload(8000, i))).collect();
    let (out, _, runs) = through_the_device(&big);
    assert_eq!(out, big);
    assert!(runs.iter().all(|r| r.frames <= 8));
    assert_eq!(
        runs[0].frames, 8,
        "eight of 8000 bytes fit in 64 KiB, nine don't"
    );
    // Segments of 64 KiB (the MTU pasta offers) never make a run.
    let r4 = Route::between("192.0.2.1", "192.0.2.2");
    let jumbo = [0u32, 65_000].map(|seq| tcp(&r4, seq, flags::ACK, &payload(65_000, 1)));
    assert_eq!(run(jumbo.iter().map(Vec::as_slice)), None);
}

fn arb_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let routes = [
        Route::between("192.0.2.1", "192.0.2.2"),
        Route::between("192.0.2.9", "192.0.2.2"),
        Route::between("2001:db8::1", "2001:db8::2"),
    ];
    // A few flows and a few sizes, so that runs form, break and restart; TCP segments of a
    // flow follow on from its last one, or skip ahead.
    let sizes = prop_oneof![Just(0usize), Just(1), Just(700), Just(1400), 0..3000usize];
    proptest::collection::vec(
        (0..3usize, 0..2u8, 53..55u16, sizes, any::<bool>(), 0..8u8),
        0..120,
    )
    .prop_map(move |specs| {
        let mut next_seq = [[0u32; 2]; 3];
        specs
            .iter()
            .enumerate()
            .map(|(i, &(r, kind, port, len, psh, skip))| {
                let p = payload(len, i);
                if kind == 0 {
                    return udp(&routes[r], port, &p);
                }
                let seq = &mut next_seq[r][usize::from(port == 54)];
                if skip == 0 {
                    *seq = seq.wrapping_add(1000);
                }
                let flags = if psh {
                    flags::ACK | flags::PSH
                } else {
                    flags::ACK
                };
                let mut f = tcp(&routes[r], *seq, flags, &p);
                *seq = seq.wrapping_add(len as u32);
                // The port stands for the flow here.
                let l4 = ETH_HEADER_LEN + if r == 2 { 40 } else { 20 };
                f[l4..l4 + 2].copy_from_slice(&port.to_be_bytes());
                finish_partial_checksum_of_ours(&mut f, l4);
                f
            })
            .collect()
    })
}

/// Redoes a TCP checksum after a test changed a header field.
fn finish_partial_checksum_of_ours(f: &mut [u8], l4: usize) {
    let (src, dst, protocol) = addresses(f).unwrap();
    f[l4 + 16..l4 + 18].fill(0);
    let sum = checksum::transport(src, dst, protocol, &f[l4..]);
    f[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
}

proptest! {
    /// Whatever the frames, sent in runs where they form them they arrive as they were, in
    /// order, each its own size, sequence number and bytes, with PSH where the device puts it.
    #[test]
    fn runs_deliver_the_same_frames(frames in arb_frames()) {
        let (out, want, runs) = through_the_device(&frames);
        prop_assert_eq!(out, want);
        for r in runs {
            prop_assert!(r.frames >= 2 && r.frames <= MAX_SEGMENTS);
            prop_assert!(r.header_len - ETH_HEADER_LEN + r.payload_len <= MAX_IP_PACKET);
        }
    }
}

/// The one frame a device hands over for the UDP run `frames` (what [`run`] finds at their
/// start): their headers with the whole's lengths and the pseudo-header sum, then every
/// payload, then `padding` bytes of the link's. With the run.
fn uso_frame(frames: &[Vec<u8>], padding: usize) -> (Vec<u8>, Run) {
    let r = run(frames.iter().map(Vec::as_slice)).expect("a run");
    assert_eq!(r.transport, Transport::Udp);
    let mut headers = [0u8; MAX_HEADER_LEN];
    run_headers(&frames[0], &frames[r.frames - 1], &r, &mut headers).unwrap();
    let mut whole = headers[..r.header_len].to_vec();
    for f in &frames[..r.frames] {
        whole.extend_from_slice(&f[r.header_len..]);
    }
    whole.resize(whole.len() + padding, 0xee);
    (whole, r)
}

/// `frames` as a device that cut their run would have sent them: IPv4 identifications one
/// more each from the first's (header checksums redone), checksums complete.
fn as_cut_by_the_device(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let ip = ETH_HEADER_LEN;
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut f = f.clone();
            if u16::from_be_bytes([f[12], f[13]]) == ethertype::IPV4 {
                let id = u16::from_be_bytes([frames[0][ip + 4], frames[0][ip + 5]])
                    .wrapping_add(i as u16);
                f[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
                f[ip + 10..ip + 12].fill(0);
                let sum = checksum::of(&f[ip..ip + IPV4_HEADER_LEN]);
                f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
            }
            f
        })
        .collect()
}

/// What [`cut_udp_run`] makes of `whole`, checksums finished as a capture shows them.
fn cut(whole: &[u8], segment_size: usize) -> Option<Vec<Vec<u8>>> {
    let (mut out, mut lens) = (Vec::new(), Vec::new());
    let count = cut_udp_run(whole, segment_size, &mut out, &mut lens)?;
    assert_eq!(count, lens.len());
    assert_eq!(lens.iter().sum::<usize>(), out.len());
    let mut at = 0;
    Some(
        lens.iter()
            .map(|&len| {
                let mut f = out[at..at + len].to_vec();
                at += len;
                assert!(
                    left_partial(&f),
                    "the UDP checksum is left as the device leaves it"
                );
                finish_partial_checksum(&mut f);
                f
            })
            .collect(),
    )
}

#[test]
fn a_run_handed_over_whole_is_cut_into_the_datagrams_it_was_made_of() {
    for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
        let r = Route::between(src, dst);
        let frames: Vec<Vec<u8>> = (0..40)
            .map(|i| udp(&r, 443, &payload(if i == 39 { 5 } else { 1350 }, i)))
            .collect();
        // Ethernet pads nothing this long, but a link may add bytes past the IP packet.
        for padding in [0, 6] {
            let (whole, run) = uso_frame(&frames, padding);
            assert_eq!(run.frames, 40);
            assert_eq!(
                cut(&whole, 1350),
                Some(as_cut_by_the_device(&frames)),
                "{src}"
            );
        }
    }
}

#[test]
fn a_run_of_one_datagram_or_of_empty_ones_is_cut_too() {
    let r = Route::between("192.0.2.1", "192.0.2.2");
    let one = udp(&r, 443, &payload(700, 1));
    // A segment size at least the payload: the frame is its one datagram.
    for size in [700, 1400] {
        assert_eq!(cut(&one, size), Some(vec![one.clone()]));
    }
    let empty = udp(&r, 443, &[]);
    assert_eq!(cut(&empty, 1400), Some(vec![empty.clone()]));
}

#[test]
fn what_is_no_run_to_cut() {
    let r4 = Route::between("192.0.2.1", "192.0.2.2");
    let r6 = Route::between("2001:db8::1", "2001:db8::2");
    let frames: Vec<Vec<u8>> = (0..4).map(|i| udp(&r4, 443, &payload(1000, i))).collect();
    let (whole, _) = uso_frame(&frames, 0);
    assert!(cut(&whole, 1000).is_some());
    // No segment size.
    assert_eq!(cut(&whole, 0), None);
    // More datagrams than a kernel sends in one.
    let big = udp(&r4, 443, &payload(MAX_CUT_SEGMENTS + 1, 0));
    assert_eq!(cut(&big, 1), None);
    assert!(cut(&big, 2).is_some());
    // A fragment.
    let mut fragment = whole.clone();
    fragment[ETH_HEADER_LEN + 6] |= 0x20;
    assert_eq!(cut(&fragment, 1000), None);
    // Lengths past the frame's end, or short of the UDP header.
    for total in [whole.len() - ETH_HEADER_LEN + 1, IPV4_HEADER_LEN + 7] {
        let mut bad = whole.clone();
        bad[ETH_HEADER_LEN + 2..ETH_HEADER_LEN + 4].copy_from_slice(&(total as u16).to_be_bytes());
        assert_eq!(cut(&bad, 1000), None, "total length {total}");
    }
    // Not UDP, not IP, cut short.
    let segment = tcp(&r6, 1, flags::ACK, &payload(3000, 0));
    assert_eq!(cut(&segment, 1000), None);
    let mut arp = whole.clone();
    arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    assert_eq!(cut(&arp, 1000), None);
    for len in [0, 13, ETH_HEADER_LEN + IPV4_HEADER_LEN + 4] {
        assert_eq!(cut(&whole[..len], 1000), None, "{len} bytes");
    }
}

proptest! {
    /// Whatever UDP run a device hands over whole, cut at its segment size it gives back the
    /// datagrams it was made of; and no frame at all makes the cutting panic.
    #[test]
    fn cutting_a_run_gives_back_its_datagrams(
        v6 in any::<bool>(),
        size in 1..2000usize,
        count in 2..=MAX_SEGMENTS,
        last in 1..2000usize,
        padding in 0..8usize,
    ) {
        let r = if v6 {
            Route::between("2001:db8::1", "2001:db8::2")
        } else {
            Route::between("192.0.2.1", "192.0.2.2")
        };
        let header_len = udp_payload_offset(&r) - ETH_HEADER_LEN;
        // Within one IP packet.
        let count = count.min((MAX_IP_PACKET - header_len) / size);
        prop_assume!(count >= 2);
        let frames: Vec<Vec<u8>> = (0..count)
            .map(|i| udp(&r, 443, &payload(if i + 1 == count { last.min(size) } else { size }, i)))
            .collect();
        let (whole, run) = uso_frame(&frames, padding);
        prop_assert_eq!(run.frames, count);
        prop_assert_eq!(cut(&whole, size), Some(as_cut_by_the_device(&frames)));
    }

    #[test]
    fn cutting_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..200), size in 0..300usize) {
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        if let Some(n) = cut_udp_run(&frame, size, &mut out, &mut lens) {
            prop_assert_eq!(n, lens.len());
            prop_assert_eq!(lens.iter().sum::<usize>(), out.len());
        }
    }
}
/// The sixth of these datagrams sums to zero: its checksum goes as all ones (RFC 768), as
/// the engine and the kernel write it, not as zero ("no checksum"), when a capture finishes
/// the partial one the cutting leaves.
#[test]
fn a_datagram_whose_checksum_sums_to_zero_is_finished_as_all_ones() {
    let r = Route::between("192.0.2.1", "192.0.2.2");
    let frames: Vec<Vec<u8>> = (0..7)
        .map(|i| udp(&r, 443, &payload(if i == 6 { 1 } else { 1477 }, i)))
        .collect();
    let l4 = ETH_HEADER_LEN + IPV4_HEADER_LEN;
    assert_eq!(frames[5][l4 + 6..l4 + 8], [0xff, 0xff]);
    let (whole, _) = uso_frame(&frames, 0);
    assert_eq!(cut(&whole, 1477), Some(as_cut_by_the_device(&frames)));
}

/// IPv6 extension headers (a destination options header here) go with every datagram cut
/// out, and the lengths count them.
#[test]
fn an_ipv6_run_with_extension_headers_is_cut_with_them() {
    let r = Route::between("2001:db8::1", "2001:db8::2");
    let frames: Vec<Vec<u8>> = (0..5)
        .map(|i| udp(&r, 443, &payload(if i == 4 { 100 } else { 1200 }, i)))
        .collect();
    let (mut whole, _) = uso_frame(&frames, 0);
    let ip = ETH_HEADER_LEN;
    // Destination options, 8 bytes: next header UDP, a PadN option filling the rest.
    let options = [ip_proto::UDP, 0, 1, 4, 0, 0, 0, 0];
    whole.splice(ip + 40..ip + 40, options);
    whole[ip + 6] = 60;
    let len = u16::from_be_bytes([whole[ip + 4], whole[ip + 5]]) + 8;
    whole[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
    let (mut out, mut lens) = (Vec::new(), Vec::new());
    assert_eq!(cut_udp_run(&whole, 1200, &mut out, &mut lens), Some(5));
    let mut at = 0;
    for (i, len) in lens.into_iter().enumerate() {
        let f = &out[at..at + len];
        at += len;
        assert_eq!(f[ip + 40..ip + 48], options, "datagram {i}");
        let v6 = crate::wire::parse::ipv6(&f[ip..]).unwrap();
        assert_eq!(v6.next_header, ip_proto::UDP);
        let datagram = crate::wire::parse::udp(v6.payload).unwrap();
        let want = udp_payload_offset(&r);
        assert_eq!(datagram.payload, &frames[i][want..], "datagram {i}");
        assert_eq!(f.len(), ip + 40 + 8 + 8 + datagram.payload.len());
    }
}
