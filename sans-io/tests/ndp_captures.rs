//! NDP through the engine, fed with what a Linux guest really sends: frames captured by
//! `testdata/captures/capture-ndp-dhcpv6.sh` (see the README there). Answers are decoded with
//! our own `Display` and snapshotted; each snapshot was checked against RFC 4861 and RFC 8106.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use common::dual_stack::{config, config_with, host};
use common::{captured_all, from_guest, run, with_ctx};
use proptest::prelude::*;
use sans_io::config::host::HostNet;
use sans_io::config::{Config, ListChoice, Mode};
use sans_io::engine::Engine;
use sans_io::flow::NoSockets;
use sans_io::services::ndp::{self, RA_INTERVAL_MAX, RA_INTERVAL_MIN};
use sans_io::services::Outcome;
use sans_io::time::Instant;
use sans_io::wire::ndp::{NdpError, NdpMessage, ALL_NODES, ALL_NODES_MAC};
use sans_io::wire::parse::{self, ip_proto};
use sans_io::wire::{checksum, FrameQueue, MacAddr, Malformed};

// --- Frames ---

const ETH: usize = 14;
const ICMP: usize = ETH + 40;

/// Recomputes the ICMPv6 checksum of an Ethernet + IPv6 + ICMPv6 frame (no extension headers).
fn fix_checksum(frame: &mut [u8]) {
    frame[ICMP + 2..ICMP + 4].copy_from_slice(&[0, 0]);
    let src: [u8; 16] = frame[ETH + 8..ETH + 24].try_into().unwrap();
    let dst: [u8; 16] = frame[ETH + 24..ETH + 40].try_into().unwrap();
    let sum = checksum::transport(
        Ipv6Addr::from(src).into(),
        Ipv6Addr::from(dst).into(),
        ip_proto::ICMPV6,
        &frame[ICMP..],
    );
    frame[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
}

/// An answer frame, decoded layer by layer, checksums verified.
fn describe(frame: &[u8]) -> String {
    let eth = parse::ethernet(frame).unwrap();
    let ip = parse::ipv6(eth.payload).unwrap();
    assert_eq!(ip.next_header, ip_proto::ICMPV6);
    let sum = checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::ICMPV6, ip.payload);
    assert_eq!(sum, 0, "ICMPv6 checksum of our answer");
    let msg = NdpMessage::parse(ip.payload).unwrap();
    format!(
        "ethernet {} > {}\nipv6 {} > {}, hop limit {}, {} octets, checksum ok\n{msg}",
        eth.src,
        eth.dst,
        ip.src,
        ip.dst,
        ip.hop_limit,
        ip.payload.len()
    )
}

fn answers(out: &FrameQueue) -> String {
    out.iter().map(describe).collect::<Vec<_>>().join("\n---\n")
}

// --- What the captures hold ---

#[test]
fn captures_are_what_we_think() {
    let rs = captured_all("ndp-kernel-rs.pcap");
    let ns = captured_all("ndp-kernel-ns.pcap");
    let dad = captured_all("ndp-dad-ns.pcap");
    let summary = |f: &Vec<u8>| {
        let eth = parse::ethernet(f).unwrap();
        let ip = parse::ipv6(eth.payload).unwrap();
        format!(
            "{} > {}: {}",
            ip.src,
            ip.dst,
            NdpMessage::parse(ip.payload).unwrap()
        )
    };
    let all: Vec<String> = [rs, ns, dad].iter().flatten().map(summary).collect();
    insta::assert_snapshot!(all.join("\n"));
}

// --- Router solicitations ---

#[test]
fn kernel_rs_gets_ra_pasta_defaults() {
    // pasta hands out no DNS in RAs unless asked (--dhcp-dns, --dhcp-search).
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let (engine, out) = run(config(Mode::Pasta), &[rs]);
    assert_eq!(engine.counters().ndp_answered, 1);
    assert_eq!(out.len(), 1);
    insta::assert_snapshot!(answers(&out));
}

