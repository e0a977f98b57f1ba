//! The loopback bypass for UDP (pasta), both ways, without the tap device or the engine. `-U`:
//! datagrams to pasta's UDP sockets on the namespace's loopback go to the same (or mapped)
//! port on the host's loopback. `-u`: datagrams that a forwarding socket on the host received
//! from a loopback sender are handed over ([`DgramRelay::relay_into`]) and go to a socket made
//! inside the namespace. Either way the answers come back to the sender.
//!
//! Each (listener, sender) pair is a flow with a socket of its own on the far side, connected
//! to the target, so that the far server sees one peer per sender and its answers find their
//! way back (for `-u` the socket keeps the sender's port where it is free, as the C pasta
//! does). Flows close when idle and make room for new ones in a full table as the guest's UDP
//! flows do (`sans_io::flow::idle`: a short exchange after 10 s, anything else after
//! [`IDLE_TIMEOUT`]; an answered short exchange, or a flow idle for a second, gives its place
//! to a new sender). Datagrams move in batches:
//! `recvmmsg` on the receiving socket, then each run of equal size going to the same place as
//! one segmented send (see `socket_sys::udp_gso`), the rest with `sendmmsg`. A sender's own
//! runs (`UDP_SEGMENT`, a QUIC stack's) come whole to our sockets (`UDP_GRO`, see
//! `socket_sys::udp_gro`) and go on whole. Like the TCP splicer, which ports are relayed is the
//! caller's decision.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use sans_io::flow::idle::{FlowHandle, IdleFlow, IdleFlows, Way};
use sans_io::flow::SockRef;
use sans_io::time::Instant;

use crate::ns_agent::{io_in, InNetns};
use crate::ns_listeners::RelayListeners;
use crate::reactor::monotonic_now;
use crate::slots::Slots;
use crate::socket_sys::udp_gro::{
    datagrams_in, enable_gro, expect_gro_control, gro_segment, GroControl,
};
use crate::socket_sys::udp_gso::{send_datagrams_segmented, Segmentation};
use crate::socket_sys::{
    bind_addr, connect_to, dgram_socket, send_nonblocking, sockaddr_to_std, std_to_sockaddr,
    udp_bound_socket, udp_reply_socket, unmap, RawSockAddr,
};
use crate::tokens::{
    dgram_flow_token, dgram_token, is_dgram, relay_listener_base, RelayToken, INDEX_BITS,
    TOKEN_DGRAM_BASE,
};

/// A flow without traffic either way for this long is closed (as for the guest's UDP; a
/// short exchange sooner).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 32;
/// Receive rounds per readiness report, so one busy socket can't starve the others.
const ROUNDS: usize = 4;
/// A receive buffer: a datagram, or a run of them, is at most this large.
const MAX_DATAGRAM: usize = 65536;
/// Datagrams handed to one send call at most (a run of a sender's is up to 64).
const SEND_MAX: usize = 64;
/// Flows at most, by default.
pub const DEFAULT_MAX_FLOWS: usize = 4096;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DgramStats {
    pub flows_opened: u64,
    pub flows_expired: u64,
    /// Flows closed to make room for a new sender in a full table.
    pub flows_evicted: u64,
    /// Datagrams of new senders dropped: the table was full of active flows (also in
    /// `dropped`).
    pub table_full: u64,
    pub to_host: u64,
    pub to_namespace: u64,
    /// Datagrams dropped: no flow could be opened, or sending failed.
    pub dropped: u64,
    /// Runs of a flow's datagrams sent as one segmented send (UDP_SEGMENT).
    pub segmented_sends: u64,
    /// Runs of datagrams received whole (UDP_GRO).
    pub received_runs: u64,
    /// Flows from a host's forwarding socket that got a socket of their own there (see
    /// `OWN_SOCKET_AFTER`).
    pub own_host_sockets: u64,
}

/// Datagrams of a sender that the host's forwarding socket hands over before its flow gets
/// a socket of its own beside that one: a short exchange (a DNS client's A and AAAA queries
/// from one socket are two) needs none, and binding one to a port makes the kernel walk
/// every socket bound there.
const OWN_SOCKET_AFTER: u32 = 2;

#[derive(Debug)]
struct Flow {
    /// Connected to the target, on the far side.
    far: OwnedFd,
    origin: Origin,
    /// The sender, answered through the origin's socket.
    client: SocketAddr,
    /// Which datagram sizes `far` may send as one segmented send.
    segmentation: Segmentation,
    /// The same for the answers, sent from the origin's socket.
    back_segmentation: Segmentation,
    /// The sender's datagrams handed over by the host's forwarding socket.
    handed_over: u32,
}

/// Where a flow's datagrams came from, and so where its answers go out.
#[derive(Debug)]
enum Origin {
    /// One of our namespace listeners (`-U`), by index.
    Listener(usize),
    /// A forwarding socket on the host that handed the flow over (`-u`): the caller's key for
    /// it, and the socket the answers leave through, from the address and port the sender
    /// wrote to: a duplicate of the forwarding socket's descriptor at first, and once the
    /// sender sent more than [`OWN_SOCKET_AFTER`] datagrams one of our own bound beside the
    /// forwarding socket and connected to the sender, which the sender's next datagrams come
    /// to, so that we read them in batches and runs, not one by one through the caller.
    Host { key: u64, socket: OwnedFd },
}

