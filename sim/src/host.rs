//! A virtual host: the kernel side of the engine's sockets, and the applications at their far
//! ends, with byte-stream semantics close to Linux's.
//!
//! Every connection has two ends. *Ours* is the socket the engine drives through
//! [`HostSockets`](sans_io::flow::HostSockets): a send buffer of bounded capacity (partial sends, `WouldBlock` when full),
//! a receive queue peeked at offsets and discarded exactly, the peer's FIN after its data.
//! The *peer* end belongs to an [`App`] (a remote server the guest connects to, or a remote
//! client connecting to a forwarded port). Bytes travel between the ends after a one-way
//! latency and only as far as the receiver's buffer takes them, so a slow reader closes the
//! window all the way back to the engine.
//!
//! Readiness follows epoll's level-triggered rules for the interest the engine set: readable
//! while the receive queue holds data no peek has seen (bytes arrived after the last peek that
//! came back short, as the OS shim keeps it), writable while enough send space is free; connection
//! results, the peer's FIN and errors are reported once. Everything is ordered (BTreeMap, Vec)
//! so that runs replay exactly. Misuse by the engine (unknown socket, discarding more than was
//! received, sending after shutdown) is recorded in [`VirtualHost::violations`] for tests to
//! assert on, and answered with the error a kernel would give.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use sans_io::flow::{
    fill_slots, peek_each, send_each, send_pieces_copying, Bind, CloseSockets, DgramSockets,
    PeekSlots, Peeked, PingSockets, SockEvent, SockRef, StreamSockets,
};
use sans_io::fwd::apply::{ForwardListeners, ListenFailure};
use sans_io::fwd::forwards::{Direction, ListenSocket, ProtoKey};
use sans_io::time::Instant;
use sans_io::wire::external::{ExternalPayloads, SendPiece};

use crate::app::{App, AppState, StreamIo};

/// Linux errno values the virtual host reports.
pub mod errno {
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const EMFILE: i32 = 24;
    pub const EPIPE: i32 = 32;
    pub const EINVAL: i32 = 22;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
}

/// Linux's default ephemeral port range (net.ipv4.ip_local_port_range).
pub const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

/// The virtual host's behaviour.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// One-way latency between the host and any peer (a connect takes twice this).
    pub latency: Duration,
    /// How long a connect to an address nobody answers for takes to fail (ETIMEDOUT).
    pub connect_timeout: Duration,
    /// Send buffer and receive queue of the engine's sockets.
    pub sndbuf: usize,
    pub rcvbuf: usize,
    /// The same for the peers' sockets.
    pub peer_sndbuf: usize,
    pub peer_rcvbuf: usize,
    /// Addresses of the host itself (besides loopback): a connect to one with nothing
    /// listening is refused, and they are where forwarded ports listen.
    pub addrs: Vec<IpAddr>,
    /// At most this many sockets open at once (EMFILE beyond).
    pub max_sockets: usize,
    /// `send_space` reports this many bytes more send space than `send` takes, as Linux's
    /// estimate can (its accounting counts buffer overhead the estimate doesn't): sends then
    /// come up short of what the engine was told.
    pub send_space_slack: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            latency: Duration::from_micros(500),
            connect_timeout: Duration::from_secs(20),
            sndbuf: 64 * 1024,
            rcvbuf: 128 * 1024,
            peer_sndbuf: 64 * 1024,
            peer_rcvbuf: 128 * 1024,
            addrs: Vec::new(),
            max_sockets: 4096,
            send_space_slack: 0,
        }
    }
}

/// A connection's index in [`VirtualHost::conns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accept,
    Refuse,
    Timeout,
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Established,
    /// Connecting failed with this errno.
    Failed(i32),
}

#[derive(Debug)]
struct Chunk {
    at: Instant,
    data: Vec<u8>,
    off: usize,
    fin: bool,
}

/// One end of a connection: the kernel's buffers for it.
#[derive(Debug)]
pub struct End {
    snd: VecDeque<Chunk>,
    snd_bytes: usize,
    sndbuf: usize,
    rx: VecDeque<u8>,
    rcvbuf: usize,
    /// Bytes arrived that no peek has seen the end of since: a peek that comes back short saw
    /// everything `rx` holds (the OS shim's `Slot::unread`).
    unread: bool,
    /// The peer's FIN arrived (after all its data).
    pub rx_fin: bool,
    /// FIN queued after our data.
    pub shut_wr: bool,
    /// Closed by its owner: no more reads.
    pub closed: bool,
    /// Aborted by its owner (RST sent).
    pub aborted: bool,
    /// A RST from the other end arrives at this time.
    rst_at: Option<Instant>,
    /// The connection failed or was reset, as seen from this end.
    pub err: Option<i32>,
}

impl End {
    fn new(sndbuf: usize, rcvbuf: usize) -> End {
        End {
            snd: VecDeque::new(),
            snd_bytes: 0,
            sndbuf,
            rx: VecDeque::new(),
            rcvbuf,
            unread: false,
            rx_fin: false,
            shut_wr: false,
            closed: false,
            aborted: false,
            rst_at: None,
            err: None,
        }
    }

    fn dead(&self) -> bool {
        self.aborted || self.err.is_some()
    }

    fn send_space(&self) -> usize {
        self.sndbuf.saturating_sub(self.snd_bytes)
    }

    fn queue(&mut self, now: Instant, latency: Duration, data: &[u8]) -> usize {
        let n = data.len().min(self.send_space());
        if n > 0 {
            self.snd.push_back(Chunk {
                at: now + latency,
                data: data[..n].to_vec(),
                off: 0,
                fin: false,
            });
            self.snd_bytes += n;
        }
        n
    }

    fn queue_fin(&mut self, now: Instant, latency: Duration) {
        if !self.shut_wr {
            self.shut_wr = true;
            self.snd.push_back(Chunk {
                at: now + latency,
                data: Vec::new(),
                off: 0,
                fin: true,
            });
        }
    }

    /// Bytes waiting in the receive queue.
    pub fn readable(&self) -> usize {
        self.rx.len()
    }

    /// Bytes sent and not yet taken by the other end.
    pub fn unacked(&self) -> usize {
        self.snd_bytes
    }
}

/// What moving bytes from one end to the other did.
enum Moved {
    Nothing,
    Some,
    /// Data reached a closed socket: the receiver answers with a RST.
    Rst,
}

