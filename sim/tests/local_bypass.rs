//! pasta's loopback bypass, as the core decides it: a connection or datagram from a loopback
//! peer to a forwarded port is handed to the driver for the namespace's own address (or its
//! loopback with `--host-lo-to-ns-lo`) and the mapped port, and nothing of it reaches the
//! guest; anything else, or anything with `--no-splice`, takes the guest path.

use std::time::Duration;

use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::Direction;
use sim::{App, Scenario};

/// Frames the engine sent the guest.
fn frames_to_guest(w: &sim::world::World) -> usize {
    w.transcript
        .iter()
        .filter(|(_, d, _)| *d == Direction::EngineToGuest)
        .count()
}

#[test]
fn loopback_connections_are_handed_over_with_the_mapped_port() {
    let mut w = Scenario::new(61).forward_tcp("2222:22").build();
    let before = frames_to_guest(&w);
    w.remote_connect(addr("127.0.0.1:50000"), addr("127.0.0.1:2222"), App::echo());
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.handed_over.is_empty()));
    w.run_for(Duration::from_millis(100));
    let (_, target) = w.host.handed_over[0];
    assert_eq!(target, addr(&format!("{HOST_ADDR}:22")));
    assert_eq!(w.counters().tcp.handed_over, 1);
    assert_eq!(
        frames_to_guest(&w),
        before,
        "nothing of it reaches the guest"
    );

    // From elsewhere: the guest path.
    let g = w.guest_listen(22, App::echo());
    w.remote_connect(
        addr(&format!("{REMOTE}:50001")),
        addr(&format!("{HOST_ADDR}:2222")),
        App::echo(),
    );
    assert!(w.run_until(Duration::from_secs(5), |w| w.guest_conn(g).remote.is_some()));
    assert_eq!(w.counters().tcp.handed_over, 1);
    w.assert_no_violations();
}

#[test]
fn host_lo_to_ns_lo_targets_the_loopback_and_no_splice_the_guest() {
    let mut w = Scenario::new(62)
        .options(|o| o.host_lo_to_ns_lo = true)
        .forward_tcp("8080")
        .build();
    w.remote_connect(addr("[::1]:50000"), addr("[::1]:8080"), App::echo());
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.handed_over.is_empty()));
    assert_eq!(w.host.handed_over[0].1, addr("[::1]:8080"));

    let mut w = Scenario::new(63)
        .options(|o| o.no_splice = true)
        .forward_tcp("8080")
        .build();
    let g = w.guest_listen(8080, App::echo());
    w.remote_connect(addr("127.0.0.1:50000"), addr("127.0.0.1:8080"), App::echo());
    assert!(w.run_until(Duration::from_secs(5), |w| w.guest_conn(g).remote.is_some()));
    assert!(w.host.handed_over.is_empty());
    assert_eq!(w.counters().tcp.handed_over, 0);
}

#[test]
fn loopback_datagrams_are_relayed_not_sent_to_the_guest() {
    let mut w = Scenario::new(64).forward_udp("5000:53").build();
    let peer = addr("127.0.0.1:40404");
    assert!(w
        .host
        .remote_udp_send(peer, addr("127.0.0.1:5000"), b"local"));
    assert!(w.run_until(Duration::from_secs(1), |w| !w
        .host
        .relayed_datagrams
        .is_empty()));
    assert_eq!(
        w.host.relayed_datagrams[0],
        (peer, addr(&format!("{HOST_ADDR}:53")), b"local".to_vec())
    );
    assert_eq!(w.counters().udp.relayed_locally, 1);
    assert!(w.udp_at_guest().is_empty());
    assert_eq!(w.counters().udp.flows_opened, 0);
    w.assert_no_violations();
}

#[test]
fn a_loopback_datagram_beyond_the_mtu_is_relayed_whole_and_a_remote_one_dropped() {
    // The scenario's MTU is 1500: the bypass doesn't go through the guest, so it doesn't
    // bound what is relayed; towards the guest, a datagram that doesn't fit is dropped.
    let mut w = Scenario::new(65).forward_udp("5000").build();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let local = addr("127.0.0.1:40404");
    assert!(w.host.remote_udp_send(local, addr("127.0.0.1:5000"), &big));
    let remote = addr(&format!("{REMOTE}:7777"));
    let to_guest = addr(&format!("{HOST_ADDR}:5000"));
    assert!(w.host.remote_udp_send(remote, to_guest, &big[..4000]));
    assert!(w.host.remote_udp_send(remote, to_guest, &big[..1472]));
    assert!(w.run_until(Duration::from_secs(1), |w| {
        !w.host.relayed_datagrams.is_empty() && !w.udp_at_guest().is_empty()
    }));
    assert_eq!(w.host.relayed_datagrams[0].2, big);
    let c = &w.counters().udp;
    assert_eq!(
        (c.relayed_locally, c.oversize_dropped, c.datagrams_in),
        (1, 1, 1)
    );
    assert_eq!(w.udp_at_guest()[0].2, &big[..1472]);
    w.assert_no_violations();
}
