//! The table of the engine's sockets: `crate::slots` with a generation each (an epoll token
//! names both), what the core wants reported and what epoll is asked for, and the translation of
//! epoll's events into [`SockEvent`]s.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::epoll::{EpollEvent, EpollFlags};
use sans_io::flow::{SockEvent, SockRef};

use super::udp_gro::GroState;
use super::{Report, Sockets};
use crate::socket_sys::udp_gro::enable_gro;
use crate::socket_sys::udp_gso::Segmentation;
use crate::socket_sys::{reset_on_close, setsockopt_int, so_error};
use crate::tokens::socket_token;

/// What the kernel lets us do with `SO_PEEK_OFF` on TCP sockets (Linux 6.9 onwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeekOffCap {
    Unknown,
    Yes,
    No,
}

/// A stream socket's peek offset in the kernel, as far as we know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeekOff {
    /// The kernel keeps none for this socket: peeks copy the bytes before the offset aside.
    Unsupported,
    /// Never set (the kernel's -1): a peek reads from the first unread byte and moves
    /// nothing, which is what a peek at offset 0 wants. Set only once a peek wants another
    /// offset, so that a connection whose peeks all start at its first unacknowledged byte
    /// (a request's answer, acknowledged before the next) costs no system call for it.
    Unset,
    /// Set: where the kernel's offset is, as we last set or moved it.
    At(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// A non-blocking connect is under way.
    Connecting,
    Connected,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) fd: OwnedFd,
    pub(super) state: State,
    /// The kernel's peek offset (stream sockets; `Unsupported` for datagram ones).
    pub(super) peek_off: PeekOff,
    /// What the core wants reported.
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The epoll events registered.
    pub(super) registered: EpollFlags,
    /// The end of the stream was reported (once), or a peek told the core.
    pub(super) peer_closed: bool,
    /// An error was reported (once).
    pub(super) errored: bool,
    /// `EPOLLHUP` or `EPOLLERR` was seen: registered edge-triggered from then on.
    pub(super) hung_up: bool,
    /// A stream socket: watched edge-triggered for everything whatever the core's interest,
    /// its readiness kept here (see [`Sockets::after_batch`]), so that the core turning its
    /// interests off and on costs no system call (but for a poll when it starts waiting for
    /// room).
    pub(super) edge: bool,
    /// Input arrived (an edge) that no peek has seen the end of since: a peek that comes back
    /// short has seen everything the socket holds.
    pub(super) unread: bool,
    /// The end of the stream arrived while readable interest was off.
    pub(super) end_missed: bool,
    /// `Writable` was reported this wake-up.
    pub(super) out_reported: bool,
    /// For UDP: which datagram sizes may go as one segmented send.
    pub(super) segmentation: Segmentation,
    /// For a UDP flow socket taking runs (`UDP_GRO`): what its receives left for the next.
    pub(super) gro: Option<GroState>,
}

impl Slot {
    /// Whether the end of the stream was seen (reported, met by a peek, or arrived while the
    /// core's interest was off): a short peek then reached it.
    pub(super) fn end_seen(&self) -> bool {
        self.peer_closed || self.end_missed
    }
}