#[test]
fn kernel_rs_gets_ra_with_dns_and_search_passt_defaults() {
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let (engine, out) = run(config(Mode::Passt), &[rs]);
    assert_eq!(engine.counters().ndp_answered, 1);
    insta::assert_snapshot!(answers(&out));
}

#[test]
fn every_captured_rs_is_answered() {
    let rs = captured_all("ndp-kernel-rs.pcap");
    let frames: Vec<&[u8]> = rs.iter().map(Vec::as_slice).collect();
    let (engine, out) = run(config(Mode::Passt), &frames);
    assert_eq!(out.len(), rs.len());
    assert_eq!(engine.counters().ndp_answered, rs.len() as u64);
}

#[test]
fn rs_from_unspecified_gets_ra_to_all_nodes() {
    // RFC 4861 6.1.1: from :: there must be no source link-layer address option.
    let mut rs = captured_all("ndp-kernel-rs.pcap")[0].clone();
    rs.truncate(ICMP + 8);
    rs[ETH + 4..ETH + 6].copy_from_slice(&8u16.to_be_bytes());
    rs[ETH + 8..ETH + 24].copy_from_slice(&[0; 16]);
    fix_checksum(&mut rs);
    let (_, out) = run(config(Mode::Pasta), &[&rs]);
    assert_eq!(out.len(), 1);
    let eth = parse::ethernet(out.get(0).unwrap()).unwrap();
    let ip = parse::ipv6(eth.payload).unwrap();
    assert_eq!(eth.dst, ALL_NODES_MAC);
    assert_eq!(ip.dst, ALL_NODES);

    // ... and with one, it is invalid.
    let mut bad = captured_all("ndp-kernel-rs.pcap")[0].clone();
    bad[ETH + 8..ETH + 24].copy_from_slice(&[0; 16]);
    fix_checksum(&mut bad);
    let (engine, out) = run(config(Mode::Pasta), &[&bad]);
    assert!(out.is_empty());
    assert_eq!(engine.counters().malformed, 1);
}

#[test]
fn local_mode_ra_has_no_prefix() {
    let config = config_with(Mode::Pasta, &HostNet::default(), |_| {});
    assert!(config.local_mode);
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let (_, out) = run(config, &[rs]);
    let text = answers(&out);
    assert!(!text.contains("prefix information"));
    insta::assert_snapshot!(text);
}

#[test]
fn short_host_prefix_is_advertised_as_is_and_long_one_as_64() {
    let with_prefix = |len: u8| {
        let mut host = host();
        host.addrs[1].prefix_len = len;
        let rs = &captured_all("ndp-kernel-rs.pcap")[0];
        let (_, out) = run(config_with(Mode::Pasta, &host, |_| {}), &[rs]);
        let text = answers(&out);
        let line = text.lines().find(|l| l.contains("prefix information"));
        line.unwrap().trim().to_owned()
    };
    assert_eq!(
        with_prefix(48),
        "prefix information: 2001:db8::/48, flags 0xc0 (L A), \
         valid lifetime infinite, preferred lifetime infinite"
    );
    assert!(with_prefix(128).starts_with("prefix information: 2001:db8::/64,"));
}

#[test]
fn no_mtu_option_when_mtu_is_not_advertised() {
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let (_, out) = run(
        config_with(Mode::Pasta, &host(), |o| o.mtu = Some(0)),
        &[rs],
    );
    let text = answers(&out);
    assert!(!text.contains("MTU"), "{text}");
    let (_, out) = run(
        config_with(Mode::Pasta, &host(), |o| o.mtu = Some(1500)),
        &[rs],
    );
    assert!(answers(&out).contains("\n  MTU: 1500\n"));
}

