//! Configuration derivation scenarios on hand-built hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sans_io::config::derive::{Level, LOCAL_ADDR4, LOCAL_GATEWAY4, LOCAL_GATEWAY6};
use sans_io::config::{AddrChoice, Family, ListChoice, Mode, NetOptions};
use sans_io::fwd::ForwardMode;
use sans_io::wire::MacAddr;
use sim::Lab;

const MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The netlab host: veth0 with 198.51.100.2/24 and 2001:db8:1::2/64.
fn dual_stack() -> Lab {
    Lab::dual_stack(
        "veth0",
        "nameserver 203.0.113.53\nnameserver 2001:db8:2::53\nsearch lab.test\n",
    )
}

#[test]
fn dual_stack_host() {
    let d = dual_stack().derive(&NetOptions::new(Mode::Pasta)).unwrap();
    let c = d.config;
    assert!(!c.local_mode);
    let ip4 = c.ip4.as_ref().unwrap();
    assert_eq!(
        (ip4.addr, ip4.prefix_len, ip4.gateway),
        (v4("198.51.100.2"), 24, Some(v4("198.51.100.1")))
    );
    assert_eq!(ip4.our_addr, v4("198.51.100.1"));
    assert_eq!(ip4.map_host_loopback, Some(v4("198.51.100.1")));
    assert_eq!(ip4.template_if, "veth0");
    let ip6 = c.ip6.as_ref().unwrap();
    assert_eq!((ip6.addr, ip6.prefix_len), (v6("2001:db8:1::2"), 64));
    assert_eq!(ip6.gateway, Some(v6("fe80::1")));
    // A link-local gateway is also our own link-local address towards the guest.
    assert_eq!(ip6.our_addr, v6("fe80::1"));
    assert_eq!(c.our_mac, MacAddr(MAC));
    assert_eq!(c.host_mtu, Some(1500));
    assert_eq!(c.mtu, Some(65520));
    assert_eq!(c.ns_ifname, "veth0");
    assert_eq!(c.dns, vec![ip("203.0.113.53"), ip("2001:db8:2::53")]);
    assert_eq!(c.search, vec!["lab.test".to_owned()]);
    assert_eq!(ip4.dns_host, Some(v4("203.0.113.53")));
    // pasta: DNS and search not handed out unless asked; ports follow the namespace.
    assert!(!c.services.dhcp_dns && !c.services.dhcp_search);
    assert!(c.services.dhcp && c.services.ndp && c.services.ra && c.services.dhcpv6);
    assert_eq!(c.forwarding.tcp_in, ForwardMode::Auto);
    assert_eq!(c.forwarding.udp_out, ForwardMode::Auto);
    assert!(
        d.notices.iter().all(|n| n.level != Level::Warning),
        "{:?}",
        d.notices
    );
}

#[test]
fn passt_defaults_differ() {
    let c = dual_stack()
        .derive(&NetOptions::new(Mode::Passt))
        .unwrap()
        .config;
    assert!(c.services.dhcp_dns && c.services.dhcp_search);
    assert_eq!(c.forwarding.tcp_in, ForwardMode::None);
    assert_eq!(c.forwarding.udp_in, ForwardMode::None);
}

#[test]
fn offline_host_starts_in_local_mode() {
    // A laptop with only loopback, before the network is up.
    let mut lab = Lab::new();
    lab.link("wlan0", MAC, 1500);
    let d = lab.derive(&NetOptions::new(Mode::Pasta)).unwrap();
    let c = d.config;
    assert!(c.local_mode);
    let ip4 = c.ip4.unwrap();
    assert_eq!(
        (ip4.addr, ip4.prefix_len, ip4.gateway),
        (LOCAL_ADDR4, 16, Some(LOCAL_GATEWAY4))
    );
    assert!(c.services.dhcp);
    let ip6 = c.ip6.unwrap();
    assert_eq!(ip6.gateway, Some(LOCAL_GATEWAY6));
    assert!(ip6.addr.is_unspecified());
    assert_eq!(c.ns_ifname, "tap0");
    assert_eq!(c.our_mac, MacAddr::FALLBACK);
    assert!(d
        .notices
        .iter()
        .any(|n| n.level == Level::Warning && n.text.contains("local mode")));
}

