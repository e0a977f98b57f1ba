//! ICMP and ICMPv6 echo, guest to host, through the host's "ping" sockets (SOCK_DGRAM,
//! IPPROTO_ICMP/ICMPV6: no privileges beyond `net.ipv4.ping_group_range`).
//!
//! Each (guest address, destination the guest used, guest identifier) gets its own socket,
//! connected to the translated destination (`nat::from_guest`: the gateway reaches the host's
//! loopback). The socket is bound with the guest's identifier where the kernel allows it; when
//! it picks another, requests go out with the kernel's identifier and replies are mapped back
//! to the guest's. Replies come back from the address the guest pinged. Flows expire after
//! [`ICMP_TIMEOUT`] without traffic, a one-shot exchange (`ping -c 1`) after
//! [`ONE_SHOT_TIMEOUT`](super::idle::ONE_SHOT_TIMEOUT); a full table makes room as UDP's
//! does (see [`idle`](super::idle)).
//! `--no-icmp` drops echo requests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::flow::idle::{outbound_bind, DgramCx, IdleFlow, IdleFlows, OpenError, Way};
use crate::flow::unicast;
use crate::flow::{PingSockets, SockEvent, SockRef};
use crate::fwd::nat;
use crate::time::Instant;
use crate::wire::build::{self, Route};
use crate::wire::icmp_echo;
use crate::wire::parse::{IPV4_HEADER_LEN, IPV6_HEADER_LEN};
use crate::wire::MacAddr;

/// Idle time after which an echo flow is closed (a one-shot exchange sooner, see
/// [`idle`](super::idle)).
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(60);
/// Echo flows at most, by default (each holds a descriptor, as UDP flows do).
pub const DEFAULT_MAX_FLOWS: usize = 1024;
const RECV_BATCH: u32 = 64;
const DEFAULT_MTU: usize = 65520;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IcmpCounters {
    pub flows_opened: u64,
    pub flows_expired: u64,
    pub flows_errored: u64,
    pub requests: u64,
    pub replies: u64,
    /// The kernel bound another identifier than the guest's (mapped back on replies).
    pub id_remapped: u64,
    pub open_failed: u64,
    pub send_failed: u64,
    /// New flows refused: the table was full of active flows.
    pub table_full: u64,
    /// Flows closed to make room for a new one (a full table, or no descriptor left).
    pub evicted: u64,
    /// Echo requests dropped because ICMP is disabled (`--no-icmp`).
    pub disabled_dropped: u64,
    /// Host messages that weren't echo replies, or too large for the guest's MTU.
    pub dropped_in: u64,
}

/// What an echo call needs from the engine.
pub type IcmpCx<'a> = DgramCx<'a, IcmpCounters, dyn PingSockets + 'a>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpFlow {
    pub guest: IpAddr,
    pub peer: IpAddr,
    /// The guest's identifier.
    pub id: u16,
    /// The identifier the host socket uses.
    pub host_id: u16,
    pub sock: SockRef,
}

pub struct Icmp {
    flows: IdleFlows<IcmpFlow>,
    buf: Vec<u8>,
}

impl IdleFlow for IcmpFlow {
    type Handle = SockRef;
    type Key = (IpAddr, IpAddr, u16);

    fn key(&self) -> Self::Key {
        (self.guest, self.peer, self.id)
    }
}

