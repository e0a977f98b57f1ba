//! UDP flows, guest to host: each (guest source, destination the guest used) pair gets a
//! connected host UDP socket; replies on it go back to the guest from the address and port the
//! guest addressed, which is also the reverse translation (a reply from `--dns-host` appears
//! from `--dns-forward`, one from the host's loopback from the gateway).
//!
//! Flows expire after [`UDP_TIMEOUT`] without traffic either way. The table is bounded: beyond
//! its size, new flows are refused (datagrams dropped and counted).
//!
//! Datagrams from the host larger than the guest's MTU allows are dropped and counted
//! ([`UdpCounters::oversize_dropped`]), for both families: we don't fragment towards the guest
//! (the sender, on the host, sees no error; like a path dropping them).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Config;
use crate::flow::idle::{IdleFlow, IdleFlows};
use crate::flow::{Bind, HostSockets, SockEvent, SockRef};
use crate::fwd::nat;
use crate::services::GuestState;
use crate::time::Instant;
use crate::wire::build::{self, Route};
use crate::wire::parse::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN};
use crate::wire::{FrameQueue, MacAddr};

/// Idle time after which a UDP flow is closed.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(180);
/// UDP flows at most, by default.
pub const DEFAULT_MAX_FLOWS: usize = 4096;
/// Datagrams read from one socket per readiness report, so one busy flow can't starve others.
const RECV_BATCH: usize = 64;
/// The guest's MTU when the configuration doesn't set one (pasta's default).
const DEFAULT_MTU: usize = 65520;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub flows_opened: u64,
    pub flows_expired: u64,
    /// Flows closed on a socket error (an ICMP error for a connected socket).
    pub flows_errored: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    /// Socket could not be opened (or `nat` refused the destination).
    pub open_failed: u64,
    pub send_failed: u64,
    pub table_full: u64,
    /// Host datagrams too large for the guest's MTU.
    pub oversize_dropped: u64,
    /// Datagrams dropped because UDP is disabled (`--no-udp`).
    pub disabled_dropped: u64,
}

/// What a UDP call needs from the engine.
pub struct UdpCx<'a> {
    pub now: Instant,
    pub config: &'a Config,
    pub guest: &'a GuestState,
    pub io: &'a mut dyn HostSockets,
    pub out: &'a mut FrameQueue,
    pub counters: &'a mut UdpCounters,
}

/// One flow: the guest's end, the peer as the guest addressed it, the host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    pub guest: SocketAddr,
    pub peer: SocketAddr,
    pub sock: SockRef,
    pub last: Instant,
}

pub struct Udp {
    flows: IdleFlows<UdpFlow>,
    buf: Vec<u8>,
}

impl IdleFlow for UdpFlow {
    type Key = (SocketAddr, SocketAddr);

    fn key(&self) -> Self::Key {
        (self.guest, self.peer)
    }

    fn last(&self) -> Instant {
        self.last
    }
}