#[test]
fn no_ra_means_rs_ignored_but_ns_answered() {
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let ns = &captured_all("ndp-kernel-ns.pcap")[0];
    let (engine, out) = run(
        config_with(Mode::Pasta, &host(), |o| o.no_ra = true),
        &[rs, ns],
    );
    assert_eq!(engine.counters().ignored, 1);
    assert_eq!(engine.counters().ndp_answered, 1);
    assert!(answers(&out).contains("neighbour advertisement for fe80::1"));
    assert_eq!(engine.poll_timeout(), None, "no unsolicited RAs either");
}

#[test]
fn many_dns_servers_and_domains_still_fit_the_minimum_mtu() {
    let config = config_with(Mode::Passt, &host(), |o| {
        o.dns = ListChoice::List(
            (1..=100u16)
                .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
                .collect(),
        );
        o.search = ListChoice::List((0..100).map(|i| format!("d{i}.example.org")).collect());
    });
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let (_, out) = run(config, &[rs]);
    let frame = out.get(0).unwrap();
    assert!(frame.len() <= ETH + 1280, "{} octets", frame.len());
    let text = describe(frame);
    assert!(text.contains("recursive DNS servers"));
    assert!(text.contains("DNS search list"));
}

// --- Unsolicited router advertisements ---

#[test]
fn unsolicited_ra_when_the_engine_asks() {
    let mut engine = Engine::new(config(Mode::Passt), 7, Instant::ZERO);
    let due = engine.poll_timeout().expect("RAs are on");
    assert!(due >= Instant::ZERO + RA_INTERVAL_MIN && due <= Instant::ZERO + RA_INTERVAL_MAX);
    let mut out = FrameQueue::new();
    engine
        .batch(
            Instant::from_nanos(due.as_nanos() - 1),
            &mut NoSockets,
            &mut out,
        )
        .timeout();
    assert!(out.is_empty(), "not due yet");
    engine.batch(due, &mut NoSockets, &mut out).timeout();
    assert_eq!(engine.counters().ra_unsolicited, 1);
    let next = engine.poll_timeout().unwrap();
    assert!(next >= due + RA_INTERVAL_MIN && next <= due + RA_INTERVAL_MAX);
    insta::assert_snapshot!(answers(&out));
}

// --- Neighbour solicitations ---

#[test]
fn kernel_ns_gets_na() {
    // First a solicitation for fe80::1 (our address) from the guest's link-local address, then
    // one for 2001:db8::1 (anybody else) from its global one.
    let ns = captured_all("ndp-kernel-ns.pcap");
    let (engine, out) = run(config(Mode::Pasta), &[&ns[0], &ns[1]]);
    assert_eq!(engine.counters().ndp_answered, 2);
    insta::assert_snapshot!(answers(&out));
}

