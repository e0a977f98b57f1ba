//! What the host's network looks like, as plain data.
//!
//! The OS shim fills these from rtnetlink dumps (links, addresses, routes of the main table);
//! tests build them by hand. [`super::derive`] turns them, with the user's options, into a
//! [`super::Config`].

use std::net::IpAddr;

use crate::wire::MacAddr;

/// A snapshot of the host's links, addresses and routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNet {
    pub links: Vec<HostLink>,
    pub addrs: Vec<HostAddr>,
    /// Routes of the main table, in the order the kernel dumped them.
    pub routes: Vec<HostRoute>,
}

impl HostNet {
    pub fn link(&self, index: u32) -> Option<&HostLink> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_by_name(&self, name: &str) -> Option<&HostLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// A network interface (RTM_NEWLINK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub index: u32,
    pub name: String,
    /// IFLA_ADDRESS, when the link has an Ethernet-sized hardware address.
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// IFF_UP.
    pub up: bool,
    /// IFF_LOOPBACK.
    pub loopback: bool,
}

/// Address scope (ifa_scope / rtm_scope), as the kernel numbers it.
pub mod scope {
    pub const UNIVERSE: u8 = 0;
    pub const SITE: u8 = 200;
    pub const LINK: u8 = 253;
    pub const HOST: u8 = 254;
    pub const NOWHERE: u8 = 255;
}

/// Address flags (IFA_F_*), the ones that matter for choosing an address.
pub mod addr_flags {
    pub const SECONDARY: u32 = 0x01;
    pub const NODAD: u32 = 0x02;
    pub const DADFAILED: u32 = 0x08;
    pub const DEPRECATED: u32 = 0x20;
    pub const TENTATIVE: u32 = 0x40;
    pub const PERMANENT: u32 = 0x80;
}

/// An interface address (RTM_NEWADDR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub ifindex: u32,
    /// IFA_LOCAL for IPv4 (IFA_ADDRESS when absent), IFA_ADDRESS for IPv6.
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// See [`scope`].
    pub scope: u8,
    /// IFA_FLAGS (or ifa_flags), see [`addr_flags`].
    pub flags: u32,
}

impl HostAddr {
    pub fn is_link_local(&self) -> bool {
        super::is_link_local(self.addr)
    }
}

/// Route types (rtm_type), the ones we distinguish.
pub mod route_type {
    pub const UNICAST: u8 = 1;
    pub const LOCAL: u8 = 2;
    pub const BROADCAST: u8 = 3;
    pub const MULTICAST: u8 = 5;
    pub const BLACKHOLE: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
    pub const PROHIBIT: u8 = 8;
}

/// One next hop of a route (the route itself, or one leg of RTA_MULTIPATH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// A route of the main table (RTM_NEWROUTE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// Destination; the unspecified address of the family for a default route.
    pub dst: IpAddr,
    pub dst_len: u8,
    /// Single-path routes have exactly one; RTA_MULTIPATH routes one per leg.
    pub nexthops: Vec<NextHop>,
    /// RTA_PRIORITY (metric).
    pub priority: u32,
    /// rtm_protocol (kernel, boot, static, ra, dhcp, ...).
    pub protocol: u8,
    /// rtm_scope, see [`scope`].
    pub scope: u8,
    /// rtm_type, see [`route_type`].
    pub kind: u8,
    /// RTA_PREFSRC.
    pub pref_src: Option<IpAddr>,
    /// RTAX_MTU from RTA_METRICS, when set.
    pub mtu: Option<u32>,
}

impl HostRoute {
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }

    /// Whether any leg of this route leaves through `ifindex`.
    pub fn uses_link(&self, ifindex: u32) -> bool {
        self.nexthops.iter().any(|h| h.oif == Some(ifindex))
    }
}
