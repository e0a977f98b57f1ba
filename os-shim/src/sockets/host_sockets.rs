//! [`HostSockets`](sans_io::flow::HostSockets) for the core: TCP streams (connect, send, peek at an offset, discard what
//! the guest acknowledged, free send space), UDP and ICMP echo ("ping") datagrams.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use sans_io::flow::{
    peek_each, peek_lent_copying, send_pieces_copying, Bind, CloseSockets, DgramSockets, PeekSlots,
    Peeked, PingSockets, SockRef, StreamSockets,
};
use sans_io::wire::external::{ExternalPayloads, SendPiece};

use sans_io::wire::lent::{LentAreas, MAX_LENT_AREAS};

use super::table::{PeekOff, State};
use super::{udp_gro, Sockets};
use crate::dgram_relay::HostSocket;
use crate::socket_sys::tcp_info::{at_eof, send_space};
use crate::socket_sys::udp_gso::send_datagrams_segmented;
use crate::socket_sys::{
    bind_addr, bind_outbound, bind_to_device, connect_to, dgram_socket, in_family_of, local_addr,
    prepare_stream, readable_bytes, retry, send_iovec_nonblocking, send_nonblocking,
    send_to_nonblocking, send_vectored_nonblocking, setsockopt_int, sockaddr_to_std, stream_socket,
    udp_reply_socket, unmap, SEND_IOV_MAX,
};

/// Areas one vectored peek fills at most (the core asks for fewer).
const PEEK_IOV_MAX: usize = 64;

/// Datagrams received per `recvmmsg` call at most.
const RECV_MANY_MAX: usize = 64;

impl CloseSockets for Sockets {
    fn close(&mut self, s: SockRef, reset: bool) {
        self.close_socket(s, reset);
    }
}

/// The largest TCP_MAXSEG the kernel takes (MAX_TCP_WINDOW); it refuses more with EINVAL, so
/// the guest's MSS at a 65520-byte MTU isn't worth a system call per connection.
const MAX_TCP_MAXSEG: u16 = 32767;

