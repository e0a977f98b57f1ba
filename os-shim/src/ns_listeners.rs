//! The sockets pasta binds inside the namespace for `-T` and `-U`: on the namespace's loopback
//! (127.0.0.1 and ::1), made from a thread that entered it, each with the host port its
//! traffic goes to. Shared by the TCP splicer and the UDP relay, which differ in what they do
//! when one is readable.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use sans_io::time::Instant;

use crate::ns::NsError;
use crate::ns_agent::InNetns;

/// One socket in the namespace and the host port it leads to.
#[derive(Debug)]
pub struct NsListener {
    pub fd: OwnedFd,
    pub addr: SocketAddr,
    pub to: u16,
    /// Off epoll until then (or until a descriptor is freed): accepting failed for want of
    /// descriptors, and the level-triggered listener would wake us again at once.
    paused_until: Option<Instant>,
}

/// Listening sockets in reusable slots; slot `i` is reported with token `token_base | i`.
#[derive(Debug)]
pub struct NsListeners {
    slots: Vec<Option<NsListener>>,
    token_base: u64,
}

/// Sockets bound, and the addresses that failed with why.
pub type Bound = (usize, Vec<(SocketAddr, io::Error)>);

impl NsListeners {
    pub fn new(token_base: u64) -> NsListeners {
        NsListeners {
            slots: Vec::new(),
            token_base,
        }
    }

    pub fn get(&self, i: usize) -> Option<&NsListener> {
        self.slots.get(i)?.as_ref()
    }

    /// The namespace ports listened on.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots.iter().flatten().map(|l| l.addr.port())
    }

    /// Registers every listener (but those put aside) on `epoll`.
    pub fn register(&self, epoll: &Epoll) -> io::Result<()> {
        for (i, l) in self.slots.iter().enumerate() {
            if let Some(l) = l.as_ref().filter(|l| l.paused_until.is_none()) {
                epoll.add(&l.fd, self.event(i))?;
            }
        }
        Ok(())
    }

    /// Takes listener `i` off epoll until `until`; false if it was already.
    pub fn pause(&mut self, i: usize, until: Instant, epoll: Option<&Epoll>) -> bool {
        let Some(Some(l)) = self.slots.get_mut(i) else {
            return false;
        };
        if l.paused_until.is_some() {
            return false;
        }
        if let Some(epoll) = epoll {
            let _ = epoll.delete(l.fd.as_fd());
        }
        l.paused_until = Some(until);
        true
    }

    /// Watches again the listeners put aside: those due at `now`, or all with `None`.
    pub fn resume(&mut self, now: Option<Instant>, epoll: Option<&Epoll>) {
        for i in 0..self.slots.len() {
            let event = self.event(i);
            let Some(l) = self.slots[i].as_mut() else {
                continue;
            };
            match l.paused_until {
                Some(until) if now.is_none_or(|now| until <= now) => {
                    l.paused_until = None;
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
        self.slots
            .iter()
            .flatten()
            .filter_map(|l| l.paused_until)
            .min()
    }

    /// Binds `port` on the namespace's loopback addresses (`v4`: 127.0.0.1, `v6`: ::1) with
    /// `make`, leading to host port `to`; registers them on `epoll` if given.
    pub fn listen_in(
        &mut self,
        netns: &impl InNetns,
        (port, to): (u16, u16),
        (v4, v6): (bool, bool),
        make: fn(SocketAddr) -> io::Result<OwnedFd>,
        epoll: Option<&Epoll>,
    ) -> Result<Bound, NsError> {
        let mut addrs = Vec::new();
        if v4 {
            addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        if v6 {
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
        }
        let made =
            netns.run_in(move || addrs.into_iter().map(|a| (a, make(a))).collect::<Vec<_>>())?;
        let mut bound = 0;
        let mut failed = Vec::new();
        for (addr, result) in made {
            let listener = |fd| NsListener {
                fd,
                addr,
                to,
                paused_until: None,
            };
            match result.and_then(|fd| self.add(listener(fd), epoll)) {
                Ok(()) => bound += 1,
                Err(e) => failed.push((addr, e)),
            }
        }
        Ok((bound, failed))
    }

    fn add(&mut self, l: NsListener, epoll: Option<&Epoll>) -> io::Result<()> {
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
        let mut removed = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(l) = slot.take_if(|l| l.addr.port() == port) {
                if let (Some(epoll), None) = (epoll, l.paused_until) {
                    let _ = epoll.delete(l.fd.as_fd());
                }
                removed.push(i);
            }
        }
        removed
    }

    fn event(&self, i: usize) -> EpollEvent {
        EpollEvent::new(EpollFlags::EPOLLIN, self.token_base | i as u64)
    }
}
