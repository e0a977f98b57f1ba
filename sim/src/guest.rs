//! A guest with an independent TCP/IP stack (smoltcp), attached to the simulated link.
//!
//! Independence is the point: our engine is checked against a stack that neither shares its
//! code nor its reading of the RFCs.

use std::collections::VecDeque;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address,
};

use sans_io::time::Instant;

/// An in-memory network device: frames the guest sent, frames waiting for it.
#[derive(Debug, Default)]
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    pub mtu: usize,
}

pub struct RxToken(Vec<u8>);
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        // Our frames must carry correct checksums: let smoltcp verify them.
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

/// What the guest's DHCP client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Cidr,
    pub router: Option<Ipv4Address>,
    pub dns_servers: Vec<Ipv4Address>,
}

/// A smoltcp guest: DHCPv4 client and SLAAC.
pub struct SmolGuest {
    pub device: QueueDevice,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    dhcp: SocketHandle,
    pub lease: Option<Lease>,
}

pub fn smol_instant(now: Instant) -> SmolInstant {
    SmolInstant::from_micros((now.as_nanos() / 1000) as i64)
}

pub fn from_smol(t: SmolInstant) -> Instant {
    Instant::from_nanos(t.total_micros().max(0) as u64 * 1000)
}

impl SmolGuest {
    /// A guest with this MAC, a link-local IPv6 address from it, a DHCP client and SLAAC on.
    pub fn new(mac: [u8; 6], now: Instant) -> SmolGuest {
        let mut device = QueueDevice {
            mtu: 1514,
            ..Default::default()
        };
        let mut config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.slaac = true;
        config.random_seed = 0x5eed;
        let mut iface = Interface::new(config, &mut device, smol_instant(now));
        let ll = link_local_from_mac(mac);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = sockets.add(dhcpv4::Socket::new());
        SmolGuest {
            device,
            iface,
            sockets,
            dhcp,
            lease: None,
        }
    }

    /// Lets the stack run at `now`: processes received frames, emits what it wants to send.
    pub fn poll(&mut self, now: Instant) {
        self.iface
            .poll(smol_instant(now), &mut self.device, &mut self.sockets);
        let event = self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll();
        match event {
            Some(dhcpv4::Event::Configured(cfg)) => {
                let lease = Lease {
                    address: cfg.address,
                    router: cfg.router,
                    dns_servers: cfg.dns_servers.iter().copied().collect(),
                };
                self.iface.update_ip_addrs(|addrs| {
                    addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_)));
                    let _ = addrs.push(IpCidr::Ipv4(lease.address));
                });
                if let Some(router) = lease.router {
                    let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                }
                self.lease = Some(lease);
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.lease = None;
                self.iface
                    .update_ip_addrs(|addrs| addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_))));
            }
            None => {}
        }
    }

    /// When the stack next wants to run.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface
            .poll_at(smol_instant(now), &self.sockets)
            .map(from_smol)
    }

    /// Global IPv6 addresses the stack configured (by SLAAC).
    pub fn global_ipv6(&self) -> Vec<Ipv6Address> {
        self.iface
            .ip_addrs()
            .iter()
            .filter_map(|a| match a.address() {
                IpAddress::Ipv6(v6) if !v6.is_unicast_link_local() => Some(v6),
                _ => None,
            })
            .collect()
    }
}

/// The modified EUI-64 link-local address for a MAC (RFC 4291 appendix A).
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Address {
    Ipv6Address::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}
