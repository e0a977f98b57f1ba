//! Host sockets for the core: [`Sockets`] implements [`HostSockets`] with real non-blocking
//! TCP sockets, registered on the reactor's epoll instance, and owns the listening sockets of
//! port forwarding.
//!
//! The core names sockets by [`SockRef`], an index into a slab; epoll tokens carry the index
//! and a generation, so that an event for a socket closed earlier in the same wake-up is not
//! taken for its successor. What epoll says is translated into [`SockEvent`]s (and accepted
//! connections) queued as [`Report`]s, which the loop hands to the engine one by one; the
//! synchronous calls the engine makes may queue more (a peek that meets the end of the stream
//! queues [`SockEvent::PeerClosed`]).
//!
//! Readiness is level-triggered, as the core expects: it turns readable interest off itself
//! while everything the socket holds is in flight to the guest, or the guest's window is full.
//! The exception is a socket that hung up or failed: `EPOLLHUP` and `EPOLLERR` can't be masked
//! and would stay set, so once one was seen the socket becomes edge-triggered, reporting only
//! what changes. [`SockEvent::PeerClosed`] and [`SockEvent::Error`] are reported once each.
//! Listeners are level-triggered too, accepting a bounded batch per wake-up. A listener whose
//! `accept4` fails for want of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) would stay readable and spin the loop: it is taken off epoll until a socket of
//! ours is closed or [`ACCEPT_PAUSE`] has passed (see `crate::listeners`) ([`Sockets::poll_timeout`],
//! [`Sockets::handle_timeout`]), its connections waiting in the backlog meanwhile (the
//! splicer's listeners in the namespace likewise). Sockets that can't be made for want of
//! descriptors fail the core's call (a connection the guest opens is reset). Both are counted,
//! [`Sockets::out_of_descriptors`], for the caller's rate-limited log.
//!
//! Data from the host is peeked at an offset past the first unacknowledged byte: with
//! `SO_PEEK_OFF` the kernel keeps that offset, moving it forward with each peek and back with
//! each discard; we keep a shadow copy and only set it when the core asks for another offset
//! (a retransmission). Kernels without `SO_PEEK_OFF` for TCP get the bytes before the offset
//! peeked into a scratch buffer instead.

use std::collections::VecDeque;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use sans_io::flow::{Bind, HostSockets, ListenSpec, Proto, SockEvent, SockRef, TcpSockInfo};
use sans_io::fwd::Forward;
use sans_io::time::Instant;

use crate::dgram_relay::DgramRelay;
use crate::listeners::{Listener, Listeners, ACCEPT_PAUSE};
use crate::reactor::{monotonic_now, Reactor};
use crate::socket_sys::tcp_info::{at_eof, send_space, snd_wnd};
use crate::socket_sys::{
    bind_addr, bind_outbound, bind_to_device, connect_to, dgram_socket, ioctl_int,
    is_out_of_descriptors, listen_socket, local_addr, prepare_stream, readable_bytes,
    reset_on_close, retry, setsockopt_int, so_error, sockaddr_to_std, stream_socket,
    udp_bound_socket, unmap,
};
use crate::splice::Splicer;
use crate::tokens::{
    is_host_socket, socket_token, sockets_token, SocketsToken, GEN_MASK, INDEX_MASK,
    TOKEN_LISTENER_BASE,
};

/// Connections accepted per listener wake-up; the listener is level-triggered, so more wait
/// for the next round instead of starving everything else.
const ACCEPT_BATCH: usize = 64;
/// Datagrams received per `recvmmsg` call at most.
const RECV_MANY_MAX: usize = 64;

/// Something for the engine, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// For `Engine::handle_socket`.
    Event(SockRef, SockEvent),
    /// A connection accepted on a forwarding listener, for `Engine::handle_accept`: the new
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

/// What the kernel lets us do with `SO_PEEK_OFF` on TCP sockets (Linux 6.9 onwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeekOffCap {
    Unknown,
    Yes,
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A non-blocking connect is under way.
    Connecting,
    Connected,
}

#[derive(Debug)]
struct Slot {
    /// `None`: free.
    fd: Option<OwnedFd>,
    gen: u32,
    state: State,
    /// The kernel's peek offset, as we last set or moved it; `None` without `SO_PEEK_OFF`.
    peek_off: Option<usize>,
    /// What the core wants reported.
    readable: bool,
    writable: bool,
    /// The epoll events registered.
    registered: EpollFlags,
    /// The end of the stream was reported (once).
    peer_closed: bool,
    /// An error was reported (once).
    errored: bool,
    /// `EPOLLHUP` or `EPOLLERR` was seen: registered edge-triggered from then on.
    hung_up: bool,
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
}

