//! UDP flows. Each (guest address and port, peer as the guest sees it) pair is one flow with
//! a connected host UDP socket of its own:
//!
//! - Guest to host: the guest's first datagram to a peer opens the flow's socket, connected to
//!   where the address translation says the peer really is; replies on it go back to the guest
//!   from the address and port the guest addressed, which is also the reverse translation (a
//!   reply from `--dns-host` appears from `--dns-forward`, one from the host's loopback from
//!   the gateway).
//! - Host to guest (`-u`): a datagram arriving on a forwarding listener opens a flow towards
//!   the forwarded guest port, appearing from the peer as translated (a loopback source from
//!   the gateway). The flow starts on the listener itself: the peer's next datagrams are
//!   told apart in the listener's queue by their source, and the guest's answers are sent
//!   from the listener, so they leave from the port the peer wrote to. A one-shot exchange
//!   (a DNS query and its answer) thus costs no socket; binding one to the listener's port
//!   makes the kernel walk every socket on that port, which was most of a busy server's work.
//!   Once the exchange is a conversation (more than
//!   [`ONE_SHOT_DATAGRAMS`](super::idle::ONE_SHOT_DATAGRAMS) both ways) it gets a "reply
//!   socket" of its own, bound to the listener's address and port and connected to the peer:
//!   the kernel then delivers the peer's datagrams to it (runs whole) rather than to the
//!   listener, and the answers leave from it. This is the man page's "recently forwarded"
//!   tracking: the flow remembers the forwarded exchange for as long as it is active. When
//!   the listener closes (its forward removed), an exchange on it still waiting for the
//!   guest's answer gets such a socket then, so that the answer still reaches the peer, as
//!   it would with a socket of its own from the start; answered exchanges end there.
//!
//! Host datagrams are received straight into the frame that carries them to the guest.
//!
//! Flows expire after [`UDP_TIMEOUT`] without traffic either way, one-shot exchanges (a DNS
//! lookup) after [`ONE_SHOT_TIMEOUT`](super::idle::ONE_SHOT_TIMEOUT). The table is bounded:
//! when it is full, a new flow takes the place of one that is done with, or quiet (counted
//! in [`UdpCounters::evicted`]); only when every flow is active are new flows refused
//! (datagrams dropped and counted). See [`idle`](super::idle).
//!
//! Datagrams from the host larger than the guest's MTU allows are dropped and counted
//! ([`UdpCounters::oversize_dropped`]), for both families: we don't fragment towards the guest
//! (the sender, on the host, sees no error; like a path dropping them).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Config;
use crate::flow::idle::{
    outbound_bind, Class, DgramCx, FlowHandle, IdleFlow, IdleFlows, OpenError, Way,
};
use crate::flow::udp_runs::DatagramRuns;
use crate::flow::unicast;
use crate::flow::{DgramSockets, SockEvent, SockRef};
use crate::fwd::forwards::Forwards;
use crate::fwd::nat;
use crate::guest::GuestState;
use crate::time::Instant;
use crate::wire::build::{self, Route};
use crate::wire::parse::{ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN};
use crate::wire::MacAddr;

