//! Scenarios in a few lines:
//!
//! ```
//! # use sim::{App, Impair, Scenario};
//! # use std::time::Duration;
//! let mut w = Scenario::new(1)
//!     .impair(Impair::lossy(0.01))
//!     .remote_server("203.0.113.10:80", App::source(100_000))
//!     .build();
//! let c = w.guest_connect(sim::scenario::addr("203.0.113.10:80"), App::sink());
//! w.run_until(Duration::from_secs(30), |w| w.guest_conn(c).done());
//! ```
//!
//! The default world is the standard lab host (198.51.100.2/24 and 2001:db8:1::2/64 on eth0,
//! gateways 198.51.100.1 and fe80::1), pasta mode with a 1500-byte MTU, a guest configured
//! statically with the addresses the engine would hand out (no DHCP client, no SLAAC; see
//! [`Scenario::dhcp`]), and a perfect link with 50 µs of delay each way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smoltcp::wire::{Ipv4Cidr, Ipv6Cidr};

use sans_io::config::{Config, Mode, NetOptions};
use sans_io::engine::EngineOptions;
use sans_io::fwd::PortSpec;
use sans_io::time::Instant;

use crate::app::App;
use crate::guest::SmolGuest;
use crate::host::HostConfig;
use crate::link::Impair;
use crate::world::World;
use crate::Lab;

pub const GUEST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
/// A remote host on the far side of the host's default route.
pub const REMOTE: &str = "203.0.113.10";
/// The host's address in the standard lab (also the guest's, as pasta copies it).
pub const HOST_ADDR: &str = "198.51.100.2";
/// The gateway, which is also where the guest reaches the host's loopback.
pub const GATEWAY: &str = "198.51.100.1";

/// Parses a socket address; panics on a typo.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The standard lab host.
pub fn standard_lab() -> Lab {
    Lab::dual_stack(
        "eth0",
        "nameserver 203.0.113.53\nnameserver 2001:db8:2::53\n",
    )
}

type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

/// A world under construction.
pub struct Scenario {
    seed: u64,
    lab: Lab,
    opts: NetOptions,
    host: HostConfig,
    to_engine: Impair,
    to_guest: Impair,
    servers: Vec<(SocketAddr, App)>,
    reachable: Vec<IpAddr>,
    guest_mtu: Option<usize>,
    guest_buffer: usize,
    dhcp: bool,
    engine: EngineOptions,
    config_edit: Vec<ConfigEdit>,
    more_guests: usize,
}

impl Scenario {
    pub fn new(seed: u64) -> Scenario {
        let mut opts = NetOptions::new(Mode::Pasta);
        opts.mtu = Some(1500);
        Scenario {
            seed,
            lab: standard_lab(),
            opts,
            host: HostConfig::default(),
            to_engine: Impair::delay(Duration::from_micros(50)),
            to_guest: Impair::delay(Duration::from_micros(50)),
            servers: Vec::new(),
            reachable: Vec::new(),
            guest_mtu: None,
            guest_buffer: 64 * 1024,
            dhcp: false,
            engine: EngineOptions::default(),
            config_edit: Vec::new(),
            more_guests: 0,
        }
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.opts.mode = mode;
        self
    }

    /// Edits the command-line options.
    pub fn options(mut self, f: impl FnOnce(&mut NetOptions)) -> Self {
        f(&mut self.opts);
        self
    }

