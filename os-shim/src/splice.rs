//! The loopback bypass for TCP (pasta), both ways. `-T`: connections to pasta's listeners on
//! the namespace's loopback go to the same (or mapped) port on the host's loopback. `-t`:
//! connections that the forwarding listeners on the host accepted from a loopback peer are
//! handed over ([`Splicer::relay_into`]) and go to a socket made inside the namespace. Neither
//! passes through the tap device and the guest-facing TCP translation. Both ends are ordinary kernel
//! sockets, so the bytes move between them with `splice(2)` through a pipe per direction:
//! no copy through our memory, and no buffering of ours beyond the pipes.
//!
//! Everything is edge-triggered: on any event for a pair, [`Splicer`] moves what it can both
//! ways until the kernel says "not now" (`EAGAIN`), which is also why no event can be missed.
//! The end of the stream one way becomes a `shutdown(SHUT_WR)` on the other socket once the
//! pipe is drained; a pair closes when both ways are done. An error or a reset on either side
//! resets the other (close with a zero linger). A refused connect resets the accepted socket.
//!
//! Which ports are listened on, which connections are handed over and where they lead is the
//! caller's decision (the `-T` spec, `auto`'s scan of the host's listening sockets, the core's
//! `fwd::nat::local_bypass`); this module only relays.
//!
//! Out of descriptors, a listener is put aside as `crate::sockets` does with its own (see
//! `crate::listeners`): connections wait in the backlog until a pair closes or [`ACCEPT_PAUSE`] passes,
//! instead of a level-triggered listener spinning the loop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::epoll::{EpollEvent, EpollFlags};

use crate::listeners::ACCEPT_PAUSE;
use crate::ns_agent::{io_in, InNetns};
use crate::ns_listeners::RelayListeners;
use crate::reactor::monotonic_now;
use crate::slots::Slots;
use crate::socket_sys::{
    connect_to, is_out_of_descriptors, listen_socket, reset_on_close, setsockopt_int, so_error,
    stream_socket,
};
use crate::tokens::{
    is_splice, relay_listener_base, splice_pair_token, splice_token, RelayToken, INDEX_BITS,
    TOKEN_SPLICE_BASE,
};
use sans_io::time::Instant;

/// Connections accepted per listener wake-up.
const ACCEPT_BATCH: usize = 64;
/// Pipe size asked for (the kernel's `pipe-max-size` caps what unprivileged users get).
const PIPE_SIZE: i32 = 1 << 20;
/// Relayed connections at most, by default.
pub const DEFAULT_MAX_PAIRS: usize = 4096;

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpliceStats {
    pub accepted: u64,
    /// Connects to the other side that failed (the client got a reset).
    pub refused: u64,
    /// Connections refused because too many are open.
    pub table_full: u64,
    pub resets: u64,
    pub bytes: u64,
    pub closed: u64,
    /// Accepts or relays that failed for want of descriptors (the listener is put aside).
    pub fd_exhausted: u64,
    /// Connections from the host's loopback relayed into the namespace (`-t`), as opposed to
    /// the ones our namespace listeners accepted (`-T`).
    pub inbound: u64,
}

/// One relayed connection: side 0 accepted (in the namespace for `-T`, on the host for `-t`),
/// side 1 the socket we connected on the other side.
#[derive(Debug)]
struct Pair {
    socks: [OwnedFd; 2],
    connected: bool,
    /// Direction `d` carries what side `d` reads to side `1 - d`: (read end, write end).
    pipes: [(OwnedFd, OwnedFd); 2],
    /// Bytes in each direction's pipe.
    queued: [usize; 2],
    cap: usize,
    /// Side `d` reached the end of its stream.
    eof: [bool; 2],
    /// The end of direction `d` was passed on (shutdown of side `1 - d`'s sending half).
    shut: [bool; 2],
}

