//! The engine: one guest link's worth of protocol state, driven by the shim or the simulator.
//!
//! Inputs are guest frames, host socket events and accepted connections, and timer expiries,
//! each with the current time; outputs are frames for the guest, queued on a [`FrameQueue`]
//! the caller owns and drains, and socket operations done through [`HostSockets`].
//! [`Engine::poll_timeout`] says when the engine next wants to run its timers.
//! Same inputs, same seed: same outputs.
//!
//! # Driving it
//!
//! Inputs come in only through a [`Batch`] ([`Engine::batch`], see [`crate::batch`]): one per
//! wake-up, fed everything the wake-up found, ended with the flush that sends what the batch
//! left due; then the driver writes the queued frames to the guest and waits for the next
//! input or [`Engine::poll_timeout`] (when [`Batch::timeout`] runs the timers).

use std::ops::RangeInclusive;
use std::time::Duration;

use std::net::SocketAddr;

pub use crate::batch::Batch;
use crate::batch::FrameRuns;
use crate::config::Config;
use crate::dispatch::{self, Destination};
use crate::flow::icmp::{self, Icmp, IcmpCounters, IcmpCx};
use crate::flow::idle::DgramCx;
use crate::flow::table::KeyedHash;
use crate::flow::tcp::{self, Cx, Tcp, TcpCounters};
use crate::flow::udp::{self, Udp, UdpCounters, UdpCx};
use crate::flow::{DgramSockets, HostSockets, NoSockets, SockEvent, SockRef};
use crate::fwd::apply::{self, Applied, ApplyError, ForwardListeners, UdpListenerChanges};
use crate::fwd::forwards::{Direction, ForwardChange, ForwardError, Forwards};
use crate::fwd::rule::ForwardTable;
use crate::guest::GuestState;
use crate::rng::Rng;
use crate::services::ndp::{RA_INTERVAL_MAX, RA_INTERVAL_MIN};
use crate::services::{self, Ctx, Outcome};
use crate::time::Instant;
use crate::wire::external::{ExternalPayloads, GuestFrame, NoExternal};
use crate::wire::{FrameQueue, Malformed};

/// What the engine did with guest frames, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames: u64,
    /// Frames dropped as malformed, and the reason for the last one.
    pub malformed: u64,
    pub last_malformed: Option<Malformed>,
    /// Well-formed frames no service or flow wanted.
    pub ignored: u64,
    pub arp_answered: u64,
    pub dhcp_answered: u64,
    pub ndp_answered: u64,
    pub dhcpv6_answered: u64,
    pub ra_unsolicited: u64,
    /// TCP translation.
    pub tcp: TcpCounters,
    /// UDP translation.
    pub udp: UdpCounters,
    /// ICMP/ICMPv6 echo translation.
    pub icmp: IcmpCounters,
}

/// Limits and ranges the engine is built with (beyond the network configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// TCP flows at most; beyond, new connections are reset (and counted).
    pub max_tcp_flows: usize,
    /// The host's ephemeral port range (`ip_local_port_range`): `-t all` doesn't forward it.
    pub ephemeral: RangeInclusive<u16>,
    /// UDP flows at most: a full table makes room by closing a flow that is done with or
    /// quiet, else new flows' datagrams are dropped (and counted); see `flow::idle`.
    pub max_udp_flows: usize,
    /// Echo flows at most, made room in as UDP's.
    pub max_icmp_flows: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_tcp_flows: tcp::DEFAULT_MAX_FLOWS,
            ephemeral: tcp::DEFAULT_EPHEMERAL,
            max_udp_flows: udp::DEFAULT_MAX_FLOWS,
            max_icmp_flows: icmp::DEFAULT_MAX_FLOWS,
        }
    }
}

pub struct Engine {
    shared: Shared,
    tcp: Tcp,
    udp: Udp,
    icmp: Icmp,
}