fn transfer(from: &mut End, to: &mut End, now: Instant) -> Moved {
    let mut moved = Moved::Nothing;
    if to.dead() {
        return moved;
    }
    while let Some(c) = from.snd.front_mut() {
        if c.at > now {
            break;
        }
        if c.fin {
            to.rx_fin = true;
            from.snd.pop_front();
            moved = Moved::Some;
            continue;
        }
        if to.closed {
            return Moved::Rst;
        }
        let free = to.rcvbuf.saturating_sub(to.rx.len());
        if free == 0 {
            break;
        }
        let n = free.min(c.data.len() - c.off);
        to.rx.extend(&c.data[c.off..c.off + n]);
        to.unread = true;
        c.off += n;
        from.snd_bytes -= n;
        if c.off == c.data.len() {
            from.snd.pop_front();
        }
        moved = Moved::Some;
    }
    moved
}

/// Resets a connection from `from`'s side: its buffers go, the other end learns after the
/// latency.
fn abort(from: &mut End, to: &mut End, at: Instant) {
    from.aborted = true;
    from.snd.clear();
    from.snd_bytes = 0;
    from.rx.clear();
    if !to.dead() && to.rst_at.is_none() {
        to.rst_at = Some(at);
    }
}

/// A TCP connection between one of the engine's sockets and a peer application.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    /// The engine's socket, until the engine closes it.
    pub sock: Option<SockRef>,
    /// Our socket's address and the peer's.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// A remote client connected to a forwarded port (else the engine connected out).
    pub inbound: bool,
    pub state: ConnState,
    /// What the engine asked for at connect time.
    pub bind: Option<IpAddr>,
    pub bind_iface: Option<String>,
    pub mss: Option<u16>,
    pub opened_at: Instant,
    pub established_at: Option<Instant>,
    /// When the engine closed its socket, and whether with a reset.
    pub closed_by_engine: Option<(Instant, bool)>,
    /// The peer saw a reset.
    pub peer_reset_at: Option<Instant>,
    pub ours: End,
    pub peer: End,
    pub app: AppState,
    /// The bounds the engine put on our socket's advertised window (TCP_WINDOW_CLAMP), in
    /// order. Recorded, not modelled: data moves at once here, so the window doesn't pace it.
    pub window_clamps: Vec<u32>,
    interest: (bool, bool),
    outcome_at: Option<(Instant, Outcome)>,
    connected_event: bool,
    error_event: Option<i32>,
    peer_closed_reported: bool,
}

impl Conn {
    /// The peer application is done and the engine closed its socket.
    pub fn finished(&self) -> bool {
        self.sock.is_none() && (self.app.done() || self.peer.dead())
    }

    /// The peer application's received bytes.
    pub fn received(&self) -> &[u8] {
        &self.app.received
    }
}

/// Counters of what the virtual host saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStats {
    pub connects: u64,
    pub refused: u64,
    pub timed_out: u64,
    pub accepted: u64,
    pub inbound_refused: u64,
    /// Resets sent by the engine (close with reset) and to it (peer aborts).
    pub engine_resets: u64,
    pub peer_resets: u64,
    pub bytes_from_engine: u64,
    pub bytes_discarded: u64,
    pub would_block: u64,
    pub events: u64,
    /// Calls the engine made through `HostSockets`, of any kind.
    pub calls: u64,
    /// Of those, `send_vectored` calls (runs of guest data, each one call).
    pub vectored_sends: u64,
    /// Peeks that told the engine the stream's end (instead of a `PeerClosed` event).
    pub eof_peeks: u64,
    /// Peek calls, single or into several frames' slots (each one call).
    pub peeks: u64,
    /// Of those, the ones into several slots (the shim's `recvmsg` with an iovec).
    pub slot_peeks: u64,
    /// Receive calls on UDP sockets, one datagram or several (`recvmmsg`) each.
    pub udp_receives: u64,
}

/// Which of a world's engines a socket belongs to: its events go back to that engine.
pub type EngineId = usize;

/// The main guest's engine (the others count from 1).
pub const MAIN_ENGINE: EngineId = 0;

/// The virtual host.
pub struct VirtualHost {
    pub config: HostConfig,
    listeners: BTreeMap<SocketAddr, App>,
    /// Addresses that answer (with a refusal when nothing listens).
    reachable: BTreeSet<IpAddr>,
    socks: BTreeMap<SockRef, ConnId>,
    conns: Vec<Conn>,
    next_sock: u32,
    /// Which engine the sockets opened from now on belong to (see [`VirtualHost::open_as`]).
    opener: EngineId,
    /// The sockets of engines other than the main one ([`MAIN_ENGINE`]), with their engine.
    owners: BTreeMap<SockRef, EngineId>,
    next_port: u16,
    /// The engine's TCP forwarding listeners, as the shim would open them.
    tcp_forwarding: BTreeSet<SocketAddr>,
    /// Sockets other programs hold: the engine can't listen there.
    pub taken: BTreeSet<(ProtoKey, SocketAddr)>,
    /// The outbound (`-T`/`-U`) listeners in the namespace, which this host doesn't relay.
    pub ns_listening: BTreeSet<ListenSocket>,
    accepts: Vec<ConnId>,
    now: Instant,
    ops: u64,
    /// The engine's misuses of the socket interface, described.
    pub violations: Vec<String>,
    pub stats: HostStats,
    /// UDP echo servers: every datagram sent there comes back after a round trip.
    udp_echo: BTreeSet<SocketAddr>,
    udp_socks: BTreeMap<SockRef, UdpSock>,
    /// Where UDP forwarding listeners were ever bound: reply sockets for exchanges begun on
    /// them are bound there too, even after the listener closed.
    udp_listened_at: BTreeSet<SocketAddr>,
    /// Every datagram the engine sent: (local, destination, payload).
    pub udp_log: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// What the engine handed to pasta's loopback bypass, which this host doesn't model:
    /// connections (closed here, as relayed elsewhere) and datagrams (source, target, payload).
    pub handed_over: Vec<(SockRef, SocketAddr)>,
    pub relayed_datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Hosts answering pings (besides the host's own addresses and loopback).
    ping_hosts: BTreeSet<IpAddr>,
    /// Echo identifiers the "kernel" won't bind (another socket has them): it picks others.
    pub ping_ids_taken: BTreeSet<u16>,
    /// Every echo request the engine sent: (destination, message).
    pub ping_log: Vec<(IpAddr, Vec<u8>)>,
}

/// A UDP socket of the engine's: connected, or a forwarding listener.
#[derive(Debug, Clone)]
pub struct UdpSock {
    pub local: SocketAddr,
    /// The peer; unspecified for a listener.
    pub dst: SocketAddr,
    /// Datagrams arriving, with their arrival time and source.
    pub rx: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    /// A forwarding listener (`-u`), not connected.
    pub listener: bool,
    pub readable: bool,
    /// For a ping socket, the echo identifier it's bound to.
    pub ping_id: Option<u16>,
}

impl VirtualHost {
    pub fn new(config: HostConfig) -> VirtualHost {
        VirtualHost {
            config,
            listeners: BTreeMap::new(),
            reachable: BTreeSet::new(),
            socks: BTreeMap::new(),
            conns: Vec::new(),
            next_sock: 1,
            opener: MAIN_ENGINE,
            owners: BTreeMap::new(),
            next_port: *EPHEMERAL.start(),
            tcp_forwarding: BTreeSet::new(),
            taken: BTreeSet::new(),
            ns_listening: BTreeSet::new(),
            accepts: Vec::new(),
            now: Instant::ZERO,
            ops: 0,
            violations: Vec::new(),
            stats: HostStats::default(),
            udp_echo: BTreeSet::new(),
            udp_socks: BTreeMap::new(),
            udp_listened_at: BTreeSet::new(),
            udp_log: Vec::new(),
            handed_over: Vec::new(),
            relayed_datagrams: Vec::new(),
            ping_hosts: BTreeSet::new(),
            ping_ids_taken: BTreeSet::new(),
            ping_log: Vec::new(),
        }
    }

