//! UDP flows, host to guest (`-u`): a datagram on a forwarding listener reaches the guest's
//! forwarded port from the peer as translated; the guest's answer leaves from the port the
//! peer wrote to, through the flow's reply socket, which also takes the peer's next datagrams
//! ("recently forwarded" tracking); loopback peers appear from the gateway and the guest's
//! answers to the gateway go back to them; UDP follows TCP's ports when `-u` isn't given;
//! bounded table, idle expiry, `--no-udp`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sim::scenario::{addr, GATEWAY, HOST_ADDR, REMOTE};
use sim::world::World;
use sim::Scenario;

/// Both sides of the exchange, as text for snapshots: what the guest got, and what the host
/// sockets sent (from which local address, to whom).
fn story(w: &World) -> String {
    let mut s = String::new();
    for (src, dst, p) in w.udp_at_guest() {
        let _ = writeln!(
            s,
            "guest got  {src} -> {dst} {:?}",
            String::from_utf8_lossy(&p)
        );
    }
    for (local, dst, p) in &w.host.udp_log {
        let _ = writeln!(
            s,
            "host sent  {local} -> {dst} {:?}",
            String::from_utf8_lossy(p)
        );
    }
    s
}

fn guest4(port: u16) -> SocketAddr {
    SocketAddr::new(HOST_ADDR.parse().unwrap(), port)
}

fn guest6(w: &World, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(w.engine.config().ip6.as_ref().unwrap().addr),
        port,
    )
}

#[test]
fn forwarded_datagram_reaches_the_guest_and_the_answer_leaves_from_the_forwarded_port() {
    let mut w = Scenario::new(11).forward_udp("5000:6000").build();
    let peer = addr(&format!("{REMOTE}:7777"));
    assert!(w.host.remote_udp_send(peer, guest4(5000), b"request"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    assert_eq!(
        w.udp_at_guest()[0],
        (peer, guest4(6000), b"request".to_vec())
    );

    w.guest_udp(guest4(6000), peer, b"answer");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.udp_log.is_empty()));
    assert_eq!(
        w.host.udp_log[0],
        (guest4(5000), peer, b"answer".to_vec()),
        "answer leaves from the port the peer wrote to"
    );

    // The peer's next datagram comes through the listener too (a one-shot exchange has no
    // socket of its own), and on to the guest.
    assert!(w.host.remote_udp_send(peer, guest4(5000), b"again"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 2));
    let c = &w.counters().udp;
    assert_eq!(
        (
            c.flows_opened,
            c.flows_inbound,
            c.datagrams_in,
            c.datagrams_out
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(w.engine.udp().len(), 1);
    insta::assert_snapshot!(story(&w), @r#"
    guest got  203.0.113.10:7777 -> 198.51.100.2:6000 "request"
    guest got  203.0.113.10:7777 -> 198.51.100.2:6000 "again"
    host sent  198.51.100.2:5000 -> 203.0.113.10:7777 "answer"
    "#);
    w.assert_no_violations();
}

#[test]
fn a_burst_on_the_listener_is_read_in_batches_each_datagram_on_its_peers_flow() {
    let mut w = Scenario::new(17).forward_udp("5000").build();
    let peers: Vec<SocketAddr> = (0..3)
        .map(|i| addr(&format!("{REMOTE}:{}", 7000 + i)))
        .collect();
    // Queued on the listener before the engine reads any: 90, three peers interleaved.
    let mut sent = Vec::new();
    for n in 0..30 {
        for &peer in &peers {
            let payload = format!("{peer} #{n}").into_bytes();
            assert!(w.host.remote_udp_send(peer, guest4(5000), &payload));
            sent.push((peer, guest4(5000), payload));
        }
    }
    let receives = w.host.stats.udp_receives;
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 90));
    assert_eq!(w.udp_at_guest(), sent, "in order, each from its own peer");
    let c = &w.counters().udp;
    assert_eq!((c.flows_inbound, c.datagrams_in), (3, 90));
    // 32 at a time (and a last receive that finds none), not one each.
    let calls = w.host.stats.udp_receives - receives;
    assert!(calls <= 4, "{calls} receive calls for 90 datagrams");
    w.assert_no_violations();
}

#[test]
fn ipv6_forwarding_and_separate_flows_per_peer() {
    let mut w = Scenario::new(12).forward_udp("5353").build();
    let host6 = guest6(&w, 5353);
    let (p1, p2) = (addr("[2001:db8:2::10]:1000"), addr("[2001:db8:2::11]:1000"));
    assert!(w.host.remote_udp_send(p1, host6, b"one"));
    assert!(w.host.remote_udp_send(p2, host6, b"two"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 2));
    w.guest_udp(host6, p2, b"to two");
    w.guest_udp(host6, p1, b"to one");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 2));
    assert_eq!(w.engine.udp().len(), 2);
    insta::assert_snapshot!(story(&w), @r#"
    guest got  [2001:db8:2::10]:1000 -> [2001:db8:1::2]:5353 "one"
    guest got  [2001:db8:2::11]:1000 -> [2001:db8:1::2]:5353 "two"
    host sent  [2001:db8:1::2]:5353 -> [2001:db8:2::11]:1000 "to two"
    host sent  [2001:db8:1::2]:5353 -> [2001:db8:2::10]:1000 "to one"
    "#);
    w.assert_no_violations();
}

