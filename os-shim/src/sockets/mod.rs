//! Host sockets for the core: [`Sockets`] implements [`HostSockets`] with real non-blocking
//! TCP sockets, registered on the reactor's epoll instance, and owns the listening sockets of
//! port forwarding.
//!
//! The core names sockets by [`SockRef`], an index into a slab; epoll tokens carry the index
//! and a generation, so that an event for a socket closed earlier in the same wake-up is not
//! taken for its successor. What epoll says is translated into [`SockEvent`]s (and accepted
//! connections) queued as [`Report`]s, which the loop hands to the engine one by one. The
//! synchronous calls the engine makes answer for themselves (a peek that meets the end of the
//! stream says so in its [`Peeked`], and a connect that completes at once is reported by epoll
//! like any other); the one report they queue is for input that waited while the core's
//! readable interest was off, as it turns it back on.
//!
//! Readiness is level-triggered as the core sees it, over what no peek has seen: bytes it
//! peeked stay in the socket until the guest acknowledges them and don't make it readable,
//! new ones do. It turns readable interest off itself while the guest's window is full, and
//! expects what waits to be reported when it turns it back on. epoll can't say "bytes past the
//! peek offset", and toggling interest would be `epoll_ctl` calls, so stream sockets are
//! watched edge-triggered for everything from the start (the connect's completion included:
//! no `epoll_ctl` a connection but the registration), whatever the core wants, and the shim
//! keeps what level-triggering would say: an edge marks input unread until a peek comes back
//! short (it saw everything there), and is reported at once if the core wants it, else when it
//! does. Output edges the core doesn't want are dropped; when it starts waiting for room, the
//! socket is polled again (one `epoll_ctl`), since its last edge may be long gone.
//! After each wake-up ([`Sockets::after_batch`]) a socket whose input the core wants and left
//! unread is reported readable again, and one whose room it still waits for after hearing of
//! some is polled again ([`Sockets::has_reports`] tells the loop not to wait for those).
//! Datagram sockets are level-triggered until one hangs up or fails: `EPOLLHUP` and
//! `EPOLLERR` can't be masked and would stay set, so from then on it is edge-triggered too,
//! reporting only what changes.
//! [`SockEvent::PeerClosed`] and [`SockEvent::Error`] are reported once each (the end of a
//! stream not at all once a peek has told it).
//! Listeners are level-triggered too, accepting a bounded batch per wake-up. A listener whose
//! `accept4` fails for want of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) would stay readable and spin the loop: it is taken off epoll until a socket of
//! ours is closed or [`ACCEPT_PAUSE`] has passed ([`Sockets::poll_timeout`],
//! [`Sockets::handle_timeout`]), its connections waiting in the backlog meanwhile (the
//! splicer's listeners in the namespace likewise; see `crate::listeners`). Sockets that can't be made for want of
//! descriptors fail the core's call (a connection the guest opens is reset). Both are counted,
//! [`Sockets::out_of_descriptors`], for the caller's rate-limited log.
//!
//! Data from the host is peeked at an offset past the first unacknowledged byte: with
//! `SO_PEEK_OFF` the kernel keeps that offset, moving it forward with each peek and back with
//! each discard; we keep a shadow copy and set it only when the core asks for another offset:
//! the first peek that starts past the first unacknowledged byte, and a retransmission. A
//! socket whose peeks all start there (each answer acknowledged before the next) never needs
//! it, and its peeks read from the first unread byte as an unset offset does. Kernels without
//! `SO_PEEK_OFF` for TCP (found at the first setting) get the bytes before the offset peeked
//! into a scratch buffer instead.
//!
//! [`HostSockets`]: sans_io::flow::HostSockets
//! [`Peeked`]: sans_io::flow::Peeked
//! [`ACCEPT_PAUSE`]: crate::listeners::ACCEPT_PAUSE

mod host_sockets;
mod listen;
mod table;
#[cfg(test)]
mod tests;
mod udp_gro;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use sans_io::flow::{Proto, SockEvent, SockRef};
use sans_io::time::Instant;

use crate::bypass::Bypass;
use crate::listeners::Listeners;
use crate::reactor::Reactor;
use crate::slots::Slots;
use crate::socket_sys::is_out_of_descriptors;
use crate::tokens::{
    is_host_socket, socket_token, sockets_token, SocketsToken, INDEX_BITS, TOKEN_LISTENER_BASE,
};