/// Real host sockets, see the module documentation.
pub struct Sockets {
    epoll: Option<Epoll>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    /// TCP forwarding listeners (the engine decides where their connections go).
    listeners: Listeners<()>,
    /// UDP forwarding listeners: slots of ours (they report readiness like any datagram
    /// socket), with the address each is bound to and its interface.
    udp_listeners: Vec<(SockRef, SocketAddr, Option<String>)>,
    reports: VecDeque<(u32, Report)>,
    peek_off: PeekOffCap,
    /// Where peeks without `SO_PEEK_OFF` put the bytes before the offset.
    scratch: Vec<u8>,
    stats: SocketStats,
    /// Ping sockets were refused (ping_group_range) and we said so.
    warned_ping: bool,
    /// The loopback bypass for `-T`: its listeners live in the namespace, and it relays
    /// without the engine.
    pub splicer: Splicer,
    /// The same for UDP (`-U`).
    pub dgram_relay: DgramRelay,
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
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            listeners: Listeners::new(TOKEN_LISTENER_BASE),
            udp_listeners: Vec::new(),
            reports: VecDeque::new(),
            peek_off: PeekOffCap::Unknown,
            scratch: Vec::new(),
            stats: SocketStats::default(),
            warned_ping: false,
            splicer: Splicer::default(),
            dgram_relay: DgramRelay::default(),
        }
    }

    /// Registers our sockets (listeners made so far, and every socket from now on) on the
    /// reactor's epoll instance, with tokens from [`TOKEN_LISTENER_BASE`] up.
    pub fn attach(&mut self, reactor: &Reactor) -> io::Result<()> {
        self.splicer.attach(reactor.epoll_handle()?)?;
        self.dgram_relay.attach(reactor.epoll_handle()?)?;
        let epoll = reactor.epoll_handle()?;
        self.listeners.register(&epoll)?;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(fd) = &slot.fd {
                epoll.add(
                    fd,
                    EpollEvent::new(slot.registered, socket_token(i as u32, slot.gen)),
                )?;
            }
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
        self.stats.accept_paused + self.stats.fd_exhausted + self.splicer.stats().fd_exhausted
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
        self.udp_listeners.iter().map(|(s, a, _)| (*s, *a))
    }

    /// Listens for one forwarded port. Without an address, on any address of each family
    /// `opts` allows, one socket per family (IPv6 ones with `IPV6_V6ONLY`, so that IPv4
    /// connections never show up as mapped addresses of a family the guest may not have).
    /// For UDP, the sockets are bound (sharing the address with the flows' reply sockets, see
    /// `HostSockets::udp_reply_open`) and listed by [`Sockets::udp_listeners`].
    /// Returns how many sockets now listen, and what failed.
    pub fn listen(&mut self, spec: &ListenSpec, opts: ListenOptions) -> (usize, Vec<ListenError>) {
        let mut bound = 0;
        let mut errors = Vec::new();
        let addrs: Vec<IpAddr> = match spec.addr {
            Some(a) => vec![a],
            None => {
                let mut v = Vec::new();
                if opts.ipv4 {
                    v.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if opts.ipv6 {
                    v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
                v
            }
        };
        for addr in addrs {
            let sa = SocketAddr::new(addr, spec.port);
            let made = match spec.proto {
                Proto::Tcp => listen_socket(sa, spec.iface.as_deref(), opts.freebind),
                Proto::Udp => udp_bound_socket(sa, spec.iface.as_deref(), opts.freebind),
            };
            match made {
                Ok(fd) => {
                    let actual = local_addr(fd.as_raw_fd()).unwrap_or(sa);
                    let added = match spec.proto {
                        Proto::Tcp => self
                            .listeners
                            .add(Listener::new(fd, actual, ()), self.epoll.as_ref()),
                        Proto::Udp => self.insert_dgram(fd).map(|index| {
                            let iface = spec.iface.clone();
                            self.udp_listeners.push((SockRef(index), actual, iface));
                        }),
                    };
                    if let Err(e) = added {
                        errors.push(ListenError {
                            proto: spec.proto,
                            addr,
                            iface: spec.iface.clone(),
                            port: spec.port,
                            errno: e.raw_os_error().unwrap_or(libc::EIO),
                        });
                    } else {
                        bound += 1;
                    }
                }
                Err(e) => errors.push(ListenError {
                    proto: spec.proto,
                    addr,
                    iface: spec.iface.clone(),
                    port: spec.port,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                }),
            }
        }
        (bound, errors)
    }

    /// [`Sockets::listen`] for a forwarding entry (`-t`, `-u`).
    pub fn listen_forward(
        &mut self,
        proto: Proto,
        f: &Forward,
        opts: ListenOptions,
    ) -> (usize, Vec<ListenError>) {
        let spec = ListenSpec {
            proto,
            addr: f.bind,
            iface: f.iface.clone(),
            port: f.port,
        };
        self.listen(&spec, opts)
    }

    /// Stops listening on `port` for `proto` (every address): `auto` forwarding found nothing
    /// bound there any more. Returns the UDP listeners closed, which the engine must forget
    /// (`Engine::remove_udp_listener`); flows already open keep their sockets.
    pub fn unlisten(&mut self, proto: Proto, port: u16) -> Vec<SockRef> {
        match proto {
            Proto::Tcp => {
                self.listeners.remove_port(port, self.epoll.as_ref());
                Vec::new()
            }
            Proto::Udp => {
                let mut closed = Vec::new();
                self.udp_listeners.retain(|(s, addr, _)| {
                    let keep = addr.port() != port;
                    if !keep {
                        closed.push(*s);
                    }
                    keep
                });
                for &s in &closed {
                    self.close(s, false);
                }
                closed
            }
        }
    }

    /// When a listener put aside (ours or the splicer's) is due to be watched again, or
    /// relayed datagram flows may have gone idle, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let others = [self.dgram_relay.poll_timeout(), self.splicer.poll_timeout()];
        let ours = self.listeners.next_resume();
        others.into_iter().chain([ours]).flatten().min()
    }

    /// Watches again the listeners whose pause is over at `now`; closes idle relay flows.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.resume_listeners(Some(now));
        self.splicer.handle_timeout(now);
        self.dgram_relay.handle_timeout(now);
    }

    /// Passes `made` on, counting a failure for want of descriptors.
    fn counted<T>(&mut self, made: io::Result<T>) -> io::Result<T> {
        if made.as_ref().is_err_and(is_out_of_descriptors) {
            self.stats.fd_exhausted += 1;
        }
        made
    }

    /// Takes a listener off epoll for a while: `accept4` failed with `e` for want of
    /// descriptors or memory, and the connection waiting would wake us again at once.
    fn pause_listener(&mut self, index: usize, e: &io::Error) {
        let until = monotonic_now() + ACCEPT_PAUSE;
        if !self.listeners.pause(index, until, self.epoll.as_ref()) {
            return;
        }
        self.stats.accept_paused += 1;
        if let Some(l) = self.listeners.get(index) {
            // The caller's drop log says it, rate-limited (see `Sockets::out_of_descriptors`).
            log::debug!("cannot accept connections on {}: {e}", l.addr);
        }
    }

    /// Watches the listeners put aside again: those due at `now`, or all with `None`.
    fn resume_listeners(&mut self, now: Option<Instant>) {
        self.listeners.resume(now, self.epoll.as_ref());
    }

    /// Translates an epoll event for one of our tokens into reports.
    pub fn ready(&mut self, token: u64, flags: EpollFlags) {
        if Splicer::owns_token(token) {
            self.splicer.ready(token, flags);
        } else if DgramRelay::owns_token(token) {
            self.dgram_relay.ready(token, flags);
        } else {
            match sockets_token(token) {
                Some(SocketsToken::Socket { index, gen }) => self.socket_ready(index, gen, flags),
                Some(SocketsToken::Listener(i)) => self.accept_ready(i),
                None => {}
            }
        }
    }

    /// The next report for the engine, if any. Reports about sockets closed since they were
    /// queued are dropped.
    pub fn next_report(&mut self) -> Option<Report> {
        while let Some((gen, report)) = self.reports.pop_front() {
            let s = match report {
                Report::Event(s, _) => s,
                Report::Accepted { sock, .. } => sock,
            };
            match self.slots.get(s.0 as usize) {
                Some(slot) if slot.fd.is_some() && slot.gen == gen => return Some(report),
                _ => self.stats.stale_events += 1,
            }
        }
        None
    }

    fn push(&mut self, index: u32, ev: SockEvent) {
        let gen = self.slots[index as usize].gen;
        self.reports
            .push_back((gen, Report::Event(SockRef(index), ev)));
    }

    fn socket_ready(&mut self, index: u32, gen: u32, flags: EpollFlags) {
        let Some(slot) = self.slots.get(index as usize) else {
            self.stats.stale_events += 1;
            return;
        };
        let Some(fd) = slot.fd.as_ref().filter(|_| slot.gen == gen) else {
            self.stats.stale_events += 1;
            return;
        };
        let raw = fd.as_raw_fd();
        let (state, errored, hung_up) = (slot.state, slot.errored, slot.hung_up);
        let trouble = flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
        if trouble && !hung_up {
            // Those stay set: from now on, only changes.
            self.slots[index as usize].hung_up = true;
            self.update_registration(index);
        }
        if errored {
            return;
        }
        if state == State::Connecting {
            if !trouble && !flags.contains(EpollFlags::EPOLLOUT) {
                return;
            }
            match so_error(raw) {
                0 if flags.contains(EpollFlags::EPOLLOUT)
                    && !flags.contains(EpollFlags::EPOLLERR) =>
                {
                    self.slots[index as usize].state = State::Connected;
                    self.push(index, SockEvent::Connected);
                    // Now the core's interest applies (and re-checks readiness).
                    self.update_registration(index);
                }
                0 => {}
                e => {
                    self.slots[index as usize].errored = true;
                    self.push(index, SockEvent::Error(e));
                }
            }
            return;
        }
        if flags.contains(EpollFlags::EPOLLERR) {
            let e = so_error(raw);
            if e != 0 {
                self.slots[index as usize].errored = true;
                self.push(index, SockEvent::Error(e));
                return;
            }
        }
        let slot = &self.slots[index as usize];
        let (readable, writable, peer_closed) = (slot.readable, slot.writable, slot.peer_closed);
        if readable && flags.contains(EpollFlags::EPOLLIN) {
            self.push(index, SockEvent::Readable);
        }
        if readable
            && !peer_closed
            && flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP)
        {
            self.slots[index as usize].peer_closed = true;
            self.push(index, SockEvent::PeerClosed);
        }
        if writable && flags.contains(EpollFlags::EPOLLOUT) {
            self.push(index, SockEvent::Writable);
        }
    }

    fn accept_ready(&mut self, listener: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            if l.paused() {
                // An event from before the pause, in the same wake-up.
                return;
            }
            let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: accept4 writes at most `len` bytes of address into our storage.
            let fd = unsafe {
                libc::accept4(
                    l.fd.as_raw_fd(),
                    storage.as_mut_ptr().cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    // Out of descriptors or memory: the connection waits in the backlog, and
                    // the level-triggered listener would wake us again at once.
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.pause_listener(listener, &e);
                        return;
                    }
                    // EAGAIN: done.
                    _ => return,
                }
            }
            // SAFETY: accept4 returned a new descriptor we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the kernel initialised `len` bytes of the storage.
            let peer = sockaddr_to_std(unsafe { storage.assume_init_ref() }, len);
            let local = local_addr(fd.as_raw_fd());
            let (Some(peer), Ok(local)) = (peer, local) else {
                continue;
            };
            prepare_stream(fd.as_raw_fd());
            match self.insert(fd, State::Connected) {
                Ok(index) => {
                    self.stats.accepted += 1;
                    let gen = self.slots[index as usize].gen;
                    self.reports.push_back((
                        gen,
                        Report::Accepted {
                            sock: SockRef(index),
                            peer: unmap(peer),
                            local: unmap(local),
                        },
                    ));
                }
                Err(_) => continue,
            }
        }
    }

    /// Puts a socket in a free slot and registers it.
    fn insert(&mut self, fd: OwnedFd, state: State) -> io::Result<u32> {
        let peek_off = self.init_peek_off(fd.as_raw_fd());
        self.insert_with(fd, state, peek_off)
    }

    /// Puts a datagram socket (no peek offset: whether datagram sockets support one says
    /// nothing of stream sockets) in a free slot and registers it.
    fn insert_dgram(&mut self, fd: OwnedFd) -> io::Result<u32> {
        self.insert_with(fd, State::Connected, None)
    }

    fn insert_with(
        &mut self,
        fd: OwnedFd,
        state: State,
        peek_off: Option<usize>,
    ) -> io::Result<u32> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.len() as u64 > INDEX_MASK {
                    return Err(io::Error::from_raw_os_error(libc::EMFILE));
                }
                self.slots.push(Slot {
                    fd: None,
                    gen: 0,
                    state,
                    peek_off: None,
                    readable: true,
                    writable: false,
                    registered: EpollFlags::empty(),
                    peer_closed: false,
                    errored: false,
                    hung_up: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.gen = (slot.gen + 1) & GEN_MASK;
        slot.state = state;
        slot.peek_off = peek_off;
        slot.readable = true;
        slot.writable = false;
        slot.peer_closed = false;
        slot.errored = false;
        slot.hung_up = false;
        slot.registered = wanted_events(slot);
        let token = socket_token(index, slot.gen);
        if let Some(epoll) = &self.epoll {
            if let Err(e) = epoll.add(&fd, EpollEvent::new(slot.registered, token)) {
                self.free.push(index);
                return Err(e.into());
            }
        }
        slot.fd = Some(fd);
        self.open += 1;
        Ok(index)
    }

    /// Sets the kernel's peek offset to 0 when it supports that; returns the shadow offset.
    fn init_peek_off(&mut self, fd: RawFd) -> Option<usize> {
        if self.peek_off == PeekOffCap::No {
            return None;
        }
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).is_ok() {
            self.peek_off = PeekOffCap::Yes;
            Some(0)
        } else {
            self.peek_off = PeekOffCap::No;
            None
        }
    }

    /// Forgets what the kernel supports (tests: to exercise the fallback).
    #[cfg(test)]
    fn disable_peek_off(&mut self) {
        self.peek_off = PeekOffCap::No;
    }

    fn update_registration(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(fd) = &slot.fd else { return };
        let wanted = wanted_events(slot);
        if wanted == slot.registered {
            return;
        }
        slot.registered = wanted;
        if let Some(epoll) = &self.epoll {
            let mut ev = EpollEvent::new(wanted, socket_token(index, slot.gen));
            // Can only fail for a descriptor epoll doesn't know, which would be our bug.
            let _ = epoll.modify(fd, &mut ev);
        }
    }

    fn slot(&self, s: SockRef) -> io::Result<(&Slot, RawFd)> {
        match self.slots.get(s.0 as usize) {
            Some(slot) => match &slot.fd {
                Some(fd) => Ok((slot, fd.as_raw_fd())),
                None => Err(io::Error::from_raw_os_error(libc::EBADF)),
            },
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn peek_fallback(&mut self, fd: RawFd, offset: usize, buf: &mut [u8]) -> io::Result<usize> {
        if self.scratch.len() < offset {
            self.scratch.resize(offset, 0);
        }
        let mut iov = [
            libc::iovec {
                iov_base: self.scratch.as_mut_ptr().cast(),
                iov_len: offset,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: zeroed msghdr is valid; we point it at our iovecs.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs describe buffers we own, for the duration of the call.
        let n =
            retry(|| unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) });
        match n {
            Ok(n) => Ok(n.saturating_sub(offset)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Whether a zero-length answer meant the end of the stream: queue that news once.
    fn saw_eof(&mut self, s: SockRef) {
        let slot = &mut self.slots[s.0 as usize];
        if !slot.peer_closed {
            slot.peer_closed = true;
            self.push(s.0, SockEvent::PeerClosed);
        }
    }
}

fn wanted_events(slot: &Slot) -> EpollFlags {
    let mut f = if slot.hung_up {
        EpollFlags::EPOLLET
    } else {
        EpollFlags::empty()
    };
    if slot.state == State::Connecting {
        return f | EpollFlags::EPOLLOUT;
    }
    if slot.readable {
        f |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if slot.writable {
        f |= EpollFlags::EPOLLOUT;
    }
    f
}

impl HostSockets for Sockets {
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef> {
        let fd = self.counted(stream_socket(dst.ip()))?;
        let raw = fd.as_raw_fd();
        bind_outbound(raw, bind, dst)?;
        if let Some(mss) = mss {
            // Best effort: the kernel clamps it anyway.
            let _ = setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_MAXSEG, i32::from(mss));
        }
        prepare_stream(raw);
        let state = match connect_to(raw, dst) {
            Ok(()) => State::Connected,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINPROGRESS) | Some(libc::EINTR) => State::Connecting,
                _ => return Err(e),
            },
        };
        let index = self.insert(fd, state)?;
        self.stats.connects += 1;
        if state == State::Connected {
            self.push(index, SockEvent::Connected);
        }
        Ok(SockRef(index))
    }

    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let (slot, fd) = self.slot(s)?;
        if slot.state == State::Connecting {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if data.is_empty() {
            return Ok(0);
        }
        // SAFETY: sends from our slice.
        retry(|| unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        })
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<usize> {
        let (slot, fd) = self.slot(s)?;
        if slot.state == State::Connecting {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(shadow) = slot.peek_off else {
            let n = self.peek_fallback(fd, offset, buf)?;
            if n == 0 && readable_bytes(fd).is_ok_and(|q| q <= offset) && at_eof(fd) {
                self.saw_eof(s);
            }
            return Ok(n);
        };
        if shadow != offset {
            let off =
                i32::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
            self.slots[s.0 as usize].peek_off = Some(offset);
            self.stats.peek_seeks += 1;
        }
        // SAFETY: receives into our buffer.
        let n = retry(|| unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        });
        match n {
            Ok(0) => {
                self.saw_eof(s);
                Ok(0)
            }
            Ok(n) => {
                self.slots[s.0 as usize].peek_off = Some(offset + n);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        let (_, fd) = self.slot(s)?;
        let mut left = len;
        while left > 0 {
            // SAFETY: MSG_TRUNC on TCP drops the bytes without copying: no buffer is touched.
            let n = retry(|| unsafe {
                libc::recv(
                    fd,
                    std::ptr::null_mut(),
                    left,
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            });
            match n {
                Ok(0) => break,
                Ok(n) => left -= n.min(left),
                Err(e) => {
                    self.moved_back(s, len - left);
                    return Err(e);
                }
            }
        }
        self.moved_back(s, len - left);
        if left > 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn tcp_info(&mut self, s: SockRef) -> io::Result<TcpSockInfo> {
        let (_, fd) = self.slot(s)?;
        let unacked = ioctl_int(fd, libc::TIOCOUTQ)?.max(0) as u32;
        let readable = ioctl_int(fd, libc::FIONREAD)?.max(0) as u32;
        Ok(TcpSockInfo {
            send_space: send_space(fd, unacked)?,
            peer_window: snd_wnd(fd),
            unacked,
            readable,
        })
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        let (_, fd) = self.slot(s)?;
        // SAFETY: plain system call.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn close(&mut self, s: SockRef, reset: bool) {
        let Some(slot) = self.slots.get_mut(s.0 as usize) else {
            return;
        };
        let Some(fd) = slot.fd.take() else { return };
        if reset {
            reset_on_close(fd.as_raw_fd());
            self.stats.resets += 1;
        }
        if let Some(epoll) = &self.epoll {
            let _ = epoll.delete(fd.as_fd());
        }
        drop(fd);
        self.free.push(s.0);
        self.open -= 1;
        // A descriptor is free: listeners that ran out may accept again.
        self.resume_listeners(None);
        self.splicer.descriptors_freed();
    }

    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        let Some(slot) = self.slots.get_mut(s.0 as usize) else {
            return;
        };
        if slot.fd.is_none() {
            return;
        }
        slot.readable = readable;
        slot.writable = writable;
        self.update_registration(s.0);
    }

    fn udp_open(&mut self, bind: Bind<'_>, dst: SocketAddr) -> io::Result<SockRef> {
        let fd = self.counted(dgram_socket(dst.ip(), libc::IPPROTO_UDP))?;
        let raw = fd.as_raw_fd();
        bind_outbound(raw, bind, dst)?;
        connect_to(raw, dst)?;
        let index = self.insert_dgram(fd)?;
        Ok(SockRef(index))
    }

    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        // SAFETY: sends from our slice.
        retry(|| unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        })
    }

    fn ping_open(&mut self, bind: Bind<'_>, dst: IpAddr, id: u16) -> io::Result<(SockRef, u16)> {
        let proto = if dst.is_ipv4() {
            libc::IPPROTO_ICMP
        } else {
            libc::IPPROTO_ICMPV6
        };
        let fd = match self.counted(dgram_socket(dst, proto)) {
            Ok(fd) => fd,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) && !self.warned_ping
                {
                    self.warned_ping = true;
                    log::warn!(
                        "cannot open ICMP echo (\"ping\") sockets: {e}; the guest's pings will \
                         go unanswered. Allow our group in net.ipv4.ping_group_range \
                         (e.g. sysctl -w net.ipv4.ping_group_range=\"0 2147483647\")"
                    );
                }
                return Err(e);
            }
        };
        let raw = fd.as_raw_fd();
        if let Some(iface) = bind.iface {
            bind_to_device(raw, iface)?;
        }
        let local = bind
            .addr
            .filter(|a| a.is_ipv4() == dst.is_ipv4())
            .unwrap_or(match dst {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
        // The "port" of a ping socket is its echo identifier: ask for the guest's, else any.
        if bind_addr(raw, SocketAddr::new(local, id)).is_err() {
            bind_addr(raw, SocketAddr::new(local, 0))?;
        }
        connect_to(raw, SocketAddr::new(dst, 0))?;
        let got = local_addr(raw)?.port();
        let index = self.insert_dgram(fd)?;
        Ok((SockRef(index), got))
    }

    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize> {
        self.udp_send(s, msg)
    }

    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        self.udp_recv(s, buf)
    }

    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        // SAFETY: receives into our slice, at most its length.
        retry(|| unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
    }

    fn udp_recv_many(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        let count = lens
            .len()
            .min(RECV_MANY_MAX)
            .min(slots.len().checked_div(slot_len).unwrap_or(0));
        if count == 0 || offset >= slot_len {
            return Ok(0);
        }
        // SAFETY: plain old data; zero is a valid (empty) value for both.
        let mut iov: [libc::iovec; RECV_MANY_MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; RECV_MANY_MAX] = unsafe { std::mem::zeroed() };
        for i in 0..count {
            let buf = &mut slots[i * slot_len + offset..(i + 1) * slot_len];
            iov[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each message points at one iovec over a distinct part of `slots`, which
        // outlives the call.
        let n = retry(|| unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            ) as isize
        })?;
        for (len, msg) in lens.iter_mut().zip(&msgs[..n]) {
            *len = msg.msg_len as usize;
        }
        Ok(n)
    }

    fn udp_recv_from(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (_, fd) = self.slot(s)?;
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: receives into our slice, at most its length, and at most `len` bytes of
        // address into our storage.
        let n = retry(|| unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                storage.as_mut_ptr().cast(),
                &mut len,
            )
        })?;
        // SAFETY: the kernel initialised `len` bytes of the storage.
        let peer = sockaddr_to_std(unsafe { storage.assume_init_ref() }, len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
        Ok((n, unmap(peer)))
    }

    fn udp_reply_open(&mut self, listener: SockRef, peer: SocketAddr) -> io::Result<SockRef> {
        let Some((_, local, iface)) = self.udp_listeners.iter().find(|(l, _, _)| *l == listener)
        else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let (local, iface) = (*local, iface.clone());
        let fd = self.counted(udp_bound_socket(local, iface.as_deref(), false))?;
        let peer = match (local, peer) {
            (SocketAddr::V6(_), SocketAddr::V4(p)) => {
                SocketAddr::new(IpAddr::V6(p.ip().to_ipv6_mapped()), p.port())
            }
            _ => peer,
        };
        connect_to(fd.as_raw_fd(), peer)?;
        let index = self.insert_dgram(fd)?;
        Ok(SockRef(index))
    }
}

impl Sockets {
    /// The kernel lowers its peek offset by what a discard consumes; so does our shadow.
    fn moved_back(&mut self, s: SockRef, consumed: usize) {
        if let Some(off) = self.slots[s.0 as usize].peek_off.as_mut() {
            *off = off.saturating_sub(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Netlink;
    use crate::tokens::TOKEN_SOCKET_BASE;
    use std::time::{Duration, Instant};

    /// Runs `f` on a thread of its own in a new network namespace with only loopback, up: the
    /// machine's own interfaces never see a packet. Needs root (CAP_SYS_ADMIN); says so and
    /// skips otherwise, except under CI.
    fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
        // SAFETY: plain system call.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("socket tests need root under CI");
            }
            eprintln!(
                "\n*** SKIPPED: socket tests need root (a network namespace of their own) ***\n"
            );
            return;
        }
        let handle = std::thread::spawn(move || {
            // SAFETY: affects this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
            }
            let mut nl = Netlink::open().expect("netlink");
            let lo = nl.link_index("lo").expect("lo");
            nl.set_link_up(lo, true).expect("lo up");
            f();
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }

    struct Rig {
        reactor: Reactor,
        sockets: Sockets,
    }

    impl Rig {
        fn new(sockets: Sockets) -> Rig {
            let reactor = Reactor::new(&[]).unwrap();
            let mut sockets = sockets;
            sockets.attach(&reactor).unwrap();
            Rig { reactor, sockets }
        }

        /// Collects reports until `done` says so (bounded by 5 s).
        fn pump(&mut self, mut done: impl FnMut(&[Report]) -> bool) -> Vec<Report> {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut seen = Vec::new();
            let mut events = [EpollEvent::empty(); 16];
            loop {
                while let Some(r) = self.sockets.next_report() {
                    seen.push(r);
                }
                if done(&seen) {
                    return seen;
                }
                assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
                let n = self.reactor.wait(&mut events, Some(100)).unwrap();
                for ev in &events[..n] {
                    if Sockets::owns_token(ev.data()) {
                        self.sockets.ready(ev.data(), ev.events());
                    }
                }
            }
        }

        /// A listener on loopback, a connection to it: (client, server side).
        fn pair(&mut self, addr: IpAddr) -> (SockRef, SockRef) {
            let spec = ListenSpec {
                proto: Proto::Tcp,
                addr: Some(addr),
                iface: None,
                port: 0,
            };
            let before = self.sockets.listeners.slot_count();
            let (n, errors) = self.sockets.listen(&spec, ListenOptions::default());
            assert_eq!((n, errors), (1, vec![]));
            let target = self.sockets.listeners.get(before).unwrap().addr;
            let client = self
                .sockets
                .tcp_connect(target, Bind::default(), Some(1400))
                .unwrap();
            let seen = self.pump(|r| {
                r.contains(&Report::Event(client, SockEvent::Connected))
                    && r.iter().any(|r| matches!(r, Report::Accepted { .. }))
            });
            let Some(Report::Accepted { sock, peer, local }) = seen
                .iter()
                .find(|r| matches!(r, Report::Accepted { .. }))
                .copied()
            else {
                unreachable!()
            };
            assert_eq!(local, target);
            assert_eq!(peer.ip(), addr);
            (client, sock)
        }

        fn fd(&self, s: SockRef) -> RawFd {
            self.sockets.slot(s).unwrap().1
        }
    }

    fn peek(rig: &mut Rig, s: SockRef, offset: usize, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let n = rig.sockets.peek(s, offset, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn peeking_at_offsets(sockets: Sockets, addr: IpAddr) {
        let mut rig = Rig::new(sockets);
        let (client, server) = rig.pair(addr);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < data.len() {
            sent += rig.sockets.send(client, &data[sent..]).unwrap();
        }
        rig.pump(|r| r.contains(&Report::Event(server, SockEvent::Readable)));
        // Wait until everything is there, then peek around.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rig.sockets.tcp_info(server).unwrap().readable < data.len() as u32 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(peek(&mut rig, server, 0, 10), &data[0..10]);
        assert_eq!(peek(&mut rig, server, 10, 10), &data[10..20]);
        assert_eq!(peek(&mut rig, server, 20, 1000), &data[20..1020]);
        // A retransmission: back to an earlier offset.
        assert_eq!(peek(&mut rig, server, 5, 10), &data[5..15]);
        // The guest acknowledged 12 bytes: offsets move with them.
        rig.sockets.discard(server, 12).unwrap();
        assert_eq!(peek(&mut rig, server, 3, 10), &data[15..25]);
        assert_eq!(peek(&mut rig, server, 13, 10), &data[25..35]);
        rig.sockets.discard(server, 20).unwrap();
        assert_eq!(peek(&mut rig, server, 3, 4), &data[35..39]);
        // Far ahead: beyond the data there is nothing (yet).
        assert_eq!(peek(&mut rig, server, data.len(), 10), b"");
        assert_eq!(
            peek(&mut rig, server, data.len() - 40, 100),
            &data[data.len() - 8..]
        );
        rig.sockets.discard(server, data.len() - 32).unwrap();
        assert_eq!(rig.sockets.tcp_info(server).unwrap().readable, 0);
        assert!(rig.sockets.discard(server, 1).is_err());

        // The end of the stream: PeerClosed once, from the event or from a peek.
        rig.sockets.shutdown_write(client).unwrap();
        let seen = rig.pump(|r| r.contains(&Report::Event(server, SockEvent::PeerClosed)));
        assert_eq!(peek(&mut rig, server, 0, 10), b"");
        assert!(rig.sockets.next_report().is_none(), "{seen:?}");
        assert_eq!(
            seen.iter()
                .filter(|r| **r == Report::Event(server, SockEvent::PeerClosed))
                .count(),
            1
        );
        // Seeks (setting SO_PEEK_OFF) happen only for the retransmission above, when the
        // kernel supports it.
        let seeks = rig.sockets.stats().peek_seeks;
        match rig.sockets.peek_off {
            PeekOffCap::Yes => assert!((1..=3).contains(&seeks), "{seeks} seeks"),
            _ => assert_eq!(seeks, 0),
        }
        rig.sockets.close(client, false);
        rig.sockets.close(server, false);
        assert_eq!(rig.sockets.open_sockets(), 0);
    }

    #[test]
    fn connect_accept_and_peek_at_offsets() {
        in_fresh_netns(|| {
            peeking_at_offsets(Sockets::new(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            peeking_at_offsets(Sockets::new(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        });
    }

    #[test]
    fn udp_connected_socket_sends_and_receives_datagrams() {
        in_fresh_netns(|| {
            for lo in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                let server = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
                server
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut rig = Rig::new(Sockets::new());
                let s = rig
                    .sockets
                    .udp_open(Bind::default(), server.local_addr().unwrap())
                    .unwrap();
                let mut buf = [0u8; 64];
                assert_eq!(
                    rig.sockets.udp_recv(s, &mut buf).unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                );
                assert_eq!(rig.sockets.udp_send(s, b"one").unwrap(), 3);
                let (n, from) = server.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"one");
                server.send_to(b"reply", from).unwrap();
                rig.pump(|seen| {
                    seen.iter()
                        .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
                });
                let n = rig.sockets.udp_recv(s, &mut buf).unwrap();
                assert_eq!(&buf[..n], b"reply");

                // Several at once, each into its slot after the offset, truncated to it.
                for msg in [&b"a"[..], b"bb", b"this one is too long"] {
                    server.send_to(msg, from).unwrap();
                }
                rig.pump(|seen| {
                    seen.iter()
                        .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
                });
                let mut slots = [0u8; 4 * 8];
                let mut lens = [0usize; 4];
                let n = rig
                    .sockets
                    .udp_recv_many(s, &mut slots, 8, 2, &mut lens)
                    .unwrap();
                assert_eq!((n, &lens[..3]), (3, &[1, 2, 6][..]));
                assert_eq!(&slots[2..3], b"a");
                assert_eq!(&slots[10..12], b"bb");
                assert_eq!(&slots[18..24], b"this o");
                assert_eq!(
                    rig.sockets
                        .udp_recv_many(s, &mut slots, 8, 2, &mut lens)
                        .unwrap_err()
                        .kind(),
                    io::ErrorKind::WouldBlock
                );
                rig.sockets.close(s, false);
                assert_eq!(rig.sockets.open_sockets(), 0);
            }
        });
    }

    #[test]
    fn udp_listener_and_reply_socket_share_the_forwarded_port() {
        in_fresh_netns(|| {
            for lo in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                let mut rig = Rig::new(Sockets::new());
                let spec = ListenSpec {
                    proto: Proto::Udp,
                    addr: Some(lo),
                    iface: None,
                    port: 0,
                };
                let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
                assert_eq!((n, errors), (1, vec![]));
                let (l, local) = rig.sockets.udp_listeners().next().unwrap();
                assert_ne!(local.port(), 0);

                let peer = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
                peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                peer.send_to(b"first", local).unwrap();
                let is_readable = |s: SockRef| {
                    move |seen: &[Report]| {
                        seen.iter()
                            .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
                    }
                };
                rig.pump(is_readable(l));
                let mut buf = [0u8; 64];
                let (n, from) = rig.sockets.udp_recv_from(l, &mut buf).unwrap();
                assert_eq!(
                    (&buf[..n], from),
                    (&b"first"[..], peer.local_addr().unwrap())
                );

                // Answers leave from the forwarded port; the peer's next datagram comes to
                // the reply socket, not the listener.
                let r = rig.sockets.udp_reply_open(l, from).unwrap();
                rig.sockets.udp_send(r, b"answer").unwrap();
                let (n, src) = peer.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], src), (&b"answer"[..], local));
                peer.send_to(b"second", local).unwrap();
                rig.pump(is_readable(r));
                let n = rig.sockets.udp_recv(r, &mut buf).unwrap();
                assert_eq!(&buf[..n], b"second");
                assert_eq!(
                    rig.sockets.udp_recv_from(l, &mut buf).unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                );
                // Another peer still reaches the listener.
                let other = std::net::UdpSocket::bind(SocketAddr::new(lo, 0)).unwrap();
                other.send_to(b"other", local).unwrap();
                rig.pump(is_readable(l));
                let (n, from) = rig.sockets.udp_recv_from(l, &mut buf).unwrap();
                assert_eq!(
                    (&buf[..n], from),
                    (&b"other"[..], other.local_addr().unwrap())
                );
            }
        });
    }

    #[test]
    fn ping_sockets_echo_on_loopback_with_identifiers() {
        in_fresh_netns(|| {
            // Per namespace; the fresh one allows nobody.
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
            for (lo, req, rep) in [
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 8u8, 0u8),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 128, 129),
            ] {
                let mut rig = Rig::new(Sockets::new());
                let (s, id) = rig.sockets.ping_open(Bind::default(), lo, 0x4242).unwrap();
                assert_eq!(id, 0x4242);
                let msg = [req, 0, 0, 0, 0, 0, 0, 9, b'h', b'i'];
                rig.sockets.ping_send(s, &msg).unwrap();
                rig.pump(|seen| {
                    seen.iter()
                        .any(|r| matches!(r, Report::Event(x, SockEvent::Readable) if *x == s))
                });
                let mut buf = [0u8; 64];
                let n = rig.sockets.ping_recv(s, &mut buf).unwrap();
                assert_eq!(buf[0], rep);
                assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), 0x4242);
                assert_eq!(&buf[6..n], &[0, 9, b'h', b'i']);
                rig.sockets.close(s, false);
            }
        });
    }

    #[test]
    fn peeking_without_so_peek_off() {
        in_fresh_netns(|| {
            let mut sockets = Sockets::new();
            sockets.disable_peek_off();
            peeking_at_offsets(sockets, IpAddr::V4(Ipv4Addr::LOCALHOST));
        });
    }

    #[test]
    fn partial_sends_into_a_small_send_buffer() {
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
            setsockopt_int(rig.fd(client), libc::SOL_SOCKET, libc::SO_SNDBUF, 8192).unwrap();
            setsockopt_int(rig.fd(server), libc::SOL_SOCKET, libc::SO_RCVBUF, 8192).unwrap();
            let info = rig.sockets.tcp_info(client).unwrap();
            assert!(info.send_space > 0 && info.send_space <= 8192, "{info:?}");
            assert!(info.peer_window.is_some());
            let data = vec![7u8; 1 << 20];
            // What tcp_info promises, a send takes, whatever the queue holds.
            let mut sent = 0;
            for _ in 0..64 {
                let space = rig.sockets.tcp_info(client).unwrap().send_space as usize;
                if space == 0 {
                    break;
                }
                let n = space.min(3000);
                assert_eq!(rig.sockets.send(client, &data[sent..sent + n]).unwrap(), n);
                sent += n;
            }
            loop {
                match rig.sockets.send(client, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(sent > 0 && sent < data.len(), "sent {sent}");
            let info = rig.sockets.tcp_info(client).unwrap();
            assert!(info.unacked > 0, "{info:?}");
            assert!(info.send_space < 8192, "{info:?}");

            // The writer asks to hear about space; the reader drains what arrived.
            rig.sockets.set_interest(client, true, true);
            let q = readable_bytes(rig.fd(server)).unwrap();
            assert!(q > 0);
            rig.sockets.discard(server, q).unwrap();
            let mut drained = q;
            // Keep draining until the kernel says the writer has room again.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut events = [EpollEvent::empty(); 16];
            'wait: loop {
                assert!(Instant::now() < deadline, "no Writable");
                let q = readable_bytes(rig.fd(server)).unwrap();
                if q > 0 {
                    rig.sockets.discard(server, q).unwrap();
                    drained += q;
                }
                let n = rig.reactor.wait(&mut events, Some(10)).unwrap();
                for ev in &events[..n] {
                    rig.sockets.ready(ev.data(), ev.events());
                }
                while let Some(r) = rig.sockets.next_report() {
                    if r == Report::Event(client, SockEvent::Writable) {
                        break 'wait;
                    }
                }
            }
            rig.sockets.set_interest(client, true, false);
            // And so on until everything went through.
            let deadline = Instant::now() + Duration::from_secs(10);
            while drained < data.len() {
                assert!(
                    Instant::now() < deadline,
                    "drained {drained} of {}",
                    data.len()
                );
                match rig.sockets.send(client, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                let q = readable_bytes(rig.fd(server)).unwrap();
                if q > 0 {
                    rig.sockets.discard(server, q).unwrap();
                    drained += q;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert_eq!(sent, data.len());
        });
    }

    #[test]
    fn close_with_reset_is_an_error_for_the_peer() {
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
            rig.sockets.send(client, b"unread").unwrap();
            rig.sockets.close(client, true);
            let seen = rig.pump(|r| {
                r.iter()
                    .any(|r| matches!(r, Report::Event(s, SockEvent::Error(_)) if *s == server))
            });
            assert!(
                seen.contains(&Report::Event(server, SockEvent::Error(libc::ECONNRESET))),
                "{seen:?}"
            );
            rig.sockets.close(server, false);
        });
    }

    #[test]
    fn refused_connect_is_an_error() {
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            // A port nobody listens on: bind one, note it, close it.
            let probe = listen_socket("127.0.0.1:0".parse().unwrap(), None, false).unwrap();
            let target = local_addr(probe.as_raw_fd()).unwrap();
            drop(probe);
            match rig.sockets.tcp_connect(target, Bind::default(), None) {
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
                Ok(s) => {
                    let seen = rig.pump(|r| !r.is_empty());
                    assert_eq!(
                        seen,
                        [Report::Event(s, SockEvent::Error(libc::ECONNREFUSED))]
                    );
                    rig.sockets.close(s, false);
                }
            }
            assert_eq!(rig.sockets.open_sockets(), 0);
        });
    }

    #[test]
    fn listening_on_both_families_and_on_a_busy_port() {
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            let probe = listen_socket("[::]:0".parse().unwrap(), None, false).unwrap();
            let port = local_addr(probe.as_raw_fd()).unwrap().port();
            drop(probe);
            let spec = ListenSpec {
                proto: Proto::Tcp,
                addr: None,
                iface: None,
                port,
            };
            let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
            assert_eq!((n, errors), (2, vec![]));
            // Both families reach it, each on its own socket.
            for target in [
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ] {
                let c = rig
                    .sockets
                    .tcp_connect(target, Bind::default(), None)
                    .unwrap();
                let seen = rig.pump(|r| r.iter().any(|r| matches!(r, Report::Accepted { .. })));
                let local = seen
                    .iter()
                    .find_map(|r| match r {
                        Report::Accepted { local, .. } => Some(*local),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!(local, target);
                rig.sockets.close(c, true);
            }
            // Taken already: a warning naming the port, not a failure.
            let (n, errors) = rig.sockets.listen(&spec, ListenOptions::default());
            assert_eq!(n, 0);
            assert_eq!(errors.len(), 2);
            assert!(
                errors[0].to_string().contains(&format!("TCP port {port}")),
                "{}",
                errors[0]
            );
            assert_eq!(errors[0].errno, libc::EADDRINUSE);
        });
    }

    /// Set in the environment of the re-executed test binary that runs
    /// [`listener_at_the_fd_limit_child`] (the descriptor limit is the whole process's).
    const FD_LIMIT_CHILD: &str = "OS_SHIM_FD_LIMIT_CHILD";

    /// Sets the soft descriptor limit; returns the one before.
    fn set_nofile(soft: u64) -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls with a valid struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            let before = lim.rlim_cur;
            lim.rlim_cur = soft;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            before
        }
    }

    /// The lowest free descriptor number: as a limit, no descriptor can be opened.
    fn lowest_free_fd() -> u64 {
        // SAFETY: dup of stdin, closed at once.
        let fd = unsafe { libc::dup(0) };
        assert!(fd >= 0);
        // SAFETY: ours.
        unsafe { libc::close(fd) };
        fd as u64
    }

    /// Listener events seen (and handled) within `d`, and the reports they made.
    fn listener_wakeups(rig: &mut Rig, d: Duration) -> (usize, Vec<Report>) {
        let end = Instant::now() + d;
        let mut events = [EpollEvent::empty(); 16];
        let (mut wakeups, mut reports) = (0, Vec::new());
        while Instant::now() < end {
            let n = rig.reactor.wait(&mut events, Some(10)).unwrap();
            for ev in &events[..n] {
                if (TOKEN_LISTENER_BASE..TOKEN_SOCKET_BASE).contains(&ev.data()) {
                    wakeups += 1;
                }
                if Sockets::owns_token(ev.data()) {
                    rig.sockets.ready(ev.data(), ev.events());
                }
            }
            while let Some(r) = rig.sockets.next_report() {
                reports.push(r);
            }
        }
        (wakeups, reports)
    }

    fn accepted(reports: &[Report]) -> usize {
        reports
            .iter()
            .filter(|r| matches!(r, Report::Accepted { .. }))
            .count()
    }

    /// Runs only in the re-executed test binary: lowers the descriptor limit there.
    #[test]
    fn listener_at_the_fd_limit_child() {
        if std::env::var_os(FD_LIMIT_CHILD).is_none() {
            return;
        }
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            // A connection of ours, to close later; it brings a listener of its own.
            let (client, _server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let spec = ListenSpec {
                proto: Proto::Tcp,
                addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                iface: None,
                port: 0,
            };
            assert_eq!(rig.sockets.listen(&spec, ListenOptions::default()).0, 1);
            let target = rig.sockets.listeners.get(1).unwrap().addr;
            // Three connections wait in the backlog; then no descriptor is left.
            let waiting: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(target).unwrap())
                .collect();
            let normal = set_nofile(lowest_free_fd());

            // accept4 fails with EMFILE: the listener is put aside, not polled in a loop.
            let (wakeups, reports) = listener_wakeups(&mut rig, Duration::from_millis(300));
            assert!(
                wakeups <= 2,
                "{wakeups} wake-ups for a listener that can't accept"
            );
            assert_eq!(accepted(&reports), 0);
            assert_eq!(rig.sockets.stats().accept_paused, 1);
            let resume = rig.sockets.poll_timeout().expect("a time to try again");
            let left = resume.saturating_since(crate::reactor::monotonic_now());
            assert!(left > Duration::from_millis(500) && left <= Duration::from_secs(1));

            // A descriptor is freed: accepting again at once.
            set_nofile(normal);
            rig.sockets.close(client, true);
            let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(200));
            assert_eq!(accepted(&reports), 3, "{reports:?}");
            assert_eq!(rig.sockets.poll_timeout(), None);

            // Again at the limit; this time nothing is closed, and the time comes.
            let more = std::net::TcpStream::connect(target).unwrap();
            set_nofile(lowest_free_fd());
            let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(100));
            assert_eq!(accepted(&reports), 0);
            assert_eq!(rig.sockets.stats().accept_paused, 2);
            set_nofile(normal);
            let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(100));
            assert_eq!(accepted(&reports), 0, "still put aside");
            let resume = rig.sockets.poll_timeout().unwrap();
            rig.sockets.handle_timeout(resume);
            let (_, reports) = listener_wakeups(&mut rig, Duration::from_millis(200));
            assert_eq!(accepted(&reports), 1);
            drop((waiting, more));
        });
    }

    #[test]
    fn a_listener_at_the_fd_limit_is_put_aside_not_spun_on() {
        if std::env::var_os(FD_LIMIT_CHILD).is_some() {
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "sockets::tests::listener_at_the_fd_limit_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FD_LIMIT_CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child test hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed") || text.contains("SKIPPED"),
            "the child test didn't run: {text}"
        );
    }

    #[test]
    fn tokens_of_closed_sockets_are_stale() {
        in_fresh_netns(|| {
            let mut rig = Rig::new(Sockets::new());
            let (client, server) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let old = socket_token(client.0, rig.sockets.slots[client.0 as usize].gen);
            rig.sockets.close(client, true);
            rig.sockets.close(server, true);
            // The slot is reused; an event queued for its previous socket is dropped.
            let (client2, _server2) = rig.pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(client2 == client || client2 == server);
            rig.sockets.ready(old, EpollFlags::EPOLLIN);
            assert!(rig.sockets.next_report().is_none());
            assert!(rig.sockets.stats().stale_events >= 1);
        });
    }
}