impl Icmp {
    pub fn new(max: usize) -> Icmp {
        Icmp {
            flows: IdleFlows::new(max, ICMP_TIMEOUT),
            buf: vec![0; 65536],
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn flows(&self) -> impl Iterator<Item = &IcmpFlow> {
        self.flows.iter()
    }

    pub fn owns(&self, s: SockRef) -> bool {
        self.flows.owns(s)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flows.poll_timeout()
    }

    /// An ICMP (or ICMPv6) message from the guest, `src` to `dst`, from its type byte on.
    /// Returns whether it was an echo request (taken, or dropped and counted).
    pub fn handle_message(
        &mut self,
        cx: &mut IcmpCx<'_>,
        src: IpAddr,
        dst: IpAddr,
        msg: &[u8],
    ) -> bool {
        let id = match icmp_echo::parse(msg) {
            Ok(echo) if echo.is_request(dst.is_ipv6()) => echo.id,
            _ => return false,
        };
        if !cx.config.protocols.icmp {
            cx.counters.disabled_dropped += 1;
            return true;
        }
        if !unicast(src) || !unicast(dst) {
            return true;
        }
        let s = match self.flows.find(&(src, dst, id)) {
            Some(s) => s,
            None => match self.open(cx, src, dst, id) {
                Some(s) => s,
                None => return true,
            },
        };
        let Some(f) = self.flows.touch(s, cx.now, Way::FromGuest, 1) else {
            return true;
        };
        let mut out = msg.to_vec();
        icmp_echo::clear_checksum(&mut out);
        icmp_echo::set_id(&mut out, f.host_id);
        match cx.io.ping_send(s, &out) {
            Ok(_) => cx.counters.requests += 1,
            Err(_) => cx.counters.send_failed += 1,
        }
        true
    }

    fn open(&mut self, cx: &mut IcmpCx<'_>, src: IpAddr, dst: IpAddr, id: u16) -> Option<SockRef> {
        let Some(target) = nat::from_guest(cx.config, SocketAddr::new(dst, 0)) else {
            cx.counters.open_failed += 1;
            return None;
        };
        let target = target.ip();
        let bind = outbound_bind(cx.config, target);
        let opened = self
            .flows
            .open(cx.now, cx.io, &mut cx.counters.evicted, |io| {
                io.ping_open(bind, target, id)
            });
        let (s, host_id) = match opened {
            Ok(x) => x,
            Err(OpenError::Full) => {
                cx.counters.table_full += 1;
                return None;
            }
            Err(OpenError::Failed(_)) => {
                cx.counters.open_failed += 1;
                return None;
            }
        };
        cx.counters.flows_opened += 1;
        if host_id != id {
            cx.counters.id_remapped += 1;
        }
        let flow = IcmpFlow {
            guest: src,
            peer: dst,
            id,
            host_id,
            sock: s,
        };
        self.flows.insert(s, flow, cx.now, Way::FromGuest);
        Some(s)
    }

    pub fn handle_socket(&mut self, cx: &mut IcmpCx<'_>, s: SockRef, ev: SockEvent) {
        let Some(&flow) = self.flows.get(s) else {
            return;
        };
        match ev {
            SockEvent::Readable => {
                let mut received = 0;
                while received < RECV_BATCH {
                    let n = match cx.io.ping_recv(s, &mut self.buf) {
                        Ok(n) => n,
                        Err(_) => break,
                    };
                    received += 1;
                    self.reply_to_guest(cx, &flow, n);
                }
                self.flows.touch(s, cx.now, Way::ToGuest, received);
            }
            SockEvent::Error(_) => {
                cx.counters.flows_errored += 1;
                self.flows.close(s, cx.io);
            }
            _ => {}
        }
    }

    fn reply_to_guest(&mut self, cx: &mut IcmpCx<'_>, flow: &IcmpFlow, n: usize) {
        let ip_header = if flow.peer.is_ipv4() {
            IPV4_HEADER_LEN
        } else {
            IPV6_HEADER_LEN
        };
        let mtu = cx.config.mtu.map_or(DEFAULT_MTU, usize::from);
        let msg = &mut self.buf[..n];
        let is_reply = icmp_echo::parse(msg).is_ok_and(|e| e.is_reply(flow.peer.is_ipv6()));
        if !is_reply || ip_header + n > mtu {
            cx.counters.dropped_in += 1;
            return;
        }
        icmp_echo::set_id(msg, flow.id);
        let route = Route {
            src_mac: cx.config.our_mac,
            dst_mac: cx
                .guest
                .mac
                .or(cx.config.ns_mac)
                .unwrap_or(MacAddr::BROADCAST),
            src: flow.peer,
            dst: flow.guest,
        };
        if flow.peer.is_ipv4() {
            build::icmp4_frame(cx.out, route, 64, msg);
        } else {
            build::icmpv6_frame(cx.out, route, 64, msg);
        }
        cx.counters.replies += 1;
    }

    pub fn handle_timeout(&mut self, cx: &mut IcmpCx<'_>) {
        cx.counters.flows_expired += self.flows.close_idle(cx.now, cx.io);
    }
}