impl StreamSockets for Sockets {
    fn tcp_connect(
        &mut self,
        dst: SocketAddr,
        bind: Bind<'_>,
        mss: Option<u16>,
    ) -> io::Result<SockRef> {
        let fd = self.counted(stream_socket(dst.ip()))?;
        let raw = fd.as_raw_fd();
        bind_outbound(raw, bind, dst)?;
        if let Some(mss) = mss.filter(|&m| m <= MAX_TCP_MAXSEG) {
            // Best effort: the kernel clamps it anyway.
            let _ = setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_MAXSEG, i32::from(mss));
        }
        prepare_stream(raw);
        match connect_to(raw, dst) {
            // Connected at once or not, the completion is reported from epoll (a connected
            // socket is writable at once): nothing is queued from within the core's call.
            Ok(()) => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EINPROGRESS) | Some(libc::EINTR) => {}
                _ => return Err(e),
            },
        }
        let index = self.insert(fd, State::Connecting)?;
        self.stats.connects += 1;
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
        send_nonblocking(fd, data)
    }

    fn send_vectored(&mut self, s: SockRef, data: &[&[u8]]) -> io::Result<usize> {
        let (slot, fd) = self.slot(s)?;
        if slot.state == State::Connecting {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match data {
            [] => Ok(0),
            [one] => self.send(s, one),
            _ => send_vectored_nonblocking(fd, data),
        }
    }

    fn send_pieces(
        &mut self,
        s: SockRef,
        pieces: &[SendPiece<'_>],
        external: &dyn ExternalPayloads,
    ) -> io::Result<usize> {
        let (slot, fd) = self.slot(s)?;
        if slot.state == State::Connecting {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_IOV_MAX];
        let mut n = 0;
        let mut push = |base: *const u8, len: usize| {
            if len > 0 {
                if let Some(v) = iov.get_mut(n) {
                    *v = libc::iovec {
                        iov_base: base.cast_mut().cast(),
                        iov_len: len,
                    };
                }
                n += 1;
            }
        };
        // Payload in the guest's memory reaches the kernel only as the link lent it (see
        // `crate::tx_loans`); anything else is copied through the link.
        let mut lent = true;
        for piece in pieces {
            match *piece {
                SendPiece::Bytes(bytes) => push(bytes.as_ptr(), bytes.len()),
                SendPiece::External(p) => {
                    lent &= crate::tx_loans::areas_of(p, |a| push(a.addr as *const u8, a.len))
                }
            }
        }
        if !lent || n > SEND_IOV_MAX {
            return send_pieces_copying(pieces, external, |bytes| send_nonblocking(fd, bytes));
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the iovecs point at slices alive for the call, or at areas the link lent
        // for reads until its batch of frames is over, after this call.
        unsafe { send_iovec_nonblocking(fd, &iov[..n]) }
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let (slot, fd) = self.slot(s)?;
        if slot.state == State::Connecting {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        if buf.is_empty() {
            return Ok(Peeked::default());
        }
        if !self.seek_peek_off(s.0, fd, offset)? {
            let (slot, _) = self.slot(s)?;
            // `EPOLLRDHUP` comes once every byte before the end is queued: after it, a short
            // peek reached the end.
            let rdhup_seen = slot.end_seen();
            let n = self.peek_fallback(fd, offset, buf)?;
            if n < buf.len() {
                self.saw_all(s);
            }
            let eof = if n == 0 {
                readable_bytes(fd).is_ok_and(|q| q <= offset) && at_eof(fd)
            } else {
                n < buf.len() && rdhup_seen
            };
            if eof {
                self.saw_eof(s);
            }
            return Ok(Peeked { n, eof });
        }
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        self.peek_at_offset(s, fd, &mut iov)
    }

    fn peek_slots(
        &mut self,
        s: SockRef,
        offset: usize,
        buf: &mut [u8],
        slots: PeekSlots<'_>,
    ) -> io::Result<Peeked> {
        let (slot, fd) = self.slot(s)?;
        let vectored = slot.state != State::Connecting
            && (2..=PEEK_IOV_MAX).contains(&slots.lens.len())
            && slots.area(slots.lens.len() - 1).end <= buf.len()
            && self.seek_peek_off(s.0, fd, offset)?;
        if !vectored {
            return peek_each(buf, slots, |at, area| self.peek(s, offset + at, area));
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; PEEK_IOV_MAX];
        let base = buf.as_mut_ptr();
        for (i, v) in iov.iter_mut().enumerate().take(slots.lens.len()) {
            let area = slots.area(i);
            // SAFETY: `area` lies inside `buf` (checked above for the last, furthest one).
            v.iov_base = unsafe { base.add(area.start) }.cast();
            v.iov_len = area.len();
        }
        self.peek_at_offset(s, fd, &mut iov[..slots.lens.len()])
    }

    fn peek_lent(
        &mut self,
        s: SockRef,
        offset: usize,
        areas: &mut LentAreas<'_>,
    ) -> io::Result<Peeked> {
        let (slot, fd) = self.slot(s)?;
        let lent = areas.areas();
        // Only what our own lender lent reaches the kernel (see `crate::loans`).
        let vectored = slot.state != State::Connecting
            && lent.len() <= MAX_LENT_AREAS
            && crate::loans::are_lent(lent)
            && self.seek_peek_off(s.0, fd, offset)?;
        if !vectored {
            return peek_lent_copying(areas, |at, buf| self.peek(s, offset + at, buf));
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_LENT_AREAS];
        // The areas stay mapped and ours until the lender settles, after this call.
        for (v, area) in iov.iter_mut().zip(lent) {
            v.iov_base = area.addr as *mut libc::c_void;
            v.iov_len = area.len;
        }
        self.peek_at_offset(s, fd, &mut iov[..lent.len()])
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

    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        let (_, fd) = self.slot(s)?;
        send_space(fd)
    }

    fn clamp_window(&mut self, s: SockRef, bytes: u32) {
        let Ok((_, fd)) = self.slot(s) else { return };
        // The kernel refuses 0 on a connected socket and raises anything below its minimum
        // (half of SOCK_MIN_RCVBUF) to that: a closed guest window gives the smallest bound.
        let clamp = bytes.clamp(1, i32::MAX as u32) as i32;
        if setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, clamp).is_ok() {
            self.stats.window_clamps += 1;
        }
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        let (_, fd) = self.slot(s)?;
        // SAFETY: plain system call.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn hand_over(&mut self, s: SockRef, target: SocketAddr) {
        if self.bypass.is_none() {
            // Nothing to relay it: reset, as a relay that fails does.
            return self.close_socket(s, true);
        }
        let Some(fd) = self.take_socket(s) else {
            return;
        };
        if let Some(bypass) = self.bypass.as_mut() {
            if let Err(e) = bypass.hand_over_stream(fd, target) {
                log::debug!("cannot relay a local connection to {target}: {e}");
            }
        }
    }

    fn set_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        self.set_socket_interest(s, readable, writable);
    }
}

impl DgramSockets for Sockets {
    fn udp_open(&mut self, bind: Bind<'_>, dst: SocketAddr) -> io::Result<SockRef> {
        let fd = self.counted(dgram_socket(dst.ip(), libc::IPPROTO_UDP))?;
        let raw = fd.as_raw_fd();
        bind_outbound(raw, bind, dst)?;
        connect_to(raw, dst)?;
        let index = self.insert_flow_dgram(fd)?;
        Ok(SockRef(index))
    }

    fn udp_send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        send_nonblocking(fd, data)
    }

    fn udp_send_many(&mut self, s: SockRef, datagrams: &[&[u8]]) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        match datagrams {
            [] => Ok(0),
            [one] => send_nonblocking(fd, one).map(|_| 1),
            _ => {
                // The slot and the counters are apart: what the socket learns stays in it.
                let slot = self
                    .slots
                    .at_mut(s.0 as usize)
                    .ok_or(io::Error::from_raw_os_error(libc::EBADF))?;
                send_datagrams_segmented(
                    fd,
                    datagrams,
                    None,
                    &mut slot.segmentation,
                    &mut self.stats.segmented_sends,
                )
            }
        }
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
        let count = receivable(slots, slot_len, offset, lens.len());
        if count == 0 {
            return Ok(0);
        }
        let slot = self
            .slots
            .at_mut(s.0 as usize)
            .ok_or(io::Error::from_raw_os_error(libc::EBADF))?;
        if let Some(gro) = slot.gro.as_mut() {
            let lens = &mut lens[..count];
            let (spill, counts) = (&mut self.spill, &mut self.stats.received_runs);
            let got = udp_gro::recv_many(fd, slots, slot_len, offset, lens, gro, spill, counts)?;
            if gro.has_pending() {
                // Reported readable again after the wake-up (see `after_batch`).
                self.recheck.push(s.0);
            }
            return Ok(got);
        }
        recv_into_slots(fd, slots, slot_len, offset, &mut lens[..count], None)
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

    fn udp_recv_many_from(
        &mut self,
        s: SockRef,
        slots: &mut [u8],
        slot_len: usize,
        offset: usize,
        lens: &mut [usize],
        peers: &mut [SocketAddr],
    ) -> io::Result<usize> {
        let (_, fd) = self.slot(s)?;
        let count = receivable(slots, slot_len, offset, lens.len().min(peers.len()));
        if count == 0 {
            return Ok(0);
        }
        recv_into_slots(
            fd,
            slots,
            slot_len,
            offset,
            &mut lens[..count],
            Some(&mut peers[..count]),
        )
    }

    fn udp_reply_open(
        &mut self,
        bound: SocketAddr,
        iface: Option<&str>,
        peer: SocketAddr,
    ) -> io::Result<SockRef> {
        let fd = self.counted(udp_reply_socket(bound, iface, peer))?;
        let index = self.insert_flow_dgram(fd)?;
        Ok(SockRef(index))
    }

    fn udp_send_via(
        &mut self,
        listener: SockRef,
        to: SocketAddr,
        data: &[u8],
    ) -> io::Result<usize> {
        let Some((local, _)) = self.udp_listeners.get(&listener) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let to = in_family_of(*local, to);
        let (_, fd) = self.slot(listener)?;
        send_to_nonblocking(fd, data, &to)
    }

    fn relay_datagram(
        &mut self,
        listener: SockRef,
        src: SocketAddr,
        target: SocketAddr,
        datagram: &[u8],
    ) -> io::Result<()> {
        let (Some(slot), Some(bypass)) = (self.slots.at(listener.0 as usize), self.bypass.as_mut())
        else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let Some((local, iface)) = self.udp_listeners.get(&listener) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let socket = HostSocket {
            key: u64::from(listener.0),
            fd: slot.fd.as_fd(),
            local: *local,
            iface: iface.as_deref(),
        };
        bypass.hand_over_datagram(socket, src, target, datagram)
    }
}

