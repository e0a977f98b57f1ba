//! The loopback bypass for TCP (pasta), both ways. `-T`: connections to pasta's listeners on
//! the namespace's loopback go to the same (or mapped) port on the host's loopback. `-t`:
//! connections that the forwarding listeners on the host accepted from a loopback peer are
//! handed over ([`Splicer::relay_into`]) and go to a socket made inside the namespace. Neither
//! passes through the tap device and the guest-facing TCP translation. Both ends are ordinary kernel
//! sockets, so the bytes move between them with `splice(2)` through a pipe per direction:
//! no copy through our memory, and no buffering of ours beyond the pipes.
//!
//! Everything is edge-triggered, and an event moves only the direction it names: readable
//! (or the end of the stream) on a side moves what that side sends, writable moves what waits
//! for it in the pipe. A socket is watched for room to write only while a pipe waits for it,
//! and for something to read only while the pipe it fills does not wait (so a bulk transfer
//! against a slower reader wakes us when the reader makes room, not at every segment the
//! writer sends; a third less CPU per byte where the reader is the slower). A
//! request/response exchange wakes us once a message, and each wake-up costs the two `splice`
//! calls that move the message (`EAGAIN` is needed only to learn the socket is empty
//! when the read could have stopped short: see `move_one_way`).
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
/// Empty pipes kept from closed pairs for the next ones (four system calls saved a pipe).
const SPARE_PIPES: usize = 32;

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
    /// `splice` calls made, and the times a pipe had to wait for room in a socket.
    pub splices: u64,
    pub out_waits: u64,
}

/// One relayed connection: side 0 accepted (in the namespace for `-T`, on the host for `-t`),
/// side 1 the socket we connected on the other side.
#[derive(Debug)]
struct Pair {
    socks: [OwnedFd; 2],
    connected: bool,
    /// Direction `d` carries what side `d` reads to side `1 - d`.
    pipes: [Pipe; 2],
    /// Bytes in each direction's pipe.
    queued: [usize; 2],
    /// What each side's socket is watched for now (see [`Pair::wants`]).
    watching: [EpollFlags; 2],
    /// Side `d`'s end of stream was reported (it may wait behind data still to read).
    end_reported: [bool; 2],
    /// Side `d` reached the end of its stream.
    eof: [bool; 2],
    /// The end of direction `d` was passed on (shutdown of side `1 - d`'s sending half).
    shut: [bool; 2],
}