/// Relays connections from listeners in the namespace to the host's loopback, and connections
/// handed over from the host into the namespace.
#[derive(Debug)]
pub struct Splicer {
    /// Its listeners in the namespace, and the epoll instance it is on.
    ns: RelayListeners,
    pairs: Slots<Pair>,
    open: usize,
    max_pairs: usize,
    stats: SpliceStats,
}

impl Default for Splicer {
    fn default() -> Self {
        Splicer::new(DEFAULT_MAX_PAIRS)
    }
}

enum Outcome {
    Open,
    Done,
    Reset,
}

impl Splicer {
    pub fn new(max_pairs: usize) -> Splicer {
        Splicer {
            ns: RelayListeners::new(relay_listener_base(TOKEN_SPLICE_BASE), |a| {
                listen_socket(a, None, false)
            }),
            pairs: Slots::new(1 << INDEX_BITS),
            open: 0,
            max_pairs,
            stats: SpliceStats::default(),
        }
    }

    pub fn stats(&self) -> &SpliceStats {
        &self.stats
    }

    /// Relayed connections open now.
    pub fn open_pairs(&self) -> usize {
        self.open
    }

    pub fn owns_token(token: u64) -> bool {
        is_splice(token)
    }

    /// Its listeners in the namespace (and attaching it to an epoll instance).
    pub fn listeners(&mut self) -> &mut RelayListeners {
        &mut self.ns
    }

