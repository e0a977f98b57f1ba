//! The resolved network configuration: one plain value the rest of the program reads.
//!
//! [`NetOptions`] is what the user asked for (already parsed and validated by the CLI),
//! [`host::HostNet`] and [`resolv::ResolvConf`] are what the host looks like, and
//! [`derive::derive`] combines them into a [`Config`] plus the warnings to show.

pub mod derive;
pub mod host;
pub mod resolv;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::fwd::ForwardMode;
use crate::wire::MacAddr;

/// Which program we are: the mode changes defaults and which options exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For virtual machines, over qemu's UNIX domain socket.
    Passt,
    /// For network namespaces, over a tap device.
    Pasta,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Passt => "passt",
            Mode::Pasta => "pasta",
        }
    }
}

/// The default MTU advertised to the guest: the largest 802.3 frame minus its header, rounded
/// down to a multiple of four bytes.
pub const DEFAULT_MTU: u16 = 65520;
/// The smallest MTU IPv4 allows (RFC 791); IPv6 needs 1280 and is disabled below that.
pub const MIN_MTU: u16 = 68;
/// IPv6's minimum link MTU (RFC 8200).
pub const MIN_MTU_IPV6: u16 = 1280;

/// An address choice that can also be switched off (`--map-host-loopback none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddrChoice<A> {
    /// Not given: use the default.
    #[default]
    Default,
    /// `none`: disabled.
    Disabled,
    /// Given explicitly.
    Addr(A),
}

/// A list option that can also be switched off (`-D none`, `-S none`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListChoice<T> {
    /// Not given: read it from the host.
    #[default]
    FromHost,
    /// `none`: empty, and don't read the host's.
    Disabled,
    /// Given explicitly (in order).
    List(Vec<T>),
}

/// Restrict operation to one IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Both,
    V4Only,
    V6Only,
}

/// Network settings given on the command line: everything [`derive::derive`] needs from the
/// user. Process settings (logging, sockets, namespaces) stay with the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    pub mode: Mode,
    pub family: Family,
    /// `-i`: template interface for addresses and routes, both families.
    pub interface: Option<String>,
    pub outbound_if4: Option<String>,
    pub outbound_if6: Option<String>,
    /// `-o`: source addresses for outbound sockets.
    pub outbound4: Option<Ipv4Addr>,
    pub outbound6: Option<Ipv6Addr>,
    /// `-a`.
    pub addr4: Option<Ipv4Addr>,
    pub addr6: Option<Ipv6Addr>,
    /// `-n`, as a prefix length.
    pub prefix_len4: Option<u8>,
    /// `-g`.
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    /// `-M`: our MAC address towards the guest.
    pub our_mac: Option<MacAddr>,
    /// `-m`: `Some(0)` disables advertising an MTU.
    pub mtu: Option<u16>,
    /// `-D`.
    pub dns: ListChoice<IpAddr>,
    /// `-S`.
    pub search: ListChoice<String>,
    /// `--dns-forward`.
    pub dns_forward4: Option<Ipv4Addr>,
    pub dns_forward6: Option<Ipv6Addr>,
    /// `--dns-host`.
    pub dns_host4: Option<Ipv4Addr>,
    pub dns_host6: Option<Ipv6Addr>,
    /// `--map-host-loopback` (`--no-map-gw` is its `none`).
    pub map_host_loopback4: AddrChoice<Ipv4Addr>,
    pub map_host_loopback6: AddrChoice<Ipv6Addr>,
    /// `--map-guest-addr`.
    pub map_guest_addr4: AddrChoice<Ipv4Addr>,
    pub map_guest_addr6: AddrChoice<Ipv6Addr>,
    /// `--dhcp-dns`/`--no-dhcp-dns`; `None` means the mode's default.
    pub dhcp_dns: Option<bool>,
    /// `--dhcp-search`/`--no-dhcp-search`; `None` means the mode's default.
    pub dhcp_search: Option<bool>,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub no_tcp: bool,
    pub no_udp: bool,
    pub no_icmp: bool,
    pub no_dhcp: bool,
    pub no_ndp: bool,
    pub no_dhcpv6: bool,
    pub no_ra: bool,
    pub no_copy_routes: bool,
    pub no_copy_addrs: bool,
    pub freebind: bool,
    pub no_splice: bool,
    pub host_lo_to_ns_lo: bool,
    /// `-I`.
    pub ns_ifname: Option<String>,
    /// `--ns-mac-addr`.
    pub ns_mac: Option<MacAddr>,
    /// `-t`, `-u`, `-T`, `-U` as accumulated; [`ForwardMode::Unset`] means the mode's default.
    pub tcp_in: ForwardMode,
    pub udp_in: ForwardMode,
    pub tcp_out: ForwardMode,
    pub udp_out: ForwardMode,
}

