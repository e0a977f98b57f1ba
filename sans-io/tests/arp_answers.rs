//! ARP answers to requests captured in `testdata/captures/` (see its README): the kernel's
//! request for its gateway, busybox arping's duplicate address probe and announcement.

mod common;

use std::net::Ipv4Addr;

use common::{captured, run_answers, GATEWAY, GUEST_ADDR, GUEST_MAC};
use sans_io::config::{Config, Forwarding, IpConfig, Mode, Protocols, Services};
use sans_io::fwd::ForwardMode;
use sans_io::wire::arp::{ArpError, ArpPacket, OP_REPLY, OP_REQUEST};
use sans_io::wire::build::{self, Route};
use sans_io::wire::parse::{self, ethertype};
use sans_io::wire::Malformed;
use sans_io::wire::{FrameQueue, MacAddr};

const OUR_MAC: MacAddr = MacAddr([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);

/// The guest has 192.0.2.2/24 behind gateway 192.0.2.1; we are 9a:55:9a:55:9a:55.
fn config() -> Config {
    let ip4 = IpConfig::new("eth0".to_owned(), GUEST_ADDR, 24, Some(GATEWAY), GATEWAY);
    let off = ForwardMode::Unset;
    Config {
        mode: Mode::Passt,
        ip4: Some(ip4),
        ip6: None,
        local_mode: false,
        our_mac: OUR_MAC,
        mtu: Some(65520),
        host_mtu: Some(1500),
        dns: Vec::new(),
        search: Vec::new(),
        hostname: None,
        fqdn: None,
        services: Services {
            dhcp: true,
            ndp: false,
            ra: false,
            dhcpv6: false,
            dhcp_dns: true,
            dhcp_search: true,
        },
        protocols: Protocols {
            tcp: true,
            udp: true,
            icmp: true,
        },
        forwarding: Forwarding {
            tcp_in: off.clone(),
            udp_in: off.clone(),
            tcp_out: off.clone(),
            udp_out: off,
        },
        ns_ifname: "eth0".to_owned(),
        ns_mac: None,
        no_copy_routes: false,
        no_copy_addrs: false,
        freebind: false,
        splice: true,
        host_lo_to_ns_lo: false,
    }
}

/// An ARP frame from the guest with the given fields.
fn arp_frame(op: u16, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    build::ethernet(&mut frame, MacAddr::BROADCAST, GUEST_MAC, ethertype::ARP);
    ArpPacket {
        op,
        sha: GUEST_MAC,
        spa,
        tha: MacAddr([0; 6]),
        tpa,
    }
    .write(&mut frame);
    frame
}

#[test]
fn kernel_request_gets_a_reply() {
    let request = captured("arp-request.pcap");
    let (answers, counters) = run_answers(config(), &[&request]);
    assert_eq!(answers.len(), 1);
    assert_eq!((counters.arp_answered, counters.malformed), (1, 0));
    let reply = &answers[0];

    // Every byte, by hand: Ethernet header, then the ARP packet.
    let mut want = Vec::new();
    want.extend_from_slice(&GUEST_MAC.0); // to the requester
    want.extend_from_slice(&OUR_MAC.0);
    want.extend_from_slice(&[0x08, 0x06]);
    want.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]); // Ethernet, IPv4, reply
    want.extend_from_slice(&OUR_MAC.0); // sender: us ...
    want.extend_from_slice(&GATEWAY.octets()); // ... as the address asked for
    want.extend_from_slice(&GUEST_MAC.0); // target: the requester
    want.extend_from_slice(&GUEST_ADDR.octets());
    assert_eq!(reply, &want);

    let eth = parse::ethernet(reply).unwrap();
    let arp = ArpPacket::parse(eth.payload).unwrap().unwrap();
    insta::assert_snapshot!(format!(
        "ethernet: {} -> {}, type {:#06x}\n{arp}",
        eth.src, eth.dst, eth.ethertype
    ));
}

#[test]
fn any_other_address_is_answered_too() {
    for target in [
        Ipv4Addr::new(192, 0, 2, 77),
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(127, 0, 0, 1),
    ] {
        let (answers, _) = run_answers(config(), &[&arp_frame(OP_REQUEST, GUEST_ADDR, target)]);
        assert_eq!(answers.len(), 1, "{target}");
        let arp = ArpPacket::parse(&answers[0][14..]).unwrap().unwrap();
        assert_eq!((arp.op, arp.sha, arp.spa), (OP_REPLY, OUR_MAC, target));
    }
}

