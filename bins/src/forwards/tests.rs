//! [`apply_forwards`] with real sockets, in network namespaces the test makes (a "host" for
//! `-t`/`-u` listeners, a "namespace" for `-T`/`-U` ones), so that nothing touches the
//! machine's network.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use os_shim::bypass::Bypass;
use os_shim::test_netns::{self, with_host_and_namespace};
use sans_io::config::derive::derive;
use sans_io::config::{Mode, NetOptions};
use sans_io::flow::Proto;
use sans_io::fwd::rule::{ForwardRule, ForwardTable};
use sans_io::fwd::PortSpec;

use super::*;
use crate::pasta::engine_for;

fn can_make_namespaces() -> bool {
    test_netns::can_make_namespaces("the forwarding table")
}

/// Whether something listens at `addr` (in this thread's namespace).
fn listening(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok()
}

/// The same inside namespace `ns`.
fn listening_in(ns: &OwnedFd, addr: &'static str) -> bool {
    let ns = ns.try_clone().unwrap();
    std::thread::spawn(move || {
        // SAFETY: affects this thread only.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        listening(addr)
    })
    .join()
    .unwrap()
}

fn tcp(port: u16) -> ForwardRule {
    ForwardRule::ports(Proto::Tcp, port, port)
}

/// pasta's engine on an empty host (local mode, both families) with `-t 8080 -u none` and
/// no `-T`/`-U`, its listeners open in `sockets`.
fn pasta(sockets: &mut Sockets) -> Engine {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.tcp_in
        .add("8080".parse::<PortSpec>().unwrap())
        .unwrap();
    for m in [&mut opts.udp_in, &mut opts.tcp_out, &mut opts.udp_out] {
        m.add(PortSpec::None).unwrap();
    }
    let config = derive(&opts, &Default::default(), &Default::default())
        .unwrap()
        .config;
    let mut engine = engine_for(config).unwrap();
    listen_at_start(&mut engine, sockets);
    engine
}

#[test]
fn inbound_rules_come_and_go_and_a_port_in_use_changes_nothing() {
    if !can_make_namespaces() {
        return;
    }
    with_host_and_namespace(|_| {
        let mut sockets = Sockets::new();
        let mut engine = pasta(&mut sockets);
        assert!(listening("127.0.0.1:8080") && listening("[::1]:8080"));

        // Another program has 9001: adding 9000 and 9001 fails, naming it, and 9000 is
        // not left listening.
        let other = TcpListener::bind("127.0.0.1:9001").unwrap();
        let mut table = engine.forwards().table(Direction::Inbound).clone();
        table.add(tcp(9000)).unwrap();
        table.add(tcp(9001)).unwrap();
        let before = engine.forwards().clone();
        let e =
            apply_forwards(&mut engine, &mut sockets, None, Direction::Inbound, table).unwrap_err();
        assert!(e.contains("TCP port 9001") && e.contains("in use"), "{e}");
        assert_eq!(engine.forwards(), &before);
        assert!(!listening("127.0.0.1:9000"));
        assert!(listening("127.0.0.1:8080"));
        drop(other);

        // 8080 goes, 9000 and a UDP port come: at once.
        let mut table = ForwardTable::new();
        table.add(tcp(9000)).unwrap();
        table
            .add(ForwardRule::ports(Proto::Udp, 5353, 5353))
            .unwrap();
        let done =
            apply_forwards(&mut engine, &mut sockets, None, Direction::Inbound, table).unwrap();
        assert_eq!((done.opened, done.closed), (4, 2));
        assert!(!listening("127.0.0.1:8080") && !listening("[::1]:8080"));
        assert!(listening("127.0.0.1:9000") && listening("[::1]:9000"));
        let udp: Vec<u16> = sockets.udp_listeners().map(|(_, a)| a.port()).collect();
        assert_eq!(udp, [5353, 5353]);
        assert_eq!(
            engine
                .forwards()
                .map_in(Proto::Udp, "127.0.0.1".parse().unwrap(), 5353),
            Some((None, 5353))
        );

        // And all of them go.
        apply_forwards(
            &mut engine,
            &mut sockets,
            None,
            Direction::Inbound,
            ForwardTable::new(),
        )
        .unwrap();
        assert!(!listening("127.0.0.1:9000"));
        assert_eq!(sockets.udp_listeners().count(), 0);
    });
}