/// Idle time after which a UDP flow is closed (a one-shot exchange sooner, see
/// [`idle`](super::idle)).
pub const UDP_TIMEOUT: Duration = Duration::from_secs(180);
/// UDP flows at most, by default: most hold a descriptor, so this caps what a guest's burst
/// of flows costs in descriptors and memory. As many as TCP's: a sender that takes a new
/// port for every datagram (a metrics client, a resolver) makes thousands of flows a second,
/// each kept for a second at least while it may still get its answer (see
/// [`EVICT_IDLE`](super::idle::EVICT_IDLE)), and 4096 held a few hundred milliseconds of
/// those. Eviction keeps a full table usable, and a process limit below it (`EMFILE`) is met
/// the same way.
pub const DEFAULT_MAX_FLOWS: usize = 65536;
/// Datagrams read from one socket per readiness report, so one busy flow can't starve others.
const RECV_BATCH: usize = 64;
/// Datagrams asked for per receive call (`recvmmsg`).
const RECV_MANY: usize = 32;
/// The guest's MTU when the configuration doesn't set one (pasta's default).
const DEFAULT_MTU: usize = 65520;
/// The largest UDP payload there is (IPv6's, without jumbograms; IPv4's is 20 bytes less).
const LARGEST_UDP_PAYLOAD: usize = 65535 - UDP_HEADER_LEN;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub flows_opened: u64,
    /// Flows opened by a datagram arriving on a forwarding listener (also in `flows_opened`).
    pub flows_inbound: u64,
    /// Of those, the ones that became conversations and got a socket of their own.
    pub flows_promoted: u64,
    /// Exchanges on a listener when it closed: still waiting for the guest's answer, and
    /// given a socket of their own...
    pub exchanges_kept: u64,
    /// ...or ended with it (answered already, or no socket to be had).
    pub exchanges_ended: u64,
    pub flows_expired: u64,
    /// Flows closed on a socket error (an ICMP error for a connected socket).
    pub flows_errored: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
    /// Socket could not be opened (or `nat` refused the destination).
    pub open_failed: u64,
    pub send_failed: u64,
    /// New flows refused: the table was full of active flows.
    pub table_full: u64,
    /// Flows closed to make room for a new one (a full table, or no descriptor left).
    pub evicted: u64,
    /// Host datagrams too large for the guest's MTU.
    pub oversize_dropped: u64,
    /// Datagrams dropped because UDP is disabled (`--no-udp`).
    pub disabled_dropped: u64,
    /// Datagrams on a listener whose port leads nowhere, or from a family the guest lacks.
    pub unforwarded: u64,
    /// Datagrams from a local sender handed to the driver's loopback bypass (pasta).
    pub relayed_locally: u64,
}

/// What a UDP call needs from the engine.
pub type UdpCx<'a> = DgramCx<'a, UdpCounters, dyn DgramSockets + 'a>;

/// One flow: the guest's end, the peer as the guest addressed it, the host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    pub guest: SocketAddr,
    pub peer: SocketAddr,
    pub sock: UdpSock,
}

/// A flow's host side: where its datagrams to the peer go and the peer's arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UdpSock {
    /// A socket of the flow's own, connected to the peer.
    Own(SockRef),
    /// A forwarding listener's, shared: an exchange the peer (at this address) began there,
    /// answered from the listener, until it becomes a conversation and gets a socket of its
    /// own (see the module's documentation).
    Listener(SockRef, SocketAddr),
}

impl FlowHandle for UdpSock {
    fn own_socket(self) -> Option<SockRef> {
        match self {
            UdpSock::Own(s) => Some(s),
            UdpSock::Listener(..) => None,
        }
    }
}

pub struct Udp {
    flows: IdleFlows<UdpFlow>,
    /// Forwarding listeners (`-u`), with where each is bound.
    listeners: BTreeMap<SockRef, Listener>,
}

/// Where a forwarding listener is bound: what a reply socket for an exchange begun on it is
/// bound to as well.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listener {
    /// The address and port as the forward gave them (and the driver bound them).
    bound: SocketAddr,
    iface: Option<String>,
}

impl Listener {
    /// The address and port, IPv4-mapped IPv6 addresses as IPv4.
    fn local(&self) -> SocketAddr {
        SocketAddr::new(self.bound.ip().to_canonical(), self.bound.port())
    }
}

impl IdleFlow for UdpFlow {
    type Key = (SocketAddr, SocketAddr);
    type Handle = UdpSock;

    fn key(&self) -> Self::Key {
        (self.guest, self.peer)
    }
}