    /// Sockets opened from now on (connects, datagram and echo sockets, accepted connections)
    /// belong to engine `id`: the world sets it before each engine's batch.
    pub fn open_as(&mut self, id: EngineId) {
        self.opener = id;
    }

    /// The engine a socket belongs to.
    pub fn owner(&self, s: SockRef) -> EngineId {
        self.owners.get(&s).copied().unwrap_or(MAIN_ENGINE)
    }

    /// A fresh socket handle, noted as the current opener's.
    fn new_sock(&mut self) -> SockRef {
        let s = SockRef(self.next_sock);
        self.next_sock += 1;
        if self.opener != MAIN_ENGINE {
            self.owners.insert(s, self.opener);
        }
        s
    }

    /// A server application listening at `addr` (an unspecified address listens on the host's
    /// own addresses and loopback).
    pub fn listen(&mut self, addr: SocketAddr, app: App) {
        self.listeners.insert(addr, app);
        if !addr.ip().is_unspecified() {
            self.reachable.insert(addr.ip());
        }
    }

    pub fn unlisten(&mut self, addr: SocketAddr) {
        self.listeners.remove(&addr);
    }

    /// An address that answers connects (refusing them where nothing listens).
    pub fn reachable(&mut self, addr: IpAddr) {
        self.reachable.insert(addr);
    }

    /// Where the engine listens for TCP forwarding now.
    pub fn tcp_forwarding(&self) -> &BTreeSet<SocketAddr> {
        &self.tcp_forwarding
    }

    /// Whether an engine listener takes connections to `to`: one bound to it, or to its
    /// family's wildcard on its port.
    fn forwarded(&self, to: SocketAddr) -> bool {
        let any = match to {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.tcp_forwarding.contains(&to)
            || self
                .tcp_forwarding
                .contains(&SocketAddr::new(any, to.port()))
    }

    pub fn conns(&self) -> &[Conn] {
        &self.conns
    }

    pub fn conn(&self, id: ConnId) -> &Conn {
        &self.conns[id.0]
    }

    pub fn conn_mut(&mut self, id: ConnId) -> &mut Conn {
        &mut self.conns[id.0]
    }

    /// Connections the engine opened to `remote`, in order.
    pub fn conns_to(&self, remote: SocketAddr) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|c| !c.inbound && c.remote == remote)
            .map(|c| c.id)
            .collect()
    }

    /// The connection behind an engine socket.
    pub fn conn_of(&self, s: SockRef) -> Option<ConnId> {
        self.socks.get(&s).copied()
    }

    /// Bytes in the receive queue of engine socket `s` (peeked or not), as `FIONREAD` says.
    pub fn readable(&self, s: SockRef) -> Option<usize> {
        Some(self.conns[self.conn_of(s)?.0].ours.rx.len())
    }

    /// Bytes engine socket `s` sent and the peer hasn't acknowledged, as `SIOCOUTQ` says.
    pub fn unacked(&self, s: SockRef) -> Option<usize> {
        Some(self.conns[self.conn_of(s)?.0].ours.snd_bytes)
    }

    /// Sockets the engine holds open (forwarding listeners aside, as for TCP).
    pub fn open_sockets(&self) -> usize {
        self.socks.len() + self.udp_socks.values().filter(|u| !u.listener).count()
    }

    /// A UDP echo server at `addr`.
    pub fn udp_echo(&mut self, addr: SocketAddr) {
        self.udp_echo.insert(addr);
    }

    /// A host answering echo requests.
    pub fn ping_host(&mut self, ip: IpAddr) {
        self.ping_hosts.insert(ip);
    }

    /// The engine's open UDP sockets (and ping sockets, with `ping_id` set).
    pub fn udp_socks(&self) -> &BTreeMap<SockRef, UdpSock> {
        &self.udp_socks
    }

    /// A datagram from the peer of UDP socket `s`, arriving after the one-way latency.
    pub fn udp_peer_send(&mut self, s: SockRef, data: &[u8]) {
        let at = self.now + self.config.latency;
        if let Some(u) = self.udp_socks.get_mut(&s) {
            let from = u.dst;
            u.rx.push_back((at, from, data.to_vec()));
        }
    }

