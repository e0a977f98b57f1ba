//! The deterministic simulator: drives the `sans-io` core with a virtual clock, virtual host
//! sockets and independent guest stacks, replays captures, and hosts the fuzz targets' worlds.
//!
//! [`Lab`] describes a host network as plain data, the way the OS shim would have read it, so
//! that scenarios derive a [`sans_io::config::Config`] without a real host. [`world::World`]
//! puts our engine between a [`guest::SmolGuest`] on an impaired [`link`] and a
//! [`host::VirtualHost`], under a virtual clock; [`Scenario`] builds one in a few lines, with
//! [`App`]s (sources, sinks, echoes, slow readers) at both ends of the connections; more
//! guests, each behind its own engine, can share the host ([`world::World::others`]).
//!
//! [`replay`] feeds a capture's guest frames (`--pcap`, ours or the original's) to a fresh
//! engine, scripting the host from the capture, and compares the answers field by field
//! ([`fields`]); `cargo run -p sim --bin replay -- FILE.pcap` prints the verdict.
//! [`fuzzing`] holds what the fuzz targets run, so that `cargo test` runs it too.

pub mod app;
pub mod capture;
pub mod fields;
pub mod fuzzing;
pub mod guest;
pub mod host;
pub mod link;
pub mod pattern;
pub mod pcapfile;
pub mod replay;
pub mod rng;
pub mod scenario;
pub mod world;

pub use app::App;
pub use host::{HostConfig, VirtualHost};
pub use link::Impair;
pub use pattern::Pattern;
pub use scenario::Scenario;

use std::net::IpAddr;

use sans_io::config::derive::{derive, ConfigError, Derived};
use sans_io::config::host::{route_type, scope, HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::config::resolv::ResolvConf;
use sans_io::config::NetOptions;
use sans_io::wire::MacAddr;

/// A host network under construction, for scenarios.
#[derive(Debug, Clone, Default)]
pub struct Lab {
    pub host: HostNet,
    pub resolv: ResolvConf,
}

impl Lab {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an interface; returns its index.
    pub fn link(&mut self, name: &str, mac: [u8; 6], mtu: u32) -> u32 {
        let index = self.host.links.len() as u32 + 1;
        self.host.links.push(HostLink {
            index,
            name: name.to_owned(),
            mac: Some(MacAddr(mac)),
            mtu,
            up: true,
            loopback: false,
        });
        index
    }

    /// Adds an address ("198.51.100.2/24") to an interface.
    pub fn addr(&mut self, ifindex: u32, cidr: &str) -> &mut Self {
        let (addr, len) = cidr.split_once('/').expect("address/prefix");
        let addr: IpAddr = addr.parse().expect("address");
        let link_local = sans_io::config::is_link_local(addr);
        self.host.addrs.push(HostAddr {
            ifindex,
            addr,
            prefix_len: len.parse().expect("prefix length"),
            scope: if link_local {
                scope::LINK
            } else {
                scope::UNIVERSE
            },
            flags: 0x80,
        });
        self
    }

    /// Adds a default route through `gateway` on an interface, with a metric.
    pub fn default_route(&mut self, ifindex: u32, gateway: &str, metric: u32) -> &mut Self {
        let gateway: IpAddr = gateway.parse().expect("gateway");
        let dst = match gateway {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        self.host.routes.push(HostRoute {
            dst,
            dst_len: 0,
            nexthops: vec![NextHop {
                gateway: Some(gateway),
                oif: Some(ifindex),
            }],
            priority: metric,
            protocol: 4,
            scope: scope::UNIVERSE,
            kind: route_type::UNICAST,
            pref_src: None,
            mtu: None,
        });
        self
    }

    /// The netlab host: one interface `ifname` with 198.51.100.2/24, 2001:db8:1::2/64 and
    /// fe80::2/64, default routes through 198.51.100.1 and fe80::1, and `resolv` as its
    /// resolv.conf.
    pub fn dual_stack(ifname: &str, resolv: &str) -> Self {
        let mut lab = Lab::new();
        let eth = lab.link(ifname, [2, 0, 0, 0, 1, 2], 1500);
        lab.addr(eth, "198.51.100.2/24")
            .addr(eth, "2001:db8:1::2/64")
            .addr(eth, "fe80::2/64")
            .default_route(eth, "198.51.100.1", 0)
            .default_route(eth, "fe80::1", 1024)
            .resolv_conf(resolv);
        lab
    }

    pub fn resolv_conf(&mut self, text: &str) -> &mut Self {
        self.resolv = ResolvConf::parse(text);
        self
    }

    /// Derives the configuration the core would run with.
    pub fn derive(&self, opts: &NetOptions) -> Result<Derived, ConfigError> {
        derive(opts, &self.host, &self.resolv)
    }
}