#[test]
fn dad_probe_gets_nothing() {
    let dad = &captured_all("ndp-dad-ns.pcap")[0];
    let (engine, out) = run(config(Mode::Pasta), &[dad]);
    assert!(out.is_empty());
    assert_eq!(engine.counters().ignored, 1);
    assert_eq!(engine.counters().malformed, 0);

    // Not even for an address that isn't the guest's.
    let mut other = dad.clone();
    other[ICMP + 8..ICMP + 24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
    fix_checksum(&mut other);
    let (engine, out) = run(config(Mode::Pasta), &[&other]);
    assert!(out.is_empty());
    assert_eq!(engine.counters().ignored, 1);
}

#[test]
fn ns_for_the_guests_own_addresses_gets_nothing() {
    let ns = &captured_all("ndp-kernel-ns.pcap")[0];
    let retarget = |target: &str| {
        let mut f = ns.clone();
        f[ICMP + 8..ICMP + 24].copy_from_slice(&target.parse::<Ipv6Addr>().unwrap().octets());
        fix_checksum(&mut f);
        f
    };
    // The configured address, the link-local source just seen, a global one seen earlier.
    let own = retarget("2001:db8::2");
    let own_ll = retarget("fe80::5054:ff:fe12:3456");
    let seen = retarget("2001:db8::77");
    let mut from_seen = captured_all("ndp-kernel-ns.pcap")[1].clone();
    from_seen[ETH + 8..ETH + 24]
        .copy_from_slice(&"2001:db8::77".parse::<Ipv6Addr>().unwrap().octets());
    fix_checksum(&mut from_seen);
    let (engine, out) = run(config(Mode::Pasta), &[&own, &own_ll, &from_seen, &seen]);
    assert_eq!(engine.counters().ignored, 3);
    assert_eq!(
        out.len(),
        1,
        "only the solicitation from 2001:db8::77 is answered"
    );
    assert!(describe(out.get(0).unwrap()).contains("> 2001:db8::77"));
}

#[test]
fn ns_for_a_multicast_target_is_malformed() {
    let mut f = captured_all("ndp-kernel-ns.pcap")[0].clone();
    f[ICMP + 8..ICMP + 24].copy_from_slice(&ALL_NODES.octets());
    fix_checksum(&mut f);
    let (engine, out) = run(config(Mode::Pasta), &[&f]);
    assert!(out.is_empty());
    assert_eq!(engine.counters().malformed, 1);
}

// --- Validity checks (RFC 4861 6.1.1, 7.1.1) ---

#[test]
fn bad_checksum_and_hop_limit_are_dropped() {
    for name in ["ndp-kernel-rs.pcap", "ndp-kernel-ns.pcap"] {
        let good = &captured_all(name)[0];
        let mut bad_sum = good.clone();
        bad_sum[ICMP + 3] ^= 0x01;
        let (engine, out) = run(config(Mode::Passt), &[&bad_sum]);
        assert!(out.is_empty());
        assert_eq!(engine.counters().malformed, 1);
        assert_eq!(
            engine.counters().last_malformed,
            Some(Malformed::Ndp(NdpError::Checksum))
        );

        let mut forwarded = good.clone();
        forwarded[ETH + 7] = 254; // hop limit: not in the pseudo-header, checksum still good
        let (engine, out) = run(config(Mode::Passt), &[&forwarded]);
        assert!(out.is_empty());
        assert_eq!(
            engine.counters().last_malformed,
            Some(Malformed::Ndp(NdpError::HopLimit))
        );

        let mut code = good.clone();
        code[ICMP + 1] = 1;
        fix_checksum(&mut code);
        let (engine, out) = run(config(Mode::Passt), &[&code]);
        assert!(out.is_empty());
        assert_eq!(
            engine.counters().last_malformed,
            Some(Malformed::Ndp(NdpError::CodeNotZero))
        );

        let mut zero_option = good.clone();
        let at = zero_option.len() - 7; // the length octet of the last (link-layer) option
        zero_option[at] = 0;
        fix_checksum(&mut zero_option);
        let (engine, out) = run(config(Mode::Passt), &[&zero_option]);
        assert!(out.is_empty());
        assert_eq!(
            engine.counters().last_malformed,
            Some(Malformed::Ndp(NdpError::ZeroLengthOption))
        );
    }
}

#[test]
fn advertisements_from_the_guest_are_ignored() {
    // Our own answers, sent back as if from the guest: valid NDP, nothing to say to them.
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let ns = &captured_all("ndp-kernel-ns.pcap")[0];
    let (_, out) = run(config(Mode::Passt), &[rs, ns]);
    let echoed: Vec<Vec<u8>> = out.iter().map(<[u8]>::to_vec).collect();
    let frames: Vec<&[u8]> = echoed.iter().map(Vec::as_slice).collect();
    let (engine, out) = run(config(Mode::Passt), &frames);
    assert!(out.is_empty());
    assert_eq!(engine.counters().ignored, 2);
}

#[test]
fn nothing_without_ipv6() {
    let rs = &captured_all("ndp-kernel-rs.pcap")[0];
    let mut config = config(Mode::Passt);
    config.ip6 = None;
    let ((), out) = with_ctx(&config, |mut ctx| {
        let eth = parse::ethernet(rs).unwrap();
        let ip = parse::ipv6(eth.payload).unwrap();
        assert_eq!(
            ndp::handle(&mut ctx, &eth, &ip, ip.payload),
            Outcome::Ignored
        );
        assert_eq!(ndp::unsolicited_ra(&mut ctx), Outcome::Ignored);
    });
    assert!(out.is_empty());
}

// --- No panics, whatever comes in ---

/// Feeds `icmp` (checksum made valid, so the parser is reached) to `ndp::handle` directly.
fn handle_icmp(config: &Config, mut icmp: Vec<u8>, src: Ipv6Addr) -> (Outcome, FrameQueue) {
    let dst: Ipv6Addr = "ff02::2".parse().unwrap();
    if icmp.len() >= 4 {
        icmp[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum::transport(src.into(), dst.into(), ip_proto::ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let eth = from_guest(MacAddr([0x33, 0x33, 0, 0, 0, 2]), parse::ethertype::IPV6);
    let ip = parse::Ipv6 {
        src,
        dst,
        next_header: ip_proto::ICMPV6,
        hop_limit: 255,
        fragmented: false,
        header_len: parse::IPV6_HEADER_LEN,
        payload: &icmp,
    };
    let (outcome, out) = with_ctx(config, |mut ctx| ndp::handle(&mut ctx, &eth, &ip, &icmp));
    // Whatever parses also displays.
    if let Ok(msg) = NdpMessage::parse(&icmp) {
        let _ = msg.to_string();
    }
    (outcome, out)
}

#[test]
fn truncated_captures_never_panic() {
    let config = config(Mode::Passt);
    let names = [
        "ndp-kernel-rs.pcap",
        "ndp-kernel-ns.pcap",
        "ndp-dad-ns.pcap",
    ];
    for frame in names.iter().flat_map(|n| captured_all(n)) {
        for len in 0..=frame.len() {
            // Through the engine, as cut (IPv6 length then no longer matches)...
            run(config.clone(), &[&frame[..len]]);
            // ... and the ICMPv6 message cut with a valid checksum, straight to the service.
            if len >= ICMP {
                let (outcome, out) = handle_icmp(
                    &config,
                    frame[ICMP..len].to_vec(),
                    "fe80::2".parse().unwrap(),
                );
                // Cut anywhere but after the fixed part (RS 8, NS 24 octets) or an option, a
                // message is malformed.
                let cut = len - ICMP;
                if cut != 8 && cut != 24 && cut != frame.len() - ICMP {
                    assert!(
                        matches!(outcome, Outcome::Malformed(_)),
                        "{len}: {outcome:?}"
                    );
                    assert!(out.is_empty());
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_messages_never_panic(
        kind in 133u8..=137,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        unspecified in any::<bool>(),
    ) {
        let config = config(Mode::Passt);
        let mut icmp = vec![kind, 0, 0, 0];
        icmp.extend_from_slice(&body);
        let src = if unspecified { Ipv6Addr::UNSPECIFIED } else { "fe80::2".parse().unwrap() };
        let (outcome, out) = handle_icmp(&config, icmp, src);
        prop_assert_eq!(outcome == Outcome::Answered, !out.is_empty());
        for frame in out.iter() {
            let _ = describe(frame);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let config = config(Mode::Passt);
        let _ = handle_icmp(&config, bytes.clone(), "fe80::2".parse().unwrap());
        // And as a whole frame through the engine.
        run(config, &[&bytes]);
    }

    #[test]
    fn mutated_captures_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let config = config(Mode::Passt);
        let name = ["ndp-kernel-rs.pcap", "ndp-kernel-ns.pcap", "ndp-dad-ns.pcap"][which];
        let frame = &captured_all(name)[0];
        let mut icmp = frame[ICMP..].to_vec();
        for (at, value) in flips {
            let i = at % icmp.len();
            icmp[i] = value;
        }
        let (_, out) = handle_icmp(&config, icmp, "fe80::2".parse().unwrap());
        for frame in out.iter() {
            let _ = describe(frame);
        }
    }
}