#[test]
fn local_mode_keeps_the_users_addresses() {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.addr4 = Some(v4("10.0.2.100"));
    opts.prefix_len4 = Some(24);
    opts.gateway4 = Some(v4("10.0.2.2"));
    let c = Lab::new().derive(&opts).unwrap().config;
    assert!(c.local_mode);
    let ip4 = c.ip4.unwrap();
    assert_eq!(
        (ip4.addr, ip4.prefix_len, ip4.gateway),
        (v4("10.0.2.100"), 24, Some(v4("10.0.2.2")))
    );
}

#[test]
fn a_family_without_default_route_is_disabled_with_a_warning() {
    let mut lab = Lab::new();
    let eth = lab.link("eth0", MAC, 1500);
    lab.addr(eth, "192.0.2.2/24")
        .addr(eth, "2001:db8::2/64")
        .default_route(eth, "192.0.2.1", 0);
    let d = lab.derive(&NetOptions::new(Mode::Pasta)).unwrap();
    assert!(d.config.ip4.is_some());
    assert!(d.config.ip6.is_none());
    assert!(!d.config.services.ndp && !d.config.services.dhcpv6);
    assert!(d
        .notices
        .iter()
        .any(|n| n.level == Level::Warning && n.text.starts_with("IPv6 disabled")));
}

#[test]
fn lowest_metric_default_route_wins() {
    let mut lab = Lab::new();
    let a = lab.link("eth0", [2, 0, 0, 0, 0, 1], 1500);
    let b = lab.link("wlan0", [2, 0, 0, 0, 0, 2], 1400);
    lab.addr(a, "198.51.100.2/24")
        .default_route(a, "198.51.100.1", 600);
    lab.addr(b, "192.0.2.2/24")
        .default_route(b, "192.0.2.1", 100);
    let c = lab.derive(&NetOptions::new(Mode::Passt)).unwrap().config;
    let ip4 = c.ip4.unwrap();
    assert_eq!(ip4.template_if, "wlan0");
    assert_eq!(ip4.gateway, Some(v4("192.0.2.1")));
    assert_eq!(c.our_mac, MacAddr([2, 0, 0, 0, 0, 2]));
    assert_eq!(c.host_mtu, Some(1400));
}

#[test]
fn interface_option_overrides_the_default_route() {
    let mut lab = Lab::new();
    let a = lab.link("eth0", MAC, 1500);
    let b = lab.link("eth1", MAC, 1500);
    lab.addr(a, "198.51.100.2/24")
        .default_route(a, "198.51.100.1", 0);
    lab.addr(b, "192.0.2.2/24")
        .default_route(b, "192.0.2.1", 10);
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.interface = Some("eth1".into());
    let ip4 = lab.derive(&opts).unwrap().config.ip4.unwrap();
    assert_eq!(
        (ip4.template_if.as_str(), ip4.addr),
        ("eth1", v4("192.0.2.2"))
    );

    opts.interface = Some("nope0".into());
    let err = lab.derive(&opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--interface: no interface named 'nope0' on the host"
    );
}

#[test]
fn user_overrides() {
    let mut opts = NetOptions::new(Mode::Passt);
    opts.addr4 = Some(v4("10.0.2.15"));
    opts.gateway4 = Some(v4("10.0.2.2"));
    opts.our_mac = Some(MacAddr([2, 1, 2, 3, 4, 5]));
    opts.mtu = Some(0);
    opts.family = Family::V4Only;
    let c = dual_stack().derive(&opts).unwrap().config;
    let ip4 = c.ip4.unwrap();
    // Not a host address: the prefix comes from the address class.
    assert_eq!(
        (ip4.addr, ip4.prefix_len, ip4.gateway),
        (v4("10.0.2.15"), 8, Some(v4("10.0.2.2")))
    );
    // -a and -g mean: one address, the default route only.
    assert_eq!(ip4.guest_addrs.len(), 1);
    assert_eq!(ip4.guest_routes.len(), 1);
    assert_eq!(ip4.guest_routes[0].gateway, Some(ip("10.0.2.2")));
    assert!(c.ip6.is_none());
    assert_eq!(c.mtu, None);
    assert_eq!(c.our_mac, MacAddr([2, 1, 2, 3, 4, 5]));
    assert_eq!(c.dns, vec![ip("203.0.113.53")]);
}