    /// A UDP forwarding listener at `local`, as the shim opens them for `-u`: hand it to
    /// `Engine::add_udp_listener`.
    pub fn udp_listen(&mut self, local: SocketAddr) -> SockRef {
        self.udp_listened_at.insert(local);
        let s = self.new_sock();
        let any = match local {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.udp_socks.insert(
            s,
            UdpSock {
                local,
                dst: SocketAddr::new(any, 0),
                rx: VecDeque::new(),
                readable: true,
                listener: true,
                ping_id: None,
            },
        );
        s
    }

    /// Closes the UDP forwarding listener at `local`, returning it (for
    /// `Engine::remove_udp_listener`); flows it opened carry on.
    pub fn udp_unlisten(&mut self, local: SocketAddr) -> Option<SockRef> {
        let s = self
            .udp_socks
            .iter()
            .find(|(_, u)| u.listener && u.local == local)
            .map(|(s, _)| *s)?;
        self.udp_socks.remove(&s);
        Some(s)
    }

    /// A datagram from a peer at `from` to the host's `to`, arriving after the one-way
    /// latency on the socket the kernel would pick: one connected to `from` and bound to
    /// `to`'s port, else a listener on that port. Returns whether any socket took it.
    pub fn remote_udp_send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        let at = self.now + self.config.latency;
        let bound_to = |u: &UdpSock| {
            u.local.port() == to.port()
                && u.local.is_ipv4() == to.is_ipv4()
                && (u.local.ip().is_unspecified() || u.local.ip() == to.ip())
        };
        let connected = self
            .udp_socks
            .iter()
            .find(|(_, u)| !u.listener && u.ping_id.is_none() && u.dst == from && bound_to(u));
        let listener = self
            .udp_socks
            .iter()
            .find(|(_, u)| u.listener && bound_to(u));
        let Some(s) = connected.or(listener).map(|(s, _)| *s) else {
            return false;
        };
        if let Some(u) = self.udp_socks.get_mut(&s) {
            u.rx.push_back((at, from, data.to_vec()));
        }
        true
    }

