//! Host discovery from canned rtnetlink dumps (`testdata/netlink/*/`, recorded in network
//! namespaces by `testdata/netlink/record.sh`), plus one live dump in a fresh namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// The real-OS tests' one prerequisite check (shared by path with bins/tests).
#[path = "../../bins/tests/common/prereq.rs"]
mod prereq;

use os_shim::netlink::{parse_addrs, parse_dump, parse_links, parse_routes, Netlink};
use prereq::Need;
use proptest::prelude::*;
use sans_io::config::host::{
    addr_flags, route_type, scope, HostAddr, HostLink, HostNet, HostRoute, NextHop,
};
use sans_io::wire::MacAddr;

const SCENARIOS: [&str; 7] = [
    "dual-stack",
    "ipv4-only",
    "ipv6-only",
    "two-default-routes",
    "no-default-route",
    "ipv6-ll-gateway",
    "multipath",
];

/// rtm_protocol values seen in the dumps.
const PROTO_KERNEL: u8 = 2;
const PROTO_BOOT: u8 = 3;

fn raw(scenario: &str, file: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "testdata",
        "netlink",
        scenario,
        file,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(scenario: &str) -> HostNet {
    parse_dump(
        &raw(scenario, "links.bin"),
        &raw(scenario, "addrs.bin"),
        &raw(scenario, "routes.bin"),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"))
}

fn v4(s: &str) -> IpAddr {
    s.parse::<Ipv4Addr>().unwrap().into()
}

fn v6(s: &str) -> IpAddr {
    s.parse::<Ipv6Addr>().unwrap().into()
}

fn lo() -> HostLink {
    HostLink {
        index: 1,
        name: "lo".into(),
        mac: Some(MacAddr([0; 6])),
        mtu: 65536,
        up: true,
        loopback: true,
    }
}

fn veth(index: u32, name: &str, mac: [u8; 6]) -> HostLink {
    HostLink {
        index,
        name: name.into(),
        mac: Some(MacAddr(mac)),
        mtu: 1500,
        up: true,
        loopback: false,
    }
}

const VETH0_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const VETH2_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];

fn addr(ifindex: u32, addr: IpAddr, prefix_len: u8, scope: u8, flags: u32) -> HostAddr {
    HostAddr {
        ifindex,
        addr,
        prefix_len,
        scope,
        flags,
    }
}

fn lo_v4() -> HostAddr {
    addr(1, v4("127.0.0.1"), 8, scope::HOST, addr_flags::PERMANENT)
}

fn lo_v6() -> HostAddr {
    addr(1, v6("::1"), 128, scope::HOST, addr_flags::PERMANENT)
}

/// A global address we added: permanent (and nodad for IPv6).
fn global(ifindex: u32, a: IpAddr, prefix_len: u8) -> HostAddr {
    let flags = match a {
        IpAddr::V4(_) => addr_flags::PERMANENT,
        IpAddr::V6(_) => addr_flags::PERMANENT | addr_flags::NODAD,
    };
    addr(ifindex, a, prefix_len, scope::UNIVERSE, flags)
}

/// The EUI-64 link-local address of a link, after DAD.
fn link_local(ifindex: u32, a: &str) -> HostAddr {
    addr(ifindex, v6(a), 64, scope::LINK, addr_flags::PERMANENT)
}

fn hop(gateway: Option<IpAddr>, oif: u32) -> NextHop {
    NextHop {
        gateway,
        oif: Some(oif),
    }
}

/// A route as `ip route add ... via GW [metric N]` makes it.
fn via(dst: IpAddr, dst_len: u8, gw: IpAddr, oif: u32, priority: u32) -> HostRoute {
    HostRoute {
        dst,
        dst_len,
        nexthops: vec![hop(Some(gw), oif)],
        priority,
        protocol: PROTO_BOOT,
        scope: scope::UNIVERSE,
        kind: route_type::UNICAST,
        pref_src: None,
        mtu: None,
    }
}

fn default4(gw: &str, oif: u32, priority: u32) -> HostRoute {
    via(Ipv4Addr::UNSPECIFIED.into(), 0, v4(gw), oif, priority)
}

fn default6(gw: &str, oif: u32, priority: u32) -> HostRoute {
    via(Ipv6Addr::UNSPECIFIED.into(), 0, v6(gw), oif, priority)
}

/// The kernel's prefix route for an IPv4 address.
fn connected4(dst: &str, dst_len: u8, oif: u32, src: &str) -> HostRoute {
    HostRoute {
        dst: v4(dst),
        dst_len,
        nexthops: vec![hop(None, oif)],
        priority: 0,
        protocol: PROTO_KERNEL,
        scope: scope::LINK,
        kind: route_type::UNICAST,
        pref_src: Some(v4(src)),
        mtu: None,
    }
}

/// The kernel's prefix route for an IPv6 address (metric 256, scope universe, no source).
fn connected6(dst: &str, dst_len: u8, oif: u32) -> HostRoute {
    HostRoute {
        dst: v6(dst),
        dst_len,
        nexthops: vec![hop(None, oif)],
        priority: 256,
        protocol: PROTO_KERNEL,
        scope: scope::UNIVERSE,
        kind: route_type::UNICAST,
        pref_src: None,
        mtu: None,
    }
}

fn defaults(net: &HostNet) -> Vec<&HostRoute> {
    net.routes.iter().filter(|r| r.is_default()).collect()
}

#[test]
fn dual_stack() {
    let net = load("dual-stack");
    assert_eq!(net.links, vec![lo(), veth(2, "veth0", VETH0_MAC)]);
    assert_eq!(
        net.link_by_name("veth0").unwrap().mac.unwrap().to_string(),
        "02:00:00:00:01:02"
    );
    assert_eq!(
        net.addrs,
        vec![
            lo_v4(),
            global(2, v4("198.51.100.2"), 24),
            lo_v6(),
            global(2, v6("2001:db8:1::2"), 64),
            link_local(2, "fe80::ff:fe00:102"),
        ]
    );
    // IPv4 routes first (the default one leads the trie walk), IPv6 ones after, the
    // default route last.
    assert_eq!(
        net.routes,
        vec![
            default4("198.51.100.1", 2, 0),
            connected4("198.51.100.0", 24, 2, "198.51.100.2"),
            connected6("2001:db8:1::", 64, 2),
            connected6("fe80::", 64, 2),
            default6("2001:db8:1::1", 2, 1024),
        ]
    );
}

#[test]
fn ipv4_only() {
    let net = load("ipv4-only");
    assert_eq!(net.links, vec![lo(), veth(2, "veth0", VETH0_MAC)]);
    // IPv6 is off on veth0 only: lo keeps ::1.
    assert_eq!(
        net.addrs,
        vec![lo_v4(), global(2, v4("198.51.100.2"), 24), lo_v6()]
    );
    assert_eq!(
        net.routes,
        vec![
            default4("198.51.100.1", 2, 0),
            connected4("198.51.100.0", 24, 2, "198.51.100.2"),
        ]
    );
}

#[test]
fn ipv6_only() {
    let net = load("ipv6-only");
    assert_eq!(net.links, vec![lo(), veth(2, "veth0", VETH0_MAC)]);
    assert_eq!(
        net.addrs,
        vec![
            lo_v4(),
            lo_v6(),
            global(2, v6("2001:db8:1::2"), 64),
            link_local(2, "fe80::ff:fe00:102"),
        ]
    );
    assert!(net.addrs.iter().all(|a| a.ifindex == 1 || a.addr.is_ipv6()));
    assert_eq!(
        net.routes,
        vec![
            connected6("2001:db8:1::", 64, 2),
            connected6("fe80::", 64, 2),
            default6("2001:db8:1::1", 2, 1024),
        ]
    );
}

#[test]
fn two_default_routes() {
    let net = load("two-default-routes");
    assert_eq!(
        net.links,
        vec![
            lo(),
            veth(2, "veth0", VETH0_MAC),
            veth(3, "veth2", VETH2_MAC)
        ]
    );
    assert_eq!(
        net.addrs,
        vec![
            lo_v4(),
            global(2, v4("198.51.100.2"), 24),
            global(3, v4("192.0.2.2"), 24),
            lo_v6(),
            global(2, v6("2001:db8:1::2"), 64),
            link_local(2, "fe80::ff:fe00:102"),
            global(3, v6("2001:db8:2::2"), 64),
            link_local(3, "fe80::ff:fe00:202"),
        ]
    );
    // The metric-100 routes were added first: the kernel dumps by metric anyway.
    assert_eq!(
        defaults(&net),
        vec![
            &default4("192.0.2.1", 3, 50),
            &default4("198.51.100.1", 2, 100),
            &default6("2001:db8:2::1", 3, 50),
            &default6("2001:db8:1::1", 2, 100),
        ]
    );
    assert!(net
        .routes
        .contains(&connected4("192.0.2.0", 24, 3, "192.0.2.2")));
    assert!(net.routes.contains(&connected6("2001:db8:2::", 64, 3)));
    assert_eq!(net.routes.len(), 10);
}

#[test]
fn no_default_route() {
    let net = load("no-default-route");
    assert_eq!(net.links, vec![lo(), veth(2, "veth0", VETH0_MAC)]);
    assert_eq!(net.addrs.len(), 5);
    assert!(defaults(&net).is_empty());
    // 203.0.113.0/24 via 198.51.100.1 dev veth0 src 198.51.100.2 mtu 1400 metric 7
    let mut r4 = via(v4("203.0.113.0"), 24, v4("198.51.100.1"), 2, 7);
    r4.pref_src = Some(v4("198.51.100.2"));
    r4.mtu = Some(1400);
    // 2001:db8:99::/48 via 2001:db8:1::1 dev veth0 mtu 1280
    let mut r6 = via(v6("2001:db8:99::"), 48, v6("2001:db8:1::1"), 2, 1024);
    r6.mtu = Some(1280);
    assert_eq!(
        net.routes,
        vec![
            connected4("198.51.100.0", 24, 2, "198.51.100.2"),
            r4,
            connected6("2001:db8:1::", 64, 2),
            r6,
            connected6("fe80::", 64, 2),
        ]
    );
}

#[test]
fn ipv6_link_local_gateway() {
    let net = load("ipv6-ll-gateway");
    assert_eq!(net.links, vec![lo(), veth(2, "veth0", VETH0_MAC)]);
    assert_eq!(
        defaults(&net),
        vec![
            &default4("198.51.100.1", 2, 0),
            &default6("fe80::1", 2, 1024)
        ]
    );
    assert!(net.addrs.contains(&global(2, v6("2001:db8:1::2"), 64)));
}

#[test]
fn multipath() {
    let net = load("multipath");
    assert_eq!(
        net.links,
        vec![
            lo(),
            veth(2, "veth0", VETH0_MAC),
            veth(3, "veth2", VETH2_MAC)
        ]
    );
    let legs4 = vec![
        hop(Some(v4("198.51.100.1")), 2),
        hop(Some(v4("192.0.2.1")), 3),
    ];
    let legs6 = vec![
        hop(Some(v6("2001:db8:1::1")), 2),
        hop(Some(v6("2001:db8:2::1")), 3),
    ];
    let mut d4 = default4("198.51.100.1", 2, 0);
    d4.nexthops = legs4;
    let mut d6 = default6("2001:db8:1::1", 2, 1024);
    d6.nexthops = legs6;
    // IPv6 siblings are dumped as one route with RTA_MULTIPATH, like IPv4's.
    assert_eq!(defaults(&net), vec![&d4, &d6]);
    assert!(d4.uses_link(3) && d6.uses_link(2));
    assert_eq!(net.routes.len(), 8);
}

#[test]
fn every_scenario_parses_and_routes_are_main_table_only() {
    for s in SCENARIOS {
        let net = load(s);
        assert!(!net.links.is_empty(), "{s}");
        // The raw route dumps hold the local table too (local, broadcast, multicast routes);
        // none of those may come through.
        assert!(
            net.routes.iter().all(|r| r.kind == route_type::UNICAST),
            "{s}: {:?}",
            net.routes
        );
        for r in &net.routes {
            assert!(!r.nexthops.is_empty(), "{s}: {r:?}");
            for h in &r.nexthops {
                assert!(net.link(h.oif.unwrap()).is_some(), "{s}: {r:?}");
            }
        }
    }
}

#[test]
fn truncated_dumps_are_errors() {
    for s in SCENARIOS {
        for file in ["links.bin", "addrs.bin", "routes.bin"] {
            let buf = raw(s, file);
            let parse = |b: &[u8]| match file {
                "links.bin" => parse_links(b).map(drop),
                "addrs.bin" => parse_addrs(b).map(drop),
                _ => parse_routes(b).map(drop),
            };
            parse(&buf).unwrap();
            // Cutting anywhere loses NLMSG_DONE at least.
            for cut in [buf.len() - 1, buf.len() - 20, buf.len() / 2, 3] {
                let err = parse(&buf[..cut]).unwrap_err();
                assert!(!err.to_string().is_empty());
            }
        }
    }
}

fn all_raw() -> &'static Vec<Vec<u8>> {
    static RAW: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RAW.get_or_init(|| {
        SCENARIOS
            .iter()
            .flat_map(|s| ["links.bin", "addrs.bin", "routes.bin"].map(|f| raw(s, f)))
            .collect()
    })
}