/// What every protocol's translation reads or counts in: apart from the flow tables, so that a
/// call can lend it to one table while holding that table (see [`Shared::tcp_cx`]).
struct Shared {
    config: Config,
    /// The forwarding tables, which the driver may replace while we run.
    forwards: Forwards,
    rng: Rng,
    guest: GuestState,
    counters: Counters,
    /// When the next unsolicited router advertisement is due, if we send them.
    next_ra: Option<Instant>,
}

impl Shared {
    /// What the TCP translation needs for one call.
    fn tcp_cx<'a>(
        &'a mut self,
        now: Instant,
        io: &'a mut dyn HostSockets,
        out: &'a mut FrameQueue,
    ) -> Cx<'a> {
        self.tcp_cx_in_place(now, io, out, &NoExternal)
    }

    /// [`Shared::tcp_cx`] for guest frames whose payload may lie where `external` says.
    fn tcp_cx_in_place<'a>(
        &'a mut self,
        now: Instant,
        io: &'a mut dyn HostSockets,
        out: &'a mut FrameQueue,
        external: &'a dyn ExternalPayloads,
    ) -> Cx<'a> {
        Cx {
            external,
            now,
            config: &self.config,
            forwards: &self.forwards,
            guest: &self.guest,
            rng: &mut self.rng,
            io,
            out,
            counters: &mut self.counters.tcp,
        }
    }

    /// What the UDP translation needs for one call.
    fn udp_cx<'a>(
        &'a mut self,
        now: Instant,
        io: &'a mut dyn HostSockets,
        out: &'a mut FrameQueue,
    ) -> UdpCx<'a> {
        self.dgram_cx(now, io, out, |c| &mut c.udp)
    }

    /// What the echo translation needs for one call.
    fn icmp_cx<'a>(
        &'a mut self,
        now: Instant,
        io: &'a mut dyn HostSockets,
        out: &'a mut FrameQueue,
    ) -> IcmpCx<'a> {
        self.dgram_cx(now, io, out, |c| &mut c.icmp)
    }

    /// A datagram translation's context, with its counters picked out of ours.
    fn dgram_cx<'a, C, S: ?Sized>(
        &'a mut self,
        now: Instant,
        io: &'a mut S,
        out: &'a mut FrameQueue,
        counters: fn(&mut Counters) -> &mut C,
    ) -> DgramCx<'a, C, S> {
        let counters = counters(&mut self.counters);
        DgramCx::new(
            now,
            &self.config,
            &self.forwards,
            &self.guest,
            io,
            out,
            counters,
        )
    }
}

impl Engine {
    /// An engine for `config` with default limits; `seed` is its only source of randomness.
    pub fn new(config: Config, seed: u64, now: Instant) -> Engine {
        Engine::with_options(config, seed, now, EngineOptions::default())
    }

    /// An engine for `config` with the given limits. Its forwarding tables are the command
    /// line's ([`Forwards::from_config`]); a driver checks first that they fit (that call's
    /// error), since here the rules that don't are left out.
    pub fn with_options(config: Config, seed: u64, now: Instant, options: EngineOptions) -> Engine {
        let (forwards, _) = Forwards::from_config(&config, options.ephemeral.clone());
        let mut rng = Rng::new(seed);
        let next_ra = config.services.ra.then(|| now + ra_interval(&mut rng));
        let hash = KeyedHash::new(rng.next_u64(), rng.next_u64());
        Engine {
            shared: Shared {
                config,
                forwards,
                rng,
                guest: GuestState::default(),
                counters: Counters::default(),
                next_ra,
            },
            tcp: Tcp::new(options.max_tcp_flows, hash),
            udp: Udp::new(options.max_udp_flows),
            icmp: Icmp::new(options.max_icmp_flows),
        }
    }

    /// The TCP translation's state (flows, phases), for tests and debugging.
    pub fn tcp(&self) -> &Tcp {
        &self.tcp
    }

    /// The UDP translation's state (flows), for tests and debugging.
    pub fn udp(&self) -> &Udp {
        &self.udp
    }

