//! UDP flows, guest to host: echo both families, the gateway reaching the host's loopback,
//! `--dns-forward` both ways, idle timeout freeing the socket, `--no-udp`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sim::scenario::{addr, GATEWAY, HOST_ADDR, REMOTE};
use sim::Scenario;

fn guest4(port: u16) -> SocketAddr {
    SocketAddr::new(HOST_ADDR.parse().unwrap(), port)
}

#[test]
fn echo_round_trip_both_families() {
    let mut w = Scenario::new(1).build();
    let server4 = addr(&format!("{REMOTE}:7"));
    let server6 = addr("[2001:db8:2::10]:7");
    w.host.udp_echo(server4);
    w.host.udp_echo(server6);
    let g6 = SocketAddr::new(
        IpAddr::V6(w.engine.config().ip6.as_ref().unwrap().addr),
        41000,
    );
    w.guest_udp(guest4(40000), server4, b"hello four");
    w.guest_udp(g6, server6, b"hello six");
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 2));
    let got = w.udp_at_guest();
    assert!(got.contains(&(server4, guest4(40000), b"hello four".to_vec())));
    assert!(got.contains(&(server6, g6, b"hello six".to_vec())));
    // One socket per flow; the host saw the real destinations.
    assert_eq!(w.host.udp_socks().len(), 2);
    assert_eq!(w.engine.udp().len(), 2);
    // A second datagram reuses the flow.
    w.guest_udp(guest4(40000), server4, b"again");
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 3));
    assert_eq!(w.host.udp_socks().len(), 2);
    let c = &w.counters().udp;
    assert_eq!((c.flows_opened, c.datagrams_out, c.datagrams_in), (2, 3, 3));
    w.assert_no_violations();
}

#[test]
fn gateway_reaches_host_loopback_and_replies_come_from_the_gateway() {
    let mut w = Scenario::new(2).build();
    w.host.udp_echo(addr("127.0.0.1:5353"));
    let gw = addr(&format!("{GATEWAY}:5353"));
    w.guest_udp(guest4(40001), gw, b"loop");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.udp_at_guest().is_empty()));
    assert_eq!(w.host.udp_log[0].1, addr("127.0.0.1:5353"));
    assert_eq!(
        w.udp_at_guest(),
        vec![(gw, guest4(40001), b"loop".to_vec())]
    );
}

#[test]
fn dns_forward_maps_both_ways() {
    let mut w = Scenario::new(3)
        .options(|o| {
            o.dns_forward4 = Some("198.51.100.53".parse().unwrap());
            o.dns_host4 = Some("203.0.113.53".parse().unwrap());
        })
        .build();
    w.host.udp_echo(addr("203.0.113.53:53"));
    let fwd = addr("198.51.100.53:53");
    w.guest_udp(guest4(40002), fwd, b"query");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.udp_at_guest().is_empty()));
    assert_eq!(w.host.udp_log[0].1, addr("203.0.113.53:53"));
    assert_eq!(
        w.udp_at_guest(),
        vec![(fwd, guest4(40002), b"query".to_vec())]
    );
    // Other ports to the forwarding address aren't redirected.
    w.guest_udp(guest4(40002), addr("198.51.100.53:54"), b"x");
    w.run_for(Duration::from_millis(10));
    assert_eq!(w.host.udp_log[1].1, addr("198.51.100.53:54"));
}

#[test]
fn idle_flows_time_out_and_free_their_socket() {
    let mut w = Scenario::new(4).build();
    let server = addr(&format!("{REMOTE}:7"));
    w.host.udp_echo(server);
    // Three exchanges: a conversation, which keeps the long idle time (a one-shot exchange's
    // is in flow_table.rs).
    for n in 1..=3 {
        w.guest_udp(guest4(40003), server, b"ping");
        assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == n));
    }
    assert_eq!(w.host.open_sockets(), 1);
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(600), |w| w.host.open_sockets() == 0));
    let waited = w.now - t0;
    assert!(
        waited >= Duration::from_secs(179) && waited <= Duration::from_secs(181),
        "{waited:?}"
    );
    assert_eq!(w.counters().udp.flows_expired, 1);
    assert!(w.engine.udp().is_empty());
}

#[test]
fn no_udp_drops() {
    let mut w = Scenario::new(5).config(|c| c.protocols.udp = false).build();
    let server = addr(&format!("{REMOTE}:7"));
    w.host.udp_echo(server);
    w.guest_udp(guest4(40004), server, b"ping");
    w.run_for(Duration::from_millis(100));
    assert!(w.udp_at_guest().is_empty());
    assert_eq!(w.host.open_sockets(), 0);
    assert_eq!(w.counters().udp.disabled_dropped, 1);
}

#[test]
fn oversize_replies_are_dropped_and_counted() {
    let mut w = Scenario::new(6).build();
    let server = addr(&format!("{REMOTE}:9"));
    w.guest_udp(guest4(40005), server, b"open");
    w.run_for(Duration::from_millis(10));
    let s = *w.host.udp_socks().keys().next().unwrap();
    w.host.udp_peer_send(s, &[7u8; 1473]); // 20 + 8 + 1473 > 1500
    w.host.udp_peer_send(s, &[7u8; 1472]);
    w.run_for(Duration::from_millis(10));
    let got = w.udp_at_guest();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2.len(), 1472);
    assert_eq!(w.counters().udp.oversize_dropped, 1);
}

#[test]
fn a_burst_larger_than_one_receive_batch_arrives_whole_and_in_order() {
    let mut w = Scenario::new(7).build();
    let server = addr(&format!("{REMOTE}:9"));
    w.guest_udp(guest4(40006), server, b"open");
    w.run_for(Duration::from_millis(10));
    let s = *w.host.udp_socks().keys().next().unwrap();
    for i in 0..150u32 {
        // One oversize datagram in the middle is dropped without disturbing the rest.
        let len = if i == 70 { 1473 } else { 100 + i as usize };
        let mut d = vec![0u8; len];
        d[..4].copy_from_slice(&i.to_be_bytes());
        w.host.udp_peer_send(s, &d);
    }
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 149));
    let got: Vec<u32> = w
        .udp_at_guest()
        .iter()
        .map(|d| u32::from_be_bytes(d.2[..4].try_into().unwrap()))
        .collect();
    let want: Vec<u32> = (0..150).filter(|&i| i != 70).collect();
    assert_eq!(got, want);
    assert!(w
        .udp_at_guest()
        .iter()
        .all(|d| d.2.len() == 100 + u32::from_be_bytes(d.2[..4].try_into().unwrap()) as usize));
    let c = &w.counters().udp;
    assert_eq!((c.datagrams_in, c.oversize_dropped), (149, 1));
}