    /// The namespace ports listened on.
    pub fn listening_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ns.ports()
    }

    /// When a listener put aside for want of descriptors is due to be watched again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ns.set.next_resume()
    }

    /// Watches again the listeners whose pause is over at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ns.set.resume(Some(now), self.ns.epoll.as_ref());
    }

    /// Descriptors were freed elsewhere: listeners put aside may accept again.
    pub fn descriptors_freed(&mut self) {
        self.ns.set.resume(None, self.ns.epoll.as_ref());
    }

    /// Out of descriptors: counts it and puts `listener` aside for a while.
    fn out_of_descriptors(&mut self, listener: usize, e: &io::Error) {
        self.stats.fd_exhausted += 1;
        let until = monotonic_now() + ACCEPT_PAUSE;
        if self.ns.set.pause(listener, until, self.ns.epoll.as_ref()) {
            log::debug!("cannot relay connections for now: {e}");
        }
    }

    /// Stops listening on `port` (connections being relayed carry on).
    pub fn unlisten(&mut self, port: u16) {
        self.ns.set.remove_port(port, self.ns.epoll.as_ref());
    }

    /// Stops listening at `addr` only (connections being relayed carry on).
    pub fn unlisten_addr(&mut self, addr: SocketAddr) {
        self.ns.set.remove_addr(addr, self.ns.epoll.as_ref());
    }

    /// Handles an epoll event for one of our tokens.
    pub fn ready(&mut self, token: u64, flags: EpollFlags) {
        let (index, gen, side) = match splice_token(token) {
            RelayToken::Listener(i) => return self.accept_ready(i),
            RelayToken::Item { index, gen, side } => (index, gen, side),
        };
        let Some(pair) = self.pairs.get_mut(index, gen) else {
            return;
        };
        let outcome = if !pair.connected {
            // Only the host side's connect completing (or failing) matters until then.
            if side == 1
                && flags
                    .intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                if so_error(pair.socks[1].as_raw_fd()) == 0
                    && flags.contains(EpollFlags::EPOLLOUT)
                    && !flags.contains(EpollFlags::EPOLLERR)
                {
                    pair.connected = true;
                    pump(pair, &mut self.stats.bytes)
                } else {
                    self.stats.refused += 1;
                    Outcome::Reset
                }
            } else {
                Outcome::Open
            }
        } else if flags.contains(EpollFlags::EPOLLERR) {
            Outcome::Reset
        } else {
            pump(pair, &mut self.stats.bytes)
        };
        match outcome {
            Outcome::Open => {}
            Outcome::Done => self.close(index, false),
            Outcome::Reset => self.close(index, true),
        }
    }

    fn accept_ready(&mut self, listener: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = self.ns.set.get(listener) else {
                return;
            };
            let (lfd, to, v4) = (l.fd.as_raw_fd(), l.to, l.addr.is_ipv4());
            // SAFETY: plain system call; we don't need the peer's address.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED) => continue,
                    Some(libc::ENOBUFS | libc::ENOMEM) => {}
                    _ if is_out_of_descriptors(&e) => {}
                    // EAGAIN: done.
                    _ => return,
                }
                self.out_of_descriptors(listener, &e);
                return;
            }
            // SAFETY: a new descriptor we own.
            let accepted = unsafe { OwnedFd::from_raw_fd(fd) };
            self.stats.accepted += 1;
            if self.open >= self.max_pairs {
                self.stats.table_full += 1;
                reset(&accepted);
                continue;
            }
            let target = if v4 {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), to)
            } else {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), to)
            };
            let started = match stream_socket(target.ip()) {
                Ok(outbound) => self.start(accepted, outbound, target),
                Err(e) => {
                    reset(&accepted);
                    Err(e)
                }
            };
            if let Err(e) = started {
                log::debug!("cannot relay a connection to {target}: {e}");
                if is_out_of_descriptors(&e) {
                    // The next accept would fail the same way: the rest wait.
                    self.out_of_descriptors(listener, &e);
                    return;
                }
            }
        }
    }

    /// Relays `accepted`, a connection a forwarding listener on the host took from a loopback
    /// peer (`-t`), to `target` inside the namespace, through a socket made there; resets
    /// `accepted` if that fails. Takes it whatever the table's fill: the caller's listener
    /// accepted it already, and refusing is a reset either way.
    pub fn relay_into(
        &mut self,
        netns: &impl InNetns,
        accepted: OwnedFd,
        target: SocketAddr,
    ) -> io::Result<()> {
        self.stats.inbound += 1;
        if self.open >= self.max_pairs {
            self.stats.table_full += 1;
            reset(&accepted);
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        let family = target.ip();
        match io_in(netns, move || stream_socket(family)) {
            Ok(outbound) => self.start(accepted, outbound, target),
            Err(e) => {
                reset(&accepted);
                Err(e)
            }
        }
    }

    /// Connects `outbound` to `target` and sets up the relay for `accepted`; resets `accepted`
    /// if that fails.
    fn start(
        &mut self,
        accepted: OwnedFd,
        outbound: OwnedFd,
        target: SocketAddr,
    ) -> io::Result<()> {
        let host = outbound;
        let connected = match connect_to(host.as_raw_fd(), target) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => {
                self.stats.refused += 1;
                reset(&accepted);
                return Err(e);
            }
        };
        for fd in [&accepted, &host] {
            let _ = setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        let (p0, p1) = match (pipe(), pipe()) {
            (Ok(p0), Ok(p1)) => (p0, p1),
            (Err(e), _) | (_, Err(e)) => {
                reset(&accepted);
                return Err(e);
            }
        };
        let cap = pipe_capacity(&p0.1).min(pipe_capacity(&p1.1));
        let pair = Pair {
            socks: [accepted, host],
            connected,
            pipes: [p0, p1],
            queued: [0, 0],
            cap,
            eof: [false, false],
            shut: [false, false],
        };
        let (index, gen) = match self.pairs.insert(pair) {
            Ok(slot) => slot,
            Err(pair) => {
                reset(&pair.socks[0]);
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
        };
        if let Some(epoll) = &self.ns.epoll {
            let flags = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET;
            let socks = &self.pairs.at(index).expect("just inserted").socks;
            for (side, fd) in socks.iter().enumerate() {
                if let Err(e) = epoll.add(
                    fd,
                    EpollEvent::new(flags, splice_pair_token(index, gen, side)),
                ) {
                    let pair = self.pairs.remove(index).expect("just inserted");
                    reset(&pair.socks[0]);
                    return Err(e.into());
                }
            }
        }
        self.open += 1;
        if connected {
            // Loopback connects may complete at once: the edge for it may never come.
            self.ready(
                splice_pair_token(index, gen, 1),
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
            );
        }
        Ok(())
    }

    fn close(&mut self, index: usize, with_reset: bool) {
        let Some(pair) = self.pairs.remove(index) else {
            return;
        };
        if with_reset {
            self.stats.resets += 1;
            for s in &pair.socks {
                reset(s);
            }
        }
        self.stats.closed += 1;
        self.open -= 1;
        // Descriptors are free: listeners put aside may accept again.
        self.descriptors_freed();
        // Dropping the pair closes both sockets and pipes (and takes them off epoll).
    }
}

/// Moves what can be moved both ways; says whether the pair is done.
fn pump(pair: &mut Pair, bytes: &mut u64) -> Outcome {
    for d in 0..2 {
        if let Err(e) = move_one_way(pair, d, bytes) {
            log::debug!("relay ended: {e}");
            return Outcome::Reset;
        }
    }
    if pair.shut[0] && pair.shut[1] {
        Outcome::Done
    } else {
        Outcome::Open
    }
}

/// Direction `d`: side `d`'s socket into its pipe, the pipe into side `1 - d`'s socket, until
/// neither moves; then the end of the stream, if it came and everything before it went.
fn move_one_way(pair: &mut Pair, d: usize, bytes: &mut u64) -> io::Result<()> {
    let (src, dst) = (pair.socks[d].as_raw_fd(), pair.socks[1 - d].as_raw_fd());
    let (pipe_r, pipe_w) = (pair.pipes[d].0.as_raw_fd(), pair.pipes[d].1.as_raw_fd());
    loop {
        let mut moved = false;
        if !pair.eof[d] && pair.queued[d] < pair.cap {
            match splice(src, pipe_w, pair.cap - pair.queued[d])? {
                Some(0) => {
                    pair.eof[d] = true;
                    moved = true;
                }
                Some(n) => {
                    pair.queued[d] += n;
                    moved = true;
                }
                None => {}
            }
        }
        if pair.queued[d] > 0 {
            if let Some(n) = splice(pipe_r, dst, pair.queued[d])? {
                pair.queued[d] -= n;
                *bytes += n as u64;
                moved |= n > 0;
            }
        }
        if !moved {
            break;
        }
    }
    if pair.eof[d] && pair.queued[d] == 0 && !pair.shut[d] {
        pair.shut[d] = true;
        // SAFETY: plain system call.
        unsafe { libc::shutdown(dst, libc::SHUT_WR) };
    }
    Ok(())
}

/// One non-blocking `splice`; `None` for "not now".
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: plain system call on descriptors we own.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain system call; failure (over pipe-max-size) leaves the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok((r, w))
}