impl Udp {
    /// At most `max` flows.
    pub fn new(max: usize) -> Udp {
        Udp {
            flows: IdleFlows::new(max, UDP_TIMEOUT),
            listeners: BTreeMap::new(),
        }
    }

    /// A forwarding listener the driver opened (for `-u`), bound to `bound` (on `iface`, if
    /// the forward names one).
    pub fn add_listener(&mut self, s: SockRef, bound: SocketAddr, iface: Option<String>) {
        self.listeners.insert(s, Listener { bound, iface });
    }

    /// Forgets a forwarding listener the driver closed: the flows with sockets of their own
    /// carry on. Of the exchanges it carried, those still waiting for the guest's answer get
    /// a socket of their own, bound where the listener was, so that the answer still leaves
    /// from the port the peer wrote to; the answered ones end. An exchange that can't have a
    /// socket (out of descriptors) ends too.
    pub fn remove_listener(
        &mut self,
        s: SockRef,
        io: &mut dyn DgramSockets,
        counters: &mut UdpCounters,
    ) {
        let Some(listener) = self.listeners.remove(&s) else {
            return;
        };
        let peers: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter_map(|f| match f.sock {
                UdpSock::Listener(l, peer) if l == s => Some(peer),
                _ => None,
            })
            .collect();
        for peer in peers {
            let h = UdpSock::Listener(s, peer);
            let waiting = !matches!(self.flows.activity(h), Some((Class::Answered, _)));
            if waiting && to_reply_socket(&mut self.flows, io, &listener, s, peer).is_ok() {
                counters.exchanges_kept += 1;
            } else {
                self.flows.remove(h);
                counters.exchanges_ended += 1;
            }
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
        self.flows.owns(UdpSock::Own(s)) || self.listeners.contains_key(&s)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flows.poll_timeout()
    }

    /// A datagram from the guest, `src` to `dst`. With `runs`, it may wait there to go out
    /// with the rest of its flow's (see `udp_runs`): the caller writes them before the frames
    /// go.
    pub fn handle_datagram<'f>(
        &mut self,
        cx: &mut UdpCx<'_>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'f [u8],
        mut runs: Option<&mut DatagramRuns<'f>>,
    ) {
        if !cx.config.protocols.udp {
            cx.counters.disabled_dropped += 1;
            return;
        }
        if src.port() == 0 || dst.port() == 0 || !unicast(dst.ip()) || !unicast(src.ip()) {
            return;
        }
        let h = match self.flows.find(&(src, dst)) {
            Some(h) => h,
            None => {
                // Opening may close another flow to make room: its datagrams go first.
                if let Some(runs) = runs.as_deref_mut() {
                    runs.write(cx);
                }
                match self.open(cx, src, dst) {
                    Some(s) => UdpSock::Own(s),
                    None => return,
                }
            }
        };
        self.flows.touch(h, cx.now, Way::FromGuest, 1);
        let sent = match self.promote(cx.io, cx.counters, h) {
            UdpSock::Own(s) => {
                if let Some(runs) = runs {
                    runs.queue(cx, s, payload);
                    return;
                }
                cx.io.udp_send(s, payload)
            }
            // An answer in an exchange a peer began: from the port it wrote to.
            UdpSock::Listener(l, to) => cx.io.udp_send_via(l, to, payload),
        };
        match sent {
            Ok(_) => cx.counters.datagrams_out += 1,
            Err(_) => cx.counters.send_failed += 1,
        }
    }

    /// Gives a flow on a listener that has become a conversation a socket of its own,
    /// connected to its peer: the kernel then sorts the peer's datagrams out for it (runs
    /// whole) rather than queueing them with everyone's on the listener. Returns the flow's
    /// handle after. A flow that can't have one (out of descriptors) stays on the listener.
    fn promote(
        &mut self,
        io: &mut dyn DgramSockets,
        counters: &mut UdpCounters,
        h: UdpSock,
    ) -> UdpSock {
        let UdpSock::Listener(l, peer) = h else {
            return h;
        };
        if !matches!(self.flows.activity(h), Some((Class::Conversation, _))) {
            return h;
        }
        let Some(listener) = self.listeners.get(&l) else {
            return h;
        };
        match to_reply_socket(&mut self.flows, io, listener, l, peer) {
            Ok(own) => {
                counters.flows_promoted += 1;
                own
            }
            Err(_) => {
                counters.open_failed += 1;
                h
            }
        }
    }