#[test]
fn loopback_peers_appear_from_the_gateway_and_answers_to_it_go_back() {
    // Through the tap: the loopback bypass off.
    let mut w = Scenario::new(13)
        .options(|o| o.no_splice = true)
        .forward_udp("5000")
        .build();
    let peer = addr("127.0.0.1:40404");
    assert!(w
        .host
        .remote_udp_send(peer, addr("127.0.0.1:5000"), b"local"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    let gw = addr(&format!("{GATEWAY}:40404"));
    assert_eq!(w.udp_at_guest()[0], (gw, guest4(5000), b"local".to_vec()));
    // The answer to the gateway goes to the loopback peer through the forwarded flow, not
    // through a new outbound flow.
    w.guest_udp(guest4(5000), gw, b"reply");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.udp_log.is_empty()));
    assert_eq!(
        w.host.udp_log[0],
        (addr("127.0.0.1:5000"), peer, b"reply".to_vec())
    );
    assert_eq!(w.counters().udp.flows_opened, 1);
    w.assert_no_violations();
}

#[test]
fn udp_follows_tcp_ports_when_u_is_not_given() {
    let mut w = Scenario::new(14).forward_tcp("8080:80").build();
    let peer = addr(&format!("{REMOTE}:9999"));
    assert!(
        w.host.remote_udp_send(peer, guest4(8080), b"follow"),
        "a UDP listener on TCP's port"
    );
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    // Same port number, without TCP's translation.
    assert_eq!(w.udp_at_guest()[0].1, guest4(8080));
    assert!(!w.host.remote_udp_send(peer, guest4(80), b"x"));

    // An explicit -u overrides it.
    let mut w = Scenario::new(15)
        .forward_tcp("8080:80")
        .forward_udp("none")
        .build();
    assert!(!w.host.remote_udp_send(peer, guest4(8080), b"x"));
}

#[test]
fn inbound_flows_expire_and_the_listener_stays() {
    let mut w = Scenario::new(16).forward_udp("5000").build();
    let listeners = w.host.udp_socks().len();
    assert_eq!(listeners, 2, "one per family");
    let peer = addr(&format!("{REMOTE}:7777"));
    w.host.remote_udp_send(peer, guest4(5000), b"hi");
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    assert_eq!(
        w.host.udp_socks().len(),
        listeners,
        "a one-shot exchange takes no socket"
    );
    // A one-shot datagram: the flow goes after the short idle time.
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(300), |w| w.engine.udp().is_empty()));
    assert!(w.now - t0 <= sans_io::flow::idle::ONE_SHOT_TIMEOUT);
    assert_eq!(w.host.udp_socks().len(), listeners);
    assert_eq!(w.counters().udp.flows_expired, 1);
    // And a new datagram opens a new flow; more of them make it a conversation, which keeps
    // the long idle time.
    for n in 2..=6 {
        w.host.remote_udp_send(peer, guest4(5000), b"back");
        assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == n));
    }
    assert_eq!(
        w.host.udp_socks().len(),
        listeners + 1,
        "a conversation has one"
    );
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(300), |w| w.engine.udp().is_empty()));
    let waited = w.now - t0;
    assert!(
        waited >= Duration::from_secs(179) && waited <= Duration::from_secs(181),
        "{waited:?}"
    );
    assert_eq!(w.counters().udp.flows_inbound, 2);
    assert_eq!(w.host.udp_socks().len(), listeners);
}