    /// A counter that moves whenever any socket's state changes.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.config.addrs.contains(&ip)
    }

    fn find_listener(&self, dst: SocketAddr) -> Option<&App> {
        if let Some(app) = self.listeners.get(&dst) {
            return Some(app);
        }
        if self.is_local(dst.ip()) {
            let any = match dst {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            return self.listeners.get(&SocketAddr::new(any, dst.port()));
        }
        None
    }

    fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= *EPHEMERAL.end() {
            *EPHEMERAL.start()
        } else {
            p + 1
        };
        p
    }

    fn source_for(&self, dst: IpAddr) -> IpAddr {
        if dst.is_loopback() {
            return dst;
        }
        let same_family = |a: &&IpAddr| a.is_ipv4() == dst.is_ipv4();
        self.config
            .addrs
            .iter()
            .find(same_family)
            .copied()
            .unwrap_or(match dst {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            })
    }

    fn new_conn(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        inbound: bool,
        app: App,
        outcome: (Instant, Outcome),
    ) -> ConnId {
        let id = ConnId(self.conns.len());
        let c = &self.config;
        self.conns.push(Conn {
            id,
            sock: None,
            local,
            remote,
            inbound,
            state: ConnState::Connecting,
            bind: None,
            bind_iface: None,
            mss: None,
            opened_at: self.now,
            established_at: None,
            closed_by_engine: None,
            peer_reset_at: None,
            ours: End::new(c.sndbuf, c.rcvbuf),
            peer: End::new(c.peer_sndbuf, c.peer_rcvbuf),
            app: AppState::new(app),
            // As the OS shim: both off until the engine asks.
            interest: (false, false),
            outcome_at: Some(outcome),
            connected_event: false,
            error_event: None,
            peer_closed_reported: false,
            window_clamps: Vec::new(),
        });
        id
    }

    /// A remote client at `from` connects to the host at `to` and runs `app`. It reaches the
    /// engine (as an accepted socket) if `to`'s port is forwarded; else it is refused.
    pub fn remote_connect(&mut self, from: SocketAddr, to: SocketAddr, app: App) -> ConnId {
        let at = self.now + self.config.latency;
        let outcome = if self.forwarded(to) && self.is_local(to.ip()) {
            Outcome::Accept
        } else {
            Outcome::Refuse
        };
        self.ops += 1;
        self.new_conn(to, from, true, app, (at, outcome))
    }

    /// The peer of `id` resets the connection now.
    pub fn peer_abort(&mut self, id: ConnId) {
        let now = self.now;
        let lat = self.config.latency;
        let c = &mut self.conns[id.0];
        if !c.peer.dead() {
            abort(&mut c.peer, &mut c.ours, now + lat);
            c.app.aborted = true;
            self.stats.peer_resets += 1;
            self.ops += 1;
        }
    }

    /// The peer of `id` writes `data` (as far as its buffer takes it).
    pub fn peer_write(&mut self, id: ConnId, data: &[u8]) -> usize {
        let now = self.now;
        let lat = self.config.latency;
        self.ops += 1;
        self.conns[id.0].peer.queue(now, lat, data)
    }

    /// The peer of `id` closes its sending direction.
    pub fn peer_shutdown(&mut self, id: ConnId) {
        let now = self.now;
        let lat = self.config.latency;
        self.ops += 1;
        self.conns[id.0].peer.queue_fin(now, lat);
    }

    /// Runs everything due at `now`: connection results, bytes and FINs in flight, resets,
    /// the peer applications. Returns whether anything changed.
    pub fn advance(&mut self, now: Instant) -> bool {
        self.now = now;
        let lat = self.config.latency;
        let mut progress = false;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if let Some((_, outcome)) = c.outcome_at.filter(|(at, _)| *at <= now) {
                c.outcome_at = None;
                progress = true;
                match outcome {
                    Outcome::Accept => {
                        c.state = ConnState::Established;
                        c.established_at = Some(now);
                        if c.inbound {
                            self.accepts.push(c.id);
                            self.stats.accepted += 1;
                        } else {
                            c.connected_event = true;
                        }
                    }
                    Outcome::Refuse | Outcome::Timeout => {
                        let e = if outcome == Outcome::Refuse {
                            errno::ECONNREFUSED
                        } else {
                            errno::ETIMEDOUT
                        };
                        c.state = ConnState::Failed(e);
                        c.ours.err = Some(e);
                        c.peer.err = Some(e);
                        if c.inbound {
                            self.stats.inbound_refused += 1;
                        } else {
                            c.error_event = Some(e);
                            if outcome == Outcome::Refuse {
                                self.stats.refused += 1;
                            } else {
                                self.stats.timed_out += 1;
                            }
                        }
                    }
                }
            }
            if c.state != ConnState::Established {
                continue;
            }
            for (end, is_ours) in [(&mut c.ours, true), (&mut c.peer, false)] {
                if let Some(at) = end.rst_at.filter(|&at| at <= now) {
                    end.rst_at = None;
                    if !end.dead() {
                        end.err = Some(errno::ECONNRESET);
                        end.rx.clear();
                        end.snd.clear();
                        end.snd_bytes = 0;
                        progress = true;
                        if is_ours {
                            if c.sock.is_some() {
                                c.error_event = Some(errno::ECONNRESET);
                            }
                        } else {
                            c.peer_reset_at = Some(at);
                        }
                    }
                }
            }
            // Bounded: each round moves bytes or runs the application; both run out.
            for _ in 0..64 {
                let mut round = false;
                for forward in [true, false] {
                    let (from, to) = if forward {
                        (&mut c.ours, &mut c.peer)
                    } else {
                        (&mut c.peer, &mut c.ours)
                    };
                    match transfer(from, to, now) {
                        Moved::Nothing => {}
                        Moved::Some => round = true,
                        Moved::Rst => {
                            // The receiver closed its socket: it answers data with a RST.
                            abort(to, from, now + lat);
                            from.snd.clear();
                            from.snd_bytes = 0;
                            round = true;
                        }
                    }
                }
                if !c.peer.dead() && !c.peer.closed {
                    let mut io = EndIo {
                        me: &mut c.peer,
                        other: &mut c.ours,
                        now,
                        latency: lat,
                    };
                    if c.app.run(now, &mut io) {
                        round = true;
                        if c.app.aborted {
                            self.stats.peer_resets += 1;
                        }
                    }
                    if c.app.eof && (c.app.fin_sent || c.app.aborted) {
                        c.peer.closed = true;
                    }
                }
                if !round {
                    break;
                }
                progress = true;
            }
        }
        if progress {
            self.ops += 1;
        }
        progress
    }

    /// Inbound connections ready for the engine to accept: `(socket, peer, local)`.
    pub fn take_accepts(&mut self) -> Vec<(SockRef, SocketAddr, SocketAddr)> {
        let ids = std::mem::take(&mut self.accepts);
        let mut out = Vec::new();
        for id in ids {
            if self.socks.len() >= self.config.max_sockets {
                // The listener's backlog overflows: the client times out or is reset.
                let (now, lat) = (self.now, self.config.latency);
                let c = &mut self.conns[id.0];
                abort(&mut c.ours, &mut c.peer, now + lat);
                continue;
            }
            let s = self.new_sock();
            self.socks.insert(s, id);
            let c = &mut self.conns[id.0];
            c.sock = Some(s);
            out.push((s, c.remote, c.local));
        }
        out
    }

    /// The readiness to report now, level-triggered for the interest set, in socket order.
    pub fn events(&mut self) -> Vec<(SockRef, SockEvent)> {
        let mut out = Vec::new();
        for (&s, &id) in &self.socks {
            let c = &mut self.conns[id.0];
            if std::mem::take(&mut c.connected_event) {
                out.push((s, SockEvent::Connected));
            }
            if let Some(e) = c.error_event.take() {
                out.push((s, SockEvent::Error(e)));
                continue;
            }
            if c.state != ConnState::Established || c.ours.dead() {
                continue;
            }
            let (readable, writable) = c.interest;
            if readable && c.ours.unread && !c.ours.rx.is_empty() {
                out.push((s, SockEvent::Readable));
            }
            if readable && c.ours.rx_fin && !c.peer_closed_reported {
                c.peer_closed_reported = true;
                out.push((s, SockEvent::PeerClosed));
            }
            // Linux: writable while free space is at least half of what is queued.
            if writable && !c.ours.shut_wr && c.ours.send_space() >= c.ours.snd_bytes / 2 {
                out.push((s, SockEvent::Writable));
            }
        }
        for (&s, u) in &self.udp_socks {
            if u.readable && u.rx.front().is_some_and(|(at, _, _)| *at <= self.now) {
                out.push((s, SockEvent::Readable));
            }
        }
        out.sort_by_key(|(s, _)| *s);
        self.stats.events += out.len() as u64;
        out
    }

    /// When something next happens by itself (bytes or a reset arriving, a connect's result,
    /// a rate-limited reader), if anything will.
    pub fn poll_at(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for u in self.udp_socks.values() {
            if let Some((t, _, _)) = u.rx.front().filter(|(t, _, _)| *t > self.now) {
                at(*t);
            }
        }
        for c in &self.conns {
            if let Some((t, _)) = c.outcome_at {
                at(t);
            }
            if c.state != ConnState::Established {
                continue;
            }
            for end in [&c.ours, &c.peer] {
                if let Some(t) = end.rst_at {
                    at(t);
                }
                if let Some(ch) = end.snd.front().filter(|ch| ch.at > self.now) {
                    at(ch.at);
                }
            }
            if let Some(t) = c
                .app
                .poll_at(self.now, !c.peer.rx.is_empty() || c.peer.rx_fin)
            {
                at(t);
            }
        }
        next
    }

    fn lookup(&mut self, s: SockRef, op: &str) -> io::Result<ConnId> {
        match self.socks.get(&s) {
            Some(&id) => Ok(id),
            None => {
                self.violations
                    .push(format!("{op} on unknown socket {s:?} at {:?}", self.now));
                Err(io::Error::from_raw_os_error(errno::EBADF))
            }
        }
    }
}

/// A peer application's view of its end.
struct EndIo<'a> {
    me: &'a mut End,
    other: &'a mut End,
    now: Instant,
    latency: Duration,
}

impl StreamIo for EndIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.me.rx.len());
        for (b, x) in buf.iter_mut().zip(self.me.rx.drain(..n)) {
            *b = x;
        }
        n
    }

    fn at_eof(&self) -> bool {
        self.me.rx_fin && self.me.rx.is_empty()
    }

    fn write_space(&self) -> usize {
        if self.me.shut_wr {
            0
        } else {
            self.me.send_space()
        }
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if self.me.shut_wr {
            return 0;
        }
        self.me.queue(self.now, self.latency, data)
    }

    fn shutdown(&mut self) {
        self.me.queue_fin(self.now, self.latency);
    }

    fn abort(&mut self) {
        abort(self.me, self.other, self.now + self.latency);
    }

    fn usable(&self) -> bool {
        !self.me.dead()
    }
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl CloseSockets for VirtualHost {
    fn close(&mut self, s: SockRef, reset: bool) {
        self.stats.calls += 1;
        if let Some(u) = self.udp_socks.remove(&s) {
            if let Some(id) = u.ping_id {
                self.ping_ids_taken.remove(&id);
            }
            self.ops += 1;
            return;
        }
        let Ok(id) = self.lookup(s, "close") else {
            return;
        };
        self.socks.remove(&s);
        self.ops += 1;
        let (now, lat) = (self.now, self.config.latency);
        let c = &mut self.conns[id.0];
        c.sock = None;
        c.closed_by_engine = Some((now, reset));
        if c.state == ConnState::Connecting {
            // Abandoning a connect: the peer never hears of it.
            c.outcome_at = None;
            c.state = ConnState::Failed(errno::ECONNRESET);
            c.ours.closed = true;
            return;
        }
        if c.ours.dead() || matches!(c.state, ConnState::Failed(_)) {
            c.ours.closed = true;
            return;
        }
        // Linux resets when unread data is thrown away, as when asked to.
        if reset || !c.ours.rx.is_empty() {
            abort(&mut c.ours, &mut c.peer, now + lat);
            self.stats.engine_resets += 1;
        } else {
            c.ours.queue_fin(now, lat);
        }
        c.ours.closed = true;
    }
}

