//! A guest with an independent TCP/IP stack (smoltcp), attached to the simulated link.
//!
//! Independence is the point: our engine is checked against a stack that neither shares its
//! code nor its reading of the RFCs.

use std::collections::VecDeque;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use std::net::SocketAddr;

use smoltcp::socket::dhcpv4;
use smoltcp::socket::tcp::{self, State as TcpState};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address,
    Ipv4Cidr, Ipv6Address, Ipv6Cidr,
};

use sans_io::time::Instant;

use crate::app::{App, AppState, StreamIo};

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

/// A guest TCP connection's index in [`SmolGuest::conns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestConnId(pub usize);

/// A TCP socket of the guest's, the application on it, and what was seen of its life.
#[derive(Debug)]
pub struct GuestConn {
    pub handle: SocketHandle,
    pub app: AppState,
    /// Accepted from a listen (else connected out).
    pub server: bool,
    pub local_port: u16,
    pub remote: Option<SocketAddr>,
    /// Every state the socket went through, with when it was first seen.
    pub history: Vec<(Instant, TcpState)>,
    pub established_at: Option<Instant>,
    /// The peer's FIN was seen.
    pub fin_seen: bool,
    /// Closed without the peer's FIN and without our abort: a reset (or a refused connect).
    pub reset_at: Option<Instant>,
    pub closed_at: Option<Instant>,
    /// The test asked for an abort.
    pub aborted: bool,
    /// A close waiting for the data before it to be acknowledged (see [`SocketIo`]).
    close_pending: bool,
}

impl GuestConn {
    pub fn state(&self) -> TcpState {
        self.history.last().map_or(TcpState::Closed, |&(_, s)| s)
    }

    /// The connection is over, one way or another.
    pub fn closed(&self) -> bool {
        self.closed_at.is_some() || self.state() == TcpState::TimeWait
    }

    /// The application did everything and the connection is over.
    pub fn done(&self) -> bool {
        self.app.done() && self.closed()
    }

    pub fn received(&self) -> &[u8] {
        &self.app.received
    }

    fn observe(&mut self, now: Instant, state: TcpState) {
        if self.history.last().map(|&(_, s)| s) == Some(state) {
            return;
        }
        self.history.push((now, state));
        match state {
            TcpState::Established => {
                self.established_at.get_or_insert(now);
            }
            TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait => {
                self.fin_seen = true
            }
            TcpState::Closed => {
                self.closed_at = Some(now);
                if !self.fin_seen && !self.aborted && !self.app.aborted {
                    self.reset_at = Some(now);
                }
            }
            _ => {}
        }
    }
}

/// A smoltcp socket as an application sees it.
///
/// Works around a smoltcp 0.14 bug: in LAST-ACK it answers a pure window update with a
/// challenge ACK and ignores the window, so a connection closed by the peer first, whose last
/// data meets a zero window, is stranded (its retransmission timer gone, probes unanswered
/// forever). The close of a socket in CLOSE-WAIT therefore waits until its data is
/// acknowledged (`close_pending`); the FIN follows the data either way.
struct SocketIo<'a> {
    socket: &'a mut tcp::Socket<'static>,
    close_pending: &'a mut bool,
}