use table::{PeekOffCap, Slot};
pub use udp_gro::GroCounts;
use udp_gro::Spill;

/// Something for the engine, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// For `Batch::socket`.
    Event(SockRef, SockEvent),
    /// A connection accepted on a forwarding listener, for `Batch::accept`: the new
    /// socket, its peer, and the local address and port it reached.
    Accepted {
        sock: SockRef,
        peer: SocketAddr,
        local: SocketAddr,
    },
}

/// Which families listeners without an address bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    pub ipv4: bool,
    pub ipv6: bool,
    /// `--freebind`: allow binding addresses not (yet) configured on the host.
    pub freebind: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            ipv4: true,
            ipv6: true,
            freebind: false,
        }
    }
}

/// A listener that could not be set up: a warning, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot listen on {} port {port} ({addr}{}): {}", if *proto == Proto::Udp { "UDP" } else { "TCP" }, iface.as_ref().map(|i| format!("%{i}")).unwrap_or_default(), std::io::Error::from_raw_os_error(*errno))]
pub struct ListenError {
    pub proto: Proto,
    pub addr: IpAddr,
    pub iface: Option<String>,
    pub port: u16,
    pub errno: i32,
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SocketStats {
    pub connects: u64,
    pub accepted: u64,
    pub resets: u64,
    /// Peeks that had to set `SO_PEEK_OFF` (retransmissions).
    pub peek_seeks: u64,
    /// Events for sockets closed before they were handled.
    pub stale_events: u64,
    /// Times a listener was put aside because accepting ran out of descriptors.
    pub accept_paused: u64,
    /// Sockets the core asked for that couldn't be made for want of descriptors.
    pub fd_exhausted: u64,
    /// Times a socket's advertised window was bound to the guest's (TCP_WINDOW_CLAMP).
    pub window_clamps: u64,
    /// Runs of a UDP flow's datagrams sent as one segmented send (UDP_SEGMENT).
    pub segmented_sends: u64,
    /// `epoll_ctl` calls changing or renewing a socket's registration.
    pub epoll_updates: u64,
    /// Runs of a UDP flow's datagrams received whole (UDP_GRO).
    pub received_runs: GroCounts,
}

/// Real host sockets, see the module documentation.
pub struct Sockets {
    epoll: Option<Epoll>,
    slots: Slots<Slot>,
    open: usize,
    /// TCP forwarding listeners (the engine decides where their connections go).
    listeners: Listeners<()>,
    /// UDP forwarding listeners: slots of ours (they report readiness like any datagram
    /// socket), with the address each is bound to and its interface. Looked up by socket for
    /// every answer sent through one: a map, as `-u` ranges make thousands.
    udp_listeners: BTreeMap<SockRef, (SocketAddr, Option<String>)>,
    reports: VecDeque<(u32, Report)>,
    /// Edge-triggered sockets to look at again after the wake-up (see `after_batch`).
    recheck: Vec<u32>,
    peek_off: PeekOffCap,
    /// Where peeks without `SO_PEEK_OFF` put the bytes before the offset.
    scratch: Vec<u8>,
    /// Where UDP runs spill past the engine's slots.
    spill: Spill,
    stats: SocketStats,
    /// Ping sockets were refused (ping_group_range) and we said so.
    warned_ping: bool,
    /// pasta's loopback bypass, if the driver set one up: it relays without the engine, and
    /// takes what the core hands over.
    bypass: Option<Bypass>,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

impl Sockets {
    /// No sockets yet, and no event loop: see [`Sockets::attach`].
    pub fn new() -> Sockets {
        Sockets {
            epoll: None,
            slots: Slots::new(1 << INDEX_BITS),
            open: 0,
            listeners: Listeners::new(TOKEN_LISTENER_BASE),
            udp_listeners: BTreeMap::new(),
            reports: VecDeque::new(),
            recheck: Vec::new(),
            peek_off: PeekOffCap::Unknown,
            scratch: Vec::new(),
            spill: Spill::default(),
            stats: SocketStats::default(),
            warned_ping: false,
            bypass: None,
        }
    }

    /// Sets up pasta's loopback bypass (before [`Sockets::attach`]).
    pub fn set_bypass(&mut self, bypass: Bypass) {
        self.bypass = Some(bypass);
    }