impl VirtualHost {
    fn peek_uncounted(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let id = self.lookup(s, "peek")?;
        let c = &mut self.conns[id.0];
        if let Some(e) = c.ours.err {
            return Err(err(e));
        }
        if c.state == ConnState::Connecting {
            return Err(err(errno::ENOTCONN));
        }
        let n = buf.len().min(c.ours.rx.len().saturating_sub(offset));
        if n < buf.len() {
            // Short: it saw everything there.
            c.ours.unread = false;
        }
        let rx = &c.ours.rx;
        let (a, b) = rx.as_slices();
        for (i, slot) in buf[..n].iter_mut().enumerate() {
            let at = offset + i;
            *slot = if at < a.len() { a[at] } else { b[at - a.len()] };
        }
        // As the OS shim tells the end: a peek of nothing after the FIN, or a short one once
        // the end was reported; either way the end needs no `PeerClosed` any more.
        let at_end = c.ours.rx_fin && offset + n >= rx.len() && !buf.is_empty();
        let eof = at_end && (n == 0 || (n < buf.len() && c.peer_closed_reported));
        if eof {
            c.peer_closed_reported = true;
            self.stats.eof_peeks += 1;
        }
        Ok(Peeked { n, eof })
    }

    /// Where a datagram to `to` leaves from a socket bound to `bound`: its port, and its
    /// address or, bound to a wildcard, the one routing picks.
    fn source_from(&self, bound: SocketAddr, to: IpAddr) -> SocketAddr {
        let ip = if bound.ip().is_unspecified() {
            self.source_for(to)
        } else {
            bound.ip()
        };
        SocketAddr::new(ip, bound.port())
    }

    /// One receive call on a UDP socket, of any kind.
    fn count_udp_receive(&mut self) {
        self.stats.calls += 1;
        self.stats.udp_receives += 1;
    }

    /// One datagram of `s` into `buf` (truncated to it), with its source.
    fn udp_recv_uncounted(
        &mut self,
        s: SockRef,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        let now = self.now;
        let Some(u) = self.udp_socks.get_mut(&s) else {
            self.violations
                .push(format!("udp_recv on unknown socket {s:?} at {now:?}"));
            return Err(err(errno::EBADF));
        };
        match u.rx.front() {
            Some((at, _, _)) if *at <= now => {
                let (_, from, d) = u.rx.pop_front().expect("front exists");
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                self.ops += 1;
                Ok((n, from))
            }
            _ => Err(err(errno::EAGAIN)),
        }
    }

    /// A datagram as the engine's `udp_send` sends it, not counted as a call of its own.
    fn udp_send_uncounted(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let rtt = self.config.latency * 2;
        let now = self.now;
        let Some(u) = self.udp_socks.get_mut(&s) else {
            self.violations
                .push(format!("udp_send on unknown socket {s:?} at {now:?}"));
            return Err(err(errno::EBADF));
        };
        self.ops += 1;
        self.udp_log.push((u.local, u.dst, data.to_vec()));
        if self.udp_echo.contains(&u.dst) {
            let from = u.dst;
            u.rx.push_back((now + rtt, from, data.to_vec()));
        }
        Ok(data.len())
    }

    /// A send as the engine's `send` makes it, not counted as a call of its own.
    fn send_uncounted(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let id = self.lookup(s, "send")?;
        let (now, lat) = (self.now, self.config.latency);
        let c = &mut self.conns[id.0];
        if let Some(e) = c.ours.err {
            return Err(err(e));
        }
        if c.state == ConnState::Connecting {
            self.stats.would_block += 1;
            return Err(err(errno::EAGAIN));
        }
        if c.ours.shut_wr {
            self.violations
                .push(format!("send on {s:?} after shutdown_write at {now:?}"));
            return Err(err(errno::EPIPE));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = c.ours.queue(now, lat, data);
        if n == 0 {
            self.stats.would_block += 1;
            return Err(err(errno::EAGAIN));
        }
        self.stats.bytes_from_engine += n as u64;
        self.ops += 1;
        Ok(n)
    }
}

impl StreamSockets for VirtualHost {
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef> {
        self.stats.calls += 1;
        if dst.ip().is_unspecified() || dst.ip().is_multicast() || dst.port() == 0 {
            return Err(err(errno::ENETUNREACH));
        }
        if self.socks.len() >= self.config.max_sockets {
            return Err(err(errno::EMFILE));
        }
        self.stats.connects += 1;
        self.ops += 1;
        let rtt = self.config.latency * 2;
        let (app, outcome) = match self.find_listener(dst) {
            Some(app) => (app.clone(), (self.now + rtt, Outcome::Accept)),
            None if self.is_local(dst.ip()) || self.reachable.contains(&dst.ip()) => {
                (App::idle(), (self.now + rtt, Outcome::Refuse))
            }
            None => (
                App::idle(),
                (self.now + self.config.connect_timeout, Outcome::Timeout),
            ),
        };
        let src = bind.addr.unwrap_or_else(|| self.source_for(dst.ip()));
        let local = SocketAddr::new(src, self.ephemeral_port());
        let id = self.new_conn(local, dst, false, app, outcome);
        let s = self.new_sock();
        self.socks.insert(s, id);
        let c = &mut self.conns[id.0];
        c.sock = Some(s);
        c.bind = bind.addr;
        c.bind_iface = bind.iface.map(str::to_owned);
        c.mss = mss;
        Ok(s)
    }

    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        self.stats.calls += 1;
        self.send_uncounted(s, data)
    }