#[test]
fn loopback_resolver_is_reached_through_the_gateway() {
    let mut lab = dual_stack();
    lab.resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n");
    let c = lab.derive(&NetOptions::new(Mode::Passt)).unwrap().config;
    assert_eq!(c.dns, vec![ip("198.51.100.1"), ip("fe80::1")]);
    assert_eq!(c.ip4.unwrap().dns_host, Some(v4("127.0.0.53")));

    // Without gateway mapping, a loopback resolver can't be handed out.
    let mut opts = NetOptions::new(Mode::Passt);
    opts.map_host_loopback4 = AddrChoice::Disabled;
    opts.map_host_loopback6 = AddrChoice::Disabled;
    let d = lab.derive(&opts).unwrap();
    assert!(d.config.dns.is_empty());
    assert!(d.notices.iter().any(|n| n.text.contains("nameserver")));
}

#[test]
fn dns_forward_is_what_the_guest_uses() {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.dns_forward4 = Some(v4("169.254.1.1"));
    opts.dns_host4 = Some(v4("203.0.113.54"));
    let c = dual_stack().derive(&opts).unwrap().config;
    assert_eq!(c.dns, vec![ip("169.254.1.1"), ip("2001:db8:2::53")]);
    let ip4 = c.ip4.unwrap();
    assert_eq!(ip4.dns_match, Some(v4("169.254.1.1")));
    assert_eq!(ip4.dns_host, Some(v4("203.0.113.54")));
}

#[test]
fn dns_and_search_given_or_disabled() {
    let mut opts = NetOptions::new(Mode::Passt);
    opts.dns = ListChoice::List(vec![ip("192.0.2.53")]);
    opts.search = ListChoice::Disabled;
    let c = dual_stack().derive(&opts).unwrap().config;
    assert_eq!(c.dns, vec![ip("192.0.2.53")]);
    assert!(c.search.is_empty());
    opts.dns = ListChoice::Disabled;
    assert!(dual_stack().derive(&opts).unwrap().config.dns.is_empty());
}

#[test]
fn map_options() {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.map_host_loopback4 = AddrChoice::Addr(v4("192.0.2.1"));
    opts.map_guest_addr4 = AddrChoice::Addr(v4("169.254.1.2"));
    opts.map_host_loopback6 = AddrChoice::Disabled;
    let c = dual_stack().derive(&opts).unwrap().config;
    let ip4 = c.ip4.unwrap();
    assert_eq!(ip4.map_host_loopback, Some(v4("192.0.2.1")));
    assert_eq!(ip4.map_guest_addr, Some(v4("169.254.1.2")));
    assert_eq!(c.ip6.unwrap().map_host_loopback, None);
}

#[test]
fn small_mtu_disables_ipv6() {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.mtu = Some(1000);
    let d = dual_stack().derive(&opts).unwrap();
    assert!(d.config.ip6.is_none());
    assert!(d.config.ip4.is_some());
}

#[test]
fn toggles() {
    let mut opts = NetOptions::new(Mode::Pasta);
    opts.no_dhcp = true;
    opts.no_ra = true;
    opts.no_tcp = true;
    opts.dhcp_dns = Some(true);
    let c = dual_stack().derive(&opts).unwrap().config;
    assert!(!c.services.dhcp && c.services.ndp && !c.services.ra && c.services.dhcpv6);
    assert!(!c.protocols.tcp && c.protocols.udp && c.protocols.icmp);
    assert!(c.services.dhcp_dns);
}
