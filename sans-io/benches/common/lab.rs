//! The network the benchmark's engine serves, as the tests' (`sans-io/tests/common`): pasta
//! on a host with 192.0.2.2/24 and 2001:db8::2/64 behind 192.0.2.1 and fe80::1; and frames a
//! real guest sent, from `testdata/captures/`.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use pcap_file::pcap::PcapReader;
use sans_io::config::derive::derive;
use sans_io::config::host::{route_type, scope, HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::config::resolv::ResolvConf;
use sans_io::config::{Config, Mode, NetOptions};
use sans_io::wire::MacAddr;

/// The guest's MAC address, as in the captures.
pub const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// pasta's configuration on the lab's host, both families, every service on.
pub fn config() -> Config {
    let addr = |addr: &str, prefix_len, scope| HostAddr {
        ifindex: 2,
        addr: addr.parse().unwrap(),
        prefix_len,
        scope,
        flags: 0,
    };
    let default_route = |dst: IpAddr, gateway: &str| HostRoute {
        dst,
        dst_len: 0,
        nexthops: vec![NextHop {
            gateway: Some(gateway.parse().unwrap()),
            oif: Some(2),
        }],
        priority: 100,
        protocol: 4,
        scope: scope::UNIVERSE,
        kind: route_type::UNICAST,
        pref_src: None,
        mtu: None,
    };
    let host = HostNet {
        links: vec![HostLink {
            index: 2,
            name: "eth0".to_owned(),
            mac: Some(MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01])),
            mtu: 1500,
            up: true,
            loopback: false,
        }],
        addrs: vec![
            addr("192.0.2.2", 24, scope::UNIVERSE),
            addr("2001:db8::2", 64, scope::UNIVERSE),
            addr("fe80::42:acff:fe11:1", 64, scope::LINK),
        ],
        routes: vec![
            default_route(Ipv4Addr::UNSPECIFIED.into(), "192.0.2.1"),
            default_route(Ipv6Addr::UNSPECIFIED.into(), "fe80::1"),
        ],
    };
    let opts = NetOptions::new(Mode::Pasta);
    let config = derive(&opts, &host, &ResolvConf::default())
        .expect("the lab's host gives a configuration")
        .config;
    assert!(
        config.services.dhcp && config.services.ra,
        "DHCP and NDP are on in the lab"
    );
    config
}

/// The first frame of a capture in `testdata/captures/`.
pub fn captured(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures")
        .join(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = PcapReader::new(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let packet = reader
        .next_packet()
        .unwrap_or_else(|| panic!("{} holds no frame", path.display()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    packet.data.into_owned()
}