impl Sockets {
    pub(super) fn socket_ready(&mut self, index: u32, gen: u32, flags: EpollFlags) {
        let Some(slot) = self.slots.get_mut(index as usize, gen) else {
            self.stats.stale_events += 1;
            return;
        };
        let raw = slot.fd.as_raw_fd();
        let (state, errored, hung_up) = (slot.state, slot.errored, slot.hung_up);
        let trouble = flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
        if slot.edge {
            // An edge is reported once: what the core doesn't want now is kept for when it does
            // (input may come with a connect's completion: the core wants none before it).
            if flags.contains(EpollFlags::EPOLLIN) {
                slot.unread = true;
            }
            if !slot.readable && flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
                slot.end_missed = true;
            }
        }
        if trouble && !hung_up {
            // Those stay set: from now on, only changes.
            slot.hung_up = true;
            self.update_registration(index);
        }
        if errored {
            return;
        }
        if state == State::Connecting {
            if !trouble && !flags.contains(EpollFlags::EPOLLOUT) {
                return;
            }
            // Writable without trouble is a connect that succeeded: only trouble needs its
            // error read.
            let error = if trouble { so_error(raw) } else { 0 };
            match error {
                0 if flags.contains(EpollFlags::EPOLLOUT)
                    && !flags.contains(EpollFlags::EPOLLERR) =>
                {
                    // Registered for everything from the start (see `wanted_events`): no
                    // epoll_ctl here, and none follows unless the core asks for room.
                    self.update_slot(index, |s| s.state = State::Connected);
                    self.push(index, SockEvent::Connected);
                    if self.slots.at(index as usize).is_some_and(|s| s.writable) {
                        self.reregister(index);
                    }
                }
                0 => {}
                e => {
                    self.update_slot(index, |s| s.errored = true);
                    self.push(index, SockEvent::Error(e));
                }
            }
            return;
        }
        if flags.contains(EpollFlags::EPOLLERR) {
            let e = so_error(raw);
            if e != 0 {
                self.update_slot(index, |s| s.errored = true);
                self.push(index, SockEvent::Error(e));
                return;
            }
        }
        let Some(slot) = self.slots.at(index as usize) else {
            return;
        };
        let (readable, writable, peer_closed) = (slot.readable, slot.writable, slot.peer_closed);
        if readable && flags.contains(EpollFlags::EPOLLIN) {
            self.push_readable(index);
        }
        if readable
            && !peer_closed
            && flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP)
        {
            self.update_slot(index, |s| s.peer_closed = true);
            self.push(index, SockEvent::PeerClosed);
        }
        if writable && flags.contains(EpollFlags::EPOLLOUT) {
            self.push(index, SockEvent::Writable);
            self.update_slot(index, |s| s.out_reported = true);
            self.recheck.push(index);
        }
    }

    /// Reports `Readable` for socket `index`, unless that waits among the reports already;
    /// an edge-triggered one is looked at again once the wake-up is over.
    fn push_readable(&mut self, index: u32) {
        let queued = self
            .reports
            .iter()
            .any(|(_, r)| *r == Report::Event(SockRef(index), SockEvent::Readable));
        if !queued {
            self.push(index, SockEvent::Readable);
        }
        if self.slots.at(index as usize).is_some_and(|s| s.edge) {
            self.recheck.push(index);
        }
    }

    /// After a wake-up's batch: what level-triggered readiness would report at the next wait,
    /// for the stream sockets watched edge-triggered. Readable again where the core still
    /// wants input and no peek since the last edge came back short (it stopped at the guest's
    /// window or its frames, say); writable again where the core still waits for room after
    /// hearing of some (one `epoll_ctl`, whose poll reports it if the room is there). Reports
    /// queued here are the next wake-up's: [`Sockets::has_reports`] says not to wait.
    pub fn after_batch(&mut self) {
        let mut recheck = std::mem::take(&mut self.recheck);
        for &index in &recheck {
            let Some(slot) = self.slots.at_mut(index as usize) else {
                continue;
            };
            let out_reported = std::mem::take(&mut slot.out_reported);
            if slot.state != State::Connected || slot.errored {
                continue;
            }
            // A stream socket's input left unread, or a datagram socket's run partly handed
            // over (the socket itself may be empty: no epoll event would tell of the rest).
            let pending = slot.gro.as_ref().is_some_and(GroState::has_pending);
            let (read_again, poll_out) = (
                slot.readable && (slot.unread || pending),
                out_reported && slot.writable,
            );
            if read_again {
                self.push_readable(index);
            }
            if poll_out {
                self.reregister(index);
            }
        }
        // The reports just queued put their sockets on the list for the next wake-up.
        recheck.clear();
        recheck.append(&mut self.recheck);
        self.recheck = recheck;
    }

    /// Changes the socket in slot `index`, if there is one.
    fn update_slot(&mut self, index: u32, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.slots.at_mut(index as usize) {
            change(slot);
        }
    }

    /// Puts a stream socket in a free slot and registers it, edge-triggered for everything
    /// (the connect's completion too), with both of the core's interests off: the core wants
    /// nothing from a connection before the guest completes its handshake, and says so when
    /// it does, which costs no `epoll_ctl` (what arrived meanwhile is kept, see
    /// [`Slot::unread`]).
    pub(super) fn insert(&mut self, fd: OwnedFd, state: State) -> io::Result<u32> {
        let peek_off = match self.peek_off {
            PeekOffCap::No => PeekOff::Unsupported,
            PeekOffCap::Unknown | PeekOffCap::Yes => PeekOff::Unset,
        };
        self.insert_with(fd, state, peek_off, false)
    }

    /// Puts a datagram socket (no peek offset: whether datagram sockets support one says
    /// nothing of stream sockets) in a free slot and registers it.
    pub(super) fn insert_dgram(&mut self, fd: OwnedFd) -> io::Result<u32> {
        self.insert_with(fd, State::Connected, PeekOff::Unsupported, true)
    }

    /// [`Sockets::insert_dgram`] for a UDP flow socket, which takes runs of datagrams whole
    /// where the kernel can (`UDP_GRO`; see `udp_gro`).
    pub(super) fn insert_flow_dgram(&mut self, fd: OwnedFd) -> io::Result<u32> {
        let gro = enable_gro(fd.as_raw_fd());
        let index = self.insert_dgram(fd)?;
        if gro {
            self.update_slot(index, |s| s.gro = Some(GroState::default()));
        }
        Ok(index)
    }

    pub(super) fn insert_with(
        &mut self,
        fd: OwnedFd,
        state: State,
        peek_off: PeekOff,
        readable: bool,
    ) -> io::Result<u32> {
        let mut slot = Slot {
            fd,
            state,
            peek_off,
            readable,
            writable: false,
            registered: EpollFlags::empty(),
            peer_closed: false,
            errored: false,
            hung_up: false,
            // Stream sockets (the core's interest off at first) are watched edge-triggered;
            // datagram sockets (readable from the start) level-triggered: the core reads them
            // until they are empty.
            edge: !readable,
            unread: false,
            end_missed: false,
            out_reported: false,
            segmentation: Segmentation::default(),
            gro: None,
        };
        slot.registered = wanted_events(&slot);
        let (index, gen) = self
            .slots
            .insert(slot)
            .map_err(|_| io::Error::from_raw_os_error(libc::EMFILE))?;
        if let Some(epoll) = &self.epoll {
            let slot = self.slots.at(index).expect("just inserted");
            let token = socket_token(index as u32, gen);
            if let Err(e) = epoll.add(&slot.fd, EpollEvent::new(slot.registered, token)) {
                self.slots.remove(index);
                return Err(e.into());
            }
        }
        self.open += 1;
        Ok(index as u32)
    }

    /// Sets the kernel's peek offset of slot `index` (socket `fd`) to `offset` unless it is
    /// there already, or, never set, reads from there anyway (offset 0). False where the
    /// kernel keeps no peek offset: the caller copies the bytes before `offset` aside.
    pub(super) fn seek_peek_off(
        &mut self,
        index: u32,
        fd: RawFd,
        offset: usize,
    ) -> io::Result<bool> {
        let Some(slot) = self.slots.at_mut(index as usize) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let was = slot.peek_off;
        match was {
            PeekOff::Unsupported => return Ok(false),
            PeekOff::Unset if offset == 0 => return Ok(true),
            PeekOff::At(at) if at == offset => return Ok(true),
            PeekOff::Unset | PeekOff::At(_) => {}
        }
        let off = i32::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off) {
            Ok(()) => {
                slot.peek_off = PeekOff::At(offset);
                self.peek_off = PeekOffCap::Yes;
                if was != PeekOff::Unset {
                    self.stats.peek_seeks += 1;
                }
                Ok(true)
            }
            // The first time: the kernel has no peek offset for TCP (before Linux 6.9).
            Err(_) if was == PeekOff::Unset => {
                slot.peek_off = PeekOff::Unsupported;
                self.peek_off = PeekOffCap::No;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets what the kernel supports (tests: to exercise the fallback).
    #[cfg(test)]
    pub(super) fn disable_peek_off(&mut self) {
        self.peek_off = PeekOffCap::No;
    }

    pub(super) fn update_registration(&mut self, index: u32) {
        let Some(gen) = self.slots.gen(index as usize) else {
            return;
        };
        let Some(slot) = self.slots.at_mut(index as usize) else {
            return;
        };
        let wanted = wanted_events(slot);
        if wanted == slot.registered {
            return;
        }
        slot.registered = wanted;
        self.stats.epoll_updates += 1;
        if let Some(epoll) = &self.epoll {
            let mut ev = EpollEvent::new(wanted, socket_token(index, gen));
            // Can only fail for a descriptor epoll doesn't know, which would be our bug.
            let _ = epoll.modify(&slot.fd, &mut ev);
        }
    }

    /// Registers socket `index` again as it is: epoll polls it, and reports what is ready.
    fn reregister(&mut self, index: u32) {
        let (Some(gen), Some(slot)) = (
            self.slots.gen(index as usize),
            self.slots.at(index as usize),
        ) else {
            return;
        };
        self.stats.epoll_updates += 1;
        if let Some(epoll) = &self.epoll {
            let mut ev = EpollEvent::new(slot.registered, socket_token(index, gen));
            let _ = epoll.modify(&slot.fd, &mut ev);
        }
    }

    /// A peek of socket `s` came back short: it saw everything the socket holds.
    pub(super) fn saw_all(&mut self, s: SockRef) {
        self.update_slot(s.0, |slot| slot.unread = false);
    }

    pub(super) fn slot(&self, s: SockRef) -> io::Result<(&Slot, RawFd)> {
        match self.slots.at(s.0 as usize) {
            Some(slot) => Ok((slot, slot.fd.as_raw_fd())),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Closes socket `s`, resetting the connection with `reset`.
    pub(super) fn close_socket(&mut self, s: SockRef, reset: bool) {
        let Some(Slot { fd, .. }) = self.slots.remove(s.0 as usize) else {
            return;
        };
        if reset {
            reset_on_close(fd.as_raw_fd());
            self.stats.resets += 1;
        }
        // Ours is the only descriptor of the socket: closing it takes it off epoll (no
        // EPOLL_CTL_DEL, one system call a connection).
        drop(fd);
        self.open -= 1;
        // A descriptor is free: listeners that ran out may accept again.
        self.resume_listeners(None);
        if let Some(bypass) = self.bypass.as_mut() {
            bypass.splicer.descriptors_freed();
        }
    }

    /// Takes socket `s` out of our hands, open: off epoll and out of the table.
    pub(super) fn take_socket(&mut self, s: SockRef) -> Option<OwnedFd> {
        let Slot { fd, .. } = self.slots.remove(s.0 as usize)?;
        if let Some(epoll) = &self.epoll {
            let _ = epoll.delete(fd.as_fd());
        }
        self.open -= 1;
        Some(fd)
    }

    /// What the core wants to hear about socket `s`.
    pub(super) fn set_socket_interest(&mut self, s: SockRef, readable: bool, writable: bool) {
        let Some(slot) = self.slots.at_mut(s.0 as usize) else {
            return;
        };
        let turned_on = readable && !slot.readable;
        let room_wanted = writable && !slot.writable;
        slot.readable = readable;
        slot.writable = writable;
        if turned_on && slot.edge && slot.state == State::Connected && !slot.errored {
            // What level-triggered readiness would report as the interest comes back.
            let (unread, end) = (slot.unread, slot.end_missed && !slot.peer_closed);
            if end {
                slot.peer_closed = true;
            }
            if unread {
                self.push_readable(s.0);
            }
            if end {
                self.push(s.0, SockEvent::PeerClosed);
            }
        }
        let Some(slot) = self.slots.at(s.0 as usize) else {
            return;
        };
        if slot.edge {
            if room_wanted && slot.state == State::Connected {
                // Output is watched edge-triggered all along, and its last edge may be long
                // gone: epoll polls the socket again, and reports the room if it is there now.
                self.reregister(s.0);
            }
        } else {
            self.update_registration(s.0);
        }
    }
}

pub(super) fn wanted_events(slot: &Slot) -> EpollFlags {
    if slot.edge {
        // Everything, from the connect on: what the core doesn't want is kept or dropped
        // here, so that neither a connect's completion nor the core's interests coming and
        // going costs an epoll_ctl. An output edge comes only once a send found the buffer
        // full, when the core waits for room anyway.
        return EpollFlags::EPOLLIN
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLET;
    }
    // Datagram sockets: level-triggered, what the core wants.
    let mut f = if slot.hung_up {
        EpollFlags::EPOLLET
    } else {
        EpollFlags::empty()
    };
    if slot.readable {
        f |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if slot.writable {
        f |= EpollFlags::EPOLLOUT;
    }
    f
}
