//! ICMP/ICMPv6 echo, guest to host: replies with the guest's identifier and addresses, the
//! gateway answered by the host's loopback, identifiers the "kernel" won't give mapped back,
//! idle timeouts (one-shot and continuing), `--no-icmp`.

use std::net::IpAddr;
use std::time::Duration;

use sans_io::wire::build::{self, Route};
use sans_io::wire::parse::{self, ethertype, ip_proto};
use sans_io::wire::{FrameQueue, MacAddr};
use sim::scenario::{GATEWAY, GUEST_MAC, HOST_ADDR, REMOTE};
use sim::world::{Direction, World};
use sim::Scenario;

fn echo(w: &mut World, src: IpAddr, dst: IpAddr, id: u16, seq: u16) {
    let mut q = FrameQueue::new();
    let route = Route {
        src_mac: MacAddr(GUEST_MAC),
        dst_mac: w.engine.config().our_mac,
        src,
        dst,
    };
    let ty = if dst.is_ipv4() { 8 } else { 128 };
    let mut msg = vec![ty, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"payload");
    if dst.is_ipv4() {
        build::icmp4_frame(&mut q, route, 64, &msg);
    } else {
        build::icmpv6_frame(&mut q, route, 64, &msg);
    }
    w.guest.device.tx.push_back(q.get(0).unwrap().to_vec());
}

/// Echo replies to the guest: (source, destination, id, seq).
fn replies(w: &World) -> Vec<(IpAddr, IpAddr, u16, u16)> {
    let mut v = Vec::new();
    for (_, dir, frame) in &w.transcript {
        if *dir != Direction::EngineToGuest {
            continue;
        }
        let eth = parse::ethernet(frame).unwrap();
        let (src, dst, msg) = match eth.ethertype {
            ethertype::IPV4 => {
                let ip = parse::ipv4(eth.payload).unwrap();
                if ip.protocol != ip_proto::ICMP {
                    continue;
                }
                assert_eq!(sans_io::wire::checksum::of(ip.payload), 0, "checksum");
                (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.payload)
            }
            ethertype::IPV6 => {
                let ip = parse::ipv6(eth.payload).unwrap();
                if ip.next_header != ip_proto::ICMPV6 || ip.payload[0] != 129 {
                    continue;
                }
                (IpAddr::V6(ip.src), IpAddr::V6(ip.dst), ip.payload)
            }
            _ => continue,
        };
        if msg[0] != 0 && msg[0] != 129 {
            continue;
        }
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let seq = u16::from_be_bytes([msg[6], msg[7]]);
        v.push((src, dst, id, seq));
    }
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn echo_both_families_and_the_gateway() {
    let mut w = Scenario::new(11).build();
    let (remote, remote6) = (ip(REMOTE), ip("2001:db8:2::10"));
    w.host.ping_host(remote);
    w.host.ping_host(remote6);
    let guest = ip(HOST_ADDR);
    let guest6 = IpAddr::V6(w.engine.config().ip6.as_ref().unwrap().addr);
    echo(&mut w, guest, remote, 0x1234, 1);
    echo(&mut w, guest6, remote6, 0x4321, 1);
    echo(&mut w, guest, ip(GATEWAY), 0x5555, 7);
    assert!(w.run_until(Duration::from_secs(1), |w| replies(w).len() == 3));
    let got = replies(&w);
    assert!(got.contains(&(remote, guest, 0x1234, 1)), "{got:?}");
    assert!(got.contains(&(remote6, guest6, 0x4321, 1)), "{got:?}");
    assert!(got.contains(&(ip(GATEWAY), guest, 0x5555, 7)), "{got:?}");
    // The gateway's ping went to the host's loopback.
    assert!(w.host.ping_log.iter().any(|(d, _)| *d == ip("127.0.0.1")));
    assert_eq!(w.counters().icmp.flows_opened, 3);
    w.assert_no_violations();
}

#[test]
fn identifiers_the_kernel_wont_give_are_mapped_back() {
    let mut w = Scenario::new(12).build();
    let remote = ip(REMOTE);
    w.host.ping_host(remote);
    w.host.ping_ids_taken.insert(0x1234);
    let guest = ip(HOST_ADDR);
    echo(&mut w, guest, remote, 0x1234, 1);
    echo(&mut w, guest, remote, 0x1234, 2);
    assert!(w.run_until(Duration::from_secs(1), |w| replies(w).len() == 2));
    // On the host, another identifier; towards the guest, its own.
    let host_id = u16::from_be_bytes([w.host.ping_log[0].1[4], w.host.ping_log[0].1[5]]);
    assert_ne!(host_id, 0x1234);
    assert_eq!(
        replies(&w),
        vec![(remote, guest, 0x1234, 1), (remote, guest, 0x1234, 2)]
    );
    assert_eq!(w.counters().icmp.id_remapped, 1);
    assert_eq!(w.counters().icmp.flows_opened, 1);
}

#[test]
fn idle_echo_flows_time_out() {
    let mut w = Scenario::new(13).build();
    let remote = ip(REMOTE);
    w.host.ping_host(remote);
    // A single ping (one-shot) and a continuing one (a conversation).
    echo(&mut w, ip(HOST_ADDR), remote, 1, 1);
    for seq in 1..=3 {
        echo(&mut w, ip(HOST_ADDR), remote, 2, seq);
        assert!(w.run_until(Duration::from_secs(1), |w| replies(w).len()
            == 1 + seq as usize));
    }
    assert_eq!(w.host.open_sockets(), 2);
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(600), |w| w.host.open_sockets() == 1));
    let one_shot = w.now - t0;
    assert!(
        one_shot <= sans_io::flow::idle::ONE_SHOT_TIMEOUT,
        "{one_shot:?}"
    );
    assert!(w.run_until(Duration::from_secs(600), |w| w.host.open_sockets() == 0));
    let waited = w.now - t0;
    assert!(
        waited >= Duration::from_secs(59) && waited <= Duration::from_secs(61),
        "{waited:?}"
    );
    assert_eq!(w.counters().icmp.flows_expired, 2);
}

#[test]
fn no_icmp_drops_echo_requests() {
    let mut w = Scenario::new(14)
        .config(|c| c.protocols.icmp = false)
        .build();
    let remote = ip(REMOTE);
    w.host.ping_host(remote);
    echo(&mut w, ip(HOST_ADDR), remote, 1, 1);
    w.run_for(Duration::from_millis(100));
    assert!(replies(&w).is_empty());
    assert_eq!(w.host.open_sockets(), 0);
    assert_eq!(w.counters().icmp.disabled_dropped, 1);
}