    fn open(&mut self, cx: &mut UdpCx<'_>, src: SocketAddr, dst: SocketAddr) -> Option<SockRef> {
        let Some(target) = nat::from_guest(cx.config, dst) else {
            cx.counters.open_failed += 1;
            return None;
        };
        let bind = outbound_bind(cx.config, target.ip());
        let opened = self
            .flows
            .open(cx.now, cx.io, &mut cx.counters.evicted, |io| {
                io.udp_open(bind, target)
            });
        let s = match opened {
            Ok(s) => s,
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
        let flow = UdpFlow {
            guest: src,
            peer: dst,
            sock: UdpSock::Own(s),
        };
        self.flows
            .insert(UdpSock::Own(s), flow, cx.now, Way::FromGuest);
        Some(s)
    }

    /// An event on one of our sockets (check [`Udp::owns`] first).
    pub fn handle_socket(&mut self, cx: &mut UdpCx<'_>, s: SockRef, ev: SockEvent) {
        if let Some(listener) = self.listeners.get(&s) {
            if ev == SockEvent::Readable {
                let local = listener.local();
                self.listener_readable(cx, s, local);
            }
            return;
        }
        let h = UdpSock::Own(s);
        let Some(&flow) = self.flows.get(h) else {
            return;
        };
        match ev {
            SockEvent::Readable => {
                let route = route_to_guest(cx.config, cx.guest, &flow);
                let ports = (flow.peer.port(), flow.guest.port());
                let received = recv_batch(|want| recv_many(cx, s, &route, ports, want));
                self.flows.touch(h, cx.now, Way::ToGuest, received as u32);
            }
            SockEvent::Error(_) => {
                cx.counters.flows_errored += 1;
                self.flows.close(h, cx.io);
            }
            _ => {}
        }
    }

    /// Datagrams on forwarding listener `l` (bound to `local`): each goes to the guest on the
    /// flow of its peer, opened by the first, or to pasta's loopback bypass.
    fn listener_readable(&mut self, cx: &mut UdpCx<'_>, l: SockRef, local: SocketAddr) {
        // Where the listener's datagrams go, the same for all of them.
        let to = forwarded(cx.forwards, local);
        recv_batch(|want| self.listener_recv_many(cx, l, (local, to), want));
    }

    /// Receives up to `want` datagrams on listener `l` (bound to `local`, its datagrams going
    /// to `to`, see [`forwarded`]) straight into frames for the guest; returns how many
    /// arrived.
    fn listener_recv_many(
        &mut self,
        cx: &mut UdpCx<'_>,
        l: SockRef,
        (local, to): (SocketAddr, Option<(Option<IpAddr>, u16)>),
        want: usize,
    ) -> usize {
        let (off, max_payload) = payload_room(cx.config, local.is_ipv4());
        // Room for any datagram: one for the loopback bypass goes on whole, whatever the
        // guest's MTU; one for the guest larger than that is dropped.
        let slot_len = off + LARGEST_UDP_PAYLOAD;
        let mut lens = [0usize; RECV_MANY];
        let mut peers = [SocketAddr::from(([0, 0, 0, 0], 0)); RECV_MANY];
        let (now, config, guest) = (cx.now, cx.config, cx.guest);
        let (io, counters) = (&mut *cx.io, &mut *cx.counters);
        let csum = cx.out.l4_checksum();
        let mut got = 0;
        cx.out
            .push_slots_in_place(slot_len, &mut lens[..want], |region, lens| {
                let peers = &mut peers[..lens.len()];
                got = io
                    .udp_recv_many_from(l, region, slot_len, off, lens, peers)
                    .unwrap_or(0)
                    .min(lens.len());
                for (i, (len, peer)) in lens.iter_mut().zip(peers.iter()).enumerate() {
                    if i >= got {
                        *len = 0;
                        continue;
                    }
                    let n = (*len).min(slot_len - off);
                    let frame = &mut region[i * slot_len..(i + 1) * slot_len];
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    // Local traffic in pasta skips the guest path: the driver relays it.
                    if let Some(target) =
                        to.and_then(|to| nat::local_bypass(config, guest, peer, to))
                    {
                        match io.relay_datagram(l, peer, target, &frame[off..off + n]) {
                            Ok(()) => counters.relayed_locally += 1,
                            Err(_) => counters.send_failed += 1,
                        }
                        *len = 0;
                        continue;
                    }
                    let flow =
                        self.inbound_flow(now, config, guest, io, counters, l, (local, to), peer);
                    *len = 0;
                    if n > max_payload {
                        counters.oversize_dropped += 1;
                        continue;
                    }
                    let Some(flow) = flow else {
                        continue;
                    };
                    let route = route_to_guest(config, guest, &flow);
                    if build::udp_payload_offset(&route) == off {
                        let ports = (flow.peer.port(), flow.guest.port());
                        *len = build::write_udp_frame(frame, &route, ports.0, ports.1, n, csum);
                        counters.datagrams_in += 1;
                    }
                }
            });
        got
    }

    /// The flow for a datagram from `peer` on listener `l` (bound to `local`, its datagrams
    /// going to `to`: an address, the guest's own if `None`, and a port), opened if new;
    /// `None` when it can't go to the guest (counted).
    #[allow(clippy::too_many_arguments)]
    fn inbound_flow(
        &mut self,
        now: Instant,
        config: &Config,
        guest: &GuestState,
        io: &mut dyn DgramSockets,
        counters: &mut UdpCounters,
        l: SockRef,
        (local, to): (SocketAddr, Option<(Option<IpAddr>, u16)>),
        peer: SocketAddr,
    ) -> Option<UdpFlow> {
        if !config.protocols.udp {
            counters.disabled_dropped += 1;
            return None;
        }
        let Some((target, port)) = to else {
            counters.unforwarded += 1;
            return None;
        };
        let Some((seen, guest_ip)) = nat::to_guest(config, guest, peer, local.ip(), target) else {
            counters.unforwarded += 1;
            return None;
        };
        let key = (SocketAddr::new(guest_ip, port), seen);
        if let Some(h) = self.flows.find(&key) {
            self.flows.touch(h, now, Way::ToGuest, 1);
            let h = self.promote(io, counters, h);
            return self.flows.get(h).copied();
        }
        // A new exchange stays on the listener (no descriptor, no socket to set up) until
        // it becomes a conversation. One with this peer on this listener under another key
        // is stale: the guest's address, or the port the listener forwards to, changed since.
        let h = UdpSock::Listener(l, peer);
        self.flows.remove(h);
        match self.flows.make_room(now, io) {
            Ok(evicted) => counters.evicted += evicted,
            Err(_) => {
                counters.table_full += 1;
                return None;
            }
        }
        counters.flows_opened += 1;
        counters.flows_inbound += 1;
        let flow = UdpFlow {
            guest: key.0,
            peer: seen,
            sock: h,
        };
        self.flows.insert(h, flow, now, Way::ToGuest);
        self.flows.touch(h, now, Way::ToGuest, 1);
        Some(flow)
    }

    /// Closes the flows that went idle (see [`idle`](super::idle)).
    pub fn handle_timeout(&mut self, cx: &mut UdpCx<'_>) {
        cx.counters.flows_expired += self.flows.close_idle(cx.now, cx.io);
    }
}

/// Where datagrams to the forwarding listener at `local` go: the address (the guest's own if
/// `None`) and port, if anywhere.
fn forwarded(forwards: &Forwards, local: SocketAddr) -> Option<(Option<IpAddr>, u16)> {
    forwards
        .map_in(crate::flow::Proto::Udp, local.ip(), local.port())
        .filter(|&(_, p)| p != 0)
}

/// Moves the exchange `peer` began on listener `l` (bound as `listener` says) to a reply
/// socket of its own, opened through `io`; returns the flow's handle after.
fn to_reply_socket(
    flows: &mut IdleFlows<UdpFlow>,
    io: &mut dyn DgramSockets,
    listener: &Listener,
    l: SockRef,
    peer: SocketAddr,
) -> io::Result<UdpSock> {
    let own = UdpSock::Own(io.udp_reply_open(listener.bound, listener.iface.as_deref(), peer)?);
    flows.rehandle(UdpSock::Listener(l, peer), own, |f| f.sock = own);
    Ok(own)
}

/// One readiness report's receiving from a socket: `recv(want)` (one call, up to `want`
/// datagrams, returning how many came) until the socket is empty or [`RECV_BATCH`] came;
/// returns how many.
fn recv_batch(mut recv: impl FnMut(usize) -> usize) -> usize {
    let mut left = RECV_BATCH;
    while left > 0 {
        let want = left.min(RECV_MANY);
        let got = recv(want);
        left -= got;
        if got < want {
            break;
        }
    }
    RECV_BATCH - left
}

/// Receives up to `want` datagrams of flow socket `s` straight into frames for the guest
/// along `route`, with `ports` (source, destination); returns how many arrived.
fn recv_many(
    cx: &mut UdpCx<'_>,
    s: SockRef,
    route: &Route,
    (src_port, dst_port): (u16, u16),
    want: usize,
) -> usize {
    let (off, max_payload) = payload_room(cx.config, route.src.is_ipv4());
    // One byte more than fits: a datagram that fills it is too large (and was truncated).
    let slot_len = off + max_payload + 1;
    let mut lens = [0usize; RECV_MANY];
    let (io, counters) = (&mut *cx.io, &mut *cx.counters);
    let mut got = 0;
    let csum = cx.out.l4_checksum();
    cx.out
        .push_slots_in_place(slot_len, &mut lens[..want], |region, lens| {
            got = io
                .udp_recv_many(s, region, slot_len, off, lens)
                .unwrap_or(0)
                .min(lens.len());
            for (i, len) in lens.iter_mut().enumerate() {
                if i >= got {
                    *len = 0;
                } else if *len > max_payload {
                    counters.oversize_dropped += 1;
                    *len = 0;
                } else {
                    let frame = &mut region[i * slot_len..(i + 1) * slot_len];
                    *len = build::write_udp_frame(frame, route, src_port, dst_port, *len, csum);
                    counters.datagrams_in += 1;
                }
            }
        });
    got
}

/// Where a UDP payload starts in a frame to the guest, and how large it may be (the MTU).
fn payload_room(config: &Config, v4: bool) -> (usize, usize) {
    let ip_header = if v4 { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
    let mtu = config.mtu.map_or(DEFAULT_MTU, usize::from);
    (
        ETH_HEADER_LEN + ip_header + UDP_HEADER_LEN,
        mtu.saturating_sub(ip_header + UDP_HEADER_LEN),
    )
}

/// Where frames of `flow` go: from the peer as the guest sees it, to the guest.
fn route_to_guest(config: &Config, guest: &GuestState, flow: &UdpFlow) -> Route {
    Route {
        src_mac: config.our_mac,
        dst_mac: guest.mac.or(config.ns_mac).unwrap_or(MacAddr::BROADCAST),
        src: flow.peer.ip(),
        dst: flow.guest.ip(),
    }
}