#[test]
fn outbound_rules_listen_in_the_namespace() {
    if !can_make_namespaces() {
        return;
    }
    with_host_and_namespace(|ns| {
        let mut sockets = Sockets::new();
        sockets.set_bypass(Bypass::new(ns.try_clone().unwrap()));
        let mut engine = pasta(&mut sockets);
        let mut table = ForwardTable::new();
        table
            .add(ForwardRule {
                to: 6000,
                ..tcp(5000)
            })
            .unwrap();
        let done =
            apply_forwards(&mut engine, &mut sockets, None, Direction::Outbound, table).unwrap();
        assert_eq!(done.opened, 2, "127.0.0.1 and ::1");
        assert!(listening_in(&ns, "127.0.0.1:5000") && listening_in(&ns, "[::1]:5000"));
        assert!(!listening("127.0.0.1:5000"), "not on the host");
        let ports = sockets.bypass().unwrap().listening_ports(Proto::Tcp);
        assert_eq!(ports, [5000, 5000]);

        // A target address can't be served this way: refused, nothing changed.
        let mut table = engine.forwards().table(Direction::Outbound).clone();
        let mut to_elsewhere = tcp(5001);
        to_elsewhere.listen = sans_io::fwd::rule::Listen::Addr("127.0.0.1".parse().unwrap());
        to_elsewhere.target = Some("127.0.0.2".parse().unwrap());
        table.add(to_elsewhere).unwrap();
        let e = apply_forwards(&mut engine, &mut sockets, None, Direction::Outbound, table)
            .unwrap_err();
        assert!(e.contains("Target address not supported"), "{e}");

        apply_forwards(
            &mut engine,
            &mut sockets,
            None,
            Direction::Outbound,
            ForwardTable::new(),
        )
        .unwrap();
        assert!(!listening_in(&ns, "127.0.0.1:5000"));
    });
}

#[test]
fn auto_gives_up_the_ports_an_explicit_rule_names_and_keeps_following_the_rest() {
    if !can_make_namespaces() {
        return;
    }
    with_host_and_namespace(|ns| {
        // Servers in the namespace on 7000 and 7001; pasta's default, `auto`.
        let ns2 = ns.try_clone().unwrap();
        let servers = std::thread::spawn(move || {
            // SAFETY: affects this thread only.
            assert_eq!(
                unsafe { libc::setns(ns2.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            [7000, 7001].map(|p| TcpListener::bind(("127.0.0.1", p)).unwrap())
        })
        .join()
        .unwrap();
        let mut opts = NetOptions::new(Mode::Pasta);
        opts.udp_in.add(PortSpec::None).unwrap();
        let config = derive(&opts, &Default::default(), &Default::default())
            .unwrap()
            .config;
        let mut sockets = Sockets::new();
        sockets.set_bypass(Bypass::new(ns.try_clone().unwrap()));
        let mut engine = engine_for(config).unwrap();
        listen_at_start(&mut engine, &mut sockets);
        let mut auto = AutoForward::new(engine.config(), &ns).unwrap().unwrap();
        auto.update(&mut engine, &mut sockets);
        let mut ports: Vec<u16> = sockets.listening().map(|a| a.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [7000, 7000, 7001, 7001]);

        // 7000 becomes an explicit forward (to another port): auto lets go of it first.
        let mut table = ForwardTable::new();
        table
            .add(ForwardRule {
                to: 80,
                ..tcp(7000)
            })
            .unwrap();
        let done = apply_forwards(
            &mut engine,
            &mut sockets,
            Some(&mut auto),
            Direction::Inbound,
            table,
        )
        .unwrap();
        assert_eq!(done.opened, 2);
        auto.update(&mut engine, &mut sockets);
        let mut ports: Vec<u16> = sockets.listening().map(|a| a.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [7000, 7000, 7001, 7001], "no second listener");
        let local = "127.0.0.1".parse().unwrap();
        assert_eq!(
            engine.forwards().map_in(Proto::Tcp, local, 7000),
            Some((None, 80))
        );
        assert_eq!(
            engine.forwards().map_in(Proto::Tcp, local, 7001),
            Some((None, 7001))
        );

        // The rule goes: auto takes the port back at its next scan.
        apply_forwards(
            &mut engine,
            &mut sockets,
            Some(&mut auto),
            Direction::Inbound,
            ForwardTable::new(),
        )
        .unwrap();
        assert!(!listening("127.0.0.1:7000"));
        auto.update(&mut engine, &mut sockets);
        assert!(listening("127.0.0.1:7000"));
        drop(servers);
    });
}

#[test]
fn command_lines_that_make_too_many_rules_do_not_start() {
    let list: Vec<String> = (0..=256u16).map(|i| (1000 + 2 * i).to_string()).collect();
    let mut opts = NetOptions::new(Mode::Passt);
    opts.tcp_in
        .add(list.join(",").parse::<PortSpec>().unwrap())
        .unwrap();
    let config = derive(&opts, &Default::default(), &Default::default())
        .unwrap()
        .config;
    let e = engine_for(config).err().unwrap();
    assert_eq!(e, "port forwarding: Too many rules (maximum 256)");
}