/// The host's forwarding socket that hands a datagram over: the caller's key for it, its
/// descriptor, and where it is bound (its address, and interface if any).
#[derive(Debug, Clone, Copy)]
pub struct HostSocket<'a> {
    pub key: u64,
    pub fd: BorrowedFd<'a>,
    pub local: SocketAddr,
    pub iface: Option<&'a str>,
}

/// A flow's key: its origin and sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum OriginKey {
    Listener(usize),
    Host(u64),
}

impl Origin {
    fn key(&self) -> OriginKey {
        match self {
            Origin::Listener(i) => OriginKey::Listener(*i),
            Origin::Host { key, .. } => OriginKey::Host(*key),
        }
    }
}

/// What the idle policy knows of a flow: its origin and sender. Datagrams from the sender are
/// its requests, those from the target its answers (the ways' names are the engine's, whose
/// guest is our target's side for `-u` and our sender's for `-U`: only the difference counts).
struct Sender((OriginKey, SocketAddr));

const REQUEST: Way = Way::ToGuest;
const ANSWER: Way = Way::FromGuest;

impl IdleFlow for Sender {
    type Key = (OriginKey, SocketAddr);
    type Handle = FlowId;

    fn key(&self) -> Self::Key {
        self.0
    }
}

/// A flow by its slot in [`DgramRelay::flows`]: its descriptors are the relay's to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FlowId(usize);

impl FlowHandle for FlowId {
    fn own_socket(self) -> Option<SockRef> {
        None
    }
}

/// Receive buffers and message headers for one batch, allocated once.
struct Batch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    /// Each message's datagram size: its length, or less for a run.
    segments: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![0; BATCH * MAX_DATAGRAM],
            lens: [0; BATCH],
            segments: [0; BATCH],
            from: [None; BATCH],
        }
    }

    /// Message `i`: a datagram, or a run of them.
    fn message(&self, i: usize) -> &[u8] {
        &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + self.lens[i]]
    }

    /// How many of messages `range` are runs.
    fn runs(&self, range: std::ops::Range<usize>) -> u64 {
        range.filter(|&i| self.segments[i] < self.lens[i]).count() as u64
    }

    /// How many datagrams messages `range` hold.
    fn datagrams(&self, range: std::ops::Range<usize>) -> usize {
        range
            .map(|i| datagrams_in(self.lens[i], self.segments[i]))
            .sum()
    }

    /// Sends the datagrams of messages `range`, runs cut into theirs, in order, with `send`
    /// ([`SEND_MAX`] at most a call, which says how many went); returns how many went,
    /// stopping at the first call that sent short.
    fn send_datagrams(
        &self,
        range: std::ops::Range<usize>,
        mut send: impl FnMut(&[&[u8]]) -> usize,
    ) -> usize {
        let mut out: [&[u8]; SEND_MAX] = [&[]; SEND_MAX];
        let (mut n, mut sent) = (0, 0);
        for i in range {
            let message = self.message(i);
            let segment = self.segments[i].max(1);
            // An empty datagram is one too.
            let empty = message.is_empty().then_some(message);
            for piece in message.chunks(segment).chain(empty) {
                if n == SEND_MAX {
                    let went = send(&out);
                    sent += went;
                    if went < n {
                        return sent;
                    }
                    n = 0;
                }
                out[n] = piece;
                n += 1;
            }
        }
        if n > 0 {
            sent += send(&out[..n]);
        }
        sent
    }
}

/// Relays datagrams from listeners in the namespace to the host's loopback and back.
pub struct DgramRelay {
    /// Its listeners in the namespace, and the epoll instance it is on.
    ns: RelayListeners,
    flows: Slots<Flow>,
    /// Which flow a sender has, and when each is due to close or may give its place.
    idle: IdleFlows<Sender>,
    batch: Option<Box<Batch>>,
    stats: DgramStats,
}