    /// pasta's loopback bypass, if set up.
    pub fn bypass(&self) -> Option<&Bypass> {
        self.bypass.as_ref()
    }

    pub fn bypass_mut(&mut self) -> Option<&mut Bypass> {
        self.bypass.as_mut()
    }

    /// Registers our sockets (listeners made so far, and every socket from now on) on the
    /// reactor's epoll instance, with tokens from [`TOKEN_LISTENER_BASE`] up.
    pub fn attach(&mut self, reactor: &Reactor) -> io::Result<()> {
        if let Some(bypass) = self.bypass.as_mut() {
            bypass.attach(reactor)?;
        }
        let epoll = reactor.epoll_handle()?;
        self.listeners.register(&epoll)?;
        for (i, slot) in self.slots.iter() {
            let gen = self.slots.gen(i).unwrap_or_default();
            let token = socket_token(i as u32, gen);
            epoll.add(&slot.fd, EpollEvent::new(slot.registered, token))?;
        }
        self.epoll = Some(epoll);
        Ok(())
    }

    /// Whether `token` belongs to us (or to the relays).
    pub fn owns_token(token: u64) -> bool {
        is_host_socket(token)
    }

    pub fn stats(&self) -> &SocketStats {
        &self.stats
    }

    /// How often descriptors ran out so far: listeners put aside (ours and the splicer's),
    /// sockets that couldn't be made. Grows while the process is at its descriptor limit.
    pub fn out_of_descriptors(&self) -> u64 {
        let relays = self.bypass.as_ref().map_or(0, Bypass::fd_exhausted);
        self.stats.accept_paused + self.stats.fd_exhausted + relays
    }

    /// Connected (or connecting) sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.open
    }

    /// Addresses the TCP listeners are bound to.
    pub fn listening(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listeners.iter().map(|l| l.addr)
    }

    /// The UDP forwarding listeners, for `Engine::add_udp_listener`: socket and the address
    /// it is bound to.
    pub fn udp_listeners(&self) -> impl Iterator<Item = (SockRef, SocketAddr)> + '_ {
        self.udp_listeners.iter().map(|(s, (a, _))| (*s, *a))
    }

    /// When a listener put aside (ours or the splicer's) is due to be watched again, or
    /// relayed datagram flows may have gone idle, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let relays = self.bypass.as_ref().and_then(Bypass::poll_timeout);
        [relays, self.listeners.next_resume()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Watches again the listeners whose pause is over at `now`; closes idle relay flows.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.resume_listeners(Some(now));
        if let Some(bypass) = self.bypass.as_mut() {
            bypass.handle_timeout(now);
        }
    }

    /// Passes `made` on, counting a failure for want of descriptors.
    fn counted<T>(&mut self, made: io::Result<T>) -> io::Result<T> {
        if made.as_ref().is_err_and(is_out_of_descriptors) {
            self.stats.fd_exhausted += 1;
        }
        made
    }

    /// Translates an epoll event for one of our tokens into reports.
    pub fn ready(&mut self, token: u64, flags: EpollFlags) {
        if Bypass::owns_token(token) {
            if let Some(bypass) = self.bypass.as_mut() {
                bypass.ready(token, flags);
            }
        } else {
            match sockets_token(token) {
                Some(SocketsToken::Socket { index, gen }) => self.socket_ready(index, gen, flags),
                Some(SocketsToken::Listener(i)) => self.accept_ready(i),
                None => {}
            }
        }
    }

    /// Whether reports wait for the engine: queued after its last batch (see
    /// [`Sockets::after_batch`]), they are the next one's, which should not wait for events.
    pub fn has_reports(&self) -> bool {
        !self.reports.is_empty()
    }

    /// The next report for the engine, if any. Reports about sockets closed since they were
    /// queued are dropped.
    pub fn next_report(&mut self) -> Option<Report> {
        while let Some((gen, report)) = self.reports.pop_front() {
            let s = match report {
                Report::Event(s, _) => s,
                Report::Accepted { sock, .. } => sock,
            };
            match self.slots.get(s.0 as usize, gen) {
                Some(_) => return Some(report),
                None => self.stats.stale_events += 1,
            }
        }
        None
    }

    fn push(&mut self, index: u32, ev: SockEvent) {
        let gen = self.slots.gen(index as usize).unwrap_or_default();
        self.reports
            .push_back((gen, Report::Event(SockRef(index), ev)));
    }
}
