//! Flows: the guest's connections and exchanges with the world, each tied to a host socket.
//!
//! The core never sees a file descriptor. It names host sockets by [`SockRef`] and asks the
//! driver for socket operations through [`HostSockets`], synchronously: the OS shim implements
//! it with system calls, the simulator with virtual sockets. The driver reports what happens
//! on those sockets back as [`SockEvent`]s (see `Batch::socket`).
//!
//! Data is never buffered in the core: guest payload is sent from the frame it arrived in, and
//! host data is peeked from the socket straight into the frame that carries it to the guest,
//! to be discarded from the socket only once the guest acknowledges it. (One bounded
//! exception, the per-flow stash for partial writes: see [`tcp`].)
//!
//! # What a driver (OS shim, simulator) must do for TCP
//!
//! - `tcp_connect`: start a non-blocking connect and watch for its completion itself; report
//!   [`SockEvent::Connected`] or [`SockEvent::Error`]. The core doesn't call `set_interest`
//!   on a socket before it is connected.
//! - Interest: a socket from `tcp_connect` once it reports `Connected` (the driver takes its
//!   connect watch off), and one passed to `Batch::accept`, have both interests off; the core
//!   calls [`StreamSockets::set_interest`] whenever what it wants changes: readable interest
//!   off while it can't use more data (guest window full), writable interest off once served.
//! - Readiness is level-triggered over what no peek has seen: report [`SockEvent::Readable`]
//!   while bytes may be there that arrived after the last peek that came back short (it saw
//!   everything the socket held), not for bytes the core peeked and keeps in the socket
//!   until the guest acknowledges them; the core peeks at the offset past those. (The OS shim
//!   watches stream sockets edge-triggered and keeps that state; the simulator's host too.)
//!   Report [`SockEvent::PeerClosed`] when the receive side hit end of stream
//!   (`EPOLLRDHUP`/`EPOLLHUP`, or a read of 0) — only once every byte before the end can be
//!   peeked. A `Readable` for end of stream alone, repeated, would spin: report end of stream
//!   as `PeerClosed` (repeats of it are harmless).
//! - Report [`SockEvent::Error`] (`EPOLLERR`, a reset, a failed connect) whatever the interest.
//! - `peek(s, offset, buf)`: bytes from `offset` past the first not yet discarded
//!   (`SO_PEEK_OFF` or equivalent); `n == 0` or `WouldBlock` when nothing is there, and
//!   `eof` when the driver knows the stream ends right after the bytes copied (a peek of 0 at
//!   that offset, or a short one after `EPOLLRDHUP`). The core acts on it as on
//!   `PeerClosed`: a peek queues no event.
//! - `send_space(s)`: payload bytes a `send` would take now, erring low; it is what the
//!   guest is offered as its window.
//! - After `close(s, _)` the core forgets `s`: no more events for it; the handle may be reused.
//! - Feed frames and events through an `Engine::batch` per wake-up and write the queued frames
//!   once it has ended (its end flushes; see `batch`).

pub mod icmp;
pub mod idle;
pub mod table;
pub mod tcp;
pub mod udp;
pub mod udp_runs;

use crate::wire::external::{ExternalPayloads, SendPiece};
use crate::wire::lent::LentAreas;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// A host socket, as the core names it. The driver maps it to a descriptor; values are the
/// driver's to choose and reuse after [`CloseSockets::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockRef(pub u32);

/// Binding choices for an outbound socket (`-o`, `--outbound-if4/6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bind<'a> {
    /// Local address to bind before connecting.
    pub addr: Option<IpAddr>,
    /// Interface to bind to (SO_BINDTODEVICE).
    pub iface: Option<&'a str>,
}

/// What [`StreamSockets::peek`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peeked {
    /// Bytes copied.
    pub n: usize,
    /// The stream ends right after those bytes (the peer's FIN follows them): nothing more
    /// will come. `false` when the driver doesn't know yet.
    pub eof: bool,
}

