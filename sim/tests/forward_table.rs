//! The forwarding table changed while traffic flows (what the control socket and `pesto` do):
//! a deleted rule's listener goes at once and new connections are refused, while established
//! ones carry on byte-exact; a conflicting or impossible change changes nothing; the table's
//! bound; a rule's target address; `auto` beside explicit rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sans_io::flow::Proto;
use sans_io::fwd::apply::ForwardListeners;
use sans_io::fwd::forwards::{Direction, ForwardError, ListenSocket, ProtoKey};
use sans_io::fwd::rule::{Added, ForwardRule, ForwardTable, Listen, RuleError, MAX_RULES};
use sim::host::ConnState;
use sim::scenario::{addr, HOST_ADDR, REMOTE};
use sim::world::World;
use sim::{App, Pattern, Scenario};

fn host(port: u16) -> SocketAddr {
    SocketAddr::new(HOST_ADDR.parse().unwrap(), port)
}

fn tcp(first: u16, to: u16) -> ForwardRule {
    ForwardRule {
        to,
        ..ForwardRule::ports(Proto::Tcp, first, first)
    }
}

/// A table of `rules`, added as the control socket would (conflicts checked).
fn table(rules: &[ForwardRule]) -> ForwardTable {
    let mut t = ForwardTable::new();
    for r in rules {
        t.add(r.clone()).unwrap();
    }
    t
}

/// Whether remote client `id` was refused (or reset) rather than served.
fn refused(w: &World, id: sim::host::ConnId) -> bool {
    let c = w.host_conn(id);
    matches!(c.state, ConnState::Failed(_)) || c.peer_reset_at.is_some()
}

#[test]
fn a_bulk_transfer_survives_the_delete_of_its_rule_and_new_connections_are_refused() {
    let mut w = Scenario::new(171).forward_tcp("none").build();
    w.apply_forwards(Direction::Inbound, table(&[tcp(8080, 80)]))
        .unwrap();
    let g = w.guest_listen(80, App::source_pattern(Pattern(71), 2_000_000));
    let h = w.remote_connect(addr(&format!("{REMOTE}:40000")), host(8080), App::sink());
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.host_conn(h).received().len()
            > 200_000),
        "{}",
        w.diagnose()
    );

    // Deleted mid-transfer: its listeners go at once.
    let done = w
        .apply_forwards(Direction::Inbound, ForwardTable::new())
        .unwrap();
    assert_eq!((done.opened, done.closed), (0, 2), "both families' sockets");
    assert!(w.host.tcp_forwarding().is_empty());
    assert!(w.engine.forwards().table(Direction::Inbound).is_empty());
    let late = w.remote_connect(addr(&format!("{REMOTE}:40001")), host(8080), App::sink());

    assert!(
        w.run_until(Duration::from_secs(120), |w| w.host_conn(h).finished()
            && refused(w, late)),
        "{}",
        w.diagnose()
    );
    Pattern(71)
        .check(w.host_conn(h).received(), 2_000_000)
        .unwrap();
    assert!(w.guest_conn(g).done());
    assert_eq!(w.engine.counters().tcp.accepted, 1);
    w.assert_no_violations();
}

#[test]
fn a_conflicting_add_or_a_port_in_use_changes_nothing() {
    let mut w = Scenario::new(172).forward_tcp("8080:80").build();
    let before = w.engine.forwards().clone();
    let listening = w.host.tcp_forwarding().clone();

    // The control socket builds the new table from the one in use: an overlapping rule is a
    // conflict there, before the engine sees it; an identical one changes nothing.
    let mut t = w.engine.forwards().table(Direction::Inbound).clone();
    let mut overlapping = tcp(8000, 8000);
    overlapping.last = 8100;
    assert!(matches!(t.add(overlapping), Err(RuleError::Conflict(..))));
    assert_eq!(t.add(t.rules()[0].clone()), Ok(Added::AlreadyPresent));

    // A port another program holds: the whole change fails, naming it, and the other new
    // rule's listeners are undone.
    w.host
        .taken
        .insert((ProtoKey::Tcp, "0.0.0.0:9001".parse().unwrap()));
    t.add(tcp(9000, 9000)).unwrap();
    t.add(tcp(9001, 9001)).unwrap();
    let e = w.apply_forwards(Direction::Inbound, t).unwrap_err();
    assert!(matches!(e, ForwardError::Listen(_)));
    assert!(
        e.to_string().contains("TCP port 9001 (0.0.0.0)") && e.to_string().contains("in use"),
        "{e}"
    );
    assert_eq!(w.engine.forwards(), &before);
    assert_eq!(w.host.tcp_forwarding(), &listening);

    // And the forward in use still works.
    let g = w.guest_listen(80, App::echo());
    let h = w.remote_connect(
        addr(&format!("{REMOTE}:40000")),
        host(8080),
        App::source_pattern(Pattern(72), 10_000),
    );
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.host_conn(h).received().len()
            == 10_000),
        "{}",
        w.diagnose()
    );
    Pattern(72)
        .check(w.guest_conn(g).received(), 10_000)
        .unwrap();
    w.assert_no_violations();
}