proptest! {
    // PROPTEST_CASES=N for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_links(&bytes);
        let _ = parse_addrs(&bytes);
        let _ = parse_routes(&bytes);
        let _ = parse_dump(&bytes, &bytes, &bytes);
    }

    /// Real dumps with some bytes overwritten: reaches the attribute decoders.
    #[test]
    fn corrupted_dumps_never_panic(
        which in 0..21usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = all_raw()[which].clone();
        for (at, byte) in edits {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        let keep = cut.index(buf.len() + 1);
        for b in [&buf[..], &buf[..keep]] {
            let _ = parse_links(b);
            let _ = parse_addrs(b);
            let _ = parse_routes(b);
        }
    }
}

/// Run by [`live_dump_in_fresh_netns`] inside the namespace it prepares; does nothing elsewhere.
#[test]
#[ignore = "runs inside the namespace that live_dump_in_fresh_netns prepares"]
fn live_child() {
    if std::env::var_os("NETLINK_LIVE_CHILD").is_none() {
        eprintln!("live_child: not inside live_dump_in_fresh_netns's namespace, nothing to do");
        return;
    }
    let net = Netlink::open().unwrap().dump_host_net().unwrap();
    let veth0 = net.link_by_name("veth0").unwrap().clone();
    assert_eq!(veth0.mac, Some(MacAddr(VETH0_MAC)));
    assert_eq!((veth0.mtu, veth0.up, veth0.loopback), (1400, true, false));
    assert!(net.link_by_name("lo").unwrap().loopback);
    assert!(net
        .addrs
        .contains(&global(veth0.index, v4("198.51.100.2"), 24)));
    assert!(net
        .addrs
        .contains(&global(veth0.index, v6("2001:db8:1::2"), 64)));
    assert_eq!(
        defaults(&net),
        vec![
            &default4("198.51.100.1", veth0.index, 10),
            &default6("2001:db8:1::1", veth0.index, 20)
        ]
    );
    // A second dump on the same socket (next sequence numbers) sees the same.
    let mut nl = Netlink::open().unwrap();
    let first = nl.dump_host_net().unwrap();
    assert_eq!(nl.dump_host_net().unwrap(), first);
    eprintln!("live_child: ok");
}