impl Peeked {
    /// `n` bytes, the stream going on (or its end not known yet).
    pub fn bytes(n: usize) -> Peeked {
        Peeked { n, eof: false }
    }

    /// `n` bytes, and then the end of the stream.
    pub fn last(n: usize) -> Peeked {
        Peeked { n, eof: true }
    }
}

// What the core may ask of host sockets, one trait per kind of socket so that each protocol's
// context holds only what that protocol uses; [`HostSockets`] is all of them, what a driver
// implements and the engine's entry points take. All calls are non-blocking; `WouldBlock`
// means "not now", and the driver reports readiness later as a [`SockEvent`]. Each trait has
// a blanket impl for `&mut T`, so a caller holding `&mut host` passes it where a generic
// wants one.

/// What every kind of host socket takes: being closed.
pub trait CloseSockets {
    /// Closes the socket; with `reset`, aborts the connection (RST to the peer).
    fn close(&mut self, s: SockRef, reset: bool);
}

/// TCP connections.
pub trait StreamSockets: CloseSockets {
    /// Opens a TCP socket, binds it as asked, and starts connecting to `dst`. The outcome comes
    /// later as [`SockEvent::Connected`] or [`SockEvent::Error`]. `mss` is applied with
    /// TCP_MAXSEG when given.
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef>;

    /// Sends as much of `data` as the socket takes now; returns how much that was.
    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize>;

    /// Sends the slices of `data` in order, as consecutive [`StreamSockets::send`]s stopping
    /// at the first that comes up short would, in one call where the system has one
    /// (`sendmsg` with an iovec): returns how many bytes went, over all slices. An error is
    /// returned only when nothing went.
    fn send_vectored(&mut self, s: SockRef, data: &[&[u8]]) -> io::Result<usize> {
        send_each(data, |slice| self.send(s, slice))
    }

    /// Sends `pieces` like [`StreamSockets::send_vectored`], some of them payload a link left
    /// in the guest's memory (see [`crate::wire::external`]), which `external` answers for.
    /// The default copies those through `external` into a buffer of its own and sends piece
    /// by piece ([`send_pieces_copying`]); the OS shim gives the kernel the link's areas.
    fn send_pieces(
        &mut self,
        s: SockRef,
        pieces: &[SendPiece<'_>],
        external: &dyn ExternalPayloads,
    ) -> io::Result<usize> {
        send_pieces_copying(pieces, external, |bytes| self.send(s, bytes))
    }

    /// Copies received bytes into `buf` without consuming them, starting `offset` bytes past
    /// the first byte not yet [`StreamSockets::discard`]ed. `n == 0` with a non-empty `buf`
    /// means no data there now; `eof` that the stream ends right after the bytes copied.
    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked>;

    /// Peeks like [`StreamSockets::peek`] into several areas of `buf` at once, in order (the
    /// payloads of frames being built side by side), in one call where the system has one
    /// (`recvmsg` with an iovec): returns how many bytes were copied over all areas, which
    /// fill in order, each to its length before the next starts.
    fn peek_slots(
        &mut self,
        s: SockRef,
        offset: usize,
        buf: &mut [u8],
        slots: PeekSlots<'_>,
    ) -> io::Result<Peeked> {
        peek_each(buf, slots, |at, area| self.peek(s, offset + at, area))
    }

    /// Peeks like [`StreamSockets::peek_slots`] into memory a driver lent the frame queue
    /// (`areas`, filled in order: see [`crate::wire::lent`]), in one call where the system
    /// has one (the kernel writing into the areas). The default peeks into a buffer of its
    /// own and copies through the lender ([`LentAreas::fill`]), a piece at a time.
    fn peek_lent(
        &mut self,
        s: SockRef,
        offset: usize,
        areas: &mut LentAreas<'_>,
    ) -> io::Result<Peeked> {
        peek_lent_copying(areas, |at, buf| self.peek(s, offset + at, buf))
    }

    /// Drops the first `len` received bytes (the guest acknowledged them).
    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()>;

    /// Bounds the receive window `s` advertises to its peer to `bytes` (the guest's window:
    /// the peer then has no more in flight than the guest takes). Best effort: a driver
    /// without such a bound ignores it.
    fn clamp_window(&mut self, s: SockRef, bytes: u32) {
        let _ = (s, bytes);
    }

    /// Payload bytes a `send` would take now, erring low: it is what the guest is offered as
    /// its window.
    fn send_space(&mut self, s: SockRef) -> io::Result<u32>;

    /// Half-closes the sending direction (FIN to the peer).
    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()>;

    /// Which readiness the core wants reported for `s`: readable is the default, writable is
    /// wanted while the core waits for send space.
    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool);