#[test]
fn duplicate_address_probe_is_not_answered() {
    let probe = captured("arp-probe.pcap");
    let arp = ArpPacket::parse(&probe[14..]).unwrap().unwrap();
    assert_eq!(arp.spa, Ipv4Addr::UNSPECIFIED, "the capture is a probe");
    let (answers, counters) = run_answers(config(), &[&probe]);
    assert!(answers.is_empty());
    assert_eq!((counters.ignored, counters.arp_answered), (1, 0));
    // Nor for any address: the guest is checking it's free.
    let (answers, _) = run_answers(
        config(),
        &[&arp_frame(OP_REQUEST, Ipv4Addr::UNSPECIFIED, GATEWAY)],
    );
    assert!(answers.is_empty());
}

#[test]
fn announcement_is_not_answered() {
    let announce = captured("arp-announce.pcap");
    let arp = ArpPacket::parse(&announce[14..]).unwrap().unwrap();
    assert_eq!(arp.spa, arp.tpa, "the capture is an announcement");
    let (answers, counters) = run_answers(config(), &[&announce]);
    assert!(answers.is_empty());
    assert_eq!(counters.ignored, 1);
}

#[test]
fn request_for_the_guests_own_address_is_not_answered() {
    // The configured address, asked from another one the guest has.
    let other = Ipv4Addr::new(192, 0, 2, 99);
    let (answers, _) = run_answers(config(), &[&arp_frame(OP_REQUEST, other, GUEST_ADDR)]);
    assert!(answers.is_empty());

    // The address the guest was last seen using, though not the configured one.
    let used = Ipv4Addr::new(192, 0, 2, 77);
    let mut q = FrameQueue::new();
    let route = Route {
        src_mac: GUEST_MAC,
        dst_mac: OUR_MAC,
        src: used.into(),
        dst: GATEWAY.into(),
    };
    build::udp_frame(&mut q, route, 40000, 9, b"hello");
    let (answers, counters) = run_answers(
        config(),
        &[q.get(0).unwrap(), &arp_frame(OP_REQUEST, GUEST_ADDR, used)],
    );
    assert!(answers.is_empty());
    assert_eq!((counters.frames, counters.arp_answered), (2, 0));
}

#[test]
fn replies_and_unusable_targets_are_ignored() {
    let frames = [
        arp_frame(OP_REPLY, GUEST_ADDR, GATEWAY),
        arp_frame(OP_REQUEST, GUEST_ADDR, Ipv4Addr::BROADCAST),
        arp_frame(OP_REQUEST, GUEST_ADDR, Ipv4Addr::new(224, 0, 0, 1)),
    ];
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let (answers, counters) = run_answers(config(), &refs);
    assert!(answers.is_empty());
    assert_eq!(counters.ignored, 3);
}

#[test]
fn truncated_and_foreign_arp() {
    let request = captured("arp-request.pcap");
    let truncated = &request[..14 + 20];
    let header_only = &request[..14 + 5];
    // IEEE 802 hardware (type 6): well-formed, not ours.
    let mut ieee802 = request.clone();
    ieee802[15] = 6;
    let (answers, counters) = run_answers(config(), &[truncated, header_only, &ieee802]);
    assert!(answers.is_empty());
    assert_eq!((counters.malformed, counters.ignored), (2, 1));
    assert_eq!(
        counters.last_malformed,
        Some(Malformed::Arp(ArpError::Short))
    );

    // Every truncation of the real request: malformed, or answered once whole.
    for len in 14..=request.len() {
        let (answers, counters) = run_answers(config(), &[&request[..len]]);
        let whole = len >= 14 + 28;
        assert_eq!(answers.len(), usize::from(whole), "at {len}");
        assert_eq!(counters.malformed, u64::from(!whole), "at {len}");
    }
}

#[test]
fn padded_frames_are_answered() {
    // Ethernet pads frames to 60 bytes; the capture, from a veth, is the unpadded 42.
    let mut request = captured("arp-request.pcap");
    request.resize(60, 0);
    let (answers, _) = run_answers(config(), &[&request]);
    assert_eq!(answers.len(), 1);
}