/// Whether this machine (or sandbox) lets root make a network namespace; `Err` says why not.
fn can_unshare() -> Result<(), String> {
    let probe = Command::new("unshare")
        .args(["-n", "ip", "link", "show", "lo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`unshare -n ip link show lo` failed: {s}")),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// Sets up a veth in a fresh network namespace (`unshare -n`: it dies with the process) and
/// re-runs this test binary's [`live_child`] there.
#[test]
fn live_dump_in_fresh_netns() {
    if !prereq::require(&[Need::Root, Need::Tool("unshare"), Need::Tool("ip")]) {
        return;
    }
    if let Err(why) = can_unshare() {
        return prereq::skip_because(&why);
    }
    const SETUP: &str = r#"set -e
ip link set lo up
ip link add veth0 address 02:00:00:00:01:02 type veth peer name veth1 address 02:00:00:00:01:01
ip link set veth1 up
ip link set veth0 mtu 1400 up
ip addr add 198.51.100.2/24 dev veth0
ip addr add 2001:db8:1::2/64 dev veth0 nodad
ip route add default via 198.51.100.1 metric 10
ip -6 route add default via 2001:db8:1::1 metric 20
exec "$0" --exact live_child --ignored --nocapture --test-threads=1
"#;
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", SETUP])
        .arg(&exe)
        .env("NETLINK_LIVE_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("live child did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success() && stderr.contains("live_child: ok"),
        "live child failed ({status}):\n{stdout}\n{stderr}"
    );
}