    /// Relays `s`, a connection a forwarding listener accepted from a local peer, to `target`
    /// inside the namespace without the guest path: pasta's loopback bypass, which the core
    /// chooses with `fwd::nat::local_bypass`. The driver owns `s` from now on (the core
    /// forgets it). A driver without a bypass resets it, as a relay that fails does.
    fn hand_over(&mut self, s: SockRef, target: SocketAddr) {
        let _ = target;
        self.close(s, true);
    }
}

/// [`StreamSockets::send_vectored`] as consecutive sends with `send`, stopping at the first
/// that comes up short: for drivers without a gathering send of their own.
pub fn send_each(
    data: &[&[u8]],
    mut send: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut sent = 0;
    for slice in data {
        match send(slice) {
            Ok(n) => {
                sent += n.min(slice.len());
                if n < slice.len() {
                    break;
                }
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// [`StreamSockets::send_pieces`] as consecutive sends stopping at the first short one: bytes
/// as they are, payload left in place copied through `external` into a buffer of ours a piece
/// at a time (a copy the link couldn't make ends the sends there). An error is returned only
/// when nothing went.
pub fn send_pieces_copying(
    pieces: &[SendPiece<'_>],
    external: &dyn ExternalPayloads,
    mut send: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut bounce = [0u8; 4096];
    let mut sent = 0;
    let mut send_counted = |bytes: &[u8], sent: &mut usize| -> io::Result<bool> {
        match send(bytes) {
            Ok(n) => {
                *sent += n.min(bytes.len());
                Ok(n >= bytes.len())
            }
            Err(e) if *sent == 0 => Err(e),
            Err(_) => Ok(false),
        }
    };
    for piece in pieces {
        match *piece {
            SendPiece::Bytes(bytes) => {
                if !send_counted(bytes, &mut sent)? {
                    break;
                }
            }
            SendPiece::External(mut payload) => {
                while payload.len > 0 {
                    let want = payload.len.min(bounce.len());
                    let got = external.read(payload.take(want), &mut bounce[..want]);
                    if got == 0 {
                        return Ok(sent);
                    }
                    if !send_counted(&bounce[..got], &mut sent)? || got < want {
                        return Ok(sent);
                    }
                    payload = payload.skip(got);
                }
            }
        }
    }
    Ok(sent)
}

/// [`StreamSockets::peek_lent`] as peeks into a buffer of its own, a piece at a time, copied
/// into the lent areas through their lender: `peek(skip, buf)` peeks `skip` bytes past the
/// caller's offset. Stops at the first short peek, and reports an error only when nothing was
/// copied.
pub fn peek_lent_copying(
    areas: &mut LentAreas<'_>,
    mut peek: impl FnMut(usize, &mut [u8]) -> io::Result<Peeked>,
) -> io::Result<Peeked> {
    let total = areas.total();
    let mut bounce = [0u8; 4096];
    let mut got = 0;
    while got < total {
        let want = (total - got).min(bounce.len());
        match peek(got, &mut bounce[..want]) {
            Ok(p) => {
                let n = p.n.min(want);
                areas.fill(got, &bounce[..n]);
                got += n;
                if p.eof || n < want {
                    return Ok(Peeked { n: got, eof: p.eof });
                }
            }
            Err(e) if got == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Peeked::bytes(got))
}

/// Where [`StreamSockets::peek_slots`] puts its bytes: `lens.len()` areas of one buffer, area
/// `i` starting at `first + i * stride` and `lens[i]` bytes long (areas don't overlap:
/// `lens[i] <= stride`).
#[derive(Debug, Clone, Copy)]
pub struct PeekSlots<'a> {
    pub first: usize,
    pub stride: usize,
    pub lens: &'a [usize],
}

impl PeekSlots<'_> {
    /// The byte range of area `i` in the buffer.
    pub fn area(&self, i: usize) -> std::ops::Range<usize> {
        let at = self.first + i * self.stride;
        at..at + self.lens[i]
    }
}

/// [`StreamSockets::peek_slots`] as one [`StreamSockets::peek`] per area, for sockets without
/// a vectored call: `peek(skip, area)` peeks `skip` bytes past the caller's offset. Stops at
/// the first short peek, and reports an error only when nothing was copied.
pub fn peek_each(
    buf: &mut [u8],
    slots: PeekSlots<'_>,
    mut peek: impl FnMut(usize, &mut [u8]) -> io::Result<Peeked>,
) -> io::Result<Peeked> {
    let mut got = 0;
    for i in 0..slots.lens.len() {
        let area = slots.area(i);
        let want = area.len();
        match peek(got, &mut buf[area]) {
            Ok(p) => {
                got += p.n.min(want);
                if p.eof || p.n < want {
                    return Ok(Peeked { n: got, eof: p.eof });
                }
            }
            Err(e) if got == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Peeked::bytes(got))
}

/// Receives datagram after datagram into `slots` as a batch receive does (datagram `i` into
/// `slots[i * slot_len + offset..(i + 1) * slot_len]`), one `recv(i, buf)` each, until
/// `count` came or one fails: returns how many came, an error only if the first failed. For
/// drivers without a batch receive.
pub fn fill_slots(
    slots: &mut [u8],
    slot_len: usize,
    offset: usize,
    count: usize,
    mut recv: impl FnMut(usize, &mut [u8]) -> io::Result<()>,
) -> io::Result<usize> {
    for i in 0..count {
        let Some(buf) = slots.get_mut(i * slot_len + offset..(i + 1) * slot_len) else {
            return Ok(i);
        };
        match recv(i, buf) {
            Ok(()) => {}
            Err(e) if i == 0 => return Err(e),
            Err(_) => return Ok(i),
        }
    }
    Ok(count)
}

/// UDP sockets: outbound flows, and replies through forwarding listeners.
pub trait DgramSockets: CloseSockets {
    /// Opens a UDP socket, binds it as asked and connects it to `dst`. Readiness comes as
    /// [`SockEvent::Readable`] (readable interest is on from the start); an ICMP error for it
    /// as [`SockEvent::Error`].
    fn udp_open(&mut self, bind: Bind<'_>, dst: SocketAddr) -> io::Result<SockRef>;

    /// Sends one datagram on a socket from [`DgramSockets::udp_open`].
    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize>;

    /// Sends `datagrams` in order, each as one datagram, with one system call where the
    /// system has one (`sendmmsg`): returns how many went, stopping at the first that failed
    /// (an error only when that was the first).
    fn udp_send_many(&mut self, s: SockRef, datagrams: &[&[u8]]) -> io::Result<usize> {
        for (i, datagram) in datagrams.iter().enumerate() {
            if let Err(e) = self.udp_send(s, datagram) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(datagrams.len())
    }

    /// Receives one datagram into `buf` (the rest of a longer one is lost); `WouldBlock` when
    /// none is waiting.
    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize>;

    /// Receives up to `lens.len()` datagrams, with one system call where the system has one
    /// (`recvmmsg`): datagram `i` into `slots[i * slot_len + offset .. (i + 1) * slot_len]`,
    /// its length into `lens[i]` (truncated as [`DgramSockets::udp_recv`] does). Returns how
    /// many arrived; `WouldBlock` when none was waiting.
    fn udp_recv_many(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        fill_slots(slots, slot_len, offset, lens.len(), |i, buf| {
            lens[i] = self.udp_recv(s, buf)?;
            Ok(())
        })
    }

    /// Receives one datagram on a UDP forwarding listener, with its source, as
    /// [`DgramSockets::udp_recv`] does.
    fn udp_recv_from(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;

    /// Receives up to `lens.len()` datagrams on a UDP forwarding listener, with their
    /// sources, as [`DgramSockets::udp_recv_many`] does: datagram `i`'s source into
    /// `peers[i]` (`peers` is as long as `lens`).
    fn udp_recv_many_from(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
        peers: &mut [SocketAddr],
    ) -> io::Result<usize> {
        let count = lens.len().min(peers.len());
        fill_slots(slots, slot_len, offset, count, |i, buf| {
            (lens[i], peers[i]) = self.udp_recv_from(s, buf)?;
            Ok(())
        })
    }

    /// Opens a UDP socket for the exchange with `peer` that began with a datagram on a
    /// forwarding listener bound to `bound` (on `iface`): bound there too (sharing the
    /// address and port with the listener, if it is still open) and connected to `peer`, so
    /// that what is sent on it leaves from the port the peer wrote to, and the peer's further
    /// datagrams arrive on it rather than on the listener. Readiness as for
    /// [`DgramSockets::udp_open`].
    fn udp_reply_open(
        &mut self,
        bound: SocketAddr,
        iface: Option<&str>,
        peer: SocketAddr,
    ) -> io::Result<SockRef>;

    /// Sends one datagram from forwarding listener `listener` to `to`: an answer in an
    /// exchange `to` began there, which has no socket of its own (yet), so it leaves from the
    /// port the peer wrote to.
    fn udp_send_via(&mut self, listener: SockRef, to: SocketAddr, data: &[u8])
        -> io::Result<usize>;

    /// Relays `datagram`, which forwarding listener `listener` received from the local `src`,
    /// to `target` inside the namespace without the guest path, the answers going back to
    /// `src` through `listener` (pasta's loopback bypass, as for
    /// [`StreamSockets::hand_over`]). A driver without a bypass refuses.
    fn relay_datagram(
        &mut self,
        listener: SockRef,
        src: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        let _ = (listener, src, target, datagram);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// ICMP and ICMPv6 echo ("ping") sockets.
pub trait PingSockets: CloseSockets {
    /// Opens an ICMP (ICMPv6 for an IPv6 `dst`) "ping" socket, binds it with echo identifier
    /// `id` where possible (else lets the kernel pick one), and connects it to `dst`. Returns
    /// the socket and the identifier it really uses. Readiness as for UDP.
    fn ping_open(&mut self, bind: Bind<'_>, dst: IpAddr, id: u16) -> io::Result<(SockRef, u16)>;

    /// Sends an echo request (`msg` from the ICMP type byte on; the kernel sets the identifier
    /// and checksum).
    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize>;

    /// Receives one ICMP message (from its type byte on); `WouldBlock` when none is waiting.
    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize>;
}

/// Every kind of host socket: what a driver implements (through the three traits; this one
/// comes for free) and the engine's entry points take.
pub trait HostSockets: StreamSockets + DgramSockets + PingSockets {}

impl<T: StreamSockets + DgramSockets + PingSockets + ?Sized> HostSockets for T {}

impl<T: CloseSockets + ?Sized> CloseSockets for &mut T {
    fn close(&mut self, s: SockRef, reset: bool) {
        (**self).close(s, reset)
    }
}

impl<T: StreamSockets + ?Sized> StreamSockets for &mut T {
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef> {
        (**self).tcp_connect(dst, bind, mss)
    }
    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        (**self).send(s, data)
    }
    fn send_vectored(&mut self, s: SockRef, data: &[&[u8]]) -> io::Result<usize> {
        (**self).send_vectored(s, data)
    }
    fn send_pieces(
        &mut self,
        s: SockRef,
        pieces: &[SendPiece<'_>],
        external: &dyn ExternalPayloads,
    ) -> io::Result<usize> {
        (**self).send_pieces(s, pieces, external)
    }
    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        (**self).peek(s, offset, buf)
    }
    fn peek_slots(
        &mut self,
        s: SockRef,
        offset: usize,
        buf: &mut [u8],
        slots: PeekSlots<'_>,
    ) -> io::Result<Peeked> {
        (**self).peek_slots(s, offset, buf, slots)
    }
    fn peek_lent(
        &mut self,
        s: SockRef,
        offset: usize,
        areas: &mut LentAreas<'_>,
    ) -> io::Result<Peeked> {
        (**self).peek_lent(s, offset, areas)
    }
    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        (**self).discard(s, len)
    }
    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        (**self).send_space(s)
    }
    fn clamp_window(&mut self, s: SockRef, bytes: u32) {
        (**self).clamp_window(s, bytes)
    }
    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        (**self).shutdown_write(s)
    }
    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        (**self).set_interest(s, readable, writable)
    }
    fn hand_over(&mut self, s: SockRef, target: SocketAddr) {
        (**self).hand_over(s, target)
    }
}

impl<T: DgramSockets + ?Sized> DgramSockets for &mut T {
    fn udp_open(&mut self, bind: Bind<'_>, dst: SocketAddr) -> io::Result<SockRef> {
        (**self).udp_open(bind, dst)
    }
    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        (**self).udp_send(s, data)
    }
    fn udp_send_many(&mut self, s: SockRef, datagrams: &[&[u8]]) -> io::Result<usize> {
        (**self).udp_send_many(s, datagrams)
    }
    fn udp_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        (**self).udp_recv(s, buf)
    }
    fn udp_recv_many(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        (**self).udp_recv_many(s, slots, slot_len, offset, lens)
    }
    fn udp_recv_from(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        (**self).udp_recv_from(s, buf)
    }
    fn udp_recv_many_from(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
        peers: &mut [SocketAddr],
    ) -> io::Result<usize> {
        (**self).udp_recv_many_from(s, slots, slot_len, offset, lens, peers)
    }
    fn udp_reply_open(
        &mut self,
        bound: SocketAddr,
        iface: Option<&str>,
        peer: SocketAddr,
    ) -> io::Result<SockRef> {
        (**self).udp_reply_open(bound, iface, peer)
    }
    fn udp_send_via(
        &mut self,
        listener: SockRef,
        to: SocketAddr,
        data: &[u8],
    ) -> io::Result<usize> {
        (**self).udp_send_via(listener, to, data)
    }
    fn relay_datagram(
        &mut self,
        listener: SockRef,
        src: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        (**self).relay_datagram(listener, src, target, datagram)
    }
}

impl<T: PingSockets + ?Sized> PingSockets for &mut T {
    fn ping_open(&mut self, bind: Bind<'_>, dst: IpAddr, id: u16) -> io::Result<(SockRef, u16)> {
        (**self).ping_open(bind, dst, id)
    }
    fn ping_send(&mut self, s: SockRef, msg: &[u8]) -> io::Result<usize> {
        (**self).ping_send(s, msg)
    }
    fn ping_recv(&mut self, s: SockRef, buf: &mut [u8]) -> io::Result<usize> {
        (**self).ping_recv(s, buf)
    }
}

/// Host sockets that refuse everything: for driving only the configuration services (tests,
/// tools) where no flow can be opened.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSockets;

impl CloseSockets for NoSockets {
    fn close(&mut self, _: SockRef, _: bool) {}
}

impl StreamSockets for NoSockets {
    fn tcp_connect(&mut self, _: SocketAddr, _: Bind<'_>, _: Option<u16>) -> io::Result<SockRef> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn send(&mut self, _: SockRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn peek(&mut self, _: SockRef, _: usize, _: &mut [u8]) -> io::Result<Peeked> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn discard(&mut self, _: SockRef, _: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn send_space(&mut self, _: SockRef) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn shutdown_write(&mut self, _: SockRef) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn set_interest(&mut self, _: SockRef, _: bool, _: bool) {}
}

/// Implements [`DgramSockets`] and [`PingSockets`] for a type with TCP sockets only (a test's
/// mock, a benchmark's fake host, [`NoSockets`]): every call is refused as `Unsupported`, so
/// datagram and echo flows fail to open, which the core counts.
#[macro_export]
macro_rules! refuse_datagrams {
    ($t:ty) => {
        impl $crate::flow::DgramSockets for $t {
            fn udp_open(
                &mut self,
                _: $crate::flow::Bind<'_>,
                _: ::std::net::SocketAddr,
            ) -> ::std::io::Result<$crate::flow::SockRef> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn udp_send(&mut self, _: $crate::flow::SockRef, _: &[u8]) -> ::std::io::Result<usize> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn udp_recv(
                &mut self,
                _: $crate::flow::SockRef,
                _: &mut [u8],
            ) -> ::std::io::Result<usize> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn udp_recv_from(
                &mut self,
                _: $crate::flow::SockRef,
                _: &mut [u8],
            ) -> ::std::io::Result<(usize, ::std::net::SocketAddr)> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn udp_reply_open(
                &mut self,
                _: ::std::net::SocketAddr,
                _: Option<&str>,
                _: ::std::net::SocketAddr,
            ) -> ::std::io::Result<$crate::flow::SockRef> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn udp_send_via(
                &mut self,
                _: $crate::flow::SockRef,
                _: ::std::net::SocketAddr,
                _: &[u8],
            ) -> ::std::io::Result<usize> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
        }

        impl $crate::flow::PingSockets for $t {
            fn ping_open(
                &mut self,
                _: $crate::flow::Bind<'_>,
                _: ::std::net::IpAddr,
                _: u16,
            ) -> ::std::io::Result<($crate::flow::SockRef, u16)> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn ping_send(
                &mut self,
                _: $crate::flow::SockRef,
                _: &[u8],
            ) -> ::std::io::Result<usize> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
            fn ping_recv(
                &mut self,
                _: $crate::flow::SockRef,
                _: &mut [u8],
            ) -> ::std::io::Result<usize> {
                Err(::std::io::ErrorKind::Unsupported.into())
            }
        }
    };
}

refuse_datagrams!(NoSockets);

/// What happened on a host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockEvent {
    /// A non-blocking connect completed.
    Connected,
    /// Data (or the end of the stream) may be available.
    Readable,
    /// Send space is available again.
    Writable,
    /// The peer closed its sending direction (we read end of stream).
    PeerClosed,
    /// The connection failed or was reset; the errno.
    Error(i32),
}

/// Transport protocols the flow layer translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A socket the driver should listen on for port forwarding into the guest (for UDP, a bound
/// socket it hands to `Engine::add_udp_listener`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenSpec {
    pub proto: Proto,
    /// Local address to bind, `None` for any (both families where possible).
    pub addr: Option<IpAddr>,
    /// Interface to bind to.
    pub iface: Option<String>,
    pub port: u16,
}

/// Whether `a` names one host (not a broadcast, multicast or unspecified address): the only
/// sources and destinations flows, TCP or datagram, are made for.
pub fn unicast(a: std::net::IpAddr) -> bool {
    match a {
        std::net::IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
        std::net::IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}