    /// Edits the derived configuration before the engine gets it.
    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.config_edit.push(Box::new(f));
        self
    }

    pub fn lab(mut self, lab: Lab) -> Self {
        self.lab = lab;
        self
    }

    /// `-m`: the MTU the engine uses (and the guest's link, unless set apart).
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.opts.mtu = Some(mtu);
        self
    }

    /// The guest's own link MTU.
    pub fn guest_mtu(mut self, mtu: usize) -> Self {
        self.guest_mtu = Some(mtu);
        self
    }

    /// The guest's TCP socket buffers (each direction).
    pub fn guest_buffer(mut self, bytes: usize) -> Self {
        self.guest_buffer = bytes;
        self
    }

    /// Both link directions; the impairment's delay replaces the default.
    pub fn impair(mut self, i: Impair) -> Self {
        self.to_engine = i;
        self.to_guest = i;
        self
    }

    pub fn impair_to_engine(mut self, i: Impair) -> Self {
        self.to_engine = i;
        self
    }

    pub fn impair_to_guest(mut self, i: Impair) -> Self {
        self.to_guest = i;
        self
    }

    /// A server application at `addr` ("203.0.113.10:80"; "127.0.0.1:22" for the host's
    /// loopback; "0.0.0.0:22" for any host address).
    pub fn remote_server(mut self, addr: &str, app: App) -> Self {
        self.servers.push((self::addr(addr), app));
        self
    }

    /// An address that answers (refusing connects where nothing listens).
    pub fn reachable(mut self, ip: &str) -> Self {
        self.reachable.push(ip.parse().expect("address"));
        self
    }

    /// `-t spec`: forwards host ports into the guest.
    pub fn forward_tcp(mut self, spec: &str) -> Self {
        let spec: PortSpec = spec.parse().expect("port spec");
        self.opts.tcp_in.add(spec).expect("forward mode");
        self
    }

    /// `-u spec`: forwards host UDP ports into the guest.
    pub fn forward_udp(mut self, spec: &str) -> Self {
        let spec: PortSpec = spec.parse().expect("port spec");
        self.opts.udp_in.add(spec).expect("forward mode");
        self
    }

    /// Edits the virtual host's behaviour.
    pub fn host(mut self, f: impl FnOnce(&mut HostConfig)) -> Self {
        f(&mut self.host);
        self
    }

    /// Edits the engine's limits (flow table size, ephemeral ports).
    pub fn engine(mut self, f: impl FnOnce(&mut EngineOptions)) -> Self {
        f(&mut self.engine);
        self
    }

    /// The guest configures itself by DHCP and SLAAC rather than statically.
    pub fn dhcp(mut self) -> Self {
        self.dhcp = true;
        self
    }

    /// `n` more guests, each behind an engine of its own (another pasta on the same host),
    /// configured alike: see [`World::others`].
    pub fn more_guests(mut self, n: usize) -> Self {
        self.more_guests = n;
        self
    }

    pub fn build(self) -> World {
        let mut config = self.lab.derive(&self.opts).expect("configuration").config;
        for edit in self.config_edit {
            edit(&mut config);
        }
        let mtu = self
            .guest_mtu
            .unwrap_or_else(|| usize::from(config.mtu.unwrap_or(1500).min(9000)));
        let make_guest = |mac: [u8; 6]| {
            let mut guest = SmolGuest::with_options(mac, Instant::from_millis(1), mtu, self.dhcp);
            guest.tcp_buffer = self.guest_buffer;
            if !self.dhcp {
                if let Some(c) = &config.ip4 {
                    guest.configure_ipv4(Ipv4Cidr::new(c.addr, c.prefix_len), c.gateway);
                }
            }
            if let Some(c) = &config.ip6 {
                if !c.addr.is_unspecified() {
                    guest.configure_ipv6(Ipv6Cidr::new(c.addr, c.prefix_len), c.gateway);
                }
            }
            guest
        };
        let guest = make_guest(GUEST_MAC);
        let others: Vec<SmolGuest> = (1..=self.more_guests)
            .map(|i| {
                let mut mac = GUEST_MAC;
                mac[5] = mac[5].wrapping_add(i as u8);
                make_guest(mac)
            })
            .collect();
        let side_config = config.clone();
        let mut w = World::with_parts(config, self.seed, guest, self.host, self.engine);
        w.to_engine.impair = self.to_engine;
        w.to_guest.impair = self.to_guest;
        for (i, guest) in others.into_iter().enumerate() {
            let seed = self.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
            w.add_guest(side_config.clone(), seed, guest);
        }
        for (a, app) in self.servers {
            w.host.listen(a, app);
        }
        for ip in self.reachable {
            w.host.reachable(ip);
        }
        w
    }
}

impl World {
    /// The guest's MAC address, as its interface has it.
    pub fn guest_mac(&self) -> [u8; 6] {
        match self.guest.iface.hardware_addr() {
            smoltcp::wire::HardwareAddress::Ethernet(a) => a.0,
            #[allow(unreachable_patterns)]
            _ => GUEST_MAC,
        }
    }

    fn guest_route(&self, src: IpAddr, dst: IpAddr) -> sans_io::wire::build::Route {
        sans_io::wire::build::Route {
            src_mac: sans_io::wire::MacAddr(self.guest_mac()),
            dst_mac: self.engine.config().our_mac,
            src,
            dst,
        }
    }