impl NetOptions {
    /// Nothing given: every setting at its default.
    pub fn new(mode: Mode) -> Self {
        NetOptions {
            mode,
            family: Family::Both,
            interface: None,
            outbound_if4: None,
            outbound_if6: None,
            outbound4: None,
            outbound6: None,
            addr4: None,
            addr6: None,
            prefix_len4: None,
            gateway4: None,
            gateway6: None,
            our_mac: None,
            mtu: None,
            dns: ListChoice::FromHost,
            search: ListChoice::FromHost,
            dns_forward4: None,
            dns_forward6: None,
            dns_host4: None,
            dns_host6: None,
            map_host_loopback4: AddrChoice::Default,
            map_host_loopback6: AddrChoice::Default,
            map_guest_addr4: AddrChoice::Default,
            map_guest_addr6: AddrChoice::Default,
            dhcp_dns: None,
            dhcp_search: None,
            hostname: None,
            fqdn: None,
            no_tcp: false,
            no_udp: false,
            no_icmp: false,
            no_dhcp: false,
            no_ndp: false,
            no_dhcpv6: false,
            no_ra: false,
            no_copy_routes: false,
            no_copy_addrs: false,
            freebind: false,
            no_splice: false,
            host_lo_to_ns_lo: false,
            ns_ifname: None,
            ns_mac: None,
            tcp_in: ForwardMode::Unset,
            udp_in: ForwardMode::Unset,
            tcp_out: ForwardMode::Unset,
            udp_out: ForwardMode::Unset,
        }
    }
}

/// A route to install in the namespace (`--config-net`), relative to the guest's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRoute {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub priority: u32,
    pub mtu: Option<u32>,
}

/// An address to install in the namespace (`--config-net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// An address family's address type: what the per-family configuration and the rules over it
/// need to know, so that IPv4 and IPv6 share one implementation.
pub trait IpFamily: Copy + Eq + std::fmt::Debug + std::fmt::Display + Into<IpAddr> {
    const UNSPECIFIED: Self;
    /// This family's half of an address of either family.
    fn from_ip(addr: IpAddr) -> Option<Self>;
    fn is_loopback(&self) -> bool;
    fn is_link_local(&self) -> bool;
}

impl IpFamily for Ipv4Addr {
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;

    fn from_ip(addr: IpAddr) -> Option<Self> {
        match addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    fn is_loopback(&self) -> bool {
        Ipv4Addr::is_loopback(self)
    }

    fn is_link_local(&self) -> bool {
        Ipv4Addr::is_link_local(self)
    }
}

impl IpFamily for Ipv6Addr {
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;

    fn from_ip(addr: IpAddr) -> Option<Self> {
        match addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }

    fn is_loopback(&self) -> bool {
        Ipv6Addr::is_loopback(self)
    }

    fn is_link_local(&self) -> bool {
        self.segments()[0] & 0xffc0 == 0xfe80
    }
}

/// Whether `addr` is link-local (169.254.0.0/16, fe80::/10), whatever its family.
pub fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => IpFamily::is_link_local(&a),
        IpAddr::V6(a) => IpFamily::is_link_local(&a),
    }
}