impl PingSockets for Sockets {
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
}

impl Sockets {
    /// Peeks into `iov` from where [`Sockets::seek_peek_off`] put the kernel's peek offset (or
    /// found it unset, at offset 0).
    fn peek_at_offset(
        &mut self,
        s: SockRef,
        fd: RawFd,
        iov: &mut [libc::iovec],
    ) -> io::Result<Peeked> {
        let (slot, _) = self.slot(s)?;
        // `EPOLLRDHUP` comes once every byte before the end is queued: after it, a short peek
        // reached the end.
        let rdhup_seen = slot.end_seen();
        let asked: usize = iov.iter().map(|v| v.iov_len).sum();
        match recv_peek(fd, iov) {
            Ok(0) => {
                self.saw_eof(s);
                self.saw_all(s);
                Ok(Peeked::last(0))
            }
            Ok(n) => {
                self.peeked(s, n);
                if n < asked {
                    self.saw_all(s);
                }
                Ok(Peeked {
                    n,
                    eof: n < asked && rdhup_seen,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.saw_all(s);
                Ok(Peeked::default())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn peek_fallback(
        &mut self,
        fd: RawFd,
        offset: usize,
        buf: &mut [u8],
    ) -> io::Result<usize> {
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
        match recv_peek(fd, &mut iov) {
            Ok(n) => Ok(n.saturating_sub(offset)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// A peek met the end of the stream: no `PeerClosed` report is needed for it any more
    /// (the core learnt it from the peek).
    pub(super) fn saw_eof(&mut self, s: SockRef) {
        if let Some(slot) = self.slots.at_mut(s.0 as usize) {
            slot.peer_closed = true;
        }
    }

    /// The kernel lowers its peek offset by what a discard consumes; so does our shadow.
    pub(super) fn moved_back(&mut self, s: SockRef, consumed: usize) {
        if let Some(slot) = self.slots.at_mut(s.0 as usize) {
            if let PeekOff::At(off) = &mut slot.peek_off {
                *off = off.saturating_sub(consumed);
            }
        }
    }

    /// A peek took `n` bytes: a set peek offset moved past them (an unset one stays).
    fn peeked(&mut self, s: SockRef, n: usize) {
        if let Some(slot) = self.slots.at_mut(s.0 as usize) {
            if let PeekOff::At(off) = &mut slot.peek_off {
                *off += n;
            }
        }
    }
}

/// `recvmsg(MSG_PEEK | MSG_DONTWAIT)` into `iov`: copies without consuming.
fn recv_peek(fd: RawFd, iov: &mut [libc::iovec]) -> io::Result<usize> {
    // SAFETY: zeroed msghdr is valid; we point it at the caller's iovecs.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: the iovecs describe buffers the caller lends us for the duration of the call.
    retry(|| unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) })
}

/// How many datagrams one receive into `slots` takes at most: `wanted`, as many as there are
/// slots, [`RECV_MANY_MAX`]; none if `offset` leaves a slot no room.
fn receivable(slots: &[u8], slot_len: usize, offset: usize, wanted: usize) -> usize {
    if offset >= slot_len {
        return 0;
    }
    wanted
        .min(RECV_MANY_MAX)
        .min(slots.len().checked_div(slot_len).unwrap_or(0))
}

/// One `recvmmsg` of up to `lens.len()` datagrams from `fd`: datagram `i` into
/// `slots[i * slot_len + offset..(i + 1) * slot_len]` (truncated to it), its length into
/// `lens[i]` and, with `peers`, its source into `peers[i]` (unspecified if the kernel gave
/// none it could say). Returns how many arrived; `WouldBlock` when none was waiting.
fn recv_into_slots(
    fd: RawFd,
    slots: &mut [u8],
    slot_len: usize,
    offset: usize,
    lens: &mut [usize],
    mut peers: Option<&mut [SocketAddr]>,
) -> io::Result<usize> {
    let count = lens.len().min(RECV_MANY_MAX);
    // SAFETY: plain old data; zero is a valid (empty) value for each.
    let mut iov: [libc::iovec; RECV_MANY_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; RECV_MANY_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; RECV_MANY_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        let buf = &mut slots[i * slot_len + offset..(i + 1) * slot_len];
        iov[i] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_iov = &mut iov[i];
        hdr.msg_iovlen = 1;
        if peers.is_some() {
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
    }
    // SAFETY: each message points at one iovec over a distinct part of `slots` and, when
    // asked for, at a name buffer of its own, all of which outlive the call.
    let n = retry(|| unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        ) as isize
    })?;
    for (i, msg) in msgs[..n].iter().enumerate() {
        lens[i] = msg.msg_len as usize;
        if let Some(peers) = peers.as_deref_mut() {
            let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            peers[i] =
                sockaddr_to_std(&names[i], msg.msg_hdr.msg_namelen).map_or(unspecified, unmap);
        }
    }
    Ok(n)
}