#[test]
fn one_shot_exchanges_are_answered_from_the_listener_without_sockets_of_their_own() {
    // A DNS server's load: each query from a port of its own, each answered once.
    let mut w = Scenario::new(18).forward_udp("53").build();
    let listeners = w.host.udp_socks().len();
    let peers: Vec<SocketAddr> = (0..50)
        .map(|i| addr(&format!("{REMOTE}:{}", 40000 + i)))
        .collect();
    for (i, &peer) in peers.iter().enumerate() {
        assert!(w
            .host
            .remote_udp_send(peer, guest4(53), format!("q{i}").as_bytes()));
    }
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 50));
    for (i, &peer) in peers.iter().enumerate().rev() {
        w.guest_udp(guest4(53), peer, format!("a{i}").as_bytes());
    }
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 50));
    for (i, (local, dst, payload)) in w.host.udp_log.iter().rev().enumerate() {
        assert_eq!(
            (*local, *dst, payload.as_slice()),
            (guest4(53), peers[i], format!("a{i}").as_bytes()),
            "each answer leaves from the port its query came to"
        );
    }
    assert_eq!(
        w.host.udp_socks().len(),
        listeners,
        "no socket for any of them"
    );
    let c = &w.counters().udp;
    assert_eq!(
        (c.flows_inbound, c.flows_promoted, c.datagrams_out),
        (50, 0, 50)
    );
    w.assert_no_violations();
}

#[test]
fn an_exchange_on_the_listener_follows_the_guest_to_a_new_address() {
    // The guest moves to another address between a peer's datagrams (the fuzzer found the
    // second datagram's flow colliding with the first's, both on the listener, for the same
    // peer): the new one replaces the stale one.
    let mut w = Scenario::new(20).forward_udp("5000").build();
    let peer = addr(&format!("{REMOTE}:7777"));
    assert!(w.host.remote_udp_send(peer, guest4(5000), b"one"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    let moved: SocketAddr = "198.51.100.77:5000".parse().unwrap();
    w.guest_udp(moved, addr(&format!("{REMOTE}:9")), b"from the new address");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.udp_log.is_empty()));
    assert!(w.host.remote_udp_send(peer, guest4(5000), b"two"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 2));
    assert_eq!(w.udp_at_guest()[1], (peer, moved, b"two".to_vec()));
    // The answer from the new address goes to the peer from the forwarded port.
    w.guest_udp(moved, peer, b"answer");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 2));
    assert_eq!(w.host.udp_log[1].1, peer);
    assert_eq!(w.host.udp_log[1].0.port(), 5000);
    w.assert_no_violations();
}

#[test]
fn an_exchange_that_becomes_a_conversation_gets_a_socket_of_its_own() {
    let mut w = Scenario::new(19).forward_udp("5000").build();
    let listeners = w.host.udp_socks().len();
    let peer = addr(&format!("{REMOTE}:7777"));
    for n in 1..=3 {
        assert!(w.host.remote_udp_send(peer, guest4(5000), b"ping"));
        assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == n));
    }
    // The fifth datagram both ways makes it a conversation: the answer that is it goes out
    // through the flow's own socket, from the same port as the one before.
    w.guest_udp(guest4(5000), peer, b"pong 1");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 1));
    assert_eq!(w.host.udp_socks().len(), listeners);
    w.guest_udp(guest4(5000), peer, b"pong 2");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 2));
    assert_eq!(w.host.udp_socks().len(), listeners + 1);
    assert!(w
        .host
        .udp_log
        .iter()
        .all(|(local, dst, _)| (*local, *dst) == (guest4(5000), peer)));
    // The peer's next datagrams come to that socket (the host's demultiplexing), on to the
    // same flow.
    assert!(w.host.remote_udp_send(peer, guest4(5000), b"ping 4"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 4));
    let c = &w.counters().udp;
    assert_eq!((c.flows_inbound, c.flows_promoted), (1, 1));
    assert_eq!(w.engine.udp().len(), 1);
    w.assert_no_violations();
}

#[test]
fn a_full_table_of_active_flows_drops_new_peers_not_existing_flows() {
    let mut w = Scenario::new(17)
        .forward_udp("5000")
        .engine(|o| o.max_udp_flows = 1)
        .build();
    let (p1, p2) = (addr(&format!("{REMOTE}:1")), addr(&format!("{REMOTE}:2")));
    w.host.remote_udp_send(p1, guest4(5000), b"first");
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    // Within a millisecond or so: p1's flow is active, and may not be evicted.
    w.host.remote_udp_send(p2, guest4(5000), b"second");
    w.host.remote_udp_send(p1, guest4(5000), b"third");
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 2));
    let got: Vec<Vec<u8>> = w.udp_at_guest().into_iter().map(|d| d.2).collect();
    assert_eq!(got, [b"first".to_vec(), b"third".to_vec()]);
    assert_eq!(w.counters().udp.table_full, 1);
}

#[test]
fn no_udp_opens_no_listeners() {
    let w = Scenario::new(18)
        .forward_udp("5000")
        .config(|c| c.protocols.udp = false)
        .build();
    assert!(w.host.udp_socks().is_empty());
}