fn pipe_capacity(fd: &OwnedFd) -> usize {
    // SAFETY: plain system call.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if n > 0 {
        n as usize
    } else {
        64 * 1024
    }
}

/// Makes closing `fd` reset the connection.
fn reset(fd: &OwnedFd) {
    reset_on_close(fd.as_raw_fd());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns_listeners::NsAddrs;
    use crate::test_netns::{can_make_namespaces, epoll_pair, spawn_in, with_host_and_namespace};
    use nix::sys::epoll::Epoll;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    const LO4: NsAddrs = NsAddrs::Loopback {
        v4: true,
        v6: false,
    };

    /// Drives `splicer` until `done` or a timeout.
    fn drive(splicer: &mut Splicer, epoll: &Epoll, mut done: impl FnMut(&Splicer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut events = [EpollEvent::empty(); 32];
        while !done(splicer) {
            assert!(
                Instant::now() < deadline,
                "timed out: {:?}",
                splicer.stats()
            );
            let n = epoll.wait(&mut events, 50u16).unwrap();
            for ev in &events[..n] {
                splicer.ready(ev.data(), ev.events());
            }
        }
    }

    #[test]
    fn relays_both_ways_with_half_close_and_refuses_without_a_server() {
        if !can_make_namespaces("splice") {
            return;
        }
        with_host_and_namespace(|ns| {
            // A host server that echoes everything, then closes.
            let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host_port = server.local_addr().unwrap().port();
            let echo = std::thread::spawn(move || {
                let (mut c, _) = server.accept().unwrap();
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                c.write_all(&all).unwrap();
            });

            let (epoll, handle) = epoll_pair();
            let mut splicer = Splicer::new(8);
            splicer.listeners().attach(handle).unwrap();
            let (n, failed) = splicer
                .listeners()
                .listen_in(&ns, 4000, host_port, LO4)
                .unwrap();
            assert_eq!((n, failed.len()), (1, 0));
            let (n, _) = splicer.listeners().listen_in(&ns, 4001, 1, LO4).unwrap();
            assert_eq!(n, 1);

            // A client inside the namespace: 3 MiB out, half-close, all of it back.
            let data: Vec<u8> = (0..3 << 20).map(|i| (i * 7 % 251) as u8).collect();
            let expect = data.clone();
            let client = spawn_in(&ns, move || {
                let mut c = std::net::TcpStream::connect("127.0.0.1:4000").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = c.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    w.write_all(&data).unwrap();
                    w.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                writer.join().unwrap();
                // Nobody listens on the host's port 1: reset.
                let mut refused = std::net::TcpStream::connect("127.0.0.1:4001").unwrap();
                refused
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let e = refused.read(&mut [0u8; 1]);
                (back, e.map_err(|e| e.kind()))
            });
            drive(&mut splicer, &epoll, |s| {
                s.stats().closed >= 2 && s.open_pairs() == 0
            });
            let (back, refused) = client.join().unwrap();
            echo.join().unwrap();
            assert!(back == expect, "relayed bytes differ ({} back)", back.len());
            assert_eq!(refused, Err(io::ErrorKind::ConnectionReset));
            let stats = splicer.stats();
            assert_eq!((stats.accepted, stats.refused), (2, 1));
            assert_eq!(stats.bytes, 2 * (3 << 20));
        });
    }

    #[test]
    fn hands_host_connections_over_into_the_namespace() {
        if !can_make_namespaces("splice") {
            return;
        }
        with_host_and_namespace(|ns| {
            // A server inside the namespace that echoes and reports its peer.
            let (port_tx, port_rx) = std::sync::mpsc::channel();
            let server = spawn_in(&ns, move || {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                port_tx.send(l.local_addr().unwrap().port()).unwrap();
                let (mut c, peer) = l.accept().unwrap();
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                c.write_all(&all).unwrap();
                peer
            });
            let ns_port = port_rx.recv().unwrap();

            // A "forwarding listener" on the host, and a host client of it.
            let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host_addr = host.local_addr().unwrap();
            let data: Vec<u8> = (0..1 << 20).map(|i| (i * 13 % 251) as u8).collect();
            let expect = data.clone();
            let client = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(host_addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(&data).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                back
            });
            let (accepted, _) = host.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();

            let (epoll, handle) = epoll_pair();
            let mut splicer = Splicer::new(8);
            splicer.listeners().attach(handle).unwrap();
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), ns_port);
            splicer
                .relay_into(&ns, OwnedFd::from(accepted), target)
                .unwrap();
            drive(&mut splicer, &epoll, |s| s.stats().closed >= 1);
            assert!(client.join().unwrap() == expect, "relayed bytes differ");
            let peer = server.join().unwrap();
            // The peer is the namespace's loopback: the socket was made in there.
            assert!(peer.ip().is_loopback(), "{peer}");
            let stats = splicer.stats();
            assert_eq!((stats.inbound, stats.accepted, stats.resets), (1, 0, 0));
            assert_eq!(stats.bytes, 2 << 20);
        });
    }
}