#[test]
fn the_table_is_bounded() {
    let mut w = Scenario::new(173).forward_tcp("none").build();
    let rules: Vec<ForwardRule> = (0..MAX_RULES as u16)
        .map(|i| tcp(10_000 + 2 * i, 80))
        .collect();
    let mut t = table(&rules);
    assert_eq!(t.add(tcp(20_000, 80)), Err(RuleError::TooMany));
    w.apply_forwards(Direction::Inbound, t).unwrap();
    assert_eq!(
        w.engine.forwards().table(Direction::Inbound).len(),
        MAX_RULES
    );
    assert_eq!(w.host.tcp_forwarding().len(), 2 * MAX_RULES);
}

#[test]
fn a_target_address_rule_sends_the_guest_frames_to_that_address() {
    // The guest stands for the namespace and the container it routes to at once: it has
    // the container's address too.
    let container = Ipv4Addr::new(10, 88, 0, 2);
    let mut w = Scenario::new(174).forward_tcp("none").build();
    w.guest
        .add_ipv4(smoltcp::wire::Ipv4Cidr::new(container, 32));
    let mut rule = tcp(8080, 80);
    rule.listen = Listen::Addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    rule.target = Some(IpAddr::V4(container));
    w.apply_forwards(Direction::Inbound, table(&[rule]))
        .unwrap();
    assert_eq!(w.host.tcp_forwarding().len(), 1, "IPv4 only");

    // The guest has spoken from its own address: the engine knows it.
    w.guest_udp(host(1234), addr(&format!("{REMOTE}:9")), b"hello");
    assert!(w.run_until(Duration::from_secs(1), |w| w.engine.guest().addr4.is_some()));
    let g = w.guest_listen(80, App::echo());
    let client = addr(&format!("{REMOTE}:40000"));
    let h = w.remote_connect(client, host(8080), App::source_pattern(Pattern(74), 50_000));
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.host_conn(h).received().len()
            == 50_000),
        "{}",
        w.diagnose()
    );
    Pattern(74)
        .check(w.host_conn(h).received(), 50_000)
        .unwrap();
    // The container saw the client's own address, on its own address.
    assert_eq!(w.guest_conn(g).remote, Some(client));
    let to_guest = sim::capture::tcp_segments(&w.transcript);
    let syn = to_guest
        .iter()
        .find(|s| s.dir == sim::world::Direction::EngineToGuest)
        .unwrap();
    assert_eq!(syn.dst, SocketAddr::new(IpAddr::V4(container), 80));
    // Its answers didn't teach the engine that the guest's address changed.
    assert_eq!(
        w.engine.guest().addr4,
        Some(HOST_ADDR.parse::<Ipv4Addr>().unwrap())
    );
    w.assert_no_violations();
}

#[test]
fn a_target_address_rule_carries_datagrams_both_ways() {
    let container = Ipv4Addr::new(10, 88, 0, 2);
    let mut w = Scenario::new(177)
        .forward_udp("none")
        .forward_tcp("none")
        .build();
    let rule = ForwardRule {
        listen: Listen::Addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        to: 6000,
        target: Some(IpAddr::V4(container)),
        ..ForwardRule::ports(Proto::Udp, 5000, 5000)
    };
    w.apply_forwards(Direction::Inbound, table(&[rule]))
        .unwrap();
    let peer = addr(&format!("{REMOTE}:7777"));
    let at_container = SocketAddr::new(IpAddr::V4(container), 6000);
    assert!(w.host.remote_udp_send(peer, host(5000), b"request"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 1));
    assert_eq!(
        w.udp_at_guest()[0],
        (peer, at_container, b"request".to_vec())
    );
    // The answer, from the container, leaves from the port the peer wrote to.
    w.guest_udp(at_container, peer, b"answer");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.host.udp_log.is_empty()));
    let (local, dst, payload) = &w.host.udp_log[0];
    assert_eq!((local.port(), *dst), (5000, peer));
    assert_eq!(payload, b"answer");
    assert_ne!(w.engine.guest().addr4, Some(container));
    w.assert_no_violations();
}