impl StreamIo for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        self.socket.recv_slice(buf).unwrap_or(0)
    }

    fn at_eof(&self) -> bool {
        !self.socket.can_recv()
            && matches!(
                self.socket.state(),
                TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait
            )
    }

    fn write_space(&self) -> usize {
        if self.socket.may_send() && !*self.close_pending {
            self.socket.send_capacity() - self.socket.send_queue()
        } else {
            0
        }
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if *self.close_pending {
            return 0;
        }
        self.socket.send_slice(data).unwrap_or(0)
    }

    fn shutdown(&mut self) {
        if self.socket.state() == TcpState::CloseWait && self.socket.send_queue() > 0 {
            *self.close_pending = true;
        } else {
            self.socket.close();
        }
    }

    fn abort(&mut self) {
        *self.close_pending = false;
        self.socket.abort();
    }

    fn usable(&self) -> bool {
        !matches!(
            self.socket.state(),
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

/// A smoltcp guest: DHCPv4 client and SLAAC, and TCP sockets running [`App`]s.
pub struct SmolGuest {
    pub device: QueueDevice,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    pub lease: Option<Lease>,
    pub conns: Vec<GuestConn>,
    /// Receive and send buffer size for new TCP sockets.
    pub tcp_buffer: usize,
    next_port: u16,
}

pub fn smol_instant(now: Instant) -> SmolInstant {
    SmolInstant::from_micros((now.as_nanos() / 1000) as i64)
}

pub fn from_smol(t: SmolInstant) -> Instant {
    Instant::from_nanos(t.total_micros().max(0) as u64 * 1000)
}

impl SmolGuest {
    /// A guest with this MAC, a link-local IPv6 address from it, a DHCP client and SLAAC on,
    /// on a 1500-byte MTU link.
    pub fn new(mac: [u8; 6], now: Instant) -> SmolGuest {
        SmolGuest::with_mtu(mac, now, 1500)
    }

    /// The same with an IP MTU of `mtu` bytes (the device takes frames 14 bytes larger).
    pub fn with_mtu(mac: [u8; 6], now: Instant, mtu: usize) -> SmolGuest {
        SmolGuest::with_options(mac, now, mtu, true)
    }

    /// The same, choosing whether SLAAC runs. A guest configured statically wants it off:
    /// smoltcp flushes its neighbour cache whenever its addresses change, and a SLAAC address
    /// formed under a running connection silences that connection for a second.
    pub fn with_options(mac: [u8; 6], now: Instant, mtu: usize, slaac: bool) -> SmolGuest {
        let mut device = QueueDevice {
            mtu: mtu + 14,
            ..Default::default()
        };
        let mut config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.slaac = slaac;
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
            dhcp: Some(dhcp),
            lease: None,
            conns: Vec::new(),
            tcp_buffer: 64 * 1024,
            next_port: 49152,
        }
    }

    /// Configures IPv4 statically (no DHCP client).
    pub fn configure_ipv4(&mut self, address: Ipv4Cidr, router: Option<Ipv4Address>) {
        if let Some(h) = self.dhcp.take() {
            self.sockets.remove(h);
        }
        self.iface.update_ip_addrs(|addrs| {
            addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_)));
            addrs
                .push(IpCidr::Ipv4(address))
                .expect("room for an address");
        });
        if let Some(r) = router {
            self.iface
                .routes_mut()
                .add_default_ipv4_route(r)
                .expect("room for a route");
        }
        self.lease = Some(Lease {
            address,
            router,
            dns_servers: Vec::new(),
        });
    }

    /// One more IPv4 address of the guest's (standing for a peer the namespace routes to,
    /// such as a container behind a forwarding rule's target address).
    pub fn add_ipv4(&mut self, address: Ipv4Cidr) {
        self.iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::Ipv4(address))
                .expect("room for an address");
        });
    }

    /// Adds a static IPv6 address and default router.
    pub fn configure_ipv6(&mut self, address: Ipv6Cidr, router: Option<Ipv6Address>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::Ipv6(address))
                .expect("room for an address");
        });
        if let Some(r) = router {
            self.iface
                .routes_mut()
                .add_default_ipv6_route(r)
                .expect("room for a route");
        }
    }

    fn tcp_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0; self.tcp_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; self.tcp_buffer]);
        tcp::Socket::new(rx, tx)
    }

    fn add_conn(
        &mut self,
        socket: tcp::Socket<'static>,
        app: App,
        server: bool,
        port: u16,
    ) -> GuestConnId {
        let handle = self.sockets.add(socket);
        self.conns.push(GuestConn {
            handle,
            app: AppState::new(app),
            server,
            local_port: port,
            remote: None,
            history: Vec::new(),
            established_at: None,
            fin_seen: false,
            reset_at: None,
            closed_at: None,
            aborted: false,
            close_pending: false,
        });
        GuestConnId(self.conns.len() - 1)
    }

    /// Opens a TCP connection to `remote` from the next free port, running `app` on it.
    pub fn tcp_connect(&mut self, remote: SocketAddr, app: App) -> GuestConnId {
        let port = self.next_port;
        self.next_port = if port == u16::MAX { 49152 } else { port + 1 };
        let mut socket = self.tcp_socket();
        socket
            .connect(
                self.iface.context(),
                IpEndpoint::from(remote),
                IpListenEndpoint::from(port),
            )
            .expect("connect");
        let id = self.add_conn(socket, app, false, port);
        self.conns[id.0].remote = Some(remote);
        id
    }

    /// Listens on `port`; the first connection there runs `app`. Listen several times for
    /// several connections.
    pub fn tcp_listen(&mut self, port: u16, app: App) -> GuestConnId {
        let mut socket = self.tcp_socket();
        socket.listen(port).expect("listen");
        self.add_conn(socket, app, true, port)
    }

    pub fn conn(&self, id: GuestConnId) -> &GuestConn {
        &self.conns[id.0]
    }

    /// The raw smoltcp socket of a connection.
    pub fn socket(&mut self, id: GuestConnId) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.conns[id.0].handle)
    }

    /// Closes the sending direction (FIN) now.
    pub fn tcp_shutdown(&mut self, id: GuestConnId) {
        self.socket(id).close();
    }

    /// Resets the connection (RST) now.
    pub fn tcp_abort(&mut self, id: GuestConnId) {
        self.conns[id.0].aborted = true;
        self.socket(id).abort();
    }

    /// Runs the applications on the TCP sockets; returns whether any did something.
    pub fn run_apps(&mut self, now: Instant) -> bool {
        let mut progress = false;
        for c in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
            c.observe(now, socket.state());
            if c.remote.is_none() {
                c.remote = socket
                    .remote_endpoint()
                    .map(|e| SocketAddr::new(e.addr.into(), e.port));
            }
            if c.aborted {
                continue;
            }
            if c.close_pending && socket.send_queue() == 0 {
                c.close_pending = false;
                socket.close();
                progress = true;
            }
            let mut io = SocketIo {
                socket,
                close_pending: &mut c.close_pending,
            };
            if c.app.run(now, &mut io) {
                progress = true;
            }
            c.observe(now, socket.state());
        }
        progress
    }

    /// Lets the stack run at `now`: processes received frames, emits what it wants to send.
    pub fn poll(&mut self, now: Instant) {
        self.iface
            .poll(smol_instant(now), &mut self.device, &mut self.sockets);
        if self.run_apps(now) {
            self.iface
                .poll(smol_instant(now), &mut self.device, &mut self.sockets);
            self.run_apps(now);
        }
        let Some(dhcp) = self.dhcp else {
            return;
        };
        let event = self.sockets.get_mut::<dhcpv4::Socket>(dhcp).poll();
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

    /// When the stack (or a rate-limited application) next wants to run.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let apps = self.conns.iter().filter_map(|c| {
            let socket = self.sockets.get::<tcp::Socket>(c.handle);
            c.app.poll_at(now, socket.can_recv())
        });
        self.iface
            .poll_at(smol_instant(now), &self.sockets)
            .map(from_smol)
            .into_iter()
            .chain(apps)
            .min()
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
