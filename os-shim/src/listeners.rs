//! Listening sockets that can be put aside: the engine's forwarding listeners
//! (`crate::sockets`) and the relays' listeners in the namespace (`crate::ns_listeners`).
//!
//! Listeners are level-triggered. One whose `accept4` fails for want of descriptors or memory
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) would stay readable and spin the loop, so its
//! owner takes it off epoll ([`Listeners::pause`]) until a descriptor of ours is closed or
//! [`ACCEPT_PAUSE`] has passed ([`Listeners::resume`]); its connections wait in the kernel's
//! backlog meanwhile.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use sans_io::time::Instant;

/// How long a listener that couldn't accept for want of descriptors is left alone, unless a
/// descriptor is freed first.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// One listening socket; `to` is what its owner keeps with it (the relays: the host port its
/// traffic goes to).
#[derive(Debug)]
pub struct Listener<T> {
    pub fd: OwnedFd,
    pub addr: SocketAddr,
    pub to: T,
    /// Off epoll until then (or until a descriptor is freed).
    paused_until: Option<Instant>,
}

impl<T> Listener<T> {
    pub fn new(fd: OwnedFd, addr: SocketAddr, to: T) -> Listener<T> {
        Listener {
            fd,
            addr,
            to,
            paused_until: None,
        }
    }

    /// Whether the listener is put aside now.
    pub fn paused(&self) -> bool {
        self.paused_until.is_some()
    }
}

/// Listening sockets in reusable slots; slot `i` is reported with token `token_base | i`.
#[derive(Debug)]
pub struct Listeners<T> {
    slots: Vec<Option<Listener<T>>>,
    token_base: u64,
    /// Listeners put aside now, so that resuming costs nothing while there are none.
    paused: usize,
}

impl<T> Listeners<T> {
    pub fn new(token_base: u64) -> Listeners<T> {
        Listeners {
            slots: Vec::new(),
            token_base,
            paused: 0,
        }
    }

    pub fn get(&self, i: usize) -> Option<&Listener<T>> {
        self.slots.get(i)?.as_ref()
    }

    /// The listeners, with their slots.
    pub fn iter(&self) -> impl Iterator<Item = &Listener<T>> + '_ {
        self.slots.iter().flatten()
    }

    /// Slots in use or used before (the next listener's slot is at most this).
    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Registers every listener (but those put aside) on `epoll`.
    pub fn register(&self, epoll: &Epoll) -> io::Result<()> {
        for (i, l) in self.slots.iter().enumerate() {
            if let Some(l) = l.as_ref().filter(|l| !l.paused()) {
                epoll.add(&l.fd, self.event(i))?;
            }
        }
        Ok(())
    }

    /// Puts `l` in the first free slot, registered on `epoll` if given.
    pub fn add(&mut self, l: Listener<T>, epoll: Option<&Epoll>) -> io::Result<()> {
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.slots.len());
        if let Some(epoll) = epoll {
            epoll.add(&l.fd, self.event(i))?;
        }
        match self.slots.get_mut(i) {
            Some(slot) => *slot = Some(l),
            None => self.slots.push(Some(l)),
        }
        Ok(())
    }

    /// Closes the listeners on `port`; returns their slots.
    pub fn remove_port(&mut self, port: u16, epoll: Option<&Epoll>) -> Vec<usize> {
        self.remove_where(|a| a.port() == port, epoll)
    }

    /// Closes the listeners bound to `addr` (a forwarding rule went); returns their slots.
    pub fn remove_addr(&mut self, addr: SocketAddr, epoll: Option<&Epoll>) -> Vec<usize> {
        self.remove_where(|a| a == addr, epoll)
    }

    fn remove_where(
        &mut self,
        bound_to: impl Fn(SocketAddr) -> bool,
        epoll: Option<&Epoll>,
    ) -> Vec<usize> {
        let mut removed = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(l) = slot.take_if(|l| bound_to(l.addr)) else {
                continue;
            };
            if l.paused() {
                self.paused -= 1;
            } else if let Some(epoll) = epoll {
                let _ = epoll.delete(l.fd.as_fd());
            }
            removed.push(i);
        }
        removed
    }

    /// Takes listener `i` off epoll until `until`; false if it was already (or is no more).
    pub fn pause(&mut self, i: usize, until: Instant, epoll: Option<&Epoll>) -> bool {
        let Some(Some(l)) = self.slots.get_mut(i) else {
            return false;
        };
        if l.paused() {
            return false;
        }
        if let Some(epoll) = epoll {
            let _ = epoll.delete(l.fd.as_fd());
        }
        l.paused_until = Some(until);
        self.paused += 1;
        true
    }

    /// Watches again the listeners put aside: those due at `now`, or all with `None`.
    pub fn resume(&mut self, now: Option<Instant>, epoll: Option<&Epoll>) {
        if self.paused == 0 {
            return;
        }
        for i in 0..self.slots.len() {
            let event = self.event(i);
            let Some(l) = self.slots[i].as_mut() else {
                continue;
            };
            match l.paused_until {
                Some(until) if now.is_none_or(|now| until <= now) => {
                    l.paused_until = None;
                    self.paused -= 1;
                    if let Some(epoll) = epoll {
                        if let Err(e) = epoll.add(&l.fd, event) {
                            log::warn!("cannot watch the listener on {} again: {e}", l.addr);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// When the first listener put aside is due to be watched again, if any is.
    pub fn next_resume(&self) -> Option<Instant> {
        self.iter().filter_map(|l| l.paused_until).min()
    }

    fn event(&self, i: usize) -> EpollEvent {
        EpollEvent::new(EpollFlags::EPOLLIN, self.token_base | i as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn listener(port: u16) -> Listener<()> {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        Listener::new(
            fd,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            (),
        )
    }

    #[test]
    fn paused_listeners_come_back_when_due_or_when_descriptors_are_freed() {
        let mut ls = Listeners::new(0);
        for port in [1, 2, 3] {
            ls.add(listener(port), None).unwrap();
        }
        let t = Instant::from_nanos(1_000_000_000);
        assert!(ls.pause(0, t, None));
        assert!(!ls.pause(0, t, None), "already");
        assert!(ls.pause(1, t + ACCEPT_PAUSE, None));
        assert!(!ls.pause(7, t, None), "no such listener");
        assert_eq!(ls.next_resume(), Some(t));
        ls.resume(Some(t), None);
        assert!(!ls.get(0).unwrap().paused() && ls.get(1).unwrap().paused());
        assert_eq!(ls.next_resume(), Some(t + ACCEPT_PAUSE));
        ls.resume(None, None);
        assert_eq!(ls.next_resume(), None);
        assert!(ls.iter().all(|l| !l.paused()));

        // A paused listener removed is no longer counted; its slot is reused.
        assert!(ls.pause(2, t, None));
        assert_eq!(ls.remove_port(3, None), [2]);
        assert_eq!((ls.paused, ls.next_resume()), (0, None));
        ls.add(listener(4), None).unwrap();
        assert_eq!(ls.get(2).unwrap().addr.port(), 4);
    }
}