#[test]
fn datagram_forwards_come_and_go_too() {
    let mut w = Scenario::new(175)
        .forward_udp("none")
        .forward_tcp("none")
        .build();
    let rule = ForwardRule {
        to: 6000,
        ..ForwardRule::ports(Proto::Udp, 5000, 5000)
    };
    w.apply_forwards(Direction::Inbound, table(&[rule]))
        .unwrap();
    // A conversation (more than four datagrams: a socket of its own), and two one-shot
    // exchanges still on the rule's listener: one answered, one waiting for its answer.
    let peer = addr(&format!("{REMOTE}:7777"));
    for n in 1..=5 {
        assert!(w.host.remote_udp_send(peer, host(5000), b"one"));
        assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == n));
    }
    assert_eq!(w.udp_at_guest()[0], (peer, host(6000), b"one".to_vec()));
    let asked = addr(&format!("{REMOTE}:7779"));
    assert!(w.host.remote_udp_send(asked, host(5000), b"query"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 6));
    let guest_end = w.udp_at_guest()[5].1;
    w.guest_udp(guest_end, asked, b"answer");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 1));
    let once = addr(&format!("{REMOTE}:7778"));
    assert!(w.host.remote_udp_send(once, host(5000), b"once"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 7));
    assert_eq!(w.engine.udp().len(), 3);
    let sockets = w.host.open_sockets();

    w.apply_forwards(Direction::Inbound, ForwardTable::new())
        .unwrap();
    // The conversation carries on (its socket takes the peer's datagrams). The exchange
    // waiting for its answer gets a socket of its own where the listener was (the one
    // socket opened); the answered one ends.
    let udp = &w.engine.counters().udp;
    assert_eq!((udp.exchanges_kept, udp.exchanges_ended), (1, 1));
    assert_eq!(w.engine.udp().len(), 2);
    assert_eq!(w.host.open_sockets(), sockets + 1);
    assert!(w.host.remote_udp_send(peer, host(5000), b"two"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 8));
    // The guest's late answer reaches the waiting peer from the port it wrote to, and
    // the peer's next datagram still reaches the guest.
    w.guest_udp(guest_end, once, b"late answer");
    assert!(w.run_until(Duration::from_secs(1), |w| w.host.udp_log.len() == 2));
    let (local, dst, payload) = &w.host.udp_log[1];
    assert_eq!(
        (local.port(), *dst, &payload[..]),
        (5000, once, &b"late answer"[..])
    );
    assert!(w.host.remote_udp_send(once, host(5000), b"again"));
    assert!(w.run_until(Duration::from_secs(1), |w| w.udp_at_guest().len() == 9));
    assert_eq!(w.udp_at_guest()[8], (once, guest_end, b"again".to_vec()));
    // Nothing is listening for the answered peer or a new one.
    assert!(!w.host.remote_udp_send(asked, host(5000), b"query again"));
    let stranger = addr(&format!("{REMOTE}:8888"));
    assert!(!w.host.remote_udp_send(stranger, host(5000), b"three"));
    w.assert_no_violations();
}

#[test]
fn auto_keeps_working_beside_explicit_rules_added_later() {
    // pasta's default: auto, which the driver follows by scanning; here the scan's listener
    // on port 22 is opened by hand.
    let mut w = Scenario::new(176).build();
    assert!(w.engine.forwards().auto(Direction::Inbound, Proto::Tcp));
    let scanned = ListenSocket {
        proto: ProtoKey::Tcp,
        addr: "0.0.0.0:22".parse().unwrap(),
        iface: None,
        to: None,
    };
    w.host.open_listener(Direction::Inbound, &scanned).unwrap();
    w.apply_forwards(Direction::Inbound, table(&[tcp(8080, 80)]))
        .unwrap();
    assert!(w
        .engine
        .forwards()
        .claims(Direction::Inbound, Proto::Tcp, 8080));

    let ssh = w.guest_listen(22, App::echo());
    let web = w.guest_listen(80, App::echo());
    let a = w.remote_connect(
        addr(&format!("{REMOTE}:40000")),
        host(22),
        App::source_pattern(Pattern(761), 5000),
    );
    let b = w.remote_connect(
        addr(&format!("{REMOTE}:40001")),
        host(8080),
        App::source_pattern(Pattern(762), 5000),
    );
    assert!(
        w.run_until(Duration::from_secs(30), |w| {
            w.host_conn(a).received().len() == 5000 && w.host_conn(b).received().len() == 5000
        }),
        "{}",
        w.diagnose()
    );
    Pattern(761)
        .check(w.guest_conn(ssh).received(), 5000)
        .unwrap();
    Pattern(762)
        .check(w.guest_conn(web).received(), 5000)
        .unwrap();
    w.assert_no_violations();
}
