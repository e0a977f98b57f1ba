//! Configuration derived from real kernel dumps (testdata/netlink, recorded in test-made
//! namespaces) and resolv.conf texts: the whole discovery path except the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use os_shim::netlink::parse_dump;
use sans_io::config::derive::{derive, Derived, Level};
use sans_io::config::resolv::ResolvConf;
use sans_io::config::{GuestAddr, GuestRoute, Mode, NetOptions};
use sans_io::wire::MacAddr;

const RESOLV: &str = "nameserver 203.0.113.53\nnameserver 2001:db8:2::53\nsearch lab.test\n";

fn scenario(name: &str, mode: Mode, resolv: &str) -> Derived {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/netlink")
        .join(name);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{name}/{f}: {e}"));
    let host = parse_dump(&read("links.bin"), &read("addrs.bin"), &read("routes.bin"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    derive(&NetOptions::new(mode), &host, &ResolvConf::parse(resolv)).expect("derive")
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn warnings(d: &Derived) -> Vec<&str> {
    d.notices
        .iter()
        .filter(|n| n.level == Level::Warning)
        .map(|n| n.text.as_str())
        .collect()
}

#[test]
fn dual_stack() {
    let d = scenario("dual-stack", Mode::Pasta, RESOLV);
    assert!(warnings(&d).is_empty(), "{:?}", d.notices);
    let c = d.config;
    let ip4 = c.ip4.as_ref().unwrap();
    assert_eq!(ip4.template_if, "veth0");
    assert_eq!(
        (ip4.addr, ip4.prefix_len, ip4.gateway),
        (v4("198.51.100.2"), 24, Some(v4("198.51.100.1")))
    );
    let ip6 = c.ip6.as_ref().unwrap();
    assert_eq!(
        (ip6.addr, ip6.prefix_len, ip6.gateway),
        (v6("2001:db8:1::2"), 64, Some(v6("2001:db8:1::1")))
    );
    // A global gateway: our link-local address is the host interface's.
    assert_eq!(ip6.our_addr, v6("fe80::ff:fe00:102"));
    assert_eq!(c.our_mac, MacAddr([2, 0, 0, 0, 1, 2]));
    assert_eq!(c.host_mtu, Some(1500));
    assert_eq!(c.dns, vec![ip("203.0.113.53"), ip("2001:db8:2::53")]);
    // --config-net copies the addresses and the default routes, not the kernel's prefix routes.
    assert_eq!(
        ip4.guest_addrs,
        vec![GuestAddr {
            addr: ip("198.51.100.2"),
            prefix_len: 24
        }]
    );
    assert_eq!(
        ip4.guest_routes,
        vec![GuestRoute {
            dst: ip("0.0.0.0"),
            dst_len: 0,
            gateway: Some(ip("198.51.100.1")),
            priority: 0,
            mtu: None
        }]
    );
    assert_eq!(ip6.guest_routes.len(), 1);
    assert_eq!(ip6.guest_routes[0].gateway, Some(ip("2001:db8:1::1")));
}

#[test]
fn ipv4_only_host() {
    let d = scenario("ipv4-only", Mode::Passt, RESOLV);
    assert!(d.config.ip4.is_some());
    assert!(d.config.ip6.is_none());
    assert!(
        warnings(&d).iter().any(|w| w.starts_with("IPv6 disabled")),
        "{:?}",
        d.notices
    );
    // The IPv6 resolver is of no use to an IPv4-only guest.
    assert_eq!(d.config.dns, vec![ip("203.0.113.53")]);
    assert!(!d.config.services.ndp && !d.config.services.dhcpv6 && d.config.services.dhcp);
}

#[test]
fn ipv6_only_host() {
    let d = scenario("ipv6-only", Mode::Passt, RESOLV);
    assert!(d.config.ip4.is_none());
    let ip6 = d.config.ip6.as_ref().unwrap();
    assert_eq!(ip6.addr, v6("2001:db8:1::2"));
    assert!(
        warnings(&d).iter().any(|w| w.starts_with("IPv4 disabled")),
        "{:?}",
        d.notices
    );
    assert!(!d.config.services.dhcp);
    assert_eq!(d.config.dns, vec![ip("2001:db8:2::53")]);
}

#[test]
fn two_default_routes_pick_the_lowest_metric() {
    let c = scenario("two-default-routes", Mode::Pasta, RESOLV).config;
    let ip4 = c.ip4.unwrap();
    assert_eq!(
        (ip4.template_if.as_str(), ip4.addr, ip4.gateway),
        ("veth2", v4("192.0.2.2"), Some(v4("192.0.2.1")))
    );
    let ip6 = c.ip6.unwrap();
    assert_eq!(
        (ip6.template_if.as_str(), ip6.addr),
        ("veth2", v6("2001:db8:2::2"))
    );
    assert_eq!(c.our_mac, MacAddr([2, 0, 0, 0, 2, 2]));
    assert_eq!(c.ns_ifname, "veth2");
    // Only routes through the template interface are copied.
    assert!(ip4
        .guest_routes
        .iter()
        .all(|r| r.gateway == Some(ip("192.0.2.1"))));
}

#[test]
fn no_default_route_means_local_mode() {
    let d = scenario("no-default-route", Mode::Pasta, RESOLV);
    assert!(d.config.local_mode);
    assert_eq!(d.config.ip4.as_ref().unwrap().addr, v4("169.254.2.1"));
    assert!(warnings(&d).iter().any(|w| w.contains("local mode")));
}

#[test]
fn link_local_ipv6_gateway() {
    let c = scenario("ipv6-ll-gateway", Mode::Passt, RESOLV).config;
    let ip6 = c.ip6.unwrap();
    assert_eq!(ip6.gateway, Some(v6("fe80::1")));
    // The router's link-local address is also ours towards the guest: NDP and DHCPv6 come
    // from the address the guest routes through.
    assert_eq!(ip6.our_addr, v6("fe80::1"));
    assert_eq!(ip6.map_host_loopback, Some(v6("fe80::1")));
    assert_eq!(ip6.addr, v6("2001:db8:1::2"));
}

#[test]
fn multipath_default_route_uses_its_first_leg() {
    let c = scenario("multipath", Mode::Pasta, RESOLV).config;
    let ip4 = c.ip4.unwrap();
    assert_eq!(
        (ip4.template_if.as_str(), ip4.gateway),
        ("veth0", Some(v4("198.51.100.1")))
    );
    let ip6 = c.ip6.unwrap();
    assert_eq!(
        (ip6.template_if.as_str(), ip6.gateway),
        ("veth0", Some(v6("2001:db8:1::1")))
    );
    // Only the leg through the template interface is copied.
    assert_eq!(ip4.guest_routes.len(), 1);
}

#[test]
fn stub_resolver_through_the_gateway() {
    let c = scenario(
        "dual-stack",
        Mode::Passt,
        "nameserver 127.0.0.53\noptions edns0\n",
    )
    .config;
    assert_eq!(c.dns, vec![ip("198.51.100.1")]);
    assert_eq!(c.ip4.unwrap().dns_host, Some(v4("127.0.0.53")));
}