impl std::fmt::Debug for DgramRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DgramRelay")
            .field("listeners", &self.ns.set.ports().count())
            .field("flows", &self.idle.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for DgramRelay {
    fn default() -> Self {
        DgramRelay::new(DEFAULT_MAX_FLOWS)
    }
}

impl DgramRelay {
    pub fn new(max_flows: usize) -> DgramRelay {
        DgramRelay {
            ns: RelayListeners::new(relay_listener_base(TOKEN_DGRAM_BASE), |a| {
                let fd = udp_bound_socket(a, None, false)?;
                enable_gro(fd.as_raw_fd());
                Ok(fd)
            }),
            flows: Slots::new(1 << INDEX_BITS),
            idle: IdleFlows::new(max_flows.min(1 << INDEX_BITS), IDLE_TIMEOUT),
            batch: None,
            stats: DgramStats::default(),
        }
    }

    pub fn stats(&self) -> &DgramStats {
        &self.stats
    }

    pub fn open_flows(&self) -> usize {
        self.idle.len()
    }

    pub fn owns_token(token: u64) -> bool {
        is_dgram(token)
    }

    /// Its listeners in the namespace (and attaching it to an epoll instance).
    pub fn listeners(&mut self) -> &mut RelayListeners {
        &mut self.ns
    }

    /// The namespace ports listened on.
    pub fn listening_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ns.ports()
    }

    /// Stops relaying `port`; its flows close too (their answers would have nowhere to go).
    pub fn unlisten(&mut self, port: u16) {
        for i in self.ns.set.remove_port(port, self.ns.epoll.as_ref()) {
            self.close_from(OriginKey::Listener(i));
        }
    }

    /// Stops listening at `addr` only, as [`DgramRelay::unlisten`] does for a port.
    pub fn unlisten_addr(&mut self, addr: SocketAddr) {
        for i in self.ns.set.remove_addr(addr, self.ns.epoll.as_ref()) {
            self.close_from(OriginKey::Listener(i));
        }
    }

    /// A forwarding socket on the host that handed flows over is gone: so are they.
    pub fn forget_host_socket(&mut self, key: u64) {
        self.close_from(OriginKey::Host(key));
    }

    /// Closes every flow from `origin`.
    fn close_from(&mut self, origin: OriginKey) {
        let gone: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| f.origin.key() == origin)
            .map(|(i, _)| i)
            .collect();
        for f in gone {
            self.close(f);
        }
    }

    /// Relays `datagram`, which the forwarding socket `socket` on the host (its `key` names it
    /// for [`DgramRelay::forget_host_socket`]) received from the loopback sender `client`, to
    /// `target` inside the namespace, through the flow of that sender (opened if new: a socket
    /// made in the namespace, bound to the sender's port where it is free; and, once the
    /// exchange goes on, one on the host for the sender's next datagrams, see
    /// `Origin::Host`).
    pub fn relay_into(
        &mut self,
        netns: &impl InNetns,
        socket: HostSocket<'_>,
        client: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        let key = socket.key;
        let now = monotonic_now();
        let f = match self.idle.find(&(OriginKey::Host(key), client)) {
            Some(FlowId(f)) => f,
            None => {
                if !self.make_room(now) {
                    self.stats.dropped += 1;
                    self.stats.table_full += 1;
                    return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
                }
                let far = io_in(netns, move || ns_flow_socket(client.port(), target));
                let far = match far {
                    Ok(far) => far,
                    Err(e) => {
                        self.stats.dropped += 1;
                        return Err(e);
                    }
                };
                let origin = Origin::Host {
                    key,
                    socket: socket.fd.try_clone_to_owned()?,
                };
                match self.open_flow(far, origin, client, now) {
                    Some(f) => f,
                    None => {
                        self.stats.dropped += 1;
                        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
                    }
                }
            }
        };
        let Some(flow) = self.flows.at_mut(f) else {
            self.stats.dropped += 1;
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        flow.handed_over = flow.handed_over.saturating_add(1);
        let own_socket_due = flow.handed_over == OWN_SOCKET_AFTER + 1;
        if let Err(e) = send_nonblocking(flow.far.as_raw_fd(), datagram) {
            self.stats.dropped += 1;
            return Err(e);
        }
        self.touch(f, now, REQUEST, 1);
        self.stats.to_namespace += 1;
        if own_socket_due {
            self.own_host_socket(f, socket, client);
        }
        Ok(())
    }

    /// Gives flow `f`, from forwarding socket `socket`, a socket of its own on the host,
    /// bound beside that one and connected to the sender, for the sender's next datagrams
    /// and the answers. One that can't be opened leaves the flow on the forwarding socket.
    fn own_host_socket(&mut self, f: usize, socket: HostSocket<'_>, client: SocketAddr) {
        let Ok(own) = udp_reply_socket(socket.local, socket.iface, client) else {
            return;
        };
        enable_gro(own.as_raw_fd());
        if let (Some(epoll), Some(gen)) = (&self.ns.epoll, self.flows.gen(f)) {
            let token = dgram_flow_token(f, gen, 1);
            if epoll
                .add(&own, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_err()
            {
                return;
            }
        }
        if let Some(flow) = self.flows.at_mut(f) {
            flow.origin = Origin::Host {
                key: socket.key,
                socket: own,
            };
            self.stats.own_host_sockets += 1;
        }
    }

    /// When idle flows are next due for a look.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.idle.poll_timeout()
    }

    /// Closes the flows idle at `now` (see the module's documentation).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut idle = Vec::new();
        self.idle.expire(now, |FlowId(f), _| idle.push(f));
        for f in idle {
            self.stats.flows_expired += 1;
            self.flows.remove(f);
        }
    }

    /// Handles an epoll event for one of our tokens.
    pub fn ready(&mut self, token: u64, _flags: EpollFlags) {
        let mut batch = self.batch.take().unwrap_or_else(|| Box::new(Batch::new()));
        match dgram_token(token) {
            RelayToken::Listener(i) => self.relay_to_host(i, &mut batch),
            RelayToken::Item { index, gen, side } => {
                if self.flows.get_mut(index, gen).is_some() {
                    if side == 0 {
                        self.relay_back(index, &mut batch);
                    } else {
                        self.relay_from_host(index, &mut batch);
                    }
                }
            }
        }
        self.batch = Some(batch);
    }

    /// Datagrams from senders in the namespace, each to its flow's host socket.
    fn relay_to_host(&mut self, listener: usize, batch: &mut Batch) {
        let Some(l) = self.ns.set.get(listener) else {
            return;
        };
        let lfd = l.fd.as_raw_fd();
        for _ in 0..ROUNDS {
            let n = recv_batch(lfd, batch, true);
            self.stats.received_runs += batch.runs(0..n);
            let now = monotonic_now();
            // Runs of datagrams for the same flow go out with one sendmmsg.
            let mut i = 0;
            while i < n {
                let Some(client) = batch.from[i] else {
                    i += 1;
                    continue;
                };
                let mut end = i + 1;
                while end < n && batch.from[end] == Some(client) {
                    end += 1;
                }
                let datagrams = batch.datagrams(i..end);
                let mut full = false;
                let f = self.flow_for(listener, client, now, &mut full);
                let sent = match f.and_then(|f| self.flows.at_mut(f)) {
                    // Runs of equal size as one segmented send each.
                    Some(flow) => batch.send_datagrams(i..end, |run| {
                        send_datagrams_segmented(
                            flow.far.as_raw_fd(),
                            run,
                            None,
                            &mut flow.segmentation,
                            &mut self.stats.segmented_sends,
                        )
                        .unwrap_or(0)
                    }),
                    None => 0,
                };
                self.stats.to_host += sent as u64;
                self.stats.dropped += (datagrams - sent) as u64;
                if full {
                    self.stats.table_full += datagrams as u64;
                }
                if let Some(f) = f {
                    self.touch(f, now, REQUEST, sent as u64);
                }
                i = end;
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// The sender's datagrams that came to the flow's own socket on the host (see
    /// [`Origin::Host`]), into the namespace.
    fn relay_from_host(&mut self, index: usize, batch: &mut Batch) {
        let Some(flow) = self.flows.at_mut(index) else {
            return;
        };
        let Origin::Host { socket, .. } = &flow.origin else {
            return;
        };
        let (from, far) = (socket.as_raw_fd(), flow.far.as_raw_fd());
        let sent = pass_on(
            &mut self.stats,
            batch,
            from,
            (far, None),
            &mut flow.segmentation,
        );
        self.stats.to_namespace += sent;
        self.touch(index, monotonic_now(), REQUEST, sent);
    }

    /// Answers from the far server, back to the flow's sender.
    fn relay_back(&mut self, index: usize, batch: &mut Batch) {
        let Some(flow) = self.flows.at_mut(index) else {
            return;
        };
        let origin_fd = match &flow.origin {
            Origin::Listener(i) => match self.ns.set.get(*i) {
                Some(l) => l.fd.as_raw_fd(),
                None => return,
            },
            Origin::Host { socket, .. } => socket.as_raw_fd(),
        };
        let (far, to) = (flow.far.as_raw_fd(), std_to_sockaddr(&flow.client));
        let seg = &mut flow.back_segmentation;
        let sent = pass_on(&mut self.stats, batch, far, (origin_fd, Some(&to)), seg);
        if matches!(flow.origin, Origin::Host { .. }) {
            self.stats.to_host += sent;
        } else {
            self.stats.to_namespace += sent;
        }
        self.touch(index, monotonic_now(), ANSWER, sent);
    }

    /// The flow of `client` on `listener`, opened if new; `None` if none could be, `full`
    /// set when that was for want of room.
    fn flow_for(
        &mut self,
        listener: usize,
        client: SocketAddr,
        now: Instant,
        full: &mut bool,
    ) -> Option<usize> {
        if let Some(FlowId(f)) = self.idle.find(&(OriginKey::Listener(listener), client)) {
            return Some(f);
        }
        if !self.make_room(now) {
            *full = true;
            return None;
        }
        let l = self.ns.set.get(listener)?;
        // The host's loopback, whichever namespace address the listener has.
        let target = match l.addr {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), l.to),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), l.to),
        };
        let far = connected_socket(target).ok()?;
        self.open_flow(far, Origin::Listener(listener), client, now)
    }

    /// Registers a new flow whose far socket is `far`.
    fn open_flow(
        &mut self,
        far: OwnedFd,
        origin: Origin,
        client: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        debug_assert!(!self.idle.is_full(), "room is made first");
        let key = (origin.key(), client);
        let flow = Flow {
            far,
            origin,
            client,
            segmentation: Segmentation::default(),
            back_segmentation: Segmentation::default(),
            handed_over: 0,
        };
        let (index, gen) = self.flows.insert(flow).ok()?;
        if let Some(epoll) = &self.ns.epoll {
            let far = &self.flows.at(index).expect("just inserted").far;
            let token = dgram_flow_token(index, gen, 0);
            if epoll
                .add(far, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .is_err()
            {
                self.flows.remove(index);
                return None;
            }
        }
        self.idle.insert(FlowId(index), Sender(key), now, REQUEST);
        self.stats.flows_opened += 1;
        Some(index)
    }

    /// Room for one more flow: in a full table, the flow the idle policy names gives its
    /// place; false when every flow is active (the new sender's datagrams are dropped).
    fn make_room(&mut self, now: Instant) -> bool {
        if !self.idle.is_full() {
            return true;
        }
        let Some(FlowId(victim)) = self.idle.eviction_candidate(now) else {
            return false;
        };
        self.close(victim);
        self.stats.flows_evicted += 1;
        true
    }

    /// Records `datagrams` going `way` on flow `index` at `now`.
    fn touch(&mut self, index: usize, now: Instant, way: Way, datagrams: u64) {
        let n = datagrams.min(u64::from(u32::MAX)) as u32;
        self.idle.touch(FlowId(index), now, way, n);
    }

    fn close(&mut self, index: usize) {
        self.flows.remove(index);
        self.idle.remove(FlowId(index));
    }
}