    /// Consecutive sends stopping at the first short one, as one counted call (the shim's
    /// `sendmsg` with an iovec).
    fn send_vectored(&mut self, s: SockRef, data: &[&[u8]]) -> io::Result<usize> {
        self.stats.calls += 1;
        self.stats.vectored_sends += 1;
        send_each(data, |slice| self.send_uncounted(s, slice))
    }

    /// Payload left in the guest's memory copied through the link, as one counted call (the
    /// shim's `sendmsg` with an iovec over it).
    fn send_pieces(
        &mut self,
        s: SockRef,
        pieces: &[SendPiece<'_>],
        external: &dyn ExternalPayloads,
    ) -> io::Result<usize> {
        self.stats.calls += 1;
        self.stats.vectored_sends += 1;
        send_pieces_copying(pieces, external, |bytes| self.send_uncounted(s, bytes))
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        self.stats.calls += 1;
        self.stats.peeks += 1;
        self.peek_uncounted(s, offset, buf)
    }

    /// Area by area, as one counted call (the shim's `recvmsg` with an iovec).
    fn peek_slots(
        &mut self,
        s: SockRef,
        offset: usize,
        buf: &mut [u8],
        slots: PeekSlots<'_>,
    ) -> io::Result<Peeked> {
        self.stats.calls += 1;
        self.stats.peeks += 1;
        self.stats.slot_peeks += 1;
        peek_each(buf, slots, |at, area| {
            self.peek_uncounted(s, offset + at, area)
        })
    }

    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        self.stats.calls += 1;
        let id = self.lookup(s, "discard")?;
        let now = self.now;
        let c = &mut self.conns[id.0];
        if let Some(e) = c.ours.err {
            return Err(err(e));
        }
        if len > c.ours.rx.len() {
            self.violations.push(format!(
                "discard of {len} bytes on {s:?} holding {} at {now:?}",
                c.ours.rx.len()
            ));
            return Err(err(errno::EINVAL));
        }
        c.ours.rx.drain(..len);
        self.stats.bytes_discarded += len as u64;
        if len > 0 {
            self.ops += 1;
        }
        Ok(())
    }

    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        self.stats.calls += 1;
        let id = self.lookup(s, "send_space")?;
        let c = &self.conns[id.0];
        if let Some(e) = c.ours.err {
            return Err(err(e));
        }
        let slack = if c.ours.shut_wr {
            0
        } else {
            self.config.send_space_slack
        };
        Ok((c.ours.send_space() + slack) as u32)
    }

    fn clamp_window(&mut self, s: SockRef, bytes: u32) {
        self.stats.calls += 1;
        if let Ok(id) = self.lookup(s, "clamp_window") {
            self.conns[id.0].window_clamps.push(bytes);
        }
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        self.stats.calls += 1;
        let id = self.lookup(s, "shutdown_write")?;
        let (now, lat) = (self.now, self.config.latency);
        let c = &mut self.conns[id.0];
        if let Some(e) = c.ours.err {
            return Err(err(e));
        }
        if c.state != ConnState::Established {
            return Err(err(errno::ENOTCONN));
        }
        c.ours.queue_fin(now, lat);
        self.ops += 1;
        Ok(())
    }

    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        self.stats.calls += 1;
        if let Some(u) = self.udp_socks.get_mut(&s) {
            u.readable = readable;
            return;
        }
        if let Ok(id) = self.lookup(s, "set_interest") {
            self.conns[id.0].interest = (readable, writable);
        }
    }

    fn hand_over(&mut self, s: SockRef, target: SocketAddr) {
        self.stats.calls += 1;
        self.handed_over.push((s, target));
        // The relay is out of this model: the connection ends here, quietly.
        self.close(s, false);
    }
}

impl DgramSockets for VirtualHost {
    fn udp_open(&mut self, bind: Bind<'_>, dst: SocketAddr) -> io::Result<SockRef> {
        self.stats.calls += 1;
        if dst.ip().is_unspecified() || dst.ip().is_multicast() || dst.port() == 0 {
            return Err(err(errno::ENETUNREACH));
        }
        if self.open_sockets() >= self.config.max_sockets {
            return Err(err(errno::EMFILE));
        }
        self.ops += 1;
        let src = bind.addr.unwrap_or_else(|| self.source_for(dst.ip()));
        let local = SocketAddr::new(src, self.ephemeral_port());
        let s = self.new_sock();
        self.udp_socks.insert(
            s,
            UdpSock {
                local,
                dst,
                rx: VecDeque::new(),
                readable: true,
                listener: false,
                ping_id: None,
            },
        );
        Ok(s)
    }

    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        self.stats.calls += 1;
        self.udp_send_uncounted(s, data)
    }

    /// Consecutive sends as one counted call (the shim's `sendmmsg`).
    fn udp_send_many(&mut self, s: SockRef, datagrams: &[&[u8]]) -> io::Result<usize> {
        self.stats.calls += 1;
        self.stats.vectored_sends += 1;
        for (i, datagram) in datagrams.iter().enumerate() {
            if let Err(e) = self.udp_send_uncounted(s, datagram) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(datagrams.len())
    }

    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        self.count_udp_receive();
        self.udp_recv_uncounted(s, buf).map(|(n, _)| n)
    }

    fn udp_recv_from(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.count_udp_receive();
        self.udp_recv_uncounted(s, buf)
    }

    /// Consecutive receives as one counted call (the shim's `recvmmsg`).
    fn udp_recv_many(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let mut peers = vec![SocketAddr::from(([0, 0, 0, 0], 0)); lens.len()];
        self.udp_recv_many_from(s, slots, slot_len, offset, lens, &mut peers)
    }

    /// Consecutive receives with their sources as one counted call (the shim's `recvmmsg`).
    fn udp_recv_many_from(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
        peers: &mut [SocketAddr],
    ) -> io::Result<usize> {
        self.count_udp_receive();
        let count = lens.len().min(peers.len());
        fill_slots(slots, slot_len, offset, count, |i, buf| {
            (lens[i], peers[i]) = self.udp_recv_uncounted(s, buf)?;
            Ok(())
        })
    }

    fn udp_reply_open(
        &mut self,
        bound: SocketAddr,
        _: Option<&str>,
        peer: SocketAddr,
    ) -> io::Result<SockRef> {
        self.stats.calls += 1;
        let now = self.now;
        if !self.udp_listened_at.contains(&bound) {
            self.violations.push(format!(
                "udp_reply_open at {bound}, where no listener was, at {now:?}"
            ));
            return Err(err(errno::EBADF));
        }
        if self.open_sockets() >= self.config.max_sockets {
            return Err(err(errno::EMFILE));
        }
        let local = self.source_from(bound, peer.ip());
        self.ops += 1;
        let s = self.new_sock();
        self.udp_socks.insert(
            s,
            UdpSock {
                local,
                dst: peer,
                rx: VecDeque::new(),
                readable: true,
                listener: false,
                ping_id: None,
            },
        );
        Ok(s)
    }

    fn udp_send_via(
        &mut self,
        listener: SockRef,
        to: SocketAddr,
        data: &[u8],
    ) -> io::Result<usize> {
        self.stats.calls += 1;
        let (now, rtt) = (self.now, self.config.latency * 2);
        let Some(bound) = self
            .udp_socks
            .get(&listener)
            .filter(|u| u.listener)
            .map(|u| u.local)
        else {
            self.violations.push(format!(
                "udp_send_via on non-listener {listener:?} at {now:?}"
            ));
            return Err(err(errno::EBADF));
        };
        let local = self.source_from(bound, to.ip());
        self.ops += 1;
        self.udp_log.push((local, to, data.to_vec()));
        if self.udp_echo.contains(&to) {
            if let Some(l) = self.udp_socks.get_mut(&listener) {
                l.rx.push_back((now + rtt, to, data.to_vec()));
            }
        }
        Ok(data.len())
    }

    fn relay_datagram(
        &mut self,
        listener: SockRef,
        src: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        self.stats.calls += 1;
        if !self.udp_socks.get(&listener).is_some_and(|u| u.listener) {
            let now = self.now;
            self.violations.push(format!(
                "relay_datagram on non-listener {listener:?} at {now:?}"
            ));
            return Err(err(errno::EBADF));
        }
        self.relayed_datagrams
            .push((src, target, datagram.to_vec()));
        Ok(())
    }
}

