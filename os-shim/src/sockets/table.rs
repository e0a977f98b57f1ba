//! The table of the engine's sockets: `crate::slots` with a generation each (an epoll token
//! names both), what the core wants reported and what epoll is asked for, and the translation of
//! epoll's events into [`SockEvent`]s.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::epoll::{EpollEvent, EpollFlags};
use sans_io::flow::{SockEvent, SockRef};

use super::Sockets;
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
    /// The kernel's peek offset, as we last set or moved it; `None` without `SO_PEEK_OFF`.
    pub(super) peek_off: Option<usize>,
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
    /// For UDP: which datagram sizes may go as one segmented send.
    pub(super) segmentation: Segmentation,
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
                    // Both interests are off (see `insert`): one epoll_ctl takes the
                    // connect's watch off, and none follows unless the core asks.
                    self.update_slot(index, |s| s.state = State::Connected);
                    self.push(index, SockEvent::Connected);
                    self.update_registration(index);
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
            self.push(index, SockEvent::Readable);
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
        }
    }

    /// Changes the socket in slot `index`, if there is one.
    fn update_slot(&mut self, index: u32, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.slots.at_mut(index as usize) {
            change(slot);
        }
    }

    /// Puts a stream socket in a free slot and registers it, with both interests off: the
    /// core wants nothing from a connection before the guest completes its handshake, and says
    /// so when it does (one `epoll_ctl` fewer per connection than registering it readable).
    pub(super) fn insert(&mut self, fd: OwnedFd, state: State) -> io::Result<u32> {
        let peek_off = self.init_peek_off(fd.as_raw_fd());
        self.insert_with(fd, state, peek_off, false)
    }

    /// Puts a datagram socket (no peek offset: whether datagram sockets support one says
    /// nothing of stream sockets) in a free slot and registers it.
    pub(super) fn insert_dgram(&mut self, fd: OwnedFd) -> io::Result<u32> {
        self.insert_with(fd, State::Connected, None, true)
    }

    pub(super) fn insert_with(
        &mut self,
        fd: OwnedFd,
        state: State,
        peek_off: Option<usize>,
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
            segmentation: Segmentation::default(),
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

    /// Sets the kernel's peek offset to 0 when it supports that; returns the shadow offset.
    pub(super) fn init_peek_off(&mut self, fd: RawFd) -> Option<usize> {
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
        if let Some(epoll) = &self.epoll {
            let mut ev = EpollEvent::new(wanted, socket_token(index, gen));
            // Can only fail for a descriptor epoll doesn't know, which would be our bug.
            let _ = epoll.modify(&slot.fd, &mut ev);
        }
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
        slot.readable = readable;
        slot.writable = writable;
        self.update_registration(s.0);
    }
}

pub(super) fn wanted_events(slot: &Slot) -> EpollFlags {
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