/// Passes what socket `from` holds on (a few batches at most, see [`ROUNDS`]) to `to` (a
/// socket, and the destination unless it is connected), runs of equal size as one segmented
/// send each; counts the runs received, the segmented sends and what was dropped in `stats`,
/// and returns how many datagrams went.
fn pass_on(
    stats: &mut DgramStats,
    batch: &mut Batch,
    from: RawFd,
    (to_fd, to): (RawFd, Option<&RawSockAddr>),
    seg: &mut Segmentation,
) -> u64 {
    let mut sent = 0;
    for _ in 0..ROUNDS {
        let n = recv_batch(from, batch, false);
        stats.received_runs += batch.runs(0..n);
        let went = batch.send_datagrams(0..n, |run| {
            send_datagrams_segmented(to_fd, run, to, seg, &mut stats.segmented_sends).unwrap_or(0)
        });
        stats.dropped += (batch.datagrams(0..n) - went) as u64;
        sent += went as u64;
        if n < BATCH {
            break;
        }
    }
    sent
}

/// A UDP socket on the host connected to `target`.
fn connected_socket(target: SocketAddr) -> io::Result<OwnedFd> {
    let fd = dgram_socket(target.ip(), libc::IPPROTO_UDP)?;
    connect_to(fd.as_raw_fd(), target)?;
    enable_gro(fd.as_raw_fd());
    Ok(fd)
}