/// One address family's settings; absent from [`Config`] when the family is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig<A> {
    /// Host interface the settings were taken from (empty in local mode).
    pub template_if: String,
    /// The address assigned to the guest (DHCP yiaddr; DHCPv6 IA_NA and the RA prefix). The
    /// unspecified address for IPv6 in local mode: the guest keeps its link-local one.
    pub addr: A,
    pub prefix_len: u8,
    /// The guest's default gateway; `None` when the host has none (DHCP is then off).
    pub gateway: Option<A>,
    /// Our own address on the guest's link: the source of DHCP answers and of translated local
    /// traffic for IPv4; our link-local address, the source of NDP and DHCPv6, for IPv6.
    pub our_addr: A,
    /// The guest reaches the host's loopback at this address.
    pub map_host_loopback: Option<A>,
    /// The guest reaches the host's own address at this address.
    pub map_guest_addr: Option<A>,
    /// DNS traffic to this address is redirected to `dns_host`.
    pub dns_match: Option<A>,
    pub dns_host: Option<A>,
    /// Bind outbound sockets to this address / interface.
    pub outbound_addr: Option<A>,
    pub outbound_if: Option<String>,
    /// What `--config-net` installs.
    pub guest_addrs: Vec<GuestAddr>,
    pub guest_routes: Vec<GuestRoute>,
}

impl<A: IpFamily> IpConfig<A> {
    /// A family configuration with the mappings, DNS and outbound settings not yet applied.
    pub fn new(
        template_if: String,
        addr: A,
        prefix_len: u8,
        gateway: Option<A>,
        our_addr: A,
    ) -> Self {
        IpConfig {
            template_if,
            addr,
            prefix_len,
            gateway,
            our_addr,
            map_host_loopback: None,
            map_guest_addr: None,
            dns_match: None,
            dns_host: None,
            outbound_addr: None,
            outbound_if: None,
            guest_addrs: Vec::new(),
            guest_routes: Vec::new(),
        }
    }
}

pub type Ip4Config = IpConfig<Ipv4Addr>;
pub type Ip6Config = IpConfig<Ipv6Addr>;

/// Which built-in services answer the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub dhcp: bool,
    pub ndp: bool,
    pub ra: bool,
    pub dhcpv6: bool,
    /// Hand DNS servers out (DHCP option 6, RDNSS, DHCPv6 option 23).
    pub dhcp_dns: bool,
    /// Hand the search list out (DHCP option 119, DNSSL, DHCPv6 option 24).
    pub dhcp_search: bool,
}

/// Which protocols are translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub tcp: bool,
    pub udp: bool,
    pub icmp: bool,
}

/// Port forwarding in both directions (`-t -u` into the guest, `-T -U` out of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub tcp_in: ForwardMode,
    pub udp_in: ForwardMode,
    pub tcp_out: ForwardMode,
    pub udp_out: ForwardMode,
}

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub ip4: Option<Ip4Config>,
    pub ip6: Option<Ip6Config>,
    /// No usable host interface: link-local addressing, nothing copied from the host.
    pub local_mode: bool,
    /// Our MAC address, the source of every frame we send to the guest.
    pub our_mac: MacAddr,
    /// The MTU advertised to the guest (and set on the namespace link); `None`: don't.
    pub mtu: Option<u16>,
    /// The host's outbound interface's MTU, for information.
    pub host_mtu: Option<u32>,
    /// DNS servers handed to the guest, IPv4 first, in resolv.conf order.
    pub dns: Vec<IpAddr>,
    /// DNS search domains handed to the guest, without trailing dots.
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub services: Services,
    pub protocols: Protocols,
    pub forwarding: Forwarding,
    /// Name of the tap interface in the namespace (pasta).
    pub ns_ifname: String,
    pub ns_mac: Option<MacAddr>,
    pub no_copy_routes: bool,
    pub no_copy_addrs: bool,
    pub freebind: bool,
    pub splice: bool,
    pub host_lo_to_ns_lo: bool,
}

impl Config {
    pub fn dns4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.dns.iter().filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    }

    pub fn dns6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.dns.iter().filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    }
}