    /// The echo translation's state (flows), for tests and debugging.
    pub fn icmp(&self) -> &Icmp {
        &self.icmp
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The forwarding tables in use.
    pub fn forwards(&self) -> &Forwards {
        &self.shared.forwards
    }

    /// Checks `table` as the new forwarding table of `direction`: what the driver must open
    /// and close for it, to [`Engine::commit_forwards`] once the new listeners are open.
    /// Nothing changes before.
    pub fn plan_forwards(
        &self,
        direction: Direction,
        table: ForwardTable,
    ) -> Result<ForwardChange, ForwardError> {
        self.shared
            .forwards
            .plan(&self.shared.config, direction, table)
    }

    /// Replaces the forwarding table of `direction` with `table` in one step, opening and
    /// closing the driver's `listeners` for it: all or nothing (a conflict, a rule this
    /// configuration can't serve, or a port in use changes nothing, and the error says
    /// which and why); see [`crate::fwd::apply`]. Unchanged listeners keep running;
    /// flows already open carry on, even those a removed rule made, but for UDP exchanges
    /// on a removed listener that were answered already (see
    /// [`remove_udp_listener`](Engine::remove_udp_listener)).
    pub fn apply_forwards(
        &mut self,
        direction: Direction,
        table: ForwardTable,
        listeners: &mut dyn ForwardListeners,
    ) -> Result<Applied, ForwardError> {
        let change = self.plan_forwards(direction, table)?;
        let mut udp = UdpListenerChanges::default();
        let done = apply::apply(&change, listeners, &mut udp);
        self.udp_listeners_changed(udp, listeners.datagram_sockets());
        let done = done?;
        self.commit_forwards(change);
        Ok(done)
    }

    /// Opens the listeners of the tables the engine started with (the command line's), both
    /// directions: at start-up, each as best it can (a port that can't be bound is left
    /// out, as the C original does, and returned for the driver's warnings).
    pub fn listen_forwards(&mut self, listeners: &mut dyn ForwardListeners) -> Vec<ApplyError> {
        let mut failed = Vec::new();
        let mut udp = UdpListenerChanges::default();
        for direction in [Direction::Inbound, Direction::Outbound] {
            let sockets = self.shared.forwards.listeners(direction).open;
            let sockets = sockets.iter().map(|(socket, _)| socket);
            failed.extend(apply::open_each(direction, sockets, listeners, &mut udp));
        }
        self.udp_listeners_changed(udp, listeners.datagram_sockets());
        failed
    }

    /// The UDP listeners `apply` closed and opened; exchanges still waiting on a closed one
    /// get reply sockets through `io`, if there is one.
    fn udp_listeners_changed(
        &mut self,
        udp: UdpListenerChanges,
        io: Option<&mut dyn DgramSockets>,
    ) {
        let mut none = NoSockets;
        let io: &mut dyn DgramSockets = match io {
            Some(io) => io,
            None => &mut none,
        };
        for s in udp.closed {
            self.remove_udp_listener(s, io);
        }
        for (s, bound, iface) in udp.opened {
            self.udp.add_listener(s, bound, iface);
        }
    }

    /// Makes a planned table the one in use, in one step: connections and datagrams arriving
    /// from now on follow it; flows already open, even those its old rules made, carry on.
    /// The driver closes [`ListenerDiff::close`](crate::fwd::forwards::ListenerDiff) after.
    pub fn commit_forwards(&mut self, change: ForwardChange) {
        self.shared.forwards.commit(change);
    }

    pub fn guest(&self) -> &GuestState {
        &self.shared.guest
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The next time the engine wants [`Batch::timeout`] to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.shared.next_ra,
            self.tcp.poll_timeout(),
            self.udp.poll_timeout(),
            self.icmp.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now` (and flushes, as a batch's end would).
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        self.tcp
            .handle_timeout(&mut self.shared.tcp_cx(now, &mut *io, &mut *out));
        self.udp
            .handle_timeout(&mut self.shared.udp_cx(now, &mut *io, &mut *out));
        self.icmp
            .handle_timeout(&mut self.shared.icmp_cx(now, &mut *io, &mut *out));
        if let Some(due) = self.shared.next_ra.filter(|&due| due <= now) {
            let mut ctx = Ctx {
                config: &self.shared.config,
                guest: &self.shared.guest,
                out,
            };
            if services::ndp::unsolicited_ra(&mut ctx) == Outcome::Answered {
                self.shared.counters.ra_unsolicited += 1;
            }
            self.shared.next_ra = Some(due.max(now) + ra_interval(&mut self.shared.rng));
        }
    }

    /// Reports what happened on a host socket the core opened or was given.
    pub(crate) fn handle_socket(
        &mut self,
        now: Instant,
        s: SockRef,
        ev: SockEvent,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        if self.icmp.owns(s) {
            let mut cx = self.shared.icmp_cx(now, io, out);
            self.icmp.handle_socket(&mut cx, s, ev);
            return;
        }
        if self.udp.owns(s) {
            let mut cx = self.shared.udp_cx(now, io, out);
            self.udp.handle_socket(&mut cx, s, ev);
            return;
        }
        let mut cx = self.shared.tcp_cx(now, io, out);
        self.tcp.handle_socket(&mut cx, s, ev);
    }

    /// A UDP forwarding listener (`-u`) the driver opened, bound to `bound` (on `iface`):
    /// datagrams on it go to the guest's forwarded port, and the guest's answers back to their
    /// senders.
    pub fn add_udp_listener(&mut self, s: SockRef, bound: SocketAddr, iface: Option<String>) {
        self.udp.add_listener(s, bound, iface);
    }

    /// A UDP forwarding listener the driver closed (`auto` forwarding found its port unbound):
    /// no more datagrams come through it. Flows it opened that became conversations carry
    /// on with sockets of their own; so do the exchanges still waiting on it for the guest's
    /// answer (a query not yet answered, say), which get theirs from `io` now. Answered
    /// exchanges end with it.
    pub fn remove_udp_listener(&mut self, s: SockRef, io: &mut dyn DgramSockets) {
        let counters = &mut self.shared.counters.udp;
        self.udp.remove_listener(s, io, counters);
    }

    /// A connection accepted on a forwarding listener: `s` is the new socket, `peer` the
    /// remote end, `local` the address and port it reached. The core closes it if the port
    /// isn't forwarded.
    pub(crate) fn handle_accept(
        &mut self,
        now: Instant,
        s: SockRef,
        peer: SocketAddr,
        local: SocketAddr,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        let mut cx = self.shared.tcp_cx(now, io, out);
        self.tcp.handle_accept(&mut cx, s, peer, local);
    }

    /// Sends what the last batch of inputs left due (coalesced ACKs and window updates, data
    /// the guest's ACKs made room for): a [`Batch`]'s end.
    pub(crate) fn flush(&mut self, now: Instant, io: &mut dyn HostSockets, out: &mut FrameQueue) {
        let mut cx = self.shared.tcp_cx(now, io, out);
        self.tcp.flush(&mut cx);
    }

    /// Handles one frame from the guest. With `runs`, TCP data may wait there to be written
    /// with the rest of its flow's run ([`Engine::write_runs`]).
    #[cfg(test)]
    pub(crate) fn handle_frame<'f>(
        &mut self,
        now: Instant,
        frame: &'f [u8],
        runs: Option<&mut FrameRuns<'f>>,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        let frame = GuestFrame::whole(frame);
        self.handle_guest_frame(now, frame, &NoExternal, runs, io, out);
    }

    /// [`Engine::handle_frame`] of a frame part of which may lie where `external` says.
    pub(crate) fn handle_guest_frame<'f>(
        &mut self,
        now: Instant,
        frame: GuestFrame<'f>,
        external: &dyn ExternalPayloads,
        runs: Option<&mut FrameRuns<'f>>,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        self.shared.counters.frames += 1;
        let outcome = self.dispatch(now, frame, external, runs, io, out);
        match outcome {
            Dispatched::Service(kind, Outcome::Answered) => match kind {
                Service::Arp => self.shared.counters.arp_answered += 1,
                Service::Dhcp => self.shared.counters.dhcp_answered += 1,
                Service::Ndp => self.shared.counters.ndp_answered += 1,
                Service::Dhcpv6 => self.shared.counters.dhcpv6_answered += 1,
            },
            Dispatched::Tcp | Dispatched::Udp | Dispatched::Icmp => {}
            Dispatched::Service(_, Outcome::Ignored) | Dispatched::Unhandled => {
                self.shared.counters.ignored += 1
            }
            Dispatched::Service(_, Outcome::Malformed(why)) | Dispatched::Malformed(why) => {
                self.shared.counters.malformed += 1;
                self.shared.counters.last_malformed = Some(why);
            }
        }
    }

    /// Writes out the guest data waiting in `runs` (payload in place where `external` says).
    pub(crate) fn write_runs(
        &mut self,
        now: Instant,
        runs: &mut FrameRuns<'_>,
        external: &dyn ExternalPayloads,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) {
        if !runs.tcp.is_empty() {
            let mut cx = self.shared.tcp_cx_in_place(now, io, out, external);
            self.tcp.write_runs(&mut cx, &mut runs.tcp);
        }
        if !runs.udp.is_empty() {
            runs.udp.write(&mut self.shared.udp_cx(now, io, out));
        }
    }

    /// Takes a guest frame where [`dispatch::route`] sends it.
    fn dispatch<'f>(
        &mut self,
        now: Instant,
        frame: GuestFrame<'f>,
        external: &dyn ExternalPayloads,
        mut runs: Option<&mut FrameRuns<'f>>,
        io: &mut dyn HostSockets,
        out: &mut FrameQueue,
    ) -> Dispatched {
        if let Some(runs) = runs.as_deref_mut() {
            if dispatch::changes_guest_mac(frame.head, &self.shared.guest) {
                // Frames to the guest go to the MAC it has now: what the runs' writes send
                // must go where it would have gone one by one.
                self.write_runs(now, runs, external, io, out);
            }
        }
        let shared = &mut self.shared;
        match dispatch::route(frame, &shared.config, &shared.forwards, &mut shared.guest) {
            Destination::Arp(eth) => {
                self.answer(Service::Arp, out, |ctx| services::arp::handle(ctx, &eth))
            }
            Destination::Dhcp(eth, ip, udp) => self.answer(Service::Dhcp, out, |ctx| {
                services::dhcp::handle(ctx, &eth, &ip, &udp)
            }),
            Destination::Ndp(eth, ip) => self.answer(Service::Ndp, out, |ctx| {
                services::ndp::handle(ctx, &eth, &ip, ip.payload)
            }),
            Destination::Dhcpv6(eth, ip, udp) => self.answer(Service::Dhcpv6, out, |ctx| {
                services::dhcpv6::handle(ctx, &eth, &ip, &udp)
            }),
            Destination::Tcp { src, dst, segment } => {
                let mut cx = self.shared.tcp_cx_in_place(now, io, out, external);
                self.tcp
                    .handle_segment(&mut cx, src, dst, &segment, runs.map(|r| &mut r.tcp));
                Dispatched::Tcp
            }
            Destination::Udp { src, dst, payload } => {
                let mut cx = self.shared.udp_cx(now, io, out);
                self.udp
                    .handle_datagram(&mut cx, src, dst, payload, runs.map(|r| &mut r.udp));
                Dispatched::Udp
            }
            // Echo requests become flows; other messages are not ours.
            Destination::Icmp { src, dst, message } => {
                let mut cx = self.shared.icmp_cx(now, io, out);
                if self.icmp.handle_message(&mut cx, src, dst, message) {
                    Dispatched::Icmp
                } else {
                    Dispatched::Unhandled
                }
            }
            Destination::Unhandled => Dispatched::Unhandled,
            Destination::Malformed(why) => Dispatched::Malformed(why),
        }
    }

    /// Lets a configuration service answer.
    fn answer(
        &self,
        service: Service,
        out: &mut FrameQueue,
        handle: impl FnOnce(&mut Ctx) -> Outcome,
    ) -> Dispatched {
        let mut ctx = Ctx {
            config: &self.shared.config,
            guest: &self.shared.guest,
            out,
        };
        Dispatched::Service(service, handle(&mut ctx))
    }
}

fn ra_interval(rng: &mut Rng) -> Duration {
    let secs = rng.range(RA_INTERVAL_MIN.as_secs(), RA_INTERVAL_MAX.as_secs());
    Duration::from_secs(secs)
}

#[derive(Debug, Clone, Copy)]
enum Service {
    Arp,
    Dhcp,
    Ndp,
    Dhcpv6,
}

#[derive(Debug, Clone, Copy)]
enum Dispatched {
    Service(Service, Outcome),
    /// Went to the TCP translation, which counts for itself.
    Tcp,
    /// Went to the UDP translation, which counts for itself.
    Udp,
    /// An echo request, to the ICMP translation, which counts for itself.
    Icmp,
    Unhandled,
    Malformed(Malformed),
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::derive::derive;
    use crate::config::host::{HostAddr, HostLink, HostNet, HostRoute, NextHop};
    use crate::config::resolv::ResolvConf;
    use crate::config::{Mode, NetOptions};
    use crate::flow::NoSockets;
    use crate::wire::build::{self, Route};
    use crate::wire::parse::{self, ethertype, ip_proto};
    use crate::wire::tcp::{self as wtcp, TcpError};
    use crate::wire::{self, checksum, icmp_echo, MacAddr};

    const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    fn engine() -> Engine {
        let route = |gw: &str, dst: IpAddr| HostRoute {
            dst,
            dst_len: 0,
            nexthops: vec![NextHop {
                gateway: Some(gw.parse().unwrap()),
                oif: Some(2),
            }],
            priority: 0,
            protocol: 3,
            scope: 0,
            kind: 1,
            pref_src: None,
            mtu: None,
        };
        let addr = |a: &str, len| HostAddr {
            ifindex: 2,
            addr: a.parse().unwrap(),
            prefix_len: len,
            scope: 0,
            flags: 0,
        };
        let host = HostNet {
            links: vec![HostLink {
                index: 2,
                name: "eth0".into(),
                mac: None,
                mtu: 1500,
                up: true,
                loopback: false,
            }],
            addrs: vec![addr("192.0.2.2", 24), addr("2001:db8::2", 64)],
            routes: vec![
                route("192.0.2.1", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                route("fe80::1", IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ],
        };
        let config = derive(&NetOptions::new(Mode::Pasta), &host, &ResolvConf::default())
            .unwrap()
            .config;
        Engine::new(config, 1, Instant::ZERO)
    }

    fn udp_from_guest(src: &str, dst: &str) -> Vec<u8> {
        udp_to(src, dst, 9)
    }

    /// Hands `frame` to the engine at time zero, with no host sockets.
    fn frame_in(e: &mut Engine, out: &mut FrameQueue, frame: &[u8]) {
        e.handle_frame(Instant::ZERO, frame, None, &mut NoSockets, out);
    }

    #[test]
    fn learns_the_guests_mac_and_addresses_from_its_frames() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        frame_in(
            &mut e,
            &mut out,
            &udp_from_guest("192.0.2.2", "203.0.113.1"),
        );
        frame_in(&mut e, &mut out, &udp_from_guest("fe80::9", "fe80::1"));
        frame_in(
            &mut e,
            &mut out,
            &udp_from_guest("2001:db8::9", "2001:db8::1"),
        );
        // Unspecified sources (DHCP DISCOVER, DAD) don't overwrite what we know.
        frame_in(
            &mut e,
            &mut out,
            &udp_from_guest("0.0.0.0", "255.255.255.255"),
        );
        let g = e.guest();
        assert_eq!(g.mac, Some(GUEST_MAC));
        assert_eq!(g.addr4, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(g.addr6_ll, Some("fe80::9".parse().unwrap()));
        assert_eq!(g.addr6, Some("2001:db8::9".parse().unwrap()));
        assert_eq!(e.counters().frames, 4);
    }

    fn udp_to(src: &str, dst: &str, dst_port: u16) -> Vec<u8> {
        let mut q = FrameQueue::new();
        let route = Route {
            src_mac: GUEST_MAC,
            dst_mac: MacAddr::FALLBACK,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        };
        build::udp_frame(&mut q, route, 40000, dst_port, b"x");
        q.get(0).unwrap().to_vec()
    }

    #[test]
    fn dhcp_and_dhcpv6_go_to_the_services_not_to_udp_flows() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        frame_in(&mut e, &mut out, &udp_to("192.0.2.2", "192.0.2.1", 67));
        frame_in(&mut e, &mut out, &udp_to("fe80::9", "ff02::1:2", 547));
        assert_eq!(e.counters().udp, UdpCounters::default());
        // Any other port is a flow (which NoSockets can't open).
        frame_in(&mut e, &mut out, &udp_to("192.0.2.2", "192.0.2.1", 68));
        assert_eq!(e.counters().udp.open_failed, 1);
    }

    #[test]
    fn malformed_frames_are_counted_with_their_reason() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        e.handle_frame(Instant::ZERO, &[0u8; 5], None, &mut NoSockets, &mut out);
        let mut truncated = udp_from_guest("192.0.2.2", "192.0.2.1");
        truncated.truncate(30);
        frame_in(&mut e, &mut out, &truncated);
        assert!(out.is_empty());
        assert_eq!(e.counters().malformed, 2);
        assert!(matches!(
            e.counters().last_malformed,
            Some(Malformed::Ipv4(_))
        ));
    }

    fn route(src: &str, dst: &str) -> Route {
        Route {
            src_mac: GUEST_MAC,
            dst_mac: MacAddr::FALLBACK,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    fn tcp_syn(src: &str, dst: &str) -> Vec<u8> {
        let mut q = FrameQueue::new();
        let syn = wtcp::Header {
            src_port: 40000,
            dst_port: 80,
            flags: wtcp::flags::SYN,
            window: 65535,
            ..Default::default()
        };
        wtcp::frame(&mut q, &route(src, dst), &syn, b"");
        q.get(0).unwrap().to_vec()
    }

    fn echo_request(src: &str, dst: &str) -> Vec<u8> {
        let mut q = FrameQueue::new();
        let route = route(src, dst);
        let v6 = route.src.is_ipv6();
        let message = [icmp_echo::request_type(v6), 0, 0, 0, 0, 7, 0, 1];
        if v6 {
            build::icmpv6_frame(&mut q, route, 64, &message);
        } else {
            build::icmp4_frame(&mut q, route, 64, &message);
        }
        q.get(0).unwrap().to_vec()
    }

    /// `frame` (one built above) made the first of several fragments, in either family.
    fn fragment(frame: &[u8]) -> Vec<u8> {
        const IP: usize = parse::ETH_HEADER_LEN;
        let mut f = frame.to_vec();
        if u16::from_be_bytes([f[12], f[13]]) == ethertype::IPV4 {
            f[IP + 6] |= 0x20; // more fragments
            f[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
            let sum = checksum::of(&f[IP..IP + parse::IPV4_HEADER_LEN]);
            f[IP + 10..IP + 12].copy_from_slice(&sum.to_be_bytes());
        } else {
            let payload_len = u16::from_be_bytes([f[IP + 4], f[IP + 5]]) + 8;
            f[IP + 4..IP + 6].copy_from_slice(&payload_len.to_be_bytes());
            let next = std::mem::replace(&mut f[IP + 6], ip_proto::FRAGMENT);
            let at = IP + parse::IPV6_HEADER_LEN;
            // Offset 0, more fragments; identification 1.
            f.splice(at..at, [next, 0, 0, 1, 0, 0, 0, 1]);
        }
        f
    }

    #[test]
    fn tcp_fragments_are_malformed_in_both_families() {
        for (src, dst) in [("192.0.2.2", "203.0.113.1"), ("2001:db8::9", "2001:db8::1")] {
            let mut e = engine();
            let mut out = FrameQueue::new();
            let syn = fragment(&tcp_syn(src, dst));
            frame_in(&mut e, &mut out, &syn);
            assert_eq!(e.counters().malformed, 1, "{src}");
            assert_eq!(
                e.counters().last_malformed,
                Some(Malformed::Tcp(TcpError::Fragmented))
            );
            assert_eq!(e.counters().tcp, TcpCounters::default());
            // Whole, the same segment reaches the TCP translation.
            frame_in(&mut e, &mut out, &tcp_syn(src, dst));
            assert_eq!(e.counters().malformed, 1, "{src}");
            assert_ne!(e.counters().tcp, TcpCounters::default(), "{src}");
        }
    }

    #[test]
    fn udp_and_echo_fragments_are_ignored_in_both_families_even_for_the_services() {
        let cases = [
            ("192.0.2.2", "192.0.2.1", 9),
            ("192.0.2.2", "192.0.2.1", wire::dhcp::SERVER_PORT),
            ("fe80::9", "fe80::1", 9),
            ("fe80::9", "ff02::1:2", wire::dhcpv6::SERVER_PORT),
        ];
        for (src, dst, port) in cases {
            let mut e = engine();
            let mut out = FrameQueue::new();
            let datagram = fragment(&udp_to(src, dst, port));
            frame_in(&mut e, &mut out, &datagram);
            let echo = fragment(&echo_request(src, dst));
            frame_in(&mut e, &mut out, &echo);
            let c = e.counters();
            assert_eq!((c.ignored, c.malformed), (2, 0), "{src} port {port}");
            assert_eq!((c.dhcp_answered, c.dhcpv6_answered), (0, 0));
            assert_eq!(c.udp, UdpCounters::default());
            assert_eq!(c.icmp, IcmpCounters::default());
            assert!(out.is_empty());
        }
    }

    /// NDP messages in fragments are dropped (RFC 6980 section 5), whole ones answered.
    #[test]
    fn ndp_in_fragments_is_dropped() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        let mut q = FrameQueue::new();
        let solicitation = [133, 0, 0, 0, 0, 0, 0, 0];
        build::icmpv6_frame(&mut q, route("fe80::9", "ff02::2"), 255, &solicitation);
        let frame = fragment(q.get(0).unwrap());
        frame_in(&mut e, &mut out, &frame);
        assert_eq!(e.counters().ndp_answered, 0);
        assert!(out.is_empty());
        e.handle_frame(
            Instant::ZERO,
            q.get(0).unwrap(),
            None,
            &mut NoSockets,
            &mut out,
        );
        assert_eq!(e.counters().ndp_answered, 1);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn other_families_ethertypes_and_protocols_are_ignored() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        let mut frame = udp_to("192.0.2.2", "192.0.2.1", 9);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        frame_in(&mut e, &mut out, &frame);
        // ICMP's number over IPv6 is not ICMPv6.
        let mut frame = echo_request("2001:db8::9", "2001:db8::1");
        frame[parse::ETH_HEADER_LEN + 6] = ip_proto::ICMP;
        frame_in(&mut e, &mut out, &frame);
        let c = e.counters();
        assert_eq!((c.ignored, c.malformed), (2, 0));
        assert_eq!(c.icmp, IcmpCounters::default());
    }

    #[test]
    fn unsolicited_router_advertisements_follow_the_timer() {
        let mut e = engine();
        let mut out = FrameQueue::new();
        let first = e.poll_timeout().expect("RAs are on");
        assert!(
            first >= Instant::ZERO + RA_INTERVAL_MIN && first <= Instant::ZERO + RA_INTERVAL_MAX
        );
        e.handle_timeout(first, &mut NoSockets, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(e.counters().ra_unsolicited, 1);
        assert!(e.poll_timeout().unwrap() >= first + RA_INTERVAL_MIN);
        // Early wake-ups send nothing.
        out.clear();
        e.handle_timeout(first, &mut NoSockets, &mut out);
        assert!(out.is_empty());
    }
}