impl PingSockets for VirtualHost {
    fn ping_open(&mut self, bind: Bind<'_>, dst: IpAddr, id: u16) -> io::Result<(SockRef, u16)> {
        self.stats.calls += 1;
        if dst.is_unspecified() || dst.is_multicast() {
            return Err(err(errno::ENETUNREACH));
        }
        if self.open_sockets() >= self.config.max_sockets {
            return Err(err(errno::EMFILE));
        }
        self.ops += 1;
        let mut got = id;
        while self.ping_ids_taken.contains(&got) {
            got = got.wrapping_add(1000);
        }
        self.ping_ids_taken.insert(got);
        let src = bind.addr.unwrap_or_else(|| self.source_for(dst));
        let s = self.new_sock();
        self.udp_socks.insert(
            s,
            UdpSock {
                local: SocketAddr::new(src, got),
                dst: SocketAddr::new(dst, 0),
                rx: VecDeque::new(),
                readable: true,
                listener: false,
                ping_id: Some(got),
            },
        );
        Ok((s, got))
    }

    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize> {
        self.stats.calls += 1;
        let rtt = self.config.latency * 2;
        let now = self.now;
        let answers = |h: &VirtualHost, ip: IpAddr| h.ping_hosts.contains(&ip) || h.is_local(ip);
        let Some(u) = self.udp_socks.get(&s) else {
            self.violations
                .push(format!("ping_send on unknown socket {s:?} at {now:?}"));
            return Err(err(errno::EBADF));
        };
        let (dst, id) = (u.dst.ip(), u.ping_id.unwrap_or(0));
        if msg.len() < 8 {
            return Err(err(errno::EINVAL));
        }
        self.ops += 1;
        let mut m = msg.to_vec();
        m[4..6].copy_from_slice(&id.to_be_bytes());
        self.ping_log.push((dst, m.clone()));
        if answers(self, dst) {
            m[0] = if dst.is_ipv4() { 0 } else { 129 };
            if let Some(u) = self.udp_socks.get_mut(&s) {
                let from = u.dst;
                u.rx.push_back((now + rtt, from, m));
            }
        }
        Ok(msg.len())
    }

    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        self.stats.calls += 1;
        self.udp_recv(s, buf)
    }
}

/// The engine's forwarding listeners as the shim opens them: TCP ones noted (connections to
/// them are accepted), UDP ones as sockets; a socket another program holds is in use.
impl ForwardListeners for VirtualHost {
    fn open_listener(
        &mut self,
        direction: Direction,
        socket: &ListenSocket,
    ) -> Result<Option<SockRef>, ListenFailure> {
        let in_use = match direction {
            Direction::Inbound => {
                self.taken.contains(&(socket.proto, socket.addr))
                    || (socket.proto == ProtoKey::Tcp && self.tcp_forwarding.contains(&socket.addr))
                    || (socket.proto == ProtoKey::Udp
                        && self
                            .udp_socks
                            .values()
                            .any(|u| u.listener && u.local == socket.addr))
            }
            Direction::Outbound => self
                .ns_listening
                .iter()
                .any(|l| l.proto == socket.proto && l.addr == socket.addr),
        };
        if in_use {
            return Err(ListenFailure {
                in_use: true,
                reason: "Address already in use".into(),
            });
        }
        self.ops += 1;
        match (direction, socket.proto) {
            (Direction::Outbound, _) => {
                self.ns_listening.insert(socket.clone());
                Ok(None)
            }
            (Direction::Inbound, ProtoKey::Tcp) => {
                self.tcp_forwarding.insert(socket.addr);
                Ok(None)
            }
            (Direction::Inbound, ProtoKey::Udp) => Ok(Some(self.udp_listen(socket.addr))),
        }
    }

    fn close_listener(&mut self, direction: Direction, socket: &ListenSocket) -> Option<SockRef> {
        self.ops += 1;
        match (direction, socket.proto) {
            (Direction::Outbound, _) => {
                self.ns_listening.remove(socket);
                None
            }
            (Direction::Inbound, ProtoKey::Tcp) => {
                self.tcp_forwarding.remove(&socket.addr);
                None
            }
            (Direction::Inbound, ProtoKey::Udp) => self.udp_unlisten(socket.addr),
        }
    }

    fn datagram_sockets(&mut self) -> Option<&mut dyn DgramSockets> {
        Some(self)
    }
}