/// One direction's pipe.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its size in bytes, and in buffers (pages): a read shorter than the buffers can hold
    /// took everything the socket had.
    cap: usize,
    slots: usize,
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
    /// Empty pipes of closed pairs, for the next.
    spare_pipes: Vec<Pipe>,
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
            spare_pipes: Vec::new(),
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
                    // Side 0 may have sent already, and side 1 no longer needs watching
                    // for its connect.
                    pump(pair, [true, true], &mut self.stats)
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
            // Readable or at its end: what this side sends. Writable: what waits for it. A
            // hang-up may be either, and an error shows only when tried.
            let sends = flags
                .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP);
            let receives = flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP);
            let mut directions = [false; 2];
            directions[side] = sends;
            directions[1 - side] = receives;
            // The end of the stream is reported once, and may wait behind data: from then
            // on that side is read until it is seen.
            if flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
                pair.end_reported[side] = true;
            }
            pump(pair, directions, &mut self.stats)
        };
        self.settle(index, gen, outcome);
    }

    /// After moving data for pair `index`: keeps it, watched as it now needs, or closes it.
    fn settle(&mut self, index: usize, gen: u32, outcome: Outcome) {
        match outcome {
            Outcome::Open => self.watch(index, gen),
            Outcome::Done => self.close(index, false),
            Outcome::Reset => self.close(index, true),
        }
    }

    /// Watches each side of pair `index` as it now needs (see [`Pair::wants`]); resets the
    /// pair if epoll refuses.
    fn watch(&mut self, index: usize, gen: u32) {
        let (Some(epoll), Some(pair)) = (&self.ns.epoll, self.pairs.at_mut(index)) else {
            return;
        };
        let mut refused = None;
        for side in 0..2 {
            let wanted = pair.wants(side);
            if wanted == pair.watching[side] {
                continue;
            }
            let mut event = EpollEvent::new(wanted, splice_pair_token(index, gen, side));
            if let Err(e) = epoll.modify(&pair.socks[side], &mut event) {
                refused = Some(e);
                break;
            }
            pair.watching[side] = wanted;
        }
        if let Some(e) = refused {
            log::debug!("relay ended: cannot watch a socket: {e}");
            self.close(index, true);
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
        let pipes = match (self.take_pipe(), self.take_pipe()) {
            (Ok(p0), Ok(p1)) => [p0, p1],
            (Err(e), _) | (_, Err(e)) => {
                reset(&accepted);
                return Err(e);
            }
        };
        let mut pair = Pair {
            socks: [accepted, host],
            connected,
            pipes,
            queued: [0, 0],
            watching: [EpollFlags::empty(); 2],
            end_reported: [false, false],
            eof: [false, false],
            shut: [false, false],
        };
        // Until it connects, side 1 is watched for that.
        pair.watching = [pair.wants(0), pair.wants(1)];
        let (index, gen) = match self.pairs.insert(pair) {
            Ok(slot) => slot,
            Err(pair) => {
                reset(&pair.socks[0]);
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
        };
        if let Some(epoll) = &self.ns.epoll {
            let pair = self.pairs.at(index).expect("just inserted");
            for (side, fd) in pair.socks.iter().enumerate() {
                let flags = pair.watching[side];
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
            // Loopback connects may complete at once, and side 0 may have sent before we
            // watched it: the edges for either may never come.
            let pair = self.pairs.at_mut(index).expect("just inserted");
            let outcome = pump(pair, [true, true], &mut self.stats);
            self.settle(index, gen, outcome);
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
        let Pair { pipes, queued, .. } = pair;
        for (pipe, queued) in pipes.into_iter().zip(queued) {
            if queued == 0 && self.spare_pipes.len() < SPARE_PIPES {
                self.spare_pipes.push(pipe);
            }
        }
        // Descriptors are free: listeners put aside may accept again.
        self.descriptors_freed();
        // Dropping the sockets (and the pipes not kept) closes them; epoll forgets them.
    }
}

impl Pair {
    /// What side `side`'s socket must be watched for. Its end of the stream, always. Room to
    /// write while its connect is under way, or while the pipe towards it holds what it could
    /// not take. Something to read, except while the pipe it fills waits for the other side:
    /// each segment arriving then would wake us to move nothing, and the wake-up that finds
    /// room on the other side reads this one too (re-arming it reports what arrived since).
    fn wants(&self, side: usize) -> EpollFlags {
        let mut flags = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if self.queued[side] == 0 {
            flags |= EpollFlags::EPOLLIN;
        }
        if (side == 1 && !self.connected) || self.queued[1 - side] > 0 {
            flags |= EpollFlags::EPOLLOUT;
        }
        flags
    }
}

/// Moves what can be moved in the `directions` asked; says whether the pair is done.
fn pump(pair: &mut Pair, directions: [bool; 2], stats: &mut SpliceStats) -> Outcome {
    for d in (0..2).filter(|&d| directions[d]) {
        if let Err(e) = move_one_way(pair, d, stats) {
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
/// the reader's socket is full or the writer's has nothing more; then the end of the stream,
/// if it came and everything before it went.
///
/// A write that leaves bytes in the pipe found the reader's socket full: reading on would
/// only fill the pipe in smaller pieces than the read that follows the room's return (the
/// pipe waits, watched for that room, and the writer is not watched meanwhile).
///
/// A read into an empty pipe that took fewer bytes than the pipe has buffers (each holds one
/// byte at least) did not stop for want of room: it stopped because the socket had nothing
/// more, or at urgent data (where the next read would say `EAGAIN` too). So no read is made
/// just to hear `EAGAIN`: whatever arrives later brings its own edge. Unless the end of the
/// stream was reported: it may wait behind the data read, and its edge has come and gone.
fn move_one_way(pair: &mut Pair, d: usize, stats: &mut SpliceStats) -> io::Result<()> {
    let (src, dst) = (pair.socks[d].as_raw_fd(), pair.socks[1 - d].as_raw_fd());
    let pipe = &pair.pipes[d];
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    loop {
        // Whether the writer's socket may hold more than was read: the pipe had no room for
        // it, or the read filled what it could.
        let mut more = false;
        if !pair.eof[d] && pair.queued[d] < pipe.cap {
            let was_empty = pair.queued[d] == 0;
            stats.splices += 1;
            match splice(src, pipe_w, pipe.cap - pair.queued[d])? {
                Some(0) => pair.eof[d] = true,
                Some(n) => {
                    pair.queued[d] += n;
                    more = !(was_empty && n < pipe.slots) || pair.end_reported[d];
                }
                None => {}
            }
        } else if !pair.eof[d] {
            more = true;
        }
        if pair.queued[d] > 0 {
            stats.splices += 1;
            if let Some(n) = splice(pipe_r, dst, pair.queued[d])? {
                pair.queued[d] -= n;
                stats.bytes += n as u64;
            }
            if pair.queued[d] > 0 {
                stats.out_waits += 1;
                break;
            }
        }
        if !more {
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

impl Splicer {
    /// An empty pipe: a spare one, or a new one.
    fn take_pipe(&mut self) -> io::Result<Pipe> {
        match self.spare_pipes.pop() {
            Some(pipe) => Ok(pipe),
            None => new_pipe(),
        }
    }
}

fn new_pipe() -> io::Result<Pipe> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain system calls. The size set is returned; failure (over pipe-max-size)
    // leaves the default, which we then ask for.
    let mut cap = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    if cap <= 0 {
        cap = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    }
    let cap = if cap > 0 { cap as usize } else { 64 * 1024 };
    Ok(Pipe {
        read,
        write,
        cap,
        slots: (cap / page_size()).max(1),
    })
}

/// The size of a pipe buffer's page.
fn page_size() -> usize {
    // SAFETY: plain library call.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
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

    /// A splicer on an epoll instance of its own.
    fn splicer_on_epoll() -> (Splicer, Epoll) {
        let (epoll, handle) = epoll_pair();
        let mut splicer = Splicer::new(8);
        splicer.listeners().attach(handle).unwrap();
        (splicer, epoll)
    }

    /// A splicer relaying the namespace's 127.0.0.1:4000 to the host's `host_port`.
    fn relay_from_port_4000(ns: &OwnedFd, host_port: u16) -> (Splicer, Epoll) {
        let (mut splicer, epoll) = splicer_on_epoll();
        let (n, failed) = splicer
            .listeners()
            .listen_in(ns, 4000, host_port, LO4)
            .unwrap();
        assert_eq!((n, failed.len()), (1, 0));
        (splicer, epoll)
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

            let (mut splicer, epoll) = relay_from_port_4000(&ns, host_port);
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
    fn exchanges_of_small_messages_take_two_splices_each_and_reuse_pipes() {
        if !can_make_namespaces("splice") {
            return;
        }
        with_host_and_namespace(|ns| {
            // A host server answering each byte with its successor, on connection after
            // connection.
            const CONNECTIONS: usize = 3;
            const EXCHANGES: usize = 500;
            let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host_port = server.local_addr().unwrap().port();
            let answer = std::thread::spawn(move || {
                for _ in 0..CONNECTIONS {
                    let (mut c, _) = server.accept().unwrap();
                    c.set_nodelay(true).unwrap();
                    let mut b = [0u8; 1];
                    while c.read(&mut b).unwrap() == 1 {
                        c.write_all(&[b[0].wrapping_add(1)]).unwrap();
                    }
                }
            });

            let (mut splicer, epoll) = relay_from_port_4000(&ns, host_port);
            let client = spawn_in(&ns, move || {
                for _ in 0..CONNECTIONS {
                    let mut c = std::net::TcpStream::connect("127.0.0.1:4000").unwrap();
                    c.set_nodelay(true).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    for i in 0..EXCHANGES {
                        let mut b = [i as u8];
                        c.write_all(&b).unwrap();
                        c.read_exact(&mut b).unwrap();
                        assert_eq!(b[0], (i as u8).wrapping_add(1));
                    }
                    // The pair is closed once this side hears the end: the next one starts
                    // after it.
                    c.shutdown(std::net::Shutdown::Write).unwrap();
                    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
                }
            });
            drive(&mut splicer, &epoll, |s| {
                s.stats().closed >= CONNECTIONS as u64 && s.open_pairs() == 0
            });
            client.join().unwrap();
            answer.join().unwrap();
            let stats = splicer.stats();
            let messages = (2 * CONNECTIONS * EXCHANGES) as u64;
            assert_eq!(stats.bytes, messages);
            // A read and a write a message: no read only to hear EAGAIN, no second direction
            // tried. What is over that is the opening and closing, and an event that found the
            // message already moved (allowed for generously: it was 4 a message before).
            assert!(
                stats.splices <= messages * 5 / 2,
                "{} splices for {messages} messages",
                stats.splices
            );
            assert_eq!(stats.out_waits, 0);
            // Every pair after the first took the pipes the one before left.
            assert_eq!(splicer.spare_pipes.len(), 2);
        });
    }

    #[test]
    fn a_pipe_waits_for_a_slow_reader_and_loses_nothing() {
        if !can_make_namespaces("splice") {
            return;
        }
        with_host_and_namespace(|ns| {
            // A host server that reads only once told the relay had to wait for it.
            let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let host_port = server.local_addr().unwrap().port();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let reader = std::thread::spawn(move || {
                let (mut c, _) = server.accept().unwrap();
                go_rx.recv().unwrap();
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                all
            });

            let (mut splicer, epoll) = relay_from_port_4000(&ns, host_port);
            let data: Vec<u8> = (0..16 << 20).map(|i| (i * 11 % 253) as u8).collect();
            let expect = data.clone();
            let writer = spawn_in(&ns, move || {
                let mut c = std::net::TcpStream::connect("127.0.0.1:4000").unwrap();
                c.write_all(&data).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                // Until the relay closes its side.
                let _ = c.read(&mut [0u8; 1]);
            });
            drive(&mut splicer, &epoll, |s| s.stats().out_waits > 0);
            // While the pipe waits, the reader's side is watched for room and the writer's no
            // longer for what it sends (only for its end).
            let (_, pair) = splicer.pairs.iter().next().expect("one pair");
            assert!(pair.queued[0] > 0);
            assert_eq!(
                pair.watching,
                [
                    EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
                    EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLOUT
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLET
                ]
            );
            go_tx.send(()).unwrap();
            drive(&mut splicer, &epoll, |s| s.stats().closed >= 1);
            writer.join().unwrap();
            assert!(reader.join().unwrap() == expect, "relayed bytes differ");
            assert_eq!(splicer.stats().bytes, 16 << 20);
        });
    }

    /// A connected pair of non-blocking stream sockets (the relay's side, the peer's).
    fn stream_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into our array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: two new descriptors we own.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// A write that leaves bytes in the pipe ends the round: the reader's socket is full, and
    /// reading on would only refill the pipe in smaller pieces than the next round's read.
    #[test]
    fn a_write_short_of_the_pipe_ends_the_round() {
        let (writer_side, writer) = stream_pair();
        let mut writer = std::os::unix::net::UnixStream::from(writer);
        let (reader_side, _reader) = stream_pair();
        crate::socket_sys::setsockopt_int(
            reader_side.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            4096,
        )
        .unwrap();
        // What the writer's socket takes without blocking, more than the reader's can.
        let chunk = [7u8; 4096];
        let mut written = 0;
        while written < 1 << 20 {
            match writer.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(written >= 64 << 10, "{written}");
        let mut pair = Pair {
            socks: [writer_side, reader_side],
            connected: true,
            pipes: [new_pipe().unwrap(), new_pipe().unwrap()],
            queued: [0; 2],
            watching: [EpollFlags::empty(); 2],
            end_reported: [false; 2],
            eof: [false; 2],
            shut: [false; 2],
        };
        let mut stats = SpliceStats::default();
        move_one_way(&mut pair, 0, &mut stats).unwrap();
        // One read, one write that the reader's socket cut short, and no read after it.
        assert_eq!((stats.splices, stats.out_waits), (2, 1), "{stats:?}");
        assert!(pair.queued[0] > 0);
        assert_eq!(pair.queued[0] as u64 + stats.bytes, written as u64);
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

            let (mut splicer, epoll) = splicer_on_epoll();
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