/// A UDP socket in the namespace (call it there) bound to the sender's `port` where that is
/// free, else to any, and connected to `target`.
fn ns_flow_socket(port: u16, target: SocketAddr) -> io::Result<OwnedFd> {
    let fd = dgram_socket(target.ip(), libc::IPPROTO_UDP)?;
    let any = if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    if bind_addr(fd.as_raw_fd(), SocketAddr::new(any, port)).is_err() {
        bind_addr(fd.as_raw_fd(), SocketAddr::new(any, 0))?;
    }
    connect_to(fd.as_raw_fd(), target)?;
    enable_gro(fd.as_raw_fd());
    Ok(fd)
}

/// Receives up to [`BATCH`] messages (datagrams, or runs of them) into `batch` (with their
/// sources if `named`); returns how many.
fn recv_batch(fd: RawFd, batch: &mut Batch, named: bool) -> usize {
    // SAFETY: plain old data; zero is a valid (empty) value.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut names = [MaybeUninit::<libc::sockaddr_storage>::zeroed(); BATCH];
    let mut controls: [GroControl; BATCH] = [[0; 4]; BATCH];
    for i in 0..BATCH {
        iov[i] = libc::iovec {
            iov_base: batch.bufs[i * MAX_DATAGRAM..].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        };
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        expect_gro_control(&mut msgs[i].msg_hdr, &mut controls[i]);
        if named {
            msgs[i].msg_hdr.msg_name = names[i].as_mut_ptr().cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
    }
    // SAFETY: every message points at its own buffer, name and control storage, which outlive
    // the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = n.max(0) as usize;
    for i in 0..n {
        let len = msgs[i].msg_len as usize;
        batch.lens[i] = len;
        // SAFETY: the kernel filled the control buffer up to the length it set.
        batch.segments[i] = unsafe { gro_segment(&msgs[i].msg_hdr, len) }.unwrap_or(len);
        batch.from[i] = if named {
            // SAFETY: the kernel wrote msg_namelen bytes of address.
            sockaddr_to_std(
                unsafe { names[i].assume_init_ref() },
                msgs[i].msg_hdr.msg_namelen,
            )
            .map(unmap)
        } else {
            None
        };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns_listeners::NsAddrs;
    use crate::test_netns::{can_make_namespaces, epoll_pair, spawn_in, with_host_and_namespace};
    use sans_io::flow::idle::ONE_SHOT_TIMEOUT;
    use std::os::fd::AsFd;

    const LO4: NsAddrs = NsAddrs::Loopback {
        v4: true,
        v6: false,
    };
    use std::time::Instant as StdInstant;

    /// Hands the relay what `epoll` reports, then calls `step`, until `step` says it is done
    /// (by `deadline`, else fails saying `what`).
    fn drive(
        relay: &mut DgramRelay,
        epoll: &nix::sys::epoll::Epoll,
        deadline: StdInstant,
        what: &str,
        mut step: impl FnMut(&DgramRelay) -> bool,
    ) {
        let mut events = [EpollEvent::empty(); 16];
        while !step(relay) {
            assert!(StdInstant::now() < deadline, "{what} timed out: {relay:?}");
            let n = epoll.wait(&mut events, 20u16).unwrap();
            for ev in &events[..n] {
                relay.ready(ev.data(), ev.events());
            }
        }
    }

    /// A server on the host's loopback (non-blocking), and a relay on an epoll instance of its
    /// own whose listener on the namespace's port `port` leads to it.
    fn host_server_and_relay(
        ns: &OwnedFd,
        port: u16,
    ) -> (std::net::UdpSocket, nix::sys::epoll::Epoll, DgramRelay) {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let to = server.local_addr().unwrap().port();
        let (epoll, handle) = epoll_pair();
        let mut relay = DgramRelay::new(8);
        relay.listeners().attach(handle).unwrap();
        let (n, failed) = relay.listeners().listen_in(ns, port, to, LO4).unwrap();
        assert_eq!((n, failed.len()), (1, 0));
        (server, epoll, relay)
    }

    #[test]
    fn relays_datagrams_both_ways_per_sender_and_expires_idle_flows() {
        if !can_make_namespaces("relay") {
            return;
        }
        with_host_and_namespace(|ns| {
            // The host's server: echoes what it gets.
            let (server, epoll, mut relay) = host_server_and_relay(&ns, 5300);

            // Two senders in the namespace, 40 datagrams each, one after the other, all queued
            // before the relay reads: each sender's are a run (one segmented send).
            let (sent_tx, sent_rx) = std::sync::mpsc::channel();
            let clients = spawn_in(&ns, move || {
                let socks: Vec<_> = (0..2)
                    .map(|_| {
                        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                        s.connect("127.0.0.1:5300").unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        s
                    })
                    .collect();
                for s in &socks {
                    for i in 0..40u8 {
                        s.send(&[i; 100]).unwrap();
                    }
                }
                sent_tx.send(()).unwrap();
                let mut got = vec![Vec::new(), Vec::new()];
                for (k, s) in socks.iter().enumerate() {
                    let mut buf = [0u8; 200];
                    for _ in 0..40 {
                        let n = s.recv(&mut buf).unwrap();
                        got[k].push(buf[..n].to_vec());
                    }
                }
                got
            });
            sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let deadline = StdInstant::now() + Duration::from_secs(10);
            let mut echoed = 0;
            let mut peers = std::collections::BTreeSet::new();
            drive(&mut relay, &epoll, deadline, "relaying", |_| {
                let mut buf = [0u8; 200];
                while let Ok((n, peer)) = server.recv_from(&mut buf) {
                    peers.insert(peer);
                    server.send_to(&buf[..n], peer).unwrap();
                    echoed += 1;
                }
                echoed >= 80
            });
            // The answers go back through the relay.
            drive(&mut relay, &epoll, deadline, "answers", |_| {
                clients.is_finished()
            });
            let got = clients.join().unwrap();
            let want: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100]).collect();
            for (k, got) in got.iter().enumerate() {
                assert_eq!(*got, want, "sender {k}: in order, whole");
            }
            assert_eq!(peers.len(), 2, "one host socket per sender");
            assert_eq!(relay.open_flows(), 2);
            assert_eq!(relay.stats().to_host, 80);
            assert!(relay.stats().segmented_sends >= 2, "{:?}", relay.stats());
            assert_eq!(relay.stats().to_namespace, 80);
            // Idle flows go; the listener stays.
            let later = monotonic_now() + IDLE_TIMEOUT + Duration::from_secs(1);
            assert!(relay.poll_timeout().is_some_and(|t| t <= later));
            relay.handle_timeout(later);
            assert_eq!(relay.open_flows(), 0);
            assert_eq!(relay.stats().flows_expired, 2);
            assert_eq!(relay.poll_timeout(), None);
            assert_eq!(relay.listening_ports().collect::<Vec<_>>(), [5300]);
        });
    }

    /// What the engine does with a loopback sender's datagram on a forwarding socket: the
    /// next datagram on `fwd` (known to the relay as `key`), handed over for `target`.
    fn hand_over(
        relay: &mut DgramRelay,
        ns: &OwnedFd,
        fwd: &std::net::UdpSocket,
        key: u64,
        target: SocketAddr,
    ) {
        let mut buf = [0u8; 100];
        let (n, from) = fwd.recv_from(&mut buf).unwrap();
        let socket = HostSocket {
            key,
            fd: fwd.as_fd(),
            local: fwd.local_addr().unwrap(),
            iface: None,
        };
        relay
            .relay_into(ns, socket, from, target, &buf[..n])
            .unwrap();
    }

    /// A server on the loopback of namespace `ns` that echoes `count` datagrams and then says
    /// which peers sent them; its address.
    fn echo_server_in(
        ns: &OwnedFd,
        count: usize,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<SocketAddr>>) {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let server = spawn_in(ns, move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            port_tx.send(s.local_addr().unwrap().port()).unwrap();
            let mut buf = [0u8; 100];
            (0..count)
                .map(|_| {
                    let (n, peer) = s.recv_from(&mut buf).unwrap();
                    s.send_to(&buf[..n], peer).unwrap();
                    peer
                })
                .collect()
        });
        let port = port_rx.recv().unwrap();
        (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            server,
        )
    }

    /// One `send` of `data` in datagrams of `segment` bytes (UDP_SEGMENT) on connected `s`.
    fn send_run(s: &std::net::UdpSocket, data: &[u8], segment: u16) {
        let set = |size: libc::c_int| {
            // SAFETY: plain setsockopt with an int (UDP_SEGMENT).
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_UDP,
                    103,
                    (&size as *const libc::c_int).cast(),
                    4,
                )
            };
            assert_eq!(r, 0);
        };
        set(segment.into());
        assert_eq!(s.send(data).unwrap(), data.len());
        set(0);
    }

    /// A sender's runs (UDP_SEGMENT) reach the relay whole and go on whole (a segmented send
    /// each), both ways: the far end reads every datagram, in order, each its own size.
    #[test]
    fn runs_cross_the_relay_whole_both_ways() {
        if !can_make_namespaces("relay") {
            return;
        }
        with_host_and_namespace(|ns| {
            let (server, epoll, mut relay) = host_server_and_relay(&ns, 5301);

            // Two runs of 25 (the last of each shorter) and a datagram alone, from inside.
            let out: Vec<u8> = (0..2450u32).map(|i| (i % 253) as u8).collect();
            let mut want_out: Vec<Vec<u8>> = Vec::new();
            for run in out.chunks(1225) {
                want_out.extend(run.chunks(50).map(<[u8]>::to_vec));
            }
            want_out.push(b"alone".to_vec());
            // A run of 30 back, the last shorter.
            let back: Vec<u8> = (0..2950u32).map(|i| (i % 241) as u8).collect();
            let want_back: Vec<Vec<u8>> = back.chunks(100).map(<[u8]>::to_vec).collect();
            let n_back = want_back.len();
            let client = spawn_in(&ns, move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect("127.0.0.1:5301").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                for run in out.chunks(1225) {
                    send_run(&s, run, 50);
                }
                s.send(b"alone").unwrap();
                let mut buf = [0u8; 4096];
                (0..n_back)
                    .map(|_| {
                        let n = s.recv(&mut buf).unwrap();
                        buf[..n].to_vec()
                    })
                    .collect::<Vec<_>>()
            });
            let deadline = StdInstant::now() + Duration::from_secs(10);
            let mut got_out = Vec::new();
            let mut buf = [0u8; 4096];
            drive(&mut relay, &epoll, deadline, "relaying", |_| {
                while let Ok((n, peer)) = server.recv_from(&mut buf) {
                    got_out.push(buf[..n].to_vec());
                    if got_out.len() == want_out.len() {
                        server.connect(peer).unwrap();
                    }
                }
                got_out.len() >= want_out.len()
            });
            assert_eq!(got_out, want_out);
            assert_eq!(relay.stats().to_host, want_out.len() as u64);
            assert!(relay.stats().segmented_sends >= 2, "{:?}", relay.stats());
            let before = relay.stats().segmented_sends;
            send_run(&server, &back, 100);
            drive(&mut relay, &epoll, deadline, "answers", |_| {
                client.is_finished()
            });
            assert_eq!(client.join().unwrap(), want_back);
            assert_eq!(relay.stats().to_namespace, n_back as u64);
            assert_eq!(
                relay.stats().segmented_sends,
                before + 1,
                "{:?}",
                relay.stats()
            );
            assert_eq!(relay.stats().received_runs, 3, "{:?}", relay.stats());
            assert_eq!(relay.stats().dropped, 0);
        });
    }

    /// A forwarding socket that shares its port, as ours do: its first datagrams are handed
    /// over (a short exchange needs no socket of its own), then the flow gets its own socket
    /// beside it, and the sender's next datagrams (a run here) come to that, whole, and go
    /// into the namespace as one segmented send; the answers leave from the address the
    /// sender wrote to.
    #[test]
    fn a_senders_next_datagrams_come_to_the_flows_own_socket() {
        if !can_make_namespaces("relay") {
            return;
        }
        with_host_and_namespace(|ns| {
            let run: Vec<u8> = (0..2000u32).map(|i| (i % 249) as u8).collect();
            let handed: [&[u8]; 3] = [b"first", b"second", b"third"];
            let mut want: Vec<Vec<u8>> = handed.iter().map(|d| d.to_vec()).collect();
            want.extend(run.chunks(100).map(<[u8]>::to_vec));
            let n_want = want.len();
            // The namespace's server: collects, then answers the last.
            let (port_tx, port_rx) = std::sync::mpsc::channel();
            let server = spawn_in(&ns, move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                port_tx.send(s.local_addr().unwrap().port()).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let mut peer = None;
                while got.len() < n_want {
                    let (n, from) = s.recv_from(&mut buf).unwrap();
                    got.push(buf[..n].to_vec());
                    peer = Some(from);
                }
                s.send_to(b"answer", peer.unwrap()).unwrap();
                got
            });
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port_rx.recv().unwrap());

            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
            let fwd = std::net::UdpSocket::from(udp_bound_socket(local, None, false).unwrap());
            fwd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let local = fwd.local_addr().unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sender
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            sender.connect(local).unwrap();

            let (epoll, handle) = epoll_pair();
            let mut relay = DgramRelay::new(8);
            relay.listeners().attach(handle).unwrap();
            let mut buf = [0u8; 100];
            let deadline = StdInstant::now() + Duration::from_secs(10);
            for (i, datagram) in handed.iter().enumerate() {
                assert_eq!(relay.stats().own_host_sockets, 0, "before datagram {i}");
                sender.send(datagram).unwrap();
                hand_over(&mut relay, &ns, &fwd, 9, target);
            }
            assert_eq!(relay.stats().own_host_sockets, 1);
            send_run(&sender, &run, 100);
            drive(&mut relay, &epoll, deadline, "relaying", |_| {
                server.is_finished()
            });
            assert_eq!(server.join().unwrap(), want);
            fwd.set_nonblocking(true).unwrap();
            assert!(
                fwd.recv_from(&mut buf).is_err(),
                "nothing more for the forwarding socket"
            );
            assert_eq!(relay.stats().received_runs, 1, "{:?}", relay.stats());
            assert_eq!(relay.stats().to_namespace, n_want as u64);
            assert!(relay.stats().segmented_sends >= 1, "{:?}", relay.stats());
            drive(&mut relay, &epoll, deadline, "relaying", |r| {
                r.stats().to_host >= 1
            });
            // The sender is connected to the forwarding socket's address: only what comes from
            // there reaches it.
            let n = sender.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"answer");
            relay.forget_host_socket(9);
            assert_eq!(relay.open_flows(), 0);
        });
    }

    /// A full table makes room as the guest's UDP flows do: a new sender takes the place of
    /// an answered short exchange (the least recently used), and short exchanges close after
    /// the short idle time, not the long one.
    #[test]
    fn a_full_table_gives_an_answered_exchanges_place_to_a_new_sender() {
        if !can_make_namespaces("relay") {
            return;
        }
        with_host_and_namespace(|ns| {
            let (target, server) = echo_server_in(&ns, 3);
            let fwd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let (epoll, handle) = epoll_pair();
            let mut relay = DgramRelay::new(2);
            relay.listeners().attach(handle).unwrap();
            let deadline = StdInstant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 100];
            for (k, msg) in [&b"first"[..], b"second", b"third"].into_iter().enumerate() {
                let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sender
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                sender.connect(fwd.local_addr().unwrap()).unwrap();
                sender.send(msg).unwrap();
                hand_over(&mut relay, &ns, &fwd, 5, target);
                drive(&mut relay, &epoll, deadline, "answering", |r| {
                    r.stats().to_host > k as u64
                });
                let n = sender.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], msg);
            }
            server.join().unwrap();
            let stats = relay.stats();
            assert_eq!(
                (relay.open_flows(), stats.flows_opened, stats.flows_evicted),
                (2, 3, 1),
                "{stats:?}"
            );
            let soon = monotonic_now() + ONE_SHOT_TIMEOUT + Duration::from_secs(1);
            assert!(relay.poll_timeout().is_some_and(|t| t <= soon));
            relay.handle_timeout(soon);
            assert_eq!((relay.open_flows(), relay.stats().flows_expired), (0, 2));
        });
    }

    #[test]
    fn hands_host_datagrams_over_into_the_namespace_keeping_the_senders_port() {
        // The forwarding socket here doesn't share its port (no SO_REUSEADDR): the flow
        // answers through a duplicate of it, and every datagram comes handed over.
        if !can_make_namespaces("relay") {
            return;
        }
        with_host_and_namespace(|ns| {
            let (target, server) = echo_server_in(&ns, 2);

            // The host's forwarding socket and a sender on the host's loopback.
            let fwd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sender
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            sender.connect(fwd.local_addr().unwrap()).unwrap();
            let sender_port = sender.local_addr().unwrap().port();

            let (epoll, handle) = epoll_pair();
            let mut relay = DgramRelay::new(8);
            relay.listeners().attach(handle).unwrap();
            let mut buf = [0u8; 100];
            for msg in [&b"one"[..], b"two"] {
                sender.send(msg).unwrap();
                hand_over(&mut relay, &ns, &fwd, 7, target);
            }
            let deadline = StdInstant::now() + Duration::from_secs(10);
            drive(&mut relay, &epoll, deadline, "relaying", |r| {
                r.stats().to_host >= 2
            });
            // The answers come from the forwarding socket's address, to the sender.
            for want in [&b"one"[..], b"two"] {
                let n = sender.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], want);
            }
            let peers = server.join().unwrap();
            assert_eq!(peers.len(), 2);
            assert!(peers.iter().all(|p| p.port() == sender_port), "{peers:?}");
            assert_eq!(relay.open_flows(), 1, "one flow per sender");
            assert_eq!(relay.stats().to_namespace, 2);
            relay.forget_host_socket(7);
            assert_eq!(relay.open_flows(), 0);
        });
    }
}