impl Udp {
    pub fn new(max: usize) -> Udp {
        Udp {
            flows: IdleFlows::new(max, UDP_TIMEOUT),
            buf: vec![0; 65536],
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn flows(&self) -> impl Iterator<Item = &UdpFlow> {
        self.flows.iter()
    }

    pub fn owns(&self, s: SockRef) -> bool {
        self.flows.owns(s)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flows.poll_timeout()
    }

    /// A datagram from the guest, `src` to `dst`.
    pub fn handle_datagram(
        &mut self,
        cx: &mut UdpCx<'_>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) {
        if !cx.config.protocols.udp {
            cx.counters.disabled_dropped += 1;
            return;
        }
        if src.port() == 0 || dst.port() == 0 || !unicast(dst.ip()) || !unicast(src.ip()) {
            return;
        }
        let s = match self.flows.find(&(src, dst)) {
            Some(s) => s,
            None => match self.open(cx, src, dst) {
                Some(s) => s,
                None => return,
            },
        };
        if let Some(f) = self.flows.get_mut(s) {
            f.last = cx.now;
        }
        match cx.io.udp_send(s, payload) {
            Ok(_) => cx.counters.datagrams_out += 1,
            Err(_) => cx.counters.send_failed += 1,
        }
    }

    fn open(&mut self, cx: &mut UdpCx<'_>, src: SocketAddr, dst: SocketAddr) -> Option<SockRef> {
        if self.flows.is_full() {
            cx.counters.table_full += 1;
            return None;
        }
        let Some(target) = nat::from_guest(cx.config, dst) else {
            cx.counters.open_failed += 1;
            return None;
        };
        let bind = match (
            target.is_ipv6(),
            cx.config.ip4.as_ref(),
            cx.config.ip6.as_ref(),
        ) {
            _ if target.ip().is_loopback() => Bind::default(),
            (false, Some(c), _) => Bind {
                addr: c.outbound_addr.map(IpAddr::V4),
                iface: c.outbound_if.as_deref(),
            },
            (true, _, Some(c)) => Bind {
                addr: c.outbound_addr.map(IpAddr::V6),
                iface: c.outbound_if.as_deref(),
            },
            _ => Bind::default(),
        };
        let s = match cx.io.udp_open(bind, target) {
            Ok(s) => s,
            Err(_) => {
                cx.counters.open_failed += 1;
                return None;
            }
        };
        cx.counters.flows_opened += 1;
        self.flows.insert(
            s,
            UdpFlow {
                guest: src,
                peer: dst,
                sock: s,
                last: cx.now,
            },
        );
        Some(s)
    }

    /// An event on one of our sockets (check [`Udp::owns`] first).
    pub fn handle_socket(&mut self, cx: &mut UdpCx<'_>, s: SockRef, ev: SockEvent) {
        let Some(&flow) = self.flows.get(s) else {
            return;
        };
        match ev {
            SockEvent::Readable => {
                for _ in 0..RECV_BATCH {
                    let n = match cx.io.udp_recv(s, &mut self.buf) {
                        Ok(n) => n,
                        Err(_) => break,
                    };
                    self.to_guest(cx, &flow, n);
                }
                if let Some(f) = self.flows.get_mut(s) {
                    f.last = cx.now;
                }
            }
            SockEvent::Error(_) => {
                cx.counters.flows_errored += 1;
                self.remove(cx.io, s);
            }
            _ => {}
        }
    }

    fn to_guest(&self, cx: &mut UdpCx<'_>, flow: &UdpFlow, n: usize) {
        let ip_header = if flow.peer.is_ipv4() {
            IPV4_HEADER_LEN
        } else {
            IPV6_HEADER_LEN
        };
        let mtu = cx.config.mtu.map_or(DEFAULT_MTU, usize::from);
        if ip_header + UDP_HEADER_LEN + n > mtu {
            cx.counters.oversize_dropped += 1;
            return;
        }
        let route = Route {
            src_mac: cx.config.our_mac,
            dst_mac: cx
                .guest
                .mac
                .or(cx.config.ns_mac)
                .unwrap_or(MacAddr::BROADCAST),
            src: flow.peer.ip(),
            dst: flow.guest.ip(),
        };
        build::udp_frame(
            cx.out,
            route,
            flow.peer.port(),
            flow.guest.port(),
            &self.buf[..n],
        );
        cx.counters.datagrams_in += 1;
    }

    /// Closes flows idle for [`UDP_TIMEOUT`].
    pub fn handle_timeout(&mut self, cx: &mut UdpCx<'_>) {
        let (io, counters) = (&mut *cx.io, &mut *cx.counters);
        self.flows.expire(cx.now, |s, _| {
            counters.flows_expired += 1;
            io.close(s, false);
        });
    }

    fn remove(&mut self, io: &mut dyn HostSockets, s: SockRef) {
        if self.flows.remove(s).is_some() {
            io.close(s, false);
        }
    }
}

fn unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}
