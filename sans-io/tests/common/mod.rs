//! Scaffolding shared by the integration tests: captures from `testdata/captures/` (see its
//! README), the host networks and configurations they are answered under, and running frames
//! through the engine or straight into a service. Each test uses a part of it.

#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use pcap_file::pcap::PcapReader;
use sans_io::config::derive::derive;
use sans_io::config::host::{route_type, scope, HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::config::resolv::ResolvConf;
use sans_io::config::{Config, NetOptions};
use sans_io::engine::{Counters, Engine};
use sans_io::flow::NoSockets;
use sans_io::guest::GuestState;
use sans_io::services::Ctx;
use sans_io::time::Instant;
use sans_io::wire::parse;
use sans_io::wire::{FrameQueue, MacAddr};

/// The guest's MAC address, as in the captures.
pub const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/// The guest's IPv4 address and its gateway in the ARP and DHCP tests: 192.0.2.2/24 behind
/// 192.0.2.1.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

// --- Captures ---

fn reader(name: &str) -> PcapReader<File> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures")
        .join(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    PcapReader::new(file).unwrap()
}

/// The first frame of a capture in `testdata/captures/`.
pub fn captured(name: &str) -> Vec<u8> {
    let mut reader = reader(name);
    let packet = reader.next_packet().expect("an empty capture").unwrap();
    packet.data.into_owned()
}

/// Every frame of a capture in `testdata/captures/`, at least one.
pub fn captured_all(name: &str) -> Vec<Vec<u8>> {
    let mut reader = reader(name);
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        frames.push(packet.unwrap().data.into_owned());
    }
    assert!(!frames.is_empty(), "{name} holds no frames");
    frames
}

// --- Hosts and configurations ---

/// A host with one interface, eth0 (index 2, `mac`, MTU 1500, up), holding `addrs` (address,
/// prefix length, scope), with a default route through each of `gateways`.
pub fn host_net(mac: MacAddr, addrs: &[(&str, u8, u8)], gateways: &[&str]) -> HostNet {
    let addr = |&(addr, prefix_len, scope): &(&str, u8, u8)| HostAddr {
        ifindex: 2,
        addr: addr.parse().unwrap(),
        prefix_len,
        scope,
        flags: 0,
    };
    let default = |gw: &&str| HostRoute {
        dst: if gw.contains(':') {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
        dst_len: 0,
        nexthops: vec![NextHop {
            gateway: Some(gw.parse().unwrap()),
            oif: Some(2),
        }],
        priority: 100,
        protocol: 4,
        scope: scope::UNIVERSE,
        kind: route_type::UNICAST,
        pref_src: None,
        mtu: None,
    };
    HostNet {
        links: vec![HostLink {
            index: 2,
            name: "eth0".to_owned(),
            mac: Some(mac),
            mtu: 1500,
            up: true,
            loopback: false,
        }],
        addrs: addrs.iter().map(addr).collect(),
        routes: gateways.iter().map(default).collect(),
    }
}

/// The configuration `opts` derive for `host`, with an empty resolv.conf.
pub fn derive_config(opts: &NetOptions, host: &HostNet) -> Config {
    derive(opts, host, &ResolvConf::default()).unwrap().config
}

/// The host and configurations of the IPv6 services' tests (DHCPv6, NDP).
pub mod dual_stack {
    use sans_io::config::host::{scope, HostNet};
    use sans_io::config::{Config, ListChoice, Mode, NetOptions};
    use sans_io::wire::MacAddr;

    pub const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);

    /// eth0 with 192.0.2.2/24, 2001:db8::2/64 and fe80::42:acff:fe11:1/64, default routes via
    /// 192.0.2.1 and fe80::1.
    pub fn host() -> HostNet {
        super::host_net(
            HOST_MAC,
            &[
                ("192.0.2.2", 24, scope::UNIVERSE),
                ("2001:db8::2", 64, scope::UNIVERSE),
                ("fe80::42:acff:fe11:1", 64, scope::LINK),
            ],
            &["192.0.2.1", "fe80::1"],
        )
    }

    /// The configuration `mode` derives for `host`, with two IPv6 resolvers and a search
    /// list given explicitly, after `tweak`.
    pub fn config_with(mode: Mode, host: &HostNet, tweak: impl FnOnce(&mut NetOptions)) -> Config {
        let mut opts = NetOptions::new(mode);
        opts.dns = ListChoice::List(vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
            "2001:db8:1::53".parse().unwrap(),
        ]);
        opts.search = ListChoice::List(vec!["example.org".into(), "lab.example.org".into()]);
        tweak(&mut opts);
        super::derive_config(&opts, host)
    }

    pub fn config(mode: Mode) -> Config {
        config_with(mode, &host(), |_| {})
    }
}

// --- Running ---

/// Runs `frames` through a fresh engine; returns it and what it queued.
pub fn run(config: Config, frames: &[&[u8]]) -> (Engine, FrameQueue) {
    let mut engine = Engine::new(config, 1, Instant::ZERO);
    let mut out = FrameQueue::new();
    engine
        .batch(Instant::ZERO, &mut NoSockets, &mut out)
        .frames(frames.iter().copied());
    (engine, out)
}

/// Runs `frames` through a fresh engine: the answers and the counters.
pub fn run_answers(config: Config, frames: &[&[u8]]) -> (Vec<Vec<u8>>, Counters) {
    let (engine, out) = run(config, frames);
    let answers = out.iter().map(<[u8]>::to_vec).collect();
    (answers, engine.counters().clone())
}

/// Calls a service directly: `f` gets a context for `config`, knowing nothing of the guest;
/// returns what `f` returned and what the service queued.
pub fn with_ctx<R>(config: &Config, f: impl FnOnce(Ctx<'_>) -> R) -> (R, FrameQueue) {
    let mut out = FrameQueue::new();
    let guest = GuestState::default();
    let ctx = Ctx {
        config,
        guest: &guest,
        out: &mut out,
    };
    let result = f(ctx);
    (result, out)
}

/// The Ethernet header of a frame from the guest, for calling a service directly.
pub fn from_guest(dst: MacAddr, ethertype: u16) -> parse::Ethernet<'static> {
    parse::Ethernet {
        dst,
        src: GUEST_MAC,
        ethertype,
        payload: &[],
    }
}