    /// The guest sends a UDP datagram from `src` to `dst` (a frame of its own, past its
    /// stack, which has no UDP sockets here); the answers are in the transcript.
    pub fn guest_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let mut q = sans_io::wire::FrameQueue::new();
        let route = self.guest_route(src.ip(), dst.ip());
        sans_io::wire::build::udp_frame(&mut q, route, src.port(), dst.port(), payload);
        self.guest.device.tx.extend(q.iter().map(<[u8]>::to_vec));
    }

    /// The UDP datagrams the engine sent the guest so far: (source, destination, payload).
    pub fn udp_at_guest(&self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        use sans_io::wire::parse::{self, ethertype, ip_proto};
        let mut v = Vec::new();
        for (_, dir, frame) in &self.transcript {
            if *dir != crate::world::Direction::EngineToGuest {
                continue;
            }
            let Ok(eth) = parse::ethernet(frame) else {
                continue;
            };
            let (src, dst, payload) = match eth.ethertype {
                ethertype::IPV4 => match parse::ipv4(eth.payload) {
                    Ok(ip) if ip.protocol == ip_proto::UDP => {
                        (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.payload)
                    }
                    _ => continue,
                },
                ethertype::IPV6 => match parse::ipv6(eth.payload) {
                    Ok(ip) if ip.next_header == ip_proto::UDP => {
                        (IpAddr::V6(ip.src), IpAddr::V6(ip.dst), ip.payload)
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let Ok(udp) = parse::udp(payload) else {
                continue;
            };
            v.push((
                SocketAddr::new(src, udp.src_port),
                SocketAddr::new(dst, udp.dst_port),
                udp.payload.to_vec(),
            ));
        }
        v
    }

    /// The guest sends an ICMP or ICMPv6 echo request.
    pub fn guest_ping(&mut self, src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) {
        let mut q = sans_io::wire::FrameQueue::new();
        let route = self.guest_route(src, dst);
        let ty = if dst.is_ipv4() { 8 } else { 128 };
        let mut msg = vec![ty, 0, 0, 0];
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(data);
        if dst.is_ipv4() {
            sans_io::wire::build::icmp4_frame(&mut q, route, 64, &msg);
        } else {
            sans_io::wire::build::icmpv6_frame(&mut q, route, 64, &msg);
        }
        self.guest.device.tx.extend(q.iter().map(<[u8]>::to_vec));
    }

    /// The whole run so far as a pcap file's bytes (see [`World::save_pcap`]).
    pub fn pcap(&self) -> Vec<u8> {
        crate::capture::pcap(&self.transcript)
    }

    /// Every guest connection done and every host connection finished (its socket closed by
    /// the engine, its application done).
    pub fn all_done(&self) -> bool {
        self.guest.conns.iter().all(|c| c.done())
            && self
                .others
                .iter()
                .all(|o| o.guest.conns.iter().all(|c| c.done()))
            && self.host.conns().iter().all(|c| c.finished())
    }

    /// Runs until [`World::all_done`], for at most `limit` of virtual time.
    pub fn run_until_all_done(&mut self, limit: Duration) -> bool {
        self.run_until(limit, |w| w.all_done())
    }

    /// Everything a failing test wants to print.
    pub fn diagnose(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "at {:?} ({} steps)", self.now, self.stats.steps);
        let _ = writeln!(s, "engine: {:?}", self.counters());
        let _ = writeln!(s, "world: {:?}", self.stats);
        let _ = writeln!(s, "host: {:?}", self.host.stats);
        let _ = writeln!(s, "link to engine: {:?}", self.to_engine.stats);
        let _ = writeln!(s, "link to guest: {:?}", self.to_guest.stats);
        if !self.host.violations.is_empty() {
            let _ = writeln!(s, "VIOLATIONS: {:?}", self.host.violations);
        }
        for (i, c) in self.guest.conns.iter().enumerate() {
            let tail: Vec<_> = c.history.iter().rev().take(6).rev().collect();
            let _ = writeln!(
                s,
                "guest conn {i} port {} -> {:?}: received {} sent {} eof {} fin {} reset {:?} done {} history {:?}",
                c.local_port,
                c.remote,
                c.app.received.len(),
                c.app.sent,
                c.app.eof,
                c.app.fin_sent,
                c.reset_at,
                c.done(),
                tail
            );
        }
        for c in self.host.conns() {
            let _ = writeln!(
                s,
                "host conn {} {:?} {} -> {}{}: {:?} received {} sent {} eof {} fin {} peer reset {:?} engine closed {:?} ours: readable {} unacked {} rx_fin {} err {:?}",
                c.id.0,
                c.sock,
                c.local,
                c.remote,
                if c.inbound { " (inbound)" } else { "" },
                c.state,
                c.app.received.len(),
                c.app.sent,
                c.app.eof,
                c.app.fin_sent,
                c.peer_reset_at,
                c.closed_by_engine,
                c.ours.readable(),
                c.ours.unacked(),
                c.ours.rx_fin,
                c.ours.err,
            );
        }
        s
    }

    /// Panics (with a diagnosis) if the engine misused a socket.
    pub fn assert_no_violations(&self) {
        assert!(self.host.violations.is_empty(), "{}", self.diagnose());
    }
}
